//! The one interpreter: asks [`decide`] what to do next, carries it out with the journal around
//! every write, and repeats until both lanes are done — the same loop for a live run and for a
//! run read back from its journal after a restart.

use super::capabilities::{deactivate_enabled, describe};
use super::decide::{decide, Action, EntraEnd, Move, OktaDone, Op, Record, Shape};
use super::journal::ApiFailure;
use super::outcome::{classify, Verdict, OKTA_NOT_FOUND};
use super::pause::{Left, PauseError};
use super::plan::{Plan, RepairMode};
use super::report::{Phase, RunEvent, StepKind, StepOutcome, StepReport};
use super::steps::{Label, Lane};
use super::summary::FinalReads;
use super::Inner;
use crate::directory::okta::{AppUserCredentials, AssignAppUser};
use crate::directory::Reply;
use crate::domain::{ImmutableId, RunId};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a test may freeze a run, as a killed process would stop there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The intent is durable; the call is not made.
    BeforeCall,
    /// The call was answered; its outcome is not journalled.
    AfterCall,
    /// The outcome is journalled.
    AfterOutcome,
}

/// A hook for crash tests: returning `true` freezes the run at that point forever (the test then
/// drops it, as `SIGKILL` would). Production engines have none.
pub trait CrashPoints: Send + Sync {
    fn freeze(&self, run: RunId, label: Label, attempt: u32, point: CrashPoint) -> bool;
}

/// Receives every event of every run (metrics, logs), beside the run's own reporter.
pub trait RunObserver: Send + Sync {
    fn event(&self, event: &RunEvent);
}

/// Sends a run's events to its reporter and to the engine's observers.
pub(crate) struct Emitter<'a> {
    pub(crate) reporter: &'a super::Reporter,
    pub(crate) observers: &'a [Arc<dyn RunObserver>],
}

impl Emitter<'_> {
    pub(crate) fn send(&self, event: RunEvent) {
        for o in self.observers {
            o.event(&event);
        }
        self.reporter.send(event);
    }
}

/// What one action produced: its record, and what the thread is told.
struct Done {
    lane: Lane,
    record: Record,
    reports: Vec<StepReport>,
}

type Pending<'a> = Pin<Box<dyn Future<Output = Done> + Send + 'a>>;

/// Carries out actions for one run.
pub(crate) struct Exec<'a> {
    pub(crate) ctx: &'a Inner,
    pub(crate) plan: &'a Plan,
    pub(crate) emit: &'a Emitter<'a>,
    /// Steps the thread has heard about, so the rest can be told as skipped at the end.
    pub(crate) reported: std::sync::Mutex<HashSet<StepKind>>,
}

/// The plan's shape, as the decisions need it.
pub(crate) fn shape_of(plan: &Plan, budget: u32) -> Shape {
    Shape {
        upn: plan.upn.to_string(),
        temporary_upn: plan.temporary_upn.as_ref().map(ToString::to_string),
        id_before: plan.entra_immutable_id_before.clone(),
        planned_id: plan.new_immutable_id.to_string(),
        okta_id_before: plan.okta_immutable_id_before().map(str::to_owned),
        full: plan.mode == RepairMode::Full,
        budget: budget.max(1),
    }
}

/// Runs both lanes from wherever the journal stands until each is done.
pub(crate) async fn drive(
    exec: &Exec<'_>,
    shape: &Shape,
    records: &mut Vec<Record>,
) -> anyhow::Result<(EntraEnd, OktaDone)> {
    let mut entra: Option<Pending<'_>> = None;
    let mut okta: Option<Pending<'_>> = None;
    let mut entra_end = None;
    let mut okta_end = None;
    // Each pass completes at least one action; every action is bounded by the table's budget,
    // so this bound is only a guard against a decision that never ends.
    for _ in 0..500 {
        let d = decide(shape, records);
        if entra.is_none() {
            match d.entra {
                Move::Do(a) => entra = Some(Box::pin(exec.act(shape, a, records.clone()))),
                Move::Done(e) => entra_end = Some(e),
                Move::Wait => {}
            }
        }
        if okta.is_none() {
            match d.okta {
                Move::Do(a) => okta = Some(Box::pin(exec.act(shape, a, records.clone()))),
                Move::Done(o) => okta_end = Some(o),
                Move::Wait => {}
            }
        }
        if entra.is_none() && okta.is_none() {
            return match (entra_end, okta_end) {
                (Some(e), Some(o)) => Ok((e, o)),
                _ => Err(anyhow::anyhow!(
                    "the step table left both lanes waiting for each other"
                )),
            };
        }
        let done = tokio::select! {
            d = async { entra.as_mut().expect("checked").await }, if entra.is_some() => { entra = None; d }
            d = async { okta.as_mut().expect("checked").await }, if okta.is_some() => { okta = None; d }
        };
        debug_assert_ne!(done.lane, Lane::None);
        for r in done.reports {
            exec.report(r);
        }
        records.push(done.record);
    }
    Err(anyhow::anyhow!("the run did not end within 500 actions"))
}

