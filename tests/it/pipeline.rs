//! The repair pipeline end to end against the sandbox: repairs, refusals, a fault at each step,
//! lag, concurrency, and hostile input. Every test checks the invariants afterwards.

use crate::harness::{calls_of, graph, okta, sandbox_with};
use o365_fixbot::config::RepairPolicy;
use o365_fixbot::domain::Actor;
use o365_fixbot::pipeline::plan::NewIdSource;
use o365_fixbot::pipeline::{
    Engine, ModeChoice, Phase, Plan, PlanError, ProvisioningState, Refusal, RepairMode,
    RepairRequest, Reporter, RunEvent, RunOutcome, RunSummary, StepKind, StepOutcome,
};
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Fault, FaultAction, MappingMode, Sandbox, SandboxOptions};
use o365_fixbot::store::Store;
use serde_json::Value;
use std::time::Duration;

pub fn test_policy() -> RepairPolicy {
    RepairPolicy {
        allowed_domains: vec!["contoso.com".into(), "fabrikam.com".into()],
        protected_users: vec![BREAKGLASS.into()],
        allow_admin_targets: false,
        verify_attempts: 3,
        verify_interval: Duration::from_millis(30),
        pause_join_window: Duration::from_secs(60),
        pause_linger: Duration::from_secs(3),
        compensation_attempts: 3,
        compensation_backoff: Duration::from_millis(10),
        ..RepairPolicy::default()
    }
}

pub struct Env {
    pub sb: Sandbox,
    pub engine: Engine,
    pub initial_caps: Value,
}

pub async fn env_with(opts: SandboxOptions, policy: RepairPolicy) -> Env {
    let sb = sandbox_with(opts).await;
    let dir = std::env::temp_dir().join(format!("fixbot-it-{}", uuid::Uuid::new_v4().simple()));
    let store = Store::open(&dir).expect("store opens");
    let engine = Engine::new(graph(&sb), okta(&sb), store, policy)
        .observed_by(o365_fixbot::ops::metrics::observer());
    let initial_caps = sb.provisioning_capabilities();
    Env {
        sb,
        engine,
        initial_caps,
    }
}

pub async fn env() -> Env {
    env_with(
        SandboxOptions {
            ordinary_users: 20,
            ..SandboxOptions::default()
        },
        test_policy(),
    )
    .await
}

fn alice() -> Actor {
    Actor::new("u-alice", "alice")
}

/// The full repair (most tests are about its nine steps).
pub async fn plan(env: &Env, upn: &str, id: Option<&str>) -> Result<Plan, PlanError> {
    plan_as(env, upn, id, ModeChoice::Full).await
}

pub async fn plan_as(
    env: &Env,
    upn: &str,
    id: Option<&str>,
    mode: ModeChoice,
) -> Result<Plan, PlanError> {
    let req = RepairRequest::parse(alice(), upn, id, Some("test"))
        .expect("valid input")
        .with_mode(mode);
    env.engine.plan(&req).await
}

/// Approves and executes a plan, collecting every event.
pub async fn run(env: &Env, plan: &Plan) -> (RunSummary, Vec<RunEvent>) {
    assert!(env.engine.mark_approved(plan.run).unwrap());
    let (reporter, mut rx) = Reporter::channel();
    let summary = env.engine.execute(plan, &reporter).await;
    drop(reporter);
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    (summary, events)
}

pub async fn repair(env: &Env, upn: &str) -> (Plan, RunSummary, Vec<RunEvent>) {
    let p = plan(env, upn, None).await.expect("plan");
    let (s, e) = run(env, &p).await;
    (p, s, e)
}

fn steps(events: &[RunEvent]) -> Vec<(StepKind, Phase, StepOutcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Step(r) => Some((r.step, r.phase, r.outcome.clone())),
            _ => None,
        })
        .collect()
}

