//! A run's life around the interpreter: the gate that makes it run once, the per-user lock, the
//! stale-plan check, the journal read back after a restart, and the one place a run concludes.

use super::decide::{EntraEnd, OktaDone, OktaEnd, Provisioning, Record, Shape, View};
use super::outcome::Verdict;
use super::plan::Plan;
use super::report::{ProvisioningState, RunEvent, RunOutcome, RunSummary, StepKind};
use super::run::{drive, shape_of, verdict_from, Emitter, Exec};
use super::steps::Label;
use super::summary::{summarize, FinalReads, Inputs};
use super::Inner;
use crate::domain::RunState;
use crate::store::{now_ms, StepRow};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// The version of the engine that stores plans and journals; stored with every plan so that a
/// later version can tell how to read what this one left.
pub const ENGINE_VERSION: u32 = 2;

/// A plan as stored: `{"engine": 2, "plan": {…}}`. Version 1 stored the bare plan.
pub fn stored_plan(plan: &Plan) -> Value {
    json!({"engine": ENGINE_VERSION, "plan": plan})
}

/// Reads a stored plan and the engine version that wrote it.
pub fn read_plan(value: &Value) -> Result<(u32, Plan), String> {
    match value.get("engine").and_then(Value::as_u64) {
        Some(v) => {
            let plan = value
                .get("plan")
                .cloned()
                .ok_or_else(|| "the stored plan has no body".to_owned())?;
            serde_json::from_value(plan)
                .map(|p| (v as u32, p))
                .map_err(|e| format!("engine {v} plan: {e}"))
        }
        None => serde_json::from_value(value.clone())
            .map(|p| (1, p))
            .map_err(|e| format!("engine 1 plan: {e}")),
    }
}

fn blank_summary(
    plan: &Plan,
    outcome: RunOutcome,
    message: String,
    duration: Duration,
) -> RunSummary {
    RunSummary {
        run: plan.run,
        upn: plan.upn.to_string(),
        outcome,
        entra_immutable_id: plan.entra_immutable_id_before.clone(),
        okta_immutable_id: plan.okta_immutable_id_before().map(str::to_owned),
        provisioning: ProvisioningState::Untouched,
        failed_step: None,
        message,
        duration,
        audit_head: None,
    }
}

/// Executes an approved plan: gate, lock, stale check, the interpreter, the summary.
pub(crate) async fn execute(ctx: &Inner, plan: &Plan, emit: &Emitter<'_>) -> RunSummary {
    let started = now_ms();
    let run = plan.run;
    // The gate comes first, so that nothing below can leave the run in a state recovery would
    // execute again: from here on it is `running` until it concludes.
    match ctx
        .store
        .transition_run(&run.to_string(), &[RunState::Approved], RunState::Running)
    {
        Ok(true) => {}
        Ok(false) => {
            let s = blank_summary(
                plan,
                RunOutcome::NotExecuted,
                "the run is not approved, or it has already been executed".into(),
                Duration::ZERO,
            );
            emit.send(RunEvent::Finished(s.clone()));
            return s;
        }
        Err(e) => {
            let s = blank_summary(
                plan,
                RunOutcome::NotExecuted,
                format!("the store is unavailable, so nothing was done: {e:#}"),
                Duration::ZERO,
            );
            emit.send(RunEvent::Finished(s.clone()));
            return s;
        }
    }
    emit.send(RunEvent::Started { run });
    start_fresh(ctx, plan, emit, started).await
}

/// A `running` run with no write yet: lock, stale check, then the interpreter from the start.
async fn start_fresh(ctx: &Inner, plan: &Plan, emit: &Emitter<'_>, started: i64) -> RunSummary {
    let _lock = match ctx.locks.try_lock(&plan.entra_id, &plan.upn, plan.run) {
        Ok(lock) => lock,
        Err(holder) => {
            let s = blank_summary(
                plan,
                RunOutcome::NotExecuted,
                format!(
                    "a repair for {} is already running (run {}); nothing was done",
                    plan.upn,
                    holder.short()
                ),
                since(started),
            );
            return conclude(ctx, s, emit);
        }
    };
    // The stale check is the interpreter's first Entra action, so that the pause, which needs
    // nothing from it, can open alongside.
    interpret(ctx, plan, emit, Vec::new(), started).await
}

fn since(started_ms: i64) -> Duration {
    Duration::from_millis((now_ms() - started_ms).max(0) as u64)
}

