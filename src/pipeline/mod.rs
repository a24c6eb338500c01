//! The repair engine: plan (read-only), then the step table run by one interpreter, with
//! journalling and compensation, live and after a restart alike.

pub mod batch;
pub mod capabilities;
pub mod decide;
pub mod diagnose;
mod execute;
pub mod journal;
pub mod locks;
pub mod outcome;
pub mod pause;
pub mod plan;
mod refusal;
pub mod report;
mod run;
pub mod steps;
pub mod summary;

pub use execute::{read_plan, stored_plan, ENGINE_VERSION};
pub use run::{CrashPoint, CrashPoints, RunObserver};

pub use plan::{InputError, ModeChoice, Plan, RepairMode, RepairRequest};
pub use refusal::{PlanError, Refusal};
pub use report::{
    Phase, ProvisioningState, Reporter, RunEvent, RunOutcome, RunSummary, StepKind, StepOutcome,
    StepReport,
};

use crate::config::RepairPolicy;
use crate::directory::graph::GraphClient;
use crate::directory::okta::OktaClient;
use crate::domain::{RunId, RunState};
use crate::store::{NewRun, Store, VoteKind};
use locks::UserLocks;
use pause::{PauseManager, PauseTiming};
use std::sync::Arc;

pub(crate) struct Inner {
    pub(crate) graph: GraphClient,
    pub(crate) okta: OktaClient,
    pub(crate) store: Store,
    pub(crate) policy: RepairPolicy,
    pub(crate) pause: Arc<PauseManager>,
    pub(crate) locks: UserLocks,
    pub(crate) observers: Vec<Arc<dyn RunObserver>>,
    pub(crate) crash: Option<Arc<dyn CrashPoints>>,
    /// Set when the bot is stopping: runs go on to a safe boundary and park there.
    pub(crate) parking: std::sync::atomic::AtomicBool,
    /// One Deactivate re-check serving a batch's unassigns sent right after it.
    pub(crate) deactivate_check: batch::SharedCheck,
}

