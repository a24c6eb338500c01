//! Runs: inserting them, moving them between states atomically, their summaries and where the
//! chat front end shows them, and reading them back.

use super::{audit, now_ms, parse_json, parse_state, NewRun, RunRow, Store};
use crate::domain::RunState;
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

impl Store {
    pub fn insert_run(&self, run: &NewRun<'_>) -> anyhow::Result<()> {
        let now = now_ms();
        let plan = run.plan.map(Value::to_string);
        self.tx(|c| {
            audit::append(
                c,
                Some(run.id),
                "request",
                Some(run.requester_name),
                &serde_json::json!({
                    "requester_id": run.requester_id,
                    "upn": run.upn,
                    "fingerprint": run.fingerprint,
                    "plan": run.plan,
                }),
            )?;
            c.execute(
                "INSERT INTO runs (id, created_at_ms, updated_at_ms, requester_id, requester_name,
                                   upn, state, plan_json, fingerprint)
                 VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run.id,
                    now,
                    run.requester_id,
                    run.requester_name,
                    run.upn,
                    run.state.as_str(),
                    plan,
                    run.fingerprint
                ],
            )
        })?;
        Ok(())
    }

    /// Moves a run to `to` only if it is in one of `from`; returns whether it moved. This is the
    /// single atomic state change that makes "exactly one execution" hold.
    pub fn transition_run(
        &self,
        id: &str,
        from: &[RunState],
        to: RunState,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let from_json = state_names(from)?;
        let n = self.with(|c| {
            c.execute(
                "UPDATE runs SET state = ?1, updated_at_ms = ?2
                 WHERE id = ?3 AND state IN (SELECT value FROM json_each(?4))",
                params![to.as_str(), now, id, from_json],
            )
        })?;
        Ok(n == 1)
    }

    /// Like [`Store::transition_run`], recording who moved it and why in the audit log in the
    /// same transaction.
    pub fn transition_run_audited(
        &self,
        id: &str,
        from: &[RunState],
        to: RunState,
        actor: Option<&str>,
        detail: &Value,
    ) -> anyhow::Result<bool> {
        self.transition_run_saying(id, from, to, actor, detail, &[])
    }

    /// Like [`Store::transition_run_audited`], queuing `say` in the chat outbox in the same
    /// transaction if the run moved (what the chat says about it cannot be lost without it).
    pub fn transition_run_saying(
        &self,
        id: &str,
        from: &[RunState],
        to: RunState,
        actor: Option<&str>,
        detail: &Value,
        say: &[super::NewMessage],
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let from_json = state_names(from)?;
        self.tx(|c| {
            let n = c.execute(
                "UPDATE runs SET state = ?1, updated_at_ms = ?2
                 WHERE id = ?3 AND state IN (SELECT value FROM json_each(?4))",
                params![to.as_str(), now, id, from_json],
            )?;
            if n == 1 {
                audit::append(c, Some(id), to.as_str(), actor, detail)?;
                for m in say {
                    super::outbox::put(c, m)?;
                }
            }
            Ok(n == 1)
        })
    }

    pub fn set_run_summary(
        &self,
        id: &str,
        state: RunState,
        summary: &Value,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        self.tx(|c| {
            c.execute(
                "UPDATE runs SET state = ?1, summary_json = ?2, updated_at_ms = ?3 WHERE id = ?4",
                params![state.as_str(), summary.to_string(), now, id],
            )?;
            audit::append(c, Some(id), "outcome", None, summary)?;
            match self.announcer.get() {
                Some(a) => super::outbox::announce(c, a, id, summary),
                None => Ok(()),
            }
        })?;
        Ok(())
    }

    /// Where the front end shows this run (e.g. Discord channel, plan message and thread ids).
    pub fn set_chat_ref(&self, id: &str, chat_ref: &Value) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET chat_ref = ?1 WHERE id = ?2",
                params![chat_ref.to_string(), id],
            )
        })?;
        Ok(())
    }

    pub fn chat_ref(&self, id: &str) -> anyhow::Result<Option<Value>> {
        self.with(|c| {
            c.query_row(
                "SELECT chat_ref FROM runs WHERE id = ?1",
                params![id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
        })
        .map(|o| o.flatten().map(parse_json))
    }

    /// How many runs are in `state` (for metrics: no plan is read).
    pub fn count_runs(&self, state: RunState) -> anyhow::Result<u64> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM runs WHERE state = ?1",
                params![state.as_str()],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as u64)
    }

    pub fn runs_in_state(&self, state: RunState) -> anyhow::Result<Vec<RunRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "{RUN_SELECT} WHERE state = ?1 ORDER BY created_at_ms, rowid"
            ))?;
            let rows = st.query_map(params![state.as_str()], run_from_row)?;
            rows.collect()
        })
    }

    pub fn run(&self, id: &str) -> anyhow::Result<Option<RunRow>> {
        self.with(|c| {
            c.query_row(
                &format!("{RUN_SELECT} WHERE id = ?1"),
                params![id],
                run_from_row,
            )
            .optional()
        })
    }

    /// Runs whose id starts with `prefix` (the short id shown in chat).
    pub fn runs_by_prefix(&self, prefix: &str) -> anyhow::Result<Vec<RunRow>> {
        let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
        self.with(|c| {
            let mut st = c.prepare(&format!("{RUN_SELECT} WHERE id LIKE ?1 LIMIT 10"))?;
            let rows = st.query_map(params![pattern], run_from_row)?;
            rows.collect()
        })
    }

    pub fn recent_runs(&self, limit: u32) -> anyhow::Result<Vec<RunRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "{RUN_SELECT} ORDER BY created_at_ms DESC, rowid DESC LIMIT ?1"
            ))?;
            let rows = st.query_map(params![limit], run_from_row)?;
            rows.collect()
        })
    }
}

