//! The Okta lane: the pause (opened alongside the Entra half), the Deactivate re-check before
//! each unassign, the unassign, the assign or the saved profile, leaving the pause, and the check
//! that Okta linked the user again.

use super::{Action, EntraEnd, Move, OktaDone, OktaEnd, Op, Provisioning, Shape, View};
use crate::pipeline::outcome::Verdict;
use crate::pipeline::steps::{Label, OnRefused, OnUnknown};
use serde_json::Value;

pub(super) fn okta_lane(s: &Shape, v: &View, entra: &Move<EntraEnd>) -> Move<OktaDone> {
    if !s.full {
        return Move::Done(OktaDone {
            end: OktaEnd::NotNeeded,
            provisioning: Provisioning::Untouched,
        });
    }
    let entra_failed = matches!(entra, Move::Done(e) if !e.written());
    let okta_act = |label: Label, attempt: u32, op: Op| Move::Do(Action { label, attempt, op });

    // A run parked earlier left its pause: the Okta half starts afresh after the marker.
    let since_park = v.since(Some(Label::Park));
    // Stopping before any unassign: leave the pause (if held) and wait for the restart.
    let park_now = s.parking && v.last(Label::Unassign).is_none();

    // 5: the pause opens at once, alongside the Entra half: it is independent of it, and the
    // Okta steps can start the moment Entra is done.
    match View::last_in(since_park, Label::Pause) {
        None if park_now => {
            return Move::Done(OktaDone {
                end: OktaEnd::Parked,
                provisioning: Provisioning::Untouched,
            })
        }
        None if entra_failed => {
            return Move::Done(OktaDone {
                end: OktaEnd::Untouched,
                provisioning: Provisioning::Untouched,
            })
        }
        None => return okta_act(Label::Pause, 0, Op::Pause),
        Some(r) if r.died => return okta_act(Label::Pause, 0, Op::Pause),
        Some(r) if r.verdict != Verdict::Ok => {
            return Move::Done(OktaDone {
                end: OktaEnd::NotPaused {
                    code: r.code.clone(),
                },
                provisioning: Provisioning::Untouched,
            })
        }
        Some(_) => {}
    }

    let end = if park_now {
        OktaEnd::Parked
    } else {
        match okta_progress(s, v, entra) {
            Progress::Next(a) => return Move::Do(a),
            Progress::Wait => return Move::Wait,
            Progress::End(end) => end,
        }
    };
    // 9: whatever happened, leave the pause.
    match View::last_in(since_park, Label::Resume) {
        None => okta_act(Label::Resume, 0, Op::Resume),
        Some(r) if r.died => okta_act(Label::Resume, 0, Op::Resume),
        Some(r) => {
            let provisioning = if r.verdict == Verdict::Ok {
                Provisioning::Left {
                    restored: r.result.get("restored") == Some(&Value::Bool(true)),
                    others: r.result.get("others").and_then(Value::as_u64).unwrap_or(0) as usize,
                }
            } else {
                Provisioning::NotRestored
            };
            // After the restore, never before it: the pause is released first. A run restarted
            // between the restore and the check finds no check in its journal and makes it.
            if needs_link_check(&end, &provisioning) && v.last(Label::LinkCheck).is_none() {
                return okta_act(Label::LinkCheck, 0, Op::LinkCheck);
            }
            Move::Done(OktaDone { end, provisioning })
        }
    }
}

/// Whether Okta can be expected to link the user again now: the run reassigned them and its
/// leaving restored provisioning. While other runs hold the pause, Okta pushes nothing, so a
/// check would only wait out its window; the summary says it was not made.
pub(crate) fn needs_link_check(end: &OktaEnd, provisioning: &Provisioning) -> bool {
    reassigned(end) && matches!(provisioning, Provisioning::Left { restored: true, .. })
}

/// Whether the run assigned the user again (new value or saved profile).
pub(crate) fn reassigned(end: &OktaEnd) -> bool {
    matches!(end, OktaEnd::Assigned { .. } | OktaEnd::SavedProfile)
}

enum Progress {
    Next(Action),
    Wait,
    End(OktaEnd),
}

