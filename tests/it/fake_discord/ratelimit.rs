//! Discord's rate limits as the fake enforces them: per-route buckets per channel and a global
//! limit over bot-token routes, each a fixed window opened by the first request after the
//! previous window ended. A refused request gets a 429 shaped like Discord's and changes nothing.

use super::World;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// At most `count` requests per window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub per: Duration,
}

impl Limit {
    pub const fn new(count: u32, per: Duration) -> Limit {
        Limit { count, per }
    }
}

/// The limits in force; a test may change them or switch them off.
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub enabled: bool,
    /// `POST /channels/{c}/messages`, per channel.
    pub create_message: Limit,
    /// `PATCH /channels/{c}/messages/{m}`, per channel.
    pub edit_message: Limit,
    /// `PUT /channels/{c}/messages/{m}/reactions/{e}/@me`, per channel.
    pub reaction: Limit,
    /// `POST /channels/{c}/messages/{m}/threads`, per channel.
    pub create_thread: Limit,
    /// `PATCH /channels/{c}`, per channel.
    pub edit_channel: Limit,
    /// Every bot-token route together (interaction callbacks and webhooks are not counted).
    pub global: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        let five_per_5s = Limit::new(5, Duration::from_secs(5));
        RateLimits {
            enabled: true,
            create_message: five_per_5s,
            edit_message: five_per_5s,
            reaction: Limit::new(1, Duration::from_millis(250)),
            create_thread: five_per_5s,
            edit_channel: five_per_5s,
            global: Limit::new(50, Duration::from_secs(1)),
        }
    }
}

impl RateLimits {
    /// The per-route limit of a route, if it has one.
    pub fn for_route(&self, method: &str, template: &str) -> Option<Limit> {
        match (method, template) {
            ("POST", "/channels/{channel_id}/messages") => Some(self.create_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}") => Some(self.edit_message),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me") => {
                Some(self.reaction)
            }
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads") => {
                Some(self.create_thread)
            }
            ("PATCH", "/channels/{channel_id}") => Some(self.edit_channel),
            _ => None,
        }
    }
}

/// How a window stands at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub limit: u32,
    pub remaining: u32,
    pub reset_after: Duration,
}

/// One fixed window; it opens at the first request made after the previous one ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    start: Option<Instant>,
    used: u32,
}

impl Window {
    /// The window as of `now`; an ended window reads as a fresh one opening now.
    pub fn status(&self, limit: Limit, now: Instant) -> Status {
        match self.start {
            Some(start) if now < start + limit.per => Status {
                limit: limit.count,
                remaining: limit.count.saturating_sub(self.used),
                reset_after: start + limit.per - now,
            },
            _ => Status {
                limit: limit.count,
                remaining: limit.count,
                reset_after: limit.per,
            },
        }
    }

    /// Counts one admitted request.
    pub fn consume(&mut self, limit: Limit, now: Instant) {
        if self.start.is_none_or(|start| now >= start + limit.per) {
            self.start = Some(now);
            self.used = 0;
        }
        self.used += 1;
    }
}

/// The windows of every bucket seen so far.
#[derive(Debug, Default)]
pub struct RateState {
    global: Window,
    /// (route template, channel) → its window.
    routes: HashMap<(String, u64), Window>,
}

/// Admits a request or refuses it with a 429. On admission, returns the headers its answer
/// carries (empty for a route without its own bucket).
pub fn admit(
    w: &mut World,
    method: &str,
    template: &str,
    channel: u64,
    now: Instant,
) -> Result<HeaderMap, Box<Response>> {
    if !w.limits.enabled {
        return Ok(HeaderMap::new());
    }
    let counted = counts_globally(template);
    let global = w.limits.global;
    let route = w.limits.for_route(method, template);
    let key = (template.to_owned(), channel);
    let route_status = route.map(|l| {
        let window = w.rate.routes.get(&key).copied().unwrap_or_default();
        window.status(l, now)
    });
    let route_headers = route_status.map(|s| headers(template, s));
    let global_status = w.rate.global.status(global, now);
    if counted && global_status.remaining == 0 {
        w.rate_limited.push((template.to_owned(), 0));
        return Err(Box::new(too_many(
            global_status.reset_after,
            true,
            route_headers,
        )));
    }
    if let Some(s) = route_status.filter(|s| s.remaining == 0) {
        w.rate_limited.push((template.to_owned(), channel));
        return Err(Box::new(too_many(s.reset_after, false, route_headers)));
    }
    if counted {
        w.rate.global.consume(global, now);
    }
    let Some(limit) = route else {
        return Ok(HeaderMap::new());
    };
    let window = w.rate.routes.entry(key).or_default();
    window.consume(limit, now);
    Ok(headers(template, window.status(limit, now)))
}

/// Interaction callbacks and webhook routes do not count towards the global limit, as on Discord.
pub fn counts_globally(template: &str) -> bool {
    !template.starts_with("/interactions/") && !template.starts_with("/webhooks/")
}

/// An opaque, stable bucket id per route template (FNV-1a), the same for every channel.
pub fn bucket_hash(template: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn header(map: &mut HeaderMap, name: &'static str, value: String) {
    map.insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(&value).expect("header value"),
    );
}

