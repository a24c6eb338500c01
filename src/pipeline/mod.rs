//! The repair engine: plan (read-only), then the nine steps with journalling and compensation.

pub mod capabilities;
mod execute;
pub mod journal;
pub mod locks;
pub mod pause;
pub mod plan;
pub mod report;

pub use plan::{InputError, Plan, PlanError, Refusal, RepairMode, RepairRequest};
pub use report::{
    Phase, ProvisioningState, Reporter, RunEvent, RunOutcome, RunSummary, StepKind, StepOutcome,
    StepReport,
};

use crate::config::RepairPolicy;
use crate::directory::graph::GraphClient;
use crate::directory::okta::OktaClient;
use crate::domain::RunId;
use crate::store::{NewRun, Store};
use locks::UserLocks;
use pause::{PauseManager, PauseTiming};
use std::sync::Arc;

/// Run states in the store before execution.
pub const AWAITING_APPROVAL: &str = "awaiting_approval";
pub const APPROVED: &str = "approved";

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
                state: AWAITING_APPROVAL,
                plan: Some(&json),
                fingerprint: Some(&plan.fingerprint),
            })
            .map_err(|e| PlanError::Internal(format!("{e:#}")))?;
        Ok(plan)
    }

    /// Marks a planned run approved; `false` if it was not awaiting approval (already approved,
    /// rejected, expired). The caller applies the approval policy first.
    pub fn mark_approved(&self, run: RunId) -> anyhow::Result<bool> {
        self.inner
            .store
            .transition_run(&run.to_string(), &[AWAITING_APPROVAL], APPROVED)
    }

    /// Moves a run that never executed to a final state (`rejected`, `expired`, `cancelled`).
    pub fn close_unexecuted(&self, run: RunId, state: &str) -> anyhow::Result<bool> {
        self.inner
            .store
            .transition_run(&run.to_string(), &[AWAITING_APPROVAL, APPROVED], state)
    }

    /// Executes an approved plan; exactly once per run, never two runs for one user at a time.
    pub async fn execute(&self, plan: &Plan, reporter: &Reporter) -> RunSummary {
        execute::execute(&self.inner, plan, reporter).await
    }
}
