//! The step table: every write and check of a repair described once, as data — its journal
//! label, the API it calls, how it is re-sent safely, what a refusal and an unknown outcome lead
//! to, and what a summary may claim once it succeeded. [`super::decide`] reads the table and the
//! journal and says what happens next; [`super::run`] only carries that out.

use super::report::StepKind;
use std::fmt;

/// Which entry of the table a journal record belongs to. Stored as [`Label::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    /// Before the first Entra write: the facts the approval bound to, read again.
    StaleCheck,
    /// Step 1: UPN to the tenant's initial domain (federated domains only).
    UpnToTemporary,
    /// Steps 2 and 3: the new ImmutableID, and on federated domains the UPN back in the same
    /// PATCH (Microsoft's own example does both at once: a federated UPN needs an ImmutableID).
    SetId,
    /// Step 4: bounded reads until Entra shows the value (lag is not failure).
    VerifyEntra,
    /// Step 5: join (or open) the shared provisioning pause.
    Pause,
    /// Step 6, first half: Deactivate re-read right before each unassign.
    CheckDeactivate,
    /// Step 6: unassign from the Office 365 app, `sendEmail=false`.
    Unassign,
    /// Step 7: assign with the new ImmutableID and the saved profile.
    Assign,
    /// Step 7's fallback: the saved profile as it was, so nobody stays unassigned.
    AssignSaved,
    /// Step 8: read the app user, when the assign's answer did not already show the value.
    VerifyOkta,
    /// Step 9: leave the pause; the last one out restores provisioning.
    Resume,
    /// After step 9 restored provisioning: a bounded series of reads of the app user until Okta
    /// shows it linked to the Office 365 user again (or the window ends). A report, not a gate:
    /// it never delays leaving the pause and never changes either system.
    LinkCheck,
    /// Undo of the Entra half in one PATCH (original UPN, and the old ImmutableID where the run
    /// may have replaced it).
    UndoEntra,
    /// A fresh unique ImmutableID, drawn when step 2 was refused and the value is now taken.
    DrawId,
    /// The process restarted here: checks made before it no longer count.
    Restart,
    /// The bot stopped (SIGTERM) with this run parked before its Okta half; the pause it held
    /// was left, and the Okta half starts afresh on restart.
    Park,
}

/// Which half of the repair a label belongs to; one action per lane is in flight at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Entra,
    Okta,
    /// Markers that belong to neither.
    None,
}

/// How a write is made safe to send again after an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// A read, or a marker: repeating it changes nothing.
    Read,
    /// A PATCH or PUT of absolute values: sending it twice ends in the same state.
    SameBody,
    /// `DELETE`: a second one answers 404 `E0000007`, which means "already done".
    NotFoundMeansDone,
    /// The pause manager's join and leave are keyed on the run: a second join of a holder
    /// re-sends the all-off PUT, a second leave of a non-holder does nothing.
    KeyedOnRun,
}

/// What a definitive refusal leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefused {
    /// Nothing changed and nothing before it needs undoing: the lane ends here.
    Stop,
    /// Undo what the lane already did (or, for a user without an ImmutableID, try a fresh value
    /// first: the refusal may be a value taken meanwhile).
    Compensate,
    /// Okta will not take the new value: assign the saved profile so nobody stays unassigned.
    Fallback,
    /// A compensation refused: a person must act, and the summary says exactly what.
    Human,
    /// Not a write.
    NotAWrite,
}

/// What an outcome nobody knows leads to, once the re-send budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnknown {
    /// Undo (a rollback exists) or hand over to a person (none does).
    Compensate,
    /// The user may be unassigned: reassigning is mandatory, so go on to step 7.
    AssumeDone,
    /// Assign the saved profile.
    Fallback,
    /// A person must act.
    Human,
    /// Reads and markers are simply done again.
    Repeat,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct StepSpec {
    pub label: Label,
    /// The journal's spelling.
    pub code: &'static str,
    /// The steps of the seed procedure this row carries out, as the thread numbers them.
    pub shows_as: &'static [StepKind],
    pub lane: Lane,
    /// The API operation, as journalled.
    pub api: &'static str,
    pub resend: Resend,
    pub on_refused: OnRefused,
    pub on_unknown: OnUnknown,
    /// What a summary may say once this succeeded — and nothing more.
    pub claim: &'static str,
}

