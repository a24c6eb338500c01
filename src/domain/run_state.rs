//! The life of a run as one enum: the only spelling of a run's state, in the store and in code.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a run stands. Stored as its [`RunState::as_str`] name.
///
/// `AwaitingApproval → Approved → Running → {Succeeded, RolledBack, Diverged, NeedsAttention,
/// Stale, NotExecuted}`; a run that never executed ends `Rejected`, `Expired` or `Cancelled`.
/// Recovery executes `Approved` runs once and settles `Running` ones; nothing else is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    AwaitingApproval,
    Approved,
    Running,
    Succeeded,
    RolledBack,
    Diverged,
    NeedsAttention,
    Stale,
    NotExecuted,
    Rejected,
    Expired,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 12] = [
        RunState::AwaitingApproval,
        RunState::Approved,
        RunState::Running,
        RunState::Succeeded,
        RunState::RolledBack,
        RunState::Diverged,
        RunState::NeedsAttention,
        RunState::Stale,
        RunState::NotExecuted,
        RunState::Rejected,
        RunState::Expired,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::AwaitingApproval => "awaiting_approval",
            RunState::Approved => "approved",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::RolledBack => "rolled_back",
            RunState::Diverged => "diverged",
            RunState::NeedsAttention => "needs_attention",
            RunState::Stale => "stale",
            RunState::NotExecuted => "not_executed",
            RunState::Rejected => "rejected",
            RunState::Expired => "expired",
            RunState::Cancelled => "cancelled",
        }
    }

    /// No further transition leaves this state.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RunState::AwaitingApproval | RunState::Approved | RunState::Running
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run state {0:?}")]
pub struct UnknownRunState(pub String);

impl FromStr for RunState {
    type Err = UnknownRunState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownRunState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in RunState::ALL {
            assert_eq!(st.as_str().parse::<RunState>(), Ok(st));
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert!("runnning".parse::<RunState>().is_err());
    }
}
