//! The app's `USER_PROVISIONING` feature: GET returns the Feature, PUT takes only (part of) the
//! capabilities object and merges it.

use serde_json::{json, Map, Value};

use super::apps::check_app;
use super::okta::{malformed, not_found, validation};
use super::reply::{Ctx, Reply};
use super::state::State;

pub(crate) const FEATURE: &str = "USER_PROVISIONING";

/// The capabilities every new sandbox starts with: everything on.
pub(crate) fn initial_capabilities() -> Value {
    json!({
        "create": { "lifecycleCreate": { "status": "ENABLED" } },
        "update": {
            "lifecycleDeactivate": { "status": "ENABLED" },
            "profile": { "status": "ENABLED" },
            "password": { "status": "ENABLED", "seed": "RANDOM", "change": "KEEP_EXISTING" }
        }
    })
}

const STATUS: &[&str] = &["ENABLED", "DISABLED"];

/// Allowed shape: path → allowed leaf values (`None` for an object level).
fn leaf_values(path: &str) -> Option<Option<&'static [&'static str]>> {
    Some(match path {
        "create"
        | "create.lifecycleCreate"
        | "update"
        | "update.lifecycleDeactivate"
        | "update.profile"
        | "update.password" => None,
        "create.lifecycleCreate.status"
        | "update.lifecycleDeactivate.status"
        | "update.profile.status"
        | "update.password.status" => Some(STATUS),
        "update.password.seed" => Some(&["OKTA", "RANDOM"]),
        "update.password.change" => Some(&["CHANGE", "KEEP_EXISTING"]),
        _ => return None,
    })
}

/// Checks `patch` against the capabilities schema; the first problem as an error cause.
fn validate(prefix: &str, patch: &Map<String, Value>) -> Result<(), String> {
    for (k, v) in patch {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (leaf_values(&path), v) {
            (None, _) => return Err(format!("{path}: unknown property")),
            (Some(None), Value::Object(inner)) => validate(&path, inner)?,
            (Some(None), _) => return Err(format!("{path}: must be an object")),
            (Some(Some(allowed)), Value::String(s)) if allowed.contains(&s.as_str()) => {}
            (Some(Some(allowed)), _) => {
                return Err(format!("{path}: must be one of {}", allowed.join(", ")))
            }
        }
    }
    Ok(())
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn feature_json(st: &State) -> Value {
    json!({
        "name": FEATURE,
        "status": "ENABLED",
        "description": "User provisioning settings from Okta to a downstream app",
        "capabilities": st.capabilities,
        "_links": {
            "self": {
                "href": format!("{}/api/v1/apps/{}/features/{}", st.okta_base, st.app_id, FEATURE),
                "hints": { "allow": ["GET", "PUT"] }
            }
        }
    })
}

/// `GET /api/v1/apps/{appId}/features[/{name}]`.
pub(crate) fn get_feature(st: &State, app: &str, name: Option<&str>) -> Reply {
    if let Err(r) = check_app(st, app) {
        return r;
    }
    match name {
        None => Reply::json(200, Value::Array(vec![feature_json(st)])),
        Some(n) if n == FEATURE => Reply::json(200, feature_json(st)),
        Some(n) => not_found(n, "AppInstanceFeature"),
    }
}

/// `PUT /api/v1/apps/{appId}/features/{name}` with a capabilities object.
pub(crate) fn put_feature(st: &mut State, app: &str, name: &str, ctx: &Ctx) -> Reply {
    if let Err(r) = check_app(st, app) {
        return r;
    }
    if name != FEATURE {
        return not_found(name, "AppInstanceFeature");
    }
    let patch = match serde_json::from_slice::<Value>(&ctx.body) {
        Ok(Value::Object(m)) => m,
        _ => return malformed(),
    };
    for top in ["name", "status", "capabilities", "description", "_links"] {
        if patch.contains_key(top) {
            return validation(
                "capabilities",
                &format!(
                    "{top}: unknown property; the body is the capabilities object, not the Feature"
                ),
            );
        }
    }
    if let Err(cause) = validate("", &patch) {
        return validation("capabilities", &cause);
    }
    merge(&mut st.capabilities, &Value::Object(patch));
    st.provisioning_writes.push(st.capabilities.clone());
    st.push_pending();
    Reply::json(200, feature_json(st))
}
