//! Operating it: health and readiness probes, and metrics scraped after a sandbox run.

use crate::pipeline::{env, repair};
use o365_fixbot::ops::health::{probe, serve, Readiness};
use o365_fixbot::pipeline::RunOutcome;
use o365_fixbot::sandbox::scenario::ALEX;
use std::net::SocketAddr;

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let res = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn health_readiness_and_metrics_after_a_repair() {
    let env = env().await;
    let ready = Readiness::new(env.engine.store().clone());
    let (addr, task) = serve(SocketAddr::from(([127, 0, 0, 1], 0)), ready.clone())
        .await
        .unwrap();
    assert_eq!(get(addr, "/healthz").await.0, 200);
    probe(addr).await.expect("healthcheck passes");
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("gateway not connected"), "{body}");
    ready.set_connected(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    let (_, summary, _) = repair(&env, ALEX).await;
    assert_eq!(summary.outcome, RunOutcome::Repaired);
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "fixbot_runs_total{outcome=\"succeeded\"}",
        "fixbot_step_duration_seconds_count{step=\"2\",phase=\"Forward\",outcome=\"done\"}",
        "fixbot_api_calls_total{service=\"graph\",status=\"204\"}",
        "fixbot_api_calls_total{service=\"okta\",status=\"200\"}",
        "fixbot_approvals_pending",
        "# TYPE fixbot_gateway_connected gauge",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    ready.set_draining();
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "not ready while shutting down");
    assert!(body.contains("shutting down"), "{body}");
    task.abort();
    let _ = task.await;
    assert!(
        probe(addr).await.is_err(),
        "a stopped server fails the healthcheck"
    );
}
