//! One test per engine rule that used to break: the gate before the lock, refusals never
//! re-sent, a pause re-sent after a restart, recovery that survives a failing task, plans from an
//! older version, summaries that match the world. Restarts are in-process: the run is frozen at
//! a crash point, its task dropped, and a new engine opened on the same data directory.

use crate::harness::{calls_of, graph, okta, sandbox_with};
use crate::pipeline::{fail, test_policy};
use o365_fixbot::domain::{Actor, RunState};
use o365_fixbot::pipeline::steps::Label;
use o365_fixbot::pipeline::{
    CrashPoint, CrashPoints, Engine, ModeChoice, Plan, RepairRequest, Reporter, RunOutcome,
    RunSummary,
};
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Fault, FaultAction, Sandbox, SandboxOptions};
use o365_fixbot::store::Store;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(20);

struct Rig {
    sb: Sandbox,
    dir: PathBuf,
    initial: Value,
}

async fn rig() -> Rig {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 5,
        ..SandboxOptions::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("fixbot-rules-{}", uuid::Uuid::new_v4().simple()));
    let initial = sb.provisioning_capabilities();
    Rig { sb, dir, initial }
}

impl Rig {
    fn engine(&self, crash: Option<Arc<dyn CrashPoints>>) -> Engine {
        let store = Store::open(&self.dir).expect("store opens");
        let e = Engine::new(graph(&self.sb), okta(&self.sb), store, test_policy());
        match crash {
            Some(c) => e.with_crash_points(c),
            None => e,
        }
    }

    fn store(&self) -> Store {
        Store::open_file(&self.dir.join("fixbot.sqlite3")).expect("store file")
    }

    fn assert_safe(&self, upn: &str, s: &RunSummary) {
        let user = self.sb.entra_user(upn).expect("user on its UPN");
        assert!(user.user_principal_name.eq_ignore_ascii_case(upn), "{s:?}");
        assert_eq!(self.sb.provisioning_capabilities(), self.initial, "{s:?}");
        assert!(self.sb.deprovisions().is_empty(), "{s:?}");
        let okta_user = self.sb.okta_user_id(upn).expect("okta user");
        assert!(self.sb.okta_app_user(&okta_user).is_some(), "{s:?}");
    }
}

async fn plan(e: &Engine, upn: &str) -> Plan {
    let req = RepairRequest::parse(Actor::new("u-alice", "alice"), upn, None, Some("test"))
        .expect("input")
        .with_mode(ModeChoice::Full);
    e.plan(&req).await.expect("plan")
}

/// Freezes the first call of one label at one point, once, and says so.
struct FreezeAt {
    label: Label,
    point: CrashPoint,
    fired: AtomicBool,
    hit: Notify,
}

impl FreezeAt {
    fn new(label: Label, point: CrashPoint) -> Arc<Self> {
        Arc::new(Self {
            label,
            point,
            fired: AtomicBool::new(false),
            hit: Notify::new(),
        })
    }
}

impl CrashPoints for FreezeAt {
    fn freeze(
        &self,
        _run: o365_fixbot::domain::RunId,
        label: Label,
        _attempt: u32,
        point: CrashPoint,
    ) -> bool {
        if label == self.label && point == self.point && !self.fired.swap(true, Ordering::SeqCst) {
            self.hit.notify_one();
            return true;
        }
        false
    }
}

/// Approves and executes `plan` until the crash point, then "kills" the process: the run's task
/// is dropped, then the engine.
async fn run_until_frozen(e: Engine, plan: &Plan, at: &Arc<FreezeAt>) {
    assert!(e.mark_approved(plan.run).unwrap());
    let hit = at.hit.notified();
    let (engine, p) = (e.clone(), plan.clone());
    let task = tokio::spawn(async move { engine.execute(&p, &Reporter::discard()).await });
    tokio::time::timeout(WAIT, hit)
        .await
        .expect("the run reached the crash point");
    task.abort();
    let _ = task.await;
    drop(e);
}

