//! Bulk repairs against the sandbox: one plan for a list, one approval, one provisioning
//! window; stale users skipped, failures compensated, cancels between users, restarts.

use crate::harness::calls_of;
use crate::pipeline::{env, env_with, test_policy, Env};
use o365_fixbot::domain::{Actor, RunState, Upn};
use o365_fixbot::pipeline::batch::{BatchPlan, BatchRequest};
use o365_fixbot::pipeline::{ModeChoice, Reporter};
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Fault, FaultAction, SandboxOptions};
use o365_fixbot::store::{BatchState, Store};

fn upns(list: &[&str]) -> Vec<Upn> {
    list.iter().map(|u| Upn::parse(u).unwrap()).collect()
}

async fn plan(env: &Env, users: &[&str]) -> BatchPlan {
    env.engine
        .plan_batch(&BatchRequest {
            requester: Actor::new("u-alice", "alice"),
            users: upns(users),
            mode: ModeChoice::Full,
            reason: Some("cut-over".into()),
        })
        .await
        .expect("planned")
}

fn bob() -> Actor {
    Actor::new("u-bob", "bob")
}

/// Entra and Okta hold one value, the user is on its own UPN, and nobody was deprovisioned.
fn assert_repaired(env: &Env, upn: &str) {
    let e = env.sb.entra_user(upn).expect("in Entra");
    assert_eq!(
        e.user_principal_name, upn,
        "no user left on a temporary UPN"
    );
    let okta = env.sb.okta_user_id(upn).expect("in Okta");
    let app = env.sb.okta_app_user(&okta).expect("still assigned");
    assert_eq!(
        e.on_premises_immutable_id.as_deref(),
        app.immutable_id(),
        "{upn}: both systems hold one value"
    );
}

/// Provisioning ends as it began, written once to pause and once to restore.
fn assert_one_window(env: &Env) {
    assert_eq!(env.sb.provisioning_capabilities(), env.initial_caps);
    assert_eq!(
        env.sb.provisioning_writes().len(),
        2,
        "one pause, one restore: {:?}",
        env.sb.provisioning_writes()
    );
    assert!(env.sb.deprovisions().is_empty(), "nobody deprovisioned");
}

#[tokio::test]
async fn a_list_is_planned_once_and_every_entry_is_accounted_for() {
    let env = env().await;
    let b = plan(
        &env,
        &[
            ADELE,
            LYNNE,
            MEGAN,
            GRADY,
            "nobody@contoso.com",
            ALEX,
            DIEGO_OKTA_LOGIN,
        ],
    )
    .await;
    let planned: Vec<&str> = b.plans.iter().map(|p| p.upn.as_str()).collect();
    assert_eq!(planned, [ADELE, MEGAN, ALEX], "in the order given");
    let refused: Vec<&str> = b.refused.iter().map(|r| r.upn.as_str()).collect();
    assert_eq!(
        refused,
        [LYNNE, GRADY, "nobody@contoso.com", DIEGO_OKTA_LOGIN]
    );
    // An Okta login is not a UPN: the plan names users by Entra's UPN.
    assert!(
        b.refused[3].why.contains("does not exist in Entra ID"),
        "{:?}",
        b.refused[3]
    );
    assert!(b.refused[0].why.contains("synced"), "{:?}", b.refused);
    assert!(b.plans.iter().all(|p| p.batch == Some(b.id)));
    // The app-wide reads are shared by the batch's plans.
    assert_eq!(calls_of(&env.sb, "okta.app_groups"), 1);
    assert_eq!(calls_of(&env.sb, "okta.get_feature"), 1);
    // Planning wrote nothing; the plans await one approval and are not approvable alone.
    assert!(env.sb.provisioning_writes().is_empty());
    assert!(env.engine.awaiting_approval().unwrap().is_empty());
    let csv = o365_fixbot::chat::batch_render::plan_csv(&b);
    assert_eq!(csv.lines().count(), 1 + 7, "{csv}");
}

#[tokio::test]
async fn an_approved_batch_repairs_every_user_inside_one_provisioning_window() {
    let env = env().await;
    let b = plan(&env, &[ADELE, MEGAN, ALEX, OBRIEN]).await;
    assert!(env.engine.approve_batch(b.id, &bob()).unwrap());
    assert!(!env.engine.approve_batch(b.id, &bob()).unwrap(), "once");
    let s = env
        .engine
        .execute_batch(b.id, 2, |_| Reporter::discard(), |_| {})
        .await
        .unwrap();
    assert_eq!(s.progress.repaired, 4, "{s:?}");
    for u in [ADELE, MEGAN, ALEX, OBRIEN] {
        assert_repaired(&env, u);
    }
    assert_one_window(&env);
    assert!(s.paused_ms > 0);
    let row = env
        .engine
        .store()
        .batch(&b.id.to_string())
        .unwrap()
        .unwrap();
    assert_eq!(row.state, BatchState::Done);
    let csv = o365_fixbot::chat::batch_render::outcome_csv(&s);
    assert_eq!(csv.matches("succeeded").count(), 4, "{csv}");
    // Each user's row carries the services' request ids of its writes.
    assert!(s.results.iter().all(|r| r.request_ids.len() >= 4), "{s:?}");
    let adele = s.results.iter().find(|r| r.upn == ADELE).unwrap();
    assert!(csv.contains(&adele.request_ids.join(" ")), "{csv}");
}

