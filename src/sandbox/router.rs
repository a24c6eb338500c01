//! One handler for every request: route, latency, injected faults, rate limits, authentication,
//! the operation itself, request ids, and the call record.

use axum::body::to_bytes;
use axum::extract::{Request, State as AxState};
use axum::http::Method;
use axum::response::Response;
use percent_encoding::percent_decode_str;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use super::clock::{epoch_secs_f64, random_alnum};
use super::graph::Membership;
use super::reply::{Ctx, Reply, GRAPH_JSON, PLAIN_JSON};
use super::state::State;
use super::{apps, graph, graph_limit, okta, patch, provisioning, ratelimit, syslog, token};
use super::{CallRecord, FaultAction};

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub started: Instant,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Token,
    Graph,
    Okta,
    None,
}

#[derive(Debug, Clone)]
enum Endpoint {
    Token(String),
    OktaToken,
    GetUser(String),
    ListUsers,
    GetDomain(String),
    Organization,
    MemberOf(String, bool),
    TransitiveMemberOf(String, bool),
    UpdateUser(String),
    GraphUnknown,
    OktaGetUser(String),
    OktaUserGroups(String),
    GetAppUser(String, String),
    ListAppUsers(String),
    AppGroups(String),
    Unassign(String, String),
    Assign(String),
    ListMappings,
    GetMapping(String),
    GetApp(String),
    GetFeature(String, Option<String>),
    PutFeature(String, String),
    AppUserSchema(String),
    ListLogs,
    OktaUnknown,
    Unknown,
}

impl Endpoint {
    fn route(method: &Method, path: &str) -> (Self, String) {
        let mut segs: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        while segs.last().is_some_and(String::is_empty) {
            segs.pop();
        }
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let own = |x: &str| x.to_owned();
        match s.as_slice() {
            ["login", tenant, "oauth2", "v2.0", "token"] if method == Method::POST => {
                (Self::Token(own(tenant)), String::new())
            }
            ["okta", "oauth2", "v1", "token"] if method == Method::POST => {
                (Self::OktaToken, String::new())
            }
            ["graph", "v1.0", rest @ ..] => {
                let rel = path
                    .splitn(4, '/')
                    .nth(3)
                    .map(|r| format!("/{r}"))
                    .unwrap_or_default();
                let ep = match (method.clone(), rest) {
                    (Method::GET, ["users"]) => Self::ListUsers,
                    (Method::GET, ["users", id]) => Self::GetUser(own(id)),
                    (Method::PATCH, ["users", id]) => Self::UpdateUser(own(id)),
                    (Method::GET, ["users", id, "memberOf"]) => Self::MemberOf(own(id), false),
                    (Method::GET, ["users", id, "memberOf", "microsoft.graph.directoryRole"]) => {
                        Self::MemberOf(own(id), true)
                    }
                    (Method::GET, ["users", id, "transitiveMemberOf"]) => {
                        Self::TransitiveMemberOf(own(id), false)
                    }
                    (
                        Method::GET,
                        ["users", id, "transitiveMemberOf", "microsoft.graph.directoryRole"],
                    ) => Self::TransitiveMemberOf(own(id), true),
                    (Method::GET, ["domains", name]) => Self::GetDomain(own(name)),
                    (Method::GET, ["organization"]) => Self::Organization,
                    _ => Self::GraphUnknown,
                };
                (ep, rel)
            }
            ["okta", "api", "v1", rest @ ..] => {
                let rel = path
                    .split_once("/okta")
                    .map(|(_, r)| r.to_owned())
                    .unwrap_or_default();
                let ep = match (method.clone(), rest) {
                    (Method::GET, ["users", id]) => Self::OktaGetUser(own(id)),
                    (Method::GET, ["users", id, "groups"]) => Self::OktaUserGroups(own(id)),
                    (Method::GET, ["apps", app, "users"]) => Self::ListAppUsers(own(app)),
                    (Method::POST, ["apps", app, "users"]) => Self::Assign(own(app)),
                    (Method::GET, ["apps", app, "users", u]) => Self::GetAppUser(own(app), own(u)),
                    (Method::DELETE, ["apps", app, "users", u]) => Self::Unassign(own(app), own(u)),
                    (Method::GET, ["apps", app, "groups"]) => Self::AppGroups(own(app)),
                    (Method::GET, ["apps", app]) => Self::GetApp(own(app)),
                    (Method::GET, ["mappings"]) => Self::ListMappings,
                    (Method::GET, ["mappings", id]) => Self::GetMapping(own(id)),
                    (Method::GET, ["apps", app, "features"]) => Self::GetFeature(own(app), None),
                    (Method::GET, ["apps", app, "features", f]) => {
                        Self::GetFeature(own(app), Some(own(f)))
                    }
                    (Method::PUT, ["apps", app, "features", f]) => {
                        Self::PutFeature(own(app), own(f))
                    }
                    (Method::GET, ["meta", "schemas", "apps", app, "default"]) => {
                        Self::AppUserSchema(own(app))
                    }
                    (Method::GET, ["logs"]) => Self::ListLogs,
                    _ => Self::OktaUnknown,
                };
                (ep, rel)
            }
            _ => (Self::Unknown, path.to_owned()),
        }
    }