async fn recover(rig: &Rig, crash: Option<Arc<dyn CrashPoints>>) -> Vec<RunSummary> {
    let e = rig.engine(crash);
    tokio::time::timeout(WAIT, e.recover(|_| Reporter::discard()))
        .await
        .expect("recovery ends")
        .expect("recovery runs")
}

#[tokio::test]
async fn an_approved_run_that_cannot_take_the_user_lock_is_not_left_approved() {
    let rig = rig().await;
    let at = FreezeAt::new(Label::Unassign, CrashPoint::BeforeCall);
    let e = rig.engine(Some(at.clone()));
    let first = plan(&e, ADELE).await;
    let second = plan(&e, ADELE).await;
    assert!(e.mark_approved(first.run).unwrap());
    let (engine, p) = (e.clone(), first.clone());
    let hit = at.hit.notified();
    let task = tokio::spawn(async move { engine.execute(&p, &Reporter::discard()).await });
    tokio::time::timeout(WAIT, hit)
        .await
        .expect("first run holds the lock");
    assert!(e.mark_approved(second.run).unwrap());
    let s = e.execute(&second, &Reporter::discard()).await;
    assert_eq!(s.outcome, RunOutcome::NotExecuted, "{s:?}");
    assert!(s.message.contains("already running"), "{s:?}");
    let state = e
        .store()
        .run(&second.run.to_string())
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(
        state,
        RunState::NotExecuted,
        "never left where recovery would run it"
    );
    task.abort();
    let _ = task.await;
    drop(e);
    // After a restart only the first run is settled; the second is not executed.
    let settled = recover(&rig, None).await;
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!(settled[0].run, first.run);
    rig.assert_safe(ADELE, &settled[0]);
}

#[tokio::test]
async fn a_refused_step_2_without_a_previous_id_is_not_resent_and_says_where_the_user_is() {
    let rig = rig().await;
    let e = rig.engine(None);
    let p = plan(&e, ADELE).await;
    rig.sb.inject(fail(
        "graph.update_user",
        2,
        50,
        403,
        "Authorization_RequestDenied",
    ));
    assert!(e.mark_approved(p.run).unwrap());
    let s = e.execute(&p, &Reporter::discard()).await;
    // Step 1, step 2 once, the move back once: no re-send of a refusal.
    assert_eq!(calls_of(&rig.sb, "graph.update_user"), 3, "{s:?}");
    assert_eq!(s.outcome, RunOutcome::NeedsAttention, "{s:?}");
    let temp = p.temporary_upn.as_ref().unwrap().to_string();
    assert!(
        s.message
            .contains(&format!("is on the temporary UPN {temp}")),
        "{s:?}"
    );
    assert!(s.message.contains("PATCH /users/"), "{s:?}");
    assert!(s.message.contains(&p.upn.to_string()), "{s:?}");
    // Okta was not touched, and the pause that opened alongside is restored.
    assert_eq!(calls_of(&rig.sb, "okta.unassign"), 0);
    assert_eq!(rig.sb.provisioning_capabilities(), rig.initial);
}

#[tokio::test]
async fn a_pause_journalled_but_never_sent_is_sent_again_on_recovery() {
    let rig = rig().await;
    let at = FreezeAt::new(Label::Pause, CrashPoint::BeforeCall);
    let e = rig.engine(Some(at.clone()));
    let p = plan(&e, MEGAN).await;
    run_until_frozen(e, &p, &at).await;
    // The process died after storing the snapshot and before the PUT reached Okta.
    rig.store()
        .pause_begin(APP_ID, &rig.initial, &p.run.to_string())
        .unwrap();
    assert_eq!(
        rig.sb.provisioning_capabilities(),
        rig.initial,
        "not paused yet"
    );
    let writes_before = rig.sb.provisioning_writes().len();
    let settled = recover(&rig, None).await;
    let s = &settled[0];
    assert!(
        matches!(
            s.outcome,
            RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward
        ),
        "{s:?}"
    );
    assert!(!s.message.contains("switched"), "{s:?}");
    let writes = rig.sb.provisioning_writes();
    assert!(
        writes.len() >= writes_before + 2,
        "paused, then restored: {writes:?}"
    );
    rig.assert_safe(MEGAN, s);
}

