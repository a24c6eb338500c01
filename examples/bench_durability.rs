//! Durability figures (printed, not asserted):
//!
//! 1. the journal's cost per write (intent + outcome, each a synchronous SQLite transaction with
//!    its audit record): median and p99, and the total a repair's writes add to its wall time;
//! 2. recovery time on start with 100 interrupted runs (each killed after step 1).
//!
//! `cargo run --release --example bench_durability`

use o365_fixbot::config::RepairPolicy;
use o365_fixbot::directory::graph::GraphClient;
use o365_fixbot::directory::okta::OktaClient;
use o365_fixbot::directory::HttpSettings;
use o365_fixbot::domain::{Actor, RunState};
use o365_fixbot::pipeline::{Engine, RepairRequest, Reporter, RunOutcome};
use o365_fixbot::sandbox::scenario::ordinary_upn;
use o365_fixbot::sandbox::{Sandbox, SandboxOptions};
use o365_fixbot::store::Store;
use serde_json::json;
use std::time::{Duration, Instant};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fixbot-{tag}-{}", uuid::Uuid::new_v4().simple()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn journal_cost() {
    let store = Store::open(&temp_dir("journal")).expect("store");
    let mut costs = Vec::with_capacity(1000);
    for n in 0..1000 {
        let t = Instant::now();
        let id = store
            .journal_intent(
                "run",
                "2",
                "graph.update_user",
                "object",
                &json!(null),
                &json!({"onPremisesImmutableId": n}),
            )
            .expect("intent");
        store
            .journal_outcome(id, true, None, Some("request-id"))
            .expect("outcome");
        costs.push(t.elapsed());
    }
    costs.sort();
    // A federated repair journals 7 writes: steps 1, 2, 3, 6, 7 and the pause and restore.
    let per_repair = percentile(&costs, 0.5) * 7;
    println!("journal, per write (intent + outcome, synchronous=FULL, WAL), 1,000 writes:");
    println!(
        "  median {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        ms(percentile(&costs, 0.5)),
        ms(percentile(&costs, 0.99)),
        ms(*costs.last().unwrap())
    );
    println!(
        "  a federated repair's 7 writes add ≈ {:.1} ms to its wall time",
        ms(per_repair)
    );
}

async fn recovery_time(latency: Duration) {
    let sb = Sandbox::start(SandboxOptions {
        ordinary_users: 100,
        okta_rate_limit: 100_000,
        latency,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    let dir = temp_dir("recover");
    let http = HttpSettings::default();
    let policy = RepairPolicy {
        allowed_domains: vec!["contoso.com".into()],
        verify_interval: Duration::from_millis(20),
        ..RepairPolicy::default()
    };
    let engine = |store| {
        Engine::new(
            GraphClient::new(sb.graph_config(http.clone())).unwrap(),
            OktaClient::new(sb.okta_config(http.clone())).unwrap(),
            store,
            policy.clone(),
        )
    };
    {
        // 100 runs as a killed process leaves them: running, step 1's intent journalled.
        let store = Store::open(&dir).expect("store");
        let e = engine(store.clone());
        for n in 1..=100 {
            let req = RepairRequest::parse(Actor::new("b", "bench"), &ordinary_upn(n), None, None)
                .unwrap();
            let plan = e.plan(&req).await.expect("plan");
            e.mark_approved(plan.run).unwrap();
            store
                .transition_run(
                    &plan.run.to_string(),
                    &[RunState::Approved],
                    RunState::Running,
                )
                .unwrap();
            store
                .journal_intent(
                    &plan.run.to_string(),
                    "1",
                    "graph.update_user",
                    plan.entra_id.as_str(),
                    &json!(null),
                    &json!({}),
                )
                .unwrap();
        }
    }
    let t = Instant::now();
    let store = Store::open(&dir).expect("store reopens");
    let e = engine(store);
    let settled = e.recover(|_| Reporter::discard()).await.expect("recover");
    let took = t.elapsed();
    let repaired = settled
        .iter()
        .filter(|s| {
            matches!(
                s.outcome,
                RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward
            )
        })
        .count();
    println!(
        "recovery on start with 100 interrupted runs (sandbox, {} ms per API call):",
        latency.as_millis()
    );
    println!(
        "  {:.2} s to settle all ({repaired} completed by rolling forward)",
        took.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    journal_cost();
    recovery_time(Duration::ZERO).await;
    recovery_time(Duration::from_millis(25)).await;
}