    fn service(&self) -> Service {
        match self {
            Self::Token(_) | Self::OktaToken => Service::Token,
            Self::GetUser(_)
            | Self::ListUsers
            | Self::GetDomain(_)
            | Self::Organization
            | Self::MemberOf(..)
            | Self::TransitiveMemberOf(..)
            | Self::UpdateUser(_)
            | Self::GraphUnknown => Service::Graph,
            Self::Unknown => Service::None,
            _ => Service::Okta,
        }
    }

    fn op(&self) -> &'static str {
        match self {
            Self::Token(_) => "graph.token",
            Self::OktaToken => "okta.token",
            Self::GetUser(_) => "graph.get_user",
            Self::ListUsers => "graph.list_users",
            Self::GetDomain(_) => "graph.get_domain",
            Self::Organization => "graph.get_organization",
            Self::MemberOf(..) => "graph.member_of",
            Self::TransitiveMemberOf(..) => "graph.transitive_member_of",
            Self::UpdateUser(_) => "graph.update_user",
            Self::GraphUnknown => "graph.unknown",
            Self::OktaGetUser(_) => "okta.get_user",
            Self::OktaUserGroups(_) => "okta.user_groups",
            Self::GetAppUser(..) => "okta.get_app_user",
            Self::ListAppUsers(_) => "okta.list_app_users",
            Self::AppGroups(_) => "okta.app_groups",
            Self::Unassign(..) => "okta.unassign",
            Self::Assign(_) => "okta.assign",
            Self::ListMappings => "okta.list_mappings",
            Self::GetMapping(_) => "okta.get_mapping",
            Self::GetApp(_) => "okta.get_app",
            Self::GetFeature(..) => "okta.get_feature",
            Self::PutFeature(..) => "okta.put_feature",
            Self::AppUserSchema(_) => "okta.get_app_user_schema",
            Self::ListLogs => "okta.list_logs",
            Self::OktaUnknown => "okta.unknown",
            Self::Unknown => "unknown",
        }
    }
}