#[tokio::test]
async fn one_okta_500_on_the_pause_put_does_not_end_the_repair() {
    let rig = rig().await;
    let e = rig.engine(None);
    let p = plan(&e, MEGAN).await;
    rig.sb
        .inject(fail("okta.put_feature", 1, 1, 500, "E0000009"));
    assert!(e.mark_approved(p.run).unwrap());
    let s = e.execute(&p, &Reporter::discard()).await;
    assert!(
        matches!(
            s.outcome,
            RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward
        ),
        "{s:?}"
    );
    rig.assert_safe(MEGAN, &s);
}

/// Panics inside one run's recovery, as a bug would.
struct PanicFor(o365_fixbot::domain::RunId);

impl CrashPoints for PanicFor {
    fn freeze(
        &self,
        run: o365_fixbot::domain::RunId,
        _label: Label,
        _attempt: u32,
        _point: CrashPoint,
    ) -> bool {
        assert!(run != self.0, "a bug in one recovery task");
        false
    }
}

#[tokio::test]
async fn one_failing_recovery_task_does_not_stop_the_others() {
    let rig = rig().await;
    for upn in [MEGAN, ALEX] {
        let at = FreezeAt::new(Label::Assign, CrashPoint::BeforeCall);
        let e = rig.engine(Some(at.clone()));
        let p = plan(&e, upn).await;
        run_until_frozen(e, &p, &at).await;
    }
    let runs = rig.store().runs_in_state(RunState::Running).unwrap();
    assert_eq!(runs.len(), 2);
    let doomed = o365_fixbot::domain::RunId::parse(&runs[0].id).unwrap();
    let settled = recover(&rig, Some(Arc::new(PanicFor(doomed)))).await;
    assert_eq!(settled.len(), 1, "the other run is settled: {settled:?}");
    assert_ne!(settled[0].run, doomed);
    assert!(
        matches!(settled[0].outcome, RunOutcome::RepairedAfterRollForward),
        "{settled:?}"
    );
    // The failed one is still `running`, so a later start settles it.
    let again = recover(&rig, None).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].run, doomed);
    for upn in [MEGAN, ALEX] {
        rig.assert_safe(upn, &again[0]);
    }
}

fn set_plan_json(rig: &Rig, run: &str, json: &str) {
    let c = rusqlite::Connection::open(rig.dir.join("fixbot.sqlite3")).unwrap();
    c.execute(
        "UPDATE runs SET plan_json = ?1 WHERE id = ?2",
        rusqlite::params![json, run],
    )
    .unwrap();
}