const RUN_SELECT: &str =
    "SELECT id, created_at_ms, updated_at_ms, requester_id, requester_name, upn,
        state, plan_json, fingerprint, summary_json FROM runs";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let id: String = r.get(0)?;
    Ok(RunRow {
        state: parse_state(&r.get::<_, String>(6)?, 6, &id)?,
        id,
        created_at_ms: r.get(1)?,
        updated_at_ms: r.get(2)?,
        requester_id: r.get(3)?,
        requester_name: r.get(4)?,
        upn: r.get(5)?,
        plan: r.get::<_, Option<String>>(7)?.map(parse_json),
        fingerprint: r.get(8)?,
        summary: r.get::<_, Option<String>>(9)?.map(parse_json),
    })
}

/// `from` as a JSON array of stored names, for `json_each`.
fn state_names(from: &[RunState]) -> serde_json::Result<String> {
    serde_json::to_string(&from.iter().map(|s| s.as_str()).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{new_run, temp_store};

    #[test]
    fn transition_is_atomic_compare_and_set() {
        let (s, _d) = temp_store();
        s.insert_run(&NewRun {
            id: "r1",
            requester_id: "u",
            requester_name: "alice",
            upn: "a@b.com",
            state: RunState::AwaitingApproval,
            plan: None,
            fingerprint: None,
        })
        .unwrap();
        assert!(s
            .transition_run("r1", &[RunState::AwaitingApproval], RunState::Approved)
            .unwrap());
        assert!(!s
            .transition_run("r1", &[RunState::AwaitingApproval], RunState::Approved)
            .unwrap());
        assert_eq!(s.run("r1").unwrap().unwrap().state, RunState::Approved);
    }

    #[test]
    fn an_unknown_stored_state_is_an_error_naming_it() {
        let (s, _d) = temp_store();
        s.insert_run(&new_run("r1", "a@b.com")).unwrap();
        s.with(|c| c.execute("UPDATE runs SET state = 'paused' WHERE id = 'r1'", []))
            .unwrap();
        let err = s.run("r1").unwrap_err();
        assert!(format!("{err:#}").contains("\"paused\""), "{err:#}");
        assert!(s.recent_runs(10).is_err(), "not skipped silently");
    }
}
