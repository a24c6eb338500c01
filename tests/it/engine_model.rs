//! A model test of the repair engine, by exhaustive enumeration: every journalled write × every
//! way its call can end × every crash point of that write × every kind of user, each case in its
//! own sandbox tenant and data directory; then a deterministic sample of runs with two faults.
//! Every case ends in the invariants of `docs/design.md`, read from the sandbox's final state,
//! and in a summary whose claims match that state.
//!
//! How a case is set up:
//! - The fault is injected *lazily*: the crash-point hook injects it when the step's first send
//!   (attempt 0) reaches `BeforeCall`, as a fault on the step's API with `nth: 1` (faults count
//!   from injection). So "step 2 is refused" hits step 2's PATCH however many PATCHes came before
//!   (step 1's, a client retry's). With the `BeforeCall` crash the call is never made, so the fault
//!   stays armed and hits the next call of that API after the restart: the recovery's re-send.
//! - The clients make one attempt per call (`max_attempts: 1`), so each outcome reaches the engine
//!   as it is (a production client re-sends timeouts itself, which would hide them).
//! - A crash freezes the run; the test aborts the task, drops the engine (and so the store's file
//!   lock), opens a new engine on the same data directory and recovers; the recovered summary is
//!   the run's summary.
//!
//! `ENGINE_MODEL_SHOW=1` prints every case (outcome, the thread's steps, the summary);
//! `ENGINE_MODEL_CALLS=1` adds the faulted APIs' calls (time, status) to each case's steps.

use crate::harness::{fast_http, graph_with, okta_with, sandbox_with};
use crate::pipeline::test_policy;
use o365_fixbot::directory::graph::UserPatch;
use o365_fixbot::directory::okta::{AppUserCredentials, AssignAppUser};
use o365_fixbot::directory::HttpSettings;
use o365_fixbot::domain::{Actor, EntraObjectId, RunId};
use o365_fixbot::pipeline::steps::Label;
use o365_fixbot::pipeline::{
    CrashPoint, CrashPoints, Engine, ModeChoice, Plan, ProvisioningState, RepairRequest, Reporter,
    RunEvent, RunOutcome, RunSummary,
};
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Fault, FaultAction, Sandbox, SandboxOptions};
use o365_fixbot::store::Store;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

/// Short enough that timeouts are quick, long enough for a loaded 2-core machine to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);
/// Applied at once, answered after the client gave up.
const HOLD: Duration = Duration::from_millis(1200);
/// Served (if at all) after the client gave up.
const DELAY: Duration = Duration::from_millis(900);
/// A case that takes longer than this is a hang, and fails.
const CASE_DEADLINE: Duration = Duration::from_secs(60);
/// Cases in flight across both tests of this file.
static SLOTS: Semaphore = Semaphore::const_new(4);

/// A managed-domain user without an ImmutableID does not exist in the scenario: adele is moved
/// to the managed domain (allowed: a managed UPN needs no ImmutableID) and her Office 365 app
/// username follows, before the plan is made.
const MANAGED_NO_ID: &str = "adele@fabrikam.com";

fn http() -> HttpSettings {
    HttpSettings {
        request_timeout: REQUEST_TIMEOUT,
        call_deadline: Duration::from_secs(5),
        max_attempts: 1,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    }
}

// --- the model's dimensions --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// Step 1, `graph.update_user` (federated only).
    UpnToTemporary,
    /// Steps 2 + 3 in one PATCH, `graph.update_user`.
    SetId,
    /// Step 5's pause PUT, `okta.put_feature`.
    Pause,
    /// Step 6, `okta.unassign`.
    Unassign,
    /// Step 7, `okta.assign`.
    Assign,
    /// Step 9's restore PUT, `okta.put_feature`.
    Restore,
}

impl Step {
    const ALL: [Step; 6] = [
        Step::UpnToTemporary,
        Step::SetId,
        Step::Pause,
        Step::Unassign,
        Step::Assign,
        Step::Restore,
    ];

