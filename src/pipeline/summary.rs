//! The run's summary as a pure function of the journal, how each lane ended, and the final reads:
//! written once, after the last step, and never claiming more than was recorded or read.

use super::decide::{EntraEnd, OktaDone, OktaEnd, Provisioning, Record, Shape, Stranding, View};
use super::outcome::Verdict;
use super::report::{ProvisioningState, RunOutcome, RunSummary, StepKind};
use super::steps::Label;
use crate::domain::RunId;
use serde_json::Value;
use std::time::Duration;

/// What was read of both systems after the last step (`None`: not read, or the read failed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalReads {
    /// Entra's UPN and ImmutableID.
    pub entra: Option<(String, Option<String>)>,
    /// Okta's app user: `Some(None)` means not assigned; `Some(Some(id))` its ImmutableID.
    pub okta: Option<Option<Option<String>>>,
}

/// Everything the summary is computed from.
pub struct Inputs<'a> {
    pub run: RunId,
    pub shape: &'a Shape,
    pub entra_object: &'a str,
    pub okta_app: &'a str,
    /// The provisioning snapshot, for the PUT a person would send.
    pub snapshot: Option<&'a Value>,
    /// The app profile saved before the unassign, for the assign a person would send.
    pub saved_profile: &'a Value,
    pub records: &'a [Record],
    pub entra: &'a EntraEnd,
    pub okta: &'a OktaDone,
    pub reads: &'a FinalReads,
    pub duration: Duration,
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn show(v: Option<&str>) -> String {
    v.unwrap_or("<none>").to_owned()
}

/// What Entra holds, as far as the journal and the reads say.
fn entra_value(i: &Inputs<'_>, new_id: &str) -> (Option<String>, String) {
    let read = i.reads.entra.as_ref().map(|(_, id)| id.clone());
    let known: Option<Option<String>> = match i.entra {
        EntraEnd::Written { .. } => Some(Some(new_id.to_owned())),
        EntraEnd::Unchanged
        | EntraEnd::RolledBack
        | EntraEnd::Stale(_)
        | EntraEnd::NotReread(_)
        | EntraEnd::Parked => Some(i.shape.id_before.clone()),
        EntraEnd::BackWithoutId => Some(None),
        EntraEnd::Unexpected(v) => Some(Some(v.clone())),
        EntraEnd::Stranded(_) => None,
    };
    match (known, read) {
        (Some(k), Some(r)) if k != r => (
            k.clone(),
            format!(
                "Entra was sent {} (reads still show {}: replication lag)",
                show(k.as_deref()),
                show(r.as_deref())
            ),
        ),
        (Some(k), _) => (k.clone(), format!("Entra holds {}", show(k.as_deref()))),
        (None, Some(r)) => (
            r.clone(),
            format!(
                "Entra reads show {} (the last write's outcome is unknown)",
                show(r.as_deref())
            ),
        ),
        (None, None) => (None, "what Entra holds is unknown".to_owned()),
    }
}

/// What Okta holds.
fn okta_value(i: &Inputs<'_>) -> (Option<String>, String) {
    let before = i.shape.okta_id_before.clone();
    let read = i.reads.okta.clone();
    let known: Option<Option<String>> = match &i.okta.end {
        OktaEnd::NotNeeded
        | OktaEnd::Untouched
        | OktaEnd::NotPaused { .. }
        | OktaEnd::UnassignNotSent { .. }
        | OktaEnd::StillAssigned { .. }
        | OktaEnd::SavedProfile
        | OktaEnd::Parked => Some(before),
        OktaEnd::Assigned { seen } => Some(seen.clone()),
        OktaEnd::MayBeUnassigned => None,
    };
    match (known, read) {
        (_, Some(None)) => (
            None,
            "Okta has the user UNASSIGNED from Office 365".to_owned(),
        ),
        (Some(k), Some(Some(r))) if k != r => {
            (r.clone(), format!("Okta holds {}", show(r.as_deref())))
        }
        (Some(k), _) => (k.clone(), format!("Okta holds {}", show(k.as_deref()))),
        (None, Some(Some(r))) => (r.clone(), format!("Okta holds {}", show(r.as_deref()))),
        (None, None) => (
            None,
            "Okta may have the user UNASSIGNED from Office 365".to_owned(),
        ),
    }
}

