//! What happens next, as a pure function of the plan's shape and the journal: the same answer
//! for a live run and for one read back after a restart, which is what makes them one code path.

use super::outcome::Verdict;
use super::steps::{Label, Lane, OnRefused, OnUnknown, Resend};
use crate::directory::graph::UserPatch;
use serde_json::Value;

/// What the interpreter needs of a plan to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub upn: String,
    /// `Some` on federated domains: the UPN moves there and back.
    pub temporary_upn: Option<String>,
    /// Entra's ImmutableID before the run; `None` means no rollback exists.
    pub id_before: Option<String>,
    pub planned_id: String,
    /// Okta's app-user ImmutableID before the run.
    pub okta_id_before: Option<String>,
    /// The full repair (Okta too), or the Entra half only.
    pub full: bool,
    /// Sends per write (the first included) before its failure rule applies.
    pub budget: u32,
}

impl Shape {
    fn federated(&self) -> bool {
        self.temporary_upn.is_some()
    }
}

/// One journal record, typed. Records without an outcome are in flight; a dead process's are
/// marked unknown with `died` before anything is decided from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub label: Label,
    pub verdict: Verdict,
    /// The process died before the outcome was recorded: unknown, and not a try.
    pub died: bool,
    pub code: Option<String>,
    pub intended: Value,
    /// What a check read, or what a write answered, as far as later decisions need it.
    pub result: Value,
}

impl Record {
    pub fn new(label: Label, verdict: Verdict) -> Self {
        Self {
            label,
            verdict,
            died: false,
            code: None,
            intended: Value::Null,
            result: Value::Null,
        }
    }
}

/// One thing to do, for one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub label: Label,
    /// Sends of this label so far that failed (0 for the first send): the backoff grows with it.
    pub attempt: u32,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Patch(UserPatch),
    VerifyEntra {
        want: String,
    },
    Pause,
    CheckDeactivate,
    Unassign,
    /// `Some(id)`: the new value; `None`: the saved profile as it was.
    Assign {
        immutable_id: Option<String>,
    },
    VerifyOkta {
        want: String,
    },
    Resume,
    /// Is `current` held by another user now? If so, draw a fresh value.
    DrawId {
        current: String,
    },
}

/// How the Entra half ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntraEnd {
    /// Entra was sent the new value; `lagging` when reads had not caught up within the bound.
    Written { lagging: bool },
    /// The first write was refused: nothing changed.
    Unchanged,
    /// Undone: the user is on the original UPN with the ImmutableID it had.
    RolledBack,
    /// A user without a previous ImmutableID whose step 2 was refused is back on the original
    /// UPN, still without one.
    BackWithoutId,
    /// Someone else wrote a third value meanwhile.
    Unexpected(String),
    /// Neither done nor undone: a person must act.
    Stranded(Stranding),
}

impl EntraEnd {
    pub fn written(&self) -> bool {
        matches!(self, EntraEnd::Written { .. })
    }
}

/// Where a stranded user may be, for the summary to say exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stranding {
    /// The user is on the temporary UPN (step 1 landed, step 2 and the move back were refused).
    OnTemporaryUpn { id_to_send: String },
    /// The user may be on the temporary UPN; the value the PATCH to send should carry.
    MayBeOnTemporaryUpn { id_to_send: String },
    /// A user without an ImmutableID whose step 2 kept failing: may or may not hold the value.
    IdUnknown { id_to_send: String },
}

/// How the Okta half ended (before leaving the pause).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OktaEnd {
    /// The Entra-only repair: Okta already sends the value.
    NotNeeded,
    /// The Entra half did not complete, so no Okta write was made.
    Untouched,
    /// The pause could not be taken: no Okta write was made.
    NotPaused { code: Option<String> },
    /// Deactivate was on (or could not be read): the unassign was not sent.
    UnassignNotSent { deactivate_on: bool },
    /// Okta refused the unassign: still assigned with the old value.
    StillAssigned { code: Option<String> },
    /// Assigned with the new value; `seen` is what the answer or a read showed.
    Assigned { seen: Option<String> },
    /// The new value was not taken; the saved profile is assigned again.
    SavedProfile,
    /// Neither assign went through: the user may be unassigned.
    MayBeUnassigned,
}

/// A lane's next move.
#[derive(Debug, Clone, PartialEq)]
pub enum Move<E> {
    Do(Action),
    /// Waiting for the other lane.
    Wait,
    Done(E),
}

/// Both lanes' moves.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub entra: Move<EntraEnd>,
    pub okta: Move<OktaDone>,
}