#[tokio::test]
async fn a_run_left_by_an_older_version_is_settled_and_an_unreadable_one_handed_over() {
    let rig = rig().await;
    // Engine 1 stored the bare plan and journalled steps 2 and 3 as two PATCHes; it died with
    // step 2 sent and no outcome.
    let at = FreezeAt::new(Label::SetId, CrashPoint::AfterCall);
    let e = rig.engine(Some(at.clone()));
    let p = plan(&e, ADELE).await;
    let other = plan(&e, MEGAN).await;
    run_until_frozen(e, &p, &at).await;
    set_plan_json(
        &rig,
        &p.run.to_string(),
        &serde_json::to_string(&p).unwrap(),
    );
    {
        let c = rusqlite::Connection::open(rig.dir.join("fixbot.sqlite3")).unwrap();
        // An engine-1 journal has no results and no pause rows of this engine's kind.
        c.execute("UPDATE journal SET result_json = NULL", [])
            .unwrap();
        c.execute("DELETE FROM journal WHERE api = 'pause.join'", [])
            .unwrap();
        // A run in flight whose plan no version can read.
        c.execute(
            "UPDATE runs SET state = 'running', plan_json = '{\"engine\":99,\"plan\":{}}' WHERE id = ?1",
            rusqlite::params![other.run.to_string()],
        )
        .unwrap();
    }
    let settled = recover(&rig, None).await;
    let old = settled.iter().find(|s| s.run == p.run).expect("settled");
    assert!(
        matches!(old.outcome, RunOutcome::RepairedAfterRollForward),
        "{old:?}"
    );
    rig.assert_safe(ADELE, old);
    let user = rig.sb.entra_user(ADELE).unwrap();
    let okta_user = rig.sb.okta_user_id(ADELE).unwrap();
    let app = rig.sb.okta_app_user(&okta_user).unwrap();
    assert_eq!(user.on_premises_immutable_id.as_deref(), app.immutable_id());

    let handed = settled
        .iter()
        .find(|s| s.run == other.run)
        .expect("handed over");
    assert_eq!(handed.outcome, RunOutcome::NeedsAttention);
    assert!(handed.message.starts_with("ACTION NEEDED"), "{handed:?}");
    assert!(handed.message.contains(MEGAN), "{handed:?}");
    let state = rig
        .store()
        .run(&other.run.to_string())
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(state, RunState::NeedsAttention);
}

#[tokio::test]
async fn the_summary_says_only_what_happened() {
    let rig = rig().await;
    let e = rig.engine(None);
    // Okta takes neither the new value nor the saved profile: the user may be unassigned.
    let p = plan(&e, MEGAN).await;
    rig.sb.inject(fail("okta.assign", 1, 2, 400, "E0000001"));
    assert!(e.mark_approved(p.run).unwrap());
    let t0 = std::time::Instant::now();
    let s = e.execute(&p, &Reporter::discard()).await;
    assert_eq!(s.outcome, RunOutcome::NeedsAttention, "{s:?}");
    let new = p.new_immutable_id.to_string();
    // The assignment to send carries the value Entra now holds, never the old one.
    assert!(s.message.contains("ACTION NEEDED"), "{s:?}");
    assert!(s.message.contains(&format!("immutableId {new}")), "{s:?}");
    assert!(s.message.contains("UNASSIGNED"), "{s:?}");
    assert_eq!(s.entra_immutable_id.as_deref(), Some(new.as_str()));
    assert_eq!(
        s.okta_immutable_id, None,
        "no value claimed for an unassigned user"
    );
    // Provisioning was paused and restored; the summary says so, not "untouched".
    assert!(s.message.contains("paused and restored"), "{s:?}");
    assert!(
        s.duration <= t0.elapsed() && s.duration * 2 >= t0.elapsed() / 2,
        "{s:?}"
    );
    assert_eq!(rig.sb.provisioning_capabilities(), rig.initial);
}

#[tokio::test]
async fn a_definitive_refusal_of_the_assign_is_not_posted_again() {
    let rig = rig().await;
    let e = rig.engine(None);
    let p = plan(&e, MEGAN).await;
    rig.sb.inject(fail("okta.assign", 1, 1, 400, "E0000001"));
    assert!(e.mark_approved(p.run).unwrap());
    let s = e.execute(&p, &Reporter::discard()).await;
    // The refused new value once, then the saved profile once.
    assert_eq!(calls_of(&rig.sb, "okta.assign"), 2, "{s:?}");
    assert_eq!(s.outcome, RunOutcome::Diverged, "{s:?}");
    rig.assert_safe(MEGAN, &s);
}

#[tokio::test]
async fn an_approved_run_killed_before_its_first_write_runs_once_after_the_restart() {
    let rig = rig().await;
    let e = rig.engine(None);
    let p = plan(&e, ALEX).await;
    assert!(e.mark_approved(p.run).unwrap());
    // The gate was passed, then the process died before any intent was journalled.
    assert!(e
        .store()
        .transition_run(&p.run.to_string(), &[RunState::Approved], RunState::Running)
        .unwrap());
    drop(e);
    let settled = recover(&rig, None).await;
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].outcome, RunOutcome::Repaired, "{settled:?}");
    rig.assert_safe(ALEX, &settled[0]);
    let writes = calls_of(&rig.sb, "graph.update_user");
    assert!(recover(&rig, None).await.is_empty(), "runs once");
    assert_eq!(calls_of(&rig.sb, "graph.update_user"), writes);
}

