//! The Microsoft identity platform token endpoint (client credentials, with a client secret or
//! a certificate's signed assertion), the Okta org authorization server's token endpoint for a
//! service app (`private_key_jwt`), and the tokens both issued.

use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::directory::assertion::{AssertionClaims, Certificate, JWT_BEARER};
use crate::directory::okta::SERVICE_APP_SCOPES;

use super::clock::{aad_timestamp, random_alnum};
use super::reply::{Ctx, Reply};
use super::state::State;

#[derive(Default)]
pub(crate) struct TokenStore {
    /// Token → expiry and the application permissions (`roles`) it carries.
    live: HashMap<String, (Instant, Vec<String>)>,
    dead: HashSet<String>,
    /// The certificate registered with the Graph app (its public half, as in Entra).
    graph_certificate: Option<Certificate>,
    okta_app: Option<OktaServiceApp>,
    /// Okta access token → expiry and granted scopes.
    okta_live: HashMap<String, (Instant, Vec<String>)>,
    /// Assertion ids already used at the Okta token endpoint (Okta refuses a replay).
    okta_jtis: HashSet<String>,
}

/// An Okta OAuth 2.0 service app: its client id, the public key it holds, the scopes granted.
struct OktaServiceApp {
    client_id: String,
    public_key: jsonwebtoken::DecodingKey,
    granted: Vec<String>,
    dpop_required: bool,
}

/// Why a bearer token was refused.
pub(crate) enum TokenProblem {
    Missing,
    Malformed,
    Expired,
}

impl TokenStore {
    /// A JWT-shaped token whose payload carries `roles`, as Entra's do (unsigned: the sandbox
    /// is the only one who checks it).
    fn issue(&mut self, expires: Instant, roles: &[String], tenant: &str, appid: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let payload = json!({
            "aud": "https://graph.microsoft.com",
            "tid": tenant,
            "appid": appid,
            "roles": roles,
            "uti": random_alnum(22),
        });
        let token = format!(
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.{}",
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            random_alnum(43)
        );
        self.live.insert(token.clone(), (expires, roles.to_vec()));
        token
    }

    /// Every token issued so far stops working.
    pub(crate) fn revoke_all(&mut self) {
        self.dead.extend(self.live.drain().map(|(k, _)| k));
        self.dead.extend(self.okta_live.drain().map(|(k, _)| k));
    }

    /// The permissions of a valid bearer token.
    pub(crate) fn check(
        &self,
        authorization: Option<&str>,
        now: Instant,
    ) -> Result<&[String], TokenProblem> {
        let Some(h) = authorization.map(str::trim).filter(|h| !h.is_empty()) else {
            return Err(TokenProblem::Missing);
        };
        let token = match h.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(TokenProblem::Malformed),
        };
        if token.is_empty() {
            return Err(TokenProblem::Missing);
        }
        match self.live.get(token) {
            Some((exp, roles)) if now < *exp => Ok(roles),
            Some(_) => Err(TokenProblem::Expired),
            None if self.dead.contains(token) => Err(TokenProblem::Expired),
            None => Err(TokenProblem::Malformed),
        }
    }
}

