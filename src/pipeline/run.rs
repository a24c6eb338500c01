//! The one interpreter: asks [`decide`] what to do next, carries it out with the journal around
//! every write, and repeats until both lanes are done — the same loop for a live run and for a
//! run read back from its journal after a restart.

mod entra;
mod okta;

use super::decide::{decide, Action, EntraEnd, Move, OktaDone, Op, Record, Shape};
use super::journal::ApiFailure;
use super::outcome::{classify, Verdict};
use super::pause::PauseError;
use super::plan::{Plan, RepairMode};
use super::report::{Phase, RunEvent, StepKind, StepOutcome, StepReport};
use super::steps::{Label, Lane};
use super::summary::FinalReads;
use super::Inner;
use crate::directory::Reply;
use crate::domain::RunId;
use serde_json::Value;
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
        parking: false,
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
        let live = Shape {
            parking: exec.ctx.parking.load(std::sync::atomic::Ordering::SeqCst),
            ..shape.clone()
        };
        let d = decide(&live, records);
        if entra.is_none() {
            match d.entra {
                Move::Do(a) => entra = Some(Box::pin(exec.act(shape, a, drawn(records)))),
                Move::Done(e) => entra_end = Some(e),
                Move::Wait => {}
            }
        }
        if okta.is_none() {
            match d.okta {
                Move::Do(a) => okta = Some(Box::pin(exec.act(shape, a, drawn(records)))),
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

    /// Carries out one action, in a `step` span. `drawn`: a fresh value was drawn before it
    /// (its step 2 then completes the repair forward).
    async fn act(&self, shape: &Shape, a: Action, drawn: bool) -> Done {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "step",
            step = a.label.step().map(StepKind::number).unwrap_or(0),
            label = a.label.code(),
            attempt = a.attempt
        );
        self.act_in_span(shape, a, drawn).instrument(span).await
    }

    async fn act_in_span(&self, shape: &Shape, a: Action, drawn: bool) -> Done {
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
            Op::Patch(patch) => self.patch(shape, &a, patch, drawn, t0).await,
            Op::VerifyEntra { want } => self.verify_entra(shape, &a, &want, t0).await,
            Op::Pause => self.pause(&a, t0).await,
            Op::CheckDeactivate => self.check_deactivate(&a, t0).await,
            Op::Unassign => self.unassign(&a, t0).await,
            Op::Assign { immutable_id } => self.assign(shape, &a, immutable_id, t0).await,
            Op::VerifyOkta { want } => self.verify_okta(&a, &want, t0).await,
            Op::Resume => self.resume(&a, t0).await,
            Op::LinkCheck => self.link_check(&a).await,
            Op::DrawId { current } => self.draw(&a, &current, t0).await,
            Op::StaleCheck => self.stale_check(&a).await,
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
        self.write_traced(a, object, before, intended, None, call, result_of, ok_codes)
            .await
    }

    /// [`Exec::write`] for a call that carries `client_request_id`: the id is journalled with
    /// the intent, before the call, and the service's request id with the outcome.
    #[allow(clippy::too_many_arguments)]
    async fn write_traced<T, F, Fut>(
        &self,
        a: &Action,
        object: &str,
        before: &Value,
        intended: &Value,
        client_request_id: Option<&str>,
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
        let entry = match self.ctx.store.journal_intent_traced(
            &run,
            spec.code,
            spec.api,
            object,
            before,
            intended,
            client_request_id,
        ) {
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
        // One line ties the journal entry to both sides' ids: ours (when the service accepts
        // one) and the service's own (`request-id`, `X-Okta-Request-Id`).
        tracing::info!(
            journal = entry,
            api = spec.api,
            verdict = verdict_name(verdict),
            client_request_id = client_request_id.unwrap_or("-"),
            request_id = rid.as_deref().unwrap_or("-"),
            "write"
        );
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

/// Whether a fresh ImmutableID was drawn so far.
fn drawn(records: &[Record]) -> bool {
    records.iter().any(|r| r.label == Label::DrawId)
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
