//! The Okta client: SSWS or service-app auth, pacing, 429 retry, pagination, typed errors.

use super::auth::{AuthFailure, Authorizer, OktaCredential};
use super::link::next_link;
use super::pacing::{bucket_of, throttled_until, Pacer, RateHeaders};
use super::{
    AppGroup, AppProfileRules, AppUser, AppUserSchema, AssignAppUser, Feature, LogCursor, LogEvent,
    LogPage, OktaError, OktaGroup, OktaUser, ProfileMapping,
};
use crate::directory::retry::{self, epoch_now, parse_retry_after, Attempt, AttemptCtx, GiveUp};
use crate::directory::{HttpSettings, Reply};
use crate::domain::OktaUserId;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;
use url::Url;

/// Everything but RFC 3986 unreserved characters and `@`. `url`'s own segment encoding leaves
/// `+` raw, which servers that decode paths like form fields read as a space; logins such as
/// `first+tag@x.com` must reach Okta intact.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// Page size for list calls (Okta's maximum for most lists is 200).
pub const PAGE_LIMIT: u32 = 200;

/// Bounds `Link: rel="next"` loops.
const MAX_PAGES: usize = 1_000;

/// Requests in flight at once. Okta also limits concurrent requests per org (~75), shared with
/// every other integration; staying well below keeps a burst of repairs from tripping it.
const MAX_CONCURRENT: usize = 32;

/// How long the app user schema and the mappings into the app are reused. They change only when
/// an admin edits the app's profile, and a plan is approved on what it showed; a minute spares
/// a burst of plans three calls each without hiding an edit for long.
pub const PROFILE_RULES_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct OktaConfig {
    /// e.g. `https://example.okta.com`.
    pub org_url: Url,
    pub credential: OktaCredential,
    /// The Microsoft Office 365 app instance id.
    pub app_id: String,
    pub http: HttpSettings,
}

#[derive(Clone)]
pub struct OktaClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    org: Url,
    auth: Authorizer,
    app_id: String,
    settings: HttpSettings,
    pacer: Pacer,
    concurrency: Semaphore,
    calls: AtomicU64,
    throttled: AtomicU64,
    /// The app's profile rules and when they were read (the client serves one app).
    profile_rules: std::sync::Mutex<Option<(Instant, AppProfileRules)>>,
    /// One read of the profile rules at a time: plans made together (a batch) wait for it
    /// instead of each reading the schema and the mappings.
    profile_rules_fetch: tokio::sync::Mutex<()>,
}

/// Which failures a request may be retried after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// GET, PUT, DELETE: sending twice has the effect of sending once.
    Idempotent,
    /// POST assign: only when the first request surely was not acted on (429, no connection),
    /// and 503: assigning an already assigned user updates that assignment in Okta, so a
    /// repeat after a 503 the server may have half-processed is harmless.
    Assign,
}

struct Raw {
    body: Vec<u8>,
    headers: HeaderMap,
    request_id: Option<String>,
}

/// What a call learned across its attempts.
#[derive(Default)]
struct CallState {
    /// An attempt may have been acted on without our seeing the answer (timeout, 504, lost
    /// connection).
    ambiguous: AtomicBool,
    /// A refused access token was dropped and the call retried once with a fresh one.
    auth_retried: AtomicBool,
}

