//! The Entra lane: steps 1–4, the settle move before a re-sent step 2, and the undo.

use super::{Action, EntraEnd, Move, Op, Shape, Stranding, View};
use crate::directory::graph::UserPatch;
use crate::pipeline::outcome::Verdict;
use crate::pipeline::steps::{Label, OnRefused, OnUnknown};
use serde_json::Value;

fn act(label: Label, attempt: u32, op: Op) -> Move<EntraEnd> {
    Move::Do(Action { label, attempt, op })
}

fn patch(upn: Option<&str>, id: Option<&str>) -> Op {
    Op::Patch(UserPatch {
        user_principal_name: upn.map(str::to_owned),
        on_premises_immutable_id: id.map(str::to_owned),
    })
}

pub(super) fn entra_lane(s: &Shape, v: &View) -> Move<EntraEnd> {
    let new_id = v.current_id(s);
    let stranded = |s: &Shape| {
        let id_to_send = s.id_before.clone().unwrap_or_else(|| new_id.clone());
        if s.federated() {
            EntraEnd::Stranded(Stranding::MayBeOnTemporaryUpn { id_to_send })
        } else {
            EntraEnd::Stranded(Stranding::IdUnknown { id_to_send })
        }
    };
    // Graph refuses an ImmutableID on a user whose UPN is in a federated domain. After a PATCH
    // that may have moved the UPN back (an unknown step 2 or undo), re-sending it as it was
    // would be refused; the move to the initial domain goes first again ("settle"), which is
    // correct from any point of steps 1–3.
    let move_first = |v: &View| -> Option<Move<EntraEnd>> {
        let temp = s.temporary_upn.as_ref()?;
        let last_back = v.recs.iter().rposition(|r| {
            matches!(r.label, Label::SetId | Label::UndoEntra) && r.verdict != Verdict::Refused
        })?;
        let after = &v.recs[last_back + 1..];
        match View::last_in(after, Label::UpnToTemporary) {
            Some(r) if r.verdict == Verdict::Ok => None,
            Some(r) if r.verdict == Verdict::Refused => Some(Move::Done(stranded(s))),
            _ => {
                let tries = View::tries_in(after, Label::UpnToTemporary);
                if tries < s.budget {
                    Some(act(Label::UpnToTemporary, tries, patch(Some(temp), None)))
                } else {
                    Some(Move::Done(stranded(s)))
                }
            }
        }
    };

    // Before the first Entra write (also after a restart that came before it): the facts the
    // approval bound to, read again.
    let wrote = v.recs.iter().any(|r| {
        matches!(
            r.label,
            Label::UpnToTemporary | Label::SetId | Label::UndoEntra
        )
    });
    if !wrote && s.parking {
        return Move::Done(EntraEnd::Parked);
    }
    if !wrote {
        match View::last_in(v.since(Some(Label::Restart)), Label::StaleCheck) {
            None => return act(Label::StaleCheck, 0, Op::StaleCheck),
            Some(r) if r.verdict != Verdict::Ok => {
                return Move::Done(EntraEnd::NotReread(
                    r.code.clone().unwrap_or_else(|| "no answer".into()),
                ))
            }
            Some(r) => {
                if let Some(change) = r.result.get("change").and_then(Value::as_str) {
                    return Move::Done(EntraEnd::Stale(change.to_owned()));
                }
            }
        }
    }

    // Compensating: only the undo is left, re-sent within the budget.
    if let Some(u) = v.last(Label::UndoEntra) {
        return match u.verdict {
            // Back on the original UPN; an earlier unknown step 2 may have set the value.
            Verdict::Ok if s.id_before.is_none() && maybe_set(v) => {
                Move::Done(EntraEnd::Stranded(Stranding::IdUnknown {
                    id_to_send: new_id.clone(),
                }))
            }
            Verdict::Ok if s.id_before.is_none() => Move::Done(EntraEnd::BackWithoutId),
            Verdict::Ok => Move::Done(EntraEnd::RolledBack),
            Verdict::Refused => {
                debug_assert_eq!(Label::UndoEntra.spec().on_refused, OnRefused::Human);
                let moved = v
                    .last(Label::UpnToTemporary)
                    .is_some_and(|r| r.verdict == Verdict::Ok);
                let id_kept = v
                    .last(Label::SetId)
                    .is_some_and(|r| r.verdict == Verdict::Refused);
                if moved && id_kept {
                    Move::Done(EntraEnd::Stranded(Stranding::OnTemporaryUpn {
                        id_to_send: s.id_before.clone().unwrap_or_else(|| new_id.clone()),
                    }))
                } else {
                    Move::Done(stranded(s))
                }
            }
            Verdict::Unknown => {
                let tries = View::tries_in(v.recs, Label::UndoEntra);
                if tries >= s.budget {
                    return Move::Done(stranded(s));
                }
                let op = u_op(&u.intended);
                let carries_id =
                    matches!(&op, Op::Patch(p) if p.on_premises_immutable_id.is_some());
                if carries_id {
                    if let Some(m) = move_first(v) {
                        return m;
                    }
                }
                act(Label::UndoEntra, tries, op)
            }
        };
    }

    // Step 1, until step 2 is first sent.
    let set_sent = v.last(Label::SetId).is_some();
    if let (Some(temp), false) = (&s.temporary_upn, set_sent) {
        match v.last(Label::UpnToTemporary) {
            None => return act(Label::UpnToTemporary, 0, patch(Some(temp), None)),
            Some(r) => match r.verdict {
                Verdict::Ok => {}
                Verdict::Refused => return Move::Done(EntraEnd::Unchanged),
                Verdict::Unknown => {
                    let tries = View::tries_in(v.recs, Label::UpnToTemporary);
                    if tries < s.budget {
                        return act(Label::UpnToTemporary, tries, patch(Some(temp), None));
                    }
                    // The UPN may have moved; the ImmutableID is untouched: move it back.
                    return act(Label::UndoEntra, 0, patch(Some(&s.upn), None));
                }
            },
        }
    }

    let set_id = |id: &str| {
        let upn = s.federated().then_some(s.upn.as_str());
        patch(upn, Some(id))
    };
    // Sends of step 2 count from the last fresh value drawn (a draw that kept the value is not
    // a new start: the same value is never sent again after a refusal).
    let since_draw = v.since_fresh_value();
    match View::last_in(since_draw, Label::SetId) {
        None => return act(Label::SetId, 0, set_id(&new_id)),
        Some(r) => match r.verdict {
            Verdict::Ok => {}
            Verdict::Unknown => {
                let tries = View::tries_in(since_draw, Label::SetId);
                if tries < s.budget {
                    if let Some(m) = move_first(v) {
                        return m;
                    }
                    return act(Label::SetId, tries, set_id(&new_id));
                }
                debug_assert_eq!(Label::SetId.spec().on_unknown, OnUnknown::Compensate);
                return match &s.id_before {
                    // The old value may have been replaced: put it back with the UPN.
                    Some(old) => {
                        if let Some(m) = move_first(v) {
                            return m;
                        }
                        act(
                            Label::UndoEntra,
                            0,
                            patch(s.federated().then_some(s.upn.as_str()), Some(old)),
                        )
                    }
                    // Graph cannot clear an ImmutableID: nothing safe is left to send.
                    None => Move::Done(stranded(s)),
                };
            }
            Verdict::Refused => {
                debug_assert_eq!(Label::SetId.spec().on_refused, OnRefused::Compensate);
                if !s.federated() {
                    // The only Entra write was refused: nothing changed.
                    return Move::Done(EntraEnd::Unchanged);
                }
                if s.id_before.is_none() {
                    // The refusal may be a value taken meanwhile: look once, by a read.
                    let draw = Op::DrawId {
                        current: new_id.clone(),
                    };
                    match v.last(Label::DrawId) {
                        None => return act(Label::DrawId, 0, draw),
                        Some(d) if d.verdict != Verdict::Ok => {
                            let tries = View::tries_in(v.recs, Label::DrawId);
                            if tries < s.budget {
                                return act(Label::DrawId, tries, draw);
                            }
                        }
                        Some(_) => {}
                    }
                }
                // This send changed nothing; the UPN is on the initial domain. An earlier send
                // whose outcome was unknown may have set the value: where a previous value
                // exists it goes back too. For a user without one Graph may refuse the move
                // back: then the summary says so loudly.
                let old = s.id_before.as_deref().filter(|_| maybe_set(v));
                if old.is_some() {
                    if let Some(m) = move_first(v) {
                        return m;
                    }
                }
                return act(Label::UndoEntra, 0, patch(Some(&s.upn), old));
            }
        },
    }

    // Written: verify, bounded (the interpreter reads until the bound, lag is not failure).
    let after_set = v.since(Some(Label::SetId));
    match View::last_in(after_set, Label::VerifyEntra) {
        None => act(Label::VerifyEntra, 0, Op::VerifyEntra { want: new_id }),
        Some(r) => match r.result.get("seen").and_then(Value::as_str) {
            Some(seen) if r.result.get("unexpected") == Some(&Value::Bool(true)) => {
                Move::Done(EntraEnd::Unexpected(seen.to_owned()))
            }
            _ if r.verdict == Verdict::Ok => Move::Done(EntraEnd::Written {
                lagging: r.result.get("lagging") == Some(&Value::Bool(true)),
            }),
            // A verify the process died in: read again.
            _ => act(Label::VerifyEntra, 0, Op::VerifyEntra { want: new_id }),
        },
    }
}

/// Whether a step 2 whose outcome is unknown may have set the new value.
fn maybe_set(v: &View) -> bool {
    v.recs
        .iter()
        .any(|r| r.label == Label::SetId && r.verdict == Verdict::Unknown)
}

fn u_op(intended: &Value) -> Op {
    let patch: UserPatch = serde_json::from_value(intended.clone()).unwrap_or_default();
    Op::Patch(patch)
}