    fn label(self) -> Label {
        match self {
            Step::UpnToTemporary => Label::UpnToTemporary,
            Step::SetId => Label::SetId,
            Step::Pause => Label::Pause,
            Step::Unassign => Label::Unassign,
            Step::Assign => Label::Assign,
            Step::Restore => Label::Resume,
        }
    }

    fn op(self) -> &'static str {
        match self {
            Step::UpnToTemporary | Step::SetId => "graph.update_user",
            Step::Pause | Step::Restore => "okta.put_feature",
            Step::Unassign => "okta.unassign",
            Step::Assign => "okta.assign",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Step::UpnToTemporary => "1 upn→temp",
            Step::SetId => "2 set id",
            Step::Pause => "5 pause",
            Step::Unassign => "6 unassign",
            Step::Assign => "7 assign",
            Step::Restore => "9 restore",
        }
    }

    /// A definitive refusal with the API's real code.
    fn refusal(self) -> (u16, &'static str) {
        match self {
            Step::UpnToTemporary | Step::SetId => (403, "Authorization_RequestDenied"),
            Step::Pause | Step::Assign => (400, "E0000001"),
            Step::Unassign | Step::Restore => (403, "E0000006"),
        }
    }

    fn server_error(self) -> &'static str {
        match self {
            Step::UpnToTemporary | Step::SetId => "Service_InternalError",
            _ => "E0000009",
        }
    }

    fn applies_to(self, user: User) -> bool {
        self != Step::UpnToTemporary || user.federated()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    /// 4xx with a real code: nothing changed.
    Refused,
    /// The write is made, the answer comes after the client gave up (`HoldReply`).
    UnknownApplied,
    /// The write is made, then the service answers 500 (`ApplyThenFail`).
    AppliedThen500,
    /// 500: nothing changed, but the client cannot know.
    UnknownNotApplied,
    /// `Delay` longer than the request timeout: the client gives up before the server serves.
    /// (The sandbox's handler is dropped when the client hangs up, so in practice the delayed
    /// write never lands; the case still waits out the delay before reading the final state.)
    Timeout,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::UnknownApplied,
        Outcome::AppliedThen500,
        Outcome::UnknownNotApplied,
        Outcome::Timeout,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::UnknownApplied => "applied+lost",
            Outcome::AppliedThen500 => "applied+500",
            Outcome::UnknownNotApplied => "500",
            Outcome::Timeout => "timeout",
        }
    }

    fn fault(self, step: Step) -> Option<Fault> {
        let action = match self {
            Outcome::Ok => return None,
            Outcome::Refused => {
                let (status, code) = step.refusal();
                FaultAction::Error {
                    status,
                    code: code.into(),
                    message: "injected refusal".into(),
                }
            }
            Outcome::UnknownApplied => FaultAction::HoldReply(HOLD),
            Outcome::AppliedThen500 => FaultAction::ApplyThenFail {
                status: 500,
                code: step.server_error().into(),
                message: "injected: applied, then a server error".into(),
            },
            Outcome::UnknownNotApplied => FaultAction::Error {
                status: 500,
                code: step.server_error().into(),
                message: "injected server error".into(),
            },
            Outcome::Timeout => FaultAction::Delay(DELAY),
        };
        Some(Fault {
            op: step.op().into(),
            nth: 1,
            times: 1,
            action,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[allow(clippy::enum_variant_names)]
enum User {
    /// adele: federated, no ImmutableID in Entra.
    FederatedNoId,
    /// megan: federated, a (wrong) ImmutableID in Entra.
    FederatedWithId,
    /// alex: managed, a (wrong) ImmutableID in Entra.
    ManagedWithId,
    /// adele moved to the managed domain: no ImmutableID.
    ManagedNoId,
}

impl User {
    const ALL: [User; 4] = [
        User::FederatedNoId,
        User::FederatedWithId,
        User::ManagedWithId,
        User::ManagedNoId,
    ];

    fn upn(self) -> &'static str {
        match self {
            User::FederatedNoId => ADELE,
            User::FederatedWithId => MEGAN,
            User::ManagedWithId => ALEX,
            User::ManagedNoId => MANAGED_NO_ID,
        }
    }

    fn federated(self) -> bool {
        matches!(self, User::FederatedNoId | User::FederatedWithId)
    }

    fn name(self) -> &'static str {
        match self {
            User::FederatedNoId => "fed/no-id (adele)",
            User::FederatedWithId => "fed/id (megan)",
            User::ManagedWithId => "managed/id (alex)",
            User::ManagedNoId => "managed/no-id (adele@fabrikam)",
        }
    }
}

fn point_name(p: Option<CrashPoint>) -> &'static str {
    match p {
        None => "no crash",
        Some(CrashPoint::BeforeCall) => "crash BeforeCall",
        Some(CrashPoint::AfterCall) => "crash AfterCall",
        Some(CrashPoint::AfterOutcome) => "crash AfterOutcome",
    }
}