/// The token endpoint's error body.
pub(crate) fn aad_error(
    ctx: &Ctx,
    status: u16,
    error: &str,
    code: u32,
    description: &str,
) -> Reply {
    let trace = ctx.request_id.clone();
    let correlation = ctx
        .header("client-request-id")
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let ts = aad_timestamp(ctx.wall);
    Reply::json(
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {ts}"
            ),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) fn issue(st: &mut State, tenant: &str, ctx: &Ctx) -> Reply {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&ctx.body)
        .into_owned()
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let known_tenant = tenant.eq_ignore_ascii_case(&st.tenant_name)
        || tenant.eq_ignore_ascii_case(&st.tenant_guid)
        || st.domain(tenant).is_some();
    if !known_tenant {
        return aad_error(
            ctx,
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        );
    }
    match field("grant_type") {
        None => {
            return aad_error(
                ctx,
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        }
        Some("client_credentials") => {}
        Some(other) => {
            return aad_error(
                ctx,
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            )
        }
    }
    let client_id = field("client_id").unwrap_or("");
    if client_id.is_empty() {
        return aad_error(
            ctx,
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    if client_id != st.client_id {
        return aad_error(
            ctx,
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                st.org_name
            ),
        );
    }
    let assertion = (field("client_assertion_type"), field("client_assertion"));
    if let (Some(kind), Some(jwt)) = assertion {
        let token_url = format!(
            "{}/login/{tenant}/oauth2/v2.0/token",
            st.graph_base.trim_end_matches("/graph/v1.0")
        );
        if let Err(r) = check_graph_assertion(st, kind, jwt, client_id, &token_url, ctx) {
            return r;
        }
    } else {
        match field("client_secret") {
        None => {
            return aad_error(
                ctx,
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        }
        Some(s) if s != st.client_secret => {
            return aad_error(
                ctx,
                401,
                "invalid_client",
                7000215,
                &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
            )
        }
        Some(_) => {}
        }
    }
    match field("scope") {
        None => {
            return aad_error(
                ctx,
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        }
        Some(s) if !s.ends_with("/.default") => {
            return aad_error(
                ctx,
                400,
                "invalid_scope",
                1002012,
                &format!("The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
            )
        }
        Some(_) => {}
    }
    let lifetime = st.token_lifetime;
    let roles = st.app_roles.clone();
    let (tenant_guid, client_id) = (st.tenant_guid.clone(), st.client_id.clone());
    let token = st
        .tokens
        .issue(ctx.now + lifetime, &roles, &tenant_guid, &client_id);
    Reply::json(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "ext_expires_in": lifetime.as_secs(),
            "access_token": token,
        }),
    )
}

/// Entra's checks of a certificate assertion: the type, the certificate named by `x5t#S256` is
/// the one registered, the signature is that certificate's key's, `aud` is this endpoint,
/// `iss` = `sub` = the client id, and the time window.
fn check_graph_assertion(
    st: &State,
    kind: &str,
    jwt: &str,
    client_id: &str,
    token_url: &str,
    ctx: &Ctx,
) -> Result<(), Reply> {
    let refuse = |code: u32, text: &str| Err(aad_error(ctx, 401, "invalid_client", code, text));
    if kind != JWT_BEARER {
        return Err(aad_error(
            ctx,
            400,
            "invalid_request",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        ));
    }
    let Ok(header) = jsonwebtoken::decode_header(jwt) else {
        return refuse(50027, "JWT token is invalid or malformed.");
    };
    let Some(cert) = &st.tokens.graph_certificate else {
        return refuse(
            700027,
            &format!("Client assertion failed signature validation. Reason - The key was not found. Application '{client_id}' has no certificate credential."),
        );
    };
    let thumbprint = cert.thumbprint_s256();
    let presented = header
        .x5t_s256
        .clone()
        .or(header.x5t.clone())
        .unwrap_or_default();
    if presented != thumbprint {
        return refuse(
            700027,
            &format!("Client assertion failed signature validation. Reason - The key was not found., Thumbprint of key used by client: '{presented}'. Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'."),
        );
    }
    if !matches!(
        header.alg,
        jsonwebtoken::Algorithm::PS256 | jsonwebtoken::Algorithm::RS256
    ) {
        return refuse(
            700027,
            "Client assertion failed signature validation. Reason - The algorithm is not supported.",
        );
    }
    let Ok(key) = cert.decoding_key() else {
        return refuse(700027, "Client assertion failed signature validation.");
    };
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[token_url]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub", "nbf"]);
    validation.validate_nbf = true;
    let claims = match jsonwebtoken::decode::<AssertionClaims>(jwt, &key, &validation) {
        Ok(d) => d.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            return match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => refuse(
                    700024,
                    "Client assertion is not within its valid time range.",
                ),
                ErrorKind::InvalidAudience => refuse(
                    700212,
                    &format!("No matching federated identity record found for presented assertion audience. The audience must be '{token_url}'."),
                ),
                _ => refuse(
                    700027,
                    "Client assertion failed signature validation. Reason - The provided signature value did not match the expected signature value.",
                ),
            };
        }
    };
    if claims.iss != client_id || claims.sub != client_id {
        return refuse(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        );
    }
    Ok(())
}

