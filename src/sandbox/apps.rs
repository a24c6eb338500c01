//! The Office 365 app in Okta: its users (read, list, assign, unassign) and group assignments.

use serde_json::{json, Map, Value};

use super::clock::okta_time;
use super::okta::{bad_limit, error, malformed, mapped_properties, not_found, validation};
use super::paging::page;
use super::reply::{Ctx, Reply};
use super::state::{prop_str, AppUserRec, State};
use super::syslog;
use super::MappingMode;

pub(crate) fn check_app(st: &State, app: &str) -> Result<(), Reply> {
    if app == st.app_id {
        Ok(())
    } else {
        Err(not_found(app, "AppInstance"))
    }
}

pub(crate) fn app_user_json(st: &State, a: &AppUserRec) -> Value {
    json!({
        "id": a.user_id,
        "externalId": a.external_id,
        "created": a.created,
        "lastUpdated": a.last_updated,
        "scope": a.scope,
        "status": a.status,
        "statusChanged": a.status_changed,
        "passwordChanged": null,
        "syncState": a.sync_state,
        "lastSync": a.last_updated,
        "credentials": { "userName": a.user_name },
        "profile": a.profile,
        "_links": {
            "app": { "href": format!("{}/api/v1/apps/{}", st.okta_base, st.app_id) },
            "user": { "href": format!("{}/api/v1/users/{}", st.okta_base, a.user_id) }
        }
    })
}

/// `GET /api/v1/apps/{appId}/users/{userId}`.
pub(crate) fn get_app_user(st: &State, app: &str, user: &str) -> Reply {
    if let Err(r) = check_app(st, app) {
        return r;
    }
    match st.app_user(user) {
        Some(i) => Reply::json(200, app_user_json(st, &st.app_users[i])),
        None => not_found(user, "AppUser"),
    }
}

fn starts_with_ci(value: Option<&str>, prefix: &str) -> bool {
    value.is_some_and(|v| {
        v.len() >= prefix.len()
            && v.is_char_boundary(prefix.len())
            && v[..prefix.len()].eq_ignore_ascii_case(prefix)
    })
}

/// `GET /api/v1/apps/{appId}/users?q=&limit=&after=`.
pub(crate) fn list_app_users(st: &State, app: &str, ctx: &Ctx) -> Reply {
    if let Err(r) = check_app(st, app) {
        return r;
    }
    let q = ctx.param("q").filter(|q| !q.is_empty());
    let items = st
        .app_users
        .iter()
        .filter(|a| {
            q.is_none_or(|q| {
                starts_with_ci(Some(&a.user_name), q)
                    || ["email", "firstName", "lastName"]
                        .iter()
                        .any(|p| starts_with_ci(prop_str(&a.profile, p), q))
            })
        })
        .map(|a| (a.user_id.clone(), app_user_json(st, a)))
        .collect();
    page(items, ctx, &st.okta_base, 50, 500).unwrap_or_else(bad_limit)
}

/// `GET /api/v1/apps/{appId}/groups`.
pub(crate) fn app_groups(st: &State, app: &str, ctx: &Ctx) -> Reply {
    if let Err(r) = check_app(st, app) {
        return r;
    }
    let items = st
        .app_groups
        .iter()
        .map(|g| {
            (
                g.group_id.clone(),
                json!({
                    "id": g.group_id,
                    "lastUpdated": "2023-02-01T08:00:00.000Z",
                    "priority": g.priority,
                    "profile": {},
                    "_links": {
                        "app": { "href": format!("{}/api/v1/apps/{}", st.okta_base, st.app_id) },
                        "group": { "href": format!("{}/api/v1/groups/{}", st.okta_base, g.group_id) }
                    }
                }),
            )
        })
        .collect();
    page(items, ctx, &st.okta_base, 20, 200).unwrap_or_else(bad_limit)
}

/// `DELETE /api/v1/apps/{appId}/users/{userId}`.
pub(crate) fn unassign(st: &mut State, app: &str, user: &str, ctx: &Ctx) -> Reply {
    if let Err(r) = check_app(st, app) {
        return r;
    }
    let Some(i) = st.app_user(user) else {
        return not_found(user, "AppUser");
    };
    let group_grant = st.app_users[i].scope == "GROUP" || !st.granting_groups(user).is_empty();
    if group_grant {
        return error(
            403,
            "E0000046",
            "Deactivate application for user forbidden",
            &["Cannot unassign a user from an application while their group memberships grant them access to the application."],
        );
    }
    let removed = st.app_users.remove(i);
    if st.deactivate_enabled() {
        st.deprovisions.push(removed.user_id.clone());
        // Office 365 blocks the user's sign-in: that is what deprovisioning does downstream.
        let target = removed
            .external_id
            .as_deref()
            .and_then(|id| st.entra_find_current(id))
            .or_else(|| st.entra_find_current(&removed.user_name));
        if let Some(j) = target {
            let mut next = st.entra[j].current.clone();
            next.insert("accountEnabled".into(), Value::Bool(false));
            st.entra_write(j, next, ctx.now);
        }
    }
    Reply::empty(204)
}

