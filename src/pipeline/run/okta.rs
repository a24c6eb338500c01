//! The Okta half's actions: join and leave the shared pause, the Deactivate re-check, the
//! unassign, the assign (new value or saved profile), and the read that verifies it.

use super::{failed, outcome_of, pause_failure, request_ids, Exec};
use crate::directory::okta::{AppUserCredentials, AssignAppUser};
use crate::directory::Reply;
use crate::pipeline::capabilities::{deactivate_enabled, describe};
use crate::pipeline::decide::{Action, Record, Shape};
use crate::pipeline::journal::ApiFailure;
use crate::pipeline::outcome::{Verdict, OKTA_NOT_FOUND};
use crate::pipeline::pause::Left;
use crate::pipeline::report::{Phase, StepKind, StepOutcome, StepReport};
use crate::pipeline::steps::Label;
use crate::pipeline::summary::link_state;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

impl Exec<'_> {
    pub(super) async fn pause(&self, a: &Action, t0: Instant) -> (Record, Vec<StepReport>) {
        let app = self.ctx.okta.app_id().to_owned();
        let (mut record, answer) = self
            .write(
                a,
                &app,
                &Value::Null,
                &json!("paused"),
                || async {
                    // What the join did is journalled with it: a restarted run reads it back.
                    match self.ctx.pause.join_under(self.run(), self.plan.batch).await {
                        Ok(j) => Ok(Reply {
                            value: json!({"first": j.first, "snapshot": j.snapshot}),
                            request_id: None,
                        }),
                        Err(e) => Err(pause_failure(&e)),
                    }
                },
                |v: &Value| v.clone(),
                &[],
            )
            .await;
        let (outcome, before, after) = match &answer {
            Ok(_) => {
                let snapshot = record.result.get("snapshot").cloned().unwrap_or_default();
                let after = if record.result.get("first") == Some(&Value::Bool(true)) {
                    format!("paused ({} → all off)", describe(&snapshot))
                } else {
                    "joined the provisioning pause already in place".to_owned()
                };
                (StepOutcome::Done, describe(&snapshot), after)
            }
            Err(f) => (
                failed(f),
                describe(&self.plan.provisioning_before),
                "not paused".into(),
            ),
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

    pub(super) async fn check_deactivate(
        &self,
        a: &Action,
        t0: Instant,
    ) -> (Record, Vec<StepReport>) {
        let app = self.ctx.okta.app_id().to_owned();
        // A batch's users share one re-check among the unassigns sent right after it; a single
        // repair reads for itself.
        let read = match self.plan.batch {
            Some(_) => self.ctx.deactivate_check.provisioning(&self.ctx.okta).await,
            None => self.ctx.okta.provisioning().await,
        };
        match read {
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

    pub(super) async fn unassign(&self, a: &Action, t0: Instant) -> (Record, Vec<StepReport>) {
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
        // Mapped properties are filled by Okta, and read-only ones come from the app: sending
        // either fails the assignment. Everything else, licenses and roles above all, goes back
        // as it was.
        profile.retain(|k, _| {
            !plan.mapped_properties.iter().any(|m| m == k)
                && !plan.carry_over.as_ref().is_some_and(|c| c.omits(k))
        });
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

    pub(super) async fn assign(
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

    pub(super) async fn verify_okta(
        &self,
        a: &Action,
        want: &str,
        t0: Instant,
    ) -> (Record, Vec<StepReport>) {
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

    pub(super) async fn resume(&self, a: &Action, t0: Instant) -> (Record, Vec<StepReport>) {
        let app = self.ctx.okta.app_id().to_owned();
        let (record, answer) = self
            .write(
                a,
                &app,
                &json!("paused"),
                &json!("left"),
                || async {
                    // How the run left is journalled with it: a restarted run reads it back.
                    match self.ctx.pause.leave(self.run()).await {
                        Ok(l) => Ok(Reply {
                            value: match l {
                                Left::Restored => json!({"restored": true, "others": 0}),
                                Left::HeldByOthers(n) => json!({"restored": false, "others": n}),
                                Left::Lingering(n) => {
                                    json!({"restored": false, "others": n, "lingering": true})
                                }
                            },
                            request_id: None,
                        }),
                        Err(e) => Err(pause_failure(&e)),
                    }
                },
                |v: &Value| v.clone(),
                &[],
            )
            .await;
        let others = record
            .result
            .get("others")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let (outcome, after) = match &answer {
            Ok(_) if record.result.get("restored") == Some(&Value::Bool(true)) => (
                StepOutcome::Done,
                "restored exactly as before (Okta's answer compared with the snapshot)".to_owned(),
            ),
            Ok(_) if record.result.get("lingering") == Some(&Value::Bool(true)) => (
                StepOutcome::Done,
                format!("left the pause; held briefly for {others} run(s) about to join, restored when they finish"),
            ),
            Ok(_) => (
                StepOutcome::Done,
                format!("left the pause; {others} other run(s) still in it, the last one out restores it"),
            ),
            Err(f) => (
                StepOutcome::NeedsHuman(format!(
                    "Okta provisioning for the Office 365 app is still PAUSED ({}); the bot keeps retrying the restore. If it does not recover: PUT /api/v1/apps/{app}/features/USER_PROVISIONING with the snapshot the thread's summary gives",
                    f.message
                )),
                "restore failed".into(),
            ),
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
}

/// Reads of the link check, whatever the window: with backoff from `verify_interval`, a handful
/// cover the window, and a window set very long cannot turn into a flood of reads.
const MAX_LINK_READS: u32 = 8;
/// The longest wait between two reads.
const MAX_LINK_BACKOFF: Duration = Duration::from_secs(5);

impl Exec<'_> {
    /// Reads the app user until Okta shows it linked to the Entra user, or shows a state that
    /// will not change by itself (a sync error, another object, no app user), or the window
    /// ends. Each read is cut off at the window's end, so the check can never outlast it; its
    /// failures are recorded as what was (not) read and never fail a step.
    pub(super) async fn link_check(&self, a: &Action) -> (Record, Vec<StepReport>) {
        let policy = &self.ctx.policy;
        let started = tokio::time::Instant::now();
        let deadline = started + policy.link_check_window;
        let mut wait = policy.verify_interval.max(Duration::from_millis(10));
        let mut reads = 0u32;
        let mut last: Option<Value> = None;
        let mut error: Option<String> = None;
        let mut request_id: Option<String> = None;
        for _ in 0..MAX_LINK_READS {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, self.ctx.okta.app_user(&self.plan.okta_user_id)).await
            {
                Ok(Ok(r)) => {
                    reads += 1;
                    request_id = r.request_id.or(request_id);
                    let read = match &r.value {
                        Some(u) => json!({
                            "found": true,
                            "status": u.status,
                            "syncState": u.sync_state,
                            "externalId": u.external_id,
                        }),
                        None => json!({"found": false}),
                    };
                    let state = link_state(&read, self.plan.entra_id.as_str());
                    last = Some(read);
                    error = None;
                    if state.settled() {
                        break;
                    }
                }
                Ok(Err(e)) => error = Some(ApiFailure::from_okta(&e).to_string()),
                Err(_) => error = Some("no answer before the window ended".into()),
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left <= wait {
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_LINK_BACKOFF);
        }
        let mut result = last.unwrap_or_else(|| json!({}));
        result["reads"] = json!(reads);
        result["error"] = json!(error);
        result["seconds"] = json!((started.elapsed().as_millis() as f64 / 100.0).round() / 10.0);
        let rec = self.check(
            a,
            self.plan.okta_user_id.as_str(),
            Verdict::Ok,
            None,
            request_id.as_deref(),
            result,
        );
        (rec, vec![])
    }
}
