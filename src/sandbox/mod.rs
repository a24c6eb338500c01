//! The sandbox tenant: a stateful, simulated Entra token endpoint, Microsoft Graph and Okta API
//! served over HTTP on 127.0.0.1, following `api-facts.md` wherever the repair depends on it.

mod apps;
mod clock;
mod faults;
mod graph;
mod graph_limit;
mod odata;
mod okta;
mod paging;
mod patch;
mod provisioning;
mod ratelimit;
mod reply;
mod router;
pub mod scenario;
mod state;
mod syslog;
mod token;

use crate::directory::graph::{EntraUser, GraphConfig};
use crate::directory::okta::{AppUser, AppUserCredentials, OktaConfig};
use crate::directory::HttpSettings;
use crate::secret::Secret;
use router::Shared;
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use url::Url;

/// What the Okta `immutableId` profile mapping does to an assignment's own value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingMode {
    /// `immutableId` is not mapped: the assignment sets it.
    #[default]
    Unmapped,
    /// Mapped from the Okta user's `o365ImmutableId`; a value in the assignment is ignored.
    Ignore,
    /// Mapped; a value in the assignment is rejected with `E0000001`.
    Reject,
    /// Mapped as Okta's default for Office 365, `hasDirectoryUser()?findDirectoryUser().externalId:null`:
    /// AD-sourced Okta users get their AD objectGUID, everyone else no value. A value in the
    /// assignment is ignored, as with [`MappingMode::Ignore`].
    DirectoryUser,
}

#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub bind: SocketAddr,
    /// Added to every API call before it is answered.
    pub latency: Duration,
    /// After a write to an Entra user, reads of it return the previous state for this long.
    pub graph_read_lag: Duration,
    /// `expires_in` of issued Graph tokens.
    pub token_lifetime: Duration,
    /// Okta requests allowed per bucket per window.
    pub okta_rate_limit: u32,
    pub okta_rate_window: Duration,
    /// Graph writes (POST, PATCH, PUT, DELETE) allowed per app in any window; Microsoft
    /// documents 3,000 per 150 s per app and tenant.
    pub graph_write_limit: u32,
    pub graph_write_window: Duration,
    /// Extra healthy users (`user0001@contoso.com` …) for load.
    pub ordinary_users: usize,
    pub mapping: MappingMode,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: Duration::ZERO,
            graph_read_lag: Duration::ZERO,
            token_lifetime: Duration::from_secs(3599),
            okta_rate_limit: 600,
            okta_rate_window: Duration::from_secs(60),
            graph_write_limit: 3_000,
            graph_write_window: Duration::from_secs(150),
            ordinary_users: 300,
            mapping: MappingMode::Unmapped,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SandboxUrls {
    /// Token URL is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub authority: Url,
    /// Graph v1.0 base.
    pub graph: Url,
    /// Okta org base.
    pub okta: Url,
}

#[derive(Debug, Clone)]
pub struct SandboxCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub okta_token: Secret,
    pub app_id: String,
}

/// What an injected fault does to the call it hits.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Answer with this error (Graph envelope or Okta error object, per service).
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// 429 (Graph: with `Retry-After` when given; Okta: `E0000047` with rate-limit headers
    /// whose reset is `retry_after` seconds (default 1) from now, as a concurrency-limit 429
    /// names, so usually earlier than the bucket's per-minute window).
    Throttle { retry_after: Option<String> },
    /// Answer normally, but only after this delay.
    Delay(Duration),
    /// Serve the call normally (the change is made), then hold the answer this long.
    HoldReply(Duration),
    /// Serve the call normally (the change is made), then answer with this error instead of the
    /// success, in the service's own envelope: a write that landed although the client was told
    /// it failed. A call the sandbox refuses anyway (auth, rate limit, not found) keeps its own
    /// refusal, since nothing was applied.
    ApplyThenFail {
        status: u16,
        code: String,
        message: String,
    },
    /// Someone switches Deactivate on in Okta just before this call is served normally.
    EnableDeactivate,
}

/// A fault for calls of one operation (`graph.update_user`, `okta.unassign`, …; see
/// [`scenario::OPERATIONS`]): the `nth` call (1-based, counted from injection) and the `times - 1`
/// calls after it.
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: String,
    pub nth: u32,
    pub times: u32,
    pub action: FaultAction,
}

/// One API call the sandbox served.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub op: String,
    pub method: String,
    pub path_and_query: String,
    pub status: u16,
    /// The `client-request-id` header the request carried, if any.
    pub client_request_id: Option<String>,
    /// Milliseconds since the sandbox started.
    pub at_ms: u64,
}

