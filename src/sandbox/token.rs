//! The Microsoft identity platform token endpoint (client credentials) and the tokens it issued.

use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::clock::{aad_timestamp, random_alnum};
use super::reply::{Ctx, Reply};
use super::state::State;

#[derive(Default)]
pub(crate) struct TokenStore {
    /// Token → expiry and the application permissions (`roles`) it carries.
    live: HashMap<String, (Instant, Vec<String>)>,
    dead: HashSet<String>,
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
