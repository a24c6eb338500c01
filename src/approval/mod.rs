//! The two-person rule: who may ask, who may approve, how many approvals, for how long.

use crate::config::ApprovalSettings;
use crate::domain::{Actor, RunId};
use std::collections::HashSet;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Approve,
    Reject,
}

/// Why a reaction did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    OwnRequest,
    NotApprover,
    NotRequesterOrApprover,
    Bot,
    AlreadyCounted,
}

impl Ignored {
    pub fn explain(self) -> &'static str {
        match self {
            Ignored::OwnRequest => "you asked for this repair; a second person must approve it",
            Ignored::NotApprover => "you do not hold an approver role",
            Ignored::NotRequesterOrApprover => "only the requester or an approver can reject",
            Ignored::Bot => "bots cannot approve",
            Ignored::AlreadyCounted => "your approval is already counted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Enough approvals: execute now.
    Approved {
        by: Vec<Actor>,
    },
    Rejected {
        by: Actor,
    },
    /// Counted; more approvals needed.
    Counted {
        have: u32,
        need: u32,
    },
    /// Not counted. `first_time` is true once per person, so the thread says why only once.
    Ignored {
        reason: Ignored,
        first_time: bool,
    },
    Expired,
}

/// The configured policy.
#[derive(Debug, Clone)]
pub struct ApprovalPolicy {
    pub requester_roles: Vec<String>,
    pub approver_roles: Vec<String>,
    pub approvals_required: u32,
    pub ttl: Duration,
}

impl From<&ApprovalSettings> for ApprovalPolicy {
    fn from(s: &ApprovalSettings) -> Self {
        Self {
            requester_roles: s.requester_roles.clone(),
            approver_roles: s.approver_roles.clone(),
            approvals_required: s.approvals_required.max(1),
            ttl: s.ttl,
        }
    }
}

impl ApprovalPolicy {
    pub fn may_request(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.requester_roles.contains(r))
    }

    pub fn may_approve(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.approver_roles.contains(r))
    }
}

/// Approval state of one run awaiting approval.
#[derive(Debug, Clone)]
pub struct PendingApproval {
    pub run: RunId,
    pub requester: Actor,
    pub created_at_ms: i64,
    approvals: Vec<Actor>,
    told: HashSet<String>,
}

impl PendingApproval {
    pub fn new(run: RunId, requester: Actor, created_at_ms: i64) -> Self {
        Self {
            run,
            requester,
            created_at_ms,
            approvals: Vec::new(),
            told: HashSet::new(),
        }
    }

    /// Taken up again after a restart, with the approvals already recorded.
    pub fn with_approvals(
        run: RunId,
        requester: Actor,
        created_at_ms: i64,
        approvals: Vec<Actor>,
    ) -> Self {
        Self {
            approvals,
            ..Self::new(run, requester, created_at_ms)
        }
    }

    /// Approvals counted so far, in order.
    pub fn approvals(&self) -> &[Actor] {
        &self.approvals
    }

    pub fn expires_at_ms(&self, policy: &ApprovalPolicy) -> i64 {
        self.created_at_ms + policy.ttl.as_millis() as i64
    }

    /// Judges one reaction. The caller executes on `Approved` through the store's atomic
    /// transition, so two approvals at the same instant still run the repair once.
    pub fn vote(
        &mut self,
        policy: &ApprovalPolicy,
        voter: &Actor,
        roles: &[String],
        is_bot: bool,
        vote: Vote,
        now_ms: i64,
    ) -> Verdict {
        if now_ms >= self.expires_at_ms(policy) {
            return Verdict::Expired;
        }
        let approver = policy.may_approve(roles);
        let own = voter.id == self.requester.id;
        let ignore = match vote {
            _ if is_bot => Some(Ignored::Bot),
            Vote::Approve if own => Some(Ignored::OwnRequest),
            Vote::Approve if !approver => Some(Ignored::NotApprover),
            Vote::Approve if self.approvals.iter().any(|a| a.id == voter.id) => {
                Some(Ignored::AlreadyCounted)
            }
            Vote::Reject if !(own || approver) => Some(Ignored::NotRequesterOrApprover),
            _ => None,
        };
        if let Some(reason) = ignore {
            let first_time = self.told.insert(voter.id.clone());
            return Verdict::Ignored { reason, first_time };
        }
        match vote {
            Vote::Reject => Verdict::Rejected { by: voter.clone() },
            Vote::Approve => {
                self.approvals.push(voter.clone());
                let have = self.approvals.len() as u32;
                if have >= policy.approvals_required {
                    Verdict::Approved {
                        by: self.approvals.clone(),
                    }
                } else {
                    Verdict::Counted {
                        have,
                        need: policy.approvals_required,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(n: u32) -> ApprovalPolicy {
        ApprovalPolicy {
            requester_roles: vec!["admin".into()],
            approver_roles: vec!["approver".into()],
            approvals_required: n,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn requester_never_approves_own_run_and_is_told_once() {
        let p = policy(1);
        let alice = Actor::new("1", "alice");
        let mut a = PendingApproval::new(RunId::new(), alice.clone(), 0);
        let roles = vec!["approver".to_string()];
        assert_eq!(
            a.vote(&p, &alice, &roles, false, Vote::Approve, 1),
            Verdict::Ignored {
                reason: Ignored::OwnRequest,
                first_time: true
            }
        );
        assert_eq!(
            a.vote(&p, &alice, &roles, false, Vote::Approve, 2),
            Verdict::Ignored {
                reason: Ignored::OwnRequest,
                first_time: false
            }
        );
    }

    #[test]
    fn approvals_count_and_expire() {
        let p = policy(2);
        let mut a = PendingApproval::new(RunId::new(), Actor::new("1", "alice"), 0);
        let ap = vec!["approver".to_string()];
        let bob = Actor::new("2", "bob");
        let carol = Actor::new("3", "carol");
        let mallory = Actor::new("4", "mallory");
        assert!(matches!(
            a.vote(&p, &mallory, &[], false, Vote::Approve, 1),
            Verdict::Ignored {
                reason: Ignored::NotApprover,
                ..
            }
        ));
        assert!(matches!(
            a.vote(&p, &mallory, &[], false, Vote::Reject, 1),
            Verdict::Ignored {
                reason: Ignored::NotRequesterOrApprover,
                ..
            }
        ));
        assert_eq!(
            a.vote(&p, &bob, &ap, false, Vote::Approve, 2),
            Verdict::Counted { have: 1, need: 2 }
        );
        assert!(matches!(
            a.vote(&p, &bob, &ap, false, Vote::Approve, 3),
            Verdict::Ignored {
                reason: Ignored::AlreadyCounted,
                ..
            }
        ));
        assert!(matches!(
            a.vote(&p, &carol, &ap, false, Vote::Approve, 4),
            Verdict::Approved { .. }
        ));
        assert_eq!(
            a.vote(&p, &carol, &ap, false, Vote::Approve, 60_000),
            Verdict::Expired
        );
        assert!(matches!(
            a.vote(&p, &Actor::new("9", "bot"), &ap, true, Vote::Approve, 5),
            Verdict::Ignored {
                reason: Ignored::Bot,
                ..
            }
        ));
    }

    #[test]
    fn requester_may_reject() {
        let p = policy(1);
        let alice = Actor::new("1", "alice");
        let mut a = PendingApproval::new(RunId::new(), alice.clone(), 0);
        assert!(matches!(
            a.vote(&p, &alice, &[], false, Vote::Reject, 1),
            Verdict::Rejected { .. }
        ));
    }
}
