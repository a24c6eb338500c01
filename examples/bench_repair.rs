//! Repair benchmarks against the sandbox tenant (figures, not assertions):
//!
//! 1. one repair's wall time against its critical path (sequential calls × per-call latency),
//!    and against the seed's manual procedure run call after call with plain reqwest on the same
//!    sandbox (the baseline the bot has to beat);
//! 2. one hundred users as one batch at 150 ms per call under Okta's 500/minute per bucket:
//!    wall time, calls per user per bucket, 429s, provisioning-paused time, the Okta bound, and
//!    the same hundred by the seed's procedure one call after another.
//!
//! `cargo run --release --example bench_repair [single|hundred]`

use o365_fixbot::config::RepairPolicy;
use o365_fixbot::directory::graph::GraphClient;
use o365_fixbot::directory::okta::OktaClient;
use o365_fixbot::directory::HttpSettings;
use o365_fixbot::domain::{Actor, ImmutableId, Upn};
use o365_fixbot::pipeline::batch::BatchRequest;
use o365_fixbot::pipeline::{Engine, ModeChoice, RepairRequest, Reporter, RunOutcome};
use o365_fixbot::sandbox::scenario::{ordinary_upn, ADELE, ALEX, INITIAL_DOMAIN};
use o365_fixbot::sandbox::{Sandbox, SandboxOptions};
use o365_fixbot::store::Store;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Calls that must happen one after another in one federated repair, by phase (the step table's
/// two lanes overlap the rest):
/// plan: batch 1 (user, domain, Okta user, feature …; the mappings' two calls run beside both
/// batches) 1 + batch 2 (roles, app user, groups, temporary UPN) 1;
/// execute: stale check ‖ pause snapshot 1, step 1 ‖ pause PUT (its answer is the read-back) 1,
/// steps 2+3 in one PATCH 1, verify ‖ Deactivate re-check 1, unassign 1, reassign (its answer is
/// step 8's read) 1, restore PUT (its answer compared) 1.
const CRITICAL_PATH_CALLS: u32 = 2 + 7;

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
    let req = RepairRequest::parse(Actor::new("bench", "bench"), upn, None, None)
        .expect("input")
        .with_mode(ModeChoice::Full);
    let t0 = Instant::now();
    let plan = engine.plan(&req).await.expect("plan");
    let planned = t0.elapsed();
    engine.mark_approved(plan.run).expect("approve");
    let t1 = Instant::now();
    let s = engine.execute(&plan, &Reporter::discard()).await;
    (s.outcome, planned, t1.elapsed())
}