impl OktaClient {
    pub fn new(config: OktaConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.org_url.cannot_be_a_base(),
            "the Okta org URL `{}` cannot have a path",
            config.org_url
        );
        let http = reqwest::Client::builder()
            .user_agent(concat!("o365-fixbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                auth: Authorizer::new(config.credential, http.clone(), &config.org_url),
                http,
                org: config.org_url,
                app_id: config.app_id,
                settings: config.http,
                pacer: Pacer::default(),
                concurrency: Semaphore::new(MAX_CONCURRENT),
                calls: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                profile_rules: std::sync::Mutex::new(None),
                profile_rules_fetch: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// A service app's tokens carry `okta.logs.read` from now on (the watch reads the System
    /// Log with this client); nothing changes for an API token.
    pub async fn also_read_logs(&self) {
        self.inner.auth.also_read_logs().await;
    }

    /// The org's base URL (a System Log cursor is followed only on it).
    pub fn org_url(&self) -> &Url {
        &self.inner.org
    }

    /// How the client authenticates, for `check-config`.
    pub fn credential(&self) -> &OktaCredential {
        self.inner.auth.credential()
    }

    /// Service app: the scopes Okta granted the current access token (`None` before the first
    /// token, or with an API token).
    pub async fn granted_scopes(&self) -> Option<Vec<String>> {
        self.inner.auth.granted_scopes().await
    }

    /// Service app: access tokens fetched so far.
    pub fn token_fetches(&self) -> u64 {
        self.inner.auth.fetched()
    }

    /// Times a request waited for a rate-limit window to reset instead of being sent.
    pub fn throttle_waits(&self) -> u64 {
        self.inner.pacer.waits()
    }

    /// 429 answers received (each was waited out and retried while the budget allowed).
    pub fn retried_429(&self) -> u64 {
        self.inner.throttled.load(Ordering::Relaxed)
    }

    /// HTTP requests sent to Okta so far.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// `GET /api/v1/users/{id or login}` (login URL-encoded); `None` on 404 `E0000007`.
    pub async fn user(&self, id_or_login: &str) -> Result<Reply<Option<OktaUser>>, OktaError> {
        self.get_optional(self.url(&["users", id_or_login])).await
    }

    /// `GET /api/v1/users/{id}/groups`, all pages.
    pub async fn user_groups(&self, user: &OktaUserId) -> Result<Reply<Vec<OktaGroup>>, OktaError> {
        let mut url = self.url(&["users", user.as_str(), "groups"]);
        url.query_pairs_mut()
            .append_pair("limit", &PAGE_LIMIT.to_string());
        self.get_all(url).await
    }

    /// `GET /api/v1/apps/{appId}/users/{userId}`; `None` on 404.
    pub async fn app_user(&self, user: &OktaUserId) -> Result<Reply<Option<AppUser>>, OktaError> {
        let url = self.url(&["apps", &self.inner.app_id, "users", user.as_str()]);
        self.get_optional(url).await
    }

    /// The app user whose `credentials.userName` equals `user_name` (case-insensitive), searching
    /// `GET /api/v1/apps/{appId}/users?q=…` over all pages.
    pub async fn app_user_by_user_name(
        &self,
        user_name: &str,
    ) -> Result<Reply<Option<AppUser>>, OktaError> {
        let reply = self.list_app_users(Some(user_name), PAGE_LIMIT).await?;
        Ok(reply.map(|users| {
            users.into_iter().find(|u| {
                u.user_name()
                    .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
            })
        }))
    }

    /// `GET /api/v1/apps/{appId}/users[?q=…]&limit={limit}`, all pages.
    pub async fn list_app_users(
        &self,
        q: Option<&str>,
        limit: u32,
    ) -> Result<Reply<Vec<AppUser>>, OktaError> {
        let mut url = self.url(&["apps", &self.inner.app_id, "users"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(q) = q {
                query.append_pair("q", q);
            }
            query.append_pair("limit", &limit.max(1).to_string());
        }
        self.get_all(url).await
    }

    /// `GET /api/v1/apps/{appId}/groups`, all pages.
    pub async fn app_groups(&self) -> Result<Reply<Vec<AppGroup>>, OktaError> {
        let mut url = self.url(&["apps", &self.inner.app_id, "groups"]);
        url.query_pairs_mut()
            .append_pair("limit", &PAGE_LIMIT.to_string());
        self.get_all(url).await
    }

    /// `DELETE /api/v1/apps/{appId}/users/{userId}?sendEmail=false`.
    pub async fn unassign(&self, user: &OktaUserId) -> Result<Reply<()>, OktaError> {
        let mut url = self.url(&["apps", &self.inner.app_id, "users", user.as_str()]);
        url.query_pairs_mut().append_pair("sendEmail", "false");
        let state = CallState::default();
        match self
            .call(Method::DELETE, url, None, Retry::Idempotent, &state)
            .await
        {
            Ok(raw) => Ok(Reply {
                value: (),
                request_id: raw.request_id,
            }),
            // An earlier attempt went unanswered and this one finds the assignment gone: that
            // attempt did the unassign.
            Err(OktaError::Api {
                status: 404,
                code,
                request_id,
                ..
            }) if code == "E0000007" && state.ambiguous.load(Ordering::SeqCst) => {
                tracing::debug!("okta unassign: 404 after an unanswered attempt, taken as done");
                Ok(Reply {
                    value: (),
                    request_id,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /api/v1/apps/{appId}/users`.
    pub async fn assign(&self, body: &AssignAppUser) -> Result<Reply<AppUser>, OktaError> {
        let url = self.url(&["apps", &self.inner.app_id, "users"]);
        let body = serde_json::to_vec(body).map_err(|e| OktaError::Decode(e.to_string()))?;
        let raw = self
            .call(
                Method::POST,
                url,
                Some(body),
                Retry::Assign,
                &CallState::default(),
            )
            .await?;
        decode_reply(raw)
    }

    /// Mappings whose target is the app (`GET /api/v1/mappings?targetId={appId}`), each fetched
    /// in full (`GET /api/v1/mappings/{id}`) so `properties` is filled.
    pub async fn mappings_into_app(&self) -> Result<Reply<Vec<ProfileMapping>>, OktaError> {
        let mut url = self.url(&["mappings"]);
        url.query_pairs_mut()
            .append_pair("targetId", &self.inner.app_id)
            .append_pair("limit", &PAGE_LIMIT.to_string());
        let list: Reply<Vec<ProfileMapping>> = self.get_all(url).await?;
        let mut full = Vec::with_capacity(list.value.len());
        for m in &list.value {
            let one: Reply<ProfileMapping> = self.get(self.url(&["mappings", &m.id])).await?;
            full.push(one.value);
        }
        Ok(Reply {
            value: full,
            request_id: list.request_id,
        })
    }

    /// `GET /api/v1/meta/schemas/apps/{appId}/default` (`getApplicationUserSchema`).
    pub async fn app_user_schema(&self) -> Result<Reply<AppUserSchema>, OktaError> {
        let url = self.url(&["meta", "schemas", "apps", &self.inner.app_id, "default"]);
        let raw: Reply<serde_json::Value> = self.get(url).await?;
        let schema = AppUserSchema::from_json(&raw.value).map_err(OktaError::Decode)?;
        Ok(Reply {
            value: schema,
            request_id: raw.request_id,
        })
    }

    /// The app user schema and the mappings into the app, read together (concurrently) and
    /// reused for [`PROFILE_RULES_TTL`]. `request_id` is `None` when served from the cache.
    pub async fn app_profile_rules(&self) -> Result<Reply<AppProfileRules>, OktaError> {
        if let Some(rules) = self.cached_profile_rules() {
            return Ok(Reply {
                value: rules,
                request_id: None,
            });
        }
        let _one_at_a_time = self.inner.profile_rules_fetch.lock().await;
        if let Some(rules) = self.cached_profile_rules() {
            return Ok(Reply {
                value: rules,
                request_id: None,
            });
        }
        let (schema, mappings) = tokio::join!(self.app_user_schema(), self.mappings_into_app());
        let rules = AppProfileRules {
            schema: schema?.value,
            mappings: mappings?.value,
        };
        if let Ok(mut slot) = self.inner.profile_rules.lock() {
            *slot = Some((Instant::now(), rules.clone()));
        }
        Ok(Reply {
            value: rules,
            request_id: None,
        })
    }

    fn cached_profile_rules(&self) -> Option<AppProfileRules> {
        let slot = self.inner.profile_rules.lock().ok()?;
        slot.as_ref()
            .filter(|(at, _)| at.elapsed() < PROFILE_RULES_TTL)
            .map(|(_, r)| r.clone())
    }

    /// `GET /api/v1/apps/{appId}`: the app instance (`name`, `label`, `status`), for
    /// `check-config`.
    pub async fn app(&self) -> Result<Reply<serde_json::Value>, OktaError> {
        self.get(self.url(&["apps", &self.inner.app_id])).await
    }

    /// `GET /api/v1/apps/{appId}/features/USER_PROVISIONING`.
    pub async fn provisioning(&self) -> Result<Reply<Feature>, OktaError> {
        self.get(self.feature_url()).await
    }

    /// `PUT /api/v1/apps/{appId}/features/USER_PROVISIONING` with the capabilities object only.
    pub async fn set_provisioning(
        &self,
        capabilities: &serde_json::Value,
    ) -> Result<Reply<Feature>, OktaError> {
        let body =
            serde_json::to_vec(capabilities).map_err(|e| OktaError::Decode(e.to_string()))?;
        let raw = self
            .call(
                Method::PUT,
                self.feature_url(),
                Some(body),
                Retry::Idempotent,
                &CallState::default(),
            )
            .await?;
        decode_reply(raw)
    }

    /// One page of a System Log poll (`GET /api/v1/logs`): from a new polling query, or from
    /// the `next` link an earlier page returned (kept by the caller as its cursor). The System
    /// Log has its own rate-limit bucket, which the pacer keys by path (`/api/v1/logs`), so
    /// polling never spends the user and app buckets the repairs need; its 429s are waited out
    /// like any other.
    pub async fn logs_page(&self, from: &LogCursor) -> Result<Reply<LogPage>, OktaError> {
        let logs_url = self.url(&["logs"]);
        let url = match from {
            LogCursor::Start(query) => query.url(&logs_url),
            LogCursor::Next(link) => {
                let url = logs_url
                    .join(link)
                    .map_err(|e| OktaError::Decode(format!("bad System Log cursor: {e}")))?;
                // The token must never go to another host, and a cursor for another endpoint
                // is not ours to follow.
                if url.origin() != self.inner.org.origin() || url.path() != logs_url.path() {
                    return Err(OktaError::Decode(format!(
                        "System Log cursor points elsewhere ({}{})",
                        url.origin().ascii_serialization(),
                        url.path()
                    )));
                }
                url
            }
        };
        let raw = self
            .call(
                Method::GET,
                url.clone(),
                None,
                Retry::Idempotent,
                &CallState::default(),
            )
            .await?;
        let events: Vec<LogEvent> = decode(&raw.body)?;
        let next = match next_link(&raw.headers) {
            Some(n) => Some(
                url.join(&n)
                    .map_err(|e| OktaError::Decode(format!("bad Link rel=next: {e}")))?
                    .to_string(),
            ),
            None => None,
        };
        Ok(Reply {
            value: LogPage { events, next },
            request_id: raw.request_id,
        })
    }

    fn feature_url(&self) -> Url {
        self.url(&["apps", &self.inner.app_id, "features", "USER_PROVISIONING"])
    }

    /// `{org}/api/v1/{segments…}`, each segment percent-encoded (a login's `'`, `#`, `/`, `+`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.org.clone();
        let mut path = url.path().trim_end_matches('/').to_owned();
        path.push_str("/api/v1");
        for s in segments {
            path.push('/');
            path.extend(utf8_percent_encode(s, SEGMENT));
        }
        // `set_path` keeps existing escapes, so each segment arrives exactly as encoded here.
        url.set_path(&path);
        url
    }

    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<Reply<T>, OktaError> {
        let raw = self
            .call(
                Method::GET,
                url,
                None,
                Retry::Idempotent,
                &CallState::default(),
            )
            .await?;
        decode_reply(raw)
    }

    async fn get_optional<T: DeserializeOwned>(
        &self,
        url: Url,
    ) -> Result<Reply<Option<T>>, OktaError> {
        match self.get(url).await {
            Ok(r) => Ok(r.map(Some)),
            Err(OktaError::Api {
                status: 404,
                code,
                request_id,
                ..
            }) if code == "E0000007" => Ok(Reply {
                value: None,
                request_id,
            }),
            Err(e) => Err(e),
        }
    }

    /// Every page, following `Link: <…>; rel="next"` on the org's own host only: the API token
    /// must never go anywhere else.
    async fn get_all<T: DeserializeOwned>(&self, first: Url) -> Result<Reply<Vec<T>>, OktaError> {
        let mut url = first;
        let mut out = Vec::new();
        let mut request_id = None;
        for _ in 0..MAX_PAGES {
            let raw = self
                .call(
                    Method::GET,
                    url.clone(),
                    None,
                    Retry::Idempotent,
                    &CallState::default(),
                )
                .await?;
            if request_id.is_none() {
                request_id = raw.request_id.clone();
            }
            let page: Vec<T> = decode(&raw.body)?;
            out.extend(page);
            let Some(next) = next_link(&raw.headers) else {
                return Ok(Reply {
                    value: out,
                    request_id,
                });
            };
            let next = url
                .join(&next)
                .map_err(|e| OktaError::Decode(format!("bad Link rel=next: {e}")))?;
            if next.origin() != self.inner.org.origin() {
                return Err(OktaError::Decode(format!(
                    "Link rel=next points to another host ({})",
                    next.origin().ascii_serialization()
                )));
            }
            url = next;
        }
        Err(OktaError::Decode(format!(
            "more than {MAX_PAGES} pages; stopped following Link rel=next"
        )))
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        retry: Retry,
        state: &CallState,
    ) -> Result<Raw, OktaError> {
        retry::run(
            &self.inner.settings,
            |ctx| self.attempt(&method, &url, body.as_deref(), retry, state, ctx),
            |g: GiveUp, last: OktaError| match last {
                OktaError::Timeout(_) if g.deadline => OktaError::Timeout(g.elapsed),
                last => OktaError::Exhausted {
                    attempts: g.attempts,
                    elapsed: g.elapsed,
                    last: last.to_string(),
                },
            },
        )
        .await
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        retry: Retry,
        state: &CallState,
        ctx: AttemptCtx,
    ) -> Attempt<Raw, OktaError> {
        // Before pacing: a token request is not an API call and holds no rate-limit permit.
        let authorization = match self.inner.auth.header(ctx.timeout).await {
            Ok(h) => h,
            Err(AuthFailure::Refused(e)) => return Attempt::Done(Err(e)),
            Err(AuthFailure::Unavailable { error, after }) => {
                return Attempt::Retry { error, after };
            }
        };
        let bucket = bucket_of(url.path());
        let paced = async {
            let permit = self.inner.pacer.reserve(&bucket).await;
            let slot = self.inner.concurrency.acquire().await;
            (permit, slot)
        };
        let Ok((permit, _slot)) = tokio::time::timeout_at(ctx.deadline.into(), paced).await else {
            // The rate-limit window resets after the call's deadline: nothing was sent.
            return Attempt::Retry {
                error: OktaError::Timeout(self.inner.settings.call_deadline),
                after: None,
            };
        };
        let timeout = ctx.timeout_now(self.inner.settings.request_timeout);
        let mut req = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .timeout(timeout)
            .header(reqwest::header::AUTHORIZATION, authorization.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                crate::ops::metrics::metrics().api_call("okta", 0);
                return transport_failure(e, retry, state, ctx, timeout, method, url);
            }
        };
        let status = res.status();
        crate::ops::metrics::metrics().api_call("okta", status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Every 429 is waited out (its own Retry-After or reset) before the retry.
            crate::ops::metrics::metrics().throttle_wait("okta");
        }
        let headers = res.headers().clone();
        let rate = RateHeaders::from_headers(&headers);
        let retry_after = header_str(&headers, "retry-after")
            .and_then(|v| parse_retry_after(&v, SystemTime::now()));
        // Only this 429's own headers say how long its bucket is closed: a reset another
        // response named (a later window) is not what Okta asked this request to wait for.
        let throttled = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| throttled_until(rate, retry_after, epoch_now()));
        match throttled {
            Some(until) => permit.throttled(until),
            None => permit.finish(rate),
        }
        let request_id = header_str(&headers, "x-okta-request-id");
        let body = match res.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return transport_failure(e, retry, state, ctx, timeout, method, url),
        };
        tracing::debug!(
            method = %method,
            path = url.path(),
            status = status.as_u16(),
            request_id = request_id.as_deref().unwrap_or("-"),
            attempt = ctx.number,
            "okta call"
        );
        if status.is_success() {
            return Attempt::Done(Ok(Raw {
                body,
                headers,
                request_id,
            }));
        }
        let error = api_error(status, &body, request_id);
        match status.as_u16() {
            401 if self.inner.auth.is_oauth()
                && !state.auth_retried.swap(true, Ordering::SeqCst) =>
            {
                // The access token ended early (revoked, clocks apart): a fresh one, once.
                self.inner.auth.invalidate(&authorization).await;
                Attempt::RetryNow { error }
            }
            429 => {
                self.inner.throttled.fetch_add(1, Ordering::Relaxed);
                // A named time already here (or none named) means retry soon: `None` takes
                // the short jittered backoff rather than hammering at once.
                let after = throttled
                    .flatten()
                    .map(|until| Duration::from_secs_f64((until - epoch_now()).max(0.0)));
                Attempt::Retry { error, after }
            }
            503 => Attempt::Retry {
                error,
                after: retry_after,
            },
            504 if retry == Retry::Idempotent => {
                state.ambiguous.store(true, Ordering::SeqCst);
                Attempt::Retry {
                    error,
                    after: retry_after,
                }
            }
            _ => Attempt::Done(Err(error)),
        }
    }
}

fn transport_failure<T>(
    e: reqwest::Error,
    retry: Retry,
    state: &CallState,
    ctx: AttemptCtx,
    timeout: Duration,
    method: &Method,
    url: &Url,
) -> Attempt<T, OktaError> {
    // Without the URL: it may carry a login in the query.
    let e = e.without_url();
    tracing::debug!(method = %method, path = url.path(), attempt = ctx.number, error = %e, "okta call failed");
    let not_sent = e.is_connect();
    let error = if e.is_timeout() {
        OktaError::Timeout(timeout)
    } else {
        OktaError::Transport(e.to_string())
    };
    if !not_sent {
        state.ambiguous.store(true, Ordering::SeqCst);
    }
    match retry {
        Retry::Idempotent => Attempt::Retry { error, after: None },
        Retry::Assign if not_sent => Attempt::Retry { error, after: None },
        Retry::Assign => Attempt::Done(Err(error)),
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, OktaError> {
    serde_json::from_slice(body).map_err(|e| OktaError::Decode(e.to_string()))
}

fn decode_reply<T: DeserializeOwned>(raw: Raw) -> Result<Reply<T>, OktaError> {
    Ok(Reply {
        value: decode(&raw.body)?,
        request_id: raw.request_id,
    })
}

/// `{errorCode, errorSummary, errorLink, errorId, errorCauses[]}`; the `X-Okta-Request-Id`
/// header wins, `errorId` fills in.
fn api_error(status: StatusCode, body: &[u8], header_request_id: Option<String>) -> OktaError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let mut summary = field("errorSummary").unwrap_or_else(|| {
        String::from_utf8_lossy(body)
            .chars()
            .take(300)
            .collect::<String>()
    });
    let causes: Vec<&str> = v
        .get("errorCauses")
        .and_then(|c| c.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("errorSummary").and_then(|s| s.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if !causes.is_empty() {
        summary = format!("{summary} ({})", causes.join("; "));
    }
    OktaError::Api {
        status: status.as_u16(),
        code: field("errorCode").unwrap_or_else(|| format!("HTTP{}", status.as_u16())),
        summary,
        request_id: header_request_id.or_else(|| field("errorId")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> OktaClient {
        OktaClient::new(OktaConfig {
            org_url: Url::parse("https://example.okta.com").unwrap(),
            credential: OktaCredential::ApiToken(crate::secret::Secret::new("t")),
            app_id: "0oa1".into(),
            http: HttpSettings::default(),
        })
        .unwrap()
    }

    #[test]
    fn logins_are_encoded_as_one_segment() {
        let c = client();
        assert_eq!(
            c.url(&["users", "o'brien#1/x@contoso.com"]).path(),
            "/api/v1/users/o%27brien%231%2Fx@contoso.com"
        );
        assert_eq!(
            c.url(&["users", "a+b@x.com"]).path(),
            "/api/v1/users/a%2Bb@x.com"
        );
        assert_eq!(
            c.url(&["users", "a b?@x.com"]).path(),
            "/api/v1/users/a%20b%3F@x.com"
        );
    }

    #[test]
    fn okta_error_object() {
        let body = br#"{"errorCode":"E0000046","errorSummary":"cannot unassign","errorId":"oae1","errorCauses":[{"errorSummary":"group"}]}"#;
        let e = api_error(StatusCode::FORBIDDEN, body, None);
        assert_eq!(e.code(), Some("E0000046"));
        assert_eq!(e.request_id(), Some("oae1"));
        assert!(e.to_string().contains("cannot unassign (group)"));
        let e = api_error(StatusCode::FORBIDDEN, body, Some("req".into()));
        assert_eq!(e.request_id(), Some("req"));
    }
}