/// The repair, in the seed's order. The order of rows is the order of the forward run.
pub const TABLE: &[StepSpec] = &[
    StepSpec {
        label: Label::StaleCheck,
        code: "stale-check",
        shows_as: &[],
        lane: Lane::Entra,
        api: "stale_check",
        resend: Resend::Read,
        on_refused: OnRefused::NotAWrite,
        on_unknown: OnUnknown::Repeat,
        claim: "the facts the approval saw were read again and had not changed",
    },
    StepSpec {
        label: Label::UpnToTemporary,
        code: "1",
        shows_as: &[StepKind::UpnToTemporary],
        lane: Lane::Entra,
        api: "graph.update_user",
        resend: Resend::SameBody,
        on_refused: OnRefused::Stop,
        on_unknown: OnUnknown::Compensate,
        claim: "the UPN was moved to the initial domain",
    },
    StepSpec {
        label: Label::SetId,
        code: "2",
        shows_as: &[StepKind::SetImmutableId, StepKind::UpnBack],
        lane: Lane::Entra,
        api: "graph.update_user",
        resend: Resend::SameBody,
        on_refused: OnRefused::Compensate,
        on_unknown: OnUnknown::Compensate,
        claim: "Entra was sent the new ImmutableID (and the UPN back)",
    },
    StepSpec {
        label: Label::VerifyEntra,
        code: "4",
        shows_as: &[StepKind::VerifyEntra],
        lane: Lane::Entra,
        api: "graph.get_user",
        resend: Resend::Read,
        on_refused: OnRefused::NotAWrite,
        on_unknown: OnUnknown::Repeat,
        claim: "Entra reads show the new ImmutableID on the original UPN",
    },
    StepSpec {
        label: Label::Pause,
        code: "5",
        shows_as: &[StepKind::PauseProvisioning],
        lane: Lane::Okta,
        api: "pause.join",
        resend: Resend::KeyedOnRun,
        on_refused: OnRefused::Stop,
        on_unknown: OnUnknown::Repeat,
        claim: "provisioning was paused (snapshot stored first, read back all off)",
    },
    StepSpec {
        label: Label::CheckDeactivate,
        code: "6-check",
        shows_as: &[StepKind::Unassign],
        lane: Lane::Okta,
        api: "okta.get_feature",
        resend: Resend::Read,
        on_refused: OnRefused::NotAWrite,
        on_unknown: OnUnknown::Repeat,
        claim: "Deactivate was off right before the unassign",
    },
    StepSpec {
        label: Label::Unassign,
        code: "6",
        shows_as: &[StepKind::Unassign],
        lane: Lane::Okta,
        api: "okta.unassign",
        resend: Resend::NotFoundMeansDone,
        on_refused: OnRefused::Stop,
        on_unknown: OnUnknown::AssumeDone,
        claim: "the user was unassigned (sendEmail=false, profile saved first)",
    },
    StepSpec {
        label: Label::Assign,
        code: "7",
        shows_as: &[StepKind::Reassign],
        lane: Lane::Okta,
        api: "okta.assign",
        resend: Resend::SameBody,
        on_refused: OnRefused::Fallback,
        on_unknown: OnUnknown::Fallback,
        claim: "the user was assigned with the new ImmutableID, licenses and roles carried over",
    },
    StepSpec {
        label: Label::AssignSaved,
        code: "7-saved",
        shows_as: &[StepKind::Reassign],
        lane: Lane::Okta,
        api: "okta.assign",
        resend: Resend::SameBody,
        on_refused: OnRefused::Human,
        on_unknown: OnUnknown::Human,
        claim: "the saved profile was assigned again",
    },
    StepSpec {
        label: Label::VerifyOkta,
        code: "8",
        shows_as: &[StepKind::VerifyOkta],
        lane: Lane::Okta,
        api: "okta.get_app_user",
        resend: Resend::Read,
        on_refused: OnRefused::NotAWrite,
        on_unknown: OnUnknown::Repeat,
        claim: "Okta's app user shows the new ImmutableID",
    },
    StepSpec {
        label: Label::Resume,
        code: "9",
        shows_as: &[StepKind::ResumeProvisioning],
        lane: Lane::Okta,
        api: "pause.leave",
        resend: Resend::KeyedOnRun,
        on_refused: OnRefused::Human,
        on_unknown: OnUnknown::Human,
        claim: "the run left the pause (restored exactly as snapshotted when last out)",
    },
    StepSpec {
        label: Label::LinkCheck,
        code: "9-link",
        shows_as: &[],
        lane: Lane::Okta,
        api: "okta.get_app_user",
        resend: Resend::Read,
        on_refused: OnRefused::NotAWrite,
        on_unknown: OnUnknown::Repeat,
        claim: "the app user was read after the restore; the summary says what the reads showed",
    },
    StepSpec {
        label: Label::UndoEntra,
        code: "undo",
        shows_as: &[StepKind::SetImmutableId],
        lane: Lane::Entra,
        api: "graph.update_user",
        resend: Resend::SameBody,
        on_refused: OnRefused::Human,
        on_unknown: OnUnknown::Human,
        claim: "Entra is back as it was",
    },
    StepSpec {
        label: Label::DrawId,
        code: "2-draw",
        shows_as: &[StepKind::SetImmutableId],
        lane: Lane::Entra,
        api: "graph.list_users",
        resend: Resend::Read,
        on_refused: OnRefused::NotAWrite,
        on_unknown: OnUnknown::Repeat,
        claim: "a fresh ImmutableID no user holds was drawn",
    },
    StepSpec {
        label: Label::Restart,
        code: "restart",
        shows_as: &[],
        lane: Lane::None,
        api: "marker",
        resend: Resend::Read,
        on_refused: OnRefused::NotAWrite,
        on_unknown: OnUnknown::Repeat,
        claim: "the bot restarted here",
    },
    StepSpec {
        label: Label::Park,
        code: "park",
        shows_as: &[],
        lane: Lane::None,
        api: "marker",
        resend: Resend::Read,
        on_refused: OnRefused::NotAWrite,
        on_unknown: OnUnknown::Repeat,
        claim: "the run was parked before its Okta half while the bot stopped",
    },
];