pub(crate) async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, 4 << 20).await.unwrap_or_default();
    let (endpoint, rel_path) = Endpoint::route(&parts.method, parts.uri.path());
    let op = endpoint.op();
    let service = endpoint.service();

    let latency = shared.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut action = shared.lock().faults.hit(op);
    if let Some(FaultAction::Delay(d)) = action {
        tokio::time::sleep(d).await;
        action = None;
    }

    let raw_query = parts.uri.query().map(str::to_owned);
    let query = raw_query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let request_id = match service {
        Service::Okta => random_alnum(27),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let ctx = Ctx {
        method: parts.method.clone(),
        rel_path,
        raw_query,
        query,
        headers: parts.headers,
        body,
        request_id,
        now: Instant::now(),
        wall: SystemTime::now(),
    };

    let hold = match action {
        Some(FaultAction::HoldReply(d)) => Some(d),
        _ => None,
    };
    let reply = {
        let mut st = shared.lock();
        let reply = serve(&mut st, &endpoint, &ctx, action);
        st.calls.push(CallRecord {
            op: op.to_owned(),
            method: ctx.method.to_string(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            status: reply.status,
            client_request_id: ctx.header("client-request-id").map(str::to_owned),
            at_ms: ctx
                .now
                .saturating_duration_since(shared.started)
                .as_millis() as u64,
        });
        reply
    };
    if let Some(d) = hold {
        // The change is made; the answer is late. A client that gives up (or dies) meanwhile
        // never learns the outcome, as with a real server.
        tokio::time::sleep(d).await;
    }
    let content_type = match service {
        Service::Graph => GRAPH_JSON,
        _ => PLAIN_JSON,
    };
    reply.into_response(content_type)
}

fn serve(st: &mut State, ep: &Endpoint, ctx: &Ctx, action: Option<FaultAction>) -> Reply {
    if let Some(FaultAction::EnableDeactivate) = action {
        st.set_deactivate(true);
    }
    let applied_then = match &action {
        Some(FaultAction::ApplyThenFail {
            status,
            code,
            message,
        }) => Some((*status, code.as_str(), message.as_str())),
        _ => None,
    };
    // The served call's success, swapped for the injected error once the change is made.
    let answer = |service: Service, reply: Reply| match applied_then {
        Some((status, code, message)) if (200..300).contains(&reply.status) => match service {
            Service::Token => token::aad_error(ctx, status, code, 90000, message),
            Service::Graph => graph::error(ctx, status, code, message),
            _ => okta::error(status, code, message, &[]),
        },
        _ => reply,
    };
    let fault = action
        .clone()
        .filter(|a| matches!(a, FaultAction::Error { .. } | FaultAction::Throttle { .. }));
    match ep.service() {
        Service::Token => {
            let reply = match (fault, ep) {
                (
                    Some(FaultAction::Error {
                        status,
                        code,
                        message,
                    }),
                    _,
                ) => token::aad_error(ctx, status, &code, 90000, &message),
                (Some(FaultAction::Throttle { retry_after }), _) => {
                    let r = token::aad_error(
                        ctx,
                        429,
                        "temporarily_unavailable",
                        50196,
                        "The server is temporarily unavailable.",
                    );
                    with_retry_after(r, retry_after)
                }
                (_, Endpoint::Token(tenant)) => {
                    answer(Service::Token, token::issue(st, tenant, ctx))
                }
                (_, Endpoint::OktaToken) => answer(Service::Token, token::okta_issue(st, ctx)),
                _ => unreachable!("token service"),
            };
            reply
                .with_header("x-ms-request-id", ctx.request_id.clone())
                .with_header("request-id", ctx.request_id.clone())
        }
        Service::Graph => {
            let reply = match fault {
                Some(FaultAction::Error {
                    status,
                    code,
                    message,
                }) => graph::error(ctx, status, &code, &message),
                Some(FaultAction::Throttle { retry_after }) => with_retry_after(
                    graph::error(ctx, 429, "TooManyRequests", "Too many requests"),
                    retry_after,
                ),
                _ => match st
                    .tokens
                    .check(ctx.header("authorization"), ctx.now)
                    .map(<[String]>::to_vec)
                {
                    Err(problem) => graph::unauthorized(ctx, problem),
                    Ok(roles) => match required_role(ep) {
                        Some(need) if !need.iter().any(|n| roles.iter().any(|r| r == n)) => {
                            graph::error(
                                ctx,
                                403,
                                "Authorization_RequestDenied",
                                "Insufficient privileges to complete the operation.",
                            )
                        }
                        _ => match write_quota(st, ctx) {
                            Err(throttled) => throttled,
                            Ok(()) => answer(Service::Graph, serve_graph(st, ep, ctx, &roles)),
                        },
                    },
                },
            };
            let client_request_id = ctx
                .header("client-request-id")
                .unwrap_or(&ctx.request_id)
                .to_owned();
            reply
                .with_header("request-id", ctx.request_id.clone())
                .with_header("client-request-id", client_request_id)
                .with_header(
                    "x-ms-ags-diagnostic",
                    r#"{"ServerInfo":{"DataCenter":"Sandbox","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"SBX1"}}"#,
                )
        }
        Service::Okta => {
            let bucket = ratelimit::bucket_for(&ctx.rel_path);
            let rate = st.rate.consume(bucket, ctx.now);
            let (reply, limit, remaining, reset) = match fault {
                Some(FaultAction::Error {
                    status,
                    code,
                    message,
                }) => (
                    okta::error(status, &code, &message, &[]),
                    rate.limit,
                    rate.remaining,
                    rate.reset,
                ),
                Some(FaultAction::Throttle { retry_after }) => {
                    let wait = retry_after
                        .as_deref()
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|w| w.is_finite() && *w >= 0.0)
                        .unwrap_or(1.0);
                    let reset = (epoch_secs_f64(ctx.wall) + wait).ceil() as u64;
                    st.okta_throttled += 1;
                    (okta::rate_limited(), st.rate.limit(), 0, reset)
                }
                _ if rate.over => {
                    st.okta_throttled += 1;
                    (okta::rate_limited(), rate.limit, 0, rate.reset)
                }
                _ => {
                    let r = match token::okta_auth(st, ctx) {
                        Err(r) => r,
                        Ok(()) => answer(Service::Okta, serve_okta(st, ep, ctx)),
                    };
                    (r, rate.limit, rate.remaining, rate.reset)
                }
            };
            reply
                .with_header("x-okta-request-id", ctx.request_id.clone())
                .with_header("x-rate-limit-limit", limit.to_string())
                .with_header("x-rate-limit-remaining", remaining.to_string())
                .with_header("x-rate-limit-reset", reset.to_string())
        }
        Service::None => Reply::json(
            404,
            serde_json::json!({ "error": "no such sandbox endpoint" }),
        ),
    }
}