#[tokio::test]
async fn a_rejected_batch_changes_nothing() {
    let env = env().await;
    let b = plan(&env, &[ADELE, MEGAN]).await;
    assert!(env
        .engine
        .close_batch(b.id, BatchState::Rejected, &bob())
        .unwrap());
    assert!(!env.engine.approve_batch(b.id, &bob()).unwrap());
    for p in &b.plans {
        let run = env.engine.store().run(&p.run.to_string()).unwrap().unwrap();
        assert_eq!(run.state, RunState::Rejected);
    }
    assert_eq!(calls_of(&env.sb, "graph.update_user"), 0);
    assert!(env.sb.provisioning_writes().is_empty());
}

#[tokio::test]
async fn a_user_whose_facts_changed_is_skipped_and_the_rest_go_on() {
    let env = env().await;
    let b = plan(&env, &[ADELE, MEGAN, ALEX]).await;
    assert!(env.engine.approve_batch(b.id, &bob()).unwrap());
    // After the approval, someone gives megan another ImmutableID in Entra.
    assert!(env
        .sb
        .set_entra_immutable_id(MEGAN, "AAAAAAAAAAAAAAAAAAAAAA=="));
    let s = env
        .engine
        .execute_batch(b.id, 1, |_| Reporter::discard(), |_| {})
        .await
        .unwrap();
    assert_eq!((s.progress.repaired, s.progress.skipped), (2, 1), "{s:?}");
    let megan = s.results.iter().find(|r| r.upn == MEGAN).unwrap();
    assert_eq!(megan.state, RunState::Stale, "{megan:?}");
    assert_eq!(
        env.sb
            .entra_user(MEGAN)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some("AAAAAAAAAAAAAAAAAAAAAA=="),
        "untouched"
    );
    assert_repaired(&env, ADELE);
    assert_repaired(&env, ALEX);
    assert_one_window(&env);
}

#[tokio::test]
async fn a_failure_on_one_user_is_compensated_and_the_rest_go_on() {
    let env = env().await;
    let b = plan(&env, &[MEGAN, ADELE, ALEX]).await;
    assert!(env.engine.approve_batch(b.id, &bob()).unwrap());
    // One at a time, so the second Graph update is megan's new ImmutableID: refused.
    env.sb.inject(Fault {
        op: "graph.update_user".into(),
        nth: 2,
        times: 1,
        action: FaultAction::Error {
            status: 403,
            code: "Authorization_RequestDenied".into(),
            message: "injected".into(),
        },
    });
    let s = env
        .engine
        .execute_batch(b.id, 1, |_| Reporter::discard(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (s.progress.repaired, s.progress.rolled_back),
        (2, 1),
        "{s:?}"
    );
    let megan = env.sb.entra_user(MEGAN).unwrap();
    assert_eq!(megan.user_principal_name, MEGAN, "the UPN move was undone");
    assert_eq!(
        megan.on_premises_immutable_id.as_deref(),
        Some(MEGAN_ENTRA_IMMUTABLE_ID)
    );
    assert_repaired(&env, ADELE);
    assert_repaired(&env, ALEX);
    assert_one_window(&env);
}

#[tokio::test]
async fn a_cancel_stops_the_batch_between_users() {
    let env = env().await;
    let b = plan(&env, &[ADELE, MEGAN, ALEX, OBRIEN]).await;
    assert!(env.engine.approve_batch(b.id, &bob()).unwrap());
    let engine = env.engine.clone();
    let id = b.id;
    let s = env
        .engine
        .execute_batch(
            b.id,
            1,
            |_| Reporter::discard(),
            move |p| {
                if p.finished == 1 {
                    assert_eq!(engine.cancel_batch(id, &bob()).unwrap(), 3);
                }
            },
        )
        .await
        .unwrap();
    assert_eq!(s.progress.repaired, 1, "{s:?}");
    let states: Vec<RunState> = s.results.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            RunState::Succeeded,
            RunState::Cancelled,
            RunState::Cancelled,
            RunState::Cancelled
        ]
    );
    assert_repaired(&env, ADELE);
    assert_eq!(
        env.sb
            .entra_user(MEGAN)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(MEGAN_ENTRA_IMMUTABLE_ID),
        "never started"
    );
    assert_one_window(&env);
}

