//! The shared provisioning pause on its own: a real PauseManager with a real Okta client against
//! the sandbox and a real store in a temp dir, with faults on the feature PUT.

use crate::harness::{calls_of, okta, sandbox};
use o365_fixbot::domain::{RunId, RunState};
use o365_fixbot::pipeline::capabilities::all_disabled;
use o365_fixbot::pipeline::pause::{Left, PauseError, PauseManager, PauseStatus, PauseTiming};
use o365_fixbot::sandbox::{Fault, FaultAction, Sandbox};
use o365_fixbot::store::{NewRun, Store};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

/// Upper bound for anything that must not wait behind a restore.
const PROMPT: Duration = Duration::from_secs(2);
const PUT: &str = "okta.put_feature";

fn timing() -> PauseTiming {
    PauseTiming {
        join_window: Duration::from_secs(60),
        linger: Duration::from_secs(3),
        restore_attempts: 3,
        restore_backoff: Duration::from_millis(10),
        pause_attempts: 3,
    }
}

struct Env {
    sb: Sandbox,
    store: Store,
    initial: Value,
}

async fn env() -> Env {
    let sb = sandbox().await;
    let dir = std::env::temp_dir().join(format!("fixbot-pause-{}", uuid::Uuid::new_v4().simple()));
    let store = Store::open(&dir).expect("store opens");
    let initial = sb.provisioning_capabilities();
    Env { sb, store, initial }
}

impl Env {
    fn manager(&self, timing: PauseTiming) -> Arc<PauseManager> {
        PauseManager::new(okta(&self.sb), self.store.clone(), timing)
    }

    fn fail_puts(&self, times: u32, status: u16, code: &str) {
        self.sb.inject(Fault {
            op: PUT.into(),
            nth: 1,
            times,
            action: FaultAction::Error {
                status,
                code: code.into(),
                message: "injected".into(),
            },
        });
    }

    fn stored_pause(&self) -> Option<o365_fixbot::store::PauseRow> {
        self.store.pause(&self.sb.creds.app_id).unwrap()
    }

    fn insert_run(&self, run: RunId, state: RunState) {
        self.store
            .insert_run(&NewRun {
                id: &run.to_string(),
                requester_id: "u-alice",
                requester_name: "alice",
                upn: "adele@contoso.com",
                state,
                plan: None,
                fingerprint: None,
            })
            .unwrap();
    }
}

fn server_error(env: &Env, times: u32) {
    env.fail_puts(times, 500, "E0000009");
}

#[tokio::test]
async fn an_unknown_pause_put_outcome_is_resent_and_the_window_opens() {
    let env = env().await;
    let m = env.manager(timing());
    server_error(&env, 1);

    let joined = m.join(RunId::new()).await.expect("the 500 is re-sent");
    assert!(joined.first);
    assert_eq!(joined.snapshot, env.initial);
    assert_eq!(
        env.sb.provisioning_capabilities(),
        all_disabled(&env.initial)
    );
    assert_eq!(calls_of(&env.sb, PUT), 2, "one 500, one accepted re-send");
}

#[tokio::test]
async fn a_refused_pause_put_is_not_resent_and_the_snapshot_is_restored() {
    let env = env().await;
    let m = env.manager(timing());
    env.fail_puts(1, 403, "E0000006");

    let err = m.join(RunId::new()).await.unwrap_err();
    let PauseError::Api(f) = err else {
        panic!("expected the refusal, got {err:?}")
    };
    assert!(f.definitive && f.is_code("E0000006"));
    assert_eq!(
        calls_of(&env.sb, PUT),
        2,
        "the refused pause and the restore"
    );
    assert_eq!(env.sb.provisioning_writes(), vec![env.initial.clone()]);
    assert_eq!(env.sb.provisioning_capabilities(), env.initial);
    assert!(env.stored_pause().is_none());
}

