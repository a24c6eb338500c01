//! Approval votes: each voter counted once, the run approved (or rejected) atomically when the
//! vote that decides it arrives.

use super::{audit, now_ms, parse_state, Store, VoteKind};
use crate::domain::RunState;
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Records a counted vote with the plan fingerprint it saw. For approvals, moves the run to
    /// `approved` once `required` distinct approvers have voted — atomically, so two approvals
    /// at the same instant approve (and execute) once. Returns the approvals counted so far and
    /// whether this vote approved the run; `None` when the run is not awaiting approval.
    pub fn record_vote(
        &self,
        run_id: &str,
        voter_id: &str,
        voter_name: &str,
        vote: VoteKind,
        fingerprint: &str,
        required: u32,
    ) -> anyhow::Result<Option<(u32, bool)>> {
        self.record_vote_marked(
            run_id,
            voter_id,
            voter_name,
            vote,
            fingerprint,
            required,
            &serde_json::Map::new(),
        )
    }

    /// [`Store::record_vote`], with `mark` added to the vote's audit record and to the state
    /// change it causes, in the same transaction (a single-person approval says so where it is
    /// recorded, not in a record that could be missing).
    #[allow(clippy::too_many_arguments)]
    pub fn record_vote_marked(
        &self,
        run_id: &str,
        voter_id: &str,
        voter_name: &str,
        vote: VoteKind,
        fingerprint: &str,
        required: u32,
        mark: &serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<Option<(u32, bool)>> {
        self.record_vote_saying(
            run_id,
            voter_id,
            voter_name,
            vote,
            fingerprint,
            required,
            mark,
            &[],
        )
    }

    /// [`Store::record_vote_marked`], queuing `on_reject` in the chat outbox in the same
    /// transaction if this vote rejected the run.
    #[allow(clippy::too_many_arguments)]
    pub fn record_vote_saying(
        &self,
        run_id: &str,
        voter_id: &str,
        voter_name: &str,
        vote: VoteKind,
        fingerprint: &str,
        required: u32,
        mark: &serde_json::Map<String, serde_json::Value>,
        on_reject: &[super::NewMessage],
    ) -> anyhow::Result<Option<(u32, bool)>> {
        let with_mark = |mut v: serde_json::Value| {
            if let Some(o) = v.as_object_mut() {
                o.extend(mark.clone());
            }
            v
        };
        let now = now_ms();
        self.tx(|c| {
            let state = c
                .query_row("SELECT state FROM runs WHERE id = ?1", params![run_id], |r| {
                    parse_state(&r.get::<_, String>(0)?, 0, run_id)
                })
                .optional()?;
            if state != Some(RunState::AwaitingApproval) {
                return Ok(None);
            }
            let inserted = c.execute(
                "INSERT OR IGNORE INTO approvals (run_id, voter_id, voter_name, vote, fingerprint, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run_id, voter_id, voter_name, vote.as_str(), fingerprint, now],
            )?;
            if inserted == 1 {
                audit::append(
                    c,
                    Some(run_id),
                    vote.as_str(),
                    Some(voter_name),
                    &with_mark(serde_json::json!({"voter_id": voter_id, "fingerprint": fingerprint})),
                )?;
            }
            let count: u32 = c.query_row(
                "SELECT COUNT(*) FROM approvals WHERE run_id = ?1 AND vote = 'approve'",
                params![run_id],
                |r| r.get(0),
            )?;
            let to = match vote {
                VoteKind::Reject if inserted == 1 => Some(RunState::Rejected),
                VoteKind::Approve if count >= required => Some(RunState::Approved),
                _ => None,
            };
            let mut moved = false;
            if let Some(to) = to {
                c.execute(
                    "UPDATE runs SET state = ?1, updated_at_ms = ?2 WHERE id = ?3",
                    params![to.as_str(), now, run_id],
                )?;
                audit::append(c, Some(run_id), to.as_str(), Some(voter_name), &with_mark(serde_json::json!({"approvals": count})))?;
                if to == RunState::Rejected {
                    for m in on_reject {
                        super::outbox::put(c, m)?;
                    }
                }
                moved = true;
            }
            Ok(Some((count, moved)))
        })
    }

    /// Approvers recorded for a run, in order.
    pub fn approvers(&self, run_id: &str) -> anyhow::Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT voter_id, voter_name FROM approvals WHERE run_id = ?1 AND vote = 'approve' ORDER BY at_ms, voter_id",
            )?;
            let rows = st.query_map(params![run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{new_run, temp_store};

    #[test]
    fn two_simultaneous_approvals_approve_once() {
        let (s, _d) = temp_store();
        s.insert_run(&new_run("r1", "a@b.com")).unwrap();
        let moved: Vec<bool> = std::thread::scope(|scope| {
            let hs: Vec<_> = ["bob", "carol"]
                .into_iter()
                .map(|who| {
                    let s = s.clone();
                    scope.spawn(move || {
                        s.record_vote("r1", who, who, VoteKind::Approve, "fp", 1)
                            .unwrap()
                            .map(|(_, m)| m)
                            .unwrap_or(false)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(moved.iter().filter(|m| **m).count(), 1, "{moved:?}");
        assert_eq!(s.run("r1").unwrap().unwrap().state, RunState::Approved);
        // A duplicate after approval changes nothing.
        assert_eq!(
            s.record_vote("r1", "bob", "bob", VoteKind::Approve, "fp", 1)
                .unwrap(),
            None
        );
    }

    #[test]
    fn duplicate_votes_count_once() {
        let (s, _d) = temp_store();
        s.insert_run(&new_run("r1", "a@b.com")).unwrap();
        assert_eq!(
            s.record_vote("r1", "bob", "bob", VoteKind::Approve, "fp", 2)
                .unwrap(),
            Some((1, false))
        );
        assert_eq!(
            s.record_vote("r1", "bob", "bob", VoteKind::Approve, "fp", 2)
                .unwrap(),
            Some((1, false))
        );
        assert_eq!(
            s.record_vote("r1", "carol", "carol", VoteKind::Approve, "fp", 2)
                .unwrap(),
            Some((2, true))
        );
        assert_eq!(s.approvers("r1").unwrap().len(), 2);
    }
}