impl Label {
    pub const ALL: [Label; 16] = [
        Label::StaleCheck,
        Label::UpnToTemporary,
        Label::SetId,
        Label::VerifyEntra,
        Label::Pause,
        Label::CheckDeactivate,
        Label::Unassign,
        Label::Assign,
        Label::AssignSaved,
        Label::VerifyOkta,
        Label::Resume,
        Label::LinkCheck,
        Label::UndoEntra,
        Label::DrawId,
        Label::Restart,
        Label::Park,
    ];

    pub fn spec(self) -> &'static StepSpec {
        TABLE
            .iter()
            .find(|s| s.label == self)
            .expect("every label has a row")
    }

    pub fn code(self) -> &'static str {
        self.spec().code
    }

    pub fn parse(code: &str) -> Option<Label> {
        TABLE.iter().find(|s| s.code == code).map(|s| s.label)
    }

    pub fn lane(self) -> Lane {
        self.spec().lane
    }

    /// The thread's step for this label (its first, where it carries out two).
    pub fn step(self) -> Option<StepKind> {
        self.spec().shows_as.first().copied()
    }

    /// Whether the label changes either system (and so is journalled before it is made).
    pub fn is_write(self) -> bool {
        !matches!(self.spec().resend, Resend::Read)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_has_one_row_and_codes_round_trip() {
        for l in Label::ALL {
            assert_eq!(TABLE.iter().filter(|s| s.label == l).count(), 1);
            assert_eq!(Label::parse(l.code()), Some(l));
        }
        assert_eq!(TABLE.len(), Label::ALL.len());
    }

    #[test]
    fn every_seed_step_is_carried_out_by_some_row() {
        for k in StepKind::ALL {
            assert!(TABLE.iter().any(|s| s.shows_as.contains(&k)), "{k:?}");
        }
    }
}
