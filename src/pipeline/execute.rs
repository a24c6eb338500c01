//! The nine steps, in the seed's order, with compensation: inverses in reverse order where a
//! rollback exists, roll-forward where it does not, and the provisioning pause always left.

use super::capabilities::{deactivate_enabled, describe};
use super::journal::{ApiFailure, Journal};
use super::pause::{Left, PauseError};
use super::plan::{fresh_unique_id, stale_check, Plan, RepairMode};
use super::report::{
    Phase, ProvisioningState, Reporter, RunEvent, RunOutcome, RunSummary, StepKind, StepOutcome,
    StepReport,
};
use super::Inner;
use crate::directory::graph::UserPatch;
use crate::directory::okta::{AppUserCredentials, AssignAppUser};
use crate::domain::ImmutableId;
use crate::store::JournalEntry;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One PATCH of the user, as journalled and reported.
struct EntraWrite {
    step: StepKind,
    phase: Phase,
    /// Journal label: the step number, or `undo-N`, or `settle`.
    label: String,
    patch: UserPatch,
    before: String,
    after: String,
}

/// How the Entra half ended.
enum EntraEnd {
    /// Entra holds the new value (maybe still lagging in reads).
    Done,
    /// The first write was refused: nothing changed.
    Unchanged,
    /// Undone: Entra is as it was.
    RolledBack,
    /// Someone else wrote a third value meanwhile.
    Unexpected(String),
    /// A compensation or roll-forward failed: a human must act.
    Stranded(String),
}

pub(crate) struct Runner<'a> {
    ctx: &'a Inner,
    plan: &'a Plan,
    reporter: &'a Reporter,
    journal: Journal,
    started: Instant,
    new_id: ImmutableId,
    entra_now: Option<String>,
    okta_now: Option<String>,
    failed_step: Option<StepKind>,
    rolled_forward: bool,
    lag_notes: Vec<String>,
    provisioning: ProvisioningState,
    /// Settling a run the process died in: every write is a roll-forward.
    resumed: bool,
}

/// Runs an approved plan to its end and reports every step. Never panics on API failures.
pub(crate) async fn execute(ctx: &Inner, plan: &Plan, reporter: &Reporter) -> RunSummary {
    let started = Instant::now();
    let run = plan.run;
    let not_executed = |outcome: RunOutcome, message: String| RunSummary {
        run,
        upn: plan.upn.to_string(),
        outcome,
        entra_immutable_id: plan.entra_immutable_id_before.clone(),
        okta_immutable_id: plan.okta_immutable_id_before().map(str::to_owned),
        provisioning: ProvisioningState::Untouched,
        failed_step: None,
        message,
        duration: started.elapsed(),
    };
    let _lock = match ctx.locks.try_lock(&plan.entra_id, &plan.upn, run) {
        Ok(lock) => lock,
        Err(holder) => {
            let s = not_executed(
                RunOutcome::NotExecuted,
                format!(
                    "a repair for {} is already running (run {}); nothing was done",
                    plan.upn,
                    holder.short()
                ),
            );
            reporter.send(RunEvent::Finished(s.clone()));
            return s;
        }
    };
    // The single atomic state change that makes execution happen at most once per run.
    match ctx.store.transition_run(
        &run.to_string(),
        &[crate::domain::RunState::Approved],
        crate::domain::RunState::Running,
    ) {
        Ok(true) => {}
        Ok(false) => {
            let s = not_executed(
                RunOutcome::NotExecuted,
                "the run is not approved, or it has already been executed".into(),
            );
            reporter.send(RunEvent::Finished(s.clone()));
            return s;
        }
        Err(e) => {
            let s = not_executed(
                RunOutcome::NotExecuted,
                format!("the store is unavailable, so nothing was done: {e:#}"),
            );
            reporter.send(RunEvent::Finished(s.clone()));
            return s;
        }
    }
    reporter.send(RunEvent::Started { run });

    let summary = match stale_check(ctx, plan).await {
        Ok(None) => {
            if plan.mode == RepairMode::Full {
                ctx.pause.expect(run).await;
            }
            let mut runner = Runner::new(ctx, plan, reporter, started, false);
            runner.run().await
        }
        Ok(Some(change)) => not_executed(
            RunOutcome::Stale,
            format!("the plan is stale ({change}); nothing was written. Run the command again for a new plan."),
        ),
        Err(e) => not_executed(
            RunOutcome::NotExecuted,
            format!("could not re-read the user before executing ({e}); nothing was written"),
        ),
    };
    conclude(ctx, summary, reporter)
}

/// Counts, stores and announces a run's outcome.
fn conclude(ctx: &Inner, summary: RunSummary, reporter: &Reporter) -> RunSummary {
    crate::ops::metrics::metrics()
        .runs
        .get_or_create(&crate::ops::metrics::OutcomeLabels {
            outcome: summary.outcome.state().as_str().to_owned(),
        })
        .inc();
    let record = serde_json::to_value(&summary).unwrap_or(Value::Null);
    if let Err(e) =
        ctx.store
            .set_run_summary(&summary.run.to_string(), summary.outcome.state(), &record)
    {
        tracing::error!(run = %summary.run, error = %format!("{e:#}"), "could not store the run summary");
    }
    reporter.send(RunEvent::Finished(summary.clone()));
    summary
}

