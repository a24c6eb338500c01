//! Bulk repairs: a list of users planned together, approved once, repaired inside one
//! provisioning window, and continued after a restart.
//!
//! A batch is a record over ordinary runs: each user is a run with its own plan, journal, stale
//! check, compensations and summary, executed by the same interpreter as a single repair. What
//! the batch adds is sharing: the plans share the app-wide reads; the approval moves the batch
//! and every user's run in one transaction; the batch itself holds the provisioning pause from
//! its first user to its last, so its users join one window however long it takes (the pause
//! manager lets a batch's users join while the batch holds it); one Deactivate re-check serves
//! the unassigns sent right after it; users run a few at a time, in order, and a cancel stops
//! the batch between users.

use super::plan::{make_plan_with, SharedReads};
use super::{Engine, Plan, PlanError, Reporter, RunOutcome, RunSummary};
use crate::directory::okta::{Feature, OktaClient, OktaError};
use crate::directory::Reply;
use crate::domain::{Actor, RunId, RunState, Upn};
use crate::store::{BatchRow, BatchState, NewBatch, NewRun, RefusedUser};
use anyhow::Context;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one Deactivate re-check serves the unassigns sent after its answer arrived. The
/// answer describes Okta at most one round trip before it arrives, so an unassign relying on it
/// runs on a reading at most this plus one round trip old — the same order as a single repair's
/// own gap between its check and its unassign (one round trip). Deactivate switched on inside
/// that gap is caught by the next check, as for a single repair.
pub const DEACTIVATE_CHECK_SERVES: Duration = Duration::from_millis(250);

/// Plans read at once for a batch (each plan is a dozen reads; the clients pace them).
const PLAN_CONCURRENCY: usize = 16;

/// One Deactivate re-check shared by a batch's users: a user arriving while a check is in flight
/// waits for its answer instead of sending another.
#[derive(Default)]
pub(crate) struct SharedCheck {
    last: tokio::sync::Mutex<Option<(Instant, Reply<Feature>)>>,
}

impl SharedCheck {
    pub(crate) async fn provisioning(
        &self,
        okta: &OktaClient,
    ) -> Result<Reply<Feature>, OktaError> {
        // Held across the read on purpose: whoever comes meanwhile gets this answer.
        let mut last = self.last.lock().await;
        if let Some((at, reply)) = last.as_ref() {
            if at.elapsed() < DEACTIVATE_CHECK_SERVES {
                return Ok(reply.clone());
            }
        }
        let reply = okta.provisioning().await?;
        *last = Some((Instant::now(), reply.clone()));
        Ok(reply)
    }
}

/// A bulk repair as asked for, already validated.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub requester: Actor,
    pub users: Vec<Upn>,
    pub mode: super::ModeChoice,
    pub reason: Option<String>,
}

/// The plans of a batch, stored as awaiting approval, and the users refused (with why).
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub id: RunId,
    pub requester: Actor,
    pub reason: Option<String>,
    pub plans: Vec<Plan>,
    pub refused: Vec<RefusedUser>,
}

/// How far a batch has got, for a progress line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchProgress {
    pub total: usize,
    pub finished: usize,
    pub repaired: usize,
    pub rolled_back: usize,
    /// Diverged or needing attention: a person must look.
    pub attention: usize,
    /// Stale (skipped: the facts changed), cancelled or not executed.
    pub skipped: usize,
}

/// The outcome a run stored, if it has finished.
fn run_summary(run: &crate::store::RunRow) -> Option<RunSummary> {
    run.summary
        .as_ref()
        .and_then(|s| serde_json::from_value(s.clone()).ok())
}

impl BatchProgress {
    /// Counts a user's run by its stored state and outcome; one not finished is not counted.
    fn count_run(&mut self, state: RunState, summary: Option<&RunSummary>) {
        match state {
            RunState::Approved | RunState::Running | RunState::AwaitingApproval => {}
            RunState::Cancelled | RunState::Expired => self.count(None),
            _ => self.count(summary.map(|s| s.outcome)),
        }
    }

    fn count(&mut self, outcome: Option<RunOutcome>) {
        self.finished += 1;
        match outcome {
            Some(RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward) => self.repaired += 1,
            Some(RunOutcome::RolledBack) => self.rolled_back += 1,
            Some(RunOutcome::Diverged | RunOutcome::NeedsAttention) => self.attention += 1,
            _ => self.skipped += 1,
        }
    }
}