fn with_retry_after(reply: Reply, retry_after: Option<String>) -> Reply {
    match retry_after {
        Some(v) => reply.with_header("retry-after", v),
        None => reply,
    }
}

/// Graph's per-app write quota: a write over it is refused with 429 and a decimal `Retry-After`,
/// with the scope and reason headers the identity service sends.
fn write_quota(st: &mut State, ctx: &Ctx) -> Result<(), Reply> {
    let write = matches!(
        ctx.method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    );
    if !write {
        return Ok(());
    }
    let app = st.client_id.clone();
    match st.graph_writes.admit(&app, ctx.now) {
        Ok(()) => Ok(()),
        Err(wait) => {
            st.graph_throttled += 1;
            Err(graph::error(
                ctx,
                429,
                "TooManyRequests",
                "Too many requests. Please try again after the value specified in the Retry-After header.",
            )
            .with_header("retry-after", graph_limit::retry_after_value(wait))
            .with_header(
                "x-ms-throttle-scope",
                format!("Tenant_Application/Write/{app}/{}", st.tenant_guid),
            )
            .with_header("x-ms-throttle-information", "WriteLimitExceeded"))
        }
    }
}

fn serve_graph(st: &mut State, ep: &Endpoint, ctx: &Ctx, app_roles: &[String]) -> Reply {
    let reads_roles = graph::READ_ROLES
        .iter()
        .any(|p| app_roles.iter().any(|r| r == p));
    match ep {
        Endpoint::GetUser(id) => graph::get_user(st, id, ctx),
        Endpoint::ListUsers => graph::list_users(st, ctx),
        Endpoint::GetDomain(name) => graph::get_domain(st, name, ctx),
        Endpoint::Organization => graph::organization(st),
        Endpoint::MemberOf(id, roles_only) => {
            graph::member_of(st, id, ctx, Membership::Direct, *roles_only, reads_roles)
        }
        Endpoint::TransitiveMemberOf(id, roles_only) => graph::member_of(
            st,
            id,
            ctx,
            Membership::Transitive,
            *roles_only,
            reads_roles,
        ),
        Endpoint::UpdateUser(id) => patch::update_user(st, id, ctx),
        _ => {
            let seg = ctx.rel_path.trim_start_matches('/');
            graph::error(
                ctx,
                400,
                "BadRequest",
                &format!(
                    "Resource not found for the segment '{}'.",
                    seg.split('/').next().unwrap_or(seg)
                ),
            )
        }
    }
}

