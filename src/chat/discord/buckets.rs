//! Discord's rate limits as the bot tracks them: per-route buckets (learned from
//! `X-RateLimit-Bucket`, per major parameter, i.e. the channel), a global limit, and one request
//! in flight per route and channel, so a burst never outruns what the headers have said.

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota};
use reqwest::header::HeaderMap;
use reqwest::Method;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// Below Discord's 50 requests per second, with room for serenity's own calls.
const GLOBAL_PER_SECOND: u32 = 40;
/// Lanes kept before idle ones are forgotten (each thread is a channel of its own).
const LANES_KEPT: usize = 1024;

/// One request's route: the template names the bucket until Discord says which it is in.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub template: &'static str,
    pub major: u64,
    pub path: String,
}

impl Route {
    pub fn new(method: Method, template: &'static str, major: u64, path: String) -> Self {
        Self {
            method,
            template,
            major,
            path,
        }
    }

    fn key(&self) -> String {
        format!("{} {}", self.method, self.template)
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    remaining: u64,
    reset_at: Instant,
}

#[derive(Default)]
struct State {
    /// Route key → Discord's bucket hash.
    hash_of: HashMap<String, String>,
    /// (bucket hash, or route key until known; major) → what is left of its window.
    windows: HashMap<(String, u64), Window>,
    global_until: Option<Instant>,
}

impl State {
    fn bucket(&self, route: &Route) -> (String, u64) {
        let key = route.key();
        (self.hash_of.get(&key).cloned().unwrap_or(key), route.major)
    }

    /// How long to wait before this route may go; takes its place in the window when it may.
    fn admit(&mut self, route: &Route, now: Instant) -> Option<Duration> {
        if let Some(until) = self.global_until.filter(|u| *u > now) {
            return Some(until - now);
        }
        let bucket = self.bucket(route);
        match self.windows.get_mut(&bucket) {
            Some(w) if w.reset_at <= now => {
                self.windows.remove(&bucket);
                None
            }
            Some(w) if w.remaining == 0 => Some(w.reset_at - now),
            Some(w) => {
                w.remaining -= 1;
                None
            }
            None => None,
        }
    }
}

pub struct Buckets {
    state: Mutex<State>,
    lanes: DashMap<(String, u64), Arc<tokio::sync::Mutex<()>>>,
    global: DefaultDirectRateLimiter,
}

impl Buckets {
    pub fn new() -> Self {
        let per_second = NonZeroU32::new(GLOBAL_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        Self {
            state: Mutex::new(State::default()),
            lanes: DashMap::new(),
            global: DefaultDirectRateLimiter::direct(Quota::per_second(per_second)),
        }
    }

    /// Waits until `route` may be sent; the returned guard keeps other requests on the same
    /// route and channel waiting until this one's headers have been read.
    pub async fn acquire(&self, route: &Route) -> OwnedMutexGuard<()> {
        let lane = self.lane(route);
        let guard = lane.lock_owned().await;
        // Bounded: each wait ends at a window's reset, which only moves forward by the headers
        // of requests this lane itself sends.
        for _ in 0..64 {
            let wait = self
                .state
                .lock()
                .map(|mut s| s.admit(route, Instant::now()))
                .unwrap_or(None);
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => break,
            }
        }
        self.global.until_ready().await;
        guard
    }

    fn lane(&self, route: &Route) -> Arc<tokio::sync::Mutex<()>> {
        if self.lanes.len() > LANES_KEPT {
            self.lanes.retain(|_, l| Arc::strong_count(l) > 1);
        }
        Arc::clone(
            self.lanes
                .entry((route.key(), route.major))
                .or_default()
                .value(),
        )
    }

    /// Reads a response's `X-RateLimit-*` headers into the route's bucket.
    pub fn learn(&self, route: &Route, headers: &HeaderMap) {
        let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(hash) = text("x-ratelimit-bucket") {
            s.hash_of.insert(route.key(), hash.to_owned());
        }
        let remaining = text("x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
        let after = text("x-ratelimit-reset-after").and_then(|v| v.parse::<f64>().ok());
        if let (Some(remaining), Some(after)) = (remaining, after) {
            let bucket = s.bucket(route);
            let reset_at = Instant::now() + Duration::from_secs_f64(after.clamp(0.0, 3600.0));
            s.windows.insert(
                bucket,
                Window {
                    remaining,
                    reset_at,
                },
            );
        }
    }

    /// A 429: nothing more on this bucket (or anywhere, if global) until `wait` has passed.
    pub fn hold(&self, route: &Route, wait: Duration, global: bool) {
        let Ok(mut s) = self.state.lock() else { return };
        let until = Instant::now() + wait;
        if global {
            s.global_until = Some(s.global_until.map_or(until, |g| g.max(until)));
        } else {
            let bucket = s.bucket(route);
            s.windows.insert(
                bucket,
                Window {
                    remaining: 0,
                    reset_at: until,
                },
            );
        }
    }
}

impl Default for Buckets {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn route(major: u64) -> Route {
        Route::new(Method::POST, "/channels/{c}/messages", major, String::new())
    }

    #[test]
    fn a_spent_window_waits_for_its_reset_and_only_on_its_channel() {
        let b = Buckets::new();
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-bucket", HeaderValue::from_static("abc"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("1"));
        h.insert("x-ratelimit-reset-after", HeaderValue::from_static("5"));
        b.learn(&route(1), &h);
        let mut s = b.state.lock().unwrap();
        let now = Instant::now();
        assert_eq!(s.admit(&route(1), now), None, "one left");
        let wait = s.admit(&route(1), now).expect("spent");
        assert!(wait > Duration::from_secs(4));
        assert_eq!(
            s.admit(&route(2), now),
            None,
            "another channel has its own window"
        );
        assert_eq!(
            s.admit(&route(1), now + Duration::from_secs(6)),
            None,
            "the window has reset"
        );
    }

    #[test]
    fn a_global_hold_stops_every_route() {
        let b = Buckets::new();
        b.hold(&route(1), Duration::from_secs(2), true);
        let mut s = b.state.lock().unwrap();
        assert!(s.admit(&route(9), Instant::now()).is_some());
    }
}