/// What must hold after every outcome.
fn assert_invariants(env: &Env, plan: &Plan, summary: &RunSummary) {
    let user = env
        .sb
        .entra_user(plan.entra_id.as_str())
        .expect("entra user");
    // The temporary UPN is a last resort, and only when the summary says exactly where the user
    // is and what to send.
    let on_original = user
        .user_principal_name
        .eq_ignore_ascii_case(plan.upn.as_str());
    assert!(
        on_original
            || (summary.outcome == RunOutcome::NeedsAttention
                && summary.message.contains(&user.user_principal_name)
                && summary.message.contains("PATCH /users/")),
        "user left on {}: {summary:?}",
        user.user_principal_name
    );
    assert_eq!(
        env.sb.provisioning_capabilities(),
        env.initial_caps,
        "provisioning not restored byte for byte"
    );
    assert!(
        env.sb.deprovisions().is_empty(),
        "someone was deprovisioned"
    );
    let app = env.sb.okta_app_user(plan.okta_user_id.as_str());
    assert!(app.is_some(), "user left unassigned in Okta: {summary:?}");
    let okta_id = app.and_then(|a| a.immutable_id().map(str::to_owned));
    let entra_id = user.on_premises_immutable_id.clone();
    if entra_id != okta_id {
        for v in [&entra_id, &okta_id].into_iter().flatten() {
            assert!(
                summary.message.contains(v.as_str()),
                "systems differ but the summary does not say how: {summary:?}"
            );
        }
    }
    assert_eq!(
        summary.entra_immutable_id, entra_id,
        "summary misreports Entra"
    );
    let journal = env.engine.store().journal(&plan.run.to_string()).unwrap();
    assert!(
        journal.iter().all(|j| j.outcome.is_some()),
        "a journalled write has no outcome"
    );
    assert!(
        env.engine.store().pause(APP_ID).unwrap().is_none(),
        "pause left in the store"
    );
}

pub fn fail(op: &str, nth: u32, times: u32, status: u16, code: &str) -> Fault {
    Fault {
        op: op.into(),
        nth,
        times,
        action: FaultAction::Error {
            status,
            code: code.into(),
            message: "injected".into(),
        },
    }
}

#[tokio::test]
async fn repairs_a_federated_user_without_an_immutable_id() {
    let env = env().await;
    let (p, s, events) = repair(&env, ADELE).await;
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    assert!(p.federated && p.entra_immutable_id_before.is_none());
    let new = p.new_immutable_id.to_string();
    assert_eq!(
        env.sb
            .entra_user(ADELE)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(new.as_str())
    );
    let app = env.sb.okta_app_user(p.okta_user_id.as_str()).unwrap();
    assert_eq!(app.immutable_id(), Some(new.as_str()));
    // Licenses and roles are carried over verbatim.
    for (k, v) in &p.app_user_before.profile {
        if k != "immutableId" {
            assert_eq!(app.profile.get(k), Some(v), "profile field {k} lost");
        }
    }
    // The pause opens alongside the Entra half, so step 5 may be told before steps 2–4.
    let mut done: Vec<_> = steps(&events)
        .into_iter()
        .filter(|(_, _, o)| *o == StepOutcome::Done)
        .map(|(k, _, _)| k.number())
        .collect();
    done.sort_unstable();
    assert_eq!(done, (1..=9).collect::<Vec<u8>>());
    assert_eq!(s.provisioning, ProvisioningState::Restored);
    assert_eq!(
        env.sb.provisioning_writes().len(),
        2,
        "one pause, one restore"
    );
    assert_invariants(&env, &p, &s);
}

#[tokio::test]
async fn repairs_a_managed_user_with_a_wrong_id_without_moving_the_upn() {
    let env = env().await;
    let (p, s, events) = repair(&env, ALEX).await;
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    assert!(!p.federated && p.temporary_upn.is_none());
    let st = steps(&events);
    assert!(matches!(
        st[0],
        (StepKind::UpnToTemporary, _, StepOutcome::Skipped(_))
    ));
    assert!(st
        .iter()
        .any(|(k, _, o)| *k == StepKind::UpnBack && matches!(o, StepOutcome::Skipped(_))));
    assert_eq!(calls_of(&env.sb, "graph.update_user"), 1);
    let new = p.new_immutable_id.to_string();
    assert_eq!(s.okta_immutable_id.as_deref(), Some(new.as_str()));
    assert_invariants(&env, &p, &s);
}

#[tokio::test]
async fn repairs_a_federated_user_with_a_wrong_id() {
    let env = env().await;
    let (p, s, _) = repair(&env, MEGAN).await;
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    assert_eq!(
        p.entra_immutable_id_before.as_deref(),
        Some(MEGAN_ENTRA_IMMUTABLE_ID)
    );
    assert_ne!(
        env.sb
            .entra_user(MEGAN)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(MEGAN_ENTRA_IMMUTABLE_ID)
    );
    assert_invariants(&env, &p, &s);
}

