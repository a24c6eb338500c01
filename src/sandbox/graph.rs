//! Microsoft Graph v1.0 reads: users (with `$select` and replication lag), the advanced-query
//! filter, domains, the organization and directory roles; plus Graph's error envelope.

use serde_json::{json, Map, Value};

use super::clock::graph_date;
use super::odata::{parse_filter, parse_select, FilterError, FilterProp, USER_PROPS};
use super::reply::{Ctx, Reply};
use super::state::{prop_str, upn_domain, DirectoryRole, EntraGroup, Props, State};
use super::token::TokenProblem;

/// `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
pub(crate) fn error(ctx: &Ctx, status: u16, code: &str, message: &str) -> Reply {
    let client_request_id = ctx.header("client-request-id").unwrap_or(&ctx.request_id);
    Reply::json(
        status,
        json!({
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": graph_date(ctx.wall),
                    "request-id": ctx.request_id,
                    "client-request-id": client_request_id,
                }
            }
        }),
    )
}

pub(crate) fn not_found(ctx: &Ctx, key: &str) -> Reply {
    error(
        ctx,
        404,
        "Request_ResourceNotFound",
        &format!("Resource '{key}' does not exist or one of its queried reference-property objects are not present."),
    )
}

pub(crate) fn unauthorized(ctx: &Ctx, problem: TokenProblem) -> Reply {
    let message = match problem {
        TokenProblem::Missing => "Access token is empty.",
        TokenProblem::Malformed => "IDX14100: JWT is not well formed, there are no dots (.).\nThe token needs to be in JWS or JWE Compact Serialization Format.",
        TokenProblem::Expired => "Lifetime validation failed, the token is expired.",
    };
    error(ctx, 401, "InvalidAuthenticationToken", message).with_header(
        "www-authenticate",
        "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
    )
}

fn select_of(ctx: &Ctx) -> Result<Option<Vec<&'static str>>, Reply> {
    match ctx.param("$select") {
        None => Ok(None),
        Some(raw) => match parse_select(raw) {
            Ok(v) if v.is_empty() => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(bad) => Err(error(
                ctx,
                400,
                "BadRequest",
                &format!("Could not find a property named '{bad}' on type 'microsoft.graph.user'."),
            )),
        },
    }
}

/// A user as Graph returns it: the default property set, or `id` plus exactly what was selected.
fn project(user: &Props, select: &Option<Vec<&'static str>>) -> Map<String, Value> {
    let names: Vec<&str> = match select {
        None => USER_PROPS
            .iter()
            .filter(|(_, default)| *default)
            .map(|(n, _)| *n)
            .collect(),
        Some(sel) => std::iter::once("id")
            .chain(sel.iter().copied().filter(|n| *n != "id"))
            .collect(),
    };
    names
        .into_iter()
        .map(|n| (n.to_owned(), user.get(n).cloned().unwrap_or(Value::Null)))
        .collect()
}

fn context(st: &State, select: &Option<Vec<&'static str>>, suffix: &str) -> String {
    match select {
        Some(sel) => format!(
            "{}/$metadata#users({}){suffix}",
            st.graph_base,
            sel.join(",")
        ),
        None => format!("{}/$metadata#users{suffix}", st.graph_base),
    }
}

/// `GET /users/{id or UPN}`.
pub(crate) fn get_user(st: &State, key: &str, ctx: &Ctx) -> Reply {
    let select = match select_of(ctx) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(i) = st.entra_find_visible(key, ctx.now) else {
        return not_found(ctx, key);
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Value::String(context(st, &select, "/$entity")),
    );
    body.extend(project(st.entra_visible(i, ctx.now), &select));
    Reply::json(200, Value::Object(body))
}

fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `GET /users?$filter=…&$count=true&$select=…&$top=…`.
pub(crate) fn list_users(st: &State, ctx: &Ctx) -> Reply {
    let select = match select_of(ctx) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = match ctx.param("$filter").map(parse_filter) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(FilterError::Unsupported(prop))) => {
            return error(
                ctx,
                400,
                "Request_UnsupportedQuery",
                &format!("Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'."),
            )
        }
        Some(Err(FilterError::Syntax(raw))) => {
            return error(
                ctx,
                400,
                "BadRequest",
                &format!("Invalid filter clause: syntax error in '{raw}'."),
            )
        }
    };
    let count = is_true(ctx.param("$count"));
    let eventual = ctx
        .header("consistencylevel")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"));
    if let Some(f) = &filter {
        if f.prop.is_advanced() && !(eventual && count) {
            return error(
                ctx,
                400,
                "Request_UnsupportedQuery",
                &format!("Unsupported or invalid query filter clause specified for property '{}' of resource 'User'.", f.prop.name()),
            );
        }
    }
    if count && !eventual {
        return error(
            ctx,
            400,
            "Request_BadRequest",
            "$count is not currently supported.",
        );
    }
    let top = match ctx.param("$top") {
        None => 100,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=999).contains(&n) => n,
            _ => {
                return error(
                    ctx,
                    400,
                    "Request_BadRequest",
                    &format!(
                        "Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."
                    ),
                )
            }
        },
    };
    let skip = match ctx.param("$skiptoken") {
        None => 0,
        Some(t) => match t.strip_prefix("X'").and_then(|t| t.strip_suffix('\'')) {
            Some(n) => match n.parse::<usize>() {
                Ok(n) => n,
                Err(_) => return error(ctx, 400, "Request_BadRequest", "Invalid skip token."),
            },
            None => return error(ctx, 400, "Request_BadRequest", "Invalid skip token."),
        },
    };
    let matched: Vec<&Props> = (0..st.entra.len())
        .map(|i| st.entra_visible(i, ctx.now))
        .filter(|u| match &filter {
            None => true,
            Some(f) => match f.prop {
                FilterProp::UserPrincipalName => prop_str(u, "userPrincipalName")
                    .is_some_and(|v| v.eq_ignore_ascii_case(&f.literal)),
                FilterProp::OnPremisesImmutableId => {
                    prop_str(u, "onPremisesImmutableId") == Some(f.literal.as_str())
                }
            },
        })
        .collect();
    let page: Vec<Value> = matched
        .iter()
        .skip(skip)
        .take(top)
        .map(|u| Value::Object(project(u, &select)))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Value::String(context(st, &select, "")),
    );
    if count {
        body.insert("@odata.count".into(), json!(matched.len()));
    }
    if skip + top < matched.len() {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in ctx.query.iter().filter(|(k, _)| k != "$skiptoken") {
            q.append_pair(k, v);
        }
        q.append_pair("$skiptoken", &format!("X'{}'", skip + top));
        body.insert(
            "@odata.nextLink".into(),
            Value::String(format!("{}/users?{}", st.graph_base, q.finish())),
        );
    }
    body.insert("value".into(), Value::Array(page));
    Reply::json(200, Value::Object(body))
}