async fn single() {
    let latency = Duration::from_millis(150);
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
    sb.reset_calls();
    let (o, plan, exec) = repair(&engine, ADELE).await;
    assert_eq!(o, RunOutcome::Repaired);
    let bot_calls = sb.calls().len();
    let wall = plan + exec;
    let critical = latency * CRITICAL_PATH_CALLS;
    println!(
        "single repair (federated user without an ImmutableID, {} ms per API call):",
        latency.as_millis()
    );
    println!(
        "  bot, request → done: plan {:>6.0} ms   execute {:>6.0} ms   total {:>6.0} ms   \
         ({bot_calls} API calls)",
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

    // The same kind of user for the baseline: federated, no ImmutableID yet.
    let fresh = ordinary_upn(1);
    assert!(sb.clear_entra_immutable_id(&fresh), "{fresh} exists");
    sb.reset_calls();
    let (made, seq) = sequential(&sb, &fresh).await;
    let served = sb.calls().len();
    println!(
        "  sequential manual procedure (plain reqwest, one call after another): {made} calls \
         made ({served} served) in {:>6.0} ms",
        ms(seq)
    );
    println!(
        "  bot / sequential = {:.2}× (the bot is {:.2}× faster)",
        wall.as_secs_f64() / seq.as_secs_f64(),
        seq.as_secs_f64() / wall.as_secs_f64()
    );
}

/// The seed's manual procedure for `upn` (a federated user), each call awaited before the next,
/// as an admin runs it by hand: Graph token, read user, read domain, UPN to the initial domain,
/// set the ImmutableID, UPN back, verify; Okta: read provisioning, switch it all off, read the
/// app user, unassign, reassign with the new ID and the saved profile, verify, restore
/// provisioning, read it back. Returns the calls made and the wall time.
async fn sequential(sb: &Sandbox, upn: &str) -> (u32, Duration) {
    let mut m = Manual::new(sb);
    let started = Instant::now();
    let token = m
        .token()
        .await
        .get("access_token")
        .and_then(Value::as_str)
        .expect("access_token")
        .to_owned();
    seed_procedure(&mut m, &token, upn).await;
    (m.calls, started.elapsed())
}

/// The seed's procedure for one user with a Graph token already in hand: 15 calls.
async fn seed_procedure(m: &mut Manual<'_>, token: &str, upn: &str) {
    let sb = m.sb;
    // The admin has the Okta user open in the Admin Console: no API call finds the id.
    let okta_user = sb.okta_user_id(upn).expect("okta user");
    let new_id = ImmutableId::from_guid(uuid::Uuid::new_v4());
    let new_id = new_id.as_str();
    let token = token.to_owned();
    let select = "?$select=id,userPrincipalName,onPremisesImmutableId";
    let user = m
        .graph(
            &token,
            Method::GET,
            &format!("/users/{upn}{select}"),
            None,
            200,
        )
        .await;
    let id = user["id"].as_str().expect("user id").to_owned();
    let (local, domain) = upn.split_once('@').expect("a UPN");
    let d = m
        .graph(
            &token,
            Method::GET,
            &format!("/domains/{domain}"),
            None,
            200,
        )
        .await;
    assert_eq!(d["authenticationType"], "Federated", "{d}");
    let user_path = format!("/users/{id}");
    let temporary = format!("{local}@{INITIAL_DOMAIN}");
    for body in [
        json!({ "userPrincipalName": temporary }),
        json!({ "onPremisesImmutableId": new_id }),
        json!({ "userPrincipalName": upn }),
    ] {
        m.graph(&token, Method::PATCH, &user_path, Some(body), 204)
            .await;
    }
    let check = m
        .graph(
            &token,
            Method::GET,
            &format!("{user_path}{select}"),
            None,
            200,
        )
        .await;
    assert_eq!(check["onPremisesImmutableId"], new_id, "{check}");
    assert_eq!(check["userPrincipalName"], upn, "{check}");

    let feature = format!("/apps/{}/features/USER_PROVISIONING", sb.creds.app_id);
    let app_user_path = format!("/apps/{}/users/{okta_user}", sb.creds.app_id);
    let saved = m.okta(Method::GET, &feature, None, 200).await["capabilities"].clone();
    m.okta(Method::PUT, &feature, Some(all_off(&saved)), 200)
        .await;
    let app_user = m.okta(Method::GET, &app_user_path, None, 200).await;
    m.okta(
        Method::DELETE,
        &format!("{app_user_path}?sendEmail=false"),
        None,
        204,
    )
    .await;
    let mut profile = app_user["profile"].clone();
    profile["immutableId"] = json!(new_id);
    let assign = json!({
        "id": okta_user,
        "scope": "USER",
        "credentials": { "userName": app_user["credentials"]["userName"] },
        "profile": profile,
    });
    m.okta(
        Method::POST,
        &format!("/apps/{}/users", sb.creds.app_id),
        Some(assign),
        200,
    )
    .await;
    let check = m.okta(Method::GET, &app_user_path, None, 200).await;
    assert_eq!(check["profile"]["immutableId"], new_id, "{check}");
    m.okta(Method::PUT, &feature, Some(saved.clone()), 200)
        .await;
    let restored = m.okta(Method::GET, &feature, None, 200).await;
    assert_eq!(restored["capabilities"], saved, "provisioning restored");
}

/// `capabilities` with every `status` switched to `DISABLED`.
fn all_off(capabilities: &Value) -> Value {
    match capabilities {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "status" {
                        json!("DISABLED")
                    } else {
                        all_off(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Plain reqwest against the sandbox, counting every request sent.
struct Manual<'a> {
    sb: &'a Sandbox,
    http: reqwest::Client,
    calls: u32,
}

impl<'a> Manual<'a> {
    fn new(sb: &'a Sandbox) -> Self {
        Self {
            sb,
            http: reqwest::Client::new(),
            calls: 0,
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder, want: u16) -> Value {
        self.calls += 1;
        let r = req.send().await.expect("the sandbox answers");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.expect("a body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, want, "call {}: {body}", self.calls);
        body
    }

    async fn token(&mut self) -> Value {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.sb.urls.authority, self.sb.creds.tenant_id
        );
        let form = [
            ("client_id", self.sb.creds.client_id.as_str()),
            ("client_secret", self.sb.creds.client_secret.expose()),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ];
        let req = self.http.post(url).form(&form);
        self.send(req, 200).await
    }

    async fn graph(
        &mut self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.sb.urls.graph))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req, want).await
    }

    async fn okta(&mut self, method: Method, path: &str, body: Option<Value>, want: u16) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.sb.urls.okta))
            .header(
                "Authorization",
                format!("SSWS {}", self.sb.creds.okta_token.expose()),
            );
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req, want).await
    }
}

