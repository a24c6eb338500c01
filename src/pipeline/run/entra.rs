//! The Entra half's actions: the PATCHes of steps 1–3 and their undo, the bounded verify
//! reads of step 4, and the fresh value drawn when step 2 is refused.

use super::{outcome_of, Exec};
use crate::directory::graph::ClientRequestId;
use crate::domain::ImmutableId;
use crate::pipeline::decide::{Action, Record, Shape};
use crate::pipeline::journal::ApiFailure;
use crate::pipeline::outcome::Verdict;
use crate::pipeline::report::{Phase, StepKind, StepOutcome, StepReport};
use crate::pipeline::steps::Label;
use serde_json::{json, Value};
use std::time::Instant;

impl Exec<'_> {
    pub(super) async fn patch(
        &self,
        shape: &Shape,
        a: &Action,
        patch: crate::directory::graph::UserPatch,
        drawn: bool,
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
        // Chosen before the intent is journalled, so even a PATCH that never gets an answer
        // has an id Microsoft support can find it by.
        let client_request_id = ClientRequestId::new();
        let crid = client_request_id.to_string();
        let (record, answer) = self
            .write_traced(
                a,
                entra_id.as_str(),
                &before,
                &intended,
                Some(&crid),
                || async {
                    self.ctx
                        .graph
                        .update_user_traced(&entra_id, &patch, client_request_id)
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
            Label::SetId if drawn => Phase::RollForward,
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

    pub(super) async fn verify_entra(
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

    pub(super) async fn draw(
        &self,
        a: &Action,
        current: &str,
        t0: Instant,
    ) -> (Record, Vec<StepReport>) {
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
            Ok(true) => match crate::pipeline::plan::fresh_unique_id(self.ctx).await {
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

    /// Reads the facts the approval bound to again; a change stops the run before any write.
    pub(super) async fn stale_check(&self, a: &Action) -> (Record, Vec<StepReport>) {
        let object = self.plan.entra_id.as_str().to_owned();
        let rec = match crate::pipeline::plan::stale_check(self.ctx, self.plan).await {
            Ok(change) => self.check(
                a,
                &object,
                Verdict::Ok,
                None,
                None,
                json!({ "change": change }),
            ),
            Err(e) => {
                let why = e.to_string();
                self.check(a, &object, Verdict::Unknown, Some(&why), None, Value::Null)
            }
        };
        (rec, vec![])
    }
}