impl<'a> Exec<'a> {
    fn run(&self) -> RunId {
        self.plan.run
    }

    fn report(&self, r: StepReport) {
        let _span = tracing::info_span!("step", step = r.step.number()).entered();
        tracing::info!(
            run = %r.run,
            step = r.step.number(),
            target = %self.plan.upn,
            phase = ?r.phase,
            outcome = r.outcome.label(),
            duration_ms = r.duration.as_millis() as u64,
            "step"
        );
        if let Ok(mut seen) = self.reported.lock() {
            seen.insert(r.step);
        }
        self.emit.send(RunEvent::Step(r));
    }

    fn freeze_at(&self, label: Label, attempt: u32, point: CrashPoint) -> bool {
        self.ctx
            .crash
            .as_ref()
            .is_some_and(|c| c.freeze(self.run(), label, attempt, point))
    }

    async fn maybe_freeze(&self, label: Label, attempt: u32, point: CrashPoint) {
        if self.freeze_at(label, attempt, point) {
            std::future::pending::<()>().await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step_report(
        &self,
        step: StepKind,
        phase: Phase,
        outcome: StepOutcome,
        before: String,
        after: String,
        t0: Instant,
        request_ids: Vec<String>,
    ) -> StepReport {
        StepReport {
            run: self.run(),
            step,
            phase,
            outcome,
            before,
            after,
            duration: t0.elapsed(),
            request_ids,
        }
    }

    /// Carries out one action, in a `step` span. `seen` is the journal as it stood when the
    /// action was decided.
    async fn act(&self, shape: &Shape, a: Action, seen: Vec<Record>) -> Done {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "step",
            step = a.label.step().map(StepKind::number).unwrap_or(0),
            label = a.label.code(),
            attempt = a.attempt
        );
        self.act_in_span(shape, a, seen).instrument(span).await
    }

    async fn act_in_span(&self, shape: &Shape, a: Action, seen: Vec<Record>) -> Done {
        let lane = a.label.lane();
        if a.attempt > 0 {
            let backoff = self.ctx.policy.compensation_backoff;
            let wait = backoff
                .saturating_mul(1 << (a.attempt - 1).min(6))
                .min(Duration::from_secs(30));
            tokio::time::sleep(wait).await;
        }
        let t0 = Instant::now();
        let (record, reports) = match a.op.clone() {
            Op::Patch(patch) => self.patch(shape, &a, patch, &seen, t0).await,
            Op::VerifyEntra { want } => self.verify_entra(shape, &a, &want, t0).await,
            Op::Pause => self.pause(&a, t0).await,
            Op::CheckDeactivate => self.check_deactivate(&a, t0).await,
            Op::Unassign => self.unassign(&a, t0).await,
            Op::Assign { immutable_id } => self.assign(shape, &a, immutable_id, t0).await,
            Op::VerifyOkta { want } => self.verify_okta(&a, &want, t0).await,
            Op::Resume => self.resume(&a, t0).await,
            Op::DrawId { current } => self.draw(&a, &current, t0).await,
        };
        Done {
            lane,
            record,
            reports,
        }
    }

    /// A journalled write: intent durable first, then the call, then its verdict and result.
    #[allow(clippy::too_many_arguments)]
    async fn write<T, F, Fut>(
        &self,
        a: &Action,
        object: &str,
        before: &Value,
        intended: &Value,
        call: F,
        result_of: impl FnOnce(&T) -> Value,
        ok_codes: &[(u16, &str)],
    ) -> (Record, Result<Option<String>, ApiFailure>)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Reply<T>, ApiFailure>>,
    {
        let spec = a.label.spec();
        let run = self.run().to_string();
        let mut record = Record::new(a.label, Verdict::Refused);
        record.intended = intended.clone();
        let entry = match self
            .ctx
            .store
            .journal_intent(&run, spec.code, spec.api, object, before, intended)
        {
            Ok(e) => e,
            Err(e) => {
                // Not durable, so not sent: nothing changed.
                record.code = Some("JournalUnavailable".into());
                return (
                    record,
                    Err(ApiFailure::internal(format!(
                        "the journal could not record the intent, so the call was not made: {e:#}"
                    ))),
                );
            }
        };
        self.maybe_freeze(a.label, a.attempt, CrashPoint::BeforeCall)
            .await;
        let answer = call().await;
        self.maybe_freeze(a.label, a.attempt, CrashPoint::AfterCall)
            .await;
        let (verdict, code, rid, result) = match &answer {
            Ok(reply) => (
                Verdict::Ok,
                None,
                reply.request_id.clone(),
                result_of(&reply.value),
            ),
            Err(f) => {
                let ok = ok_codes
                    .iter()
                    .any(|(s, c)| f.status == Some(*s) && f.code.as_deref() == Some(*c));
                let v = if ok {
                    Verdict::Ok
                } else {
                    classify(f.status, f.code.as_deref())
                };
                (v, f.code.clone(), f.request_id.clone(), Value::Null)
            }
        };
        if let Err(e) = self.ctx.store.journal_verdict(
            entry,
            verdict_name(verdict),
            code.as_deref(),
            rid.as_deref(),
            &result,
        ) {
            // The outcome stays unrecorded: a restart reads it as unknown and re-sends, which
            // every write here allows.
            tracing::error!(error = %format!("{e:#}"), entry, "journal outcome not recorded");
        }
        self.maybe_freeze(a.label, a.attempt, CrashPoint::AfterOutcome)
            .await;
        record.verdict = verdict;
        record.code = code;
        record.result = result;
        let answer = match answer {
            Ok(r) => Ok(r.request_id),
            Err(f) if verdict == Verdict::Ok => Ok(f.request_id),
            Err(f) => Err(f),
        };
        (record, answer)
    }

    /// Records a read; a read that was never recorded is simply made again.
    fn check(
        &self,
        a: &Action,
        object: &str,
        verdict: Verdict,
        code: Option<&str>,
        rid: Option<&str>,
        result: Value,
    ) -> Record {
        let spec = a.label.spec();
        if let Err(e) = self.ctx.store.journal_check(
            &self.run().to_string(),
            spec.code,
            spec.api,
            object,
            verdict_name(verdict),
            code,
            rid,
            &result,
        ) {
            tracing::warn!(error = %format!("{e:#}"), "check not journalled");
        }
        let mut r = Record::new(a.label, verdict);
        r.code = code.map(str::to_owned);
        r.result = result;
        r
    }

    async fn patch(
        &self,
        shape: &Shape,
        a: &Action,
        patch: crate::directory::graph::UserPatch,
        seen: &[Record],
        t0: Instant,
    ) -> (Record, Vec<StepReport>) {
        let intended = serde_json::to_value(&patch).unwrap_or_default();
        let before = json!({
            "userPrincipalName": match a.label {
                Label::UpnToTemporary => shape.upn.clone(),
                _ => shape.temporary_upn.clone().unwrap_or_else(|| shape.upn.clone()),
            },
            "onPremisesImmutableId": shape.id_before,
        });
        let entra_id = self.plan.entra_id.clone();
        let (record, answer) = self
            .write(
                a,
                entra_id.as_str(),
                &before,
                &intended,
                || async {
                    self.ctx
                        .graph
                        .update_user(&entra_id, &patch)
                        .await
                        .map_err(|e| ApiFailure::from_graph(&e))
                },
                |_| Value::Null,
                &[],
            )
            .await;
        let rids: Vec<String> = match &answer {
            Ok(r) => r.iter().cloned().collect(),
            Err(f) => f.request_id.iter().cloned().collect(),
        };
        // A re-send after an unknown outcome, or a fresh value, completes the step forward.
        let phase = match a.label {
            Label::UndoEntra => Phase::Compensation,
            _ if a.attempt > 0 => Phase::RollForward,
            Label::SetId if seen.iter().any(|r| r.label == Label::DrawId) => Phase::RollForward,
            _ => Phase::Forward,
        };
        let outcome = outcome_of(&record, &answer);
        let upn = patch.user_principal_name.clone();
        let id = patch.on_premises_immutable_id.clone();
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "<none>".into());
        let mut reports = Vec::new();
        match a.label {
            Label::UpnToTemporary => reports.push(self.step_report(
                StepKind::UpnToTemporary,
                phase,
                outcome,
                shape.upn.clone(),
                show(&upn),
                t0,
                rids,
            )),
            Label::SetId => {
                reports.push(self.step_report(
                    StepKind::SetImmutableId,
                    phase,
                    outcome.clone(),
                    show(&shape.id_before),
                    show(&id),
                    t0,
                    rids.clone(),
                ));
                if let Some(back) = upn {
                    reports.push(self.step_report(
                        StepKind::UpnBack,
                        phase,
                        outcome,
                        show(&shape.temporary_upn),
                        format!("{back} (in the same PATCH as the ImmutableID)"),
                        t0,
                        rids,
                    ));
                }
            }
            _ => reports.push(self.step_report(
                StepKind::SetImmutableId,
                phase,
                outcome,
                "this run's changes".into(),
                format!(
                    "{} / {}",
                    upn.unwrap_or_else(|| "UPN unchanged".into()),
                    id.map(|i| format!("ImmutableID {i}"))
                        .unwrap_or_else(|| "ImmutableID untouched".into())
                ),
                t0,
                rids,
            )),
        }
        (record, reports)
    }

