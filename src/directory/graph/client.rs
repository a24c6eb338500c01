//! The Graph client: token, retries, `$select`, advanced queries, typed errors.

use super::pacing::{WriteBudget, WritePacer};
use super::token::{GraphCredential, TokenFailure, TokenSource};
use super::{
    ClientRequestId, DirectoryRole, EntraDomain, EntraUser, GraphError, UserPatch, USER_SELECT,
};
use crate::directory::retry::{self, parse_retry_after, Attempt, AttemptCtx, GiveUp};
use crate::directory::{HttpSettings, Reply};
use crate::domain::{odata_quote, EntraObjectId, ImmutableId, Upn};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use url::Url;

/// Everything but RFC 3986 unreserved characters: in a query value `+` must travel as `%2B`
/// (sent raw it arrives as a space), and `'`, `=`, `&`, `/` must not be read as syntax.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Bounds `@odata.nextLink` loops; the repair's lists have a handful of entries.
const MAX_PAGES: usize = 1_000;

/// Where and as whom to call Graph. Authority and Graph base are configurable for national
/// clouds and for the sandbox.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// e.g. `https://login.microsoftonline.com`; the token URL is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub authority: Url,
    /// e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_base: Url,
    pub tenant_id: String,
    pub client_id: String,
    pub credential: GraphCredential,
    /// Token scope; `{graph host}/.default`.
    pub scope: String,
    pub http: HttpSettings,
    /// How fast this client sends writes; keep it under Graph's per-app write quota.
    pub write_budget: WriteBudget,
}

#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    settings: HttpSettings,
    token: TokenSource,
    calls: AtomicU64,
    writes: WritePacer,
}

/// A successful response.
struct Raw {
    body: Vec<u8>,
    request_id: Option<String>,
}

#[derive(serde::Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Organization {
    #[serde(default)]
    verified_domains: Vec<VerifiedDomain>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifiedDomain {
    name: String,
    #[serde(default)]
    is_initial: bool,
}

