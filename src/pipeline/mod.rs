//! The repair engine: plan (read-only), then the nine steps with journalling and compensation.

pub mod capabilities;
mod execute;
pub mod journal;
pub mod locks;
pub mod pause;
pub mod plan;
mod refusal;
pub mod report;

pub use plan::{InputError, Plan, RepairMode, RepairRequest};
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
            }),
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
        let json = serde_json::to_value(&plan).map_err(|e| PlanError::Internal(e.to_string()))?;
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
        self.inner.store.transition_run_audited(
            &run.to_string(),
            &[RunState::AwaitingApproval, RunState::Approved],
            state,
            Some(&actor.name),
            &serde_json::json!({"actor_id": actor.id}),
        )
    }

    /// Plans stored as awaiting approval (after a restart they still await it).
    pub fn awaiting_approval(&self) -> anyhow::Result<Vec<(Plan, i64)>> {
        let rows = self.inner.store.runs_in_state(RunState::AwaitingApproval)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let plan: Plan = serde_json::from_value(r.plan?).ok()?;
                Some((plan, r.created_at_ms))
            })
            .collect())
    }

    /// Settles every run the previous process died in — rolled forward from its journal, or its
    /// interrupted rollback completed — then restores a provisioning pause nobody holds any more.
    /// `reporter_for` gives each run's thread. Call once on start, before taking new work.
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
                let Some(plan) = row
                    .plan
                    .clone()
                    .and_then(|p| serde_json::from_value::<Plan>(p).ok())
                else {
                    tracing::error!(run = %row.id, "interrupted run has no readable plan");
                    continue;
                };
                let reporter = reporter_for(&plan);
                let journal = store.journal(&row.id)?;
                let engine = self.clone();
                let span = tracing::info_span!("run", run = %plan.run.short(), target = %plan.upn, recovering = true);
                tasks.spawn(
                    async move {
                        if state == RunState::Approved {
                            // Approved but never started: execute it now, exactly once.
                            engine.execute(&plan, &reporter).await
                        } else {
                            execute::resume(&engine.inner, &plan, &journal, &reporter).await
                        }
                    }
                    .instrument(span),
                );
            }
            while let Some(done) = tasks.join_next().await {
                settled.push(done.map_err(|e| anyhow::anyhow!("a recovery task failed: {e}"))?);
            }
        }
        self.inner
            .pause
            .settle_orphans()
            .await
            .map_err(|e| anyhow::anyhow!("restoring an orphaned provisioning pause failed: {e}"))?;
        Ok(settled)
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
        execute::execute(&self.inner, plan, reporter)
            .instrument(span)
            .await
    }
}