/// One user's result in a batch summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberResult {
    pub upn: String,
    pub run: String,
    /// The run's final state in the store.
    pub state: RunState,
    pub message: String,
    pub entra_immutable_id: Option<String>,
    pub okta_immutable_id: Option<String>,
    /// The services' request ids of the user's journalled calls (Graph `request-id`, Okta
    /// `X-Okta-Request-Id`), in order: what a support case with either vendor needs.
    #[serde(default)]
    pub request_ids: Vec<String>,
}

/// A batch at its end, computed from its users' runs as stored.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    pub id: String,
    pub progress: BatchProgress,
    pub results: Vec<MemberResult>,
    pub refused: Vec<RefusedUser>,
    /// How long the batch held the provisioning pause (0 when no user needed it).
    pub paused_ms: u64,
    pub duration_ms: u64,
}

impl Engine {
    /// Reads both systems for every user (a few at a time) and stores the batch awaiting
    /// approval. Writes nothing to Graph or Okta. A user whose plan is refused, or whose reads
    /// fail, is listed with why, never dropped.
    pub async fn plan_batch(&self, req: &BatchRequest) -> anyhow::Result<BatchPlan> {
        let id = RunId::new();
        let shared = Arc::new(SharedReads::default());
        let sem = Arc::new(tokio::sync::Semaphore::new(PLAN_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, upn) in req.users.iter().enumerate() {
            let (engine, shared, sem) = (self.clone(), shared.clone(), sem.clone());
            let member = super::RepairRequest {
                requester: req.requester.clone(),
                upn: upn.clone(),
                immutable_id: None,
                reason: req.reason.clone(),
                mode: req.mode,
            };
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let planned = make_plan_with(&engine.inner, &member, Some(&shared)).await;
                (i, member.upn, planned)
            });
        }
        let mut results = Vec::with_capacity(req.users.len());
        while let Some(done) = tasks.join_next().await {
            results.push(done.context("a plan task stopped")?);
        }
        results.sort_by_key(|(i, _, _)| *i);
        let mut plans: Vec<Plan> = Vec::new();
        let mut refused = Vec::new();
        for (_, upn, planned) in results {
            match planned {
                // Two entries that resolve to one Entra user (a rename between the reads, say)
                // are one user: repaired once, under the first entry.
                Ok(mut plan) => match plans.iter().find(|p| p.entra_id == plan.entra_id) {
                    Some(first) => refused.push(RefusedUser {
                        upn: upn.to_string(),
                        why: format!(
                            "the same Entra user as {}, listed before; repaired once under that entry.",
                            first.upn
                        ),
                    }),
                    None => {
                        plan.batch = Some(id);
                        plans.push(plan);
                    }
                },
                Err(PlanError::Refused(r)) => refused.push(RefusedUser {
                    upn: upn.to_string(),
                    why: r.to_string(),
                }),
                Err(e) => refused.push(RefusedUser {
                    upn: upn.to_string(),
                    why: format!("could not be planned: {e}. Ask again for this user later."),
                }),
            }
        }
        for plan in &plans {
            let json = super::stored_plan(plan);
            self.inner.store.insert_run(&NewRun {
                id: &plan.run.to_string(),
                requester_id: &plan.requester.id,
                requester_name: &plan.requester.name,
                upn: plan.upn.as_str(),
                state: RunState::AwaitingApproval,
                plan: Some(&json),
                fingerprint: Some(&plan.fingerprint),
            })?;
        }
        let members: Vec<String> = plans.iter().map(|p| p.run.to_string()).collect();
        self.inner.store.insert_batch(&NewBatch {
            id: &id.to_string(),
            requester_id: &req.requester.id,
            requester_name: &req.requester.name,
            reason: req.reason.as_deref(),
            members: &members,
            refused: &refused,
        })?;
        Ok(BatchPlan {
            id,
            requester: req.requester.clone(),
            reason: req.reason.clone(),
            plans,
            refused,
        })
    }

    /// Approves the batch and every user in it at once; `false` if it was not awaiting
    /// approval. The caller applies the approval policy first.
    pub fn approve_batch(&self, id: RunId, approver: &Actor) -> anyhow::Result<bool> {
        self.inner.store.transition_batch(
            &id.to_string(),
            BatchState::AwaitingApproval,
            BatchState::Running,
            &[RunState::AwaitingApproval],
            Some(RunState::Approved),
            Some(&approver.name),
            &serde_json::json!({"approver_id": approver.id}),
        )
    }

    /// Closes a batch that never ran (rejected, expired, cancelled), with every user in it.
    pub fn close_batch(&self, id: RunId, to: BatchState, actor: &Actor) -> anyhow::Result<bool> {
        let run_state = match to {
            BatchState::Rejected => RunState::Rejected,
            BatchState::Expired => RunState::Expired,
            _ => RunState::Cancelled,
        };
        self.inner.store.transition_batch(
            &id.to_string(),
            BatchState::AwaitingApproval,
            to,
            &[RunState::AwaitingApproval],
            Some(run_state),
            Some(&actor.name),
            &serde_json::json!({"actor_id": actor.id}),
        )
    }

    /// Stops a running batch between users: users not started are cancelled; users already
    /// started finish or compensate. Returns how many were cancelled.
    pub fn cancel_batch(&self, id: RunId, actor: &Actor) -> anyhow::Result<usize> {
        self.inner
            .store
            .cancel_batch_rest(&id.to_string(), Some(&actor.name))
    }

    /// Repairs an approved batch's users, `concurrency` at a time in order, inside one
    /// provisioning window held by the batch; also continues a batch a restart interrupted
    /// (users already finished are counted, users not started run once). `progress` hears of
    /// every user that finishes.
    pub async fn execute_batch(
        &self,
        id: RunId,
        concurrency: usize,
        reporter_for: impl Fn(&Plan) -> Reporter,
        progress: impl Fn(&BatchProgress),
    ) -> anyhow::Result<BatchSummary> {
        let started = Instant::now();
        let store = &self.inner.store;
        let row = store
            .batch(&id.to_string())?
            .with_context(|| format!("no batch {id}"))?;
        anyhow::ensure!(
            row.state == BatchState::Running,
            "batch {id} is {}, not approved",
            row.state.as_str()
        );
        let mut plans = Vec::new();
        for member in &row.members {
            let run = store
                .run(member)?
                .with_context(|| format!("batch {id}: no run {member}"))?;
            let plan = run
                .plan
                .as_ref()
                .context("a batch's run has no plan")
                .and_then(|p| super::read_plan(p).map_err(anyhow::Error::msg))?
                .1;
            plans.push((run.state, plan));
        }
        // Users settled before a restart are already in the store; this run counts its own,
        // and the summary below reads every user back.
        let mut tally = BatchProgress {
            total: plans.len(),
            ..BatchProgress::default()
        };
        let to_run: Vec<Plan> = plans
            .into_iter()
            .filter(|(state, _)| *state == RunState::Approved)
            .map(|(_, plan)| plan)
            .collect();
        let needs_pause = to_run.iter().any(|p| p.mode == super::RepairMode::Full);
        let pause_started = Instant::now();
        let held = if needs_pause {
            match self.inner.pause.join(id).await {
                Ok(_) => true,
                Err(e) => {
                    // The users' own joins then decide (each waits or fails safely).
                    tracing::warn!(batch = %id, error = %e, "the batch could not hold the provisioning pause; its users join on their own");
                    false
                }
            }
        } else {
            false
        };
        // At most `concurrency` users at a time, started in order. Finished users are reported
        // before the next one starts, so a cancel said in a progress callback stops the batch
        // right there.
        let mut tasks = tokio::task::JoinSet::new();
        for plan in to_run {
            while tasks.len() >= concurrency.max(1) {
                if let Some(done) = tasks.join_next().await {
                    report_one(&mut tally, done, &progress);
                }
            }
            if self.inner.parking.load(std::sync::atomic::Ordering::SeqCst) {
                // Stopping: the rest stay approved and run after the restart.
                break;
            }
            let still_approved = store
                .run(&plan.run.to_string())?
                .is_some_and(|r| r.state == RunState::Approved);
            if !still_approved {
                // Cancelled between users.
                continue;
            }
            let engine = self.clone();
            let reporter = reporter_for(&plan);
            tasks.spawn(async move { engine.execute(&plan, &reporter).await });
        }
        while let Some(done) = tasks.join_next().await {
            report_one(&mut tally, done, &progress);
        }
        let parked = self.inner.parking.load(std::sync::atomic::Ordering::SeqCst);
        let paused_ms = if held {
            if let Err(e) = self.inner.pause.leave(id).await {
                tracing::error!(batch = %id, error = %e, "leaving the provisioning pause failed; it is retried and settled on restart");
            }
            pause_started.elapsed().as_millis() as u64
        } else {
            0
        };
        let summary = self.batch_summary(
            &store.batch(&id.to_string())?.context("batch gone")?,
            paused_ms,
            started.elapsed(),
        )?;
        let unfinished = summary
            .results
            .iter()
            .any(|r| matches!(r.state, RunState::Approved | RunState::Running));
        if !(parked && unfinished) {
            store.set_batch_summary(
                &id.to_string(),
                BatchState::Done,
                &serde_json::to_value(&summary)?,
            )?;
        }
        Ok(summary)
    }

    /// The batch's counts as its users' runs stand now (runs only, no journal: for status lines).
    pub fn batch_progress(&self, row: &BatchRow) -> anyhow::Result<BatchProgress> {
        let mut progress = BatchProgress {
            total: row.members.len(),
            ..BatchProgress::default()
        };
        for member in &row.members {
            if let Some(run) = self.inner.store.run(member)? {
                progress.count_run(run.state, run_summary(&run).as_ref());
            }
        }
        Ok(progress)
    }

    /// The batch as its users' runs stand now: what happened is read back, never assumed.
    pub fn batch_summary(
        &self,
        row: &BatchRow,
        paused_ms: u64,
        duration: Duration,
    ) -> anyhow::Result<BatchSummary> {
        let mut progress = BatchProgress {
            total: row.members.len(),
            ..BatchProgress::default()
        };
        let mut results = Vec::new();
        for member in &row.members {
            let Some(run) = self.inner.store.run(member)? else {
                continue;
            };
            let summary = run_summary(&run);
            progress.count_run(run.state, summary.as_ref());
            results.push(MemberResult {
                upn: run.upn.clone(),
                run: run.id.clone(),
                state: run.state,
                message: summary
                    .as_ref()
                    .map(|s| s.message.clone())
                    .unwrap_or_else(|| match run.state {
                        RunState::Cancelled => "cancelled before it started".into(),
                        RunState::Expired => "not started: the approval grew too old while the bot was down; ask again for this user".into(),
                        s => format!("not finished ({})", s.as_str()),
                    }),
                entra_immutable_id: summary.as_ref().and_then(|s| s.entra_immutable_id.clone()),
                okta_immutable_id: summary.as_ref().and_then(|s| s.okta_immutable_id.clone()),
                request_ids: {
                    let mut ids: Vec<String> = self
                        .inner
                        .store
                        .journal(member)?
                        .into_iter()
                        .filter_map(|e| e.request_id)
                        .collect();
                    ids.dedup();
                    ids
                },
            });
        }
        Ok(BatchSummary {
            id: row.id.clone(),
            progress,
            results,
            refused: row.refused.clone(),
            paused_ms,
            duration_ms: duration.as_millis() as u64,
        })
    }

    /// Continues every batch a restart interrupted (after [`Engine::recover`] settled the users
    /// that were running).
    pub async fn recover_batches(
        &self,
        concurrency: usize,
        reporter_for: impl Fn(&Plan) -> Reporter,
    ) -> anyhow::Result<Vec<BatchSummary>> {
        let mut out = Vec::new();
        for row in self.inner.store.batches_in_state(BatchState::Running)? {
            let id = RunId::parse(&row.id).map_err(|e| anyhow::anyhow!("batch id: {e}"))?;
            // As for a single repair: an approval too old when the bot comes back is not acted
            // on; those users expire and are said so in the batch's summary.
            for member in &row.members {
                let Some(run) = self.inner.store.run(member)? else {
                    continue;
                };
                if run.state == RunState::Approved
                    && !super::execute::approved_still_fresh(&self.inner, run.created_at_ms)
                {
                    self.inner.store.transition_run_audited(
                        member,
                        &[RunState::Approved],
                        RunState::Expired,
                        None,
                        &serde_json::json!({"reason": "a batch approved but not finished before a restart, and older than repair.approved_run_max_age"}),
                    )?;
                }
            }
            out.push(
                self.execute_batch(id, concurrency, &reporter_for, |_| {})
                    .await?,
            );
        }
        Ok(out)
    }
}

fn report_one(
    tally: &mut BatchProgress,
    done: Result<RunSummary, tokio::task::JoinError>,
    progress: &impl Fn(&BatchProgress),
) {
    match done {
        Ok(s) => tally.count(Some(s.outcome)),
        Err(e) => {
            tracing::error!(error = %e, "a batch user's task failed; the others go on");
            tally.count(None);
        }
    }
    progress(tally);
}