/// What the link check's last read of the app user showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// `syncState` SYNCHRONIZED, status PROVISIONED or ACTIVE, `externalId` the Entra object.
    Confirmed,
    /// Anything short of that which Okta may still move on from (SYNCING, OUT_OF_SYNC, STAGED …).
    Pending,
    /// `syncState` ERROR: the spec says the provisioning task must be resolved in the Admin
    /// Console before Okta retries, so waiting longer changes nothing.
    SyncError,
    /// `externalId` names another Office 365 object.
    Elsewhere,
    /// No app user.
    NotAssigned,
    /// Nothing was read.
    NotRead,
}

impl LinkState {
    /// Whether reading again can be expected to show something else.
    pub(crate) fn settled(self) -> bool {
        !matches!(self, LinkState::Pending | LinkState::NotRead)
    }
}

/// Classifies a link-check read (`{found, status, syncState, externalId}`) against the Entra
/// object the app user must be linked to. Object ids compare case-insensitively: Graph and
/// Okta may spell a GUID differently.
pub(crate) fn link_state(read: &Value, entra_object: &str) -> LinkState {
    let field = |k: &str| read.get(k).and_then(Value::as_str);
    match read.get("found").and_then(Value::as_bool) {
        None => return LinkState::NotRead,
        Some(false) => return LinkState::NotAssigned,
        Some(true) => {}
    }
    let external = field("externalId").filter(|x| !x.is_empty());
    if external.is_some_and(|x| !x.eq_ignore_ascii_case(entra_object)) {
        return LinkState::Elsewhere;
    }
    match (field("syncState"), field("status")) {
        (Some("ERROR"), _) => LinkState::SyncError,
        (Some("SYNCHRONIZED"), Some("PROVISIONED" | "ACTIVE")) if external.is_some() => {
            LinkState::Confirmed
        }
        _ => LinkState::Pending,
    }
}

/// The link check's result, as a sentence, and what a person must do about it (if anything).
fn link_text(i: &Inputs<'_>) -> Option<(String, Option<String>)> {
    let Some(r) = i.records.iter().rev().find(|r| r.label == Label::LinkCheck) else {
        let skipped = crate::pipeline::decide::reassigned(&i.okta.end)
            && matches!(
                i.okta.provisioning,
                Provisioning::Left {
                    restored: false,
                    ..
                }
            );
        return skipped.then(|| {
            (
                "the link to Office 365 was not checked: provisioning stays paused until the other runs finish".to_owned(),
                None,
            )
        });
    };
    let read = &r.result;
    let shown = |k: &str| show(read.get(k).and_then(Value::as_str));
    let state = format!(
        "status {}, syncState {}, externalId {}",
        shown("status"),
        shown("syncState"),
        shown("externalId")
    );
    let upn = &i.shape.upn;
    Some(match link_state(read, i.entra_object) {
        LinkState::Confirmed => (format!("Okta confirmed the link ({state})"), None),
        LinkState::Pending => (format!("Okta has not synced yet (state {state})"), None),
        LinkState::SyncError => (
            format!("Okta's push to Office 365 failed ({state})"),
            Some(format!(
                "resolve the Office 365 provisioning task for {upn} in Okta's Admin Console"
            )),
        ),
        LinkState::Elsewhere => (
            format!(
                "Okta linked the app user to another Office 365 object ({state}; the Entra user is {})",
                i.entra_object
            ),
            Some(format!(
                "check which Office 365 user Okta's app user for {upn} is linked to"
            )),
        ),
        LinkState::NotAssigned => (
            "the link check found no Office 365 app user in Okta".to_owned(),
            None,
        ),
        LinkState::NotRead => (
            format!(
                "the link to Office 365 could not be checked ({})",
                read.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no read was made within the window")
            ),
            None,
        ),
    })
}

fn provisioning_state(p: &Provisioning) -> ProvisioningState {
    match p {
        Provisioning::Untouched => ProvisioningState::Untouched,
        Provisioning::Left { restored: true, .. } => ProvisioningState::Restored,
        Provisioning::Left {
            restored: false,
            others,
        } => ProvisioningState::HeldByOthers(*others),
        Provisioning::NotRestored => ProvisioningState::StillPaused,
    }
}

fn provisioning_text(p: &Provisioning) -> &'static str {
    match p {
        Provisioning::Untouched => "provisioning was not paused",
        Provisioning::Left { restored: true, .. } => {
            "provisioning was paused and restored exactly as before"
        }
        Provisioning::Left {
            restored: false, ..
        } => {
            "provisioning was paused; other runs still hold the pause and the last one out restores it"
        }
        Provisioning::NotRestored => "provisioning is STILL PAUSED",
    }
}