#[tokio::test]
async fn a_stop_mid_batch_restores_provisioning_and_the_restart_continues_the_rest_once() {
    let env = env().await;
    let b = plan(&env, &[ADELE, MEGAN, ALEX]).await;
    assert!(env.engine.approve_batch(b.id, &bob()).unwrap());
    // The first process stops after one user (SIGTERM parks the engine: the rest stay approved,
    // and the batch leaves the window, so provisioning is never left paused by a stopped bot).
    let engine = env.engine.clone();
    let first = env
        .engine
        .execute_batch(
            b.id,
            1,
            |_| Reporter::discard(),
            move |p| {
                if p.finished == 1 {
                    engine.park();
                }
            },
        )
        .await
        .unwrap();
    assert_eq!(first.progress.repaired, 1);
    let row = env
        .engine
        .store()
        .batch(&b.id.to_string())
        .unwrap()
        .unwrap();
    assert_eq!(row.state, BatchState::Running, "not done yet");
    // A new process on the same store: recovery, then the batch goes on.
    let Env {
        sb,
        engine: old,
        initial_caps,
    } = env;
    let dir = old.store().path().parent().unwrap().to_path_buf();
    drop(old);
    let store = Store::open(&dir).unwrap();
    let engine = o365_fixbot::pipeline::Engine::new(
        crate::harness::graph(&sb),
        crate::harness::okta(&sb),
        store,
        test_policy(),
    );
    let env = Env {
        sb,
        engine: engine.clone(),
        initial_caps,
    };
    engine.recover(|_| Reporter::discard()).await.unwrap();
    let done = engine
        .recover_batches(2, |_| Reporter::discard())
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].progress.repaired, 3, "{:?}", done[0]);
    for u in [ADELE, MEGAN, ALEX] {
        assert_repaired(&env, u);
    }
    assert_eq!(calls_of(&env.sb, "okta.unassign"), 3, "each user once");
    assert_eq!(env.sb.provisioning_capabilities(), env.initial_caps);
    assert!(env.sb.deprovisions().is_empty());
    assert!(engine
        .recover_batches(2, |_| Reporter::discard())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_429_storm_never_reaches_a_step() {
    let env = env_with(
        SandboxOptions {
            ordinary_users: 30,
            okta_rate_limit: 40,
            okta_rate_window: std::time::Duration::from_secs(2),
            ..SandboxOptions::default()
        },
        test_policy(),
    )
    .await;
    let users: Vec<String> = (1..=12).map(ordinary_upn).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let b = plan(&env, &refs).await;
    assert_eq!(b.plans.len(), 12, "{:?}", b.refused);
    assert!(env.engine.approve_batch(b.id, &bob()).unwrap());
    let s = env
        .engine
        .execute_batch(b.id, 6, |_| Reporter::discard(), |_| {})
        .await
        .unwrap();
    assert_eq!(s.progress.repaired, 12, "{s:?}");
    for u in &refs {
        assert_repaired(&env, u);
    }
    assert_one_window(&env);
}

/// The console: a CSV list with a `upn` column, entries left out with their position, one
/// approval by a second person, progress, the summary with its CSV, and /fix-status showing the
/// batch as one line and its rows on request.
#[test]
fn the_console_runs_a_batch_from_a_csv_file() {
    let dir = std::env::temp_dir().join(format!("fixbot-list-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // The console splits words on spaces: a path without any.
    let plain = dir.join("users.csv");
    std::fs::write(
        &plain,
        "name,upn\nAdele,adele@contoso.com\nMegan,megan@contoso.com\nagain,ADELE@contoso.com\nbad,not-a-upn\nLynne,lynne@contoso.com\n",
    )
    .unwrap();
    let script = format!(
        "alice: /fix-immutable-id file:{} mode:full reason:cut-over\n\
         alice: react ✅\n\
         bob: react ✅\n\
         alice: /fix-status\n",
        plain.display()
    );
    let text = crate::console::run_script(&script);
    assert!(
        text.contains("entry 4 `ADELE@contoso.com` is left out: listed before"),
        "{text}"
    );
    assert!(text.contains("entry 5 `not-a-upn` is left out"), "{text}");
    assert!(
        text.contains("2 full repair · 0 Entra-only · 1 refused"),
        "{text}"
    );
    assert!(text.contains("⛔ lynne@contoso.com"), "{text}");
    assert!(text.contains("alice's reaction does not count"), "{text}");
    assert!(
        text.contains("approved by bob — starting 2 users"),
        "{text}"
    );
    assert!(text.contains("2/2 ▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓ ✅ 2"), "{text}");
    assert!(text.contains("🎉 bulk repair done"), "{text}");
    // The outcome CSV is written beside the store (the demo's store is removed at exit).
    assert!(text.contains("-outcome.csv"), "{text}");
    assert!(
        text.contains("2 users: ✅ 2 · ↩ 0 · ⚠ 0 · ⏭ 0 · ⛔ 1 refused (by alice)"),
        "{text}"
    );
    let status = &text[text.rfind("alice: /fix-status").unwrap()..];
    assert!(
        !status.contains("adele@contoso.com succeeded"),
        "members not listed one by one: {status}"
    );
}