fn domain_json(st: &State, name: &str) -> Option<Value> {
    let d = st.domain(name)?;
    Some(json!({
        "authenticationType": if d.federated { "Federated" } else { "Managed" },
        "availabilityStatus": null,
        "id": d.name,
        "isAdminManaged": true,
        "isDefault": d.is_default,
        "isInitial": d.is_initial,
        "isRoot": true,
        "isVerified": true,
        "passwordNotificationWindowInDays": null,
        "passwordValidityPeriodInDays": null,
        "supportedServices": ["Email", "OfficeCommunicationsOnline"],
        "state": null,
    }))
}

/// `GET /domains/{name}`.
pub(crate) fn get_domain(st: &State, name: &str, ctx: &Ctx) -> Reply {
    match domain_json(st, name) {
        Some(Value::Object(mut m)) => {
            m.insert(
                "@odata.context".into(),
                Value::String(format!("{}/$metadata#domains/$entity", st.graph_base)),
            );
            Reply::json(200, Value::Object(m))
        }
        _ => not_found(ctx, name),
    }
}

/// `GET /organization`.
pub(crate) fn organization(st: &State) -> Reply {
    let verified: Vec<Value> = st
        .domains
        .iter()
        .map(|d| {
            json!({
                "capabilities": "Email, OfficeCommunicationsOnline",
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "name": d.name,
                "type": if d.federated { "Federated" } else { "Managed" },
            })
        })
        .collect();
    Reply::json(
        200,
        json!({
            "@odata.context": format!("{}/$metadata#organization", st.graph_base),
            "value": [{
                "id": st.tenant_guid,
                "displayName": st.org_name,
                "tenantType": "AAD",
                "verifiedDomains": verified,
            }]
        }),
    )
}

/// Application permissions that let an app read directory roles; without one of them, roles in
/// a membership list come back as "limited information": `@odata.type` and `id`, the rest null.
pub(crate) const READ_ROLES: &[&str] = &[
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.ReadWrite.Directory",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

fn role_json(r: &DirectoryRole, readable: bool) -> Value {
    if !readable {
        return json!({
            "@odata.type": "#microsoft.graph.directoryRole",
            "id": r.id,
            "deletedDateTime": null,
            "description": null,
            "displayName": null,
            "roleTemplateId": null,
        });
    }
    json!({
        "@odata.type": "#microsoft.graph.directoryRole",
        "id": r.id,
        "deletedDateTime": null,
        "description": format!("{} role", r.display_name),
        "displayName": r.display_name,
        "roleTemplateId": r.template_id,
    })
}

fn group_json(g: &EntraGroup) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.group",
        "id": g.id,
        "deletedDateTime": null,
        "displayName": g.display_name,
        "groupTypes": [],
        "isAssignableToRole": g.role_assignable,
        "mailEnabled": false,
        "securityEnabled": true,
    })
}

/// Which memberships a `memberOf` / `transitiveMemberOf` request lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Membership {
    Direct,
    Transitive,
}

/// `GET /users/{id}/memberOf[/microsoft.graph.directoryRole]` and the same under
/// `transitiveMemberOf`: groups and directory roles, or only the roles when cast to
/// `microsoft.graph.directoryRole`. `readable`: the caller may read directory roles.
pub(crate) fn member_of(
    st: &State,
    key: &str,
    ctx: &Ctx,
    which: Membership,
    roles_only: bool,
    readable: bool,
) -> Reply {
    let Some(i) = st.entra_find_visible(key, ctx.now) else {
        return not_found(ctx, key);
    };
    let id = prop_str(st.entra_visible(i, ctx.now), "id").unwrap_or_default();
    let held = match which {
        Membership::Direct => st.roles_of(id),
        Membership::Transitive => st.transitive_roles_of(id),
    };
    let mut value: Vec<Value> = Vec::new();
    if !roles_only {
        value.extend(st.groups_of(id).into_iter().map(group_json));
    }
    value.extend(held.into_iter().map(|r| role_json(r, readable)));
    let context = if roles_only {
        "directoryRoles"
    } else {
        "directoryObjects"
    };
    Reply::json(
        200,
        json!({
            "@odata.context": format!("{}/$metadata#{context}", st.graph_base),
            "value": value,
        }),
    )
}

/// The domain of a user's UPN, for messages.
pub(crate) fn user_domain(user: &Props) -> &str {
    upn_domain(prop_str(user, "userPrincipalName").unwrap_or(""))
}
