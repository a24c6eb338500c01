//! Embedded SQLite state: runs and their plans, the write-ahead journal, the provisioning pause
//! and its snapshot, saved app profiles. Nothing the invariants depend on lives only in memory.

mod migrations;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use migrations::SCHEMA_VERSION;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Handle to the database. Cheap to clone; SQLite calls are short and serialized by the mutex.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// A run to insert.
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    pub id: &'a str,
    pub requester_id: &'a str,
    pub requester_name: &'a str,
    pub upn: &'a str,
    pub state: &'a str,
    pub plan: Option<&'a Value>,
    pub fingerprint: Option<&'a str>,
}

/// A run as stored.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub requester_id: String,
    pub requester_name: String,
    pub upn: String,
    pub state: String,
    pub plan: Option<Value>,
    pub fingerprint: Option<String>,
    pub summary: Option<Value>,
}

/// One journalled write: the intent is stored before the call, the outcome after it.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub id: i64,
    pub run_id: String,
    pub step: String,
    pub api: String,
    pub object: String,
    pub before: Value,
    pub intended: Value,
    pub intent_at_ms: i64,
    /// `None` while the outcome is unknown (the process died mid-call).
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub request_id: Option<String>,
}

/// The shared provisioning pause of one Okta app.
#[derive(Debug, Clone)]
pub struct PauseRow {
    pub app_id: String,
    pub snapshot: Value,
    pub started_at_ms: i64,
    pub holders: Vec<String>,
}

impl Store {
    /// Opens (creating if needed) `dir/fixbot.sqlite3` and applies pending migrations.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        Self::open_file(&dir.join("fixbot.sqlite3"))
    }

    pub fn open_file(path: &Path) -> anyhow::Result<Self> {
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        // WAL for concurrent readers; FULL so a journal row is on disk before the API call it
        // announces is made.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn).context("database migration failed")?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        Ok(f(&conn)?)
    }

    pub fn schema_version(&self) -> anyhow::Result<i64> {
        self.with(|c| {
            c.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
        })
    }

    // --- runs -----------------------------------------------------------------------------

    pub fn insert_run(&self, run: &NewRun<'_>) -> anyhow::Result<()> {
        let now = now_ms();
        let plan = run.plan.map(Value::to_string);
        self.with(|c| {
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
                    run.state,
                    plan,
                    run.fingerprint
                ],
            )
        })?;
        Ok(())
    }

    /// Moves a run to `to` only if it is in one of `from`; returns whether it moved. This is the
    /// single atomic state change that makes "exactly one execution" hold.
    pub fn transition_run(&self, id: &str, from: &[&str], to: &str) -> anyhow::Result<bool> {
        let now = now_ms();
        let from_json = serde_json::to_string(from)?;
        let n = self.with(|c| {
            c.execute(
                "UPDATE runs SET state = ?1, updated_at_ms = ?2
                 WHERE id = ?3 AND state IN (SELECT value FROM json_each(?4))",
                params![to, now, id, from_json],
            )
        })?;
        Ok(n == 1)
    }

    pub fn set_run_summary(&self, id: &str, state: &str, summary: &Value) -> anyhow::Result<()> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "UPDATE runs SET state = ?1, summary_json = ?2, updated_at_ms = ?3 WHERE id = ?4",
                params![state, summary.to_string(), now, id],
            )
        })?;
        Ok(())
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

    // --- journal --------------------------------------------------------------------------

    /// Records what is about to be written. Committed (and synced) before the API call is made.
    pub fn journal_intent(
        &self,
        run_id: &str,
        step: &str,
        api: &str,
        object: &str,
        before: &Value,
        intended: &Value,
    ) -> anyhow::Result<i64> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT INTO journal (run_id, step, api, object, before_json, intended_json, intent_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![run_id, step, api, object, before.to_string(), intended.to_string(), now],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn journal_outcome(
        &self,
        entry: i64,
        ok: bool,
        error_code: Option<&str>,
        request_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let outcome = if ok { "ok" } else { "failed" };
        self.with(|c| {
            c.execute(
                "UPDATE journal SET outcome = ?1, error_code = ?2, request_id = ?3, outcome_at_ms = ?4
                 WHERE id = ?5",
                params![outcome, error_code, request_id, now, entry],
            )
        })?;
        Ok(())
    }

    pub fn journal(&self, run_id: &str) -> anyhow::Result<Vec<JournalEntry>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, run_id, step, api, object, before_json, intended_json, intent_at_ms,
                        outcome, error_code, request_id
                 FROM journal WHERE run_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map(params![run_id], |r| {
                Ok(JournalEntry {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    step: r.get(2)?,
                    api: r.get(3)?,
                    object: r.get(4)?,
                    before: parse_json(r.get::<_, String>(5)?),
                    intended: parse_json(r.get::<_, String>(6)?),
                    intent_at_ms: r.get(7)?,
                    outcome: r.get(8)?,
                    error_code: r.get(9)?,
                    request_id: r.get(10)?,
                })
            })?;
            rows.collect()
        })
    }

    // --- provisioning pause ---------------------------------------------------------------

    pub fn pause(&self, app_id: &str) -> anyhow::Result<Option<PauseRow>> {
        self.with(|c| {
            let row = c
                .query_row(
                    "SELECT snapshot_json, started_at_ms FROM provisioning_pause WHERE app_id = ?1",
                    params![app_id],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            let Some((snapshot, started_at_ms)) = row else {
                return Ok(None);
            };
            let mut st = c.prepare(
                "SELECT run_id FROM pause_holders WHERE app_id = ?1 ORDER BY joined_at_ms, run_id",
            )?;
            let holders = st
                .query_map(params![app_id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(Some(PauseRow {
                app_id: app_id.to_owned(),
                snapshot: parse_json(snapshot),
                started_at_ms,
                holders,
            }))
        })
    }

    /// Stores the snapshot and the first holder in one transaction, before provisioning is
    /// changed: a crash after this point can always restore what was there.
    pub fn pause_begin(&self, app_id: &str, snapshot: &Value, run_id: &str) -> anyhow::Result<()> {
        let now = now_ms();
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO provisioning_pause (app_id, snapshot_json, started_at_ms) VALUES (?1, ?2, ?3)",
            params![app_id, snapshot.to_string(), now],
        )?;
        tx.execute(
            "INSERT INTO pause_holders (app_id, run_id, joined_at_ms) VALUES (?1, ?2, ?3)",
            params![app_id, run_id, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn pause_join(&self, app_id: &str, run_id: &str) -> anyhow::Result<()> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO pause_holders (app_id, run_id, joined_at_ms) VALUES (?1, ?2, ?3)",
                params![app_id, run_id, now],
            )
        })?;
        Ok(())
    }

    /// Removes a holder; returns how many remain.
    pub fn pause_leave(&self, app_id: &str, run_id: &str) -> anyhow::Result<usize> {
        self.with(|c| {
            c.execute(
                "DELETE FROM pause_holders WHERE app_id = ?1 AND run_id = ?2",
                params![app_id, run_id],
            )?;
            c.query_row(
                "SELECT COUNT(*) FROM pause_holders WHERE app_id = ?1",
                params![app_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
        })
    }

    /// Forgets the pause once provisioning is restored (read back and compared).
    pub fn pause_end(&self, app_id: &str) -> anyhow::Result<()> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM pause_holders WHERE app_id = ?1",
            params![app_id],
        )?;
        tx.execute(
            "DELETE FROM provisioning_pause WHERE app_id = ?1",
            params![app_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    // --- app profiles ---------------------------------------------------------------------

    /// The Office 365 app user as it was before the unassign, which loses it.
    pub fn save_app_profile(
        &self,
        run_id: &str,
        okta_user_id: &str,
        app_user: &Value,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO app_profiles (run_id, okta_user_id, app_user_json, saved_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![run_id, okta_user_id, app_user.to_string(), now],
            )
        })?;
        Ok(())
    }

    pub fn app_profile(&self, run_id: &str) -> anyhow::Result<Option<Value>> {
        self.with(|c| {
            c.query_row(
                "SELECT app_user_json FROM app_profiles WHERE run_id = ?1",
                params![run_id],
                |r| r.get::<_, String>(0),
            )
            .optional()
        })
        .map(|o| o.map(parse_json))
    }
}

const RUN_SELECT: &str =
    "SELECT id, created_at_ms, updated_at_ms, requester_id, requester_name, upn,
        state, plan_json, fingerprint, summary_json FROM runs";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        created_at_ms: r.get(1)?,
        updated_at_ms: r.get(2)?,
        requester_id: r.get(3)?,
        requester_name: r.get(4)?,
        upn: r.get(5)?,
        state: r.get(6)?,
        plan: r.get::<_, Option<String>>(7)?.map(parse_json),
        fingerprint: r.get(8)?,
        summary: r.get::<_, Option<String>>(9)?.map(parse_json),
    })
}