fn headers(template: &str, s: Status) -> HeaderMap {
    // Reset is wall-clock time, so it comes from SystemTime; the window itself runs on Instant.
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        + s.reset_after;
    let mut map = HeaderMap::new();
    header(&mut map, "x-ratelimit-limit", s.limit.to_string());
    header(&mut map, "x-ratelimit-remaining", s.remaining.to_string());
    header(
        &mut map,
        "x-ratelimit-reset",
        format!("{:.3}", reset.as_secs_f64()),
    );
    header(
        &mut map,
        "x-ratelimit-reset-after",
        format!("{:.3}", s.reset_after.as_secs_f64()),
    );
    header(&mut map, "x-ratelimit-bucket", bucket_hash(template));
    map
}

/// Discord's 429. A global refusal carries the route's bucket headers too when the route has a
/// bucket, so a client tracking that bucket is not told anything false about it.
fn too_many(retry: Duration, global: bool, route_headers: Option<HeaderMap>) -> Response {
    let secs = (retry.as_secs_f64() * 1000.0).ceil() / 1000.0;
    let mut map = route_headers.unwrap_or_default();
    header(
        &mut map,
        "retry-after",
        (secs.ceil() as u64).max(1).to_string(),
    );
    let scope = if global { "global" } else { "user" };
    header(&mut map, "x-ratelimit-scope", scope.to_owned());
    if global {
        header(&mut map, "x-ratelimit-global", "true".to_owned());
    }
    let body = json!({"message": "You are being rate limited.", "retry_after": secs,
        "global": global, "code": 0});
    (StatusCode::TOO_MANY_REQUESTS, map, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: &str = "/channels/{channel_id}/messages";
    const CALLBACK: &str = "/interactions/{interaction_id}/{interaction_token}/callback";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_window_opens_at_its_first_request_and_refusals_do_not_extend_it() {
        let limit = Limit::new(2, ms(1000));
        let t0 = Instant::now();
        let mut win = Window::default();
        assert_eq!(win.status(limit, t0).remaining, 2);
        win.consume(limit, t0);
        win.consume(limit, t0 + ms(100));
        let s = win.status(limit, t0 + ms(400));
        assert_eq!((s.remaining, s.reset_after), (0, ms(600)));
        // Still inside the window: still refused, and the end has not moved.
        assert_eq!(win.status(limit, t0 + ms(999)).reset_after, ms(1));
        // The window ended at t0 + 1 s; the next one opens at the next request.
        let s = win.status(limit, t0 + ms(1500));
        assert_eq!((s.remaining, s.reset_after), (2, ms(1000)));
        win.consume(limit, t0 + ms(1500));
        let s = win.status(limit, t0 + ms(1600));
        assert_eq!((s.remaining, s.reset_after), (1, ms(900)));
    }

    #[test]
    fn the_sixth_message_in_five_seconds_is_refused_per_channel_only() {
        let mut w = World::default();
        let t0 = Instant::now();
        for i in 0..5 {
            let h = admit(&mut w, "POST", CREATE, 1, t0 + ms(i)).expect("admitted");
            assert_eq!(h["x-ratelimit-remaining"], (4 - i).to_string().as_str());
        }
        let refused = admit(&mut w, "POST", CREATE, 1, t0 + ms(10)).expect_err("429");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()["retry-after"], "5");
        assert_eq!(refused.headers()["x-ratelimit-scope"], "user");
        assert!(admit(&mut w, "POST", CREATE, 2, t0 + ms(10)).is_ok());
        assert!(admit(&mut w, "POST", CREATE, 1, t0 + ms(4999)).is_err());
        assert!(admit(&mut w, "POST", CREATE, 1, t0 + ms(5000)).is_ok());
        assert_eq!(w.rate_limited, vec![(CREATE.to_owned(), 1); 2]);
    }

    #[test]
    fn the_global_limit_spans_routes_but_not_interaction_callbacks() {
        let mut w = World::default();
        let t0 = Instant::now();
        for c in 0..50 {
            assert!(admit(&mut w, "GET", "/channels/{channel_id}", c, t0).is_ok());
        }
        let refused = admit(&mut w, "POST", CREATE, 99, t0).expect_err("429");
        assert_eq!(refused.headers()["x-ratelimit-global"], "true");
        assert_eq!(refused.headers()["x-ratelimit-scope"], "global");
        assert!(admit(&mut w, "POST", CALLBACK, 0, t0).is_ok());
        // The refused create consumed nothing from its own bucket.
        let h = admit(&mut w, "POST", CREATE, 99, t0 + ms(1000)).expect("admitted");
        assert_eq!(h["x-ratelimit-remaining"], "4");
        assert_eq!(w.rate_limited, vec![(CREATE.to_owned(), 0)]);
    }

    #[test]
    fn buckets_are_named_per_route_and_limits_can_be_switched_off() {
        let reaction = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me";
        assert_ne!(bucket_hash(CREATE), bucket_hash(reaction));
        let mut w = World::default();
        let t0 = Instant::now();
        assert!(admit(&mut w, "PUT", reaction, 1, t0).is_ok());
        assert!(admit(&mut w, "PUT", reaction, 1, t0 + ms(249)).is_err());
        assert!(admit(&mut w, "PUT", reaction, 1, t0 + ms(250)).is_ok());
        w.limits.enabled = false;
        for _ in 0..10 {
            assert!(admit(&mut w, "PUT", reaction, 1, t0 + ms(251)).is_ok());
        }
    }
}
