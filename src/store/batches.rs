//! Batches: a bulk repair's record — who asked, its member runs in order, the users refused at
//! plan time, its state — moved between states atomically with its members and the audit log.

use super::{audit, now_ms, parse_json, Store};
use crate::domain::RunState;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The row format this version writes.
pub const BATCH_FORMAT: i64 = 1;

/// Where a batch stands. Its users' runs carry their own states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    AwaitingApproval,
    /// Approved: its users are being repaired (also after a restart, until done).
    Running,
    Done,
    Rejected,
    Expired,
    /// Cancelled before approval.
    Cancelled,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::AwaitingApproval => "awaiting_approval",
            BatchState::Running => "running",
            BatchState::Done => "done",
            BatchState::Rejected => "rejected",
            BatchState::Expired => "expired",
            BatchState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            BatchState::AwaitingApproval,
            BatchState::Running,
            BatchState::Done,
            BatchState::Rejected,
            BatchState::Expired,
            BatchState::Cancelled,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
    }
}

/// A user refused at plan time, kept with the batch so it is listed, never dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedUser {
    pub upn: String,
    pub why: String,
}

#[derive(Debug, Clone)]
pub struct BatchRow {
    pub id: String,
    pub format: i64,
    pub created_at_ms: i64,
    pub requester_id: String,
    pub requester_name: String,
    pub reason: Option<String>,
    pub state: BatchState,
    pub members: Vec<String>,
    pub refused: Vec<RefusedUser>,
    pub summary: Option<Value>,
}

pub struct NewBatch<'a> {
    pub id: &'a str,
    pub requester_id: &'a str,
    pub requester_name: &'a str,
    pub reason: Option<&'a str>,
    pub members: &'a [String],
    pub refused: &'a [RefusedUser],
}

const SELECT: &str = "SELECT id, format, created_at_ms, requester_id, requester_name, reason,
    state, members_json, refused_json, summary_json FROM batches";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchRow> {
    let state: String = r.get(6)?;
    let members: String = r.get(7)?;
    let refused: String = r.get(8)?;
    let bad = |col: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            col,
            rusqlite::types::Type::Text,
            what.to_owned().into(),
        )
    };
    Ok(BatchRow {
        id: r.get(0)?,
        format: r.get(1)?,
        created_at_ms: r.get(2)?,
        requester_id: r.get(3)?,
        requester_name: r.get(4)?,
        reason: r.get(5)?,
        state: BatchState::parse(&state)
            .ok_or_else(|| bad(6, &format!("unknown batch state {state:?}")))?,
        members: serde_json::from_str(&members).map_err(|_| bad(7, "members"))?,
        refused: serde_json::from_str(&refused).map_err(|_| bad(8, "refused users"))?,
        summary: r.get::<_, Option<String>>(9)?.map(parse_json),
    })
}

