//! The bot's own Discord REST client for what it says in channels (messages, edits, reactions,
//! threads), paced by Discord's rate-limit headers whether or not serenity's ratelimiter is on:
//! serenity cannot be asked for a response's headers, and with `api_base` its limiter is off.
//! Outcomes are classified by status and Discord's error code, never by message text.

use super::buckets::{Buckets, Route};
use crate::secret::Secret;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, USER_AGENT};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one call may wait for rate limits and transient failures before giving up (the
/// outbox tries again later; a synchronous caller reports it).
const MAX_WAIT: Duration = Duration::from_secs(120);
/// Transport errors and 5xx tried again within one call.
const TRANSIENT_TRIES: u32 = 3;

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// A definitive 4xx (not 429): nothing happened.
    #[error("Discord refused ({status}, code {code})")]
    Refused { status: u16, code: u64 },
    /// No answer, 5xx, or rate limits beyond the call's wait: it may or may not have happened.
    #[error("Discord did not answer in time ({0})")]
    Unknown(String),
}

impl RestError {
    pub fn code(&self) -> Option<u64> {
        match self {
            RestError::Refused { code, .. } => Some(*code),
            RestError::Unknown(_) => None,
        }
    }
}

/// Discord's error codes the bot branches on.
pub mod code {
    pub const UNKNOWN_CHANNEL: u64 = 10003;
    pub const UNKNOWN_MESSAGE: u64 = 10008;
    pub const MISSING_ACCESS: u64 = 50001;
    pub const MISSING_PERMISSIONS: u64 = 50013;
    pub const THREAD_ARCHIVED: u64 = 50083;
    pub const THREAD_ALREADY_CREATED: u64 = 160004;
}

/// Requests sent and 429s received, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct RestStats {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// A message to create.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    pub content: &'a str,
    /// The only users it may ping.
    pub pings: &'a [u64],
    /// At most 25 characters; Discord returns the first message for a repeated nonce.
    pub nonce: &'a str,
    /// Posted as a reply to this message (in the same channel).
    pub reply_to: Option<u64>,
    /// Message components (action rows), e.g. a diagnosis's fix button.
    pub components: Option<&'a Value>,
}

/// A file sent with a message as `files[0]` of a multipart body.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    /// Shown by Discord as the attachment's name; made of safe characters by the caller.
    pub filename: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

pub struct DiscordRest {
    http: reqwest::Client,
    base: String,
    buckets: Buckets,
    stats: RestStats,
}

impl std::fmt::Debug for DiscordRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordRest")
            .field("base", &self.base)
            .finish()
    }
}

/// Mentions allowed: none parsed from the text, only `users` explicitly.
pub fn allowed_mentions(users: &[u64]) -> Value {
    let users: Vec<String> = users.iter().map(u64::to_string).collect();
    json!({"parse": [], "users": users, "roles": [], "replied_user": false})
}

impl DiscordRest {
    /// `origin`: `https://discord.com` unless a proxy or a fake is configured (`api_base`).
    pub fn new(origin: Option<&url::Url>, token: &Secret) -> anyhow::Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bot {}", token.expose())).map_err(|_| {
            anyhow::anyhow!("the Discord token contains characters a header cannot carry")
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!(
                "DiscordBot (https://github.com/o365-fixbot/o365-fixbot, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            )),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()?;
        let origin = origin.map_or("https://discord.com", |u| u.as_str());
        Ok(Self {
            http,
            base: format!("{}/api/v10", origin.trim_end_matches('/')),
            buckets: Buckets::new(),
            stats: RestStats::default(),
        })
    }

    pub fn stats(&self) -> &RestStats {
        &self.stats
    }

    /// Creates a message; returns its id. A repeated nonce returns the first message's id.
    pub async fn create_message(&self, channel: u64, post: &Post<'_>) -> Result<u64, RestError> {
        let mut body = message_body(channel, post);
        if let Some(c) = post.components {
            body["components"] = c.clone();
        }
        let v = self.call(&create_route(channel), Some(&body), None).await?;
        message_id(&v)
    }

    /// Creates a message with one file attached (Discord's multipart form: `payload_json`, whose
    /// `attachments` names the file, and `files[0]`); the nonce rules are those of
    /// [`DiscordRest::create_message`].
    pub async fn create_message_with_file(
        &self,
        channel: u64,
        post: &Post<'_>,
        file: &Upload<'_>,
    ) -> Result<u64, RestError> {
        let mut body = message_body(channel, post);
        body["attachments"] = json!([{"id": "0", "filename": file.filename}]);
        let v = self
            .call(&create_route(channel), Some(&body), Some(file))
            .await?;
        message_id(&v)
    }