const POINTS: [Option<CrashPoint>; 4] = [
    None,
    Some(CrashPoint::BeforeCall),
    Some(CrashPoint::AfterCall),
    Some(CrashPoint::AfterOutcome),
];

#[derive(Debug, Clone)]
struct Case {
    user: User,
    /// One or two (step, outcome) pairs, each on its own step.
    faults: Vec<(Step, Outcome)>,
    /// The crash point, at the first send of `step`.
    crash: Option<(Step, CrashPoint)>,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(s, o)| format!("{} {}", s.name(), o.name()))
            .collect();
        write!(f, "{} | {}", self.user.name(), faults.join(" + "))?;
        match self.crash {
            Some((s, p)) => write!(f, " | {} at {}", point_name(Some(p)), s.name()),
            None => write!(f, " | no crash"),
        }
    }
}

// --- the crash-point hook, which also injects the faults -----------------------------------------

struct Hook {
    sb: Arc<Sandbox>,
    /// Faults to inject at their step's first `BeforeCall`, each once.
    inject: Mutex<Vec<(Label, Option<Fault>)>>,
    crash: Option<(Label, CrashPoint)>,
    crashed: AtomicBool,
    signal: Mutex<Option<oneshot::Sender<()>>>,
}

impl CrashPoints for Hook {
    fn freeze(&self, _run: RunId, label: Label, attempt: u32, point: CrashPoint) -> bool {
        if attempt == 0 && point == CrashPoint::BeforeCall {
            let mut pending = self.inject.lock().unwrap();
            for (l, fault) in pending.iter_mut() {
                if *l == label {
                    if let Some(f) = fault.take() {
                        self.sb.inject(f);
                    }
                }
            }
        }
        if attempt == 0
            && self.crash == Some((label, point))
            && !self.crashed.swap(true, Ordering::SeqCst)
        {
            if let Some(tx) = self.signal.lock().unwrap().take() {
                let _ = tx.send(());
            }
            return true;
        }
        false
    }
}

// --- one case ------------------------------------------------------------------------------------

/// What a case came to.
struct Ran {
    case: Case,
    summary: Option<RunSummary>,
    restarted: bool,
    violations: Vec<String>,
    trace: String,
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fixbot-model-{}", uuid::Uuid::new_v4().simple()))
}

/// Moves adele to the managed domain, and her Office 365 username with her.
async fn make_managed_without_id(sb: &Sandbox) {
    let adele = sb.entra_user(ADELE).expect("adele");
    let id = EntraObjectId::parse(&adele.id).expect("object id");
    graph_with(sb, fast_http())
        .update_user(
            &id,
            &UserPatch {
                user_principal_name: Some(MANAGED_NO_ID.into()),
                on_premises_immutable_id: None,
            },
        )
        .await
        .expect("adele moves to the managed domain");
    let okta_id = sb.okta_user_id(ADELE).expect("adele in okta");
    let app = sb.okta_app_user(&okta_id).expect("adele assigned");
    okta_with(sb, fast_http())
        .assign(&AssignAppUser {
            id: okta_id,
            scope: "USER".into(),
            credentials: AppUserCredentials {
                user_name: Some(MANAGED_NO_ID.into()),
            },
            profile: app.profile,
        })
        .await
        .expect("adele's app username follows");
}