/// The first step that did not go as planned.
fn failed_step(i: &Inputs<'_>) -> Option<StepKind> {
    let from_records = i
        .records
        .iter()
        .find(|r| r.verdict != Verdict::Ok && !r.died && r.label != Label::Restart)
        .and_then(|r| r.label.step());
    from_records.or(match (i.entra, &i.okta.end) {
        (EntraEnd::Unexpected(_), _) => Some(StepKind::VerifyEntra),
        (_, OktaEnd::UnassignNotSent { .. }) => Some(StepKind::Unassign),
        (_, OktaEnd::Assigned { .. }) if !matches!(i.okta.end, OktaEnd::Assigned { ref seen } if seen.as_deref() == Some(View::new(i.records).current_id(i.shape).as_str())) => {
            Some(StepKind::VerifyOkta)
        }
        _ => None,
    })
}

/// The summary. Pure.
pub fn summarize(i: &Inputs<'_>) -> RunSummary {
    let view = View::new(i.records);
    let new_id = view.current_id(i.shape);
    let (entra_id, entra_text) = entra_value(i, &new_id);
    let (okta_id, okta_text) = okta_value(i);
    let prov = &i.okta.provisioning;
    let mut actions: Vec<String> = Vec::new();
    let upn = &i.shape.upn;
    let patch_json = |id: &str| {
        let upn_part = if i.shape.temporary_upn.is_some() {
            format!(",\"userPrincipalName\":\"{upn}\"")
        } else {
            String::new()
        };
        format!(
            "PATCH /users/{} {{\"onPremisesImmutableId\":\"{id}\"{upn_part}}}",
            i.entra_object
        )
    };

    let mut outcome;
    let mut head;
    match i.entra {
        EntraEnd::Stranded(s) => {
            outcome = RunOutcome::NeedsAttention;
            let (where_, id) = match s {
                Stranding::OnTemporaryUpn { id_to_send } => (
                    format!(
                        "{upn} (object {}) is on the temporary UPN {}: Graph refused both the new ImmutableID and the move back without one, so this is the one safe place left",
                        i.entra_object,
                        show(i.shape.temporary_upn.as_deref())
                    ),
                    id_to_send,
                ),
                Stranding::MayBeOnTemporaryUpn { id_to_send } => (
                    format!(
                        "{upn} (object {}) may be on the temporary UPN {}",
                        i.entra_object,
                        show(i.shape.temporary_upn.as_deref())
                    ),
                    id_to_send,
                ),
                Stranding::IdUnknown { id_to_send } => (
                    format!(
                        "{upn} (object {}) may or may not hold ImmutableID {id_to_send}",
                        i.entra_object
                    ),
                    id_to_send,
                ),
            };
            head = format!(
                "ACTION NEEDED: the Entra change could not be completed or undone; {where_}"
            );
            actions.push(format!("in Graph send {}", patch_json(id)));
        }
        EntraEnd::Parked => {
            outcome = RunOutcome::Parked;
            head = "the bot is stopping, and this run had not written anything yet: it runs when the bot starts again".to_owned();
        }
        EntraEnd::Stale(change) => {
            outcome = RunOutcome::Stale;
            head = format!("the plan is stale ({change}); nothing was written. Run the command again for a new plan");
        }
        EntraEnd::NotReread(why) => {
            outcome = RunOutcome::NotExecuted;
            head =
                format!("could not re-read the user before executing ({why}); nothing was written");
        }
        EntraEnd::Unchanged => {
            outcome = RunOutcome::RolledBack;
            head = "Entra refused the first change, so nothing was changed in Entra".to_owned();
        }
        EntraEnd::RolledBack => {
            outcome = RunOutcome::RolledBack;
            head = format!(
                "every Entra change was undone: {upn} is on its UPN with ImmutableID {}",
                show(i.shape.id_before.as_deref())
            );
        }
        EntraEnd::BackWithoutId => {
            outcome = RunOutcome::RolledBack;
            head = format!(
                "Entra refused the new ImmutableID; {upn} was moved back to its UPN and still has no ImmutableID"
            );
        }
        EntraEnd::Unexpected(v) => {
            outcome = RunOutcome::Diverged;
            head = format!(
                "Entra shows ImmutableID {v}, which this run did not write: someone else changed the user; Okta's assignment was not touched"
            );
        }
        EntraEnd::Written { lagging } => {
            let retried = i
                .records
                .iter()
                .any(|r| r.verdict != Verdict::Ok && !r.died)
                || view.restarted();
            match &i.okta.end {
                OktaEnd::Parked => {
                    outcome = RunOutcome::Parked;
                    head = format!(
                        "the bot is stopping: Entra was sent {new_id}, and the run stopped before the Okta half; it resumes when the bot starts again"
                    );
                }
                OktaEnd::NotNeeded => {
                    outcome = RunOutcome::Repaired;
                    head = format!(
                        "Entra now holds {new_id}, the value Okta already sends. Ask {upn} to sign in"
                    );
                }
                OktaEnd::Assigned { seen } if seen.as_deref() == Some(new_id.as_str()) => {
                    outcome = RunOutcome::Repaired;
                    head = format!("Entra and Okta both hold {new_id}. Ask {upn} to sign in");
                }
                OktaEnd::Assigned { seen } => {
                    outcome = RunOutcome::Diverged;
                    head = format!(
                        "Okta assigned the user but holds {} instead of {new_id} (a profile mapping may override it)",
                        show(seen.as_deref())
                    );
                    actions.push(format!(
                        "make Okta's mapping send {new_id}, or run the command again with immutable_id {}",
                        show(seen.as_deref())
                    ));
                }
                OktaEnd::SavedProfile => {
                    outcome = RunOutcome::Diverged;
                    head = "Okta would not take the new value, so the saved profile was assigned again".to_owned();
                    actions.push(format!(
                        "run the command again with immutable_id {new_id} to make Okta match"
                    ));
                }
                OktaEnd::MayBeUnassigned => {
                    outcome = RunOutcome::NeedsAttention;
                    head =
                        format!("ACTION NEEDED: {upn} may be UNASSIGNED from Office 365 in Okta");
                    actions.push(format!(
                        "assign them in Okta (POST /api/v1/apps/{}/users) with immutableId {new_id} and the saved profile {}",
                        i.okta_app, i.saved_profile
                    ));
                }
                OktaEnd::StillAssigned { code } => {
                    outcome = RunOutcome::Diverged;
                    head = format!(
                        "Okta refused the unassign ({}), so the user is still assigned with the old value",
                        show(code.as_deref())
                    );
                    actions.push(format!(
                        "run the command again with immutable_id {new_id} to make Okta match"
                    ));
                }
                OktaEnd::UnassignNotSent { deactivate_on } => {
                    outcome = RunOutcome::Diverged;
                    head = if *deactivate_on {
                        "Deactivate was switched on in Okta during the run; unassigning would have deprovisioned the user, so the unassign was not sent".to_owned()
                    } else {
                        "Deactivate could not be re-read right before the unassign, so the unassign was not sent".to_owned()
                    };
                    actions.push(format!(
                        "run the command again with immutable_id {new_id} to make Okta match"
                    ));
                }
                OktaEnd::NotPaused { code } => {
                    outcome = RunOutcome::Diverged;
                    head = format!(
                        "provisioning could not be paused ({}), so Okta was not touched",
                        show(code.as_deref())
                    );
                    actions.push(format!(
                        "run the command again with immutable_id {new_id} to make Okta match"
                    ));
                }
                OktaEnd::Untouched => {
                    outcome = RunOutcome::Diverged;
                    head = "the Okta half did not run".to_owned();
                }
            }
            if outcome == RunOutcome::Repaired && retried {
                outcome = RunOutcome::RepairedAfterRollForward;
                head = if view.restarted() {
                    format!("completed after a restart: {head}")
                } else {
                    format!("a step failed and the run rolled forward: {head}")
                };
            }
            if *lagging && outcome != RunOutcome::Diverged {
                head.push_str(" (Entra reads were still catching up; they converge on their own)");
            }
        }
    }
    if let Provisioning::NotRestored = prov {
        outcome = RunOutcome::NeedsAttention;
        actions.push(format!(
            "restore Okta provisioning: PUT /api/v1/apps/{}/features/USER_PROVISIONING with {} (the bot keeps retrying meanwhile)",
            i.okta_app,
            i.snapshot.map(ToString::to_string).unwrap_or_else(|| "the capabilities it had".into())
        ));
    }
    let mut message = format!(
        "{head}. Now {entra_text}, {okta_text}; {}.",
        provisioning_text(prov)
    );
    if let Some((text, action)) = link_text(i) {
        message.push_str(&format!(" {}.", capitalize(&text)));
        actions.extend(action);
    }
    if !actions.is_empty() {
        message.push_str(&format!(" To do: {}.", actions.join("; then ")));
    }
    RunSummary {
        run: i.run,
        upn: upn.clone(),
        outcome,
        entra_immutable_id: entra_id,
        okta_immutable_id: okta_id,
        provisioning: provisioning_state(prov),
        failed_step: if matches!(outcome, RunOutcome::Repaired) {
            None
        } else {
            failed_step(i)
        },
        message,
        duration: i.duration,
        audit_head: None,
    }
}