#[tokio::test]
async fn finds_the_okta_user_by_office365_username_when_logins_differ() {
    let env = env().await;
    let (p, s, _) = repair(&env, DIEGO).await;
    assert_eq!(p.okta_login, DIEGO_OKTA_LOGIN);
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    assert_invariants(&env, &p, &s);
}

#[tokio::test]
async fn every_plan_refusal_says_why_and_changes_nothing() {
    let env = env().await;
    type Expect = fn(&Refusal) -> bool;
    let cases: Vec<(&str, Option<&str>, Expect)> = vec![
        (LYNNE, None, |r| matches!(r, Refusal::Synced { .. })),
        (GRADY, None, |r| matches!(r, Refusal::GroupGranted { .. })),
        (NESTOR, None, |r| matches!(r, Refusal::NotInOkta { .. })),
        (GHOST, None, |r| matches!(r, Refusal::NotInEntra { .. })),
        (ISAIAH, None, |r| matches!(r, Refusal::DirectoryRole { .. })),
        (BREAKGLASS, None, |r| matches!(r, Refusal::Protected { .. })),
        ("pat@northwind.com", None, |r| {
            matches!(r, Refusal::DomainNotAllowed { .. })
        }),
        // A base64 value with `+` is found by the uniqueness check (it must be percent-encoded).
        (
            ADELE,
            Some(PLUSID_IMMUTABLE_ID),
            |r| matches!(r, Refusal::IdTaken { holder, .. } if holder == PLUSID),
        ),
    ];
    for (upn, id, expected) in cases {
        let err = plan(&env, upn, id).await.expect_err(upn);
        match &err {
            PlanError::Refused(r) => {
                assert!(expected(r), "{upn}: unexpected refusal {r:?}");
                assert!(r.to_string().len() > 40, "{upn}: reason too terse: {r}");
            }
            other => panic!("{upn}: not a refusal: {other:?}"),
        }
    }
    assert_eq!(calls_of(&env.sb, "graph.update_user"), 0);
    assert!(env.sb.provisioning_writes().is_empty());
    assert_eq!(
        calls_of(&env.sb, "okta.unassign") + calls_of(&env.sb, "okta.assign"),
        0
    );
}

#[tokio::test]
async fn mapped_immutable_id_repairs_entra_only_to_oktas_value() {
    let env = env().await;
    env.sb.set_mapping(MappingMode::Ignore);
    let p = plan_as(&env, MEGAN, None, ModeChoice::Smallest)
        .await
        .expect("plan");
    assert_eq!(p.mode, RepairMode::EntraOnly);
    assert_eq!(p.new_immutable_id.as_str(), MEGAN_OKTA_IMMUTABLE_ID);
    assert!(p.mode_why.contains("mapping"), "{}", p.mode_why);
    // A new value would be overwritten by Okta's next push: mode:full cannot help.
    let err = plan(&env, MEGAN, None).await.unwrap_err();
    assert!(
        matches!(err, PlanError::Refused(Refusal::MappedForbidsFull { .. })),
        "{err:?}"
    );
    let err = plan_as(
        &env,
        OBRIEN,
        Some("35918bc9-196d-40ea-9779-889d79b753f0"),
        ModeChoice::Smallest,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PlanError::Refused(Refusal::MappedConflict { .. })),
        "{err:?}"
    );
    let (s, _) = run(&env, &p).await;
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    assert_eq!(
        env.sb
            .entra_user(MEGAN)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(MEGAN_OKTA_IMMUTABLE_ID)
    );
    assert!(
        env.sb.provisioning_writes().is_empty(),
        "Okta provisioning must not be touched"
    );
    assert_eq!(calls_of(&env.sb, "okta.unassign"), 0);
    assert_invariants(&env, &p, &s);
}

