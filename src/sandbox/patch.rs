//! `PATCH /users/{id}`: the write rules Entra enforces on UPN and ImmutableID changes, in order.

use serde_json::Value;

use super::graph::{error, not_found, user_domain};
use super::reply::{Ctx, Reply};
use super::state::{prop_str, upn_domain, State};
use crate::domain::Upn;

/// Roles whose holders only a privileged-authentication-level app may change (sensitive actions).
pub(crate) const PRIVILEGED_ROLE_TEMPLATES: &[&str] = &[
    "62e90394-69f5-4237-9190-012177145e10", // Global Administrator
    "7be44c8a-adaf-4e2a-84d6-ab2649e08a13", // Privileged Authentication Administrator
    "e8611ab8-c189-46e8-94e1-60213ab1f814", // Privileged Role Administrator
];

/// String properties a PATCH may set besides the two the repair uses.
const PLAIN_STRINGS: &[&str] = &[
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "usageLocation",
    "department",
];

fn invalid(ctx: &Ctx, prop: &str) -> Reply {
    error(
        ctx,
        400,
        "Request_BadRequest",
        &format!("Invalid value specified for property '{prop}' of resource 'User'."),
    )
}

fn bad(ctx: &Ctx, message: &str) -> Reply {
    error(ctx, 400, "Request_BadRequest", message)
}

pub(crate) fn update_user(st: &mut State, key: &str, ctx: &Ctx) -> Reply {
    let Some(i) = st.entra_find_current(key) else {
        return not_found(ctx, key);
    };
    let body: Value = match serde_json::from_slice(&ctx.body) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => {
            return error(
                ctx,
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            )
        }
    };
    let patch = body.as_object().expect("object");
    let cur = st.entra[i].current.clone();
    let id = prop_str(&cur, "id").unwrap_or_default().to_owned();

    if cur.get("onPremisesSyncEnabled") == Some(&Value::Bool(true)) && !patch.is_empty() {
        return bad(
            ctx,
            "Unable to update the specified properties for objects that have originated within an external service.",
        );
    }
    let sensitive =
        patch.contains_key("userPrincipalName") || patch.contains_key("onPremisesImmutableId");
    let privileged = st
        .transitive_roles_of(&id)
        .iter()
        .any(|r| PRIVILEGED_ROLE_TEMPLATES.contains(&r.template_id.as_str()));
    if sensitive && privileged {
        return error(
            ctx,
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }

    let new_iid = match patch.get("onPremisesImmutableId") {
        None => None,
        Some(Value::String(s))
            if !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c == '$' || c == '_' || c.is_whitespace() || c.is_control()) =>
        {
            Some(s.clone())
        }
        Some(_) => return invalid(ctx, "onPremisesImmutableId"),
    };
    if new_iid.is_some() && st.is_federated(user_domain(&cur)) {
        return bad(
            ctx,
            &format!(
                "Property 'onPremisesImmutableId' cannot be set on a user in the federated domain '{}'. Change the userPrincipalName to a managed domain first.",
                user_domain(&cur)
            ),
        );
    }
    let new_upn = match patch.get("userPrincipalName") {
        None => None,
        Some(Value::String(s)) => match Upn::parse(s) {
            Ok(u) if u.as_str() == s => Some(s.clone()),
            _ => return invalid(ctx, "userPrincipalName"),
        },
        Some(_) => return invalid(ctx, "userPrincipalName"),
    };
    if let Some(upn) = &new_upn {
        if st.domain(upn_domain(upn)).is_none() {
            return bad(
                ctx,
                "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
            );
        }
        let taken = st.entra.iter().enumerate().any(|(j, e)| {
            j != i
                && prop_str(&e.current, "userPrincipalName")
                    .is_some_and(|u| u.eq_ignore_ascii_case(upn))
        });
        if taken {
            return bad(
                ctx,
                "Another object with the same value for property userPrincipalName already exists.",
            );
        }
    }
    if let Some(iid) = &new_iid {
        let taken = st.entra.iter().enumerate().any(|(j, e)| {
            j != i && prop_str(&e.current, "onPremisesImmutableId") == Some(iid.as_str())
        });
        if taken {
            return bad(
                ctx,
                "Another object with the same value for property onPremisesImmutableId already exists.",
            );
        }
    }
    let result_upn = new_upn.clone().unwrap_or_else(|| {
        prop_str(&cur, "userPrincipalName")
            .unwrap_or_default()
            .to_owned()
    });
    let result_iid = new_iid
        .clone()
        .or_else(|| prop_str(&cur, "onPremisesImmutableId").map(str::to_owned))
        .filter(|s| !s.is_empty());
    if st.is_federated(upn_domain(&result_upn)) && result_iid.is_none() {
        return bad(
            ctx,
            "SourceAnchor is a required property for creation of a federated user",
        );
    }

    let mut next = cur.clone();
    for name in PLAIN_STRINGS {
        match patch.get(*name) {
            None => {}
            Some(v @ (Value::String(_) | Value::Null)) => {
                next.insert((*name).to_owned(), v.clone());
            }
            Some(_) => return invalid(ctx, name),
        }
    }
    match patch.get("accountEnabled") {
        None => {}
        Some(v @ Value::Bool(_)) => {
            next.insert("accountEnabled".into(), v.clone());
        }
        Some(_) => return invalid(ctx, "accountEnabled"),
    }
    if let Some(upn) = new_upn {
        next.insert("userPrincipalName".into(), Value::String(upn));
    }
    if let Some(iid) = new_iid {
        next.insert("onPremisesImmutableId".into(), Value::String(iid));
    }
    if next != cur {
        st.entra_write(i, next, ctx.now);
    }
    Reply::empty(204)
}