/// Settles a run the process died in, from its journal and the stored pause. Unrecorded writes
/// are never judged from a read (Graph reads lag): the write or its inverse is re-sent instead,
/// which is safe because every write here is idempotent.
pub(crate) async fn resume(
    ctx: &Inner,
    plan: &Plan,
    journal: &[JournalEntry],
    reporter: &Reporter,
) -> RunSummary {
    let run = plan.run;
    let _lock = ctx.locks.try_lock(&plan.entra_id, &plan.upn, run);
    let last = journal.iter().rev().find_map(|j| {
        j.step
            .split('-')
            .next_back()
            .and_then(|n| n.parse::<u8>().ok())
    });
    let holds_pause = ctx
        .store
        .pause(ctx.okta.app_id())
        .ok()
        .flatten()
        .filter(|p| p.holders.contains(&run.to_string()));
    let note = match last {
        Some(n) => format!("the bot restarted during step {n}; settling the run from its journal"),
        None => "the bot restarted before this run's first write".to_owned(),
    };
    reporter.send(RunEvent::Note {
        run,
        text: note.clone(),
    });
    let _ = ctx.store.audit(
        Some(&run.to_string()),
        "recovery",
        None,
        &json!({ "note": note }),
    );
    if let Err(e) = ctx.store.journal_mark_unknown(&run.to_string()) {
        tracing::error!(run = %run, error = %format!("{e:#}"), "could not mark unrecorded outcomes");
    }

    let mut runner = Runner::new(ctx, plan, reporter, Instant::now(), true);
    // A fresh value drawn during a roll-forward supersedes the plan's.
    if let Some(id) = journal
        .iter()
        .filter(|j| j.step == StepKind::SetImmutableId.label())
        .filter_map(|j| {
            j.intended
                .get("onPremisesImmutableId")
                .and_then(Value::as_str)
        })
        .next_back()
        .and_then(|v| ImmutableId::parse_value(v).ok())
    {
        runner.new_id = id;
    }
    let summary = runner
        .settle(journal, holds_pause.map(|p| p.snapshot))
        .await;
    conclude(ctx, summary, reporter)
}

impl<'a> Runner<'a> {
    fn new(
        ctx: &'a Inner,
        plan: &'a Plan,
        reporter: &'a Reporter,
        started: Instant,
        resumed: bool,
    ) -> Self {
        Runner {
            ctx,
            plan,
            reporter,
            journal: Journal::new(ctx.store.clone()),
            started,
            new_id: plan.new_immutable_id.clone(),
            entra_now: plan.entra_immutable_id_before.clone(),
            okta_now: plan.okta_immutable_id_before().map(str::to_owned),
            failed_step: None,
            rolled_forward: false,
            lag_notes: Vec::new(),
            provisioning: ProvisioningState::Untouched,
            resumed,
        }
    }

    async fn settle(&mut self, journal: &[JournalEntry], paused: Option<Value>) -> RunSummary {
        let plan = self.plan;
        let ok = |j: &&JournalEntry| j.outcome.as_deref() == Some("ok");
        let entra_writes = journal
            .iter()
            .filter(|j| j.api == "graph.update_user")
            .count();
        let compensating = journal.iter().any(|j| j.step.starts_with("undo-"));
        let entra_done = journal.iter().filter(ok).any(|j| {
            j.api == "graph.update_user"
                && (j.step == StepKind::UpnBack.label()
                    || j.step == "settle"
                    || (!plan.federated && j.step == StepKind::SetImmutableId.label()))
        });
        let okta_touched = journal.iter().any(|j| j.api.starts_with("okta."));
        if entra_writes == 0 && paused.is_none() && !okta_touched {
            return self.summary(
                RunOutcome::RolledBack,
                "the bot restarted before the first write; nothing was changed. Run the command again if the repair is still needed.".into(),
            );
        }
        if compensating {
            // The run was undoing its Entra half: finish undoing it.
            let old = plan.entra_immutable_id_before.clone().unwrap_or_default();
            return match self.settle_entra(&old).await {
                Ok(()) => {
                    self.entra_now = plan.entra_immutable_id_before.clone();
                    self.summary(
                        RunOutcome::RolledBack,
                        format!("the interrupted rollback was completed: {} is back on its UPN with ImmutableID {old}; Okta was not touched.", plan.upn),
                    )
                }
                Err(f) => self.summary(
                    RunOutcome::NeedsAttention,
                    self.stranded_message(StepKind::SetImmutableId, &f),
                ),
            };
        }
        self.rolled_forward = true;
        if !entra_done {
            let target = self.new_id.to_string();
            if let Err(f) = self.settle_entra(&target).await {
                if let Some(snapshot) = &paused {
                    self.leave_after_restart(snapshot).await;
                }
                return self.summary(
                    RunOutcome::NeedsAttention,
                    self.stranded_message(StepKind::SetImmutableId, &f),
                );
            }
        }
        self.entra_now = Some(self.new_id.to_string());
        if let EntraEnd::Unexpected(v) = self.verify_entra().await {
            if let Some(snapshot) = &paused {
                self.leave_after_restart(snapshot).await;
            }
            return self.summary(
                RunOutcome::Diverged,
                format!("Entra shows ImmutableID {v}, which this run did not write."),
            );
        }
        if plan.mode == RepairMode::EntraOnly {
            self.okta_now = Some(self.new_id.to_string());
            return self.finish_success();
        }
        let unassign_sent = journal.iter().any(|j| j.api == "okta.unassign");
        let new_assigned = journal.iter().filter(ok).any(|j| {
            j.api == "okta.assign"
                && j.intended
                    .pointer("/profile/immutableId")
                    .and_then(Value::as_str)
                    == Some(self.new_id.as_str())
        });
        match paused {
            Some(snapshot) => {
                let from = if !unassign_sent {
                    StepKind::Unassign
                } else if !new_assigned {
                    StepKind::Reassign
                } else {
                    StepKind::VerifyOkta
                };
                self.okta_window(&snapshot, from).await
            }
            // Not in a pause: either the Okta half never started, or it had left already.
            None if !unassign_sent => self.okta_half().await,
            None if new_assigned => {
                self.okta_now = Some(self.new_id.to_string());
                match self.verify_okta().await {
                    Ok(()) => self.finish_success(),
                    Err(s) => s,
                }
            }
            None => self.okta_half_from(StepKind::Reassign).await,
        }
    }

