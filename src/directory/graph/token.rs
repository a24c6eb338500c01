//! Client-credentials token, cached and renewed before it expires; the app proves itself with a
//! client secret or with a certificate (a signed client assertion).

use super::GraphError;
use crate::directory::assertion::{AssertionSigner, Certificate, JWT_BEARER};
use crate::directory::retry::parse_retry_after;
use crate::secret::Secret;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Mutex;
use url::Url;

/// Renew when less than this (or 10% of the lifetime, whichever is less) is left, so a token
/// never expires between being handed out and being checked by Graph.
const RENEW_MARGIN: Duration = Duration::from_secs(300);

/// A token-endpoint failure: either the credentials are refused (retrying cannot help) or the
/// endpoint was unavailable (retry, maybe after `Retry-After`).
pub(super) enum TokenFailure {
    Refused(GraphError),
    Unavailable {
        error: GraphError,
        after: Option<Duration>,
    },
}

/// How the app authenticates at the token endpoint.
#[derive(Debug, Clone)]
pub enum GraphCredential {
    /// A client secret: a long-lived shared secret, simplest to set up.
    ClientSecret(Secret),
    /// A certificate: only its public half is registered with Entra; each token request carries
    /// a fresh assertion signed with the private key, which never leaves this host.
    Certificate(Arc<CertificateCredential>),
}

#[derive(Debug)]
pub struct CertificateCredential {
    pub certificate: Certificate,
    pub signer: AssertionSigner,
}

impl GraphCredential {
    /// What `check-config` calls it.
    pub fn describe(&self) -> String {
        match self {
            GraphCredential::ClientSecret(_) => "client secret".to_owned(),
            GraphCredential::Certificate(c) => format!(
                "certificate `{}` (x5t#S256 {})",
                c.certificate.subject,
                c.certificate.thumbprint_s256()
            ),
        }
    }
}

struct Cached {
    token: Secret,
    renew_at: Instant,
}

pub(super) struct TokenSource {
    http: reqwest::Client,
    url: Url,
    client_id: String,
    credential: GraphCredential,
    scope: String,
    cached: Mutex<Option<Cached>>,
    fetched: std::sync::atomic::AtomicU64,
}

impl TokenSource {
    pub(super) fn new(
        http: reqwest::Client,
        authority: &Url,
        tenant: &str,
        client_id: String,
        credential: GraphCredential,
        scope: String,
    ) -> anyhow::Result<Self> {
        let mut url = authority.clone();
        url.path_segments_mut()
            .map_err(|_| anyhow::anyhow!("the authority URL `{authority}` cannot have a path"))?
            .pop_if_empty()
            .extend([tenant, "oauth2", "v2.0", "token"]);
        Ok(Self {
            http,
            url,
            client_id,
            credential,
            scope,
            cached: Mutex::new(None),
            fetched: Default::default(),
        })
    }

    pub(super) fn credential(&self) -> &GraphCredential {
        &self.credential
    }

    /// Tokens fetched so far.
    pub(super) fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid token: the cached one, or a fresh one. Concurrent callers wait for a single fetch.
    pub(super) async fn get(&self, timeout: Duration) -> Result<Secret, TokenFailure> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.token.clone());
            }
        }
        let (token, lifetime) = self.fetch(timeout).await?;
        let margin = RENEW_MARGIN.min(lifetime / 10);
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Graph refused `token`: forget it, unless another task already replaced it.
    pub(super) async fn invalidate(&self, token: &Secret) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == token) {
            *cached = None;
        }
    }

    async fn fetch(&self, timeout: Duration) -> Result<(Secret, Duration), TokenFailure> {
        self.fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let assertion;
        let mut form = vec![
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
            ("grant_type", "client_credentials"),
        ];
        match &self.credential {
            GraphCredential::ClientSecret(secret) => form.push(("client_secret", secret.expose())),
            GraphCredential::Certificate(c) => {
                // The audience is the token endpoint itself (Microsoft's "certificate
                // credentials": aud = https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token).
                assertion = c
                    .signer
                    .sign(self.url.as_str(), SystemTime::now())
                    .map_err(|e| TokenFailure::Refused(GraphError::Decode(e)))?;
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", assertion.as_str()));
            }
        }
        let res = self
            .http
            .post(self.url.clone())
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => return Err(unreachable_endpoint(e, timeout)),
        };
        let status = res.status().as_u16();
        let after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = match res.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(unreachable_endpoint(e, timeout)),
        };
        tracing::debug!(
            method = "POST",
            path = self.url.path(),
            status,
            "graph token"
        );
        if (200..300).contains(&status) {
            let grant = crate::directory::oauth::decode_grant(&body, 3599)
                .map_err(|e| TokenFailure::Refused(GraphError::Decode(e)))?;
            return Ok((grant.token, grant.lifetime));
        }
        let (error, description) = self.describe(&body);
        let auth = GraphError::Auth {
            status,
            error,
            description,
        };
        if status == 429 || status >= 500 {
            Err(TokenFailure::Unavailable { error: auth, after })
        } else {
            Err(TokenFailure::Refused(auth))
        }
    }

    /// The OAuth error (`{error, error_description}`) or a Graph-style envelope, with the secret
    /// scrubbed in case an endpoint ever echoes the request.
    fn describe(&self, body: &[u8]) -> (String, String) {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let (error, description) = match v.get("error") {
            Some(serde_json::Value::String(e)) => (
                e.clone(),
                v.get("error_description")
                    .and_then(|d| d.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Some(obj @ serde_json::Value::Object(_)) => (
                obj.get("code")
                    .and_then(|c| c.as_str())
                    .unwrap_or("unknown")
                    .to_owned(),
                obj.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            ),
            _ => (
                "unknown".to_owned(),
                String::from_utf8_lossy(body).chars().take(300).collect(),
            ),
        };
        let secret = match &self.credential {
            GraphCredential::ClientSecret(s) => s.expose(),
            // An assertion is single-use and short-lived; nothing secret could be echoed.
            GraphCredential::Certificate(_) => "",
        };
        if secret.is_empty() {
            return (error, description);
        }
        (
            error.replace(secret, "[redacted]"),
            description.replace(secret, "[redacted]"),
        )
    }
}

/// A token request that got no usable answer; retried like any unavailable endpoint. The URL is
/// dropped from the error so no query or form detail reaches a log.
fn unreachable_endpoint(e: reqwest::Error, timeout: Duration) -> TokenFailure {
    let error = if e.is_timeout() {
        GraphError::Timeout(timeout)
    } else {
        GraphError::Transport(format!("token endpoint: {}", e.without_url()))
    };
    TokenFailure::Unavailable { error, after: None }
}