    pub async fn edit_message(
        &self,
        channel: u64,
        message: u64,
        content: &str,
        pings: &[u64],
    ) -> Result<(), RestError> {
        let body = json!({"content": content, "allowed_mentions": allowed_mentions(pings)});
        let route = Route::new(
            Method::PATCH,
            "/channels/{c}/messages/{m}",
            channel,
            format!("/channels/{channel}/messages/{message}"),
        );
        self.call(&route, Some(&body), None).await.map(drop)
    }

    pub async fn react(&self, channel: u64, message: u64, emoji: &str) -> Result<(), RestError> {
        let emoji =
            percent_encoding::utf8_percent_encode(emoji, percent_encoding::NON_ALPHANUMERIC);
        let route = Route::new(
            Method::PUT,
            "/channels/{c}/messages/{m}/reactions/{e}/@me",
            channel,
            format!("/channels/{channel}/messages/{message}/reactions/{emoji}/@me"),
        );
        self.call(&route, None, None).await.map(drop)
    }

    /// Starts a public thread from `message`; its id equals the message id.
    pub async fn start_thread(
        &self,
        channel: u64,
        message: u64,
        name: &str,
        archive_minutes: u16,
    ) -> Result<u64, RestError> {
        let archive = match archive_minutes {
            60 | 1440 | 4320 | 10080 => archive_minutes,
            _ => 1440,
        };
        let name: String = name.chars().take(100).collect();
        let body = json!({"name": name, "auto_archive_duration": archive});
        let route = Route::new(
            Method::POST,
            "/channels/{c}/messages/{m}/threads",
            channel,
            format!("/channels/{channel}/messages/{message}/threads"),
        );
        let v = self.call(&route, Some(&body), None).await?;
        message_id(&v)
    }

    /// One page of the users who reacted with `emoji`, after user id `after`.
    pub async fn reaction_users(
        &self,
        channel: u64,
        message: u64,
        emoji: &str,
        after: Option<u64>,
        limit: u8,
    ) -> Result<Vec<serenity::all::User>, RestError> {
        let e = percent_encoding::utf8_percent_encode(emoji, percent_encoding::NON_ALPHANUMERIC);
        let mut path =
            format!("/channels/{channel}/messages/{message}/reactions/{e}?limit={limit}");
        if let Some(a) = after {
            path.push_str(&format!("&after={a}"));
        }
        let route = Route::new(
            Method::GET,
            "/channels/{c}/messages/{m}/reactions/{e}",
            channel,
            path,
        );
        let v = self.call(&route, None, None).await?;
        serde_json::from_value(v)
            .map_err(|e| RestError::Unknown(format!("unreadable reactions: {e}")))
    }

    /// A guild member (with roles); 404 (code 10007) when they are not in the guild.
    pub async fn member(&self, guild: u64, user: u64) -> Result<serenity::all::Member, RestError> {
        let route = Route::new(
            Method::GET,
            "/guilds/{g}/members/{u}",
            guild,
            format!("/guilds/{guild}/members/{user}"),
        );
        let mut v = self.call(&route, None, None).await?;
        // The member object does not carry its guild; serenity's model wants it.
        if let Some(map) = v.as_object_mut() {
            map.insert("guild_id".into(), json!(guild.to_string()));
        }
        serde_json::from_value(v).map_err(|e| RestError::Unknown(format!("unreadable member: {e}")))
    }

    /// Reopens an archived (not locked) thread.
    pub async fn unarchive(&self, thread: u64) -> Result<(), RestError> {
        let route = Route::new(
            Method::PATCH,
            "/channels/{c}",
            thread,
            format!("/channels/{thread}"),
        );
        self.call(&route, Some(&json!({"archived": false})), None)
            .await
            .map(drop)
    }

