//! How the Okta client authenticates: an API token (`SSWS`), or an OAuth 2.0 service app whose
//! access tokens (client credentials with `private_key_jwt`) are fetched, cached and renewed.

use super::OktaError;
use crate::directory::assertion::{AssertionSigner, JWT_BEARER};
use crate::directory::retry::parse_retry_after;
use crate::secret::Secret;
use reqwest::header::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Mutex;
use url::Url;

/// The scopes the bot asks its service app's tokens for: exactly the operations it calls, per
/// the `security` of each operation in Okta's management API spec.
/// - `okta.users.read`: `getUser`, `listUserGroups` (the target and the groups that could grant
///   the app);
/// - `okta.apps.read`: `getApplication`, `listApplicationUsers`, `getApplicationUser`,
///   `listApplicationGroupAssignments`, `getFeatureForApplication`;
/// - `okta.apps.manage`: `unassignUserFromApplication`, `assignUserToApplication`,
///   `updateFeatureForApplication` (pause and restore provisioning);
/// - `okta.profileMappings.read`: `listProfileMappings`, `getProfileMapping` (is `immutableId`
///   mapped?);
/// - `okta.schemas.read`: `getApplicationUserSchema` (the app user profile's attributes).
///
/// Not `okta.groups.read` (no group endpoint is called: a user's groups come with the users
/// scope, an app's group assignments with the apps scope). [`LOGS_SCOPE`] is asked for only by a
/// client the watch uses (see `OktaClient::also_read_logs`): an org that does not run the watch
/// need not grant it, and asking for a scope not granted fails the whole token request.
pub const SERVICE_APP_SCOPES: &[&str] = &[
    "okta.users.read",
    "okta.apps.read",
    "okta.apps.manage",
    "okta.profileMappings.read",
    "okta.schemas.read",
];

/// `listLogEvents` (the System Log), for the watch.
pub const LOGS_SCOPE: &str = "okta.logs.read";

/// Renew when this much of a token's life is left (Okta's service-app tokens live an hour).
const RENEW_MARGIN: Duration = Duration::from_secs(300);

/// OAuth errors meaning the service app requires DPoP-bound tokens (RFC 9449), which the bot
/// does not send.
const DPOP_ERRORS: &[&str] = &["invalid_dpop_proof", "use_dpop_nonce"];

/// How the bot proves itself to Okta.
#[derive(Debug, Clone)]
pub enum OktaCredential {
    /// `Authorization: SSWS {token}`: an API token, acting with its creating admin's rights.
    ApiToken(Secret),
    /// An OAuth 2.0 service app: `Authorization: Bearer {access token}`.
    ServiceApp(Box<ServiceApp>),
}

#[derive(Debug, Clone)]
pub struct ServiceApp {
    pub client_id: String,
    pub signer: AssertionSigner,
}

impl OktaCredential {
    /// What `check-config` calls it.
    pub fn describe(&self) -> String {
        match self {
            OktaCredential::ApiToken(_) => "API token (SSWS)".to_owned(),
            OktaCredential::ServiceApp(a) => format!(
                "OAuth 2.0 service app {} (private_key_jwt, scopes {})",
                a.client_id,
                SERVICE_APP_SCOPES.join(" ")
            ),
        }
    }
}

/// A token-endpoint failure: refused (retrying cannot help) or unavailable (retry).
pub(super) enum AuthFailure {
    Refused(OktaError),
    Unavailable {
        error: OktaError,
        after: Option<Duration>,
    },
}

struct Cached {
    header: HeaderValue,
    renew_at: Instant,
    scopes: Vec<String>,
}

/// Hands out the `Authorization` header for each request.
pub(super) struct Authorizer {
    credential: OktaCredential,
    http: reqwest::Client,
    token_url: Url,
    cached: Mutex<Option<Cached>>,
    fetched: AtomicU64,
    /// Also ask for [`LOGS_SCOPE`].
    read_logs: std::sync::atomic::AtomicBool,
}