    async fn verify_entra(
        &self,
        shape: &Shape,
        a: &Action,
        want: &str,
        t0: Instant,
    ) -> (Record, Vec<StepReport>) {
        let policy = &self.ctx.policy;
        let mut seen = String::from("<not read>");
        let mut rids = Vec::new();
        let mut result = json!({"lagging": true, "seen": Value::Null});
        for attempt in 1..=policy.verify_attempts.max(1) {
            if let Ok(r) = self.ctx.graph.user_by_id(&self.plan.entra_id).await {
                rids.extend(r.request_id);
                if let Some(u) = r.value {
                    let id = u.on_premises_immutable_id.clone();
                    seen = format!(
                        "{} / {}",
                        u.user_principal_name,
                        id.as_deref().unwrap_or("<none>")
                    );
                    let upn_ok = u.user_principal_name.eq_ignore_ascii_case(&shape.upn);
                    if id.as_deref() == Some(want) && upn_ok {
                        result = json!({"seen": id, "lagging": false});
                        break;
                    }
                    let known = id == shape.id_before || id.as_deref() == Some(want);
                    if !known {
                        result = json!({"seen": id, "unexpected": true});
                        break;
                    }
                    result = json!({"seen": id, "lagging": true});
                }
            }
            if attempt < policy.verify_attempts {
                tokio::time::sleep(policy.verify_interval).await;
            }
        }
        let rec = self.check(
            a,
            self.plan.entra_id.as_str(),
            Verdict::Ok,
            None,
            None,
            result.clone(),
        );
        let outcome = if result.get("unexpected").is_some() {
            StepOutcome::Failed {
                code: None,
                message: format!("Entra shows {seen}, which this run did not write"),
            }
        } else if result.get("lagging") == Some(&Value::Bool(true)) {
            StepOutcome::Lagging(format!(
                "Entra reads still show {seen} after {} reads (replication lag)",
                policy.verify_attempts
            ))
        } else {
            StepOutcome::Done
        };
        let report = self.step_report(
            StepKind::VerifyEntra,
            Phase::Forward,
            outcome,
            seen,
            format!("{} / {want}", shape.upn),
            t0,
            rids,
        );
        (rec, vec![report])
    }