/// Says when a label's first send is about to go out, without stopping it.
struct Signal {
    label: Label,
    hit: Notify,
}

impl CrashPoints for Signal {
    fn freeze(
        &self,
        _run: o365_fixbot::domain::RunId,
        label: Label,
        attempt: u32,
        point: CrashPoint,
    ) -> bool {
        if label == self.label && attempt == 0 && point == CrashPoint::BeforeCall {
            self.hit.notify_one();
        }
        false
    }
}

#[tokio::test]
async fn a_run_parked_mid_entra_finishes_entra_leaves_the_pause_and_resumes_on_restart() {
    let rig = rig().await;
    let signal = Arc::new(Signal {
        label: Label::SetId,
        hit: Notify::new(),
    });
    let e = rig.engine(Some(signal.clone()));
    let p = plan(&e, ADELE).await;
    // Step 2 is still in flight when the bot is told to stop.
    rig.sb.inject(Fault {
        op: "graph.update_user".into(),
        nth: 2,
        times: 1,
        action: FaultAction::Delay(Duration::from_millis(300)),
    });
    assert!(e.mark_approved(p.run).unwrap());
    let hit = signal.hit.notified();
    let (engine, plan_) = (e.clone(), p.clone());
    let task = tokio::spawn(async move { engine.execute(&plan_, &Reporter::discard()).await });
    tokio::time::timeout(WAIT, hit)
        .await
        .expect("step 2 starts");
    e.park();
    let s = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(s.outcome, RunOutcome::Parked, "{s:?}");
    let new = p.new_immutable_id.to_string();
    // The Entra half was finished; Okta was not touched; the pause was left and restored.
    let user = rig.sb.entra_user(ADELE).unwrap();
    assert_eq!(user.on_premises_immutable_id.as_deref(), Some(new.as_str()));
    assert_eq!(calls_of(&rig.sb, "okta.unassign"), 0);
    assert_eq!(rig.sb.provisioning_capabilities(), rig.initial);
    let state = e.store().run(&p.run.to_string()).unwrap().unwrap().state;
    assert_eq!(state, RunState::Running, "left for the next start");
    drop(e);
    let settled = recover(&rig, None).await;
    assert_eq!(settled.len(), 1);
    assert!(
        matches!(settled[0].outcome, RunOutcome::RepairedAfterRollForward),
        "{settled:?}"
    );
    let okta_user = rig.sb.okta_user_id(ADELE).unwrap();
    let app = rig.sb.okta_app_user(&okta_user).unwrap();
    assert_eq!(app.immutable_id(), Some(new.as_str()));
    rig.assert_safe(ADELE, &settled[0]);
}

#[tokio::test]
async fn a_run_parked_before_its_first_write_writes_nothing_and_runs_on_restart() {
    let rig = rig().await;
    let e = rig.engine(None);
    let p = plan(&e, MEGAN).await;
    assert!(e.mark_approved(p.run).unwrap());
    e.park();
    let s = e.execute(&p, &Reporter::discard()).await;
    assert_eq!(s.outcome, RunOutcome::Parked, "{s:?}");
    assert_eq!(calls_of(&rig.sb, "graph.update_user"), 0);
    assert_eq!(rig.sb.provisioning_writes().len(), 0, "not even paused");
    drop(e);
    let settled = recover(&rig, None).await;
    assert_eq!(settled.len(), 1);
    assert!(
        matches!(
            settled[0].outcome,
            RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward
        ),
        "{settled:?}"
    );
    rig.assert_safe(MEGAN, &settled[0]);
}