#[tokio::test]
async fn hostile_input_is_refused_before_anything_is_read() {
    let bad_upns = [
        "x' or 1 eq 1",
        "x' or 1 eq 1@contoso.com",
        "",
        "a@b@contoso.com",
        "@everyone",
    ];
    for upn in bad_upns {
        assert!(
            RepairRequest::parse(alice(), upn, None, None).is_err(),
            "{upn:?} accepted"
        );
    }
    let long = "a".repeat(10_000);
    let err =
        RepairRequest::parse(alice(), &format!("{long}@contoso.com"), None, None).unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
    for id in ["ab$c", "ab_c", "ab c", "ab\tc", long.as_str()] {
        let err = RepairRequest::parse(alice(), ADELE, Some(id), None).unwrap_err();
        assert!(err.to_string().starts_with("immutable_id:"), "{err}");
    }
    let req = RepairRequest::parse(alice(), ADELE, None, Some(&long)).unwrap();
    assert!(req.reason.unwrap().chars().count() <= 300);
}

#[tokio::test]
async fn an_apostrophe_upn_is_repaired_and_escaped() {
    let env = env().await;
    let (p, s, _) = repair(&env, OBRIEN).await;
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    assert_eq!(p.upn.as_str(), OBRIEN);
    assert_invariants(&env, &p, &s);
}

#[tokio::test]
async fn verify_that_sees_lag_completes_without_rollback() {
    let env = env_with(
        SandboxOptions {
            ordinary_users: 5,
            graph_read_lag: Duration::from_millis(800),
            ..SandboxOptions::default()
        },
        test_policy(),
    )
    .await;
    let (p, s, events) = repair(&env, MEGAN).await;
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    let st = steps(&events);
    assert!(
        st.iter()
            .any(|(k, _, o)| *k == StepKind::VerifyEntra && matches!(o, StepOutcome::Lagging(_))),
        "{st:?}"
    );
    assert!(
        st.iter().all(|(_, ph, _)| *ph == Phase::Forward),
        "no compensation for lag"
    );
    assert!(s.message.contains("catching up"));
    // Once the lag has passed the tenant holds the value.
    let want = p.new_immutable_id.to_string();
    assert_eq!(
        env.sb
            .entra_user(MEGAN)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(want.as_str())
    );
    assert_invariants(&env, &p, &s);
}

#[tokio::test]
async fn deactivate_switched_on_mid_run_stops_the_unassign() {
    let env = env().await;
    let p = plan(&env, MEGAN, None).await.unwrap();
    // Okta feature reads after approval: pause snapshot (1; the PUT's answer is the read-back),
    // then the re-check right before the unassign (2).
    env.sb.inject(Fault {
        op: "okta.get_feature".into(),
        nth: 2,
        times: 1,
        action: FaultAction::EnableDeactivate,
    });
    let (s, events) = run(&env, &p).await;
    assert_eq!(s.outcome, RunOutcome::Diverged, "{s:?}");
    assert_eq!(
        calls_of(&env.sb, "okta.unassign"),
        0,
        "the unassign must not be sent"
    );
    assert!(env.sb.deprovisions().is_empty());
    let st = steps(&events);
    assert!(st.iter().any(|(k, _, o)| *k == StepKind::Unassign
        && matches!(o, StepOutcome::Failed { code: Some(c), .. } if c == "DeactivateEnabled")));
    assert_invariants(&env, &p, &s);
}

/// One fault case: where it hits, for which user, and what the run must end as.
struct Case {
    name: &'static str,
    fault: Fault,
    outcome: RunOutcome,
}