    async fn pause(&self, a: &Action, t0: Instant) -> (Record, Vec<StepReport>) {
        let app = self.ctx.okta.app_id().to_owned();
        let joined: std::sync::Mutex<Option<Result<super::pause::Joined, PauseError>>> =
            std::sync::Mutex::new(None);
        let (mut record, answer) = self
            .write(
                a,
                &app,
                &Value::Null,
                &json!("paused"),
                || async {
                    let r = self.ctx.pause.join(self.run()).await;
                    let out = match &r {
                        Ok(_) => Ok(Reply {
                            value: (),
                            request_id: None,
                        }),
                        Err(e) => Err(pause_failure(e)),
                    };
                    *joined.lock().expect("not poisoned") = Some(r);
                    out
                },
                |_| Value::Null,
                &[],
            )
            .await;
        let joined = joined.into_inner().expect("not poisoned");
        let (outcome, before, after) = match (&joined, &answer) {
            (Some(Ok(j)), _) => {
                record.result = json!({"first": j.first, "snapshot": j.snapshot});
                let after = if j.first {
                    format!("paused ({} → all off)", describe(&j.snapshot))
                } else {
                    "joined the provisioning pause already in place".to_owned()
                };
                (StepOutcome::Done, describe(&j.snapshot), after)
            }
            (_, Err(f)) => (
                failed(f),
                describe(&self.plan.provisioning_before),
                "not paused".into(),
            ),
            _ => (StepOutcome::Done, String::new(), "paused".into()),
        };
        // A join that failed left no holder behind: the manager cleans up its own window.
        if record.verdict == Verdict::Unknown {
            record.verdict = Verdict::Refused;
        }
        let report = self.step_report(
            StepKind::PauseProvisioning,
            Phase::Forward,
            outcome,
            before,
            after,
            t0,
            vec![],
        );
        (record, vec![report])
    }