#[tokio::test]
async fn an_unknown_pause_put_outcome_past_the_budget_stops_and_restores() {
    let env = env().await;
    let m = env.manager(timing());
    server_error(&env, timing().pause_attempts);

    let err = m.join(RunId::new()).await.unwrap_err();
    assert!(
        matches!(&err, PauseError::Api(f) if !f.definitive),
        "{err:?}"
    );
    assert_eq!(
        calls_of(&env.sb, PUT),
        3 + 1,
        "three tries, then the restore"
    );
    assert_eq!(env.sb.provisioning_capabilities(), env.initial);
    assert!(env.stored_pause().is_none());
}

#[tokio::test]
async fn refuses_to_snapshot_provisioning_that_someone_else_already_paused() {
    let env = env().await;
    let m = env.manager(timing());
    let off = all_disabled(&env.initial);
    okta(&env.sb).set_provisioning(&off).await.unwrap();
    env.sb.reset_calls();
    let writes = env.sb.provisioning_writes().len();

    let err = m.join(RunId::new()).await.unwrap_err();
    assert!(matches!(err, PauseError::AlreadyPaused), "{err:?}");
    assert!(err
        .to_string()
        .contains("someone else paused it or an earlier run crashed outside this bot's database"));
    assert_eq!(calls_of(&env.sb, PUT), 0, "nothing written");
    assert_eq!(env.sb.provisioning_writes().len(), writes);
    assert!(env.stored_pause().is_none());
    assert_eq!(env.sb.provisioning_capabilities(), off);

    // Once someone turns it back on, the next run pauses normally.
    okta(&env.sb).set_provisioning(&env.initial).await.unwrap();
    let joined = m.join(RunId::new()).await.unwrap();
    assert!(joined.first);
    assert_eq!(joined.snapshot, env.initial);
}

