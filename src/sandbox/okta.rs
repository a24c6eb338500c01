//! Okta management API: the error object, users and their groups, and profile mappings.

use serde_json::{json, Value};

use super::clock::random_alnum;
use super::paging::page;
use super::reply::{Ctx, Reply};
use super::state::{OktaGroupRec, OktaUserRec, State};
use super::MappingMode;

/// The Okta user type every user has, the source of the mapping into the app.
pub(crate) const USER_TYPE_ID: &str = "oty1sbxdefault0user7";
/// The mapping user → office365 (always present).
pub(crate) const MAPPING_ID: &str = "prm1o365";
/// The mapping office365 → user (the other direction, to be filtered out by `targetId`).
pub(crate) const REVERSE_MAPPING_ID: &str = "prm1o365in";

/// `{errorCode, errorSummary, errorLink, errorId, errorCauses}`.
pub(crate) fn error(status: u16, code: &str, summary: &str, causes: &[&str]) -> Reply {
    let causes: Vec<Value> = causes
        .iter()
        .map(|c| json!({ "errorSummary": c }))
        .collect();
    Reply::json(
        status,
        json!({
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": format!("oae{}", random_alnum(22)),
            "errorCauses": causes,
        }),
    )
}

pub(crate) fn not_found(what: &str, kind: &str) -> Reply {
    error(
        404,
        "E0000007",
        &format!("Not found: Resource not found: {what} ({kind})"),
        &[],
    )
}

pub(crate) fn validation(field: &str, cause: &str) -> Reply {
    error(
        400,
        "E0000001",
        &format!("Api validation failed: {field}"),
        &[cause],
    )
}

pub(crate) fn malformed() -> Reply {
    error(
        400,
        "E0000003",
        "The request body was not well-formed.",
        &[],
    )
}

pub(crate) fn invalid_token() -> Reply {
    error(401, "E0000011", "Invalid token provided", &[])
}

pub(crate) fn rate_limited() -> Reply {
    error(
        429,
        "E0000047",
        "API call exceeded rate limit due to too many requests.",
        &[],
    )
}

pub(crate) fn bad_limit() -> Reply {
    validation(
        "limit",
        "limit: The limit parameter must be a positive integer.",
    )
}

pub(crate) fn check_auth(st: &State, ctx: &Ctx) -> Result<(), Reply> {
    let ok = ctx
        .header("authorization")
        .and_then(|h| h.trim().split_once(' '))
        .is_some_and(|(scheme, tok)| scheme == "SSWS" && tok.trim() == st.okta_token);
    if ok {
        Ok(())
    } else {
        Err(invalid_token())
    }
}

pub(crate) fn user_json(st: &State, u: &OktaUserRec) -> Value {
    json!({
        "id": u.id,
        "status": u.status,
        "created": u.created,
        "activated": u.created,
        "statusChanged": u.created,
        "lastLogin": null,
        "lastUpdated": u.last_updated,
        "passwordChanged": u.created,
        "type": { "id": USER_TYPE_ID },
        "profile": u.profile,
        "credentials": {
            "password": {},
            "provider": { "type": "OKTA", "name": "OKTA" }
        },
        "_links": {
            "self": { "href": format!("{}/api/v1/users/{}", st.okta_base, u.id) }
        }
    })
}

pub(crate) fn group_json(st: &State, g: &OktaGroupRec) -> Value {
    json!({
        "id": g.id,
        "created": "2023-01-10T08:00:00.000Z",
        "lastUpdated": "2023-01-10T08:00:00.000Z",
        "lastMembershipUpdated": "2024-02-01T08:00:00.000Z",
        "objectClass": ["okta:user_group"],
        "type": g.kind,
        "profile": { "name": g.name, "description": g.description },
        "_links": {
            "users": { "href": format!("{}/api/v1/groups/{}/users", st.okta_base, g.id) },
            "apps": { "href": format!("{}/api/v1/groups/{}/apps", st.okta_base, g.id) }
        }
    })
}

/// `GET /api/v1/users/{id or login}`.
pub(crate) fn get_user(st: &State, key: &str) -> Reply {
    match st.okta_find(key) {
        Some(i) => Reply::json(200, user_json(st, &st.okta_users[i])),
        None => not_found(key, "User"),
    }
}

/// `GET /api/v1/users/{id}/groups`.
pub(crate) fn user_groups(st: &State, key: &str, ctx: &Ctx) -> Reply {
    let Some(i) = st.okta_find(key) else {
        return not_found(key, "User");
    };
    let uid = &st.okta_users[i].id;
    let items = st
        .okta_groups
        .iter()
        .filter(|g| g.members.iter().any(|m| m == uid))
        .map(|g| (g.id.clone(), group_json(st, g)))
        .collect();
    page(items, ctx, &st.okta_base, 200, 10_000).unwrap_or_else(bad_limit)
}

