//! Why a plan is not made: refusals that tell the requester what is wrong and what to do, apart
//! from failures to read a service and internal errors.

use super::journal::ApiFailure;
use crate::domain::RunId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a repair is refused at plan time; each says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    DomainNotAllowed {
        domain: String,
        allowed: Vec<String>,
    },
    Protected {
        upn: String,
    },
    NotInEntra {
        upn: String,
    },
    DomainNotInTenant {
        domain: String,
    },
    Synced {
        upn: String,
    },
    DirectoryRole {
        /// Display names of the roles held, directly or through a group.
        roles: Vec<String>,
        /// Roles Graph returned without a name: the app may not read directory roles.
        #[serde(default)]
        unnamed: usize,
    },
    NotInOkta {
        upn: String,
    },
    NotAssigned {
        upn: String,
    },
    GroupGranted {
        groups: Vec<String>,
    },
    TemporaryUpnTaken {
        upn: String,
    },
    IdTaken {
        id: String,
        holder: String,
    },
    MappedButEmpty {
        expression: String,
    },
    MappedConflict {
        given: String,
        okta: String,
        expression: String,
    },
    InvalidOktaValue {
        value: String,
        problem: String,
    },
    NothingToDo {
        id: String,
    },
    /// Entra and Okta hold the same value and the requester asked for the smallest fix.
    AlreadyAgree {
        id: String,
    },
    /// The Entra-only fix was asked for (from a diagnosis) and no longer applies.
    EntraOnlyNotApplicable {
        why: String,
    },
    /// `mode:full` with a mapping that fills immutableId: Okta would overwrite the new value.
    MappedForbidsFull {
        expression: String,
    },
    ProvisioningUnavailable {
        detail: String,
    },
    AlreadyRunning {
        run: RunId,
    },
    NoInitialDomain,
    /// The app profile (licenses and roles above all) cannot go into the reassignment as held;
    /// the rules are in [`crate::directory::okta::CarryOverProblem`].
    ProfileNotCarried {
        problems: Vec<String>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::DomainNotAllowed { domain, allowed } => write!(
                f,
                "`{domain}` is not a domain this bot may repair (allowed: {}). Check the spelling, or ask an owner to add it to repair.allowed_domains.",
                allowed.join(", ")
            ),
            Refusal::Protected { upn } => write!(
                f,
                "{upn} is on the protected list; the bot never changes it. Fix it by hand with a second admin if it really needs it."
            ),
            Refusal::NotInEntra { upn } => write!(
                f,
                "{upn} does not exist in Entra ID. Check the spelling; if the user was never created in Office 365, this is a provisioning problem, not an ImmutableID one."
            ),
            Refusal::DomainNotInTenant { domain } => write!(
                f,
                "`{domain}` is not a verified domain of the Entra tenant."
            ),
            Refusal::Synced { upn } => write!(
                f,
                "{upn} is synced from on-premises AD (onPremisesSyncEnabled). Entra refuses changes to synced users: fix the source anchor in AD / Entra Connect instead."
            ),
            Refusal::DirectoryRole { roles, unnamed } => {
                let held = match (roles.as_slice(), unnamed) {
                    ([], n) => format!("{n} Entra directory role(s)"),
                    (names, 0) => format!("the Entra role(s) {}", names.join(", ")),
                    (names, n) => format!("the Entra role(s) {} and {n} more", names.join(", ")),
                };
                write!(
                    f,
                    "the user holds {held}, directly or through a group; the bot's app cannot change an admin's UPN or ImmutableID. Fix it by hand, or grant the app a privileged role and set repair.allow_admin_targets."
                )?;
                if *unnamed > 0 {
                    write!(
                        f,
                        " (Graph names a role only to an app granted RoleManagement.Read.Directory.)"
                    )?;
                }
                Ok(())
            }
            Refusal::NotInOkta { upn } => write!(
                f,
                "no Okta user has the login {upn}, and no Office 365 app user has that username. Check the spelling in Okta."
            ),
            Refusal::NotAssigned { upn } => write!(
                f,
                "{upn} is not assigned to the Office 365 app in Okta. Assign them (with the ImmutableID) instead of repairing."
            ),
            Refusal::GroupGranted { groups } => write!(
                f,
                "the user gets Office 365 through group(s) {}; Okta cannot unassign them while a group grants the app. Remove them from the group or fix the assignment by hand.",
                groups.join(", ")
            ),
            Refusal::TemporaryUpnTaken { upn } => write!(
                f,
                "the temporary UPN {upn} belongs to another user, so the UPN cannot be moved. Resolve the clash first."
            ),
            Refusal::IdTaken { id, holder } => write!(
                f,
                "the ImmutableID {id} already belongs to {holder}; ImmutableIDs must be unique in the tenant. Leave immutable_id empty to generate one."
            ),
            Refusal::MappedButEmpty { expression } => write!(
                f,
                "Okta fills immutableId from the mapping `{expression}`, and that value is empty for this user. Fill the source attribute in Okta first."
            ),
            Refusal::MappedConflict { given, okta, expression } => write!(
                f,
                "Okta fills immutableId from the mapping `{expression}` (value {okta}), so {given} would be ignored. Leave immutable_id empty to set Entra to Okta's value, or change the mapping."
            ),
            Refusal::InvalidOktaValue { value, problem } => write!(
                f,
                "Okta sends the ImmutableID `{value}`, which Entra cannot take: {problem}. Fix the source attribute in Okta."
            ),
            Refusal::NothingToDo { id } => write!(
                f,
                "Entra already holds {id}, the value Okta's mapping sends; there is nothing to repair."
            ),
            Refusal::AlreadyAgree { id } => write!(
                f,
                "Entra and Okta already hold the same ImmutableID {id}; there is nothing to repair. To re-link the user with a fresh value anyway, ask again with mode:full."
            ),
            Refusal::EntraOnlyNotApplicable { why } => write!(
                f,
                "the Entra-only fix no longer applies: {why} Run /diagnose again for the fix that does."
            ),
            Refusal::MappedForbidsFull { expression } => write!(
                f,
                "Okta fills immutableId from the mapping `{expression}`, so a new value would be overwritten by Okta's next push and mode:full cannot help. Leave mode out for the Entra-only repair to Okta's value, or change the mapping first."
            ),
            Refusal::ProvisioningUnavailable { detail } => write!(
                f,
                "Okta provisioning for the Office 365 app cannot be read or is not enabled ({detail}); the bot needs it to pause provisioning safely."
            ),
            Refusal::AlreadyRunning { run } => write!(
                f,
                "a repair for this user is already running (run {}). Wait for it to finish.",
                run.short()
            ),
            Refusal::NoInitialDomain => write!(
                f,
                "the tenant has no initial (onmicrosoft.com) domain to move the UPN to."
            ),
            Refusal::ProfileNotCarried { problems } => write!(
                f,
                "the user's Office 365 app profile cannot be carried over to the reassignment: {}. Reassigning without it would let Okta push other licenses and roles to Office 365 when provisioning resumes. Fix the app's profile in Okta's Profile Editor, or repair this user by hand.",
                problems.join("; ")
            ),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("could not read {service}: {failure}")]
    Unavailable {
        service: &'static str,
        failure: ApiFailure,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Refusal> for PlanError {
    fn from(r: Refusal) -> Self {
        PlanError::Refused(r)
    }
}