/// Settles a run the previous process died in. The journal is read back into records (an older
/// engine's labels translated), unrecorded outcomes become unknown, a restart marker is added,
/// and the same interpreter carries on from there.
pub(crate) async fn resume(
    ctx: &Inner,
    plan: &Plan,
    version: u32,
    emit: &Emitter<'_>,
) -> RunSummary {
    let run = plan.run.to_string();
    if let Err(e) = ctx.store.journal_mark_unknown(&run) {
        tracing::error!(%run, error = %format!("{e:#}"), "could not mark unrecorded outcomes");
    }
    let rows = match ctx.store.journal_rows(&run) {
        Ok(rows) => rows,
        Err(e) => {
            return conclude(
                ctx,
                hand_over(plan, &format!("its journal could not be read ({e:#})")),
                emit,
            )
        }
    };
    let started = rows.first().map(|r| r.intent_at_ms).unwrap_or_else(now_ms);
    let shape = shape_of(plan, ctx.policy.compensation_attempts);
    let records = match version {
        ENGINE_VERSION => records_of(&rows),
        1 => legacy_records(ctx, plan, &shape, &rows),
        v => {
            return conclude(
                ctx,
                hand_over(
                    plan,
                    &format!(
                        "it was started by engine version {v}, which this version cannot read"
                    ),
                ),
                emit,
            )
        }
    };
    let wrote = records.iter().any(|r| r.label.is_write());
    // The step the process died in: the one with a call in flight, else the last recorded.
    let during = records
        .iter()
        .rev()
        .find(|r| r.died)
        .or_else(|| records.last())
        .and_then(|r| r.label.step());
    let note = if let (true, Some(step)) = (wrote, during) {
        format!(
            "the bot restarted during step {}; settling the run from its journal",
            step.number()
        )
    } else if wrote {
        "the bot restarted during this run; settling it from its journal".to_owned()
    } else {
        "the bot restarted before this run's first write; running it now, once".to_owned()
    };
    emit.send(RunEvent::Note {
        run: plan.run,
        text: note.clone(),
    });
    let _ = ctx
        .store
        .audit(Some(&run), "recovery", None, &json!({ "note": note }));
    if !wrote {
        return start_fresh(ctx, plan, emit, now_ms()).await;
    }
    let _lock = ctx.locks.try_lock(&plan.entra_id, &plan.upn, plan.run);
    let mut records = records;
    let _ = ctx.store.journal_check(
        &run,
        Label::Restart.code(),
        Label::Restart.spec().api,
        "",
        "ok",
        None,
        None,
        &Value::Null,
    );
    records.push(Record::new(Label::Restart, Verdict::Ok));
    interpret(ctx, plan, emit, records, started).await
}

/// A run this version cannot settle by itself: said loudly, with everything a person needs.
fn hand_over(plan: &Plan, why: &str) -> RunSummary {
    let mut s = blank_summary(
        plan,
        RunOutcome::NeedsAttention,
        format!(
            "ACTION NEEDED: this run could not be settled automatically because {why}. Check {} (Entra object {}): its UPN must be {} and its ImmutableID one value in both Entra and Okta; check that Okta provisioning for the Office 365 app is on as before.",
            plan.upn, plan.entra_id, plan.upn
        ),
        Duration::ZERO,
    );
    s.entra_immutable_id = None;
    s.okta_immutable_id = None;
    s
}

/// This version's journal rows as records. Rows of other writers (the pause manager's own PUTs)
/// carry another API and are not steps.
pub(crate) fn records_of(rows: &[StepRow]) -> Vec<Record> {
    rows.iter()
        .filter_map(|row| {
            let label = Label::parse(&row.step)?;
            if label.spec().api != row.api {
                return None;
            }
            let (verdict, died) = verdict_from(row.outcome.as_deref());
            let died = died || row.error_code.as_deref() == Some("process-died");
            Some(Record {
                label,
                verdict,
                died,
                code: row.error_code.clone().filter(|c| c != "process-died"),
                intended: row.intended.clone(),
                result: row.result.clone(),
            })
        })
        .collect()
}