#[tokio::test]
async fn a_failed_restore_leaves_the_pause_and_a_background_restorer_reopens_the_way() {
    let env = env().await;
    let m = env.manager(PauseTiming {
        restore_attempts: 2,
        ..timing()
    });
    let a = RunId::new();
    m.join(a).await.unwrap();
    // Two foreground attempts fail, then three background ones.
    server_error(&env, 5);

    let err = m.leave(a).await.unwrap_err();
    assert!(
        matches!(&err, PauseError::RestoreFailed(f) if !f.definitive),
        "{err:?}"
    );
    let stored = env.stored_pause().expect("kept until restored");
    assert!(stored.holders.is_empty(), "the leaving run always leaves");
    assert!(stored.restoring_since_ms.is_some());

    let err = timeout(PROMPT, m.join(RunId::new()))
        .await
        .expect("join fails fast while the restore is pending")
        .unwrap_err();
    assert!(matches!(err, PauseError::RestorePending { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("provisioning restore is still pending"),
        "{text}"
    );
    assert!(
        text.contains("PUT /api/v1/apps/") && text.contains("USER_PROVISIONING"),
        "{text}"
    );

    let mut status = m.status();
    timeout(
        Duration::from_secs(20),
        status.wait_for(|s| *s == PauseStatus::Steady),
    )
    .await
    .expect("the background restorer finishes")
    .unwrap();
    assert_eq!(env.sb.provisioning_capabilities(), env.initial);
    assert!(env.stored_pause().is_none());
    assert_eq!(calls_of(&env.sb, PUT), 1 + 5 + 1);

    let c = RunId::new();
    let joined = m.join(c).await.expect("a fresh window opens");
    assert!(joined.first);
    assert_eq!(joined.snapshot, env.initial);
    assert_eq!(m.leave(c).await.unwrap(), Left::Restored);
    assert_eq!(env.sb.provisioning_capabilities(), env.initial);
}

#[tokio::test]
async fn restore_retries_do_not_hold_the_lock_against_other_runs() {
    let env = env().await;
    let m = env.manager(PauseTiming {
        restore_attempts: 5,
        restore_backoff: Duration::from_millis(300),
        ..timing()
    });
    let a = RunId::new();
    m.join(a).await.unwrap();
    // Three failed restores with 0.3 s, 0.6 s and 1.2 s between them: about two seconds.
    server_error(&env, 3);

    let mut status = m.status();
    let leaving = tokio::spawn({
        let m = m.clone();
        async move { m.leave(a).await }
    });
    timeout(PROMPT, status.wait_for(|s| *s == PauseStatus::Restoring))
        .await
        .expect("the restore starts")
        .unwrap();

    let (b, c) = (RunId::new(), RunId::new());
    timeout(PROMPT, m.expect(b))
        .await
        .expect("expect is prompt");
    let left = timeout(PROMPT, m.leave(c)).await.expect("leave is prompt");
    assert!(
        matches!(left, Err(PauseError::RestorePending { .. })),
        "{left:?}"
    );
    let unexpected = timeout(PROMPT, m.unexpect(b))
        .await
        .expect("unexpect is prompt");
    assert!(matches!(unexpected, Ok(None)), "{unexpected:?}");
    assert_eq!(*status.borrow(), PauseStatus::Restoring);
    assert!(
        !leaving.is_finished(),
        "the others returned while the restore was still being retried"
    );

    let d = RunId::new();
    let joining = tokio::spawn({
        let m = m.clone();
        async move { m.join(d).await }
    });
    assert_eq!(leaving.await.unwrap().unwrap(), Left::Restored);
    let joined = joining.await.unwrap().expect("joins after the restore");
    assert!(joined.first, "a new window, not the one being restored");
    assert_eq!(joined.snapshot, env.initial);
    let off = all_disabled(&env.initial);
    assert_eq!(
        env.sb.provisioning_writes(),
        vec![off.clone(), env.initial.clone(), off]
    );
    assert_eq!(m.leave(d).await.unwrap(), Left::Restored);
}

#[tokio::test]
async fn a_restore_cut_short_by_a_restart_is_finished_before_a_new_window_opens() {
    let env = env().await;
    let before_restart = env.manager(PauseTiming {
        restore_attempts: 1,
        // The background restorer would wait this long first; the "restart" comes sooner.
        restore_backoff: Duration::from_secs(30),
        ..timing()
    });
    let a = RunId::new();
    before_restart.join(a).await.unwrap();
    server_error(&env, 1);
    assert!(matches!(
        before_restart.leave(a).await,
        Err(PauseError::RestoreFailed(_))
    ));
    drop(before_restart);
    let off = all_disabled(&env.initial);
    assert_eq!(env.sb.provisioning_capabilities(), off);

    let after_restart = env.manager(timing());
    let joined = after_restart.join(RunId::new()).await.unwrap();
    assert!(joined.first, "the half-restored window is not joined");
    assert_eq!(joined.snapshot, env.initial);
    let writes = env.sb.provisioning_writes();
    assert_eq!(writes[writes.len() - 2..], [env.initial.clone(), off]);
}

#[tokio::test]
async fn settle_orphans_drops_holders_that_stopped_running_and_restores() {
    let env = env().await;
    let (a, b) = (RunId::new(), RunId::new());
    env.insert_run(a, RunState::Running);
    env.insert_run(b, RunState::NeedsAttention);
    let before_restart = env.manager(timing());
    before_restart.join(a).await.unwrap();
    before_restart.join(b).await.unwrap();
    drop(before_restart);

    let m = env.manager(timing());
    assert_eq!(
        m.settle_orphans().await.unwrap(),
        Some(Left::HeldByOthers(1))
    );
    assert_eq!(env.stored_pause().unwrap().holders, vec![a.to_string()]);
    assert_eq!(
        env.sb.provisioning_capabilities(),
        all_disabled(&env.initial)
    );

    env.store
        .set_run_summary(&a.to_string(), RunState::Succeeded, &Value::Null)
        .unwrap();
    assert_eq!(m.settle_orphans().await.unwrap(), Some(Left::Restored));
    assert_eq!(env.sb.provisioning_capabilities(), env.initial);
    assert!(env.stored_pause().is_none());
}