/// Okta's per-bucket limit in the bulk benchmark: `/api/v1/apps/{id}` at 500 per minute.
const BULK_OKTA_LIMIT: u32 = 500;

/// One hundred users as one batch (one plan, one approval, one provisioning window) at 150 ms
/// per API call under the sandbox's Okta limits, then the same hundred by the seed's procedure
/// one call after another on a fresh sandbox.
async fn hundred() {
    let latency = Duration::from_millis(150);
    let window = Duration::from_secs(60);
    let options = || SandboxOptions {
        latency,
        ordinary_users: 100,
        okta_rate_limit: BULK_OKTA_LIMIT,
        okta_rate_window: window,
        ..SandboxOptions::default()
    };
    let sb = Sandbox::start(options()).await.expect("sandbox");
    let engine = engine(&sb).await;
    // Warm up outside the figures: the Graph token, the Okta pacing buckets.
    let _ = engine.graph().initial_domain().await;
    let _ = engine.okta().provisioning().await;
    sb.reset_calls();
    let users: Vec<Upn> = (1..=100)
        .map(|n| Upn::parse(&ordinary_upn(n)).expect("upn"))
        .collect();
    let t0 = Instant::now();
    let batch = engine
        .plan_batch(&BatchRequest {
            requester: Actor::new("bench", "bench"),
            users,
            mode: ModeChoice::Full,
            reason: None,
        })
        .await
        .expect("batch planned");
    let planned = t0.elapsed();
    assert_eq!(batch.plans.len(), 100, "refused: {:?}", batch.refused);
    assert!(engine
        .approve_batch(batch.id, &Actor::new("approver", "approver"))
        .expect("approve"));
    let t1 = Instant::now();
    let summary = engine
        .execute_batch(batch.id, BULK_CONCURRENCY, |_| Reporter::discard(), |_| {})
        .await
        .expect("batch ran");
    let executed = t1.elapsed();
    let wall = t0.elapsed();
    let calls = sb.calls();
    let okta: Vec<_> = calls.iter().filter(|c| c.op.starts_with("okta.")).collect();
    let per_bucket = |bucket: &str| {
        okta.iter()
            .filter(|c| bucket_of(&c.path_and_query) == bucket)
            .count()
    };
    let buckets = [
        "/api/v1/apps/{id}",
        "/api/v1/users",
        "/api/v1/mappings",
        "other",
    ];
    let busiest = buckets
        .iter()
        .map(|b| (*b, per_bucket(b)))
        .max_by_key(|(_, n)| *n)
        .unwrap_or(("", 0));
    let graph_calls = calls.iter().filter(|c| c.op.starts_with("graph.")).count();
    let bound = window.mul_f64(busiest.1 as f64 / f64::from(BULK_OKTA_LIMIT));
    println!(
        "bulk repair of 100 users as one batch ({} ms per API call, Okta {BULK_OKTA_LIMIT}/min per bucket, {BULK_CONCURRENCY} users at once):",
        latency.as_millis()
    );
    println!(
        "  repaired {}/100 · plan {:.1} s · execute {:.1} s · wall {:.1} s",
        summary.progress.repaired,
        planned.as_secs_f64(),
        executed.as_secs_f64(),
        wall.as_secs_f64()
    );
    for b in buckets {
        println!(
            "  Okta bucket {b:<22} {:>4} calls = {:.2} per user",
            per_bucket(b),
            per_bucket(b) as f64 / 100.0
        );
    }
    let mut by_op: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for c in okta
        .iter()
        .filter(|c| bucket_of(&c.path_and_query) == "/api/v1/apps/{id}")
    {
        *by_op.entry(c.op.as_str()).or_default() += 1;
    }
    let ops: Vec<String> = by_op.iter().map(|(op, n)| format!("{op} {n}")).collect();
    println!("    apps bucket by call: {}", ops.join(", "));
    println!(
        "  Graph {graph_calls} calls = {:.2} per user",
        graph_calls as f64 / 100.0
    );
    println!(
        "  429s served by Okta: {} · seen by the client: {} · reaching a step: {} · pacing waits: {}",
        sb.okta_throttled(),
        engine.okta().retried_429(),
        summary.progress.total - summary.progress.repaired,
        engine.okta().throttle_waits()
    );
    println!(
        "  provisioning paused {:.1} s (pause + restore writes: {})",
        summary.paused_ms as f64 / 1000.0,
        sb.provisioning_writes().len()
    );
    println!(
        "  Okta bound (busiest bucket {} calls / {BULK_OKTA_LIMIT} per min): {:.1} s; bound / wall = {:.0}%",
        busiest.1,
        bound.as_secs_f64(),
        100.0 * bound.as_secs_f64() / wall.as_secs_f64().max(0.001)
    );

    if std::env::var_os("BENCH_BATCH_ONLY").is_some() {
        return;
    }
    // The baseline: the seed's procedure for the same hundred users, one call after another.
    let sb = Sandbox::start(options()).await.expect("sandbox");
    let mut m = Manual::new(&sb);
    let t0 = Instant::now();
    let token = m
        .token()
        .await
        .get("access_token")
        .and_then(Value::as_str)
        .expect("access_token")
        .to_owned();
    for n in 1..=100 {
        seed_procedure(&mut m, &token, &ordinary_upn(n)).await;
    }
    let seq = t0.elapsed();
    println!(
        "  seed's procedure, one call after another: {} calls ({:.1} per user) in {:.1} s",
        m.calls,
        f64::from(m.calls - 1) / 100.0,
        seq.as_secs_f64()
    );
    println!(
        "  batch is {:.1}× faster than the sequential procedure",
        seq.as_secs_f64() / wall.as_secs_f64()
    );
}

/// Users repaired at once in the bulk benchmark.
const BULK_CONCURRENCY: usize = 16;

/// Okta's rate-limit bucket of a sandbox call's path.
fn bucket_of(path: &str) -> &'static str {
    let p = path.split('?').next().unwrap_or("");
    if p.starts_with("/api/v1/apps/") || p.contains("/api/v1/apps/") {
        "/api/v1/apps/{id}"
    } else if p.contains("/api/v1/users") {
        "/api/v1/users"
    } else if p.contains("/api/v1/mappings") {
        "/api/v1/mappings"
    } else {
        "other"
    }
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
