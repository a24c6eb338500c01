//! Graph as the live service behaves where the sandbox used to be kinder: roles held through a
//! role-assignable group, roles the app may not name, a `client-request-id` on every request
//! (journalled before a write), and the per-app write quota with 429 + `Retry-After`.

use crate::harness::{calls_of, fast_http, graph, okta, sandbox_with};
use crate::pipeline::test_policy;
use o365_fixbot::chat::render::journal_line;
use o365_fixbot::directory::graph::{ClientRequestId, GraphClient, UserPatch, WriteBudget};
use o365_fixbot::directory::HttpSettings;
use o365_fixbot::domain::{Actor, EntraObjectId};
use o365_fixbot::pipeline::{Engine, ModeChoice, RepairRequest, Reporter};
use o365_fixbot::pipeline::{PlanError, Refusal};
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{CallRecord, Fault, FaultAction, Sandbox, SandboxOptions};
use o365_fixbot::store::Store;
use std::time::Duration;

async fn sandbox() -> Sandbox {
    sandbox_with(SandboxOptions {
        ordinary_users: 30,
        ..SandboxOptions::default()
    })
    .await
}

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fixbot-graph-{}", uuid::Uuid::new_v4().simple()))
}

fn engine_with(sb: &Sandbox, g: GraphClient) -> Engine {
    let store = Store::open(&temp_dir()).expect("store opens");
    Engine::new(g, okta(sb), store, test_policy())
}

async fn plan_err(e: &Engine, upn: &str) -> PlanError {
    let req = RepairRequest::parse(Actor::new("u-alice", "alice"), upn, None, Some("test"))
        .expect("input")
        .with_mode(ModeChoice::Full);
    e.plan(&req).await.expect_err(upn)
}

async fn entra_id(g: &GraphClient, upn: &str) -> EntraObjectId {
    let u = g
        .user_by_upn(&o365_fixbot::domain::Upn::parse(upn).unwrap())
        .await
        .unwrap()
        .value
        .expect(upn);
    EntraObjectId::parse(&u.id).unwrap()
}

fn graph_calls(sb: &Sandbox) -> Vec<CallRecord> {
    sb.calls()
        .into_iter()
        .filter(|c| c.op.starts_with("graph.") && c.op != "graph.token")
        .collect()
}

#[tokio::test]
async fn a_role_held_through_a_group_is_refused_at_plan_time_by_its_name() {
    let sb = sandbox().await;
    let e = engine_with(&sb, graph(&sb));
    match plan_err(&e, ROHAN).await {
        PlanError::Refused(r @ Refusal::DirectoryRole { .. }) => {
            let Refusal::DirectoryRole { roles, unnamed } = &r else {
                unreachable!()
            };
            assert_eq!(roles, &["Privileged Authentication Administrator"]);
            assert_eq!(*unnamed, 0);
            let text = r.to_string();
            assert!(
                text.contains("Privileged Authentication Administrator")
                    && text.contains("through a group"),
                "{text}"
            );
        }
        other => panic!("not refused for the role: {other:?}"),
    }
    // The plan read the transitive view; nothing was written.
    assert_eq!(calls_of(&sb, "graph.transitive_member_of"), 1);
    assert_eq!(calls_of(&sb, "graph.update_user"), 0);
}

#[tokio::test]
async fn the_direct_view_misses_the_group_held_role_and_entra_refuses_the_write() {
    let sb = sandbox().await;
    let g = graph(&sb);
    let rohan = entra_id(&g, ROHAN).await;
    // What the plan used to read: direct memberships only.
    let direct = raw_get(
        &sb,
        &format!("/users/{rohan}/memberOf/microsoft.graph.directoryRole"),
    )
    .await;
    assert_eq!(direct["value"], serde_json::json!([]), "{direct}");
    // The full transitive list names the group as well as the role it grants.
    let all = raw_get(&sb, &format!("/users/{rohan}/transitiveMemberOf")).await;
    let types: Vec<&str> = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["@odata.type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["#microsoft.graph.group", "#microsoft.graph.directoryRole"]
    );
    assert_eq!(all["value"][0]["isAssignableToRole"], true);
    assert_eq!(all["value"][0]["displayName"], ROLE_GROUP);
    // Why it matters: Entra enforces the role however it is held.
    let err = g
        .update_user(
            &rohan,
            &UserPatch {
                user_principal_name: Some(format!("rohan@{INITIAL_DOMAIN}")),
                ..UserPatch::default()
            },
        )
        .await
        .expect_err("a privileged admin's UPN is out of the app's reach");
    assert_eq!(
        (err.status(), err.code()),
        (Some(403), Some("Authorization_RequestDenied"))
    );
}