impl Authorizer {
    pub(super) fn new(credential: OktaCredential, http: reqwest::Client, org: &Url) -> Self {
        // The org authorization server: the only one whose tokens carry `okta.*` scopes.
        let mut token_url = org.clone();
        let path = format!("{}/oauth2/v1/token", org.path().trim_end_matches('/'));
        token_url.set_path(&path);
        token_url.set_query(None);
        Self {
            credential,
            http,
            token_url,
            cached: Mutex::new(None),
            fetched: AtomicU64::new(0),
            read_logs: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(super) fn credential(&self) -> &OktaCredential {
        &self.credential
    }

    pub(super) fn is_oauth(&self) -> bool {
        matches!(self.credential, OktaCredential::ServiceApp(_))
    }

    /// From now on tokens carry [`LOGS_SCOPE`] too; a cached token without it is dropped.
    pub(super) async fn also_read_logs(&self) {
        if self.read_logs.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut cached = self.cached.lock().await;
        if cached
            .as_ref()
            .is_some_and(|c| !c.scopes.iter().any(|s| s == LOGS_SCOPE))
        {
            *cached = None;
        }
    }

    /// Access tokens fetched so far.
    pub(super) fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The scopes Okta granted the current access token (service app only).
    pub(super) async fn granted_scopes(&self) -> Option<Vec<String>> {
        self.cached.lock().await.as_ref().map(|c| c.scopes.clone())
    }

    /// The `Authorization` header, marked sensitive so no debug print or HTTP/2 table keeps it.
    pub(super) async fn header(&self, timeout: Duration) -> Result<HeaderValue, AuthFailure> {
        let app = match &self.credential {
            OktaCredential::ApiToken(token) => {
                return sensitive(&format!("SSWS {}", token.expose()));
            }
            OktaCredential::ServiceApp(app) => app,
        };
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.header.clone());
            }
        }
        let (token, lifetime, scopes) = self.fetch(app, timeout).await?;
        let header = sensitive(&format!("Bearer {}", token.expose()))?;
        let margin = RENEW_MARGIN.min(lifetime / 10);
        *cached = Some(Cached {
            header: header.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(margin),
            scopes,
        });
        Ok(header)
    }

    /// Okta refused `header` (expired or revoked early): forget it, unless already replaced.
    pub(super) async fn invalidate(&self, header: &HeaderValue) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.header == *header) {
            *cached = None;
        }
    }

    async fn fetch(
        &self,
        app: &ServiceApp,
        timeout: Duration,
    ) -> Result<(Secret, Duration, Vec<String>), AuthFailure> {
        self.fetched.fetch_add(1, Ordering::Relaxed);
        let assertion = app
            .signer
            .sign(self.token_url.as_str(), SystemTime::now())
            .map_err(|e| AuthFailure::Refused(OktaError::Decode(e)))?;
        let mut scopes = SERVICE_APP_SCOPES.to_vec();
        if self.read_logs.load(Ordering::SeqCst) {
            scopes.push(LOGS_SCOPE);
        }
        let scope = scopes.join(" ");
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", scope.as_str()),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        let unavailable = |e: reqwest::Error| {
            let e = e.without_url();
            let error = if e.is_timeout() {
                OktaError::Timeout(timeout)
            } else {
                OktaError::Transport(format!("token endpoint: {e}"))
            };
            AuthFailure::Unavailable { error, after: None }
        };
        let res = self
            .http
            .post(self.token_url.clone())
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(unavailable)?;
        let status = res.status().as_u16();
        let after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let request_id = res
            .headers()
            .get("x-okta-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res.bytes().await.map_err(unavailable)?;
        tracing::debug!(status, path = self.token_url.path(), "okta token");
        if (200..300).contains(&status) {
            let grant = crate::directory::oauth::decode_grant(&body, 3600)
                .map_err(|e| AuthFailure::Refused(OktaError::Decode(e)))?;
            let scopes = grant
                .scope
                .unwrap_or(scope)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            return Ok((grant.token, grant.lifetime, scopes));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let code = field("error")
            .or_else(|| field("errorCode"))
            .unwrap_or_else(|| format!("HTTP{status}"));
        let mut summary = field("error_description")
            .or_else(|| field("errorSummary"))
            .unwrap_or_default();
        if DPOP_ERRORS.contains(&code.as_str()) {
            summary = format!(
                "the service app {} requires DPoP-bound tokens, which o365-fixbot does not send: turn off \"Require Demonstrating Proof of Possession (DPoP) header in token requests\" in the app's General settings ({summary})",
                app.client_id
            );
        }
        // The error goes through the client's usual path: `code` is the OAuth error
        // (`invalid_client`, `invalid_scope`, `invalid_dpop_proof`…), which callers branch on.
        let error = OktaError::Api {
            status,
            code,
            summary,
            request_id,
        };
        if status == 429 || status >= 500 {
            Err(AuthFailure::Unavailable { error, after })
        } else {
            Err(AuthFailure::Refused(error))
        }
    }
}

fn sensitive(value: &str) -> Result<HeaderValue, AuthFailure> {
    let mut h = HeaderValue::from_str(value).map_err(|_| {
        AuthFailure::Refused(OktaError::Decode(
            "the Okta credential holds characters not allowed in an HTTP header".into(),
        ))
    })?;
    h.set_sensitive(true);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ssws_header_is_sensitive() {
        let a = Authorizer::new(
            OktaCredential::ApiToken(Secret::new("00abc")),
            reqwest::Client::new(),
            &Url::parse("https://example.okta.com").unwrap(),
        );
        let Ok(h) = a.header(Duration::from_secs(1)).await else {
            panic!("no header")
        };
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "SSWS 00abc");
        assert!(!format!("{h:?}").contains("00abc"));
    }

    #[test]
    fn the_token_url_is_the_org_authorization_server() {
        let a = Authorizer::new(
            OktaCredential::ApiToken(Secret::new("t")),
            reqwest::Client::new(),
            &Url::parse("http://127.0.0.1:9/okta/").unwrap(),
        );
        assert_eq!(
            a.token_url.as_str(),
            "http://127.0.0.1:9/okta/oauth2/v1/token"
        );
    }
}