    /// Brings Entra to `target` on the original UPN from any point of steps 1–3: for a federated
    /// user, the UPN to the initial domain again, then the ID and the UPN back in one PATCH.
    async fn settle_entra(&mut self, target: &str) -> Result<(), ApiFailure> {
        let plan = self.plan;
        let attempts = self.ctx.policy.compensation_attempts;
        if let Some(temp) = &plan.temporary_upn {
            let first = EntraWrite {
                step: StepKind::UpnToTemporary,
                phase: Phase::RollForward,
                label: "settle-1".into(),
                patch: UserPatch {
                    user_principal_name: Some(temp.to_string()),
                    ..Default::default()
                },
                before: "unknown (restart)".into(),
                after: temp.to_string(),
            };
            self.patch_user(first, attempts).await?;
        }
        let back = EntraWrite {
            step: StepKind::UpnBack,
            phase: Phase::RollForward,
            label: "settle".into(),
            patch: UserPatch {
                on_premises_immutable_id: Some(target.to_owned()),
                user_principal_name: plan.temporary_upn.as_ref().map(|_| plan.upn.to_string()),
            },
            before: "unknown (restart)".into(),
            after: format!("{} / {target}", plan.upn),
        };
        self.patch_user(back, attempts).await
    }

    /// Leaves a pause the run held when the process died, restoring it when last out.
    async fn leave_after_restart(&mut self, snapshot: &Value) {
        match self.ctx.pause.leave(self.plan.run).await {
            Ok(Left::Restored) => self.provisioning = ProvisioningState::Restored,
            Ok(Left::HeldByOthers(n)) | Ok(Left::Lingering(n)) => {
                self.provisioning = ProvisioningState::HeldByOthers(n)
            }
            Err(e) => {
                tracing::error!(error = %e, snapshot = %snapshot, "restoring provisioning after a restart failed");
                self.provisioning = ProvisioningState::StillPaused;
            }
        }
    }

    /// Joins a fresh pause and runs the Okta steps from `from`.
    async fn okta_half_from(&mut self, from: StepKind) -> RunSummary {
        match self.ctx.pause.join(self.plan.run).await {
            Ok(joined) => self.okta_window(&joined.snapshot, from).await,
            Err(e) => self.summary(
                RunOutcome::NeedsAttention,
                format!(
                    "ACTION NEEDED: {} may be unassigned from Office 365 in Okta and provisioning could not be paused to reassign them ({e}). Assign them in Okta with ImmutableID {}.",
                    self.plan.upn, self.new_id
                ),
            ),
        }
    }

    async fn run(&mut self) -> RunSummary {
        let end = self.entra_half().await;
        let full = self.plan.mode == RepairMode::Full;
        let okta_steps = &StepKind::ALL[4..];
        match end {
            EntraEnd::Done => {}
            other => {
                if full {
                    self.unexpect().await;
                }
                for s in okta_steps {
                    self.skip(*s, "not started: the Entra half did not complete");
                }
                return match other {
                    EntraEnd::Unchanged => self.summary(
                        RunOutcome::RolledBack,
                        "Entra refused the first change; nothing was changed in either system.".into(),
                    ),
                    EntraEnd::RolledBack => self.summary(
                        RunOutcome::RolledBack,
                        format!(
                            "every Entra change was undone: {} is back on its UPN with ImmutableID {}; Okta was not touched.",
                            self.plan.upn,
                            show(&self.entra_now)
                        ),
                    ),
                    EntraEnd::Unexpected(v) => self.summary(
                        RunOutcome::Diverged,
                        format!(
                            "Entra now shows ImmutableID {v}, which this run did not write: someone else changed the user. Okta was not touched (it holds {}). Look at the user before running again.",
                            show(&self.okta_now)
                        ),
                    ),
                    EntraEnd::Stranded(what) => self.summary(RunOutcome::NeedsAttention, what),
                    EntraEnd::Done => unreachable!("handled above"),
                };
            }
        }
        if !full {
            for s in okta_steps {
                self.skip(
                    *s,
                    "Okta already sends this value through its immutableId mapping",
                );
            }
            self.okta_now = Some(self.new_id.to_string());
            return self.finish_success();
        }
        self.okta_half().await
    }

    // --- Entra -------------------------------------------------------------------------------