    async fn check_deactivate(&self, a: &Action, t0: Instant) -> (Record, Vec<StepReport>) {
        let app = self.ctx.okta.app_id().to_owned();
        match self.ctx.okta.provisioning().await {
            Ok(r) => {
                let on = deactivate_enabled(&r.value.capabilities);
                let rec = self.check(
                    a,
                    &app,
                    Verdict::Ok,
                    None,
                    r.request_id.as_deref(),
                    json!({"deactivate": on}),
                );
                let reports = if on {
                    vec![self.step_report(
                        StepKind::Unassign,
                        Phase::Forward,
                        StepOutcome::Failed {
                            code: Some("DeactivateEnabled".into()),
                            message: "Deactivate was switched back on in Okta during the run; unassigning now would deprovision the user in Office 365, so the unassign was not sent".into(),
                        },
                        "assigned".into(),
                        "assigned (unchanged)".into(),
                        t0,
                        r.request_id.into_iter().collect(),
                    )]
                } else {
                    vec![]
                };
                (rec, reports)
            }
            Err(e) => {
                let f = ApiFailure::from_okta(&e);
                let rec = self.check(
                    a,
                    &app,
                    Verdict::Unknown,
                    f.code.as_deref(),
                    f.request_id.as_deref(),
                    Value::Null,
                );
                let report = self.step_report(
                    StepKind::Unassign,
                    Phase::Forward,
                    StepOutcome::Failed {
                        code: f.code.clone(),
                        message: format!("could not re-check Deactivate before unassigning ({f}); the unassign was not sent"),
                    },
                    "assigned".into(),
                    "assigned (unchanged)".into(),
                    t0,
                    f.request_id.into_iter().collect(),
                );
                (rec, vec![report])
            }
        }
    }

    async fn unassign(&self, a: &Action, t0: Instant) -> (Record, Vec<StepReport>) {
        let plan = self.plan;
        let profile = serde_json::to_value(&plan.app_user_before).unwrap_or_default();
        if let Err(e) = self.ctx.store.save_app_profile(
            &plan.run.to_string(),
            plan.okta_user_id.as_str(),
            &profile,
        ) {
            let mut rec = Record::new(a.label, Verdict::Refused);
            rec.code = Some("ProfileNotSaved".into());
            let report = self.step_report(
                StepKind::Unassign,
                Phase::Forward,
                StepOutcome::Failed {
                    code: rec.code.clone(),
                    message: format!("could not save the app profile first ({e:#}), so the user was not unassigned"),
                },
                "assigned".into(),
                "assigned (unchanged)".into(),
                t0,
                vec![],
            );
            return (rec, vec![report]);
        }
        let (record, answer) = self
            .write(
                a,
                plan.okta_user_id.as_str(),
                &profile,
                &Value::Null,
                || async {
                    self.ctx
                        .okta
                        .unassign(&plan.okta_user_id)
                        .await
                        .map_err(|e| ApiFailure::from_okta(&e))
                },
                |_| Value::Null,
                &[(404, OKTA_NOT_FOUND)],
            )
            .await;
        let after = match record.verdict {
            Verdict::Ok => "unassigned (sendEmail=false; profile saved)",
            Verdict::Refused => "assigned (unchanged)",
            Verdict::Unknown => "unknown: may be unassigned, so the reassign is mandatory",
        };
        let rids = request_ids(&answer);
        let report = self.step_report(
            StepKind::Unassign,
            if a.attempt > 0 {
                Phase::RollForward
            } else {
                Phase::Forward
            },
            outcome_of(&record, &answer),
            "assigned".into(),
            after.into(),
            t0,
            rids,
        );
        (record, vec![report])
    }