/// The Okta lane, finished: how it ended and how it left provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaDone {
    pub end: OktaEnd,
    pub provisioning: Provisioning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioning {
    Untouched,
    /// Left the pause: `restored` when this run was last out and the read-back matched.
    Left {
        restored: bool,
    },
    /// Leaving failed: restoring is still pending.
    NotRestored,
}

/// The journal as the decisions read it.
pub struct View<'a> {
    recs: &'a [Record],
}

impl<'a> View<'a> {
    pub fn new(recs: &'a [Record]) -> Self {
        Self { recs }
    }

    /// Records after the last time `reset` was recorded (all of them when `reset` never was).
    fn since(&self, reset: Option<Label>) -> &'a [Record] {
        let from = reset
            .and_then(|r| self.recs.iter().rposition(|x| x.label == r))
            .map(|i| i + 1)
            .unwrap_or(0);
        &self.recs[from..]
    }

    fn last_in(recs: &'a [Record], l: Label) -> Option<&'a Record> {
        recs.iter().rev().find(|r| r.label == l)
    }

    pub fn last(&self, l: Label) -> Option<&'a Record> {
        Self::last_in(self.recs, l)
    }

    /// Failed sends of `l` (a dead process is not a failed send).
    fn tries_in(recs: &[Record], l: Label) -> u32 {
        recs.iter()
            .filter(|r| r.label == l && r.verdict != Verdict::Ok && !r.died)
            .count() as u32
    }

    /// The value the run is writing: the plan's, or the last fresh one drawn.
    pub fn current_id(&self, shape: &Shape) -> String {
        self.recs
            .iter()
            .rev()
            .filter(|r| r.label == Label::DrawId && r.verdict == Verdict::Ok)
            .find_map(|r| r.result.get("value").and_then(Value::as_str))
            .unwrap_or(&shape.planned_id)
            .to_owned()
    }

    /// Records after the last draw that produced a fresh value.
    fn since_fresh_value(&self) -> &'a [Record] {
        let from = self
            .recs
            .iter()
            .rposition(|r| {
                r.label == Label::DrawId
                    && r.verdict == Verdict::Ok
                    && r.result.get("value").is_some_and(Value::is_string)
            })
            .map(|i| i + 1)
            .unwrap_or(0);
        &self.recs[from..]
    }

    /// Whether the run restarted at some point.
    pub fn restarted(&self) -> bool {
        self.recs.iter().any(|r| r.label == Label::Restart)
    }
}

/// Decides both lanes. Pure: no I/O, no clock.
pub fn decide(shape: &Shape, recs: &[Record]) -> Decision {
    let view = View::new(recs);
    let entra = entra_lane(shape, &view);
    let okta = okta_lane(shape, &view, &entra);
    Decision { entra, okta }
}

fn act(label: Label, attempt: u32, op: Op) -> Move<EntraEnd> {
    Move::Do(Action { label, attempt, op })
}

fn patch(upn: Option<&str>, id: Option<&str>) -> Op {
    Op::Patch(UserPatch {
        user_principal_name: upn.map(str::to_owned),
        on_premises_immutable_id: id.map(str::to_owned),
    })
}

fn entra_lane(s: &Shape, v: &View) -> Move<EntraEnd> {
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

fn okta_lane(s: &Shape, v: &View, entra: &Move<EntraEnd>) -> Move<OktaDone> {
    if !s.full {
        return Move::Done(OktaDone {
            end: OktaEnd::NotNeeded,
            provisioning: Provisioning::Untouched,
        });
    }
    let entra_failed = matches!(entra, Move::Done(e) if !e.written());
    let okta_act = |label: Label, attempt: u32, op: Op| Move::Do(Action { label, attempt, op });

    // 5: the pause opens at once, alongside the Entra half: it is independent of it, and the
    // Okta steps can start the moment Entra is done.
    match v.last(Label::Pause) {
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

    let end = match okta_progress(s, v, entra) {
        Progress::Next(a) => return Move::Do(a),
        Progress::Wait => return Move::Wait,
        Progress::End(end) => end,
    };
    // 9: whatever happened, leave the pause.
    match v.last(Label::Resume) {
        None => okta_act(Label::Resume, 0, Op::Resume),
        Some(r) if r.died => okta_act(Label::Resume, 0, Op::Resume),
        Some(r) => Move::Done(OktaDone {
            end,
            provisioning: if r.verdict == Verdict::Ok {
                Provisioning::Left {
                    restored: r.result.get("restored") == Some(&Value::Bool(true)),
                }
            } else {
                Provisioning::NotRestored
            },
        }),
    }
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

/// Whether a label's failures are re-sent at all (reads and markers are simply repeated).
pub fn resendable(label: Label) -> bool {
    !matches!(label.spec().resend, Resend::Read) && label.lane() != Lane::None
}