impl GraphClient {
    pub fn new(config: GraphConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("o365-fixbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        anyhow::ensure!(
            !config.graph_base.cannot_be_a_base(),
            "the Graph base URL `{}` cannot have a path",
            config.graph_base
        );
        let token = TokenSource::new(
            http.clone(),
            &config.authority,
            &config.tenant_id,
            config.client_id,
            config.credential,
            config.scope,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: config.graph_base,
                settings: config.http,
                token,
                calls: AtomicU64::new(0),
                writes: WritePacer::new(&config.write_budget),
            }),
        })
    }

    /// HTTP requests sent to Graph so far (token requests not included).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// How the app authenticates, for `check-config`.
    pub fn credential(&self) -> &GraphCredential {
        self.inner.token.credential()
    }

    /// Token requests sent so far.
    pub fn token_fetches(&self) -> u64 {
        self.inner.token.fetched()
    }

    /// `GET /users/{upn}?$select=…`; `None` on 404 `Request_ResourceNotFound`.
    ///
    /// Looked up with `$filter=userPrincipalName eq '…'` rather than in the path: `'` is legal in
    /// a UPN, and an OData literal with `''` is the one escaping Graph documents for it.
    pub async fn user_by_upn(&self, upn: &Upn) -> Result<Reply<Option<EntraUser>>, GraphError> {
        let mut url = self.url(&["users"]);
        url.set_query(Some(&upn_query(upn)));
        let reply: Reply<Vec<EntraUser>> = self.get_all(url, &[]).await?;
        Ok(reply.map(|users| {
            users
                .into_iter()
                .find(|u| u.user_principal_name.eq_ignore_ascii_case(upn.as_str()))
        }))
    }

    /// The application permissions (`roles` claim) of the app's current token, for
    /// `check-config`. `None` when the token is not a readable JWT.
    pub async fn granted_roles(&self) -> Result<Option<Vec<String>>, GraphError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let token = match self
            .inner
            .token
            .get(self.inner.settings.request_timeout)
            .await
        {
            Ok(t) => t,
            Err(TokenFailure::Refused(e)) | Err(TokenFailure::Unavailable { error: e, .. }) => {
                return Err(e)
            }
        };
        let roles = token
            .expose()
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|claims| {
                claims
                    .get("roles")
                    .and_then(|r| r.as_array())
                    .map(|r| {
                        r.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            });
        Ok(roles)
    }

    /// `GET /users/{id}?$select=…`; `None` on 404.
    pub async fn user_by_id(
        &self,
        id: &EntraObjectId,
    ) -> Result<Reply<Option<EntraUser>>, GraphError> {
        let mut url = self.url(&["users", id.as_str()]);
        url.set_query(Some(&format!("$select={USER_SELECT}")));
        self.get_optional(url).await
    }

    /// `GET /domains/{name}`; `None` on 404.
    pub async fn domain(&self, name: &str) -> Result<Reply<Option<EntraDomain>>, GraphError> {
        self.get_optional(self.url(&["domains", name])).await
    }

    /// The tenant's initial domain (`…onmicrosoft.com`) from `GET /organization`.
    pub async fn initial_domain(&self) -> Result<Reply<String>, GraphError> {
        let url = self.url(&["organization"]);
        let reply: Reply<Vec<Organization>> = self.get_all(url, &[]).await?;
        let name = reply
            .value
            .iter()
            .flat_map(|o| &o.verified_domains)
            .find(|d| d.is_initial)
            .map(|d| d.name.clone())
            .ok_or_else(|| {
                GraphError::Decode("the organization lists no initial (isInitial) domain".into())
            })?;
        Ok(Reply {
            value: name,
            request_id: reply.request_id,
        })
    }

    /// Directory roles the user holds, directly or through a role-assignable group:
    /// `GET /users/{id}/transitiveMemberOf/microsoft.graph.directoryRole`.
    ///
    /// `memberOf` lists direct memberships only, so a role granted to a group the user is in is
    /// missed there. Of the two transitive views, this one is Graph v1.0 and needs only what the
    /// app already has (`User.Read.All` or higher; `User.ReadWrite.All` covers it), and answers
    /// with the roles themselves. `roleManagement/directory/transitiveRoleAssignments` exists in
    /// beta only (unsupported in production), needs `RoleManagement.Read.Directory`, and
    /// answers with role *definition* ids (and the group's id as `principalId`), which a second
    /// call would have to name. Without a permission to read directory roles
    /// (`RoleManagement.Read.Directory`, or `Directory.Read.All`), Graph returns each role with
    /// its `id` only ("limited information"): the role is still seen, just not named.
    pub async fn directory_roles(
        &self,
        id: &EntraObjectId,
    ) -> Result<Reply<Vec<DirectoryRole>>, GraphError> {
        let url = self.url(&[
            "users",
            id.as_str(),
            "transitiveMemberOf",
            "microsoft.graph.directoryRole",
        ]);
        self.get_all(url, &[]).await
    }

    /// Users holding this ImmutableID: the advanced query with `ConsistencyLevel: eventual` and
    /// `$count=true`, the literal OData-escaped and the whole query percent-encoded.
    pub async fn users_with_immutable_id(
        &self,
        id: &ImmutableId,
    ) -> Result<Reply<Vec<EntraUser>>, GraphError> {
        let mut url = self.url(&["users"]);
        url.set_query(Some(&immutable_id_query(id)));
        self.get_all(url, &[("ConsistencyLevel", "eventual")]).await
    }

    /// `PATCH /users/{id}`; 204 expected.
    pub async fn update_user(
        &self,
        id: &EntraObjectId,
        patch: &UserPatch,
    ) -> Result<Reply<()>, GraphError> {
        self.update_user_traced(id, patch, ClientRequestId::new())
            .await
    }

    /// `PATCH /users/{id}` carrying `client_request_id`, chosen (and journalled) by the caller
    /// before the call, so a write whose answer never came can still be traced.
    pub async fn update_user_traced(
        &self,
        id: &EntraObjectId,
        patch: &UserPatch,
        client_request_id: ClientRequestId,
    ) -> Result<Reply<()>, GraphError> {
        let body = serde_json::to_vec(patch).map_err(|e| GraphError::Decode(e.to_string()))?;
        let raw = self
            .call_traced(
                Method::PATCH,
                self.url(&["users", id.as_str()]),
                Some(body),
                &[],
                client_request_id,
            )
            .await?;
        Ok(Reply {
            value: (),
            request_id: raw.request_id,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        // `new` checked the base can hold a path.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn get_optional<T: DeserializeOwned>(
        &self,
        url: Url,
    ) -> Result<Reply<Option<T>>, GraphError> {
        match self.call(Method::GET, url, None, &[]).await {
            Ok(raw) => Ok(Reply {
                value: Some(decode(&raw.body)?),
                request_id: raw.request_id,
            }),
            Err(GraphError::Api {
                status: 404,
                code,
                request_id,
                ..
            }) if is_not_found(&code) => Ok(Reply {
                value: None,
                request_id,
            }),
            Err(e) => Err(e),
        }
    }

    /// Every page of a collection, following `@odata.nextLink` on the same host only: the token
    /// must never go anywhere else.
    async fn get_all<T: DeserializeOwned>(
        &self,
        first: Url,
        headers: &[(&'static str, &'static str)],
    ) -> Result<Reply<Vec<T>>, GraphError> {
        let mut url = first;
        let mut out = Vec::new();
        let mut request_id = None;
        for _ in 0..MAX_PAGES {
            let raw = self.call(Method::GET, url.clone(), None, headers).await?;
            if request_id.is_none() {
                request_id = raw.request_id.clone();
            }
            let page: Page<T> = decode(&raw.body)?;
            out.extend(page.value);
            let Some(next) = page.next_link else {
                return Ok(Reply {
                    value: out,
                    request_id,
                });
            };
            let next = Url::parse(&next)
                .map_err(|e| GraphError::Decode(format!("bad @odata.nextLink: {e}")))?;
            if next.origin() != self.inner.base.origin() {
                return Err(GraphError::Decode(format!(
                    "@odata.nextLink points to another host ({})",
                    next.origin().ascii_serialization()
                )));
            }
            url = next;
        }
        Err(GraphError::Decode(format!(
            "more than {MAX_PAGES} pages; stopped following @odata.nextLink"
        )))
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        headers: &[(&'static str, &'static str)],
    ) -> Result<Raw, GraphError> {
        self.call_traced(method, url, body, headers, ClientRequestId::new())
            .await
    }

    /// One logical call: token, retries on throttling, concurrency conflicts, unavailability,
    /// timeouts and transport errors. Every Graph operation the repair uses is idempotent (reads,
    /// and PATCHes that set absolute values), so all of them may be retried. Every attempt
    /// carries the same `client-request-id`: a retry re-sends the same request, and support
    /// finds all its attempts under the one id the journal holds.
    async fn call_traced(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        headers: &[(&'static str, &'static str)],
        client_request_id: ClientRequestId,
    ) -> Result<Raw, GraphError> {
        let auth_retried = AtomicBool::new(false);
        let settings = &self.inner.settings;
        let crid = client_request_id.to_string();
        retry::run(
            settings,
            |ctx| {
                self.attempt(
                    &method,
                    &url,
                    body.as_deref(),
                    headers,
                    &crid,
                    ctx,
                    &auth_retried,
                )
            },
            |g: GiveUp, last: GraphError| match last {
                GraphError::Timeout(_) if g.deadline => GraphError::Timeout(g.elapsed),
                last => GraphError::Exhausted {
                    attempts: g.attempts,
                    elapsed: g.elapsed,
                    last: last.to_string(),
                },
            },
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        headers: &[(&'static str, &'static str)],
        client_request_id: &str,
        ctx: AttemptCtx,
        auth_retried: &AtomicBool,
    ) -> Attempt<Raw, GraphError> {
        let write = is_write(method);
        if write && !self.inner.writes.ready(ctx.deadline).await {
            // The budget frees up only after the call's deadline: nothing was sent.
            return Attempt::Retry {
                error: GraphError::Timeout(self.inner.settings.call_deadline),
                after: None,
            };
        }
        let token = match self
            .inner
            .token
            .get(ctx.timeout_now(self.inner.settings.request_timeout))
            .await
        {
            Ok(t) => t,
            Err(TokenFailure::Refused(e)) => return Attempt::Done(Err(e)),
            Err(TokenFailure::Unavailable { error, after }) => {
                return Attempt::Retry { error, after };
            }
        };
        let mut req = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .timeout(ctx.timeout_now(self.inner.settings.request_timeout))
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .header("client-request-id", client_request_id);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                crate::ops::metrics::metrics().api_call("graph", 0);
                return transport_retry(e, ctx, method, url);
            }
        };
        let status = res.status();
        crate::ops::metrics::metrics().api_call("graph", status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Every 429 is waited out (Retry-After or the window reset) before the retry.
            crate::ops::metrics::metrics().throttle_wait("graph");
        }
        let request_id = header_str(res.headers(), "request-id");
        let retry_after = header_str(res.headers(), "retry-after")
            .and_then(|v| parse_retry_after(&v, SystemTime::now()));
        if write && status == StatusCode::TOO_MANY_REQUESTS {
            // The quota is the app's, not this request's: every write waits it out.
            if let Some(wait) = retry_after {
                self.inner.writes.hold_until(Instant::now() + wait);
            }
        }
        let body = match res.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return transport_retry(e, ctx, method, url),
        };
        tracing::debug!(
            method = %method,
            path = url.path(),
            status = status.as_u16(),
            request_id = request_id.as_deref().unwrap_or("-"),
            client_request_id,
            attempt = ctx.number,
            "graph call"
        );
        if status.is_success() {
            return Attempt::Done(Ok(Raw { body, request_id }));
        }
        let error = api_error(status, &body, request_id);
        let code = error.code().unwrap_or_default().to_owned();
        match status.as_u16() {
            401 if code == "InvalidAuthenticationToken"
                && !auth_retried.swap(true, Ordering::SeqCst) =>
            {
                // Graph no longer accepts the cached token (revoked, or the clocks disagree
                // about its expiry): fetch a fresh one, once.
                self.inner.token.invalidate(&token).await;
                Attempt::RetryNow { error }
            }
            429 | 503 | 504 => Attempt::Retry {
                error,
                after: retry_after,
            },
            409 if code == "Directory_ConcurrencyViolation" => Attempt::Retry {
                error,
                after: retry_after,
            },
            _ => Attempt::Done(Err(error)),
        }
    }
}

