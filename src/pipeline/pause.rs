//! The shared provisioning pause: concurrent repairs share one short window in which the Office
//! 365 app's provisioning is off, and the last one out restores it exactly as snapshotted.
//!
//! Joining, leaving, and the snapshot/restore writes happen under one lock, and the pause (its
//! snapshot and holders) is in the store before provisioning is changed, so a crash cannot lose
//! the snapshot.

use super::capabilities::{all_disabled, deactivate_enabled, is_all_disabled};
use super::journal::{ApiFailure, Journal};
use crate::directory::okta::OktaClient;
use crate::domain::RunId;
use crate::store::{now_ms, Store};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Mutex, Notify};

#[derive(Debug, Clone, thiserror::Error)]
pub enum PauseError {
    #[error("could not read or change Okta provisioning: {0}")]
    Api(ApiFailure),
    #[error("provisioning read back as {0} after pausing; it was restored and the run stopped")]
    NotPaused(String),
    #[error("waited {0:?} for the previous provisioning window to end")]
    WaitedTooLong(Duration),
    #[error("restoring provisioning failed: {0}")]
    RestoreFailed(ApiFailure),
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

#[derive(Debug, Clone, Copy)]
pub struct PauseTiming {
    /// Join only a pause younger than this, so a stream of repairs cannot keep provisioning off.
    pub join_window: Duration,
    /// Keep provisioning paused this long at most for announced runs with no holder.
    pub linger: Duration,
    /// Attempts and first backoff for restoring: restoring must not give up easily.
    pub restore_attempts: u32,
    pub restore_backoff: Duration,
}

#[derive(Default)]
struct Memory {
    /// Runs executing their Entra half that will join soon.
    expected: HashSet<RunId>,
}

pub struct PauseManager {
    okta: OktaClient,
    store: Store,
    journal: Journal,
    timing: PauseTiming,
    lock: Mutex<Memory>,
    changed: Notify,
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
            me: me.clone(),
        })
    }

    fn app(&self) -> &str {
        self.okta.app_id()
    }

    /// Announce a run that will join after its Entra half, so a pause ending meanwhile lingers.
    pub async fn expect(&self, run: RunId) {
        self.lock.lock().await.expected.insert(run);
    }

    /// The announced run will not join after all; restores if it was the last reason to wait.
    pub async fn unexpect(&self, run: RunId) -> Result<Option<Left>, PauseError> {
        let mut mem = self.lock.lock().await;
        mem.expected.remove(&run);
        let Some(p) = self.store.pause(self.app()).map_err(store_err)? else {
            return Ok(None);
        };
        if p.holders.is_empty() && mem.expected.is_empty() {
            self.restore_locked(run, &p.snapshot).await?;
            return Ok(Some(Left::Restored));
        }
        Ok(None)
    }

    /// Join the current window, or open one: snapshot the capabilities (stored first), disable
    /// them, and read them back. Waits for the next window when the current one is too old.
    pub async fn join(&self, run: RunId) -> Result<Joined, PauseError> {
        let wait_bound = self.timing.join_window + self.timing.linger + Duration::from_secs(30);
        let deadline = tokio::time::Instant::now() + wait_bound;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut mem = self.lock.lock().await;
                match self.store.pause(self.app()).map_err(store_err)? {
                    None => {
                        let joined = self.open_locked(run).await;
                        mem.expected.remove(&run);
                        return joined;
                    }
                    Some(p) => {
                        let age = Duration::from_millis((now_ms() - p.started_at_ms).max(0) as u64);
                        if age < self.timing.join_window {
                            self.store
                                .pause_join(self.app(), &run.to_string())
                                .map_err(store_err)?;
                            mem.expected.remove(&run);
                            return Ok(Joined {
                                first: false,
                                snapshot: p.snapshot,
                            });
                        }
                        if p.holders.is_empty() {
                            // A lingering window past its bound: close it, then open a new one.
                            self.restore_locked(run, &p.snapshot).await?;
                            continue;
                        }
                    }
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(PauseError::WaitedTooLong(wait_bound));
            }
        }
    }

    async fn open_locked(&self, run: RunId) -> Result<Joined, PauseError> {
        let feature = self
            .okta
            .provisioning()
            .await
            .map_err(|e| PauseError::Api(ApiFailure::from_okta(&e)))?;
        let snapshot = feature.value.capabilities;
        self.store
            .pause_begin(self.app(), &snapshot, &run.to_string())
            .map_err(store_err)?;
        let off = all_disabled(&snapshot);
        let label = super::report::StepKind::PauseProvisioning.label();
        let put = self
            .journal
            .write(
                run,
                &label,
                "okta.put_feature",
                self.app(),
                &snapshot,
                &off,
                || self.okta.set_provisioning(&off),
            )
            .await;
        let readback = match put {
            Ok(_) => self.okta.provisioning().await.map(|r| r.value.capabilities),
            Err(e) => {
                self.restore_locked(run, &snapshot).await?;
                return Err(PauseError::Api(e));
            }
        };
        match readback {
            Ok(now) if is_all_disabled(&now) && !deactivate_enabled(&now) => Ok(Joined {
                first: true,
                snapshot,
            }),
            Ok(now) => {
                self.restore_locked(run, &snapshot).await?;
                Err(PauseError::NotPaused(super::capabilities::describe(&now)))
            }
            Err(e) => {
                self.restore_locked(run, &snapshot).await?;
                Err(PauseError::Api(ApiFailure::from_okta(&e)))
            }
        }
    }

    /// Leave the window; the last one out (with no announced runs) restores the snapshot.
    pub async fn leave(&self, run: RunId) -> Result<Left, PauseError> {
        let mem = self.lock.lock().await;
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
        let age = Duration::from_millis((now_ms() - p.started_at_ms).max(0) as u64);
        if !mem.expected.is_empty() && age < self.timing.linger {
            self.watch_linger(self.timing.linger - age);
            return Ok(Left::Lingering(mem.expected.len()));
        }
        self.restore_locked(run, &p.snapshot).await?;
        Ok(Left::Restored)
    }

    /// After a restart: drops holders whose runs are no longer running, and restores a pause
    /// nobody holds any more.
    pub async fn settle_orphans(&self) -> Result<Option<Left>, PauseError> {
        let _mem = self.lock.lock().await;
        let Some(p) = self.store.pause(self.app()).map_err(store_err)? else {
            return Ok(None);
        };
        let mut remaining = p.holders.len();
        for holder in &p.holders {
            let running = self
                .store
                .run(holder)
                .map_err(store_err)?
                .is_some_and(|r| r.state == crate::domain::RunState::Running);
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
        self.restore_locked(RunId::new(), &p.snapshot).await?;
        Ok(Some(Left::Restored))
    }

    /// Closes a lingering window once its bound passes, if nobody joined meanwhile.
    fn watch_linger(&self, after: Duration) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _mem = me.lock.lock().await;
            if let Ok(Some(p)) = me.store.pause(me.app()) {
                if p.holders.is_empty() {
                    if let Err(e) = me.restore_locked(RunId::new(), &p.snapshot).await {
                        tracing::error!(error = %e, "restoring provisioning after the linger bound failed");
                    }
                }
            }
        });
    }

    /// PUT the snapshot back, retrying well past the normal budget, read it back and compare.
    async fn restore_locked(&self, run: RunId, snapshot: &Value) -> Result<(), PauseError> {
        let label = super::report::StepKind::ResumeProvisioning.label();
        let mut backoff = self.timing.restore_backoff;
        let mut last = None;
        for attempt in 1..=self.timing.restore_attempts.max(1) {
            let current = all_disabled(snapshot);
            let put = self
                .journal
                .write(
                    run,
                    &label,
                    "okta.put_feature",
                    self.app(),
                    &current,
                    snapshot,
                    || self.okta.set_provisioning(snapshot),
                )
                .await;
            match put {
                Ok(_) => match self.okta.provisioning().await {
                    Ok(now) if now.value.capabilities == *snapshot => {
                        self.store.pause_end(self.app()).map_err(store_err)?;
                        self.changed.notify_waiters();
                        return Ok(());
                    }
                    Ok(now) => {
                        last = Some(ApiFailure::internal(format!(
                            "read back {} instead of the snapshot",
                            super::capabilities::describe(&now.value.capabilities)
                        )))
                    }
                    Err(e) => last = Some(ApiFailure::from_okta(&e)),
                },
                Err(e) => last = Some(e),
            }
            if attempt < self.timing.restore_attempts {
                tracing::warn!(attempt, "restoring provisioning failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        Err(PauseError::RestoreFailed(last.unwrap_or_else(|| {
            ApiFailure::internal("no attempt made".into())
        })))
    }
}

fn store_err(e: anyhow::Error) -> PauseError {
    PauseError::Store(format!("{e:#}"))
}
