//! Repair benchmarks against the sandbox tenant (figures, not assertions):
//!
//! 1. one repair's wall time against its critical path (sequential calls × per-call latency);
//! 2. one hundred repairs started together under an Okta limit of 600 requests/minute:
//!    completion time against the bound that limit sets, and 429s that reached a step.
//!
//! `cargo run --release --example bench_repair [single|hundred]`

use o365_fixbot::config::RepairPolicy;
use o365_fixbot::directory::graph::GraphClient;
use o365_fixbot::directory::okta::OktaClient;
use o365_fixbot::directory::HttpSettings;
use o365_fixbot::domain::Actor;
use o365_fixbot::pipeline::{Engine, RepairRequest, Reporter, RunOutcome};
use o365_fixbot::sandbox::scenario::{ordinary_upn, ADELE, ALEX};
use o365_fixbot::sandbox::{Sandbox, SandboxOptions};
use o365_fixbot::store::Store;
use std::time::{Duration, Instant};

/// Calls that must happen one after another in one federated repair, by phase:
/// plan: batch 1 (the mappings list, then each mapping) 2 + batch 2 (roles, app user, groups,
/// temporary UPN) 1; execute: stale check 1, steps 1–3 3, verify 1, pause (read, write, read
/// back) 3, Deactivate re-check + unassign 2, reassign 1, verify 1, restore (write, read back) 2.
const CRITICAL_PATH_CALLS: u32 = 3 + 14;

fn policy() -> RepairPolicy {
    RepairPolicy {
        allowed_domains: vec!["contoso.com".into(), "fabrikam.com".into()],
        verify_attempts: 20,
        verify_interval: Duration::from_millis(50),
        pause_join_window: Duration::from_secs(120),
        pause_linger: Duration::from_secs(5),
        ..RepairPolicy::default()
    }
}

fn http() -> HttpSettings {
    HttpSettings {
        request_timeout: Duration::from_secs(10),
        call_deadline: Duration::from_secs(180),
        ..HttpSettings::default()
    }
}

async fn engine(sb: &Sandbox) -> Engine {
    let dir = std::env::temp_dir().join(format!("fixbot-bench-{}", uuid::Uuid::new_v4().simple()));
    let store = Store::open(&dir).expect("store");
    let graph = GraphClient::new(sb.graph_config(http())).expect("graph");
    let okta = OktaClient::new(sb.okta_config(http())).expect("okta");
    Engine::new(graph, okta, store, policy())
}

async fn repair(engine: &Engine, upn: &str) -> (RunOutcome, Duration, Duration) {
    let req = RepairRequest::parse(Actor::new("bench", "bench"), upn, None, None).expect("input");
    let t0 = Instant::now();
    let plan = engine.plan(&req).await.expect("plan");
    let planned = t0.elapsed();
    engine.mark_approved(plan.run).expect("approve");
    let t1 = Instant::now();
    let s = engine.execute(&plan, &Reporter::discard()).await;
    (s.outcome, planned, t1.elapsed())
}

async fn single() {
    let latency = Duration::from_millis(25);
    let sb = Sandbox::start(SandboxOptions {
        latency,
        ordinary_users: 10,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    let engine = engine(&sb).await;
    // Warm up: token fetched, Okta pacing buckets learned.
    let (o, _, _) = repair(&engine, ALEX).await;
    assert_eq!(o, RunOutcome::Repaired);
    let (o, plan, exec) = repair(&engine, ADELE).await;
    assert_eq!(o, RunOutcome::Repaired);
    let wall = plan + exec;
    let critical = latency * CRITICAL_PATH_CALLS;
    println!(
        "single repair (federated user, {} ms per API call):",
        latency.as_millis()
    );
    println!(
        "  plan {:>6.0} ms   execute {:>6.0} ms   total {:>6.0} ms",
        ms(plan),
        ms(exec),
        ms(wall)
    );
    println!(
        "  critical path {CRITICAL_PATH_CALLS} calls × {} ms = {:.0} ms",
        latency.as_millis(),
        ms(critical)
    );
    println!(
        "  wall / critical path = {:.2}×",
        wall.as_secs_f64() / critical.as_secs_f64()
    );
}

async fn hundred() {
    let limit = 600;
    let window = Duration::from_secs(60);
    let sb = Sandbox::start(SandboxOptions {
        ordinary_users: 100,
        okta_rate_limit: limit,
        okta_rate_window: window,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    let engine = engine(&sb).await;
    let t0 = Instant::now();
    let tasks: Vec<_> = (1..=100)
        .map(|n| {
            let e = engine.clone();
            tokio::spawn(async move { repair(&e, &ordinary_upn(n)).await.0 })
        })
        .collect();
    let mut repaired = 0;
    for t in tasks {
        if t.await.expect("task") == RunOutcome::Repaired {
            repaired += 1;
        }
    }
    let total = t0.elapsed();
    let calls = sb.calls();
    let first = calls
        .iter()
        .filter(|c| c.op.starts_with("okta."))
        .map(|c| c.at_ms)
        .min()
        .unwrap_or(0);
    let mut busiest = ("", 0usize);
    for bucket in ["/api/v1/users", "/api/v1/apps", "/api/v1/mappings"] {
        let n = calls
            .iter()
            .filter(|c| c.op.starts_with("okta.") && c.path_and_query.contains(bucket))
            .count();
        if n > busiest.1 {
            busiest = (bucket, n);
        }
    }
    // Fixed windows from the first call: the last of N calls cannot start before window ⌈N/limit⌉−1.
    let windows_needed = busiest.1.div_ceil(limit as usize) as u32;
    let bound = window * (windows_needed - 1);
    let okta_calls = calls.iter().filter(|c| c.op.starts_with("okta.")).count();
    let writes = sb.provisioning_writes().len();
    println!("100 repairs started together, Okta limit {limit}/min per bucket:");
    println!("  repaired {repaired}/100 in {:.1} s", total.as_secs_f64());
    println!(
        "  Okta calls {okta_calls}; busiest bucket {} with {} calls (first Okta call at {} ms)",
        busiest.0, busiest.1, first
    );
    println!(
        "  bound set by the limit: {:.1} s; bound / actual = {:.0}%",
        bound.as_secs_f64(),
        100.0 * bound.as_secs_f64() / total.as_secs_f64().max(0.001)
    );
    println!(
        "  429s served by Okta: {}; 429s seen by the client: {}; pacing waits: {}",
        sb.okta_throttled(),
        engine.okta().retried_429(),
        engine.okta().throttle_waits()
    );
    println!("  provisioning writes (pause + restore): {writes}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if which == "single" || which == "all" {
        single().await;
    }
    if which == "hundred" || which == "all" {
        hundred().await;
    }
}
