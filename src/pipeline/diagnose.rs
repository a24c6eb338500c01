//! The read-only diagnosis of one user: Entra and Okta side by side, a verdict, and the smallest
//! safe fix. Nothing is written to either system or to the store.

use super::plan::{graph_err, okta_err};
use super::refusal::{PlanError, Refusal};
use crate::config::RepairPolicy;
use crate::directory::graph::{EntraUser, GraphClient};
use crate::directory::okta::{AppUser, OktaClient, OktaUser};
use crate::domain::{EntraObjectId, ImmutableId, OktaUserId, Upn};
use serde::Serialize;
use serde_json::Value;

/// What is wrong with the user, if anything. One verdict: the first that blocks a repair wins,
/// in the order the plan refuses, so the diagnosis never offers a fix the plan would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Both systems hold the same ImmutableID.
    Healthy,
    /// Entra holds no ImmutableID; Okta does.
    EntraMissingId,
    /// The two hold different values.
    Differ,
    /// The Okta user exists but is not assigned to the Office 365 app.
    OktaAppUserMissing,
    /// Entra takes the value from on-premises AD: the fix is in AD / Entra Connect.
    SyncedFromAd,
    /// Okta grants the app through a group, so the bot cannot unassign and reassign.
    AssignedThroughGroup,
    MissingInEntra,
    MissingInOkta,
    /// The user holds an Entra directory role (or is on the protected list).
    AdminTarget,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::EntraMissingId => "Entra is missing the ImmutableID",
            Verdict::Differ => "Entra and Okta hold different ImmutableIDs",
            Verdict::OktaAppUserMissing => "not assigned to Office 365 in Okta",
            Verdict::SyncedFromAd => "synced from on-premises AD",
            Verdict::AssignedThroughGroup => "assigned through a group",
            Verdict::MissingInEntra => "missing in Entra",
            Verdict::MissingInOkta => "missing in Okta",
            Verdict::AdminTarget => "admin target",
        }
    }
}

/// The smallest safe fix for a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Fix {
    /// Nothing to repair.
    Nothing,
    /// Set Entra to Okta's value and touch nothing in Okta (steps 1–4 of the repair).
    EntraOnly { value: String },
    /// The full nine-step repair with a new value.
    Full,
    /// Not the bot's to do: a person must act elsewhere.
    Outside,
}