/// The Okta org authorization server's error body (`{error, error_description}`).
fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(
        status,
        json!({ "error": error, "error_description": description }),
    )
}

/// `POST {org}/oauth2/v1/token`: client credentials for a service app, `private_key_jwt` only.
pub(crate) fn okta_issue(st: &mut State, ctx: &Ctx) -> Reply {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&ctx.body)
        .into_owned()
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let token_url = format!("{}/oauth2/v1/token", st.okta_base);
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            400,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server. Configured grant types: [client_credentials].",
        );
    }
    let (Some(JWT_BEARER), Some(jwt)) = (field("client_assertion_type"), field("client_assertion"))
    else {
        return oauth_error(
            401,
            "invalid_client",
            "Client authentication failed. Either the client or the client credentials are invalid.",
        );
    };
    let Some(app) = &st.tokens.okta_app else {
        return oauth_error(401, "invalid_client", "The client_id is not registered.");
    };
    if app.dpop_required && ctx.header("dpop").is_none() {
        return oauth_error(
            400,
            "invalid_dpop_proof",
            "The DPoP proof JWT header is missing.",
        );
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[&token_url]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let claims = match jsonwebtoken::decode::<AssertionClaims>(jwt, &app.public_key, &validation) {
        Ok(d) => d.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "The client_assertion token is expired.",
                ErrorKind::InvalidAudience => {
                    "The audience claim for client_assertion must be the endpoint invoked for the request."
                }
                _ => "The client_assertion signature is invalid.",
            };
            return oauth_error(401, "invalid_client", why);
        }
    };
    if claims.iss != app.client_id || claims.sub != app.client_id {
        return oauth_error(
            401,
            "invalid_client",
            "The issuer and subject claims of the client_assertion must be the client_id.",
        );
    }
    let now = ctx
        .wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if claims.exp > now + 3600 {
        return oauth_error(
            401,
            "invalid_client",
            "The client_assertion token has an expiration too far into the future.",
        );
    }
    if !st.tokens.okta_jtis.insert(claims.jti.clone()) {
        return oauth_error(
            401,
            "invalid_client",
            "The client_assertion token has already been used.",
        );
    }
    let requested: Vec<String> = field("scope")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if requested.is_empty() {
        return oauth_error(
            400,
            "invalid_scope",
            "The authorization server requires a scope.",
        );
    }
    let refused: Vec<&str> = requested
        .iter()
        .filter(|s| !app.granted.contains(s))
        .map(String::as_str)
        .collect();
    if !refused.is_empty() {
        return oauth_error(
            400,
            "invalid_scope",
            &format!(
                "The following scopes are not allowed: [{}].",
                refused.join(", ")
            ),
        );
    }
    let lifetime = Duration::from_secs(3600).min(st.token_lifetime.max(Duration::from_secs(1)));
    let token = format!("eyJraWQiOiJzYngifQ.{}.sbx", random_alnum(60));
    st.tokens
        .okta_live
        .insert(token.clone(), (ctx.now + lifetime, requested.clone()));
    Reply::json(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "access_token": token,
            "scope": requested.join(" "),
        }),
    )
}