fn okta_progress(s: &Shape, v: &View, entra: &Move<EntraEnd>) -> Progress {
    let new_id = v.current_id(s);
    let next = |label: Label, attempt: u32, op: Op| Progress::Next(Action { label, attempt, op });
    let entra_sent = v
        .last(Label::SetId)
        .is_some_and(|r| r.verdict == Verdict::Ok);
    match entra {
        Move::Done(e) if !e.written() => return Progress::End(OktaEnd::Untouched),
        _ if !entra_sent => return Progress::Wait,
        _ => {}
    }
    let entra_done = matches!(entra, Move::Done(_));

    // A check counts for the next unassign only: made after the last restart and after the last
    // unassign sent.
    let fresh = v.since(Some(Label::Restart));
    let fresh = &fresh[fresh
        .iter()
        .rposition(|r| r.label == Label::Unassign)
        .map(|i| i + 1)
        .unwrap_or(0)..];
    let check = View::last_in(fresh, Label::CheckDeactivate);
    let check_says_off = check.map(|c| {
        c.verdict == Verdict::Ok && c.result.get("deactivate") == Some(&Value::Bool(false))
    });

    let unassigned = match v.last(Label::Unassign) {
        None => match check_says_off {
            None => return next(Label::CheckDeactivate, 0, Op::CheckDeactivate),
            Some(false) => {
                let on = check.is_some_and(|c| c.verdict == Verdict::Ok);
                return Progress::End(OktaEnd::UnassignNotSent { deactivate_on: on });
            }
            Some(true) if !entra_done => return Progress::Wait,
            Some(true) => return next(Label::Unassign, 0, Op::Unassign),
        },
        Some(r) => match r.verdict {
            Verdict::Ok => true,
            Verdict::Refused => {
                debug_assert_eq!(Label::Unassign.spec().on_refused, OnRefused::Stop);
                return Progress::End(OktaEnd::StillAssigned {
                    code: r.code.clone(),
                });
            }
            Verdict::Unknown => {
                let tries = View::tries_in(v.recs, Label::Unassign);
                match check_says_off {
                    _ if tries >= s.budget => false,
                    None => return next(Label::CheckDeactivate, 0, Op::CheckDeactivate),
                    Some(true) => return next(Label::Unassign, tries, Op::Unassign),
                    // Deactivate is on now: no second unassign; the first may have landed, so
                    // reassigning is mandatory.
                    Some(false) => false,
                }
            }
        },
    };
    // Unassigned, or maybe: reassigning is mandatory either way.
    debug_assert!(unassigned || Label::Unassign.spec().on_unknown == OnUnknown::AssumeDone);

    // 7: assign with the new value; refused or still unknown after the budget: the saved profile.
    let assign = |id: Option<String>| Op::Assign { immutable_id: id };
    match v.last(Label::Assign) {
        None => return next(Label::Assign, 0, assign(Some(new_id))),
        Some(r) if r.verdict == Verdict::Ok => {
            let seen = r
                .result
                .get("immutableId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if seen.as_deref() == Some(new_id.as_str()) {
                return Progress::End(OktaEnd::Assigned { seen });
            }
            // The answer did not show the value: read it (8).
            return match v.last(Label::VerifyOkta) {
                Some(r8) if r8.verdict == Verdict::Ok => Progress::End(OktaEnd::Assigned {
                    seen: r8
                        .result
                        .get("immutableId")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                }),
                _ => next(Label::VerifyOkta, 0, Op::VerifyOkta { want: new_id }),
            };
        }
        Some(r) => {
            let tries = View::tries_in(v.recs, Label::Assign);
            if r.verdict == Verdict::Unknown && tries < s.budget {
                return next(Label::Assign, tries, assign(Some(new_id)));
            }
            debug_assert_eq!(Label::Assign.spec().on_refused, OnRefused::Fallback);
        }
    }
    match v.last(Label::AssignSaved) {
        None => next(Label::AssignSaved, 0, assign(None)),
        Some(r) => match r.verdict {
            Verdict::Ok => Progress::End(OktaEnd::SavedProfile),
            Verdict::Refused => Progress::End(OktaEnd::MayBeUnassigned),
            Verdict::Unknown => {
                let tries = View::tries_in(v.recs, Label::AssignSaved);
                if tries < s.budget {
                    next(Label::AssignSaved, tries, assign(None))
                } else {
                    Progress::End(OktaEnd::MayBeUnassigned)
                }
            }
        },
    }
}