/// `$filter=onPremisesImmutableId eq '…'&$count=true&$select=…`, the filter expression fully
/// percent-encoded so a base64 `+`, `/` or `=` reaches Graph unchanged.
fn immutable_id_query(id: &ImmutableId) -> String {
    let filter = format!("onPremisesImmutableId eq {}", odata_quote(id.as_str()));
    format!(
        "$filter={}&$count=true&$select={USER_SELECT}",
        utf8_percent_encode(&filter, QUERY_VALUE)
    )
}

fn upn_query(upn: &Upn) -> String {
    let filter = format!("userPrincipalName eq {}", odata_quote(upn.as_str()));
    format!(
        "$filter={}&$select={USER_SELECT}",
        utf8_percent_encode(&filter, QUERY_VALUE)
    )
}

/// What Graph counts against the write quota.
fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    )
}

fn is_not_found(code: &str) -> bool {
    code == "Request_ResourceNotFound" || code == "ResourceNotFound"
}

fn transport_retry<T>(
    e: reqwest::Error,
    ctx: AttemptCtx,
    method: &Method,
    url: &Url,
) -> Attempt<T, GraphError> {
    // Without the URL: the error text must not carry the query.
    let e = e.without_url();
    tracing::debug!(method = %method, path = url.path(), attempt = ctx.number, error = %e, "graph call failed");
    let error = if e.is_timeout() {
        GraphError::Timeout(ctx.timeout)
    } else {
        GraphError::Transport(e.to_string())
    };
    Attempt::Retry { error, after: None }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, GraphError> {
    serde_json::from_slice(body).map_err(|e| GraphError::Decode(e.to_string()))
}

/// `{"error":{"code","message","innerError":{"request-id"|"requestId",…}}}`; the header's
/// request id wins, the envelope's fills in when a proxy dropped the header.
fn api_error(status: StatusCode, body: &[u8], header_request_id: Option<String>) -> GraphError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let err = v.get("error");
    let field = |k: &str| {
        err.and_then(|e| e.get(k))
            .and_then(|x| x.as_str())
            .map(str::to_owned)
    };
    let inner = err.and_then(|e| e.get("innerError").or_else(|| e.get("innererror")));
    let inner_id = inner.and_then(|i| {
        ["request-id", "requestId"]
            .iter()
            .find_map(|k| i.get(*k).and_then(|x| x.as_str()))
            .map(str::to_owned)
    });
    GraphError::Api {
        status: status.as_u16(),
        code: field("code").unwrap_or_else(|| format!("HTTP{}", status.as_u16())),
        message: field("message").unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .chars()
                .take(300)
                .collect::<String>()
        }),
        request_id: header_request_id.or(inner_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_id_query_encodes_every_reserved_char() {
        let id = ImmutableId::parse_value("ab+c/d==").unwrap();
        let q = immutable_id_query(&id);
        assert!(q.starts_with(
            "$filter=onPremisesImmutableId%20eq%20%27ab%2Bc%2Fd%3D%3D%27&$count=true&$select="
        ));
        let id = ImmutableId::parse_value("o'x").unwrap();
        assert!(immutable_id_query(&id).contains("%27o%27%27x%27"));
    }

    #[test]
    fn upn_filter_doubles_the_apostrophe() {
        let upn = Upn::parse("o'brien@contoso.com").unwrap();
        let mut url = Url::parse("https://graph.example/v1.0/users").unwrap();
        url.set_query(Some(&upn_query(&upn)));
        let filter = url
            .query_pairs()
            .find(|(k, _)| k == "$filter")
            .map(|(_, v)| v.into_owned());
        assert_eq!(
            filter.as_deref(),
            Some("userPrincipalName eq 'o''brien@contoso.com'")
        );
    }

    #[test]
    fn query_survives_url_set_query() {
        let mut url = Url::parse("https://graph.example/v1.0/users").unwrap();
        let id = ImmutableId::parse_value("a+b'c").unwrap();
        url.set_query(Some(&immutable_id_query(&id)));
        let filter = url
            .query_pairs()
            .find(|(k, _)| k == "$filter")
            .map(|(_, v)| v.into_owned());
        assert_eq!(filter.as_deref(), Some("onPremisesImmutableId eq 'a+b''c'"));
    }

    #[test]
    fn error_envelope_both_spellings() {
        let body = br#"{"error":{"code":"Request_BadRequest","message":"no","innerError":{"requestId":"r-1"}}}"#;
        let e = api_error(StatusCode::BAD_REQUEST, body, None);
        assert_eq!(e.code(), Some("Request_BadRequest"));
        assert_eq!(e.request_id(), Some("r-1"));
        let body = br#"{"error":{"code":"X","message":"m","innerError":{"request-id":"r-2"}}}"#;
        assert_eq!(
            api_error(StatusCode::CONFLICT, body, None).request_id(),
            Some("r-2")
        );
        assert_eq!(
            api_error(StatusCode::CONFLICT, body, Some("h".into())).request_id(),
            Some("h")
        );
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>", None);
        assert_eq!(e.code(), Some("HTTP502"));
    }

    #[test]
    fn paths_encode_apostrophe_and_hash() {
        let c = GraphClient::new(GraphConfig {
            authority: Url::parse("https://login.example").unwrap(),
            graph_base: Url::parse("https://graph.example/v1.0").unwrap(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential: GraphCredential::ClientSecret(crate::secret::Secret::new("s")),
            scope: "x".into(),
            http: HttpSettings::default(),
            write_budget: WriteBudget::default(),
        })
        .unwrap();
        let u = c.url(&["users", "o'brien#x@contoso.com"]);
        assert_eq!(u.path(), "/v1.0/users/o'brien%23x@contoso.com");
        let u = c.url(&["users", "a/b?c@x.com"]);
        assert_eq!(u.path(), "/v1.0/users/a%2Fb%3Fc@x.com");
    }
}