/// Where the Okta app user's `immutableId` comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IdSource {
    /// A profile mapping fills it with this expression; Okta overwrites anything set by hand.
    Mapped { expression: String },
    /// No mapping: the value was set on the assignment (by hand or by a previous repair).
    SetByHand,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntraSide {
    pub upn: String,
    /// Okta's `externalId` for the app user should be this object id.
    pub object_id: String,
    pub domain: String,
    /// `Managed`, `Federated`, or `None` when the domain is not in the tenant.
    pub authentication_type: Option<String>,
    pub immutable_id: Option<String>,
    pub sync_enabled: bool,
    pub account_enabled: Option<bool>,
    pub assigned_licenses: usize,
    /// Display names of directory roles held (directly or through a group); unnamed ones count.
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OktaSide {
    pub login: String,
    pub status: String,
    pub app_user: Option<AppSide>,
    /// Groups the user is in that are assigned to the app.
    pub granting_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSide {
    pub scope: String,
    pub status: String,
    pub sync_state: Option<String>,
    pub external_id: Option<String>,
    pub immutable_id: Option<String>,
    pub licenses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    pub upn: String,
    pub entra: Option<EntraSide>,
    pub okta: Option<OktaSide>,
    pub id_source: IdSource,
    pub verdict: Verdict,
    pub fix: Fix,
    /// Why this fix, in a sentence or two a person can act on.
    pub why: String,
}

fn licenses_of(app: &AppUser) -> Vec<String> {
    match app.profile.get("licenses") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Diagnoses `upn` with reads only: the same reads the plan makes, but carried on past the first
/// problem so that both sides can be shown.
pub async fn diagnose(
    graph: &GraphClient,
    okta: &OktaClient,
    policy: &RepairPolicy,
    upn: &Upn,
) -> Result<Diagnosis, PlanError> {
    let typed_domain = upn.domain().to_ascii_lowercase();
    let (entra, okta_user, app_groups, rules) = tokio::join!(
        graph.user_by_upn(upn),
        okta.user(upn.as_str()),
        okta.app_groups(),
        okta.app_profile_rules(),
    );
    let entra: Option<EntraUser> = entra.map_err(graph_err)?.value;
    // Entra's spelling of the UPN decides the domain, as in the plan.
    let domain = entra
        .as_ref()
        .and_then(|e| Upn::parse(&e.user_principal_name).ok())
        .map_or(typed_domain, |u| u.domain().to_ascii_lowercase());
    let dom = graph.domain(&domain).await.map_err(graph_err)?.value;
    let roles = match &entra {
        Some(e) => {
            let id = EntraObjectId::parse(&e.id)
                .map_err(|e| PlanError::Internal(format!("Graph returned a bad object id: {e}")))?;
            graph.directory_roles(&id).await.map_err(graph_err)?.value
        }
        None => Vec::new(),
    };

    // The Okta side is found as the plan finds it: by login, else by the app's username.
    let okta_user: Option<OktaUser> = match okta_user.map_err(okta_err)?.value {
        Some(u) => Some(u),
        None => match okta
            .app_user_by_user_name(upn.as_str())
            .await
            .map_err(okta_err)?
            .value
        {
            Some(a) => okta.user(&a.id).await.map_err(okta_err)?.value,
            None => None,
        },
    };
    let okta_side = match okta_user {
        Some(u) => {
            let id = OktaUserId::parse(&u.id)
                .map_err(|e| PlanError::Internal(format!("Okta returned a bad user id: {e}")))?;
            let (app_user, groups) = tokio::join!(okta.app_user(&id), okta.user_groups(&id));
            let app_user = app_user.map_err(okta_err)?.value;
            let app_groups = app_groups.map_err(okta_err)?.value;
            let granting_groups = groups
                .map_err(okta_err)?
                .value
                .iter()
                .filter(|g| app_groups.iter().any(|a| a.id == g.id))
                .map(|g| {
                    g.profile
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or(&g.id)
                        .to_owned()
                })
                .collect();
            Some(OktaSide {
                login: u.login().unwrap_or_default().to_owned(),
                status: u.status.clone(),
                app_user: app_user.map(|a| AppSide {
                    scope: a.scope.clone(),
                    status: a.status.clone(),
                    sync_state: a.sync_state.clone(),
                    external_id: a.external_id.clone(),
                    immutable_id: a.immutable_id().map(str::to_owned),
                    licenses: licenses_of(&a),
                }),
                granting_groups,
            })
        }
        None => None,
    };

    let rules = rules.map_err(okta_err)?.value;
    let id_source = match rules.mapped().remove("immutableId") {
        Some(expression) => IdSource::Mapped { expression },
        None => IdSource::SetByHand,
    };

    let entra_side = entra.as_ref().map(|e| EntraSide {
        upn: e.user_principal_name.clone(),
        object_id: e.id.clone(),
        domain: domain.clone(),
        authentication_type: dom.as_ref().map(|d| d.authentication_type.clone()),
        immutable_id: e.on_premises_immutable_id.clone(),
        sync_enabled: e.on_premises_sync_enabled.unwrap_or(false),
        account_enabled: e.account_enabled,
        assigned_licenses: e.assigned_licenses.len(),
        roles: roles
            .iter()
            .map(|r| r.name().unwrap_or("(unnamed role)").to_owned())
            .collect(),
    });

    let protected = |u: &str| {
        Upn::parse(u).is_ok_and(|u| {
            policy
                .protected_users
                .iter()
                .filter_map(|p| Upn::parse(p).ok())
                .any(|p| p == u)
        })
    };

    let (verdict, fix, why) = judge(
        upn,
        entra_side.as_ref(),
        okta_side.as_ref(),
        &id_source,
        policy,
        protected(upn.as_str()) || entra_side.as_ref().is_some_and(|e| protected(&e.upn)),
    );
    // Entra-only is safe only if no other Entra user holds Okta's value: ImmutableIDs are
    // unique in the tenant. A mapped value is checked too; a clash is a full repair's job.
    let (fix, why) = match fix {
        Fix::EntraOnly { value } => {
            let id = ImmutableId::parse_value(&value).map_err(|e| {
                PlanError::Internal(format!("Okta's value was checked already: {e}"))
            })?;
            let holders = graph
                .users_with_immutable_id(&id)
                .await
                .map_err(graph_err)?
                .value;
            let own = entra.as_ref().map(|e| e.id.to_ascii_lowercase());
            match holders
                .iter()
                .find(|h| Some(h.id.to_ascii_lowercase()) != own)
            {
                Some(other) if id_source == IdSource::SetByHand => (
                    Fix::Full,
                    format!(
                        "Okta's value {value} already belongs to {} in Entra, so Entra cannot take it: the full repair gives both systems a new, unique value.",
                        other.user_principal_name
                    ),
                ),
                Some(other) => (
                    Fix::Outside,
                    format!(
                        "Okta's mapping sends {value}, which already belongs to {} in Entra; ImmutableIDs must be unique. Fix the mapped source attribute in Okta first.",
                        other.user_principal_name
                    ),
                ),
                None => (Fix::EntraOnly { value }, why),
            }
        }
        other => (other, why),
    };
    Ok(Diagnosis {
        upn: entra_side
            .as_ref()
            .map_or_else(|| upn.to_string(), |e| e.upn.clone()),
        entra: entra_side,
        okta: okta_side,
        id_source,
        verdict,
        fix,
        why,
    })
}

/// The verdict and the fix from what was read; the wording of fixes outside the bot is the
/// plan's own refusal, so the two never disagree.
fn judge(
    upn: &Upn,
    entra: Option<&EntraSide>,
    okta: Option<&OktaSide>,
    source: &IdSource,
    policy: &RepairPolicy,
    protected: bool,
) -> (Verdict, Fix, String) {
    let outside = |v: Verdict, r: Refusal| (v, Fix::Outside, r.to_string());
    let Some(entra) = entra else {
        return outside(
            Verdict::MissingInEntra,
            Refusal::NotInEntra {
                upn: upn.to_string(),
            },
        );
    };
    let Some(okta) = okta else {
        return outside(
            Verdict::MissingInOkta,
            Refusal::NotInOkta {
                upn: entra.upn.clone(),
            },
        );
    };
    let app = okta.app_user.as_ref();
    let okta_id = app.and_then(|a| a.immutable_id.as_deref());
    // Agreeing systems need nothing, whatever would block a repair.
    if entra.immutable_id.is_some() && entra.immutable_id.as_deref() == okta_id {
        return (
            Verdict::Healthy,
            Fix::Nothing,
            "Entra and Okta hold the same ImmutableID; there is nothing to repair.".into(),
        );
    }
    if entra.sync_enabled {
        return outside(
            Verdict::SyncedFromAd,
            Refusal::Synced {
                upn: entra.upn.clone(),
            },
        );
    }
    if protected {
        return outside(
            Verdict::AdminTarget,
            Refusal::Protected {
                upn: entra.upn.clone(),
            },
        );
    }
    if !entra.roles.is_empty() && !policy.allow_admin_targets {
        let unnamed = entra
            .roles
            .iter()
            .filter(|r| *r == "(unnamed role)")
            .count();
        return outside(
            Verdict::AdminTarget,
            Refusal::DirectoryRole {
                roles: entra
                    .roles
                    .iter()
                    .filter(|r| *r != "(unnamed role)")
                    .cloned()
                    .collect(),
                unnamed,
            },
        );
    }
    let Some(app) = app else {
        return outside(
            Verdict::OktaAppUserMissing,
            Refusal::NotAssigned {
                upn: entra.upn.clone(),
            },
        );
    };
    if !okta.granting_groups.is_empty() || app.scope.eq_ignore_ascii_case("GROUP") {
        let groups = if okta.granting_groups.is_empty() {
            vec!["(a group assignment)".to_owned()]
        } else {
            okta.granting_groups.clone()
        };
        return outside(
            Verdict::AssignedThroughGroup,
            Refusal::GroupGranted { groups },
        );
    }
    let verdict = if entra.immutable_id.is_none() {
        Verdict::EntraMissingId
    } else {
        Verdict::Differ
    };
    // Okta's value is authoritative when a mapping fills it (Okta would overwrite any other),
    // or when it is set and valid: then Entra alone changes and Okta is not touched.
    match (okta_id, source) {
        (Some(v), _) if ImmutableId::parse_value(v).is_err() => {
            let problem = ImmutableId::parse_value(v)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            match source {
                IdSource::Mapped { .. } => outside(
                    verdict,
                    Refusal::InvalidOktaValue {
                        value: v.to_owned(),
                        problem,
                    },
                ),
                IdSource::SetByHand => (
                    verdict,
                    Fix::Full,
                    format!("Okta holds `{v}`, which Entra cannot take ({problem}): the full repair gives both systems a new value."),
                ),
            }
        }
        (Some(v), IdSource::Mapped { expression }) => (
            verdict,
            Fix::EntraOnly { value: v.to_owned() },
            format!("Okta fills immutableId from the mapping `{expression}`, so its value is authoritative: set Entra to {v} and touch nothing in Okta."),
        ),
        // The plan's own rule (`okta_value_to_keep`), so the fix offered is the one it plans.
        (Some(v), IdSource::SetByHand) => match app.external_id.as_deref() {
            Some(x) if x.eq_ignore_ascii_case(&entra.object_id) => (
                verdict,
                Fix::EntraOnly { value: v.to_owned() },
                format!("Okta already sends {v} on a direct assignment linked to this Entra user and no other Entra user holds it: set Entra to that value and touch nothing in Okta (no unassignment, no provisioning pause)."),
            ),
            Some(x) => (
                verdict,
                Fix::Full,
                format!("Okta's assignment is linked to another Entra object ({x}); only a reassignment links it to this user, so the full repair is needed."),
            ),
            None => (
                verdict,
                Fix::Full,
                "Okta's assignment is not linked to an Entra user yet (no externalId); only a reassignment links it, so the full repair is needed.".into(),
            ),
        },
        (None, IdSource::Mapped { expression }) => outside(
            verdict,
            Refusal::MappedButEmpty {
                expression: expression.clone(),
            },
        ),
        (None, IdSource::SetByHand) => (
            verdict,
            Fix::Full,
            "Okta holds no ImmutableID for the user, so neither side has a value to keep: the full repair sets a new one in both.".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entra(iid: Option<&str>) -> EntraSide {
        EntraSide {
            upn: "megan@contoso.com".into(),
            object_id: "8d2e0002-5a1c-4b7e-9f00-000000000002".into(),
            domain: "contoso.com".into(),
            authentication_type: Some("Federated".into()),
            immutable_id: iid.map(str::to_owned),
            sync_enabled: false,
            account_enabled: Some(true),
            assigned_licenses: 1,
            roles: Vec::new(),
        }
    }

    fn okta(iid: Option<&str>) -> OktaSide {
        OktaSide {
            login: "megan@contoso.com".into(),
            status: "ACTIVE".into(),
            app_user: Some(AppSide {
                scope: "USER".into(),
                status: "PROVISIONED".into(),
                sync_state: Some("SYNCHRONIZED".into()),
                external_id: Some("8d2e0002-5a1c-4b7e-9f00-000000000002".into()),
                immutable_id: iid.map(str::to_owned),
                licenses: Vec::new(),
            }),
            granting_groups: Vec::new(),
        }
    }

    fn judge_of(e: Option<&str>, o: Option<&str>, source: &IdSource) -> (Verdict, Fix) {
        let upn = Upn::parse("megan@contoso.com").unwrap();
        let (v, f, _) = judge(
            &upn,
            Some(&entra(e)),
            Some(&okta(o)),
            source,
            &RepairPolicy::default(),
            false,
        );
        (v, f)
    }

    #[test]
    fn okta_value_is_kept_only_on_an_assignment_linked_to_this_user() {
        let v = "zHX2NueB9U6o4l2UDtkEdQ==";
        assert_eq!(
            judge_of(None, Some(v), &IdSource::SetByHand),
            (Verdict::EntraMissingId, Fix::EntraOnly { value: v.into() })
        );
        let upn = Upn::parse("megan@contoso.com").unwrap();
        for linked in [None, Some("8d2e0009-5a1c-4b7e-9f00-000000000009")] {
            let mut o = okta(Some(v));
            o.app_user.as_mut().unwrap().external_id = linked.map(str::to_owned);
            let (verdict, fix, why) = judge(
                &upn,
                Some(&entra(Some("AAAAAAAAAAAAAAAAAAAAAA=="))),
                Some(&o),
                &IdSource::SetByHand,
                &RepairPolicy::default(),
                false,
            );
            assert_eq!((verdict, fix), (Verdict::Differ, Fix::Full), "{why}");
            assert!(why.contains("reassignment links"), "{why}");
        }
    }

    #[test]
    fn without_a_value_in_okta_only_the_full_repair_helps() {
        assert_eq!(
            judge_of(Some("zHX2NueB9U6o4l2UDtkEdQ=="), None, &IdSource::SetByHand),
            (Verdict::Differ, Fix::Full)
        );
    }

    #[test]
    fn a_value_entra_cannot_take_is_replaced_or_fixed_at_its_source() {
        assert_eq!(
            judge_of(None, Some("not base64!"), &IdSource::SetByHand),
            (Verdict::EntraMissingId, Fix::Full)
        );
        let mapped = IdSource::Mapped {
            expression: "user.o365ImmutableId".into(),
        };
        assert_eq!(
            judge_of(None, Some("not base64!"), &mapped),
            (Verdict::EntraMissingId, Fix::Outside)
        );
        assert_eq!(
            judge_of(Some("zHX2NueB9U6o4l2UDtkEdQ=="), None, &mapped),
            (Verdict::Differ, Fix::Outside),
            "mapped but empty: the source attribute must be filled in Okta"
        );
    }
}