/// Opens the store once the previous engine (and its file lock) is gone.
async fn reopen(dir: &Path) -> Store {
    let mut last = None;
    for _ in 0..100 {
        match Store::open(dir) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the store did not reopen after the restart: {last:?}");
}

fn engine_on(sb: &Sandbox, store: Store) -> Engine {
    Engine::new(
        graph_with(sb, http()),
        okta_with(sb, http()),
        store,
        test_policy(),
    )
}

async fn run_case(case: Case) -> Ran {
    let _slot = SLOTS.acquire().await.expect("semaphore open");
    let shown = case.clone();
    match tokio::time::timeout(CASE_DEADLINE, run_case_inner(case)).await {
        Ok(r) => r,
        Err(_) => Ran {
            case: shown,
            summary: None,
            restarted: false,
            violations: vec![format!(
                "the case did not end within {CASE_DEADLINE:?} (hang)"
            )],
            trace: String::new(),
        },
    }
}

async fn run_case_inner(case: Case) -> Ran {
    let mut ran = Ran {
        case: case.clone(),
        summary: None,
        restarted: false,
        violations: Vec::new(),
        trace: String::new(),
    };
    let sb = Arc::new(
        sandbox_with(SandboxOptions {
            ordinary_users: 2,
            ..SandboxOptions::default()
        })
        .await,
    );
    if case.user == User::ManagedNoId {
        make_managed_without_id(&sb).await;
    }
    let dir = temp_dir();
    let (tx, crashed) = oneshot::channel();
    let hook = Arc::new(Hook {
        sb: sb.clone(),
        inject: Mutex::new(
            case.faults
                .iter()
                .map(|(s, o)| (s.label(), o.fault(*s)))
                .collect(),
        ),
        crash: case.crash.map(|(s, p)| (s.label(), p)),
        crashed: AtomicBool::new(false),
        signal: Mutex::new(Some(tx)),
    });
    let engine =
        engine_on(&sb, Store::open(&dir).expect("store opens")).with_crash_points(hook.clone());
    let req = RepairRequest::parse(
        Actor::new("u-alice", "alice"),
        case.user.upn(),
        None,
        Some("model test"),
    )
    .expect("valid request")
    .with_mode(ModeChoice::Full);
    let plan = match engine.plan(&req).await {
        Ok(p) => p,
        Err(e) => {
            ran.violations
                .push(format!("harness: the plan was refused: {e:?}"));
            return ran;
        }
    };
    let caps_before = sb.provisioning_capabilities();
    let entra_before = sb.entra_user(plan.entra_id.as_str()).expect("entra user");
    assert!(engine.mark_approved(plan.run).unwrap());
    let (reporter, mut events) = Reporter::channel();

    let mut task = tokio::spawn({
        let (engine, plan, reporter) = (engine.clone(), plan.clone(), reporter.clone());
        async move { engine.execute(&plan, &reporter).await }
    });
    let live = tokio::select! {
        done = &mut task => Some(done),
        Ok(()) = crashed => None,
    };
    let engine = match live {
        Some(done) => {
            match done {
                Ok(s) => ran.summary = Some(s),
                Err(e) => ran.violations.push(format!("the run panicked: {e}")),
            }
            engine
        }
        None => {
            // The process dies here: the run's task is gone, and with it every clone of the
            // engine and its store.
            task.abort();
            let _ = task.await;
            drop(engine);
            ran.restarted = true;
            let engine = engine_on(&sb, reopen(&dir).await);
            match engine.recover(|_| reporter.clone()).await {
                Ok(all) => match all.into_iter().find(|s| s.run == plan.run) {
                    Some(s) => ran.summary = Some(s),
                    None => ran
                        .violations
                        .push("recovery did not settle the run".into()),
                },
                Err(e) => ran.violations.push(format!("recovery failed: {e:#}")),
            }
            engine
        }
    };
    if case.crash.is_some() && !hook.crashed.load(Ordering::SeqCst) && case.faults.len() == 1 {
        ran.violations
            .push("harness: the crash point was never reached".into());
    }
    drop(reporter);
    let mut trace = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            RunEvent::Step(r) => trace.push(format!(
                "{}{}:{}",
                r.step.number(),
                match r.phase {
                    o365_fixbot::pipeline::Phase::Forward => "",
                    o365_fixbot::pipeline::Phase::Compensation => "c",
                    o365_fixbot::pipeline::Phase::RollForward => "f",
                },
                r.outcome.label()
            )),
            RunEvent::Note { .. } => trace.push("RESTART".into()),
            _ => {}
        }
    }
    ran.trace = trace.join(" ");
    if case.faults.iter().any(|(_, o)| *o == Outcome::Timeout) {
        // A delayed request is served (if at all) after the client gave up: let it land before
        // the final state is read, so a late write cannot slip past the checks.
        tokio::time::sleep(DELAY - REQUEST_TIMEOUT + Duration::from_millis(200)).await;
    }
    if std::env::var_os("ENGINE_MODEL_CALLS").is_some() {
        let ops: Vec<String> = sb
            .calls()
            .iter()
            .filter(|c| case.faults.iter().any(|(s, _)| s.op() == c.op))
            .map(|c| format!("{}@{}ms={}", c.op, c.at_ms, c.status))
            .collect();
        ran.trace.push_str(&format!(" | calls {}", ops.join(" ")));
    }
    if let Some(s) = ran.summary.clone() {
        check(
            &mut ran,
            &sb,
            &engine,
            &plan,
            &s,
            &caps_before,
            &entra_before,
        );
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    ran
}

