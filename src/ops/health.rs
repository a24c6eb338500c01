//! Health and metrics over HTTP: `/healthz` (the process is up), `/readyz` (the chat connection
//! is up and the store takes writes), `/metrics` (Prometheus text).

use super::metrics::metrics;
use crate::store::Store;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Gateway sessions lost in this process (op 9, invalid session), counted by the Discord front
/// end's log watcher. Process-wide because it is fed from a tracing layer, which has no handle on
/// any one client; `serve` runs one client per process.
static SESSIONS_LOST: AtomicU64 = AtomicU64::new(0);

/// The gateway said the session is gone (op 9): not ready until the next READY or RESUMED.
pub fn gateway_session_lost() {
    SESSIONS_LOST.fetch_add(1, Ordering::AcqRel);
    metrics().gateway_connected.set(0);
}

/// What readiness depends on; front ends report the connection through it.
#[derive(Clone)]
pub struct Readiness {
    pub store: Store,
    /// The shard's connection stage is `Connected` (stage updates and a watchdog).
    connected: Arc<AtomicBool>,
    /// [`SESSIONS_LOST`] at the last READY/RESUMED: a later loss means no live session.
    session_epoch: Arc<AtomicU64>,
    /// Shutting down: taking no new commands.
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            connected: Arc::new(AtomicBool::new(false)),
            session_epoch: Arc::new(AtomicU64::new(SESSIONS_LOST.load(Ordering::Acquire))),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Called by the chat front end as its connection comes and goes. Does not end an invalid
    /// session's wait: only [`Readiness::session_started`] does.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        self.publish();
    }

    /// READY or RESUMED: a live session from here on.
    pub fn session_started(&self) {
        self.session_epoch
            .store(SESSIONS_LOST.load(Ordering::Acquire), Ordering::Release);
        self.set_connected(true);
    }

    /// Shutting down: not ready any more, so no new traffic is sent this way.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Connected, with no session lost since the last READY/RESUMED.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
            && SESSIONS_LOST.load(Ordering::Acquire) == self.session_epoch.load(Ordering::Acquire)
    }

    fn publish(&self) {
        metrics().gateway_connected.set(i64::from(self.connected()));
    }
}

/// Serves the endpoints on `addr` until the returned task is aborted; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    ready: Readiness,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ready);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for health checks on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok((bound, task))
}

async fn readyz(State(ready): State<Readiness>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if !ready.connected() {
        problems.push("chat gateway not connected".to_owned());
    }
    if ready.draining.load(Ordering::Acquire) {
        problems.push("shutting down".to_owned());
    }
    if let Err(e) = ready.store.check_writable() {
        problems.push(format!("store not writable: {e:#}"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

async fn metrics_text(State(ready): State<Readiness>) -> impl IntoResponse {
    // At scrape time too: an op 9 changes what `connected()` says without telling this instance.
    ready.publish();
    if let Ok(pending) = ready
        .store
        .count_runs(crate::domain::RunState::AwaitingApproval)
    {
        metrics().approvals_pending.set(pending as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics().render(),
    )
}

/// `o365-fixbot healthcheck`: asks `/healthz` at `addr` (a minimal image has no curl).
pub async fn probe(addr: SocketAddr) -> anyhow::Result<()> {
    let host = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let res = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?
        .get(format!("http://{host}/healthz"))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("no answer from http://{host}/healthz: {e}"))?;
    anyhow::ensure!(
        res.status().is_success(),
        "http://{host}/healthz answered {}",
        res.status()
    );
    Ok(())
}
