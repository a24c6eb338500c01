//! Embedded SQLite state: runs and their plans, the write-ahead journal, the provisioning pause
//! and its snapshot, saved app profiles. Nothing the invariants depend on lives only in memory.
//! This file holds the handle, its connection helpers and the stored types; each table's
//! queries live in the child module named for it.

mod anchor;
mod audit;
mod batches;
mod journal;
mod leases;
mod migrations;
mod outbox;
mod pause;
mod profiles;
mod runs;
mod votes;
mod watch;

use crate::domain::RunState;
use anyhow::Context;
use rusqlite::Connection;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use batches::{BatchRow, BatchState, NewBatch, RefusedUser, BATCH_FORMAT};
pub use journal::StepRow;
pub use outbox::{Announcer, Fallback, Finished, NewMessage, OutboxRow, Put};

pub use anchor::{AuditHead, BadHead, HeadFileError, VerifyError, HEAD_FILE, SHORT_HASH_HEX};
pub use audit::{AuditRecord, Verification};
pub use migrations::{SCHEMA_VERSION, V1_SCHEMA};
pub use watch::{
    FindingRow, FindingUpdate, HandledEvent, Observation, StoredCursor, WatchCommit, WatchCursor,
};

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
    /// The audit head file; locked only while `conn` is, so file writes follow commit order.
    anchor: Arc<Mutex<anchor::Anchor>>,
    /// Held for the life of the process: one instance per data directory.
    _instance: Option<Arc<std::fs::File>>,
    /// What the chat front end says when a run's outcome is recorded (same transaction).
    announcer: Arc<std::sync::OnceLock<Announcer>>,
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
    /// The service's id for the request (Graph `request-id`, Okta `X-Okta-Request-Id`), from
    /// its answer.
    pub request_id: Option<String>,
    /// The id the bot sent with the request (Graph `client-request-id`), stored with the intent.
    pub client_request_id: Option<String>,
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
        let anchor = anchor::Anchor::open(path, &conn).context("cannot read the audit head")?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            anchor: Arc::new(Mutex::new(anchor)),
            _instance: None,
            announcer: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets what the chat front end queues when a run's outcome is recorded; the first call
    /// wins (one front end per process).
    pub fn set_announcer(&self, announcer: Announcer) {
        let _ = self.announcer.set(announcer);
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        Ok(f(&conn)?)
    }

    /// Runs `f` in one IMMEDIATE transaction: all of it commits, or none. Every audit append
    /// goes through here, so this is where the head file follows the chain — after the commit,
    /// so the file never names a record the database might not keep.
    fn tx<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        if let Ok(mut anchor) = self.anchor.lock() {
            anchor.after_commit(&conn);
        }
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

    /// Checks the chain, and that it still holds the head recorded in the head file.
    pub fn audit_verify(&self) -> Result<Verification, VerifyError> {
        self.audit_verify_expecting(None)
    }

    /// Like [`Store::audit_verify`], also checking a head recorded elsewhere (e.g. posted in
    /// chat by a run summary), which survives someone rewriting the head file too.
    pub fn audit_verify_expecting(
        &self,
        expected: Option<&AuditHead>,
    ) -> Result<Verification, VerifyError> {
        // A panic elsewhere must not stop an auditor from reading the log: this only reads.
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        anchor::check(&conn, &self.path, expected)
    }

    /// The chain's newest record (full hash; [`AuditHead::short`] for display); `None` while
    /// the log is empty.
    pub fn audit_head(&self) -> anyhow::Result<Option<AuditHead>> {
        self.with(anchor::db_head)
    }

    /// What the head file beside the database records, read now.
    pub fn audit_head_file(&self) -> Result<Option<AuditHead>, HeadFileError> {
        anchor::read(&anchor::head_path(&self.path))
    }
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

    pub(super) fn temp_store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("fixbot-store-{}", uuid::Uuid::new_v4()));
        (Store::open(&dir).unwrap(), dir)
    }

    pub(super) fn new_run<'a>(id: &'a str, upn: &'a str) -> NewRun<'a> {
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
}