fn parse_json(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::String(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp_store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("fixbot-store-{}", uuid::Uuid::new_v4()));
        (Store::open(&dir).unwrap(), dir)
    }

    #[test]
    fn journal_intent_then_outcome() {
        let (s, _d) = temp_store();
        let id = s
            .journal_intent(
                "r1",
                "1",
                "graph.update_user",
                "obj",
                &json!({"a":1}),
                &json!({"a":2}),
            )
            .unwrap();
        let j = s.journal("r1").unwrap();
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].outcome, None);
        s.journal_outcome(id, true, None, Some("req-1")).unwrap();
        let j = s.journal("r1").unwrap();
        assert_eq!(j[0].outcome.as_deref(), Some("ok"));
        assert_eq!(j[0].request_id.as_deref(), Some("req-1"));
        assert_eq!(j[0].intended, json!({"a":2}));
    }

    #[test]
    fn transition_is_atomic_compare_and_set() {
        let (s, _d) = temp_store();
        s.insert_run(&NewRun {
            id: "r1",
            requester_id: "u",
            requester_name: "alice",
            upn: "a@b.com",
            state: "awaiting_approval",
            plan: None,
            fingerprint: None,
        })
        .unwrap();
        assert!(s
            .transition_run("r1", &["awaiting_approval"], "approved")
            .unwrap());
        assert!(!s
            .transition_run("r1", &["awaiting_approval"], "approved")
            .unwrap());
        assert_eq!(s.run("r1").unwrap().unwrap().state, "approved");
    }

    #[test]
    fn pause_survives_reopen() {
        let (s, dir) = temp_store();
        s.pause_begin("app", &json!({"create":{}}), "r1").unwrap();
        s.pause_join("app", "r2").unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        let p = s.pause("app").unwrap().unwrap();
        assert_eq!(p.holders, vec!["r1".to_string(), "r2".to_string()]);
        assert_eq!(p.snapshot, json!({"create":{}}));
        assert_eq!(s.pause_leave("app", "r1").unwrap(), 1);
        s.pause_end("app").unwrap();
        assert!(s.pause("app").unwrap().is_none());
    }
}