/// The invariants, and the summary's claims against the final state.
fn check(
    ran: &mut Ran,
    sb: &Sandbox,
    engine: &Engine,
    plan: &Plan,
    s: &RunSummary,
    caps_before: &serde_json::Value,
    entra_before: &o365_fixbot::directory::graph::EntraUser,
) {
    let v = &mut ran.violations;
    let msg = &s.message;
    let attention = s.outcome == RunOutcome::NeedsAttention;
    let user = sb
        .entra_user(plan.entra_id.as_str())
        .expect("entra user by object id");

    // The user's UPN.
    let on_original = user
        .user_principal_name
        .eq_ignore_ascii_case(plan.upn.as_str());
    let upn_said =
        attention && msg.contains(&user.user_principal_name) && msg.contains("PATCH /users/");
    if !on_original && !upn_said {
        v.push(format!(
            "UPN: user left on {} and the summary does not name it with the PATCH to send",
            user.user_principal_name
        ));
    }

    // Provisioning.
    let caps_now = sb.provisioning_capabilities();
    let still_paused_said =
        attention && msg.contains("STILL PAUSED") && msg.contains("PUT /api/v1/apps/");
    if caps_now != *caps_before && !still_paused_said {
        v.push(format!(
            "provisioning: not restored byte for byte (now {caps_now}), and the summary does not say STILL PAUSED with the PUT"
        ));
    }
    let stored_pause = engine.store().pause(APP_ID).unwrap();
    if stored_pause.is_some() && !still_paused_said {
        v.push(format!(
            "provisioning: a pause is left in the store (holders {:?})",
            stored_pause.map(|p| p.holders).unwrap_or_default()
        ));
    }
    if !sb.deprovisions().is_empty() {
        v.push(format!(
            "deprovisioned in Office 365: {:?}",
            sb.deprovisions()
        ));
    }
    let unassigns = sb
        .calls()
        .iter()
        .filter(|c| c.op == "okta.unassign" && (200..300).contains(&c.status))
        .count();
    if unassigns > 1 {
        v.push(format!("unassign executed {unassigns} times"));
    }

    // Okta's assignment.
    let app = sb.okta_app_user(plan.okta_user_id.as_str());
    if app.is_none() && !(msg.contains("UNASSIGNED") && msg.contains("POST /api/v1/apps/")) {
        v.push("Okta: user left unassigned, and the summary does not say so with the assignment to send".into());
    }

    // ImmutableIDs, and what the summary claims about them.
    let entra_id = user.on_premises_immutable_id.clone();
    let okta_id = app
        .as_ref()
        .and_then(|a| a.immutable_id().map(str::to_owned));
    if entra_id != okta_id {
        for val in [&entra_id, &okta_id].into_iter().flatten() {
            if !msg.contains(val.as_str()) {
                v.push(format!(
                    "ids: Entra {entra_id:?} ≠ Okta {okta_id:?}, and the summary does not name {val}"
                ));
            }
        }
    }
    if s.entra_immutable_id != entra_id {
        v.push(format!(
            "summary.entra_immutable_id {:?} but Entra holds {entra_id:?}",
            s.entra_immutable_id
        ));
    }
    if s.okta_immutable_id != okta_id {
        v.push(format!(
            "summary.okta_immutable_id {:?} but Okta holds {okta_id:?}{}",
            s.okta_immutable_id,
            if app.is_none() { " (unassigned)" } else { "" }
        ));
    }

    // What each outcome promises.
    match s.outcome {
        RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward => {
            if entra_id.is_none()
                || entra_id != okta_id
                || entra_id == plan.entra_immutable_id_before
            {
                v.push(format!(
                    "{:?} but Entra {entra_id:?} / Okta {okta_id:?} (before {:?})",
                    s.outcome, plan.entra_immutable_id_before
                ));
            }
            if s.provisioning != ProvisioningState::Restored || caps_now != *caps_before {
                v.push(format!(
                    "{:?} but provisioning {:?}",
                    s.outcome, s.provisioning
                ));
            }
            if !on_original {
                v.push(format!("{:?} but not on the original UPN", s.outcome));
            }
        }
        RunOutcome::RolledBack
            if entra_id != entra_before.on_premises_immutable_id || !on_original =>
        {
            v.push(format!(
                "RolledBack but Entra is {} / {entra_id:?}, was {} / {:?}",
                user.user_principal_name,
                entra_before.user_principal_name,
                entra_before.on_premises_immutable_id
            ));
        }
        RunOutcome::NotExecuted | RunOutcome::Stale => {
            v.push(format!("unexpected outcome {:?}", s.outcome));
        }
        _ => {}
    }

    // The journal and the run's state.
    let run = plan.run.to_string();
    let journal = engine.store().journal(&run).unwrap();
    let open: Vec<String> = journal
        .iter()
        .filter(|j| j.outcome.is_none())
        .map(|j| format!("{}:{}", j.step, j.api))
        .collect();
    if !open.is_empty() {
        v.push(format!("journal rows without an outcome: {open:?}"));
    }
    match engine.store().run(&run).unwrap() {
        Some(r) if r.state.is_final() => {}
        Some(r) => v.push(format!("run state {:?} is not final", r.state)),
        None => v.push("run not in the store".into()),
    }
}