    async fn entra_half(&mut self) -> EntraEnd {
        let plan = self.plan;
        let had_id = plan.entra_immutable_id_before.is_some();
        let mut writes = Vec::new();
        match &plan.temporary_upn {
            Some(_) => writes.extend([
                StepKind::UpnToTemporary,
                StepKind::SetImmutableId,
                StepKind::UpnBack,
            ]),
            None => {
                self.skip(StepKind::UpnToTemporary, "managed domain: the UPN can stay");
                writes.push(StepKind::SetImmutableId);
            }
        }
        let mut phase = Phase::Forward;
        let mut i = 0;
        while i < writes.len() {
            let step = writes[i];
            let attempts = if phase == Phase::Forward {
                1
            } else {
                self.ctx.policy.compensation_attempts.max(1)
            };
            match self.entra_write(step, phase, attempts).await {
                Ok(()) => {
                    i += 1;
                    if plan.temporary_upn.is_none() {
                        self.skip(StepKind::UpnBack, "managed domain: the UPN did not move");
                    }
                }
                Err(f) => {
                    if phase == Phase::RollForward {
                        return EntraEnd::Stranded(self.stranded_message(step, &f));
                    }
                    self.failed_step = Some(step);
                    if f.definitive && i == 0 {
                        return EntraEnd::Unchanged;
                    }
                    if had_id {
                        return self.rollback_entra(step).await;
                    }
                    // No ImmutableID before: Graph cannot clear one, and a federated UPN needs
                    // one, so the only safe way out is forward.
                    phase = Phase::RollForward;
                    self.rolled_forward = true;
                    if step == StepKind::SetImmutableId
                        && f.message
                            .contains("same value for property onPremisesImmutableId")
                    {
                        if let Ok(id) = fresh_unique_id(self.ctx).await {
                            self.new_id = id;
                        }
                    }
                }
            }
        }
        self.verify_entra().await
    }

    fn entra_patch(&self, step: StepKind) -> (UserPatch, String, String) {
        let plan = self.plan;
        let original = plan.upn.to_string();
        let temp = plan
            .temporary_upn
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        match step {
            StepKind::UpnToTemporary => (
                UserPatch {
                    user_principal_name: Some(temp.clone()),
                    ..Default::default()
                },
                original,
                temp,
            ),
            StepKind::UpnBack => (
                UserPatch {
                    user_principal_name: Some(original.clone()),
                    ..Default::default()
                },
                temp,
                original,
            ),
            _ => (
                UserPatch {
                    on_premises_immutable_id: Some(self.new_id.to_string()),
                    ..Default::default()
                },
                show(&self.entra_now),
                self.new_id.to_string(),
            ),
        }
    }

    /// One forward (or roll-forward) Entra write.
    async fn entra_write(
        &mut self,
        step: StepKind,
        phase: Phase,
        attempts: u32,
    ) -> Result<(), ApiFailure> {
        let (patch, before, after) = self.entra_patch(step);
        let write = EntraWrite {
            step,
            phase,
            label: step.label(),
            patch,
            before,
            after,
        };
        self.patch_user(write, attempts).await?;
        if step == StepKind::SetImmutableId {
            self.entra_now = Some(self.new_id.to_string());
        }
        Ok(())
    }

    /// A journalled PATCH of the user, retried `attempts` times with backoff, reported once.
    #[tracing::instrument(name = "step", skip_all, fields(step = w.step.number(), phase = ?w.phase))]
    async fn patch_user(&mut self, w: EntraWrite, attempts: u32) -> Result<(), ApiFailure> {
        let t0 = Instant::now();
        let mut request_ids = Vec::new();
        let intended = serde_json::to_value(&w.patch).unwrap_or_default();
        let before = json!(w.before);
        let res = retrying(
            attempts,
            self.ctx.policy.compensation_backoff,
            &mut request_ids,
            || {
                self.journal.write(
                    self.plan.run,
                    &w.label,
                    "graph.update_user",
                    self.plan.entra_id.as_str(),
                    &before,
                    &intended,
                    || self.ctx.graph.update_user(&self.plan.entra_id, &w.patch),
                )
            },
        )
        .await;
        let outcome = match &res {
            Ok(()) => StepOutcome::Done,
            Err(f) if w.phase == Phase::Forward => failed(f),
            Err(f) => StepOutcome::NeedsHuman(self.stranded_message(w.step, f)),
        };
        self.report(w.step, w.phase, outcome, w.before, w.after, t0, request_ids);
        res
    }