impl Store {
    /// Stores a batch awaiting approval; its member runs must already be stored.
    pub fn insert_batch(&self, b: &NewBatch<'_>) -> anyhow::Result<()> {
        let now = now_ms();
        let members = serde_json::to_string(b.members)?;
        let refused = serde_json::to_string(b.refused)?;
        self.tx(|c| {
            audit::append(
                c,
                Some(b.id),
                "batch_request",
                Some(b.requester_name),
                &serde_json::json!({"members": b.members, "refused": b.refused, "reason": b.reason}),
            )?;
            c.execute(
                "INSERT INTO batches (id, format, created_at_ms, updated_at_ms, requester_id,
                    requester_name, reason, state, members_json, refused_json)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    b.id,
                    BATCH_FORMAT,
                    now,
                    b.requester_id,
                    b.requester_name,
                    b.reason,
                    BatchState::AwaitingApproval.as_str(),
                    members,
                    refused
                ],
            )
        })?;
        Ok(())
    }

    pub fn batch(&self, id: &str) -> anyhow::Result<Option<BatchRow>> {
        self.with(|c| {
            c.query_row(&format!("{SELECT} WHERE id = ?1"), params![id], from_row)
                .optional()
        })
    }

    pub fn batches_in_state(&self, state: BatchState) -> anyhow::Result<Vec<BatchRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("{SELECT} WHERE state = ?1 ORDER BY created_at_ms"))?;
            let rows = st.query_map(params![state.as_str()], from_row)?;
            rows.collect()
        })
    }

    /// Batches whose id starts with `prefix` (at most a few: ids are random).
    pub fn batches_by_prefix(&self, prefix: &str) -> anyhow::Result<Vec<BatchRow>> {
        let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
        self.with(|c| {
            let mut st = c.prepare(&format!("{SELECT} WHERE id LIKE ?1 LIMIT 5"))?;
            let rows = st.query_map(params![pattern], from_row)?;
            rows.collect()
        })
    }

    pub fn recent_batches(&self, limit: u32) -> anyhow::Result<Vec<BatchRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "{SELECT} ORDER BY created_at_ms DESC, rowid DESC LIMIT ?1"
            ))?;
            let rows = st.query_map(params![limit], from_row)?;
            rows.collect()
        })
    }

    /// Moves a batch from `from` to `to`, and each member run in `members_from` to
    /// `members_to`, in one transaction with the audit record: the approval of a batch is the
    /// approval of every user in it, or of none. Returns whether the batch moved.
    #[allow(clippy::too_many_arguments)]
    pub fn transition_batch(
        &self,
        id: &str,
        from: BatchState,
        to: BatchState,
        members_from: &[RunState],
        members_to: Option<RunState>,
        actor: Option<&str>,
        detail: &Value,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let from_states =
            serde_json::to_string(&members_from.iter().map(|s| s.as_str()).collect::<Vec<_>>())?;
        self.tx(|c| {
            let n = c.execute(
                "UPDATE batches SET state = ?1, updated_at_ms = ?2 WHERE id = ?3 AND state = ?4",
                params![to.as_str(), now, id, from.as_str()],
            )?;
            if n != 1 {
                return Ok(false);
            }
            audit::append(
                c,
                Some(id),
                &format!("batch_{}", to.as_str()),
                actor,
                detail,
            )?;
            if let Some(to_run) = members_to {
                let members: String = c.query_row(
                    "SELECT members_json FROM batches WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )?;
                c.execute(
                    "UPDATE runs SET state = ?1, updated_at_ms = ?2
                     WHERE id IN (SELECT value FROM json_each(?3))
                       AND state IN (SELECT value FROM json_each(?4))",
                    params![to_run.as_str(), now, members, from_states],
                )?;
            }
            Ok(true)
        })
    }

    /// Cancels the batch's users that have not started (approved, not running): a cancel stops
    /// a batch between users. Returns how many were cancelled.
    pub fn cancel_batch_rest(&self, id: &str, actor: Option<&str>) -> anyhow::Result<usize> {
        let now = now_ms();
        self.tx(|c| {
            let members: String = c.query_row(
                "SELECT members_json FROM batches WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )?;
            let n = c.execute(
                "UPDATE runs SET state = 'cancelled', updated_at_ms = ?1
                 WHERE id IN (SELECT value FROM json_each(?2)) AND state = 'approved'",
                params![now, members],
            )?;
            audit::append(
                c,
                Some(id),
                "batch_cancel_rest",
                actor,
                &serde_json::json!({"cancelled": n}),
            )?;
            Ok(n)
        })
    }

    pub fn set_batch_summary(
        &self,
        id: &str,
        state: BatchState,
        summary: &Value,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        self.tx(|c| {
            c.execute(
                "UPDATE batches SET state = ?1, summary_json = ?2, updated_at_ms = ?3 WHERE id = ?4",
                params![state.as_str(), summary.to_string(), now, id],
            )?;
            audit::append(c, Some(id), "batch_summary", None, summary)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{new_run, temp_store};

    #[test]
    fn a_batch_and_its_members_are_approved_together_once() {
        let (s, _d) = temp_store();
        for id in ["r1", "r2"] {
            s.insert_run(&new_run(id, &format!("{id}@b.com"))).unwrap();
        }
        let members = vec!["r1".to_owned(), "r2".to_owned()];
        let refused = vec![RefusedUser {
            upn: "x@b.com".into(),
            why: "synced".into(),
        }];
        s.insert_batch(&NewBatch {
            id: "b1",
            requester_id: "u",
            requester_name: "alice",
            reason: None,
            members: &members,
            refused: &refused,
        })
        .unwrap();
        let approve = |s: &Store| {
            s.transition_batch(
                "b1",
                BatchState::AwaitingApproval,
                BatchState::Running,
                &[RunState::AwaitingApproval],
                Some(RunState::Approved),
                Some("bob"),
                &serde_json::json!({}),
            )
            .unwrap()
        };
        assert!(approve(&s));
        assert!(!approve(&s), "once");
        for id in ["r1", "r2"] {
            assert_eq!(s.run(id).unwrap().unwrap().state, RunState::Approved);
        }
        s.transition_run("r1", &[RunState::Approved], RunState::Running)
            .unwrap();
        assert_eq!(s.cancel_batch_rest("b1", Some("alice")).unwrap(), 1);
        assert_eq!(s.run("r1").unwrap().unwrap().state, RunState::Running);
        assert_eq!(s.run("r2").unwrap().unwrap().state, RunState::Cancelled);
        let b = s.batch("b1").unwrap().unwrap();
        assert_eq!(
            (b.state, b.members, b.refused),
            (BatchState::Running, members, refused)
        );
    }
}