    /// One call: waits for its bucket and the global limit, honours 429s (body `retry_after`,
    /// `Retry-After`, scope), tries transport errors and 5xx again a few times.
    async fn call(
        &self,
        route: &Route,
        body: Option<&Value>,
        file: Option<&Upload<'_>>,
    ) -> Result<Value, RestError> {
        let deadline = Instant::now() + MAX_WAIT;
        let mut transient = 0;
        loop {
            let lane = self.buckets.acquire(route).await;
            let mut req = self
                .http
                .request(route.method.clone(), format!("{}{}", self.base, route.path));
            req = match (body, file) {
                (Some(b), Some(f)) => {
                    let (content_type, bytes) = multipart(b, f);
                    req.header(reqwest::header::CONTENT_TYPE, content_type)
                        .body(bytes)
                }
                (Some(b), None) => req.json(b),
                (None, _) => req,
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = req.send().await;
            let metrics = crate::ops::metrics::metrics();
            let resp = match outcome {
                Ok(r) => r,
                Err(e) => {
                    metrics.api_call("discord", 0);
                    drop(lane);
                    transient += 1;
                    let why = if e.is_timeout() {
                        "timed out"
                    } else {
                        "connection failed"
                    };
                    if transient >= TRANSIENT_TRIES || Instant::now() >= deadline {
                        return Err(RestError::Unknown(why.into()));
                    }
                    tokio::time::sleep(backoff(transient)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            metrics.api_call("discord", status);
            self.buckets.learn(route, resp.headers());
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status == 429 {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                metrics.throttle_wait("discord");
                let (wait, global) = retry_after(&json, &headers);
                tracing::warn!(
                    route = route.template,
                    wait_ms = wait.as_millis() as u64,
                    global,
                    "Discord rate limit hit; waiting as told"
                );
                self.buckets.hold(route, wait, global);
                drop(lane);
                if Instant::now() + wait > deadline {
                    return Err(RestError::Unknown(
                        "rate limited past the wait allowed".into(),
                    ));
                }
                continue;
            }
            drop(lane);
            if (200..300).contains(&status) {
                return Ok(json);
            }
            if status >= 500 {
                transient += 1;
                if transient >= TRANSIENT_TRIES || Instant::now() >= deadline {
                    return Err(RestError::Unknown(format!("Discord answered {status}")));
                }
                tokio::time::sleep(backoff(transient)).await;
                continue;
            }
            let code = json["code"].as_u64().unwrap_or(0);
            return Err(RestError::Refused { status, code });
        }
    }
}

fn create_route(channel: u64) -> Route {
    Route::new(
        Method::POST,
        "/channels/{c}/messages",
        channel,
        format!("/channels/{channel}/messages"),
    )
}

/// The JSON of a message to create, with its nonce and the mentions it may make.
fn message_body(channel: u64, post: &Post<'_>) -> Value {
    let mut body = json!({
        "content": post.content,
        "allowed_mentions": allowed_mentions(post.pings),
        "nonce": post.nonce,
        "enforce_nonce": true,
    });
    if let Some(m) = post.reply_to {
        body["message_reference"] = json!({
            "message_id": m.to_string(), "channel_id": channel.to_string(),
            // A deleted plan message must not stop the reply from being posted.
            "fail_if_not_exists": false,
        });
    }
    body
}

/// A `multipart/form-data` body: `payload_json`, then the file as `files[0]`. The boundary is
/// random, so a file's own text cannot end its part early.
fn multipart(payload: &Value, file: &Upload<'_>) -> (String, Vec<u8>) {
    let boundary = format!("fixbot-{}", uuid::Uuid::new_v4().simple());
    // Quotes and line breaks would break the part's header; the caller's names have none.
    let filename: String = file
        .filename
        .chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect();
    let mut out = Vec::with_capacity(file.bytes.len() + 512);
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n{payload}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"{filename}\"\r\nContent-Type: {}\r\n\r\n",
            file.content_type
        )
        .as_bytes(),
    );
    out.extend_from_slice(file.bytes);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), out)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 * 4u64.pow(attempt.saturating_sub(1).min(3)))
}

fn message_id(v: &Value) -> Result<u64, RestError> {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RestError::Unknown("Discord's answer carried no id".into()))
}

/// How long a 429 says to wait, and whether it is the global limit: the body's `retry_after`
/// (decimal seconds), else `Retry-After`, else `X-RateLimit-Reset-After`, else one second.
fn retry_after(body: &Value, headers: &reqwest::header::HeaderMap) -> (Duration, bool) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
    };
    let secs = body["retry_after"]
        .as_f64()
        .or_else(|| header("retry-after"))
        .or_else(|| header("x-ratelimit-reset-after"))
        .unwrap_or(1.0);
    let global = body["global"].as_bool().unwrap_or(false)
        || headers
            .get("x-ratelimit-global")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        || headers
            .get("x-ratelimit-scope")
            .is_some_and(|v| v.as_bytes() == b"global");
    // A little past the edge: clocks and rounding must not earn a second 429.
    let wait = Duration::from_secs_f64(secs.clamp(0.0, 3600.0)) + Duration::from_millis(50);
    (wait, global)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_prefers_the_body_and_reads_the_global_scope() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        let (w, g) = retry_after(&json!({"retry_after": 1.25, "global": false}), &h);
        assert_eq!((w.as_millis(), g), (1300, false));
        h.insert("x-ratelimit-scope", HeaderValue::from_static("global"));
        let (w, g) = retry_after(&Value::Null, &h);
        assert_eq!((w.as_millis(), g), (3050, true));
    }

    #[test]
    fn mentions_allow_only_the_named_users() {
        let v = allowed_mentions(&[42]);
        assert_eq!(v["parse"], json!([]));
        assert_eq!(v["users"], json!(["42"]));
    }

    #[test]
    fn debug_never_prints_the_token() {
        let r = DiscordRest::new(None, &Secret::new("very-secret")).unwrap();
        assert!(!format!("{r:?}").contains("very-secret"));
    }
}