    fn assign_body(&self, immutable_id: Option<String>) -> AssignAppUser {
        let plan = self.plan;
        let mut profile = plan.app_user_before.profile.clone();
        // Mapped properties are filled by Okta; sending them fails the assignment.
        profile.retain(|k, _| !plan.mapped_properties.iter().any(|m| m == k));
        match immutable_id {
            Some(id) => {
                profile.insert("immutableId".into(), Value::String(id));
            }
            None => {
                if let Some(old) = plan.okta_immutable_id_before() {
                    if !plan.mapped_properties.iter().any(|m| m == "immutableId") {
                        profile.insert("immutableId".into(), Value::String(old.to_owned()));
                    }
                }
            }
        }
        AssignAppUser {
            id: plan.okta_user_id.to_string(),
            scope: "USER".into(),
            credentials: AppUserCredentials {
                user_name: Some(
                    plan.app_user_before
                        .user_name()
                        .map(str::to_owned)
                        .unwrap_or_else(|| plan.upn.to_string()),
                ),
            },
            profile,
        }
    }

    async fn assign(
        &self,
        shape: &Shape,
        a: &Action,
        immutable_id: Option<String>,
        t0: Instant,
    ) -> (Record, Vec<StepReport>) {
        let body = self.assign_body(immutable_id.clone());
        let intended = serde_json::to_value(&body).unwrap_or_default();
        let (record, answer) = self
            .write(
                a,
                self.plan.okta_user_id.as_str(),
                &Value::Null,
                &intended,
                || async {
                    self.ctx
                        .okta
                        .assign(&body)
                        .await
                        .map_err(|e| ApiFailure::from_okta(&e))
                },
                |u: &crate::directory::okta::AppUser| json!({"immutableId": u.immutable_id()}),
                &[],
            )
            .await;
        let sent = body
            .profile
            .get("immutableId")
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_owned();
        let phase = match a.label {
            Label::AssignSaved => Phase::Compensation,
            _ if a.attempt > 0 => Phase::RollForward,
            _ => Phase::Forward,
        };
        let rids = request_ids(&answer);
        let after = match record.verdict {
            Verdict::Ok => format!("assigned, ImmutableID {sent} (licenses and roles kept)"),
            _ => format!("not assigned with ImmutableID {sent}"),
        };
        let mut reports = vec![self.step_report(
            StepKind::Reassign,
            phase,
            outcome_of(&record, &answer),
            "unassigned".into(),
            after,
            t0,
            rids.clone(),
        )];
        // The assign answers with the app user: when it shows the value, that is step 8's read.
        let seen = record.result.get("immutableId").and_then(Value::as_str);
        if a.label == Label::Assign && record.verdict == Verdict::Ok && seen == Some(sent.as_str())
        {
            let _ = shape;
            reports.push(
                self.step_report(
                    StepKind::VerifyOkta,
                    Phase::Forward,
                    StepOutcome::Done,
                    shape
                        .okta_id_before
                        .clone()
                        .unwrap_or_else(|| "<none>".into()),
                    format!("{sent} (as Okta's answer to the assign shows)"),
                    t0,
                    rids,
                ),
            );
        }
        (record, reports)
    }