    /// A real rollback exists (the user had an ImmutableID): undo steps 2 and 1 in one PATCH.
    async fn rollback_entra(&mut self, failed: StepKind) -> EntraEnd {
        let plan = self.plan;
        let old = plan.entra_immutable_id_before.clone().unwrap_or_default();
        let patch = match (failed, plan.federated) {
            // Only the UPN may have moved; the ImmutableID was not touched.
            (StepKind::UpnToTemporary, _) => UserPatch {
                user_principal_name: Some(plan.upn.to_string()),
                ..Default::default()
            },
            (_, true) => UserPatch {
                on_premises_immutable_id: Some(old.clone()),
                user_principal_name: Some(plan.upn.to_string()),
            },
            (_, false) => UserPatch {
                on_premises_immutable_id: Some(old.clone()),
                ..Default::default()
            },
        };
        let before = format!(
            "{} / {}",
            plan.temporary_upn
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| plan.upn.to_string()),
            show(&self.entra_now)
        );
        let after = format!("{} / {old}", plan.upn);
        let write = EntraWrite {
            step: failed,
            phase: Phase::Compensation,
            label: format!("undo-{}", failed.label()),
            patch,
            before,
            after,
        };
        match self
            .patch_user(write, self.ctx.policy.compensation_attempts)
            .await
        {
            Ok(()) => {
                self.entra_now = plan.entra_immutable_id_before.clone();
                EntraEnd::RolledBack
            }
            Err(f) => EntraEnd::Stranded(self.stranded_message(failed, &f)),
        }
    }

    fn stranded_message(&self, step: StepKind, f: &ApiFailure) -> String {
        let plan = self.plan;
        let id = plan
            .entra_immutable_id_before
            .clone()
            .unwrap_or_else(|| self.new_id.to_string());
        format!(
            "ACTION NEEDED: step {} could not be completed or undone ({}). {} (object {}) may be on the temporary UPN {}. In Graph run: PATCH /users/{} {{\"onPremisesImmutableId\":\"{}\",\"userPrincipalName\":\"{}\"}} — then check Okta provisioning is unchanged.",
            step.number(),
            f.message,
            plan.upn,
            plan.entra_id,
            plan.temporary_upn.as_ref().map(ToString::to_string).unwrap_or_else(|| "(none)".into()),
            plan.entra_id,
            id,
            plan.upn
        )
    }

    #[tracing::instrument(name = "step", skip_all, fields(step = 4))]
    async fn verify_entra(&mut self) -> EntraEnd {
        let t0 = Instant::now();
        let policy = &self.ctx.policy;
        let want = self.new_id.to_string();
        let original = self.plan.upn.to_string();
        let mut seen = String::from("<not read>");
        let mut ids = Vec::new();
        for attempt in 1..=policy.verify_attempts {
            match self.ctx.graph.user_by_id(&self.plan.entra_id).await {
                Ok(r) => {
                    ids.extend(r.request_id);
                    if let Some(u) = r.value {
                        let id = u.on_premises_immutable_id.clone();
                        seen = format!("{} / {}", u.user_principal_name, show(&id));
                        let upn_ok = u.user_principal_name.eq_ignore_ascii_case(&original);
                        if id.as_deref() == Some(want.as_str()) && upn_ok {
                            self.report(
                                StepKind::VerifyEntra,
                                Phase::Forward,
                                StepOutcome::Done,
                                seen.clone(),
                                format!("{original} / {want}"),
                                t0,
                                ids,
                            );
                            return EntraEnd::Done;
                        }
                        let known = id == self.plan.entra_immutable_id_before
                            || id.as_deref() == Some(want.as_str());
                        if !known {
                            let v = show(&id);
                            self.failed_step = Some(StepKind::VerifyEntra);
                            self.entra_now = id;
                            self.report(
                                StepKind::VerifyEntra,
                                Phase::Forward,
                                StepOutcome::Failed {
                                    code: None,
                                    message: format!(
                                        "Entra shows ImmutableID {v}, which this run did not write"
                                    ),
                                },
                                seen,
                                want,
                                t0,
                                ids,
                            );
                            return EntraEnd::Unexpected(v);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "verify read failed"),
            }
            if attempt < policy.verify_attempts {
                tokio::time::sleep(policy.verify_interval).await;
            }
        }
        // Reads lag behind writes; the write succeeded, so go on and re-check at the end.
        let note = format!(
            "Entra reads still show {seen} after {} reads (replication lag)",
            policy.verify_attempts
        );
        self.lag_notes.push("entra".into());
        self.report(
            StepKind::VerifyEntra,
            Phase::Forward,
            StepOutcome::Lagging(note),
            seen,
            format!("{original} / {want}"),
            t0,
            ids,
        );
        EntraEnd::Done
    }

    // --- Okta --------------------------------------------------------------------------------

    async fn unexpect(&mut self) {
        match self.ctx.pause.unexpect(self.plan.run).await {
            Ok(Some(Left::Restored)) => self.provisioning = ProvisioningState::Restored,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "restoring provisioning after an early stop failed");
                self.provisioning = ProvisioningState::StillPaused;
            }
        }
    }

    async fn okta_half(&mut self) -> RunSummary {
        let t0 = Instant::now();
        let run = self.plan.run;
        let joined = self.ctx.pause.join(run).await;
        let joined = match joined {
            Ok(j) => j,
            Err(e) => {
                self.failed_step = Some(StepKind::PauseProvisioning);
                let code = match &e {
                    PauseError::Api(f) | PauseError::RestoreFailed(f) => f.code.clone(),
                    _ => None,
                };
                self.report(
                    StepKind::PauseProvisioning,
                    Phase::Forward,
                    StepOutcome::Failed {
                        code,
                        message: e.to_string(),
                    },
                    describe(&self.plan.provisioning_before),
                    "paused".into(),
                    t0,
                    vec![],
                );
                self.unexpect().await;
                if matches!(e, PauseError::RestoreFailed(_)) {
                    self.provisioning = ProvisioningState::StillPaused;
                }
                for s in &StepKind::ALL[5..] {
                    self.skip(*s, "not started: provisioning could not be paused");
                }
                return self.diverged("provisioning could not be paused, so Okta was not touched");
            }
        };
        let detail = if joined.first {
            format!("paused ({} → all off)", describe(&joined.snapshot))
        } else {
            "joined the provisioning pause already in place".to_owned()
        };
        self.report(
            StepKind::PauseProvisioning,
            Phase::Forward,
            StepOutcome::Done,
            describe(&joined.snapshot),
            detail,
            t0,
            vec![],
        );

        self.okta_window(&joined.snapshot, StepKind::Unassign).await
    }

    /// Steps `from`..8 inside the pause, then step 9: leave it, whatever happened.
    async fn okta_window(&mut self, snapshot: &Value, from: StepKind) -> RunSummary {
        let run = self.plan.run;
        let body_result = self.okta_steps(from).await;

        let t9 = Instant::now();
        let left = self.ctx.pause.leave(run).await;
        let (outcome, after) = match &left {
            Ok(Left::Restored) => {
                self.provisioning = ProvisioningState::Restored;
                (
                    StepOutcome::Done,
                    format!("restored exactly as before ({})", describe(snapshot)),
                )
            }
            Ok(Left::HeldByOthers(n)) => {
                self.provisioning = ProvisioningState::HeldByOthers(*n);
                (StepOutcome::Done, format!("left the pause; {n} other run(s) still in it, the last one out restores it"))
            }
            Ok(Left::Lingering(n)) => {
                self.provisioning = ProvisioningState::HeldByOthers(*n);
                (StepOutcome::Done, format!("left the pause; held briefly for {n} run(s) about to join, restored when they finish"))
            }
            Err(e) => {
                self.provisioning = ProvisioningState::StillPaused;
                let what = format!(
                    "ACTION NEEDED: Okta provisioning for the Office 365 app is still PAUSED ({e}). Restore it now: PUT /api/v1/apps/{}/features/USER_PROVISIONING with {}",
                    self.ctx.okta.app_id(),
                    snapshot
                );
                (StepOutcome::NeedsHuman(what), "restore failed".into())
            }
        };
        self.report(
            StepKind::ResumeProvisioning,
            Phase::Forward,
            outcome.clone(),
            "paused".into(),
            after,
            t9,
            vec![],
        );
        if let StepOutcome::NeedsHuman(what) = outcome {
            return self.summary(RunOutcome::NeedsAttention, what);
        }
        match body_result {
            Ok(()) => self.finish_success(),
            Err(end) => end,
        }
    }

    /// Steps 6–8 inside the pause. `Err` carries the final summary of a failed run.
    async fn okta_steps(&mut self, from: StepKind) -> Result<(), RunSummary> {
        match from {
            StepKind::Unassign => {
                self.unassign().await?;
                self.reassign_and_verify().await
            }
            StepKind::Reassign => self.reassign_and_verify().await,
            _ => self.verify_okta().await,
        }
    }

    /// Step 6: save the app profile, re-check Deactivate, unassign.
    #[tracing::instrument(name = "step", skip_all, fields(step = 6))]
    async fn unassign(&mut self) -> Result<(), RunSummary> {
        let plan = self.plan;
        let run = plan.run;
        let okta = &self.ctx.okta;
        let before_profile = serde_json::to_value(&plan.app_user_before).unwrap_or_default();
        if let Err(e) = self.ctx.store.save_app_profile(
            &run.to_string(),
            plan.okta_user_id.as_str(),
            &before_profile,
        ) {
            self.failed_step = Some(StepKind::Unassign);
            let t = Instant::now();
            self.report(StepKind::Unassign, Phase::Forward, StepOutcome::Failed { code: None, message: format!("could not save the app profile first ({e:#}), so the user was not unassigned") }, "assigned".into(), "assigned".into(), t, vec![]);
            self.skip_from(
                StepKind::Reassign,
                "not started: the unassign did not happen",
            );
            return Err(
                self.diverged("the app profile could not be saved, so Okta was not touched")
            );
        }

        // Step 6: re-read the feature right now; unassigning with Deactivate on deprovisions.
        let t6 = Instant::now();
        let mut ids = Vec::new();
        let check = okta.provisioning().await;
        let refuse = match &check {
            Ok(r) => {
                ids.extend(r.request_id.clone());
                deactivate_enabled(&r.value.capabilities).then(|| {
                    "Deactivate was switched back on in Okta during the run; unassigning now would deprovision the user in Office 365, so the unassign was not sent".to_owned()
                })
            }
            Err(e) => Some(format!(
                "could not re-check Deactivate before unassigning ({e}); the unassign was not sent"
            )),
        };
        if let Some(message) = refuse {
            self.failed_step = Some(StepKind::Unassign);
            self.report(
                StepKind::Unassign,
                Phase::Forward,
                StepOutcome::Failed {
                    code: Some("DeactivateEnabled".into()),
                    message,
                },
                "assigned".into(),
                "assigned (unchanged)".into(),
                t6,
                ids,
            );
            self.skip_from(StepKind::Reassign, "not started: the unassign was not sent");
            return Err(self.diverged("the unassign was not sent, so the user is still assigned in Okta with the old value"));
        }
        let unassigned = self
            .journal
            .write(
                run,
                &StepKind::Unassign.label(),
                "okta.unassign",
                plan.okta_user_id.as_str(),
                &before_profile,
                &json!(null),
                || okta.unassign(&plan.okta_user_id),
            )
            .await;
        match unassigned {
            Ok(r) => {
                ids.extend(r.request_id);
                self.report(
                    StepKind::Unassign,
                    Phase::Forward,
                    StepOutcome::Done,
                    "assigned".into(),
                    "unassigned (sendEmail=false; profile saved)".into(),
                    t6,
                    ids,
                );
            }
            Err(f) if f.definitive => {
                ids.extend(f.request_id.clone());
                self.failed_step = Some(StepKind::Unassign);
                self.report(
                    StepKind::Unassign,
                    Phase::Forward,
                    failed(&f),
                    "assigned".into(),
                    "assigned (unchanged)".into(),
                    t6,
                    ids,
                );
                self.skip_from(StepKind::Reassign, "not started: the unassign was refused");
                return Err(self.diverged(
                    "Okta refused the unassign, so the user is still assigned with the old value",
                ));
            }
            Err(f) => {
                // Unknown outcome: the user may be unassigned, so reassigning is mandatory.
                ids.extend(f.request_id.clone());
                self.failed_step = Some(StepKind::Unassign);
                self.rolled_forward = true;
                self.report(
                    StepKind::Unassign,
                    Phase::Forward,
                    failed(&f),
                    "assigned".into(),
                    "unknown: treated as unassigned".into(),
                    t6,
                    ids,
                );
            }
        }

        Ok(())
    }

    /// Step 7: reassign with the new value; roll forward on failure, then fall back to the
    /// saved profile so nobody is left unassigned. Then step 8.
    async fn reassign_and_verify(&mut self) -> Result<(), RunSummary> {
        let plan = self.plan;
        let new_body = self.assign_body(Some(self.new_id.to_string()));
        let phase = if self.failed_step.is_some() || self.resumed {
            Phase::RollForward
        } else {
            Phase::Forward
        };
        let first_attempts = if phase == Phase::Forward {
            1
        } else {
            self.ctx.policy.compensation_attempts
        };
        let mut result = self
            .assign(StepKind::Reassign, phase, &new_body, first_attempts)
            .await;
        if result.is_err() && phase == Phase::Forward {
            self.failed_step = Some(StepKind::Reassign);
            self.rolled_forward = true;
            result = self
                .assign(
                    StepKind::Reassign,
                    Phase::RollForward,
                    &new_body,
                    self.ctx.policy.compensation_attempts,
                )
                .await;
        }
        if let Err(f) = result {
            self.failed_step.get_or_insert(StepKind::Reassign);
            let old_body = self.assign_body(plan.okta_immutable_id_before().map(str::to_owned));
            let restored = self
                .assign(
                    StepKind::Reassign,
                    Phase::Compensation,
                    &old_body,
                    self.ctx.policy.compensation_attempts,
                )
                .await;
            self.skip(
                StepKind::VerifyOkta,
                "not started: the new value could not be assigned",
            );
            return Err(match restored {
                Ok(()) => {
                    self.okta_now = plan.okta_immutable_id_before().map(str::to_owned);
                    self.diverged(&format!(
                        "Okta would not take the new value ({}); the saved profile was reassigned",
                        f.message
                    ))
                }
                Err(f2) => {
                    let what = format!(
                        "ACTION NEEDED: {} is UNASSIGNED from Office 365 in Okta ({}; then {}). Assign them in Okta with ImmutableID {} and the saved profile: {}",
                        plan.upn, f.message, f2.message, self.new_id, json!(plan.app_user_before.profile)
                    );
                    self.summary(RunOutcome::NeedsAttention, what)
                }
            });
        }
        self.okta_now = Some(self.new_id.to_string());

        // Step 8: verify.
        self.verify_okta().await
    }

    fn assign_body(&self, immutable_id: Option<String>) -> AssignAppUser {
        let plan = self.plan;
        let mut profile = plan.app_user_before.profile.clone();
        // Mapped properties are filled by Okta; sending them fails the assignment.
        profile.retain(|k, _| !plan.mapped_properties.iter().any(|m| m == k));
        match immutable_id {
            Some(id) => {
                profile.insert("immutableId".into(), Value::String(id));
            }
            None => {
                profile.remove("immutableId");
            }
        }
        AssignAppUser {
            id: plan.okta_user_id.to_string(),
            scope: "USER".into(),
            credentials: AppUserCredentials {
                user_name: Some(
                    plan.app_user_before
                        .user_name()
                        .map(str::to_owned)
                        .unwrap_or_else(|| plan.upn.to_string()),
                ),
            },
            profile,
        }
    }

    #[tracing::instrument(name = "step", skip_all, fields(step = step.number(), phase = ?phase))]
    async fn assign(
        &mut self,
        step: StepKind,
        phase: Phase,
        body: &AssignAppUser,
        attempts: u32,
    ) -> Result<(), ApiFailure> {
        let t0 = Instant::now();
        let mut ids = Vec::new();
        let id = body
            .profile
            .get("immutableId")
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_owned();
        let intended = serde_json::to_value(body).unwrap_or_default();
        let (label, null) = (step.label(), Value::Null);
        let res = retrying(
            attempts,
            self.ctx.policy.compensation_backoff,
            &mut ids,
            || {
                self.journal.write(
                    self.plan.run,
                    &label,
                    "okta.assign",
                    self.plan.okta_user_id.as_str(),
                    &null,
                    &intended,
                    || self.ctx.okta.assign(body),
                )
            },
        )
        .await;
        let (outcome, after) = match &res {
            Ok(()) => (
                StepOutcome::Done,
                format!("assigned, ImmutableID {id} (licenses and roles kept)"),
            ),
            Err(f) => (failed(f), id),
        };
        self.report(step, phase, outcome, "unassigned".into(), after, t0, ids);
        res
    }

    #[tracing::instrument(name = "step", skip_all, fields(step = 8))]
    async fn verify_okta(&mut self) -> Result<(), RunSummary> {
        let t0 = Instant::now();
        let want = self.new_id.to_string();
        let policy = &self.ctx.policy;
        let mut seen = None;
        let mut ids = Vec::new();
        for attempt in 1..=policy.verify_attempts {
            if let Ok(r) = self.ctx.okta.app_user(&self.plan.okta_user_id).await {
                ids.extend(r.request_id);
                seen = r
                    .value
                    .as_ref()
                    .and_then(|u| u.immutable_id().map(str::to_owned));
                if seen.as_deref() == Some(want.as_str()) {
                    self.report(
                        StepKind::VerifyOkta,
                        Phase::Forward,
                        StepOutcome::Done,
                        show(&seen),
                        want,
                        t0,
                        ids,
                    );
                    return Ok(());
                }
                if seen.is_some() && seen.as_deref() != self.plan.okta_immutable_id_before() {
                    let v = show(&seen);
                    self.okta_now = seen;
                    self.failed_step = Some(StepKind::VerifyOkta);
                    self.report(StepKind::VerifyOkta, Phase::Forward, StepOutcome::Failed { code: None, message: format!("Okta holds {v}, not the value assigned (a profile mapping may override it)") }, v.clone(), want, t0, ids);
                    return Err(
                        self.diverged(&format!("Okta holds {v} instead of the assigned value"))
                    );
                }
            }
            if attempt < policy.verify_attempts {
                tokio::time::sleep(policy.verify_interval).await;
            }
        }
        self.lag_notes.push("okta".into());
        self.report(
            StepKind::VerifyOkta,
            Phase::Forward,
            StepOutcome::Lagging(format!("Okta still shows {} (lag)", show(&seen))),
            show(&seen),
            want,
            t0,
            ids,
        );
        Ok(())
    }

    // --- endings -----------------------------------------------------------------------------

    fn finish_success(&mut self) -> RunSummary {
        let id = self.new_id.to_string();
        let mut message = format!(
            "Entra and Okta both hold {id}. Ask {} to sign in.",
            self.plan.upn
        );
        if !self.lag_notes.is_empty() {
            message.push_str(&format!(
                " (Reads from {} were still catching up; they converge on their own.)",
                self.lag_notes.join(" and ")
            ));
        }
        let outcome = if self.resumed {
            message = format!("completed after the restart: {message}");
            RunOutcome::RepairedAfterRollForward
        } else if self.rolled_forward {
            message = format!("a step failed and the run rolled forward: {message}");
            RunOutcome::RepairedAfterRollForward
        } else {
            RunOutcome::Repaired
        };
        self.summary(outcome, message)
    }

    fn diverged(&self, why: &str) -> RunSummary {
        let message = format!(
            "{why}. Entra holds {}, Okta holds {}; {}. Run the command again with immutable_id {} to make Okta match.",
            show(&self.entra_now),
            show(&self.okta_now),
            match self.provisioning {
                ProvisioningState::StillPaused => "provisioning is STILL PAUSED",
                _ => "no user was deprovisioned and provisioning is restored",
            },
            show(&self.entra_now),
        );
        self.summary(RunOutcome::Diverged, message)
    }

    fn summary(&self, outcome: RunOutcome, mut message: String) -> RunSummary {
        let success = matches!(
            outcome,
            RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward
        );
        if !success && !message.contains("Okta holds") {
            // Whatever happened, the thread ends saying exactly what each system holds.
            message.push_str(&format!(
                " Now Entra holds {}, Okta holds {}.",
                show(&self.entra_now),
                show(&self.okta_now)
            ));
        }
        RunSummary {
            run: self.plan.run,
            upn: self.plan.upn.to_string(),
            outcome,
            entra_immutable_id: self.entra_now.clone(),
            okta_immutable_id: self.okta_now.clone(),
            provisioning: self.provisioning.clone(),
            failed_step: self.failed_step,
            message,
            duration: self.started.elapsed(),
        }
    }

    fn skip(&self, step: StepKind, why: &str) {
        self.reporter.send(RunEvent::Step(StepReport {
            run: self.plan.run,
            step,
            phase: Phase::Forward,
            outcome: StepOutcome::Skipped(why.to_owned()),
            before: String::new(),
            after: String::new(),
            duration: Duration::ZERO,
            request_ids: vec![],
        }));
    }

    fn skip_from(&self, first: StepKind, why: &str) {
        for s in StepKind::ALL
            .iter()
            .filter(|s| s.number() >= first.number() && s.number() < 9)
        {
            self.skip(*s, why);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        step: StepKind,
        phase: Phase,
        outcome: StepOutcome,
        before: String,
        after: String,
        t0: Instant,
        request_ids: Vec<String>,
    ) {
        let elapsed = t0.elapsed();
        let labels = crate::ops::metrics::StepLabels {
            step: step.number().to_string(),
            phase: format!("{phase:?}"),
            outcome: outcome.label().to_owned(),
        };
        let m = crate::ops::metrics::metrics();
        m.step_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if phase != Phase::Forward {
            m.compensations.get_or_create(&labels).inc();
        }
        tracing::info!(
            run = %self.plan.run,
            step = step.number(),
            target = %self.plan.upn,
            phase = ?phase,
            outcome = outcome.label(),
            duration_ms = elapsed.as_millis() as u64,
            "step"
        );
        self.reporter.send(RunEvent::Step(StepReport {
            run: self.plan.run,
            step,
            phase,
            outcome,
            before,
            after,
            duration: elapsed,
            request_ids,
        }));
    }
}

/// Runs a journalled write up to `attempts` times, doubling the wait between tries, and collects
/// the request ids of every try for the thread.
async fn retrying<T, F, Fut>(
    attempts: u32,
    first_backoff: Duration,
    request_ids: &mut Vec<String>,
    mut write: F,
) -> Result<(), ApiFailure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<crate::directory::Reply<T>, ApiFailure>>,
{
    let mut backoff = first_backoff;
    let attempts = attempts.max(1);
    for attempt in 1..=attempts {
        match write().await {
            Ok(reply) => {
                request_ids.extend(reply.request_id);
                return Ok(());
            }
            Err(f) => {
                request_ids.extend(f.request_id.clone());
                if attempt == attempts {
                    return Err(f);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    unreachable!("the last attempt returns")
}

fn failed(f: &ApiFailure) -> StepOutcome {
    StepOutcome::Failed {
        code: f.code.clone(),
        message: f.message.clone(),
    }
}

fn show(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "<none>".into())
}
