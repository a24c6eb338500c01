//! What happens next, as a pure function of the plan's shape and the journal: the same answer
//! for a live run and for one read back after a restart, which is what makes them one code path.

mod entra;
mod okta;

pub(crate) use okta::reassigned;

use super::outcome::Verdict;
use super::steps::Label;
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
    /// The bot is stopping: finish what is under way up to a safe boundary, start nothing new
    /// (no Entra write when none was made; no unassign when none was sent).
    pub parking: bool,
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
    /// Read the app user until Okta shows the link to Office 365 again (bounded).
    LinkCheck,
    /// Read the facts the approval bound to again.
    StaleCheck,
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
    /// The facts changed since the plan was approved: nothing was written.
    Stale(String),
    /// The facts could not be read again before the first write: nothing was written.
    NotReread(String),
    /// The bot is stopping and no Entra write had been made: the run waits for the restart.
    Parked,
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
    /// The bot is stopping and no unassign had been sent: the pause was left, and the Okta half
    /// starts afresh on restart.
    Parked,
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
    /// Left the pause: `restored` when this run was last out and the read-back matched;
    /// otherwise `others` runs still hold it.
    Left {
        restored: bool,
        others: usize,
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
    let entra = entra::entra_lane(shape, &view);
    let okta = okta::okta_lane(shape, &view, &entra);
    Decision { entra, okta }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(federated: bool, had_id: bool) -> Shape {
        Shape {
            upn: "adele@contoso.com".into(),
            temporary_upn: federated.then(|| "adele@contoso.onmicrosoft.com".into()),
            parking: false,
            id_before: had_id.then(|| "OLD".into()),
            planned_id: "NEW".into(),
            okta_id_before: Some("OKTA".into()),
            full: true,
            budget: 3,
        }
    }

    fn rec(label: Label, verdict: Verdict) -> Record {
        Record::new(label, verdict)
    }

    fn fresh() -> Record {
        let mut r = rec(Label::StaleCheck, Verdict::Ok);
        r.result = json!({"change": null});
        r
    }

    /// Paused, Entra written and verified, Deactivate read off: the unassign may go.
    fn ready_to_unassign() -> Vec<Record> {
        let mut pause = rec(Label::Pause, Verdict::Ok);
        pause.result = json!({"first": true});
        let mut check = rec(Label::CheckDeactivate, Verdict::Ok);
        check.result = json!({"deactivate": false});
        let mut verify = rec(Label::VerifyEntra, Verdict::Ok);
        verify.result = json!({"seen": "NEW", "lagging": false});
        vec![
            fresh(),
            pause,
            rec(Label::SetId, Verdict::Ok),
            verify,
            check,
        ]
    }

    fn next_entra(s: &Shape, recs: &[Record]) -> Move<EntraEnd> {
        decide(s, recs).entra
    }

    #[test]
    fn the_stale_check_comes_first_and_the_pause_opens_beside_it() {
        let d = decide(&shape(true, false), &[]);
        assert!(matches!(
            d.entra,
            Move::Do(Action {
                label: Label::StaleCheck,
                ..
            })
        ));
        assert!(matches!(
            d.okta,
            Move::Do(Action {
                label: Label::Pause,
                ..
            })
        ));
    }

    #[test]
    fn a_refused_step_1_changes_nothing_and_is_not_resent() {
        let s = shape(true, true);
        let recs = [fresh(), rec(Label::UpnToTemporary, Verdict::Refused)];
        assert_eq!(next_entra(&s, &recs), Move::Done(EntraEnd::Unchanged));
    }

    #[test]
    fn an_unknown_step_2_on_a_federated_domain_moves_the_upn_first_then_resends() {
        let s = shape(true, false);
        let mut recs = vec![
            fresh(),
            rec(Label::UpnToTemporary, Verdict::Ok),
            rec(Label::SetId, Verdict::Unknown),
        ];
        match next_entra(&s, &recs) {
            Move::Do(a) => assert_eq!(a.label, Label::UpnToTemporary),
            other => panic!("{other:?}"),
        }
        recs.push(rec(Label::UpnToTemporary, Verdict::Ok));
        match next_entra(&s, &recs) {
            Move::Do(a) => {
                assert_eq!((a.label, a.attempt), (Label::SetId, 1));
                assert_eq!(
                    a.op,
                    Op::Patch(UserPatch {
                        user_principal_name: Some("adele@contoso.com".into()),
                        on_premises_immutable_id: Some("NEW".into()),
                    })
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refused_step_2_with_a_previous_id_moves_the_upn_back_without_touching_the_id() {
        let s = shape(true, true);
        let recs = [
            fresh(),
            rec(Label::UpnToTemporary, Verdict::Ok),
            rec(Label::SetId, Verdict::Refused),
        ];
        match next_entra(&s, &recs) {
            Move::Do(a) => assert_eq!(
                (a.label, a.op),
                (
                    Label::UndoEntra,
                    Op::Patch(UserPatch {
                        user_principal_name: Some("adele@contoso.com".into()),
                        on_premises_immutable_id: None,
                    })
                )
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refused_assign_is_never_resent_the_saved_profile_goes_back() {
        let s = shape(false, true);
        let mut recs = ready_to_unassign();
        recs.extend([
            rec(Label::Unassign, Verdict::Ok),
            rec(Label::Assign, Verdict::Refused),
        ]);
        match decide(&s, &recs).okta {
            Move::Do(a) => assert_eq!(
                (a.label, a.op),
                (Label::AssignSaved, Op::Assign { immutable_id: None })
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_unassign_without_a_check_made_after_the_last_restart() {
        let s = shape(false, true);
        let mut recs = ready_to_unassign();
        recs.push(rec(Label::Restart, Verdict::Ok));
        match decide(&s, &recs).okta {
            Move::Do(a) => assert_eq!(a.label, Label::CheckDeactivate),
            other => panic!("{other:?}"),
        }
    }

    /// Assigned with the new value, and the pause left with this run last out (or not).
    fn reassigned_and_left(restored: bool) -> Vec<Record> {
        let mut recs = ready_to_unassign();
        let mut assign = rec(Label::Assign, Verdict::Ok);
        assign.result = json!({"immutableId": "NEW"});
        let mut resume = rec(Label::Resume, Verdict::Ok);
        resume.result = json!({"restored": restored, "others": if restored { 0 } else { 1 }});
        recs.extend([rec(Label::Unassign, Verdict::Ok), assign, resume]);
        recs
    }

    #[test]
    fn the_link_check_follows_the_restore_and_a_restarted_run_makes_it_too() {
        let s = shape(false, true);
        let mut recs = reassigned_and_left(true);
        let is_link_check = |m: &Move<OktaDone>| {
            matches!(
                m,
                Move::Do(Action {
                    label: Label::LinkCheck,
                    op: Op::LinkCheck,
                    ..
                })
            )
        };
        assert!(is_link_check(&decide(&s, &recs).okta));
        recs.push(rec(Label::Restart, Verdict::Ok));
        assert!(is_link_check(&decide(&s, &recs).okta));
        recs.push(rec(Label::LinkCheck, Verdict::Ok));
        assert!(matches!(decide(&s, &recs).okta, Move::Done(_)));
        // Provisioning still paused for other runs: Okta pushes nothing, so no check.
        let held = reassigned_and_left(false);
        assert!(matches!(decide(&s, &held).okta, Move::Done(_)));
    }
}
