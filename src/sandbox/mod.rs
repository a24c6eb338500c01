//! The sandbox tenant: a stateful, simulated Entra token endpoint, Microsoft Graph and Okta API
//! served over HTTP on 127.0.0.1, following `api-facts.md` wherever the repair depends on it.

pub mod scenario;

use crate::directory::graph::{EntraUser, GraphConfig};
use crate::directory::okta::{AppUser, OktaConfig};
use crate::directory::HttpSettings;
use crate::secret::Secret;
use std::net::SocketAddr;
use std::time::Duration;
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
    /// 429 (Graph: with `Retry-After` when given; Okta: `E0000047` with rate-limit headers).
    Throttle { retry_after: Option<String> },
    /// Answer normally, but only after this delay.
    Delay(Duration),
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
    /// Milliseconds since the sandbox started.
    pub at_ms: u64,
}

pub struct Sandbox {
    pub urls: SandboxUrls,
    pub creds: SandboxCredentials,
}

impl Sandbox {
    pub async fn start(_opts: SandboxOptions) -> anyhow::Result<Self> {
        todo!()
    }

    pub fn graph_config(&self, http: HttpSettings) -> GraphConfig {
        GraphConfig {
            authority: self.urls.authority.clone(),
            graph_base: self.urls.graph.clone(),
            tenant_id: self.creds.tenant_id.clone(),
            client_id: self.creds.client_id.clone(),
            client_secret: self.creds.client_secret.clone(),
            scope: "https://graph.microsoft.com/.default".into(),
            http,
        }
    }

    pub fn okta_config(&self, http: HttpSettings) -> OktaConfig {
        OktaConfig {
            org_url: self.urls.okta.clone(),
            api_token: self.creds.okta_token.clone(),
            app_id: self.creds.app_id.clone(),
            http,
        }
    }

    pub fn inject(&self, _fault: Fault) {
        todo!()
    }
    pub fn clear_faults(&self) {
        todo!()
    }
    pub fn set_latency(&self, _latency: Duration) {
        todo!()
    }
    pub fn set_graph_read_lag(&self, _lag: Duration) {
        todo!()
    }
    pub fn set_mapping(&self, _mode: MappingMode) {
        todo!()
    }
    /// Every token issued so far is refused from now on (401 `InvalidAuthenticationToken`).
    pub fn expire_tokens(&self) {
        todo!()
    }
    /// Switch Okta's Deactivate capability, as an admin in the console would.
    pub fn set_deactivate(&self, _enabled: bool) {
        todo!()
    }

    /// The Entra user as stored (no lag), by UPN (case-insensitive) or object id.
    pub fn entra_user(&self, _upn_or_id: &str) -> Option<EntraUser> {
        todo!()
    }
    /// The Okta user id for a login.
    pub fn okta_user_id(&self, _login: &str) -> Option<String> {
        todo!()
    }
    /// The Office 365 app user as stored.
    pub fn okta_app_user(&self, _okta_user_id: &str) -> Option<AppUser> {
        todo!()
    }
    /// The provisioning capabilities object as stored.
    pub fn provisioning_capabilities(&self) -> serde_json::Value {
        todo!()
    }
    /// Every capabilities object accepted by a PUT, in order.
    pub fn provisioning_writes(&self) -> Vec<serde_json::Value> {
        todo!()
    }
    /// Okta user ids deprovisioned in Office 365 by an unassign while Deactivate was enabled.
    pub fn deprovisions(&self) -> Vec<String> {
        todo!()
    }
    pub fn calls(&self) -> Vec<CallRecord> {
        todo!()
    }
    /// Okta 429 answers served so far.
    pub fn okta_throttled(&self) -> u64 {
        todo!()
    }
}