/// One hand-picked fault per step, with the outcome the step table gives it: a refusal changes
/// nothing and is compensated at once; an unknown outcome is re-sent (every write is idempotent)
/// and completes the run forward. The model test in `engine_model` covers every combination.
fn fault_cases(had_id: bool) -> Vec<Case> {
    let step2_refused = if had_id {
        RunOutcome::RolledBack
    } else {
        // No value to go back to, and Graph refuses a federated UPN without one: the user stays on
        // the initial domain, said loudly.
        RunOutcome::NeedsAttention
    };
    vec![
        Case {
            name: "step 1 refused",
            fault: fail("graph.update_user", 1, 1, 400, "Request_BadRequest"),
            outcome: RunOutcome::RolledBack,
        },
        Case {
            name: "step 1 unknown",
            fault: fail("graph.update_user", 1, 1, 500, "Service_InternalError"),
            outcome: RunOutcome::RepairedAfterRollForward,
        },
        Case {
            name: "step 2 unknown",
            fault: fail("graph.update_user", 2, 1, 500, "Service_InternalError"),
            outcome: RunOutcome::RepairedAfterRollForward,
        },
        Case {
            name: "step 2 refused",
            fault: fail(
                "graph.update_user",
                2,
                1,
                403,
                "Authorization_RequestDenied",
            ),
            outcome: step2_refused,
        },
        Case {
            name: "step 2 unknown twice",
            fault: fail("graph.update_user", 2, 2, 500, "Service_InternalError"),
            outcome: RunOutcome::RepairedAfterRollForward,
        },
        // The stale check reads first (call 1); the verify reads are calls 2–4.
        Case {
            name: "step 4 reads fail",
            fault: fail("graph.get_user", 2, 3, 500, "Service_InternalError"),
            outcome: RunOutcome::Repaired,
        },
        // A read whose answer was lost is read again, within the pause's budget (3 here).
        Case {
            name: "step 5 snapshot once",
            fault: fail("okta.get_feature", 1, 1, 500, "E0000009"),
            outcome: RunOutcome::Repaired,
        },
        Case {
            name: "step 5 snapshot",
            fault: fail("okta.get_feature", 1, 3, 500, "E0000009"),
            outcome: RunOutcome::Diverged,
        },
        Case {
            name: "step 5 pause refused",
            fault: fail("okta.put_feature", 1, 1, 400, "E0000001"),
            outcome: RunOutcome::Diverged,
        },
        Case {
            name: "step 6 refused",
            fault: fail("okta.unassign", 1, 1, 403, "E0000006"),
            outcome: RunOutcome::Diverged,
        },
        Case {
            name: "step 6 unknown",
            fault: fail("okta.unassign", 1, 1, 500, "E0000009"),
            outcome: RunOutcome::RepairedAfterRollForward,
        },
        Case {
            name: "step 7 once",
            fault: fail("okta.assign", 1, 1, 500, "E0000009"),
            outcome: RunOutcome::RepairedAfterRollForward,
        },
        // Okta refuses the new value: a refusal is not re-sent; the saved profile goes back.
        Case {
            name: "step 7 refused",
            fault: fail("okta.assign", 1, 1, 400, "E0000001"),
            outcome: RunOutcome::Diverged,
        },
        Case {
            name: "step 9 restore once",
            fault: fail("okta.put_feature", 2, 1, 500, "E0000009"),
            outcome: RunOutcome::Repaired,
        },
    ]
}

async fn fault_at_each_step(upn: &str, had_id: bool) {
    for case in fault_cases(had_id) {
        let env = env().await;
        let p = plan(&env, upn, None).await.expect("plan");
        assert_eq!(p.entra_immutable_id_before.is_some(), had_id);
        env.sb.inject(case.fault.clone());
        let (s, events) = run(&env, &p).await;
        assert_eq!(
            s.outcome,
            case.outcome,
            "{upn} / {}: {s:#?}\n{:#?}",
            case.name,
            steps(&events)
        );
        assert_invariants(&env, &p, &s);
        let finished = events
            .iter()
            .filter(|e| matches!(e, RunEvent::Finished(_)))
            .count();
        assert_eq!(finished, 1, "{}: one summary", case.name);
        if s.outcome == RunOutcome::RolledBack && case.name != "step 1 refused" {
            assert!(
                steps(&events)
                    .iter()
                    .any(|(_, ph, o)| *ph == Phase::Compensation && *o == StepOutcome::Done),
                "{}: no compensation reported",
                case.name
            );
            assert_eq!(
                env.sb.entra_user(upn).unwrap().on_premises_immutable_id,
                p.entra_immutable_id_before,
                "{}",
                case.name
            );
        }
        if s.outcome == RunOutcome::RepairedAfterRollForward {
            assert!(
                steps(&events)
                    .iter()
                    .any(|(_, ph, _)| *ph == Phase::RollForward),
                "{}: no roll-forward reported",
                case.name
            );
        }
    }
}

#[tokio::test]
async fn a_fault_at_each_step_for_a_user_with_an_id() {
    fault_at_each_step(MEGAN, true).await;
}

#[tokio::test]
async fn a_fault_at_each_step_for_a_user_without_an_id() {
    fault_at_each_step(ADELE, false).await;
}