    async fn verify_okta(&self, a: &Action, want: &str, t0: Instant) -> (Record, Vec<StepReport>) {
        let policy = &self.ctx.policy;
        let mut seen: Option<String> = None;
        let mut rids = Vec::new();
        let mut read = false;
        for attempt in 1..=policy.verify_attempts.max(1) {
            if let Ok(r) = self.ctx.okta.app_user(&self.plan.okta_user_id).await {
                read = true;
                rids.extend(r.request_id);
                seen = r
                    .value
                    .as_ref()
                    .and_then(|u| u.immutable_id().map(str::to_owned));
                if seen.as_deref() == Some(want) {
                    break;
                }
            }
            if attempt < policy.verify_attempts {
                tokio::time::sleep(policy.verify_interval).await;
            }
        }
        let verdict = if read { Verdict::Ok } else { Verdict::Unknown };
        let rec = self.check(
            a,
            self.plan.okta_user_id.as_str(),
            verdict,
            None,
            None,
            json!({"immutableId": seen}),
        );
        let shown = seen.clone().unwrap_or_else(|| "<none>".into());
        let outcome = if seen.as_deref() == Some(want) {
            StepOutcome::Done
        } else {
            StepOutcome::Failed {
                code: None,
                message: format!("Okta holds {shown}, not the value assigned (a profile mapping may override it)"),
            }
        };
        let report = self.step_report(
            StepKind::VerifyOkta,
            Phase::Forward,
            outcome,
            shown,
            want.to_owned(),
            t0,
            rids,
        );
        (rec, vec![report])
    }

    async fn resume(&self, a: &Action, t0: Instant) -> (Record, Vec<StepReport>) {
        let app = self.ctx.okta.app_id().to_owned();
        let left: std::sync::Mutex<Option<Result<Left, PauseError>>> = std::sync::Mutex::new(None);
        let (mut record, answer) = self
            .write(
                a,
                &app,
                &json!("paused"),
                &json!("left"),
                || async {
                    let r = self.ctx.pause.leave(self.run()).await;
                    let out = match &r {
                        Ok(_) => Ok(Reply {
                            value: (),
                            request_id: None,
                        }),
                        Err(e) => Err(pause_failure(e)),
                    };
                    *left.lock().expect("not poisoned") = Some(r);
                    out
                },
                |_| Value::Null,
                &[],
            )
            .await;
        let left = left.into_inner().expect("not poisoned");
        let (outcome, after) = match &left {
            Some(Ok(Left::Restored)) => {
                record.result = json!({"restored": true});
                (
                    StepOutcome::Done,
                    "restored exactly as before (read back and compared)".to_owned(),
                )
            }
            Some(Ok(Left::HeldByOthers(n))) => {
                record.result = json!({"restored": false, "others": n});
                (StepOutcome::Done, format!("left the pause; {n} other run(s) still in it, the last one out restores it"))
            }
            Some(Ok(Left::Lingering(n))) => {
                record.result = json!({"restored": false, "others": n});
                (StepOutcome::Done, format!("left the pause; held briefly for {n} run(s) about to join, restored when they finish"))
            }
            _ => {
                let why = match &answer {
                    Err(f) => f.message.clone(),
                    Ok(_) => "unknown".into(),
                };
                (
                    StepOutcome::NeedsHuman(format!(
                        "Okta provisioning for the Office 365 app is still PAUSED ({why}); the bot keeps retrying the restore. If it does not recover: PUT /api/v1/apps/{app}/features/USER_PROVISIONING with the snapshot the thread's summary gives"
                    )),
                    "restore failed".into(),
                )
            }
        };
        let report = self.step_report(
            StepKind::ResumeProvisioning,
            Phase::Forward,
            outcome,
            "paused".into(),
            after,
            t0,
            vec![],
        );
        (record, vec![report])
    }

    async fn draw(&self, a: &Action, current: &str, t0: Instant) -> (Record, Vec<StepReport>) {
        let object = self.plan.entra_id.as_str().to_owned();
        let taken = match ImmutableId::parse_value(current) {
            Ok(id) => self
                .ctx
                .graph
                .users_with_immutable_id(&id)
                .await
                .map(|r| r.value.iter().any(|u| u.id != object)),
            Err(_) => Ok(true),
        };
        let (verdict, result, note) = match taken {
            Ok(false) => (
                Verdict::Ok,
                json!({"value": Value::Null}),
                format!(
                    "{current} is not held by anyone else; the refusal was not about the value"
                ),
            ),
            Ok(true) => match super::plan::fresh_unique_id(self.ctx).await {
                Ok(id) => (
                    Verdict::Ok,
                    json!({"value": id.to_string()}),
                    format!("{current} is now held by another user; drew {id}"),
                ),
                Err(e) => (
                    Verdict::Unknown,
                    Value::Null,
                    format!("could not draw a fresh value: {e}"),
                ),
            },
            Err(e) => (
                Verdict::Unknown,
                Value::Null,
                format!("could not check the value: {e}"),
            ),
        };
        let rec = self.check(a, &object, verdict, None, None, result);
        let report = self.step_report(
            StepKind::SetImmutableId,
            Phase::RollForward,
            if verdict == Verdict::Ok {
                StepOutcome::Done
            } else {
                StepOutcome::Failed {
                    code: None,
                    message: note.clone(),
                }
            },
            current.to_owned(),
            note,
            t0,
            vec![],
        );
        (rec, vec![report])
    }

