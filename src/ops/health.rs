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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What readiness depends on; front ends flip `connected`.
#[derive(Clone)]
pub struct Readiness {
    pub store: Store,
    connected: Arc<AtomicBool>,
}

impl Readiness {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            connected: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Called by the chat front end as its connection comes and goes.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
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