/// The scope an Okta management call needs (per the operation's `security` in Okta's spec).
fn okta_scope_for(method: &axum::http::Method, rel_path: &str) -> Option<String> {
    let rest = rel_path.strip_prefix("/api/v1/")?;
    let resource = match rest.split('/').next()? {
        "users" => "users",
        "apps" => "apps",
        "groups" => "groups",
        "mappings" => "profileMappings",
        "logs" => "logs",
        "meta" if rest.starts_with("meta/schemas") => "schemas",
        _ => return None,
    };
    let access = if method == axum::http::Method::GET {
        "read"
    } else {
        "manage"
    };
    Some(format!("okta.{resource}.{access}"))
}

/// The Okta API's authentication: an API token (`SSWS`) or a service app's access token
/// (`Bearer`) carrying the scope the call needs.
pub(crate) fn okta_auth(st: &State, ctx: &Ctx) -> Result<(), Reply> {
    let header = ctx.header("authorization").map(str::trim).unwrap_or("");
    let Some(token) = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return super::okta::check_auth(st, ctx);
    };
    let scopes = match st.tokens.okta_live.get(token) {
        Some((exp, scopes)) if ctx.now < *exp => scopes,
        _ => return Err(super::okta::invalid_token()),
    };
    match okta_scope_for(&ctx.method, &ctx.rel_path) {
        Some(need) if scopes.contains(&need) => Ok(()),
        need => {
            let need = need.unwrap_or_else(|| "(none covers this endpoint)".into());
            Err(super::okta::error(
                403,
                "E0000006",
                "You do not have permission to perform the requested action",
                &[],
            )
            .with_header(
                "www-authenticate",
                format!("Bearer realm=\"IdpMyAccountAPI\", scope=\"{need}\", error=\"insufficient_scope\", error_description=\"The access token provided does not contain the required scopes.\""),
            ))
        }
    }
}

/// Credentials of the sandbox's apps beyond the client secret and API token it makes itself.
impl super::Sandbox {
    /// Registers a certificate (PEM) with the Graph app, as uploading it under "Certificates &
    /// secrets" does; assertions signed with its key are accepted from now on.
    pub fn register_graph_certificate(&self, pem: &str) -> anyhow::Result<()> {
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(anyhow::Error::msg)?;
        self.state().tokens.graph_certificate = Some(cert);
        Ok(())
    }

    /// Creates the Okta service app `client_id` holding `public_key_pem` (SPKI `PUBLIC KEY` or a
    /// `CERTIFICATE`), granted every scope the bot asks for.
    pub fn register_okta_service_app(
        &self,
        client_id: &str,
        public_key_pem: &str,
    ) -> anyhow::Result<()> {
        let public_key = if public_key_pem.contains("BEGIN CERTIFICATE") {
            Certificate::from_pem(public_key_pem.as_bytes())
                .and_then(|c| c.decoding_key())
                .map_err(anyhow::Error::msg)?
        } else {
            jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem.as_bytes())?
        };
        self.state().tokens.okta_app = Some(OktaServiceApp {
            client_id: client_id.to_owned(),
            public_key,
            granted: SERVICE_APP_SCOPES
                .iter()
                .chain(std::iter::once(&crate::directory::okta::LOGS_SCOPE))
                .map(|s| (*s).to_owned())
                .collect(),
            dpop_required: false,
        });
        Ok(())
    }

    /// The scopes granted to the Okta service app (its "Okta API Scopes" tab).
    pub fn set_okta_service_app_scopes(&self, scopes: &[&str]) {
        if let Some(app) = self.state().tokens.okta_app.as_mut() {
            app.granted = scopes.iter().map(|s| (*s).to_owned()).collect();
        }
    }

    /// Whether the service app requires DPoP proofs in token requests (Okta's default for new
    /// service apps).
    pub fn set_okta_dpop_required(&self, required: bool) {
        if let Some(app) = self.state().tokens.okta_app.as_mut() {
            app.dpop_required = required;
        }
    }

    /// Okta access tokens issued so far that are still live.
    pub fn okta_tokens_live(&self) -> usize {
        self.state().tokens.okta_live.len()
    }
}