/// Cheap to clone; one per process, shared by every run.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    pub fn new(graph: GraphClient, okta: OktaClient, store: Store, policy: RepairPolicy) -> Self {
        let timing = PauseTiming {
            join_window: policy.pause_join_window,
            linger: policy.pause_linger,
            restore_attempts: policy.compensation_attempts.max(3) * 2,
            restore_backoff: policy.compensation_backoff,
            pause_attempts: policy.compensation_attempts.max(1),
        };
        let pause = PauseManager::new(okta.clone(), store.clone(), timing);
        Self {
            inner: Arc::new(Inner {
                graph,
                okta,
                store,
                policy,
                pause,
                locks: UserLocks::default(),
                observers: Vec::new(),
                crash: None,
                parking: std::sync::atomic::AtomicBool::new(false),
                deactivate_check: batch::SharedCheck::default(),
            }),
        }
    }

    /// Adds an observer of every run's events (metrics, for one). Call before the engine is
    /// cloned or used.
    pub fn observed_by(mut self, observer: Arc<dyn RunObserver>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.observers.push(observer),
            None => tracing::error!("an observer was added to an engine already shared; ignored"),
        }
        self
    }

    /// Installs crash points (tests only: a frozen run stands for a killed process). Call before
    /// the engine is cloned or used.
    pub fn with_crash_points(mut self, crash: Arc<dyn CrashPoints>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.crash = Some(crash),
            None => tracing::error!("crash points were added to an engine already shared; ignored"),
        }
        self
    }

    /// The bot is stopping (SIGTERM): every run goes on to a safe boundary and parks there. A
    /// run in its Okta half (an unassign sent) finishes it; a run in its Entra half finishes that
    /// half; neither starts what comes next. A parked run leaves the provisioning pause (the last
    /// one out restores it), stays `running`, and its `execute` returns [`RunOutcome::Parked`];
    /// the next start resumes it from its journal.
    pub fn park(&self) {
        self.inner
            .parking
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn emitter<'a>(&'a self, reporter: &'a Reporter) -> run::Emitter<'a> {
        run::Emitter {
            reporter,
            observers: &self.inner.observers,
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn graph(&self) -> &GraphClient {
        &self.inner.graph
    }

    pub fn okta(&self) -> &OktaClient {
        &self.inner.okta
    }

    /// Reads both systems and returns the plan, stored as awaiting approval. Writes nothing to
    /// Graph or Okta.
    pub async fn plan(&self, req: &RepairRequest) -> Result<Plan, PlanError> {
        let plan = plan::make_plan(&self.inner, req).await?;
        let json = stored_plan(&plan);
        self.inner
            .store
            .insert_run(&NewRun {
                id: &plan.run.to_string(),
                requester_id: &plan.requester.id,
                requester_name: &plan.requester.name,
                upn: plan.upn.as_str(),
                state: RunState::AwaitingApproval,
                plan: Some(&json),
                fingerprint: Some(&plan.fingerprint),
            })
            .map_err(|e| PlanError::Internal(format!("{e:#}")))?;
        Ok(plan)
    }

    /// Diagnoses one user with reads only: nothing is written to Graph, Okta or the store.
    pub async fn diagnose(
        &self,
        upn: &crate::domain::Upn,
    ) -> Result<diagnose::Diagnosis, PlanError> {
        diagnose::diagnose(&self.inner.graph, &self.inner.okta, &self.inner.policy, upn).await
    }

    /// The same plan, read-only end to end: nothing is written to Graph, Okta or the store,
    /// and no run exists afterwards (`check-config --online --user`).
    pub async fn plan_read_only(&self, req: &RepairRequest) -> Result<Plan, PlanError> {
        plan::make_plan(&self.inner, req).await
    }

    /// Marks a planned run approved; `false` if it was not awaiting approval (already approved,
    /// rejected, expired). The caller applies the approval policy first; prefer
    /// [`Engine::record_vote`], which also records who approved.
    pub fn mark_approved(&self, run: RunId) -> anyhow::Result<bool> {
        self.inner.store.transition_run_audited(
            &run.to_string(),
            &[RunState::AwaitingApproval],
            RunState::Approved,
            None,
            &serde_json::json!({}),
        )
    }

    /// Records a vote the approval policy counted, with the plan fingerprint it saw. Returns
    /// `Some((approvals so far, whether this vote approved or rejected the run))`, or `None` when
    /// the run was no longer awaiting approval. Atomic: two approvals at the same instant
    /// approve once.
    pub fn record_vote(
        &self,
        plan: &Plan,
        voter: &crate::domain::Actor,
        vote: VoteKind,
        required: u32,
    ) -> anyhow::Result<Option<(u32, bool)>> {
        self.inner.store.record_vote(
            &plan.run.to_string(),
            &voter.id,
            &voter.name,
            vote,
            &plan.fingerprint,
            required,
        )
    }

    /// Records a single-person (break-glass) approval: the requester approving their own plan,
    /// allowed only where the operator chose it (`console --single-operator`). It alone approves
    /// the run, and the vote and the approval are marked `single_operator` in the audit log.
    pub fn record_single_operator_approval(
        &self,
        plan: &Plan,
        voter: &crate::domain::Actor,
    ) -> anyhow::Result<Option<(u32, bool)>> {
        let mut mark = serde_json::Map::new();
        mark.insert("single_operator".into(), serde_json::Value::Bool(true));
        mark.insert(
            "break_glass".into(),
            "requested and approved by one person (console --single-operator)".into(),
        );
        self.inner.store.record_vote_marked(
            &plan.run.to_string(),
            &voter.id,
            &voter.name,
            VoteKind::Approve,
            &plan.fingerprint,
            1,
            &mark,
        )
    }

    /// Moves a run that never executed to a final state (`rejected`, `expired`, `cancelled`).
    pub fn close_unexecuted(&self, run: RunId, state: RunState) -> anyhow::Result<bool> {
        self.inner.store.transition_run_audited(
            &run.to_string(),
            &[RunState::AwaitingApproval, RunState::Approved],
            state,
            None,
            &serde_json::json!({}),
        )
    }

    /// Like [`Engine::close_unexecuted`], naming who closed it in the audit log.
    pub fn close_unexecuted_by(
        &self,
        run: RunId,
        state: RunState,
        actor: &crate::domain::Actor,
    ) -> anyhow::Result<bool> {
        self.close_unexecuted_saying(run, state, actor, &[])
    }

    /// [`Engine::close_unexecuted_by`], with what the chat says about it queued in the same
    /// transaction, if the run moved.
    pub fn close_unexecuted_saying(
        &self,
        run: RunId,
        state: RunState,
        actor: &crate::domain::Actor,
        say: &[crate::store::NewMessage],
    ) -> anyhow::Result<bool> {
        self.inner.store.transition_run_saying(
            &run.to_string(),
            &[RunState::AwaitingApproval, RunState::Approved],
            state,
            Some(&actor.name),
            &serde_json::json!({"actor_id": actor.id}),
            say,
        )
    }

    /// A rejection (or approval) vote; if it rejects the run, `on_reject` is queued in the chat
    /// outbox in the same transaction. See [`Engine::record_vote`].
    pub fn record_vote_saying(
        &self,
        plan: &Plan,
        voter: &crate::domain::Actor,
        vote: VoteKind,
        required: u32,
        on_reject: &[crate::store::NewMessage],
    ) -> anyhow::Result<Option<(u32, bool)>> {
        self.inner.store.record_vote_saying(
            &plan.run.to_string(),
            &voter.id,
            &voter.name,
            vote,
            &plan.fingerprint,
            required,
            &serde_json::Map::new(),
            on_reject,
        )
    }

    /// Plans stored as awaiting approval (after a restart they still await it).
    pub fn awaiting_approval(&self) -> anyhow::Result<Vec<(Plan, i64)>> {
        let rows = self.inner.store.runs_in_state(RunState::AwaitingApproval)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match read_plan(r.plan.as_ref()?) {
                // A batch's users are approved with their batch, not one by one.
                Ok((_, plan)) if plan.batch.is_some() => None,
                Ok((_, plan)) => Some((plan, r.created_at_ms)),
                Err(e) => {
                    tracing::error!(run = %r.id, error = %e, "a plan awaiting approval cannot be read; it will expire");
                    None
                }
            })
            .collect())
    }

    /// Settles every run the previous process died in, through the same interpreter that runs
    /// live ones, then restores a provisioning pause nobody holds any more. Approved runs that
    /// never started run once if they are still young enough, and expire otherwise. One run's
    /// failure (even a panic) never stops the others, nor the pause settlement. `reporter_for`
    /// gives each run's thread. Call once on start, before taking new work.
    pub async fn recover(
        &self,
        reporter_for: impl Fn(&Plan) -> Reporter,
    ) -> anyhow::Result<Vec<RunSummary>> {
        use tracing::Instrument;
        let store = &self.inner.store;
        let mut settled = Vec::new();
        // Interrupted runs first (they may hold the pause), then approved runs never started.
        // All of a kind at once, unbounded on purpose: a run waiting for the next provisioning
        // window must not hold a slot the runs holding the current one need to finish. The
        // clients' pacing and in-flight caps keep the APIs within their limits.
        for state in [RunState::Running, RunState::Approved] {
            let mut tasks = tokio::task::JoinSet::new();
            for row in store.runs_in_state(state)? {
                let parsed = row
                    .plan
                    .as_ref()
                    .ok_or_else(|| "no plan was stored".to_owned())
                    .and_then(read_plan);
                let (version, plan) = match parsed {
                    Ok(p) => p,
                    Err(why) => {
                        settled.push(self.unreadable(&row, &why));
                        continue;
                    }
                };
                if state == RunState::Approved && plan.batch.is_some() {
                    // Its batch continues it, a few at a time inside the batch's window
                    // (`recover_batches`).
                    continue;
                }
                let reporter = reporter_for(&plan);
                let engine = self.clone();
                let created = row.created_at_ms;
                let span = tracing::info_span!("run", run = %plan.run.short(), target = %plan.upn, recovering = true);
                tasks.spawn(
                    async move {
                        let emit = engine.emitter(&reporter);
                        match state {
                            RunState::Running => {
                                execute::resume(&engine.inner, &plan, version, &emit).await
                            }
                            _ if execute::approved_still_fresh(&engine.inner, created) => {
                                execute::execute(&engine.inner, &plan, &emit).await
                            }
                            _ => engine.expire_approved(&plan, &emit),
                        }
                    }
                    .instrument(span),
                );
            }
            while let Some(done) = tasks.join_next().await {
                match done {
                    Ok(s) => settled.push(s),
                    Err(e) => {
                        tracing::error!(error = %e, "a recovery task failed; the others go on")
                    }
                }
            }
        }
        if let Err(e) = self.inner.pause.settle_orphans().await {
            tracing::error!(error = %e, "restoring an orphaned provisioning pause failed");
        }
        Ok(settled)
    }

    /// An approved run too old to run after a restart: expired, and the thread says why.
    fn expire_approved(&self, plan: &Plan, emit: &run::Emitter<'_>) -> RunSummary {
        let moved = self.inner.store.transition_run_audited(
            &plan.run.to_string(),
            &[RunState::Approved],
            RunState::Expired,
            None,
            &serde_json::json!({"reason": "approved but not started before a restart, and older than repair.approved_run_max_age"}),
        );
        let summary = RunSummary {
            run: plan.run,
            upn: plan.upn.to_string(),
            outcome: RunOutcome::NotExecuted,
            entra_immutable_id: plan.entra_immutable_id_before.clone(),
            okta_immutable_id: plan.okta_immutable_id_before().map(str::to_owned),
            provisioning: ProvisioningState::Untouched,
            failed_step: None,
            message: format!(
                "the run was approved but had not started when the bot stopped, and it is now older than {} min; nothing was done. Run the command again for a new plan.",
                self.inner.policy.approved_run_max_age.as_secs() / 60
            ),
            duration: std::time::Duration::ZERO,
            audit_head: execute::audit_head(&self.inner),
        };
        if let Err(e) = moved {
            tracing::error!(run = %plan.run, error = %format!("{e:#}"), "could not expire an approved run");
        }
        emit.send(RunEvent::Finished(summary.clone()));
        summary
    }

    /// A stored run whose plan this version cannot read: handed to a person, loudly.
    fn unreadable(&self, row: &crate::store::RunRow, why: &str) -> RunSummary {
        let message = format!(
            "ACTION NEEDED: run {} for {} was interrupted, and this version cannot read its plan ({why}). Check the user: its UPN must be {} and its ImmutableID one value in Entra and Okta; check that Okta provisioning for the Office 365 app is on as before.",
            row.id, row.upn, row.upn
        );
        tracing::error!(run = %row.id, %why, "a stored run cannot be settled automatically");
        let summary = serde_json::json!({"outcome": "NeedsAttention", "message": message});
        if let Err(e) =
            self.inner
                .store
                .set_run_summary(&row.id, RunState::NeedsAttention, &summary)
        {
            tracing::error!(run = %row.id, error = %format!("{e:#}"), "could not store the hand-over");
        }
        RunSummary {
            run: RunId::parse(&row.id).unwrap_or_else(|_| RunId::new()),
            upn: row.upn.clone(),
            outcome: RunOutcome::NeedsAttention,
            entra_immutable_id: None,
            okta_immutable_id: None,
            provisioning: ProvisioningState::Untouched,
            failed_step: None,
            message,
            duration: std::time::Duration::ZERO,
            audit_head: None,
        }
    }

    /// Takes the lease that makes this instance the only one managing the Okta app, and renews
    /// it in the background until the returned guard is dropped.
    pub fn claim_okta_app(
        &self,
        instance: &str,
        ttl: std::time::Duration,
    ) -> anyhow::Result<LeaseGuard> {
        let name = format!("okta-app:{}", self.inner.okta.app_id());
        if let Err(held) = self.inner.store.acquire_lease(&name, instance, ttl)? {
            anyhow::bail!(
                "another instance manages the Okta app {}: {held}",
                self.inner.okta.app_id()
            );
        }
        let store = self.inner.store.clone();
        let (holder, lease) = (instance.to_owned(), name.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.acquire_lease(&lease, &holder, ttl) {
                    Ok(Ok(())) => {}
                    Ok(Err(held)) => tracing::error!(%held, "lost the Okta app lease"),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "renewing the Okta app lease failed")
                    }
                }
            }
        });
        Ok(LeaseGuard {
            store: self.inner.store.clone(),
            name,
            holder: instance.to_owned(),
            task,
        })
    }
}

/// Keeps the Okta app lease renewed; releases it when dropped.
pub struct LeaseGuard {
    store: Store,
    name: String,
    holder: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.store.release_lease(&self.name, &self.holder);
    }
}

impl Engine {
    /// Executes an approved plan; exactly once per run, never two runs for one user at a time.
    pub async fn execute(&self, plan: &Plan, reporter: &Reporter) -> RunSummary {
        use tracing::Instrument;
        let span = tracing::info_span!("run", run = %plan.run.short(), target = %plan.upn);
        let emit = self.emitter(reporter);
        execute::execute(&self.inner, plan, &emit)
            .instrument(span)
            .await
    }
}
