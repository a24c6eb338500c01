//! Embedded SQLite state: runs and their plans, the write-ahead journal, the provisioning pause
//! and its snapshot, saved app profiles. Nothing the invariants depend on lives only in memory.

mod audit;
mod migrations;
mod records;

use crate::domain::RunState;
use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use records::StepRow;

pub use audit::{AuditRecord, Verification};
pub use migrations::{SCHEMA_VERSION, V1_SCHEMA};

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
    /// Held for the life of the process: one instance per data directory.
    _instance: Option<Arc<std::fs::File>>,
}

/// A vote as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteKind {
    Approve,
    Reject,
}

impl VoteKind {
    fn as_str(self) -> &'static str {
        match self {
            VoteKind::Approve => "approve",
            VoteKind::Reject => "reject",
        }
    }
}

/// Who holds a lease, when another instance has it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {holder} manages this already (lease until {expires_at_ms} ms since the epoch); stop it first, or wait for its lease to lapse")]
pub struct LeaseHeld {
    pub holder: String,
    pub expires_at_ms: i64,
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
    pub state: RunState,
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
    pub state: RunState,
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
    /// Set once the last holder has gone and restoring began: the window is closed to joins.
    pub restoring_since_ms: Option<i64>,
}

impl Store {
    /// Opens (creating if needed) `dir/fixbot.sqlite3` and applies pending migrations. Refuses
    /// when another process has the same data directory open.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        let lock_path = dir.join("fixbot.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        if let Err(e) = lock.try_lock() {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
            anyhow::bail!(
                "another o365-fixbot ({}) is already using the data directory {}: run one instance per data directory ({e})",
                if holder.trim().is_empty() { "unknown pid".to_owned() } else { format!("pid {}", holder.trim()) },
                dir.display()
            );
        }
        let _ = std::fs::write(&lock_path, std::process::id().to_string());
        let mut store = Self::open_file(&dir.join("fixbot.sqlite3"))?;
        store._instance = Some(Arc::new(lock));
        Ok(store)
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
            _instance: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A name for this instance that survives restarts: the host name and an id kept in the
    /// data directory. A restarted bot takes its own lease back at once; another host sharing
    /// the directory has another name and must wait for the lease to lapse.
    pub fn instance_name(&self) -> String {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let id_file = self.path.with_file_name("instance-id");
        let id = std::fs::read_to_string(&id_file)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let _ = std::fs::write(&id_file, &id);
                id
            });
        format!("{host}:{id}")
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        Ok(f(&conn)?)
    }

    /// Runs `f` in one IMMEDIATE transaction: all of it commits, or none.
    fn tx<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Whether a write transaction can be taken now (for readiness probes); writes nothing.
    pub fn check_writable(&self) -> anyhow::Result<()> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.rollback()?;
        Ok(())
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
            }
            Ok(n == 1)
        })
    }

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
                    &serde_json::json!({"voter_id": voter_id, "fingerprint": fingerprint}),
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
                audit::append(c, Some(run_id), to.as_str(), Some(voter_name), &serde_json::json!({"approvals": count}))?;
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
            audit::append(c, Some(id), "outcome", None, summary)
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

    // --- audit ----------------------------------------------------------------------------

    /// Appends a record that belongs to no other change (e.g. a restart note).
    pub fn audit(
        &self,
        run: Option<&str>,
        kind: &str,
        actor: Option<&str>,
        data: &Value,
    ) -> anyhow::Result<()> {
        self.tx(|c| audit::append(c, run, kind, actor, data))
    }

    pub fn audit_records(&self) -> anyhow::Result<Vec<AuditRecord>> {
        self.with(|c| audit::records(c).map(|v| v.into_iter().map(|(r, _)| r).collect()))
    }

    pub fn audit_verify(&self) -> anyhow::Result<Verification> {
        self.with(audit::verify)
    }

    // --- leases ---------------------------------------------------------------------------

    /// Takes or renews the lease `name` (e.g. `okta-app:<id>`) for `holder` until now + `ttl`.
    pub fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> anyhow::Result<Result<(), LeaseHeld>> {
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        self.tx(|c| {
            let current: Option<(String, i64)> = c
                .query_row(
                    "SELECT holder, expires_at_ms FROM leases WHERE name = ?1",
                    params![name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((h, exp)) = current {
                if h != holder && exp > now {
                    return Ok(Err(LeaseHeld {
                        holder: h,
                        expires_at_ms: exp,
                    }));
                }
            }
            c.execute(
                "INSERT INTO leases (name, holder, expires_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET holder = ?2, expires_at_ms = ?3",
                params![name, holder, until],
            )?;
            Ok(Ok(()))
        })
    }

    pub fn release_lease(&self, name: &str, holder: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
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
        self.tx(|c| {
            c.execute(
                "INSERT INTO journal (run_id, step, api, object, before_json, intended_json, intent_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![run_id, step, api, object, before.to_string(), intended.to_string(), now],
            )?;
            let id = c.last_insert_rowid();
            audit::append(
                c,
                Some(run_id),
                "write-intent",
                None,
                &serde_json::json!({"journal": id, "step": step, "api": api, "object": object,
                                    "before": before, "intended": intended}),
            )?;
            Ok(id)
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
        self.tx(|c| {
            c.execute(
                "UPDATE journal SET outcome = ?1, error_code = ?2, request_id = ?3, outcome_at_ms = ?4
                 WHERE id = ?5",
                params![outcome, error_code, request_id, now, entry],
            )?;
            let run: Option<String> = c
                .query_row("SELECT run_id FROM journal WHERE id = ?1", params![entry], |r| r.get(0))
                .optional()?;
            audit::append(
                c,
                run.as_deref(),
                "write-outcome",
                None,
                &serde_json::json!({"journal": entry, "outcome": outcome, "error_code": error_code,
                                    "request_id": request_id}),
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

    /// Marks a dead process's unrecorded outcomes as `unknown`; recovery settles them by
    /// re-sending the write or its inverse, journalled as new entries. Returns how many.
    pub fn journal_mark_unknown(&self, run_id: &str) -> anyhow::Result<usize> {
        let now = now_ms();
        self.tx(|c| {
            let n = c.execute(
                "UPDATE journal SET outcome = 'unknown', error_code = 'process-died', outcome_at_ms = ?1
                 WHERE run_id = ?2 AND outcome IS NULL",
                params![now, run_id],
            )?;
            if n > 0 {
                audit::append(c, Some(run_id), "write-outcome-unknown", None, &serde_json::json!({"entries": n}))?;
            }
            Ok(n)
        })
    }

    /// Journal entries whose outcome was never recorded.
    pub fn journal_unsettled(&self) -> anyhow::Result<usize> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM journal WHERE outcome IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as usize)
    }

    // --- provisioning pause ---------------------------------------------------------------

    pub fn pause(&self, app_id: &str) -> anyhow::Result<Option<PauseRow>> {
        self.with(|c| {
            let row = c
                .query_row(
                    "SELECT snapshot_json, started_at_ms, restoring_since_ms
                     FROM provisioning_pause WHERE app_id = ?1",
                    params![app_id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                        ))
                    },
                )
                .optional()?;
            let Some((snapshot, started_at_ms, restoring_since_ms)) = row else {
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
                restoring_since_ms,
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

    /// Closes the pause to joins: restoring has begun. Kept until [`Store::pause_end`].
    pub fn pause_mark_restoring(&self, app_id: &str) -> anyhow::Result<()> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "UPDATE provisioning_pause SET restoring_since_ms = COALESCE(restoring_since_ms, ?2)
                 WHERE app_id = ?1",
                params![app_id, now],
            )
        })?;
        Ok(())
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

/// A stored state name this build does not know (a newer version wrote it, or someone edited
/// the file) fails the read, naming the run and the name: skipping the run would hide it from
/// recovery and status.
fn parse_state(name: &str, column: usize, run: &str) -> rusqlite::Result<RunState> {
    name.parse().map_err(|e: crate::domain::UnknownRunState| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("run {run}: {e}").into(),
        )
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

    fn new_run<'a>(id: &'a str, upn: &'a str) -> NewRun<'a> {
        NewRun {
            id,
            requester_id: "u1",
            requester_name: "alice",
            upn,
            state: RunState::AwaitingApproval,
            plan: None,
            fingerprint: Some("fp"),
        }
    }

    #[test]
    fn a_second_instance_on_the_same_directory_is_refused() {
        let (s, dir) = temp_store();
        let err = Store::open(&dir).unwrap_err();
        assert!(
            format!("{err:#}").contains("already using the data directory"),
            "{err:#}"
        );
        drop(s);
        assert!(Store::open(&dir).is_ok());
    }

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

    #[test]
    fn audit_chain_verifies_and_is_append_only() {
        let (s, _d) = temp_store();
        s.insert_run(&new_run("r1", "a@b.com")).unwrap();
        let j = s
            .journal_intent("r1", "1", "graph.update_user", "o", &json!(1), &json!(2))
            .unwrap();
        s.journal_outcome(j, true, None, Some("rid")).unwrap();
        s.set_run_summary("r1", RunState::Succeeded, &json!({"ok": true}))
            .unwrap();
        assert_eq!(
            s.audit_verify().unwrap(),
            Verification::Intact { records: 4 }
        );
        let kinds: Vec<String> = s
            .audit_records()
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            kinds,
            ["request", "write-intent", "write-outcome", "outcome"]
        );
        let err = s
            .with(|c| c.execute("UPDATE audit SET kind = 'x' WHERE seq = 2", []))
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        // Someone with the file drops the guard and edits a record: the chain shows where.
        s.with(|c| {
            c.execute_batch(
                "DROP TRIGGER audit_no_update; UPDATE audit SET data_json = '{}' WHERE seq = 3;",
            )
        })
        .unwrap();
        assert!(matches!(
            s.audit_verify().unwrap(),
            Verification::Broken { seq: 3, .. }
        ));
    }

    #[test]
    fn migrations_upgrade_a_first_version_database() {
        let dir = std::env::temp_dir().join(format!("fixbot-v1-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let c = Connection::open(dir.join("fixbot.sqlite3")).unwrap();
            c.execute_batch(V1_SCHEMA).unwrap();
            c.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL);
                 INSERT INTO schema_migrations VALUES (1, 0);
                 INSERT INTO runs (id, created_at_ms, updated_at_ms, requester_id, requester_name, upn, state)
                 VALUES ('old', 1, 1, 'u', 'alice', 'a@b.com', 'succeeded');",
            )
            .unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.run("old").unwrap().unwrap().state, RunState::Succeeded);
        s.set_chat_ref("old", &json!({"thread": 1})).unwrap();
        assert_eq!(s.chat_ref("old").unwrap(), Some(json!({"thread": 1})));
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

    #[test]
    fn a_lease_is_held_by_one_instance_until_it_lapses() {
        let (s, _d) = temp_store();
        let ttl = std::time::Duration::from_secs(30);
        assert!(s.acquire_lease("okta-app:x", "A", ttl).unwrap().is_ok());
        assert!(
            s.acquire_lease("okta-app:x", "A", ttl).unwrap().is_ok(),
            "renewal"
        );
        let held = s
            .acquire_lease("okta-app:x", "B", ttl)
            .unwrap()
            .unwrap_err();
        assert_eq!(held.holder, "A");
        assert!(s.acquire_lease("okta-app:y", "B", ttl).unwrap().is_ok());
        s.release_lease("okta-app:x", "A").unwrap();
        assert!(s.acquire_lease("okta-app:x", "B", ttl).unwrap().is_ok());
        assert!(s
            .acquire_lease("okta-app:z", "A", std::time::Duration::ZERO)
            .unwrap()
            .is_ok());
        assert!(
            s.acquire_lease("okta-app:z", "B", ttl).unwrap().is_ok(),
            "lapsed"
        );
    }

    #[test]
    fn pause_survives_reopen() {
        let (s, dir) = temp_store();
        s.pause_begin("app", &json!({"create":{}}), "r1").unwrap();
        s.pause_join("app", "r2").unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(
            s.audit_verify().unwrap(),
            Verification::Intact { records: 0 }
        );
        let p = s.pause("app").unwrap().unwrap();
        assert_eq!(p.holders, vec!["r1".to_string(), "r2".to_string()]);
        assert_eq!(p.snapshot, json!({"create":{}}));
        assert_eq!(p.restoring_since_ms, None);
        assert_eq!(s.pause_leave("app", "r1").unwrap(), 1);
        s.pause_mark_restoring("app").unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert!(s
            .pause("app")
            .unwrap()
            .unwrap()
            .restoring_since_ms
            .is_some());
        s.pause_end("app").unwrap();
        assert!(s.pause("app").unwrap().is_none());
    }
}
