//! The shared provisioning pause: concurrent repairs share one short window in which the Office
//! 365 app's provisioning is off, and the last one out restores it exactly as snapshotted.
//!
//! Who joins, who leaves and who must restore is decided under one lock, and the pause (its
//! snapshot and holders) is in the store before provisioning is changed, so a crash cannot lose
//! the snapshot. The Okta writes themselves — pausing, restoring, and their retries — run outside
//! the lock while the window is marked as opening or restoring, so a slow or failing Okta cannot
//! stall every other run's start, join and leave.

use super::capabilities::{all_disabled, deactivate_enabled, describe, is_all_disabled};
use super::journal::{ApiFailure, Journal};
use super::report::StepKind;
use crate::directory::okta::OktaClient;
use crate::domain::{RunId, RunState};
use crate::store::{now_ms, PauseRow, Store};
use serde_json::Value;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{watch, Mutex, Notify};
use tokio::time::Instant;

mod restore;

/// Longest wait between a run's own retries of a provisioning write.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, thiserror::Error)]
pub enum PauseError {
    #[error("could not read or change Okta provisioning: {0}")]
    Api(ApiFailure),
    #[error("provisioning read back as {0} after pausing; it was restored and the run stopped")]
    NotPaused(String),
    #[error("provisioning of the Office 365 app is already off in Okta (create, update, deactivate, password): someone else paused it or an earlier run crashed outside this bot's database; check with whoever manages the app and turn it back on, then run again")]
    AlreadyPaused,
    #[error("waited {0:?} for the previous provisioning window to end")]
    WaitedTooLong(Duration),
    #[error("restoring provisioning failed ({0}); the bot keeps retrying in the background")]
    RestoreFailed(ApiFailure),
    #[error("provisioning restore is still pending: the bot keeps retrying to turn Okta provisioning of the Office 365 app back on, and opens no new window until it has; if it does not come back, PUT /api/v1/apps/{app_id}/features/USER_PROVISIONING with {snapshot}")]
    RestorePending { app_id: String, snapshot: Value },
    #[error("store: {0}")]
    Store(String),
}

/// What joining did.
#[derive(Debug, Clone)]
pub struct Joined {
    /// This run took the snapshot and paused provisioning.
    pub first: bool,
    pub snapshot: Value,
}

/// What leaving did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// Provisioning restored as snapshotted, read back and compared.
    Restored,
    /// Other runs still hold the pause.
    HeldByOthers(usize),
    /// No holder left, but runs already under way will join within the linger bound.
    Lingering(usize),
}

/// Which write to provisioning is under way, if any. Published through
/// [`PauseManager::status`] so that waiters and observers need not poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PauseStatus {
    /// No write under way: provisioning is as snapshotted, or paused for the stored holders.
    #[default]
    Steady,
    /// A run is taking the snapshot and pausing; joins wait for it.
    Opening,
    /// The window is closed and its snapshot is being put back; joins wait for it.
    Restoring,
    /// Restoring ran out of attempts; a background task keeps trying and joins are refused.
    RestorePending,
}

#[derive(Debug, Clone, Copy)]
pub struct PauseTiming {
    /// Join only a pause younger than this, so a stream of repairs cannot keep provisioning off.
    pub join_window: Duration,
    /// Keep provisioning paused this long at most for announced runs with no holder.
    pub linger: Duration,
    /// Attempts for restoring before the background restorer takes over: restoring must not
    /// give up easily.
    pub restore_attempts: u32,
    /// First wait between attempts of any provisioning write; it doubles each time.
    pub restore_backoff: Duration,
    /// Attempts for the pause PUT and the reads around it whose outcome is unknown (5xx,
    /// timeout, transport); a definitive refusal is never re-sent.
    pub pause_attempts: u32,
}