/// An engine-1 journal, translated: its steps 2 and 3 were two PATCHes (read as one, settled by
/// re-sending both in one when either is not known to have landed), its rollbacks were `undo-N`
/// and its restart settlement `settle`; its pause is known from the stored holders.
fn legacy_records(ctx: &Inner, plan: &Plan, shape: &Shape, rows: &[StepRow]) -> Vec<Record> {
    let mut out = Vec::new();
    let graph = |r: &StepRow| r.api == "graph.update_user";
    let rec = |label: Label, r: &StepRow| {
        let (verdict, died) = verdict_from(r.outcome.as_deref());
        let mut x = Record::new(label, verdict);
        x.died = died || r.error_code.as_deref() == Some("process-died");
        x.intended = r.intended.clone();
        x
    };
    let federated = shape.temporary_upn.is_some();
    let holds_pause = ctx
        .store
        .pause(ctx.okta.app_id())
        .ok()
        .flatten()
        .is_some_and(|p| p.holders.contains(&plan.run.to_string()));
    let okta_touched = rows.iter().any(|r| r.api.starts_with("okta."));
    for r in rows {
        let label = match (r.step.as_str(), graph(r)) {
            ("1" | "settle-1", true) => Some(Label::UpnToTemporary),
            ("2", true) if !federated => Some(Label::SetId),
            ("2", true) => {
                // The ID alone: the UPN-back PATCH is still to come, so step 2 is not complete.
                let mut x = rec(Label::SetId, r);
                if x.verdict == Verdict::Ok {
                    x.verdict = Verdict::Unknown;
                }
                out.push(x);
                None
            }
            ("3" | "settle", true) => Some(Label::SetId),
            (s, true) if s.starts_with("undo-") => Some(Label::UndoEntra),
            (_, false) if r.api == "okta.unassign" => Some(Label::Unassign),
            (_, false) if r.api == "okta.assign" => {
                let new = r
                    .intended
                    .pointer("/profile/immutableId")
                    .and_then(Value::as_str)
                    == Some(shape.planned_id.as_str());
                Some(if new {
                    Label::Assign
                } else {
                    Label::AssignSaved
                })
            }
            _ => None,
        };
        if let Some(l) = label {
            out.push(rec(l, r));
        }
    }
    if holds_pause || okta_touched {
        // Engine 1 joined before its first Okta write; where it still holds the pause, leaving
        // it is part of settling the run.
        let at = out
            .iter()
            .position(|r| {
                matches!(
                    r.label,
                    Label::Unassign | Label::Assign | Label::AssignSaved
                )
            })
            .unwrap_or(out.len());
        let mut p = Record::new(Label::Pause, Verdict::Ok);
        p.result = json!({"first": false});
        out.insert(at, p);
        if !holds_pause {
            out.push(Record::new(Label::Resume, Verdict::Ok));
        }
    }
    out
}

/// The interpreter from `records`, then final reads, the summary, and the conclusion.
async fn interpret(
    ctx: &Inner,
    plan: &Plan,
    emit: &Emitter<'_>,
    mut records: Vec<Record>,
    started: i64,
) -> RunSummary {
    let shape = shape_of(plan, ctx.policy.compensation_attempts);
    // Steps done before a restart were told then; they are not "skipped" now.
    let told: HashSet<StepKind> = records
        .iter()
        .filter(|r| r.verdict == Verdict::Ok)
        .flat_map(|r| {
            let mut steps = r.label.spec().shows_as.to_vec();
            if r.label == Label::Assign && r.result.get("immutableId").is_some_and(Value::is_string)
            {
                steps.push(StepKind::VerifyOkta);
            }
            steps
        })
        .collect();
    let exec = Exec {
        ctx,
        plan,
        emit,
        reported: std::sync::Mutex::new(told),
    };
    if records.is_empty() {
        // What the plan's shape rules out is said at once, in the thread's order.
        for k in StepKind::ALL {
            if let Some(why) = ruled_out(k, &shape) {
                exec.skip(k, why);
            }
        }
    }
    let ends = drive(&exec, &shape, &mut records).await;
    let (entra, okta) = match ends {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(run = %plan.run, error = %format!("{e:#}"), "the interpreter stopped");
            return conclude(
                ctx,
                hand_over(plan, &format!("the engine stopped unexpectedly ({e:#}); the journal holds every write made")),
                emit,
            );
        }
    };
    if entra == EntraEnd::Parked || okta.end == OktaEnd::Parked {
        return park(ctx, plan, &exec, &shape, &records, &entra, &okta, started);
    }
    let view = View::new(&records);
    let new_id = view.current_id(&shape);
    let clean = matches!(entra, EntraEnd::Written { lagging: false })
        && match &okta.end {
            OktaEnd::NotNeeded => true,
            OktaEnd::Assigned { seen } => seen.as_deref() == Some(new_id.as_str()),
            _ => false,
        };
    let reads = if clean {
        FinalReads::default()
    } else {
        exec.final_reads().await
    };
    let snapshot = records
        .iter()
        .rev()
        .find(|r| r.label == Label::Pause)
        .and_then(|r| r.result.get("snapshot").cloned())
        .or_else(|| {
            ctx.store
                .pause(ctx.okta.app_id())
                .ok()
                .flatten()
                .map(|p| p.snapshot)
        });
    let saved = serde_json::to_value(&plan.app_user_before.profile).unwrap_or_default();
    let summary = summarize(&Inputs {
        run: plan.run,
        shape: &shape,
        entra_object: plan.entra_id.as_str(),
        okta_app: ctx.okta.app_id(),
        snapshot: snapshot.as_ref(),
        saved_profile: &saved,
        records: &records,
        entra: &entra,
        okta: &okta,
        reads: &reads,
        duration: since(started),
    });
    // A run stopped before its first write has nothing to list step by step.
    if !matches!(entra, EntraEnd::Stale(_) | EntraEnd::NotReread(_)) {
        let seen = exec.reported.lock().map(|s| s.clone()).unwrap_or_default();
        exec.skip_unreported(&seen, &|k| skip_reason(k, &entra, &okta, &shape));
    }
    conclude(ctx, summary, emit)
}

