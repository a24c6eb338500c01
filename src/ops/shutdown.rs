//! Graceful shutdown: SIGTERM (what `docker stop` and Kubernetes send) and SIGINT (Ctrl-C), and
//! the work a shutdown waits for — runs executing and what the bot is about to post about them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// SIGTERM and SIGINT, handled by the process itself. Installed first thing: before it, SIGTERM
/// kills the process outright, and as PID 1 in a container it would be ignored altogether.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        let term = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot handle SIGTERM: {e}"))?;
        let int = signal(SignalKind::interrupt())
            .map_err(|e| anyhow::anyhow!("cannot handle SIGINT: {e}"))?;
        Ok(Self { term, int })
    }

    /// Waits for the next SIGTERM or SIGINT; returns its name for the log.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Whether the process is shutting down, and the work it must let finish first. Cheap to clone;
/// every clone sees the same state.
#[derive(Clone)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    /// Work in progress: key → what it is (e.g. `run 1a2b3c4d for alex@contoso.com`).
    work: Arc<watch::Sender<BTreeMap<u64, String>>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            draining: Arc::new(AtomicBool::new(false)),
            next: Arc::new(AtomicU64::new(0)),
            work: Arc::new(watch::Sender::new(BTreeMap::new())),
        }
    }
}

/// Work in progress; it ends when this is dropped, however its task ends (even by a panic).
pub struct Working {
    key: u64,
    work: Arc<watch::Sender<BTreeMap<u64, String>>>,
}

impl Drop for Working {
    fn drop(&mut self) {
        self.work.send_modify(|w| {
            w.remove(&self.key);
        });
    }
}

impl Lifecycle {
    /// From now on no new work is taken.
    pub fn begin_shutdown(&self) {
        // SeqCst, with the work map behind a lock: a caller that enters work and then reads the
        // flag, and a shutdown that sets the flag and then reads the work, cannot both miss.
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records work that a shutdown waits for, until the returned guard is dropped.
    pub fn enter(&self, what: impl Into<String>) -> Working {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let what = what.into();
        self.work.send_modify(|w| {
            w.insert(key, what);
        });
        Working {
            key,
            work: Arc::clone(&self.work),
        }
    }

    /// The work in progress now.
    pub fn in_progress(&self) -> Vec<String> {
        self.work.borrow().values().cloned().collect()
    }

    /// Waits until no work is in progress, at most `grace`; returns what was still in progress.
    pub async fn wait_idle(&self, grace: Duration) -> Vec<String> {
        let mut rx = self.work.subscribe();
        let _ = tokio::time::timeout(grace, rx.wait_for(BTreeMap::is_empty)).await;
        self.in_progress()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_ends_when_the_last_work_ends_and_names_what_outlived_the_grace() {
        let life = Lifecycle::default();
        assert!(life.wait_idle(Duration::ZERO).await.is_empty());
        let a = life.enter("run a");
        let b = life.enter("run b");
        drop(a);
        assert_eq!(
            life.wait_idle(Duration::from_millis(10)).await,
            vec!["run b".to_owned()]
        );
        let waiter = {
            let life = life.clone();
            tokio::spawn(async move { life.wait_idle(Duration::from_secs(30)).await })
        };
        drop(b);
        assert!(waiter.await.unwrap().is_empty());
    }

    #[test]
    fn a_clone_sees_the_shutdown() {
        let life = Lifecycle::default();
        let other = life.clone();
        assert!(!other.draining());
        life.begin_shutdown();
        assert!(other.draining());
    }
}