#[tokio::test]
async fn without_permission_to_read_roles_the_refusal_says_what_would_name_them() {
    let sb = sandbox().await;
    sb.set_app_roles(&[
        "User.ReadWrite.All",
        "Domain.Read.All",
        "Organization.Read.All",
    ]);
    let e = engine_with(&sb, graph(&sb));
    for upn in [ROHAN, ISAIAH] {
        match plan_err(&e, upn).await {
            PlanError::Refused(r @ Refusal::DirectoryRole { .. }) => {
                assert!(
                    matches!(&r, Refusal::DirectoryRole { roles, unnamed: 1 } if roles.is_empty()),
                    "{r:?}"
                );
                let text = r.to_string();
                assert!(
                    text.contains("1 Entra directory role(s)")
                        && text.contains("RoleManagement.Read.Directory"),
                    "{text}"
                );
            }
            other => panic!("{upn}: not refused for the role: {other:?}"),
        }
    }
}

/// A GET through the sandbox with a token of the app's own (the client has no call for it).
async fn raw_get(sb: &Sandbox, pq: &str) -> serde_json::Value {
    let url = format!(
        "{}/{}/oauth2/v2.0/token",
        sb.urls.authority, sb.creds.tenant_id
    );
    let form = [
        ("client_id", sb.creds.client_id.as_str()),
        ("client_secret", sb.creds.client_secret.expose()),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
    ];
    let http = reqwest::Client::new();
    let tok: serde_json::Value = http
        .post(url)
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = tok["access_token"].as_str().unwrap();
    http.get(format!("{}{pq}", sb.urls.graph))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_graph_request_carries_a_client_request_id_and_a_write_carries_the_callers() {
    let sb = sandbox().await;
    let g = graph(&sb);
    let megan = entra_id(&g, MEGAN).await;
    g.directory_roles(&megan).await.unwrap();
    g.initial_domain().await.unwrap();
    let id = o365_fixbot::domain::ImmutableId::parse_value(MEGAN_OKTA_IMMUTABLE_ID).unwrap();
    g.users_with_immutable_id(&id).await.unwrap();
    let chosen = ClientRequestId::new();
    g.update_user_traced(
        &megan,
        &UserPatch {
            user_principal_name: Some(MEGAN.into()),
            ..UserPatch::default()
        },
        chosen,
    )
    .await
    .unwrap();
    let calls = graph_calls(&sb);
    assert!(calls.len() >= 5, "{calls:?}");
    let mut seen = std::collections::HashSet::new();
    for c in &calls {
        let crid = c.client_request_id.as_deref().unwrap_or_else(|| {
            panic!(
                "{} {} carried no client-request-id",
                c.method, c.path_and_query
            )
        });
        ClientRequestId::parse(crid).expect("a UUID");
        assert!(seen.insert(crid.to_owned()), "one id per request: {crid}");
    }
    let write = calls
        .iter()
        .find(|c| c.op == "graph.update_user")
        .expect("the PATCH");
    assert_eq!(
        write.client_request_id.as_deref(),
        Some(chosen.to_string().as_str())
    );
}

#[tokio::test]
async fn a_write_whose_answer_is_lost_was_journalled_with_the_id_the_sandbox_saw() {
    let sb = sandbox().await;
    // One attempt, and an answer that comes long after the client stopped waiting.
    let http = HttpSettings {
        request_timeout: Duration::from_secs(1),
        max_attempts: 1,
        ..fast_http()
    };
    let g = GraphClient::new(sb.graph_config(http)).unwrap();
    let e = engine_with(&sb, g);
    let req = RepairRequest::parse(Actor::new("u-alice", "alice"), MEGAN, None, Some("test"))
        .expect("input")
        .with_mode(ModeChoice::Full);
    let p = e.plan(&req).await.expect("plan");
    sb.inject(Fault {
        op: "graph.update_user".into(),
        nth: 1,
        times: 1,
        action: FaultAction::HoldReply(Duration::from_secs(4)),
    });
    assert!(e.mark_approved(p.run).unwrap());
    let s = tokio::time::timeout(Duration::from_secs(60), e.execute(&p, &Reporter::discard()))
        .await
        .expect("the run ends");
    let journal = e.store().journal(&p.run.to_string()).unwrap();
    let first = journal
        .iter()
        .find(|j| j.api == "graph.update_user")
        .expect("step 1 journalled");
    assert_eq!(first.outcome.as_deref(), Some("unknown"), "{s:?}");
    assert_eq!(first.request_id, None, "no answer, so no request-id");
    let crid = first
        .client_request_id
        .clone()
        .expect("the client-request-id was journalled with the intent");
    // The sandbox received the lost PATCH with exactly that id.
    let patches: Vec<CallRecord> = sb
        .calls()
        .into_iter()
        .filter(|c| c.op == "graph.update_user")
        .collect();
    assert_eq!(patches[0].client_request_id.as_deref(), Some(crid.as_str()));
    // Each later write has its own id, and an answered one has Graph's request-id beside it.
    let answered = journal
        .iter()
        .filter(|j| j.api == "graph.update_user" && j.outcome.as_deref() == Some("ok"))
        .collect::<Vec<_>>();
    assert!(!answered.is_empty(), "{journal:?}");
    for j in &answered {
        assert_ne!(j.client_request_id.as_deref(), Some(crid.as_str()));
        assert!(
            j.request_id.is_some() && j.client_request_id.is_some(),
            "{j:?}"
        );
    }
    // `/fix-status <run>` shows both ids of a write.
    let line = journal_line(answered[0]);
    assert!(
        line.contains(&format!(
            "client-request-id {}",
            answered[0].client_request_id.as_deref().unwrap()
        )) && line.contains(&format!(
            "request-id {}",
            answered[0].request_id.as_deref().unwrap()
        )),
        "{line}"
    );
    assert!(journal_line(first).contains(&crid));
}

/// Writes by the sandbox's clock: in no window of `window` did more than `limit` arrive.
fn max_in_any_window(calls: &[CallRecord], window: Duration) -> usize {
    let at: Vec<u64> = calls.iter().map(|c| c.at_ms).collect();
    let w = window.as_millis() as u64;
    (0..at.len())
        .map(|i| {
            at.iter()
                .filter(|t| **t <= at[i] && at[i] - **t < w)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// `n` PATCHes at once, to ordinary users, each setting the UPN it already has.
async fn burst(sb: &Sandbox, g: &GraphClient, n: usize) -> Vec<Result<(), String>> {
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push((entra_id(g, &ordinary_upn(i)).await, ordinary_upn(i)));
    }
    sb.reset_calls();
    let mut set = tokio::task::JoinSet::new();
    for (id, value) in ids {
        let g = g.clone();
        set.spawn(async move {
            g.update_user(
                &id,
                &UserPatch {
                    user_principal_name: Some(value),
                    ..UserPatch::default()
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("the write task ends"));
    }
    out
}

fn graph_with_budget(sb: &Sandbox, budget: WriteBudget) -> GraphClient {
    let mut config = sb.graph_config(fast_http());
    config.write_budget = budget;
    GraphClient::new(config).unwrap()
}

const QUOTA: u32 = 6;
const WINDOW: Duration = Duration::from_millis(600);
/// The client's budget in the pacing test: under the quota, with room for arrival jitter.
const PACE: u32 = 4;
const WRITES: usize = 16;

#[tokio::test]
async fn a_burst_of_writes_is_paced_under_the_quota_and_never_sees_a_429() {
    let sb = sandbox().await;
    sb.set_graph_write_limit(QUOTA, WINDOW);
    // The client's budget is under the service's, as the default is (2,400 vs 3,000 per 150 s).
    let g = graph_with_budget(
        &sb,
        WriteBudget {
            writes: PACE,
            window: WINDOW,
        },
    );
    let results = burst(&sb, &g, WRITES).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(sb.graph_throttled(), 0, "the sandbox served no 429");
    let patches: Vec<CallRecord> = sb
        .calls()
        .into_iter()
        .filter(|c| c.op == "graph.update_user")
        .collect();
    assert_eq!(patches.len(), WRITES, "one request per write: no retries");
    assert!(patches.iter().all(|c| c.status == 204));
    // The pacing itself, by the sandbox's arrival times rather than a stopwatch: the burst was
    // spread over the windows the client's budget needs, never more than the quota in one.
    let peak = max_in_any_window(&patches, WINDOW);
    assert!(peak <= QUOTA as usize, "{peak} writes in one window");
    let first = patches.iter().map(|c| c.at_ms).min().unwrap();
    let last = patches.iter().map(|c| c.at_ms).max().unwrap();
    let windows_needed = (WRITES as u64 - 1) / u64::from(PACE);
    assert!(
        last - first >= windows_needed * WINDOW.as_millis() as u64 * 3 / 4,
        "{WRITES} writes arrived within {} ms",
        last - first
    );
}

#[tokio::test]
async fn a_429_is_waited_out_as_graph_says_and_never_reaches_the_caller() {
    let sb = sandbox().await;
    sb.set_graph_write_limit(QUOTA, WINDOW);
    // A client that does not pace (or a quota shared with another app's writes).
    let g = graph_with_budget(
        &sb,
        WriteBudget {
            writes: 1_000_000,
            window: Duration::from_secs(1),
        },
    );
    let results = burst(&sb, &g, 15).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(sb.graph_throttled() > 0, "the quota was reached");
    let calls = sb.calls();
    let refused: Vec<&CallRecord> = calls.iter().filter(|c| c.status == 429).collect();
    let admitted: Vec<CallRecord> = calls
        .iter()
        .filter(|c| c.op == "graph.update_user" && c.status == 204)
        .cloned()
        .collect();
    assert_eq!(admitted.len(), 15);
    assert_eq!(refused.len() as u64, sb.graph_throttled());
    // Retried after Graph's Retry-After, so the admitted writes respect the quota too.
    assert!(max_in_any_window(&admitted, WINDOW) <= QUOTA as usize);
    // A retry carries the same client-request-id as the attempt Graph refused.
    for r in &refused {
        assert!(
            admitted
                .iter()
                .any(|a| a.client_request_id == r.client_request_id),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_repairs_under_a_small_quota_never_see_a_429_in_a_step() {
    let sb = sandbox().await;
    sb.set_graph_write_limit(5, Duration::from_secs(1));
    let g = graph_with_budget(
        &sb,
        WriteBudget {
            writes: 4,
            window: Duration::from_secs(1),
        },
    );
    let e = engine_with(&sb, g);
    let mut set = tokio::task::JoinSet::new();
    for n in 1..=6 {
        let req = RepairRequest::parse(
            Actor::new("u-alice", "alice"),
            &ordinary_upn(n),
            None,
            Some("test"),
        )
        .expect("input")
        .with_mode(ModeChoice::Full);
        let p = e.plan(&req).await.expect("plan");
        assert!(e.mark_approved(p.run).unwrap());
        let e = e.clone();
        set.spawn(async move { e.execute(&p, &Reporter::discard()).await });
    }
    while let Some(s) = set.join_next().await {
        let s = s.expect("the run task ends");
        assert_eq!(
            s.outcome,
            o365_fixbot::pipeline::RunOutcome::Repaired,
            "{s:?}"
        );
    }
    assert_eq!(sb.graph_throttled(), 0);
    // Federated users: step 1 and steps 2 + 3, two PATCHes per repair, all paced.
    assert_eq!(calls_of(&sb, "graph.update_user"), 12);
}

#[tokio::test]
async fn the_console_status_of_a_run_shows_both_request_ids_of_each_write() {
    use o365_fixbot::approval::ApprovalPolicy;
    use o365_fixbot::chat::console::Console;
    use o365_fixbot::config::{Config, EMBEDDED_DEFAULT};
    let config = Config::parse(EMBEDDED_DEFAULT, std::path::Path::new("default.toml")).unwrap();
    let sb = sandbox().await;
    let dir = temp_dir();
    let engine = o365_fixbot::demo::sandbox_engine(&config, &sb, &dir).unwrap();
    let mut console = Console::new(
        engine.clone(),
        ApprovalPolicy::from(&config.approval),
        config.console.people.clone(),
        Some(&sb),
        Vec::new(),
    );
    console
        .run_script("alice: /fix-immutable-id user:megan@contoso.com mode:full\nbob: approve\n")
        .await;
    let run = engine.store().recent_runs(1).unwrap().remove(0);
    console
        .handle_line(&format!("alice: /fix-status {}", &run.id[..8]))
        .await;
    let out = String::from_utf8(console.into_output()).unwrap();
    let status = &out[out.rfind("alice: /fix-status").expect("status asked")..];
    let journal = engine.store().journal(&run.id).unwrap();
    let writes: Vec<_> = journal
        .iter()
        .filter(|j| j.api == "graph.update_user")
        .collect();
    assert_eq!(writes.len(), 2, "{journal:?}");
    for w in writes {
        let crid = w.client_request_id.as_deref().expect("journalled");
        let rid = w.request_id.as_deref().expect("answered");
        assert!(
            status.contains(&format!("client-request-id {crid} · request-id {rid}")),
            "{status}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