/// `POST /api/v1/apps/{appId}/users`.
pub(crate) fn assign(st: &mut State, app: &str, ctx: &Ctx) -> Reply {
    if let Err(r) = check_app(st, app) {
        return r;
    }
    let body = match serde_json::from_slice::<Value>(&ctx.body) {
        Ok(Value::Object(m)) => m,
        Ok(_) | Err(_) => return malformed(),
    };
    let Some(user_id) = body.get("id").and_then(Value::as_str) else {
        return validation("id", "id: The field cannot be left blank.");
    };
    let Some(ui) = st.okta_users.iter().position(|u| u.id == user_id) else {
        return validation("id", &format!("id: No user with id '{user_id}' exists."));
    };
    match body.get("scope") {
        None => {}
        Some(Value::String(s)) if s == "USER" => {}
        Some(_) => return validation("scope", "scope: Only USER scope can be assigned directly."),
    }
    let user_name = match body.get("credentials").and_then(|c| c.get("userName")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return validation("credentials", "credentials.userName: invalid value."),
    };
    let given: Map<String, Value> = match body.get("profile") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return validation("profile", "profile: must be an object."),
    };
    if let Err(r) = check_against_schema(st, &given) {
        return r;
    }
    let mapped = mapped_properties(st.mapping);
    if st.mapping == MappingMode::Reject {
        if let Some((name, _)) = mapped.iter().find(|(name, _)| given.contains_key(*name)) {
            let summary = format!(
                "Api validation failed: profile: {name} is mapped by a profile mapping and cannot be set"
            );
            return error(400, "E0000001", &summary, &[&summary]);
        }
    }
    let okta_profile = st.okta_users[ui].profile.clone();
    let login = prop_str(&okta_profile, "login")
        .unwrap_or_default()
        .to_owned();
    let now = okta_time(ctx.wall);
    let existing = st.app_user(user_id);
    let mut profile = existing
        .map(|i| st.app_users[i].profile.clone())
        .unwrap_or_default();
    profile.extend(given);
    let directory_id = st.okta_users[ui].directory_external_id.clone();
    for (target, source) in &mapped {
        let value = if *source == super::okta::DIRECTORY_EXTERNAL_ID {
            directory_id.clone().map(Value::String)
        } else {
            okta_profile.get(*source).cloned()
        };
        match value.as_ref() {
            Some(v) if !v.is_null() => {
                profile.insert((*target).to_owned(), v.clone());
            }
            _ => {
                profile.remove(*target);
            }
        }
    }
    // A change is pushed at once while provisioning is on (or left `SYNCING` when the test holds
    // the push back); while it is paused, the app user waits, unlinked, for the resume.
    let (pushed, sync_state) = match (st.pushing(), st.hold_sync) {
        (true, false) => (true, "SYNCHRONIZED"),
        (true, true) => (false, "SYNCING"),
        (false, _) => (false, "OUT_OF_SYNC"),
    };
    let rec = match existing {
        Some(i) => {
            let a = &mut st.app_users[i];
            a.scope = "USER".into();
            a.profile = profile;
            a.last_updated = now;
            a.sync_state = sync_state.into();
            if let Some(n) = user_name {
                a.user_name = n;
            }
            a.clone()
        }
        None => {
            let user_name = user_name.unwrap_or(login);
            let external_id = st
                .entra_find_current(&user_name)
                .and_then(|j| prop_str(&st.entra[j].current, "id").map(str::to_owned))
                .filter(|_| pushed);
            let rec = AppUserRec {
                user_id: user_id.to_owned(),
                scope: "USER".into(),
                status: if pushed { "PROVISIONED" } else { "STAGED" }.into(),
                sync_state: sync_state.into(),
                external_id,
                created: now.clone(),
                last_updated: now.clone(),
                status_changed: now,
                user_name,
                profile,
            };
            st.app_users.push(rec.clone());
            rec
        }
    };
    // Pushed at once: Office 365 refuses a user whose ImmutableID it cannot match, and Okta
    // logs it (a new assignment is a create, a changed one a profile push) and leaves the app
    // user in error: `syncState` ERROR, and a new one not linked (still STAGED, no externalId),
    // as Okta shows a failed provisioning task until an admin retries it.
    let mut rec = rec;
    if pushed {
        if let Some(i) = st.app_user(user_id).filter(|&i| st.push_mismatch(i)) {
            let kind = if existing.is_some() {
                syslog::PUSH_PROFILE
            } else {
                syslog::PUSH
            };
            let event = syslog::push_failure(st, kind, i);
            st.syslog.record(ctx.wall, event);
            let a = &mut st.app_users[i];
            a.sync_state = "ERROR".into();
            if existing.is_none() {
                a.status = "STAGED".into();
                a.external_id = None;
            }
            rec = a.clone();
        }
    }
    Reply::json(200, app_user_json(st, &rec))
}