#[tokio::test]
async fn ten_concurrent_repairs_share_one_provisioning_window() {
    let env = env_with(
        SandboxOptions {
            ordinary_users: 12,
            latency: Duration::from_millis(5),
            ..SandboxOptions::default()
        },
        test_policy(),
    )
    .await;
    let mut plans = Vec::new();
    for n in 1..=10 {
        plans.push(plan(&env, &ordinary_upn(n), None).await.expect("plan"));
    }
    let runs = plans.iter().map(|p| run(&env, p));
    let results = futures_join_all(runs).await;
    for (p, (s, _)) in plans.iter().zip(&results) {
        assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
        assert_invariants(&env, p, s);
    }
    let writes = env.sb.provisioning_writes();
    assert_eq!(
        writes.len(),
        2,
        "paused once and restored once: {writes:#?}"
    );
    assert_eq!(writes[1], env.initial_caps);
}

/// Runs futures concurrently on this task (no extra dependency for `join_all`).
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut pending: Vec<_> = handles.into_iter().enumerate().collect();
    std::future::poll_fn(move |cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                outputs[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(
                outputs
                    .drain(..)
                    .map(|o| o.expect("every future finished"))
                    .collect(),
            )
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[tokio::test]
async fn a_second_request_for_the_same_user_is_refused_while_the_first_runs() {
    let env = env_with(
        SandboxOptions {
            ordinary_users: 5,
            latency: Duration::from_millis(40),
            ..SandboxOptions::default()
        },
        test_policy(),
    )
    .await;
    let first = plan(&env, ADELE, None).await.unwrap();
    let early_second = plan(&env, ADELE, None).await.unwrap();
    assert!(env.engine.mark_approved(first.run).unwrap());
    assert!(env.engine.mark_approved(early_second.run).unwrap());
    let (reporter, mut rx) = Reporter::channel();
    let engine = env.engine.clone();
    let first_clone = first.clone();
    let handle = tokio::spawn(async move { engine.execute(&first_clone, &reporter).await });
    // Wait for the first step to be reported: the run is then certainly holding the user.
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(RunEvent::Step(_))) => break,
            Ok(Some(_)) => continue,
            other => panic!("no step reported: {other:?}"),
        }
    }
    let err = plan(&env, "ADELE@contoso.com", None).await.unwrap_err();
    assert!(
        matches!(err, PlanError::Refused(Refusal::AlreadyRunning { run }) if run == first.run),
        "{err:?}"
    );
    let (reporter2, _rx2) = Reporter::channel();
    let second = env.engine.execute(&early_second, &reporter2).await;
    assert_eq!(second.outcome, RunOutcome::NotExecuted, "{second:?}");
    let s = handle.await.unwrap();
    assert_eq!(s.outcome, RunOutcome::Repaired);
    assert_invariants(&env, &first, &s);
}

#[tokio::test]
async fn a_run_executes_at_most_once() {
    let env = env().await;
    let (p, s, _) = repair(&env, ALEX).await;
    assert_eq!(s.outcome, RunOutcome::Repaired);
    let (reporter, _rx) = Reporter::channel();
    let again = env.engine.execute(&p, &reporter).await;
    assert_eq!(again.outcome, RunOutcome::NotExecuted);
    assert_eq!(calls_of(&env.sb, "graph.update_user"), 1);
}

#[tokio::test]
async fn a_stale_plan_writes_nothing() {
    let env = env().await;
    let p = plan(&env, ALEX, None).await.unwrap();
    // Someone repairs the user by hand meanwhile.
    let other = plan(&env, ALEX, None).await.unwrap();
    let (s1, _) = run(&env, &other).await;
    assert_eq!(s1.outcome, RunOutcome::Repaired);
    let writes = calls_of(&env.sb, "graph.update_user");
    let (s, _) = run(&env, &p).await;
    assert_eq!(s.outcome, RunOutcome::Stale, "{s:?}");
    assert!(s.message.contains("Entra ImmutableID"), "{}", s.message);
    assert_eq!(calls_of(&env.sb, "graph.update_user"), writes);
}