/// Application permissions that allow a Graph call (any one of them).
fn required_role(ep: &Endpoint) -> Option<&'static [&'static str]> {
    const READ_USERS: &[&str] = &["User.Read.All", "User.ReadWrite.All", "Directory.Read.All"];
    match ep {
        Endpoint::GetUser(_)
        | Endpoint::ListUsers
        | Endpoint::MemberOf(..)
        | Endpoint::TransitiveMemberOf(..) => Some(READ_USERS),
        Endpoint::UpdateUser(_) => Some(&["User.ReadWrite.All"]),
        Endpoint::GetDomain(_) => Some(&["Domain.Read.All", "Directory.Read.All"]),
        Endpoint::Organization => Some(&["Organization.Read.All", "Directory.Read.All"]),
        _ => None,
    }
}

fn serve_okta(st: &mut State, ep: &Endpoint, ctx: &Ctx) -> Reply {
    let app_scoped = matches!(
        ep,
        Endpoint::GetApp(_)
            | Endpoint::GetAppUser(..)
            | Endpoint::ListAppUsers(_)
            | Endpoint::AppGroups(_)
            | Endpoint::Unassign(..)
            | Endpoint::Assign(_)
            | Endpoint::GetFeature(..)
            | Endpoint::PutFeature(..)
            | Endpoint::AppUserSchema(_)
    );
    if app_scoped && !st.okta_app_admin {
        return okta::error(
            403,
            "E0000006",
            "You do not have permission to perform the requested action",
            &[],
        );
    }
    if matches!(ep, Endpoint::GetFeature(..) | Endpoint::PutFeature(..)) && !st.provisioning_enabled
    {
        return okta::error(
            404,
            "E0000007",
            "Not found: Resource not found: USER_PROVISIONING (AppFeature)",
            &[],
        );
    }
    match ep {
        Endpoint::GetApp(app) => apps::get_app(st, app),
        Endpoint::OktaGetUser(id) => okta::get_user(st, id),
        Endpoint::OktaUserGroups(id) => okta::user_groups(st, id, ctx),
        Endpoint::GetAppUser(app, u) => apps::get_app_user(st, app, u),
        Endpoint::ListAppUsers(app) => apps::list_app_users(st, app, ctx),
        Endpoint::AppGroups(app) => apps::app_groups(st, app, ctx),
        Endpoint::Unassign(app, u) => apps::unassign(st, app, u, ctx),
        Endpoint::Assign(app) => apps::assign(st, app, ctx),
        Endpoint::ListMappings => okta::list_mappings(st, ctx),
        Endpoint::GetMapping(id) => okta::get_mapping(st, id),
        Endpoint::GetFeature(app, name) => provisioning::get_feature(st, app, name.as_deref()),
        Endpoint::PutFeature(app, name) => provisioning::put_feature(st, app, name, ctx),
        Endpoint::AppUserSchema(app) => apps::app_user_schema(st, app),
        Endpoint::ListLogs => syslog::list(st, ctx),
        _ => okta::not_found(&ctx.rel_path, "Endpoint"),
    }
}
