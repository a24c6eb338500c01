//! Putting the snapshot back: a run's own bounded attempts, then a background restorer that
//! keeps trying for as long as the process lives.

use super::{store_err, PauseError, PauseManager, PauseStatus, BACKOFF_CAP};
use crate::domain::RunId;
use crate::pipeline::capabilities::{all_disabled, describe};
use crate::pipeline::journal::ApiFailure;
use crate::pipeline::report::StepKind;
use serde_json::Value;
use std::time::Duration;

/// Longest wait between the background restorer's attempts: it may run for hours, so it must not
/// hammer Okta, but provisioning should come back soon after Okta does.
const BACKGROUND_BACKOFF_CAP: Duration = Duration::from_secs(60);

impl PauseManager {
    /// Restores with the status already `Restoring`, outside the lock. Ends the pause when the
    /// snapshot reads back; otherwise hands it to the background restorer.
    pub(super) async fn restore(&self, run: RunId, snapshot: &Value) -> Result<(), PauseError> {
        let mut result = self.restore_once(run, snapshot).await;
        let mut backoff = self.timing.restore_backoff;
        for attempt in 2..=self.timing.restore_attempts.max(1) {
            let Err(f) = &result else { break };
            tracing::warn!(attempt, error = %f, "restoring provisioning failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
            result = self.restore_once(run, snapshot).await;
        }
        let mut mem = self.lock.lock().await;
        match result {
            Ok(()) => {
                let ended = self.store.pause_end(self.app()).map_err(store_err);
                // Steady even if the store failed: its row is still marked restoring, so the
                // next join restores again (idempotent) before opening a window.
                self.set_status(&mut mem, PauseStatus::Steady);
                ended
            }
            Err(f) => {
                self.set_status(&mut mem, PauseStatus::RestorePending);
                self.spawn_restorer(run, snapshot.clone());
                Err(PauseError::RestoreFailed(f))
            }
        }
    }

    /// PUT the snapshot back and compare what Okta answers it now holds with the snapshot.
    async fn restore_once(&self, run: RunId, snapshot: &Value) -> Result<(), ApiFailure> {
        let label = StepKind::ResumeProvisioning.label();
        // Okta answers the PUT with the feature as stored: that answer is the read-back.
        let now = self
            .journal
            .write(
                run,
                &label,
                "okta.put_feature",
                self.app(),
                &all_disabled(snapshot),
                snapshot,
                || self.okta.set_provisioning(snapshot),
            )
            .await?;
        if now.value.capabilities == *snapshot {
            Ok(())
        } else {
            Err(ApiFailure::internal(format!(
                "read back {} instead of the snapshot",
                describe(&now.value.capabilities)
            )))
        }
    }

    /// Keeps restoring until it works or the manager is gone (the process is ending; the next
    /// start restores the stored pause). Each attempt is bounded by the client's call deadline.
    fn spawn_restorer(&self, run: RunId, snapshot: Value) {
        tracing::error!(
            app = self.app(),
            snapshot = %snapshot,
            "restoring Okta provisioning ran out of attempts; retrying in the background. To restore by hand: PUT /api/v1/apps/{}/features/USER_PROVISIONING with the snapshot",
            self.app()
        );
        let me = self.me.clone();
        let mut backoff = self.timing.restore_backoff;
        tokio::spawn(async move {
            let mut attempt: u64 = 0;
            loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKGROUND_BACKOFF_CAP);
                let Some(me) = me.upgrade() else {
                    tracing::warn!("background restore of Okta provisioning stopped: the bot is shutting down; the next start restores it");
                    return;
                };
                attempt += 1;
                match me.restore_once(run, &snapshot).await {
                    Ok(()) => {
                        let mut mem = me.lock.lock().await;
                        if let Err(e) = me.store.pause_end(me.app()) {
                            tracing::error!(error = %format!("{e:#}"), "provisioning restored, but the pause could not be removed from the store");
                        }
                        me.set_status(&mut mem, PauseStatus::Steady);
                        tracing::info!(attempt, "Okta provisioning restored in the background");
                        return;
                    }
                    Err(f) => {
                        tracing::warn!(attempt, error = %f, "background restore of Okta provisioning failed; retrying");
                    }
                }
            }
        });
    }
}