    /// Reads both systems after the last step, for the summary.
    pub(crate) async fn final_reads(&self) -> FinalReads {
        let (e, o) = tokio::join!(
            self.ctx.graph.user_by_id(&self.plan.entra_id),
            self.ctx.okta.app_user(&self.plan.okta_user_id)
        );
        FinalReads {
            entra: e
                .ok()
                .and_then(|r| r.value)
                .map(|u| (u.user_principal_name, u.on_premises_immutable_id)),
            okta: o
                .ok()
                .map(|r| r.value.map(|u| u.immutable_id().map(str::to_owned))),
        }
    }

    /// Tells the thread a step will not run, and why.
    pub(crate) fn skip(&self, step: StepKind, why: &str) {
        self.report(StepReport {
            run: self.run(),
            step,
            phase: Phase::Forward,
            outcome: StepOutcome::Skipped(why.to_owned()),
            before: String::new(),
            after: String::new(),
            duration: Duration::ZERO,
            request_ids: vec![],
        });
    }

    /// Steps the thread never heard about, told as skipped, with why.
    pub(crate) fn skip_unreported(
        &self,
        reported: &HashSet<StepKind>,
        why: &dyn Fn(StepKind) -> String,
    ) {
        for k in StepKind::ALL {
            if !reported.contains(&k) {
                self.skip(k, &why(k));
            }
        }
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Refused => "refused",
        Verdict::Unknown => "unknown",
    }
}

/// A journal row's verdict, as this version reads it; an older version's `failed` did not tell
/// a refusal from an unknown outcome, so it is read as unknown (may have happened).
pub(crate) fn verdict_from(outcome: Option<&str>) -> (Verdict, bool) {
    match outcome {
        Some("ok") => (Verdict::Ok, false),
        Some("refused") => (Verdict::Refused, false),
        None => (Verdict::Unknown, true),
        Some(_) => (Verdict::Unknown, false),
    }
}

fn pause_failure(e: &PauseError) -> ApiFailure {
    match e {
        PauseError::Api(f) | PauseError::RestoreFailed(f) => f.clone(),
        other => ApiFailure {
            code: Some(pause_code(other).into()),
            message: other.to_string(),
            request_id: None,
            status: None,
            definitive: true,
        },
    }
}

fn pause_code(e: &PauseError) -> &'static str {
    match e {
        PauseError::Api(_) => "OktaApi",
        PauseError::NotPaused(_) => "NotPaused",
        PauseError::WaitedTooLong(_) => "WaitedTooLong",
        PauseError::RestoreFailed(_) => "RestoreFailed",
        PauseError::Store(_) => "Store",
        PauseError::AlreadyPaused => "AlreadyPaused",
        PauseError::RestorePending { .. } => "RestorePending",
    }
}

fn request_ids(answer: &Result<Option<String>, ApiFailure>) -> Vec<String> {
    match answer {
        Ok(r) => r.iter().cloned().collect(),
        Err(f) => f.request_id.iter().cloned().collect(),
    }
}

fn failed(f: &ApiFailure) -> StepOutcome {
    StepOutcome::Failed {
        code: f.code.clone(),
        message: f.message.clone(),
    }
}

fn outcome_of(record: &Record, answer: &Result<Option<String>, ApiFailure>) -> StepOutcome {
    match (record.verdict, answer) {
        (Verdict::Ok, _) => StepOutcome::Done,
        (_, Err(f)) => failed(f),
        (_, Ok(_)) => StepOutcome::Failed {
            code: record.code.clone(),
            message: "failed".into(),
        },
    }
}