/// A run stopped at a safe boundary while the bot stops: the marker is journalled, the thread is
/// told, and the run stays `running` for the next start to resume.
#[allow(clippy::too_many_arguments)]
fn park(
    ctx: &Inner,
    plan: &Plan,
    exec: &Exec<'_>,
    shape: &Shape,
    records: &[Record],
    entra: &EntraEnd,
    okta: &OktaDone,
    started: i64,
) -> RunSummary {
    let run = plan.run.to_string();
    if let Err(e) = ctx.store.journal_check(
        &run,
        Label::Park.code(),
        Label::Park.spec().api,
        "",
        "ok",
        None,
        None,
        &Value::Null,
    ) {
        tracing::error!(%run, error = %format!("{e:#}"), "could not journal the park marker");
    }
    let saved = serde_json::to_value(&plan.app_user_before.profile).unwrap_or_default();
    let summary = summarize(&Inputs {
        run: plan.run,
        shape,
        entra_object: plan.entra_id.as_str(),
        okta_app: ctx.okta.app_id(),
        snapshot: None,
        saved_profile: &saved,
        records,
        entra,
        okta,
        reads: &FinalReads::default(),
        duration: since(started),
    });
    tracing::warn!(%run, "parked at a safe boundary while the bot stops");
    exec.emit.send(RunEvent::Note {
        run: plan.run,
        text: format!("⏸ {}", summary.message),
    });
    summary
}

/// Steps the plan's shape rules out from the start, and why.
fn ruled_out(k: StepKind, shape: &Shape) -> Option<&'static str> {
    match k {
        StepKind::UpnToTemporary | StepKind::UpnBack if shape.temporary_upn.is_none() => {
            Some("managed domain: the UPN does not move")
        }
        _ if k.number() >= 5 && !shape.full => {
            Some("Entra-only repair: Okta already sends this value")
        }
        _ => None,
    }
}

fn skip_reason(k: StepKind, entra: &EntraEnd, okta: &OktaDone, shape: &Shape) -> String {
    if let Some(why) = ruled_out(k, shape) {
        return why.into();
    }
    match k {
        _ if k.number() >= 5 && !entra.written() => {
            "not started: the Entra half did not complete".into()
        }
        StepKind::ResumeProvisioning if okta.provisioning == Provisioning::Untouched => {
            "provisioning was not paused".into()
        }
        _ => "not started: an earlier step stopped the run".into(),
    }
}

/// Stores and announces a run's outcome: the one place a run ends.
pub(crate) fn conclude(ctx: &Inner, mut summary: RunSummary, emit: &Emitter<'_>) -> RunSummary {
    let record = serde_json::to_value(&summary).unwrap_or(Value::Null);
    if let Err(e) =
        ctx.store
            .set_run_summary(&summary.run.to_string(), summary.outcome.state(), &record)
    {
        tracing::error!(run = %summary.run, error = %format!("{e:#}"), "could not store the run summary");
    }
    summary.audit_head = audit_head(ctx);
    emit.send(RunEvent::Finished(summary.clone()));
    summary
}

/// The audit head to post with an outcome; a summary without it still goes out.
pub(crate) fn audit_head(ctx: &Inner) -> Option<String> {
    match ctx.store.audit_head() {
        Ok(head) => head.map(|h| h.short()),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "could not read the audit head");
            None
        }
    }
}

/// Whether an approved run found after a restart may still run.
pub(crate) fn approved_still_fresh(ctx: &Inner, created_at_ms: i64) -> bool {
    let age = Duration::from_millis((now_ms() - created_at_ms).max(0) as u64);
    age <= ctx.policy.approved_run_max_age
}