// --- running many ----------------------------------------------------------------------------------

async fn run_all(cases: Vec<Case>) -> (Vec<Ran>, Duration) {
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in cases.into_iter().enumerate() {
        set.spawn(async move { (i, run_case(c).await) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("a case task panicked"));
    }
    out.sort_by_key(|(i, _)| *i);
    (out.into_iter().map(|(_, r)| r).collect(), t0.elapsed())
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Prints the tally, and fails with every failing case: what was violated, and the summary.
fn report(what: &str, ran: &[Ran], took: Duration) {
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for r in ran {
        let k = match &r.summary {
            Some(s) => format!("{:?}", s.outcome),
            None => "<no summary>".into(),
        };
        *outcomes.entry(k).or_default() += 1;
    }
    let restarts = ran.iter().filter(|r| r.restarted).count();
    let failed: Vec<&Ran> = ran.iter().filter(|r| !r.violations.is_empty()).collect();
    println!(
        "{what}: {} cases ({restarts} with a restart) in {:.1} s; outcomes {outcomes:?}; {} failing",
        ran.len(),
        took.as_secs_f64(),
        failed.len()
    );
    if std::env::var_os("ENGINE_MODEL_SHOW").is_some() {
        for r in ran {
            let (o, m) = match &r.summary {
                Some(s) => (format!("{:?}", s.outcome), s.message.clone()),
                None => ("-".into(), "-".into()),
            };
            println!("{} => {o} [{}] {}", r.case, r.trace, short(&m, 300));
        }
    }
    if failed.is_empty() {
        return;
    }
    let mut table = String::new();
    for r in &failed {
        let (outcome, message) = match &r.summary {
            Some(s) => (format!("{:?}", s.outcome), s.message.clone()),
            None => ("-".into(), "-".into()),
        };
        table.push_str(&format!(
            "\n* {}\n    violated: {}\n    summary: {outcome}: {}\n    steps: {}\n",
            r.case,
            r.violations.join("; "),
            short(&message, 700),
            r.trace
        ));
    }
    println!("{what}: failing cases:{table}");
    panic!(
        "{what}: {} of {} cases failed:{table}",
        failed.len(),
        ran.len()
    );
}

/// Every (step, outcome, crash point of that step, user) the model admits.
fn single_fault_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for user in User::ALL {
        for step in Step::ALL {
            if !step.applies_to(user) {
                continue;
            }
            for outcome in Outcome::ALL {
                for point in POINTS {
                    cases.push(Case {
                        user,
                        faults: vec![(step, outcome)],
                        crash: point.map(|p| (step, p)),
                    });
                }
            }
        }
    }
    cases
}

/// A small deterministic generator (xorshift), so the sample is the same on every run.
struct Picker(u64);

impl Picker {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Two faults (neither `ok`) on two different steps, and a crash point at the later one (or none).
fn two_fault_cases(n: usize) -> Vec<Case> {
    let mut p = Picker(0x005e_ed1d_0fc0_ffee);
    let bad = [
        Outcome::Refused,
        Outcome::UnknownApplied,
        Outcome::AppliedThen500,
        Outcome::UnknownNotApplied,
        Outcome::Timeout,
    ];
    let mut cases: Vec<Case> = Vec::new();
    while cases.len() < n {
        let user = User::ALL[p.next(User::ALL.len())];
        let steps: Vec<Step> = Step::ALL
            .into_iter()
            .filter(|s| s.applies_to(user))
            .collect();
        let a = steps[p.next(steps.len())];
        let b = steps[p.next(steps.len())];
        if a == b {
            continue;
        }
        let (first, second) = if a < b { (a, b) } else { (b, a) };
        let faults = vec![
            (first, bad[p.next(bad.len())]),
            (second, bad[p.next(bad.len())]),
        ];
        let crash = POINTS[p.next(POINTS.len())].map(|pt| (second, pt));
        let case = Case {
            user,
            faults,
            crash,
        };
        if cases
            .iter()
            .any(|c| c.user == case.user && c.faults == case.faults && c.crash == case.crash)
        {
            continue;
        }
        cases.push(case);
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_outcome_and_crash_point_ends_safe_and_the_summary_matches() {
    let cases = single_fault_cases();
    let (ran, took) = run_all(cases).await;
    report("single faults", &ran, took);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_faults_in_one_run_end_safe_and_the_summary_matches() {
    let cases = two_fault_cases(30);
    let (ran, took) = run_all(cases).await;
    report("two faults", &ran, took);
}
