//! What a run reports as it goes: one event per step, compensation and outcome, for any front end.

use crate::domain::{RunId, RunState};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::mpsc;

/// The nine steps of the seed procedure, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepKind {
    UpnToTemporary,
    SetImmutableId,
    UpnBack,
    VerifyEntra,
    PauseProvisioning,
    Unassign,
    Reassign,
    VerifyOkta,
    ResumeProvisioning,
}

impl StepKind {
    pub const ALL: [StepKind; 9] = [
        StepKind::UpnToTemporary,
        StepKind::SetImmutableId,
        StepKind::UpnBack,
        StepKind::VerifyEntra,
        StepKind::PauseProvisioning,
        StepKind::Unassign,
        StepKind::Reassign,
        StepKind::VerifyOkta,
        StepKind::ResumeProvisioning,
    ];

    pub fn number(self) -> u8 {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0) as u8 + 1
    }

    pub fn title(self) -> &'static str {
        match self {
            StepKind::UpnToTemporary => "UPN to the initial domain",
            StepKind::SetImmutableId => "set ImmutableID in Entra",
            StepKind::UpnBack => "UPN back",
            StepKind::VerifyEntra => "verify in Entra",
            StepKind::PauseProvisioning => "pause Okta provisioning",
            StepKind::Unassign => "unassign from Office 365 in Okta",
            StepKind::Reassign => "reassign with the new ImmutableID",
            StepKind::VerifyOkta => "verify in Okta",
            StepKind::ResumeProvisioning => "resume Okta provisioning",
        }
    }

    /// Journal label: `"3"` for forward steps.
    pub fn label(self) -> String {
        self.number().to_string()
    }
}

/// Whether an entry moves the repair forward or undoes / completes it after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Forward,
    /// Undoing an earlier step.
    Compensation,
    /// Completing the repair because undoing is impossible.
    RollForward,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    Done,
    Skipped(String),
    /// Written, but reads still show the old value: replication lag, not failure.
    Lagging(String),
    Failed {
        code: Option<String>,
        message: String,
    },
    /// Something a human must do now, said exactly.
    NeedsHuman(String),
}

impl StepOutcome {
    /// A short name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            StepOutcome::Done => "done",
            StepOutcome::Skipped(_) => "skipped",
            StepOutcome::Lagging(_) => "lagging",
            StepOutcome::Failed { .. } => "failed",
            StepOutcome::NeedsHuman(_) => "needs_human",
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            StepOutcome::Failed { .. } | StepOutcome::NeedsHuman(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    pub run: RunId,
    pub step: StepKind,
    pub phase: Phase,
    pub outcome: StepOutcome,
    pub before: String,
    pub after: String,
    #[serde(with = "crate::directory::millis")]
    pub duration: Duration,
    pub request_ids: Vec<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    /// Entra and Okta both hold the new ImmutableID.
    Repaired,
    /// A step failed; after rolling forward both systems hold the new ImmutableID.
    RepairedAfterRollForward,
    /// A step failed; everything the run changed was undone.
    RolledBack,
    /// A step failed; nothing is half-done, but Entra and Okta hold different values (said exactly).
    Diverged,
    /// A compensation failed; the summary says what a human must do.
    NeedsAttention,
    /// The world changed since the plan was approved; nothing was written.
    Stale,
    /// Not executed (already running, not approved).
    NotExecuted,
    /// The bot stopped with the run at a safe boundary; it is still `running` and resumes when
    /// the bot starts again.
    Parked,
}

impl RunOutcome {
    /// The run's state in the store.
    pub fn state(self) -> RunState {
        match self {
            RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward => RunState::Succeeded,
            RunOutcome::RolledBack => RunState::RolledBack,
            RunOutcome::Diverged => RunState::Diverged,
            RunOutcome::NeedsAttention => RunState::NeedsAttention,
            RunOutcome::Stale => RunState::Stale,
            RunOutcome::NotExecuted => RunState::NotExecuted,
            RunOutcome::Parked => RunState::Running,
        }
    }
}

/// Provisioning of the Office 365 app as this run left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProvisioningState {
    Untouched,
    /// Restored exactly as snapshotted (read back and compared).
    Restored,
    /// Still paused for other runs in the same window; the last one out restores it.
    HeldByOthers(usize),
    /// Restoring failed: a human must restore it.
    StillPaused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: RunId,
    pub upn: String,
    pub outcome: RunOutcome,
    /// Entra's ImmutableID at the end, as last written or read.
    pub entra_immutable_id: Option<String>,
    /// Okta's app-user ImmutableID at the end.
    pub okta_immutable_id: Option<String>,
    pub provisioning: ProvisioningState,
    pub failed_step: Option<StepKind>,
    pub message: String,
    #[serde(with = "crate::directory::millis")]
    pub duration: Duration,
    /// The audit log's head (`seq:hash-prefix`) once this outcome was recorded, posted so the
    /// log can later be checked against a copy nobody with the data directory can edit. Not
    /// stored with the summary: the outcome's own audit record is what moves the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunEvent {
    Started {
        run: RunId,
    },
    /// Something the thread should be told that is not a step (e.g. a restart).
    Note {
        run: RunId,
        text: String,
    },
    Step(StepReport),
    Finished(RunSummary),
}

/// Where a run's events go. Any chat front end drains the receiving end.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: Option<mpsc::UnboundedSender<RunEvent>>,
}

impl Reporter {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<RunEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx: Some(tx) }, rx)
    }

    /// Drops every event (benchmarks).
    pub fn discard() -> Self {
        Self { tx: None }
    }

    pub fn send(&self, event: RunEvent) {
        if let Some(tx) = &self.tx {
            // A front end that went away must not stop a repair half-way.
            let _ = tx.send(event);
        }
    }
}