/// A running sandbox tenant. The server stops when this is dropped.
pub struct Sandbox {
    pub urls: SandboxUrls,
    pub creds: SandboxCredentials,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Sandbox {
    /// Binds `opts.bind` and serves the token endpoint (`/login`), Graph (`/graph/v1.0`) and
    /// Okta (`/okta`) on the current tokio runtime.
    pub async fn start(opts: SandboxOptions) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let origin = format!("http://{addr}");
        let client_secret = format!("sbx~{}", clock::random_alnum(36));
        let okta_token = format!("00{}", clock::random_alnum(40));
        let state = scenario::build(
            &opts,
            &origin,
            scenario::Secrets {
                client_secret: client_secret.clone(),
                okta_token: okta_token.clone(),
            },
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            started: Instant::now(),
        });
        let app = axum::Router::new()
            .fallback(router::handle)
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            urls: SandboxUrls {
                authority: Url::parse(&format!("{origin}/login"))?,
                graph: Url::parse(&format!("{origin}/graph/v1.0"))?,
                okta: Url::parse(&format!("{origin}/okta"))?,
            },
            creds: SandboxCredentials {
                tenant_id: scenario::TENANT_NAME.into(),
                client_id: scenario::CLIENT_ID.into(),
                client_secret: Secret::new(client_secret),
                okta_token: Secret::new(okta_token),
                app_id: scenario::APP_ID.into(),
            },
            shared,
            shutdown: Some(tx),
        })
    }

    pub fn graph_config(&self, http: HttpSettings) -> GraphConfig {
        GraphConfig {
            authority: self.urls.authority.clone(),
            graph_base: self.urls.graph.clone(),
            tenant_id: self.creds.tenant_id.clone(),
            client_id: self.creds.client_id.clone(),
            credential: crate::directory::graph::GraphCredential::ClientSecret(
                self.creds.client_secret.clone(),
            ),
            scope: "https://graph.microsoft.com/.default".into(),
            http,
            write_budget: Default::default(),
        }
    }

    pub fn okta_config(&self, http: HttpSettings) -> OktaConfig {
        OktaConfig {
            org_url: self.urls.okta.clone(),
            credential: crate::directory::okta::OktaCredential::ApiToken(
                self.creds.okta_token.clone(),
            ),
            app_id: self.creds.app_id.clone(),
            http,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, state::State> {
        self.shared.lock()
    }

    pub fn inject(&self, fault: Fault) {
        self.state().faults.inject(fault);
    }
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }
    pub fn set_graph_read_lag(&self, lag: Duration) {
        self.state().graph_read_lag = lag;
    }
    pub fn set_mapping(&self, mode: MappingMode) {
        self.state().mapping = mode;
    }
    /// Graph application permissions carried by tokens issued from now on.
    pub fn set_app_roles(&self, roles: &[&str]) {
        self.state().app_roles = roles.iter().map(|r| (*r).to_owned()).collect();
    }
    /// Whether the Okta token's admin may manage the Office 365 app (else 403 `E0000006`).
    pub fn set_okta_app_admin(&self, admin: bool) {
        self.state().okta_app_admin = admin;
    }
    /// Whether provisioning is enabled for the app (else the features API answers 404).
    pub fn set_provisioning_enabled(&self, enabled: bool) {
        self.state().provisioning_enabled = enabled;
    }
    /// Every token issued so far is refused from now on (401 `InvalidAuthenticationToken`).
    pub fn expire_tokens(&self) {
        self.state().tokens.revoke_all();
    }
    /// Switch Okta's Deactivate capability, as an admin in the console would.
    pub fn set_deactivate(&self, enabled: bool) {
        self.state().set_deactivate(enabled);
    }
    /// New Okta rate limits; every bucket starts a fresh window now.
    pub fn set_okta_rate_limit(&self, limit: u32, window: Duration) {
        self.state().rate = ratelimit::RateLimiter::new(limit, window);
    }
    /// Whether Okta's push to Office 365 is held back: app users assigned or changed from now on
    /// stay `SYNCING` (unlinked) even once provisioning resumes, as when Office 365 is slow.
    pub fn set_hold_sync(&self, hold: bool) {
        self.state().hold_sync = hold;
    }
    /// Sets the `mutability` (`READ_ONLY`, `READ_WRITE`, …) of a custom attribute of the app
    /// user schema, as an admin would in the Profile Editor. `false` if there is no such attribute.
    pub fn set_app_schema_mutability(&self, attribute: &str, mutability: &str) -> bool {
        let mut st = self.state();
        match st.app_schema_custom.get_mut(attribute) {
            Some(a) => {
                a["mutability"] = Value::String(mutability.to_owned());
                true
            }
            None => false,
        }
    }
    /// A new Graph write quota per app; every app starts with an empty window now.
    pub fn set_graph_write_limit(&self, limit: u32, window: Duration) {
        self.state().graph_writes = graph_limit::WriteQuota::new(limit, window);
    }
    /// Graph 429 answers served for the write quota so far.
    pub fn graph_throttled(&self) -> u64 {
        self.state().graph_throttled
    }
    /// Forget the calls recorded so far.
    pub fn reset_calls(&self) {
        self.state().calls.clear();
    }

    /// Removes an Entra user's ImmutableID, as for a user created in the cloud and never given
    /// one: a fresh federated user to repair (ADELE's case) beyond the one the scenario seeds.
    /// `false` if there is no such user.
    pub fn clear_entra_immutable_id(&self, upn_or_id: &str) -> bool {
        let mut st = self.state();
        let Some(i) = st.entra_find_current(upn_or_id) else {
            return false;
        };
        let e = &mut st.entra[i];
        e.current
            .insert("onPremisesImmutableId".into(), Value::Null);
        e.prev = None;
        true
    }

    /// Gives an Entra user an ImmutableID (e.g. one another user's Okta assignment sends).
    pub fn set_entra_immutable_id(&self, upn_or_id: &str, value: &str) -> bool {
        let mut st = self.state();
        let Some(i) = st.entra_find_current(upn_or_id) else {
            return false;
        };
        let e = &mut st.entra[i];
        e.current
            .insert("onPremisesImmutableId".into(), Value::String(value.into()));
        e.prev = None;
        true
    }

    /// Sets (or removes) the Entra object id Okta linked an Office 365 assignment to.
    pub fn set_app_user_external_id(&self, okta_user_id: &str, external_id: Option<&str>) -> bool {
        let mut st = self.state();
        let Some(i) = st.app_user(okta_user_id) else {
            return false;
        };
        st.app_users[i].external_id = external_id.map(str::to_owned);
        true
    }

    /// The Entra user as stored (no lag), by UPN (case-insensitive) or object id.
    pub fn entra_user(&self, upn_or_id: &str) -> Option<EntraUser> {
        let st = self.state();
        let i = st.entra_find_current(upn_or_id)?;
        serde_json::from_value(Value::Object(st.entra[i].current.clone())).ok()
    }
    /// The Okta user id for a login.
    pub fn okta_user_id(&self, login: &str) -> Option<String> {
        let st = self.state();
        st.okta_users
            .iter()
            .find(|u| {
                state::prop_str(&u.profile, "login").is_some_and(|l| l.eq_ignore_ascii_case(login))
            })
            .map(|u| u.id.clone())
    }
    /// The Okta user's own profile (`login`, `email`, `firstName`, `lastName`, `o365ImmutableId`).
    pub fn okta_user_profile(&self, okta_user_id: &str) -> Option<Map<String, Value>> {
        let st = self.state();
        st.okta_users
            .iter()
            .find(|u| u.id == okta_user_id)
            .map(|u| u.profile.clone())
    }
    /// The Office 365 app user as stored.
    pub fn okta_app_user(&self, okta_user_id: &str) -> Option<AppUser> {
        let st = self.state();
        let a = &st.app_users[st.app_user(okta_user_id)?];
        Some(AppUser {
            id: a.user_id.clone(),
            scope: a.scope.clone(),
            status: a.status.clone(),
            sync_state: Some(a.sync_state.clone()),
            external_id: a.external_id.clone(),
            credentials: Some(AppUserCredentials {
                user_name: Some(a.user_name.clone()),
            }),
            profile: a.profile.clone(),
        })
    }
    /// The provisioning capabilities object as stored.
    pub fn provisioning_capabilities(&self) -> serde_json::Value {
        self.state().capabilities.clone()
    }
    /// Every capabilities object accepted by a PUT, in order.
    pub fn provisioning_writes(&self) -> Vec<serde_json::Value> {
        self.state().provisioning_writes.clone()
    }
    /// Okta user ids deprovisioned in Office 365 by an unassign while Deactivate was enabled.
    pub fn deprovisions(&self) -> Vec<String> {
        self.state().deprovisions.clone()
    }
    pub fn calls(&self) -> Vec<CallRecord> {
        self.state().calls.clone()
    }
    /// Okta's periodic profile push to Office 365: while provisioning pushes, records one
    /// `application.provision.user.push_profile` FAILURE in the System Log for every app user
    /// whose ImmutableID does not match Entra's. Returns how many events were recorded.
    pub fn record_push_failures(&self) -> usize {
        self.state()
            .record_push_failures(std::time::SystemTime::now())
    }
    /// Okta pushes one user's profile (`name`: the app username or the Okta login): when the
    /// ImmutableIDs do not match, one `push_profile` FAILURE is logged and the app user is left
    /// in `syncState` ERROR. Returns whether a failure was logged.
    pub fn record_push_failure_of(&self, name: &str) -> bool {
        self.state()
            .record_push_failure_of(name, std::time::SystemTime::now())
    }
    /// Persists an arbitrary System Log event now (`uuid`, `published` and a few defaults are
    /// filled in when missing). Returns its `uuid`.
    pub fn add_log_event(&self, event: Value) -> String {
        self.state()
            .syslog
            .record(std::time::SystemTime::now(), event)
    }
    /// Events in the System Log so far.
    pub fn log_events(&self) -> usize {
        self.state().syslog.len()
    }
    /// The System Log bucket's own limit (same window as the other Okta buckets).
    pub fn set_okta_logs_rate_limit(&self, limit: u32) {
        self.state()
            .rate
            .set_bucket_limit(ratelimit::LOGS_BUCKET, limit);
    }
    /// Okta 429 answers served so far.
    pub fn okta_throttled(&self) -> u64 {
        self.state().okta_throttled
    }
}