fn mapping_summary(st: &State, id: &str) -> Value {
    let user = json!({
        "id": USER_TYPE_ID,
        "name": "user",
        "type": "user",
        "_links": {
            "self": { "href": format!("{}/api/v1/meta/types/user/{}", st.okta_base, USER_TYPE_ID) },
            "schema": { "href": format!("{}/api/v1/meta/schemas/user/osc1sbxdefault", st.okta_base) }
        }
    });
    let app = json!({
        "id": st.app_id,
        "name": "office365",
        "type": "appuser",
        "_links": {
            "self": { "href": format!("{}/api/v1/apps/{}", st.okta_base, st.app_id) },
            "schema": { "href": format!("{}/api/v1/meta/schemas/apps/{}/default", st.okta_base, st.app_id) }
        }
    });
    let (source, target) = if id == MAPPING_ID {
        (user, app)
    } else {
        (app, user)
    };
    json!({
        "id": id,
        "source": source,
        "target": target,
        "_links": {
            "self": { "href": format!("{}/api/v1/mappings/{}", st.okta_base, id) }
        }
    })
}

/// `GET /api/v1/mappings?sourceId=&targetId=&limit=&after=`.
pub(crate) fn list_mappings(st: &State, ctx: &Ctx) -> Reply {
    let items = [MAPPING_ID, REVERSE_MAPPING_ID]
        .into_iter()
        .map(|id| (id.to_owned(), mapping_summary(st, id)))
        .filter(|(_, m)| {
            ctx.param("sourceId")
                .is_none_or(|s| m.pointer("/source/id").and_then(Value::as_str) == Some(s))
                && ctx
                    .param("targetId")
                    .is_none_or(|t| m.pointer("/target/id").and_then(Value::as_str) == Some(t))
        })
        .collect();
    page(items, ctx, &st.okta_base, 20, 200).unwrap_or_else(bad_limit)
}

/// `GET /api/v1/mappings/{id}`.
pub(crate) fn get_mapping(st: &State, id: &str) -> Reply {
    let mut m = if id == MAPPING_ID || id == REVERSE_MAPPING_ID {
        mapping_summary(st, id)
    } else {
        return not_found(id, "ProfileMapping");
    };
    let props = if id == MAPPING_ID {
        let mut p = json!({
            "firstName": { "expression": "user.firstName", "pushStatus": "PUSH" },
            "lastName": { "expression": "user.lastName", "pushStatus": "PUSH" },
        });
        if let Some(expression) = immutable_id_expression(st.mapping) {
            p["immutableId"] = json!({ "expression": expression, "pushStatus": "PUSH" });
        }
        p
    } else {
        json!({
            "firstName": { "expression": "appuser.firstName", "pushStatus": "DONT_PUSH" },
            "lastName": { "expression": "appuser.lastName", "pushStatus": "DONT_PUSH" },
        })
    };
    m["properties"] = props;
    Reply::json(200, m)
}

/// Okta's default expression for the Office 365 `immutableId`: the AD objectGUID of AD-sourced
/// users (Okta exposes it as the directory user's `externalId`).
pub const DIRECTORY_USER_EXPRESSION: &str =
    "hasDirectoryUser()?findDirectoryUser().externalId:null";

/// The source name [`mapped_properties`] gives for the directory user's `externalId`, which is
/// not an Okta profile property (see `OktaUserRec::directory_external_id`).
pub(crate) const DIRECTORY_EXTERNAL_ID: &str = "findDirectoryUser().externalId";

fn immutable_id_expression(mode: MappingMode) -> Option<&'static str> {
    match mode {
        MappingMode::Unmapped => None,
        MappingMode::Ignore | MappingMode::Reject => Some("user.o365ImmutableId"),
        MappingMode::DirectoryUser => Some(DIRECTORY_USER_EXPRESSION),
    }
}

/// App-user profile properties the mapping fills, with the Okta user profile property each
/// comes from ([`DIRECTORY_EXTERNAL_ID`]: the AD-sourced user's objectGUID).
pub(crate) fn mapped_properties(mode: MappingMode) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("firstName", "firstName"), ("lastName", "lastName")];
    match mode {
        MappingMode::Unmapped => {}
        MappingMode::Ignore | MappingMode::Reject => v.push(("immutableId", "o365ImmutableId")),
        MappingMode::DirectoryUser => v.push(("immutableId", DIRECTORY_EXTERNAL_ID)),
    }
    v
}