impl PauseTiming {
    /// Longest a join waits, including one full run of restore attempts before it.
    fn join_wait_bound(&self) -> Duration {
        let mut restore = Duration::ZERO;
        let mut backoff = self.restore_backoff;
        for _ in 1..self.restore_attempts.max(1) {
            restore += backoff;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
        self.join_window + self.linger + restore + Duration::from_secs(30)
    }
}

#[derive(Default)]
struct Memory {
    /// Runs executing their Entra half that will join soon.
    expected: HashSet<RunId>,
    status: PauseStatus,
    /// This process has seen the stored window's pause PUT answered and read back as all off.
    /// A window an earlier process stored may never have reached Okta (it died between storing
    /// the snapshot and the PUT), so the first join after a restart sends the PUT again.
    confirmed: bool,
}

/// What a join decided under the lock.
enum JoinStep {
    Joined(Joined),
    /// No window: this run opens one (status is `Opening`).
    Open,
    /// A window nobody may join any more must be closed first (status is `Restoring`).
    Close(Value),
    /// A window stored by an earlier process: pause again (idempotent) before anyone relies on
    /// it (status is `Opening`).
    Reconfirm(Value),
    Wait,
}

/// How opening a window ended, before the lock is taken again.
enum Opened {
    Paused(Value),
    /// Nothing was stored or written.
    NothingWritten(PauseError),
    /// The snapshot is stored and provisioning may have changed: it must be restored.
    Undo(Value, PauseError),
}

pub struct PauseManager {
    okta: OktaClient,
    store: Store,
    journal: Journal,
    timing: PauseTiming,
    lock: Mutex<Memory>,
    changed: Notify,
    status: watch::Sender<PauseStatus>,
    me: Weak<PauseManager>,
}

impl PauseManager {
    pub fn new(okta: OktaClient, store: Store, timing: PauseTiming) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            journal: Journal::new(store.clone()),
            okta,
            store,
            timing,
            lock: Mutex::new(Memory::default()),
            changed: Notify::new(),
            status: watch::Sender::new(PauseStatus::Steady),
            me: me.clone(),
        })
    }

    fn app(&self) -> &str {
        self.okta.app_id()
    }

    /// Follows [`PauseStatus`] changes, e.g. to wait for a pending restore to finish.
    pub fn status(&self) -> watch::Receiver<PauseStatus> {
        self.status.subscribe()
    }

    /// Announce a run that will join after its Entra half, so a pause ending meanwhile lingers.
    pub async fn expect(&self, run: RunId) {
        self.lock.lock().await.expected.insert(run);
    }

    /// The announced run will not join after all; restores if it was the last reason to wait.
    pub async fn unexpect(&self, run: RunId) -> Result<Option<Left>, PauseError> {
        let snapshot = {
            let mut mem = self.lock.lock().await;
            mem.expected.remove(&run);
            if mem.status != PauseStatus::Steady {
                // Whoever is writing provisioning right now also ends the window.
                return Ok(None);
            }
            let Some(p) = self.store.pause(self.app()).map_err(store_err)? else {
                return Ok(None);
            };
            if !(p.holders.is_empty() && mem.expected.is_empty()) {
                return Ok(None);
            }
            self.mark_restoring(&mut mem);
            p.snapshot
        };
        self.restore(run, &snapshot).await?;
        Ok(Some(Left::Restored))
    }

    /// Join the current window, or open one: snapshot the capabilities (stored first), disable
    /// them, and read them back. Waits for the next window when the current one is too old or is
    /// being opened or restored; refuses while a failed restore is still being retried.
    pub async fn join(&self, run: RunId) -> Result<Joined, PauseError> {
        self.join_under(run, None).await
    }

    /// Like [`PauseManager::join`], for a run of a batch: while the batch itself holds the
    /// window (it joins before its users' Okta halves and leaves after the last), its users join
    /// whatever the window's age, so a batch is one window however long it takes.
    pub async fn join_under(&self, run: RunId, batch: Option<RunId>) -> Result<Joined, PauseError> {
        let wait_bound = self.timing.join_wait_bound();
        let deadline = Instant::now() + wait_bound;
        while Instant::now() < deadline {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let step = {
                let mut mem = self.lock.lock().await;
                self.join_step(&mut mem, run, batch)?
            };
            match step {
                JoinStep::Joined(joined) => return Ok(joined),
                JoinStep::Open => return self.open(run).await,
                JoinStep::Close(snapshot) => {
                    self.restore(run, &snapshot).await?;
                    continue;
                }
                JoinStep::Reconfirm(snapshot) => return self.reconfirm(run, snapshot).await,
                JoinStep::Wait => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let mem = self.lock.lock().await;
        match mem.status {
            PauseStatus::Restoring | PauseStatus::RestorePending => Err(self.pending()),
            _ => Err(PauseError::WaitedTooLong(wait_bound)),
        }
    }

    fn join_step(
        &self,
        mem: &mut Memory,
        run: RunId,
        batch: Option<RunId>,
    ) -> Result<JoinStep, PauseError> {
        match mem.status {
            PauseStatus::Opening | PauseStatus::Restoring => return Ok(JoinStep::Wait),
            PauseStatus::RestorePending => return Err(self.pending()),
            PauseStatus::Steady => {}
        }
        let Some(p) = self.store.pause(self.app()).map_err(store_err)? else {
            mem.expected.remove(&run);
            self.set_status(mem, PauseStatus::Opening);
            return Ok(JoinStep::Open);
        };
        if p.restoring_since_ms.is_some() {
            // A restore an earlier process began and did not finish: its provisioning state is
            // unknown, so finish restoring before anything else.
            self.mark_restoring(mem);
            return Ok(JoinStep::Close(p.snapshot));
        }
        let holder = p.holders.contains(&run.to_string());
        if !mem.confirmed && p.holders.is_empty() {
            // Stored by an earlier process and held by nobody: close it, then open a new one.
            self.mark_restoring(mem);
            return Ok(JoinStep::Close(p.snapshot));
        }
        if !mem.confirmed {
            self.store
                .pause_join(self.app(), &run.to_string())
                .map_err(store_err)?;
            mem.expected.remove(&run);
            self.set_status(mem, PauseStatus::Opening);
            return Ok(JoinStep::Reconfirm(p.snapshot));
        }
        if holder {
            // A run settled after a restart already holds this window, however old it is.
            return Ok(JoinStep::Joined(Joined {
                first: false,
                snapshot: p.snapshot,
            }));
        }
        let age = Duration::from_millis((now_ms() - p.started_at_ms).max(0) as u64);
        let batch_holds = batch.is_some_and(|b| p.holders.contains(&b.to_string()));
        if age < self.timing.join_window || batch_holds {
            self.store
                .pause_join(self.app(), &run.to_string())
                .map_err(store_err)?;
            mem.expected.remove(&run);
            return Ok(JoinStep::Joined(Joined {
                first: false,
                snapshot: p.snapshot,
            }));
        }
        if p.holders.is_empty() {
            // A lingering window past its bound: close it, then open a new one.
            self.mark_restoring(mem);
            return Ok(JoinStep::Close(p.snapshot));
        }
        Ok(JoinStep::Wait)
    }

    /// Opens a window; the status is `Opening` and only this run may write provisioning.
    async fn open(&self, run: RunId) -> Result<Joined, PauseError> {
        let opened = self.try_open(run).await;
        let mut mem = self.lock.lock().await;
        match opened {
            Opened::Paused(snapshot) => {
                mem.confirmed = true;
                self.set_status(&mut mem, PauseStatus::Steady);
                Ok(Joined {
                    first: true,
                    snapshot,
                })
            }
            Opened::NothingWritten(e) => {
                self.set_status(&mut mem, PauseStatus::Steady);
                Err(e)
            }
            Opened::Undo(snapshot, e) => {
                if let Err(se) = self.store.pause_leave(self.app(), &run.to_string()) {
                    tracing::error!(error = %format!("{se:#}"), "could not drop the failed opener from the pause");
                }
                self.mark_restoring(&mut mem);
                drop(mem);
                self.restore(run, &snapshot).await?;
                Err(e)
            }
        }
    }

    /// Sends the pause of a stored window again and reads it back: re-sending an all-off PUT
    /// is idempotent, and a window whose PUT never reached Okta is paused only now.
    async fn reconfirm(&self, run: RunId, snapshot: Value) -> Result<Joined, PauseError> {
        let put = self
            .put_all_off(run, &snapshot, "pausing provisioning again after a restart")
            .await;
        let result = match put {
            Err(f) => Err(PauseError::Api(f)),
            Ok(r) if is_all_off(&r.value.capabilities) => Ok(()),
            Ok(r) => Err(PauseError::NotPaused(describe(&r.value.capabilities))),
        };
        let mut mem = self.lock.lock().await;
        match result {
            Ok(()) => {
                mem.confirmed = true;
                self.set_status(&mut mem, PauseStatus::Steady);
                Ok(Joined {
                    first: false,
                    snapshot,
                })
            }
            Err(e) => {
                let remaining = self
                    .store
                    .pause_leave(self.app(), &run.to_string())
                    .map_err(store_err)?;
                if remaining > 0 {
                    self.set_status(&mut mem, PauseStatus::Steady);
                    return Err(e);
                }
                // Nobody else holds it: provisioning may be half paused, so restore it.
                self.mark_restoring(&mut mem);
                drop(mem);
                self.restore(run, &snapshot).await?;
                Err(e)
            }
        }
    }

    /// The journalled all-off PUT, its unknown outcomes re-sent (it is idempotent).
    async fn put_all_off(
        &self,
        run: RunId,
        snapshot: &Value,
        what: &str,
    ) -> Result<crate::directory::Reply<crate::directory::okta::Feature>, ApiFailure> {
        let off = all_disabled(snapshot);
        let label = StepKind::PauseProvisioning.label();
        self.retry_unknown(what, || {
            self.journal.write(
                run,
                &label,
                "okta.put_feature",
                self.app(),
                snapshot,
                &off,
                || self.okta.set_provisioning(&off),
            )
        })
        .await
    }

    async fn try_open(&self, run: RunId) -> Opened {
        let snapshot = match self.read_capabilities().await {
            Ok(c) => c,
            Err(f) => return Opened::NothingWritten(PauseError::Api(f)),
        };
        // Snapshotting an app that is already all off would later "restore" it to all off and
        // leave the whole app unprovisioned.
        if is_all_disabled(&snapshot) {
            return Opened::NothingWritten(PauseError::AlreadyPaused);
        }
        if let Err(e) = self
            .store
            .pause_begin(self.app(), &snapshot, &run.to_string())
        {
            return Opened::NothingWritten(store_err(e));
        }
        let put = self
            .put_all_off(run, &snapshot, "pausing provisioning")
            .await;
        // Okta answers the PUT with the feature as stored: that answer is the read-back.
        match put {
            Err(f) => Opened::Undo(snapshot, PauseError::Api(f)),
            Ok(r) if is_all_off(&r.value.capabilities) => Opened::Paused(snapshot),
            Ok(r) => Opened::Undo(
                snapshot,
                PauseError::NotPaused(describe(&r.value.capabilities)),
            ),
        }
    }

    /// Leave the window; the last one out (with no announced runs) restores the snapshot. The
    /// run stops holding the pause whatever the restore does.
    pub async fn leave(&self, run: RunId) -> Result<Left, PauseError> {
        let snapshot = {
            let mut mem = self.lock.lock().await;
            let Some(p) = self.store.pause(self.app()).map_err(store_err)? else {
                return Ok(Left::Restored);
            };
            let remaining = self
                .store
                .pause_leave(self.app(), &run.to_string())
                .map_err(store_err)?;
            if remaining > 0 {
                return Ok(Left::HeldByOthers(remaining));
            }
            match mem.status {
                PauseStatus::Steady => {}
                // The opener holds the window it is opening; its join ends it if pausing fails.
                PauseStatus::Opening => return Ok(Left::HeldByOthers(1)),
                // This run held nothing: the window closed before it left.
                PauseStatus::Restoring | PauseStatus::RestorePending => {
                    return Err(self.pending_from(Some(&p)))
                }
            }
            let age = Duration::from_millis((now_ms() - p.started_at_ms).max(0) as u64);
            if !mem.expected.is_empty()
                && age < self.timing.linger
                && p.restoring_since_ms.is_none()
            {
                self.watch_linger(self.timing.linger - age, p.started_at_ms);
                return Ok(Left::Lingering(mem.expected.len()));
            }
            self.mark_restoring(&mut mem);
            p.snapshot
        };
        self.restore(run, &snapshot).await?;
        Ok(Left::Restored)
    }

    /// After a restart: drops holders whose runs are no longer running, and restores a pause
    /// nobody holds any more.
    pub async fn settle_orphans(&self) -> Result<Option<Left>, PauseError> {
        let snapshot = {
            let mut mem = self.lock.lock().await;
            if mem.status != PauseStatus::Steady {
                // Whoever is writing provisioning right now also ends the window.
                return Ok(None);
            }
            let Some(p) = self.store.pause(self.app()).map_err(store_err)? else {
                return Ok(None);
            };
            let mut remaining = p.holders.len();
            for holder in &p.holders {
                let running = self
                    .store
                    .run(holder)
                    .map_err(store_err)?
                    .is_some_and(|r| r.state == RunState::Running);
                if !running {
                    remaining = self
                        .store
                        .pause_leave(self.app(), holder)
                        .map_err(store_err)?;
                }
            }
            if remaining > 0 {
                return Ok(Some(Left::HeldByOthers(remaining)));
            }
            self.mark_restoring(&mut mem);
            p.snapshot
        };
        self.restore(RunId::new(), &snapshot).await?;
        Ok(Some(Left::Restored))
    }

    /// Closes a lingering window once its bound passes, if nobody joined meanwhile.
    fn watch_linger(&self, after: Duration, started_at_ms: i64) {
        // Weak, so a pending watchdog does not keep a dropped manager alive.
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(me) = me.upgrade() else { return };
            let snapshot = {
                let mut mem = me.lock.lock().await;
                if mem.status != PauseStatus::Steady {
                    return;
                }
                match me.store.pause(me.app()) {
                    Ok(Some(p)) if p.holders.is_empty() && p.started_at_ms == started_at_ms => {
                        me.mark_restoring(&mut mem);
                        p.snapshot
                    }
                    _ => return,
                }
            };
            if let Err(e) = me.restore(RunId::new(), &snapshot).await {
                tracing::error!(error = %e, "restoring provisioning after the linger bound failed");
            }
        });
    }

    fn set_status(&self, mem: &mut Memory, status: PauseStatus) {
        mem.status = status;
        self.status.send_replace(status);
        self.changed.notify_waiters();
    }

    /// Closes the window to joins, in memory and in the store; the caller then restores.
    fn mark_restoring(&self, mem: &mut Memory) {
        if let Err(e) = self.store.pause_mark_restoring(self.app()) {
            // Restoring matters more than the mark; in this process the memory state guards
            // the window, and after a restart a pause without holders is restored anyway.
            tracing::error!(error = %format!("{e:#}"), "could not mark the pause as restoring");
        }
        self.set_status(mem, PauseStatus::Restoring);
    }

    fn pending(&self) -> PauseError {
        self.pending_from(self.store.pause(self.app()).ok().flatten().as_ref())
    }

    fn pending_from(&self, p: Option<&PauseRow>) -> PauseError {
        PauseError::RestorePending {
            app_id: self.app().to_owned(),
            snapshot: p.map(|p| p.snapshot.clone()).unwrap_or(Value::Null),
        }
    }

    async fn read_capabilities(&self) -> Result<Value, ApiFailure> {
        self.retry_unknown("reading provisioning", || async {
            self.okta
                .provisioning()
                .await
                .map(|r| r.value.capabilities)
                .map_err(|e| ApiFailure::from_okta(&e))
        })
        .await
    }

    /// Re-sends a call whose outcome is unknown (5xx, timeout, transport) up to
    /// `pause_attempts` times; a definitive refusal is returned at once. Only for idempotent
    /// calls.
    async fn retry_unknown<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, ApiFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiFailure>>,
    {
        let attempts = self.timing.pause_attempts.max(1);
        let mut backoff = self.timing.restore_backoff;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(f) if f.definitive || attempt >= attempts => return Err(f),
                Err(f) => {
                    tracing::warn!(attempt, error = %f, "{what}: outcome unknown; re-sending");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    attempt += 1;
                }
            }
        }
    }
}

/// Paused: every capability off, Deactivate above all.
fn is_all_off(capabilities: &Value) -> bool {
    is_all_disabled(capabilities) && !deactivate_enabled(capabilities)
}

fn store_err(e: anyhow::Error) -> PauseError {
    PauseError::Store(format!("{e:#}"))
}