/// Base attributes of the Office 365 app user schema (`definitions.base.properties`).
fn base_schema() -> Value {
    let rw = |title: &str| json!({ "title": title, "type": "string", "mutability": "READ_WRITE", "scope": "NONE" });
    json!({
        "userName": {
            "title": "Username", "type": "string", "mutability": "READ_WRITE", "scope": "NONE",
            "required": true, "master": { "type": "PROFILE_MASTER" }
        },
        "firstName": rw("First name"),
        "lastName": rw("Last name"),
        "email": rw("Primary email"),
    })
}

/// The custom attributes every new sandbox starts with: the ImmutableID, licenses and roles
/// (writable), the usage location, and one attribute Okta imports from Office 365 (read-only).
pub(crate) fn initial_schema_custom() -> Value {
    let array = |title: &str| {
        json!({
            "title": title, "type": "array", "items": { "type": "string" },
            "mutability": "READ_WRITE", "scope": "NONE", "master": { "type": "PROFILE_MASTER" }
        })
    };
    json!({
        "immutableId": {
            "title": "ImmutableID", "type": "string", "mutability": "READ_WRITE", "scope": "NONE",
            "master": { "type": "PROFILE_MASTER" }
        },
        "licenses": array("Licenses"),
        "roles": array("Roles"),
        "usageLocation": {
            "title": "Usage location", "type": "string", "mutability": "READ_WRITE", "scope": "NONE"
        },
        "lastSignInDateTime": {
            "title": "Last sign-in (imported from Office 365)", "type": "string",
            "mutability": "READ_ONLY", "scope": "NONE", "master": { "type": "PROFILE_MASTER" }
        },
    })
}

fn schema_attribute<'a>(st: &'a State, base: &'a Value, name: &str) -> Option<&'a Value> {
    base.get(name).or_else(|| st.app_schema_custom.get(name))
}

/// An assignment's profile against the schema: a property it does not define, or one it makes
/// read-only, is refused as Okta refuses an invalid profile (`E0000001`).
fn check_against_schema(st: &State, given: &Map<String, Value>) -> Result<(), Reply> {
    let base = base_schema();
    for (name, v) in given.iter().filter(|(_, v)| !v.is_null()) {
        let cause = match schema_attribute(st, &base, name) {
            None => format!(
                "profile.{name}: Property name '{name}' is not defined in the app user schema"
            ),
            Some(a) if a.get("mutability").and_then(Value::as_str) == Some("READ_ONLY") => {
                format!("profile.{name}: '{name}' is read-only and cannot be set (value {v})")
            }
            Some(_) => continue,
        };
        return Err(validation("profile", &cause));
    }
    Ok(())
}

/// `GET /api/v1/meta/schemas/apps/{appId}/default` (`getApplicationUserSchema`): a `UserSchema`.
pub(crate) fn app_user_schema(st: &State, app: &str) -> Reply {
    if let Err(r) = check_app(st, app) {
        return r;
    }
    let id = format!("{}/meta/schemas/apps/{}/default", st.okta_base, st.app_id);
    Reply::json(
        200,
        json!({
            "id": id,
            "$schema": "http://json-schema.org/draft-04/schema#",
            "name": "office365",
            "title": "Microsoft Office 365 User",
            "created": "2023-01-10T08:00:00.000Z",
            "lastUpdated": "2023-01-10T08:00:00.000Z",
            "definitions": {
                "base": {
                    "id": "#base", "type": "object",
                    "properties": base_schema(), "required": ["userName"]
                },
                "custom": {
                    "id": "#custom", "type": "object",
                    "properties": st.app_schema_custom, "required": []
                }
            },
            "type": "object",
            "properties": {
                "profile": { "allOf": [
                    { "$ref": "#/definitions/custom" },
                    { "$ref": "#/definitions/base" }
                ] }
            },
            "_links": { "self": { "href": format!("{}/api/v1/meta/schemas/apps/{}/default", st.okta_base, st.app_id), "method": "GET", "type": "application/json" } }
        }),
    )
}

/// `GET /api/v1/apps/{appId}`.
pub(crate) fn get_app(st: &State, app: &str) -> Reply {
    if app != st.app_id {
        return super::okta::not_found(app, "AppInstance");
    }
    Reply::json(
        200,
        serde_json::json!({
            "id": st.app_id,
            "name": "office365",
            "label": "Microsoft Office 365",
            "status": "ACTIVE",
            "signOnMode": "WS_FEDERATION",
            "features": if st.provisioning_enabled {
                serde_json::json!(["USER_PROVISIONING", "PUSH_PROFILE_UPDATES"])
            } else {
                serde_json::json!([])
            },
            "_links": {"self": {"href": format!("{}/api/v1/apps/{}", st.okta_base, st.app_id)}},
        }),
    )
}