/// Okta's value on a direct assignment linked to the user, unique in the tenant: by default the
/// plan is the Entra-only repair to it, and running it touches nothing in Okta.
#[tokio::test]
async fn the_smallest_fix_by_default_is_entra_only_to_oktas_value() {
    let env = env().await;
    let p = plan_as(&env, MEGAN, None, ModeChoice::Smallest)
        .await
        .expect("plan");
    assert_eq!(p.mode, RepairMode::EntraOnly);
    assert_eq!(p.new_id_source, NewIdSource::OktaValue);
    assert_eq!(p.new_immutable_id.as_str(), MEGAN_OKTA_IMMUTABLE_ID);
    assert!(p.carry_over.is_none(), "no reassignment, nothing carried");
    assert!(p.mode_why.starts_with("Entra-only"), "{}", p.mode_why);
    let text = o365_fixbot::chat::render::plan_message(&p, Duration::from_secs(900));
    assert!(text.contains("Mode: Entra-only"), "{text}");
    assert!(!text.contains("Unassign"), "{text}");
    env.sb.reset_calls();
    let (s, _) = run(&env, &p).await;
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    assert_eq!(
        env.sb
            .entra_user(MEGAN)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(MEGAN_OKTA_IMMUTABLE_ID)
    );
    assert!(env.sb.provisioning_writes().is_empty(), "no pause");
    assert_eq!(
        calls_of(&env.sb, "okta.unassign") + calls_of(&env.sb, "okta.assign"),
        0
    );
    assert_invariants(&env, &p, &s);

    // mode:full forces the seed's procedure with a new value.
    let env = self::env().await;
    let p = plan_as(&env, MEGAN, None, ModeChoice::Full).await.unwrap();
    assert_eq!(p.mode, RepairMode::Full);
    assert_ne!(p.new_immutable_id.as_str(), MEGAN_OKTA_IMMUTABLE_ID);
    assert!(p.mode_why.contains("mode:full"), "{}", p.mode_why);
}

#[tokio::test]
async fn the_full_repair_when_oktas_value_cannot_be_kept() {
    // Okta's value already belongs to another Entra user.
    let env = env().await;
    assert!(env.sb.set_entra_immutable_id(ALEX, MEGAN_OKTA_IMMUTABLE_ID));
    let p = plan_as(&env, MEGAN, None, ModeChoice::Smallest)
        .await
        .unwrap();
    assert_eq!(p.mode, RepairMode::Full);
    assert!(
        p.mode_why.contains("already belongs to alex@fabrikam.com"),
        "{}",
        p.mode_why
    );
    let err = plan_as(&env, MEGAN, None, ModeChoice::EntraOnly)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PlanError::Refused(Refusal::EntraOnlyNotApplicable { .. })
        ),
        "{err:?}"
    );

    // The assignment is not linked to this Entra user: only a reassignment links it.
    let env = self::env().await;
    let okta_id = env.sb.okta_user_id(MEGAN).unwrap();
    assert!(env.sb.set_app_user_external_id(&okta_id, None));
    let p = plan_as(&env, MEGAN, None, ModeChoice::Smallest)
        .await
        .unwrap();
    assert_eq!(p.mode, RepairMode::Full);
    assert!(p.mode_why.contains("not linked"), "{}", p.mode_why);

    // A value asked for that differs from Okta's must reach Okta too.
    let env = self::env().await;
    let given = "35918bc9-196d-40ea-9779-889d79b753f0";
    let p = plan_as(&env, MEGAN, Some(given), ModeChoice::Smallest)
        .await
        .unwrap();
    assert_eq!(
        (p.mode, &p.new_id_source),
        (RepairMode::Full, &NewIdSource::GivenByRequester)
    );
}

#[tokio::test]
async fn agreeing_systems_need_nothing_unless_full_is_asked_for() {
    let env = env().await;
    let upn = ordinary_upn(1);
    let err = plan_as(&env, &upn, None, ModeChoice::Smallest)
        .await
        .unwrap_err();
    let PlanError::Refused(r @ Refusal::AlreadyAgree { .. }) = &err else {
        panic!("{err:?}");
    };
    assert!(r.to_string().contains("mode:full"), "{r}");
    let p = plan_as(&env, &upn, None, ModeChoice::Full).await.unwrap();
    assert_eq!(p.mode, RepairMode::Full);
    assert_eq!(
        calls_of(&env.sb, "graph.update_user"),
        0,
        "planning writes nothing"
    );
}
