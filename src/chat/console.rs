//! The console front end: scripted chat events, one per line, rendered as the thread would show
//! them. Grammar (`#` starts a comment):
//!
//! ```text
//! alice: /fix-immutable-id user:adele@contoso.com [immutable_id:<GUID or value>] [mode:smallest|full|entra-only] [reason:<text>]
//! bob: react ✅ [run]          (also: react ❌, approve, reject; run defaults to the latest)
//! alice: /cancel [run]
//! alice: /fix-status [run]   (a run: its journal, with both request ids of each write)
//! alice: /diagnose user:adele@contoso.com   (read-only: Entra and Okta side by side, a verdict
//!                                           and the smallest safe fix; nothing is written)
//! alice: react 🔧              (plans the fix the person's last diagnosis offered, as its
//!                               button does in Discord; also: fix)
//! sandbox: fail <operation> <nth> <status> <code>   (sandbox only: inject a fault)
//! sandbox: applyfail <operation> <nth> <status> <code>   (sandbox only: the call is made, then
//!                                                    answered with that error)
//! sandbox: deactivate on|off                        (sandbox only)
//! sandbox: push [user]    (sandbox only: Okta pushes the user's profile — every user's without
//!                          one — and logs a failure for each whose ImmutableIDs do not match)
//! watch: poll             (demo: one pass of the watch over the System Log; its cards are
//!                          printed)
//! ```
//!
//! Who acts depends on the [`Identity`]: in the sandbox simulation the name before `:` is the
//! person; against a configured tenant every line acts for the operating-system user running the
//! console, and the name may be left out (`/fix-immutable-id …`, `approve`).

mod batch;

use super::os_user::OsUser;
use super::render::{ignored_line, journal_line, plan_message, sanitize, step_line, summary_line};
use crate::approval::{ApprovalPolicy, PendingApproval, Verdict, Vote};
use crate::domain::user_list::UserList;
use crate::domain::{Actor, RunId, RunState};
use crate::ops::shutdown::{Lifecycle, Signals};
use crate::pipeline::diagnose::Fix;
use crate::pipeline::{
    Engine, ModeChoice, Plan, PlanError, RepairRequest, Reporter, RunEvent, RunSummary,
};
use crate::sandbox::{Fault, FaultAction, Sandbox};
use crate::store::{now_ms, VoteKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

/// A `file:` list for a bulk repair, read only up to the size a list may have.
fn read_list_file(path: &str) -> Result<UserList, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(crate::domain::user_list::MAX_FILE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| format!("file: cannot read `{}`: {e}", sanitize(path, 200)))?;
    UserList::parse_file(path, &bytes).map_err(|e| format!("file: {e}"))
}

/// Longest event line accepted; anything longer is refused whole.
pub const MAX_LINE: usize = 4096;

/// Who a console line acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The sandbox simulation (`demo`): a script plays several people, so the name before `:`
    /// is taken as typed.
    Scripted,
    /// A configured tenant (`console`): the terminal can vouch only for the operating-system
    /// user, so every line acts for it whatever name is typed. The same person cannot approve
    /// their own request unless `single_operator` (break-glass) was chosen at start.
    Operator { user: OsUser, single_operator: bool },
}

pub struct Console<'a, W: Write> {
    engine: Engine,
    policy: ApprovalPolicy,
    people: BTreeMap<String, Vec<String>>,
    sandbox: Option<&'a Sandbox>,
    pending: HashMap<RunId, (Plan, PendingApproval)>,
    order: Vec<RunId>,
    out: W,
    identity: Identity,
    /// Runs requested in this session: with an operator identity, never approved by it too
    /// (unless single-operator).
    requested_here: HashSet<RunId>,
    /// Summaries of executed runs, for callers and tests.
    pub finished: Vec<RunSummary>,
    /// The run executing now, for a shutdown to name if it outlives the grace.
    lifecycle: Lifecycle,
    /// The fix each person's last diagnosis offered (its button in Discord).
    offers: HashMap<String, (String, ModeChoice, Option<String>)>,
    /// Bulk repairs awaiting approval.
    batches: HashMap<RunId, batch::PendingBatch>,
    /// The watch `watch: poll` runs, when there is one.
    watch: Option<crate::watch::Watch>,
}

impl<'a, W: Write> Console<'a, W> {
    pub fn new(
        engine: Engine,
        policy: ApprovalPolicy,
        people: BTreeMap<String, Vec<String>>,
        sandbox: Option<&'a Sandbox>,
        out: W,
    ) -> Self {
        Self {
            engine,
            policy,
            people,
            sandbox,
            pending: HashMap::new(),
            order: Vec::new(),
            out,
            identity: Identity::Scripted,
            requested_here: HashSet::new(),
            finished: Vec::new(),
            lifecycle: Lifecycle::default(),
            offers: HashMap::new(),
            batches: HashMap::new(),
            watch: None,
        }
    }

    /// Lets `watch: poll` lines run a pass of `watch`, printing its cards.
    pub fn with_watch(mut self, watch: crate::watch::Watch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Shares what is executing with a shutdown (see [`serve_stdin`]).
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.clone()
    }

    /// Acts as `identity` instead of the scripted default.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    fn single_operator(&self) -> bool {
        matches!(
            self.identity,
            Identity::Operator {
                single_operator: true,
                ..
            }
        )
    }

    pub fn into_output(self) -> W {
        self.out
    }

    /// What has been written so far (tests take it between lines).
    pub fn out_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "fixbot: {text}");
    }

    fn thread(&mut self, text: &str) {
        let _ = writeln!(self.out, "  └ fixbot: {text}");
    }

    /// Handles every line of `input`, in order.
    pub async fn run_script(&mut self, input: &str) {
        self.run_bytes(input.as_bytes()).await;
    }

    /// Handles every line of `input`, in order; a line that is not UTF-8 is refused on its own
    /// and the lines after it are still handled.
    pub async fn run_bytes(&mut self, input: &[u8]) {
        let input = input.strip_suffix(b"\n").unwrap_or(input);
        if input.is_empty() {
            return;
        }
        for line in input.split(|&b| b == b'\n') {
            self.handle_raw_line(line).await;
        }
    }

    /// One line as read from a terminal or pipe, before it is known to be text. Input that is
    /// not UTF-8 (a Latin-1 file, a stray byte) is bad input like any other: refused with a
    /// reason, nothing done, and the console goes on.
    pub async fn handle_raw_line(&mut self, raw: &[u8]) {
        match std::str::from_utf8(raw) {
            Ok(line) => self.handle_line(line).await,
            Err(e) => {
                let at = e.valid_up_to();
                self.say(&format!(
                    "that line is not UTF-8 text (byte 0x{:02x} at position {}); \
                     save the input as UTF-8 and send the line again. Nothing was done.",
                    raw[at],
                    at + 1
                ));
            }
        }
    }

    pub async fn handle_line(&mut self, raw: &str) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        if line.len() > MAX_LINE {
            self.say(&format!(
                "that line is {} bytes long; at most {MAX_LINE} are accepted. Nothing was done.",
                line.len()
            ));
            return;
        }
        let _ = writeln!(self.out, "{line}");
        let first_word = line.split_whitespace().next().unwrap_or("");
        let bare = matches!(self.identity, Identity::Operator { .. })
            && (line.starts_with('/')
                || matches!(first_word, "react" | "approve" | "reject" | "fix"));
        let (who, action) = if bare {
            (None, line)
        } else {
            let Some((who, action)) = line.split_once(':') else {
                self.say(
                    "each line is `who: command`; see the README for the grammar. Nothing was done.",
                );
                return;
            };
            (Some(who.trim()), action.trim())
        };
        if who == Some("sandbox") {
            self.sandbox_directive(action);
            return;
        }
        if who == Some("watch") {
            self.watch_directive(action).await;
            return;
        }
        let name = match (&self.identity, who) {
            (Identity::Scripted, Some(who)) => who.to_owned(),
            (Identity::Operator { user, .. }, who) => {
                if let Some(typed) = who.filter(|w| *w != user.as_str()) {
                    self.say(&format!(
                        "this console acts only for `{user}`, the operating-system user running \
                         it, not for `{}`; type the command without a name. Another person \
                         approves from their own console session. Nothing was done.",
                        sanitize(typed, 64)
                    ));
                    return;
                }
                user.to_string()
            }
            (Identity::Scripted, None) => unreachable!("scripted lines always name someone"),
        };
        let Some(roles) = self.people.get(&name).cloned() else {
            self.say(&format!(
                "I do not know `{}`; only people in console.people can act. Nothing was done.",
                sanitize(&name, 64)
            ));
            return;
        };
        let actor = Actor::new(name.clone(), name);
        let (verb, rest) = action
            .split_once(char::is_whitespace)
            .unwrap_or((action, ""));
        match verb {
            "/fix-immutable-id" => self.request(actor, &roles, rest).await,
            "fix" => self.take_offer(actor, &roles).await,
            "react" if matches!(rest.trim(), "🔧" | ":wrench:") => {
                self.take_offer(actor, &roles).await
            }
            "react" | "approve" | "reject" => {
                let (emoji, run) = if verb == "react" {
                    rest.trim()
                        .split_once(char::is_whitespace)
                        .unwrap_or((rest.trim(), ""))
                } else if verb == "approve" {
                    ("✅", rest)
                } else {
                    ("❌", rest)
                };
                let vote = match emoji {
                    "✅" | ":white_check_mark:" => Vote::Approve,
                    "❌" | ":x:" => Vote::Reject,
                    other => {
                        self.say(&format!(
                            "{} is not a vote; react ✅ to approve or ❌ to reject.",
                            sanitize(other, 16)
                        ));
                        return;
                    }
                };
                self.react(actor, &roles, vote, run.trim()).await;
            }
            "/cancel" => self.cancel(actor, &roles, rest.trim()),
            "/fix-status" if !rest.trim().is_empty() => self.status_of(rest.trim()),
            "/fix-status" => self.status(),
            "/diagnose" => self.diagnose(&actor, rest).await,
            other => self.say(&format!(
                "unknown command `{}`; try /fix-immutable-id, /diagnose, react, /cancel or /fix-status.",
                sanitize(other, 32)
            )),
        }
    }

    fn sandbox_directive(&mut self, action: &str) {
        let Some(sb) = self.sandbox else {
            self.say("sandbox directives only work against the sandbox tenant.");
            return;
        };
        let words: Vec<&str> = action.split_whitespace().collect();
        match words.as_slice() {
            [kind @ ("fail" | "applyfail"), op, nth, status, code] => {
                let (Ok(nth), Ok(status)) = (nth.parse(), status.parse()) else {
                    self.say(&format!(
                        "usage: sandbox: {kind} <operation> <nth> <status> <code>"
                    ));
                    return;
                };
                let code = (*code).to_owned();
                let message = "injected by the sandbox".to_owned();
                let (action, outcome) = match *kind {
                    "fail" => (
                        FaultAction::Error {
                            status,
                            code: code.clone(),
                            message,
                        },
                        "fail",
                    ),
                    _ => (
                        FaultAction::ApplyThenFail {
                            status,
                            code: code.clone(),
                            message,
                        },
                        "be made, then answered",
                    ),
                };
                sb.inject(Fault {
                    op: (*op).to_owned(),
                    nth,
                    times: 1,
                    action,
                });
                let _ = writeln!(
                    self.out,
                    "(sandbox: call {nth} of {op} will {outcome} with {status} {code})"
                );
            }
            ["deactivate", on_off] => {
                sb.set_deactivate(*on_off == "on");
                let _ = writeln!(self.out, "(sandbox: Deactivate switched {on_off} in Okta)");
            }
            ["push"] => {
                let n = sb.record_push_failures();
                let _ = writeln!(
                    self.out,
                    "(sandbox: Okta pushed every profile to Office 365; {n} push(es) failed and were logged)"
                );
            }
            ["push", user] => {
                let what = if sb.record_push_failure_of(user) {
                    "failed (the ImmutableIDs do not match) and was logged"
                } else {
                    "logged no failure"
                };
                let _ = writeln!(
                    self.out,
                    "(sandbox: Okta pushed {}'s profile to Office 365; the push {what})",
                    sanitize(user, 100)
                );
            }
            _ => self.say(
                "usage: sandbox: fail|applyfail <operation> <nth> <status> <code> \
                 | deactivate on|off | push [user]",
            ),
        }
    }

    async fn request(&mut self, actor: Actor, roles: &[String], args: &str) {
        if !self.policy.may_request(roles) {
            self.say(&format!(
                "(only to {}) you do not hold a requester role, so you cannot ask for repairs.",
                actor.name
            ));
            return;
        }
        let mut upn = None;
        let mut id = None;
        let mut mode = ModeChoice::Smallest;
        let mut reason = None;
        let mut users: Vec<&str> = Vec::new();
        let mut file = None;
        let mut rest = args.trim();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("reason:") {
                reason = Some(r.trim());
                break;
            }
            let (word, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if let Some(v) = word.strip_prefix("immutable_id:") {
                id = Some(v);
            } else if let Some(v) = word.strip_prefix("users:") {
                users.push(v);
            } else if let Some(v) = word.strip_prefix("file:") {
                file = Some(v);
            } else if !users.is_empty() && !word.contains(':') {
                // `users:a@x, b@x`: the list goes on after a comma and a space.
                users.push(word);
            } else if let Some(v) = word.strip_prefix("mode:") {
                mode = match ModeChoice::parse(v) {
                    Ok(m) => m,
                    Err(e) => {
                        self.say(&format!("(only to {}) {e}. Nothing was done.", actor.name));
                        return;
                    }
                };
            } else if let Some(v) = word.strip_prefix("user:") {
                upn = Some(v);
            } else if upn.is_none() {
                upn = Some(word);
            } else {
                self.say(&format!("(only to {}) unexpected `{}`; the form is /fix-immutable-id user:<UPN> [immutable_id:<value>] [mode:smallest|full|entra-only] [reason:<text>].", actor.name, sanitize(word, 64)));
                return;
            }
            rest = tail.trim_start();
        }
        if !users.is_empty() || file.is_some() {
            if upn.is_some() || id.is_some() || (!users.is_empty() && file.is_some()) {
                self.say(&format!("(only to {}) a bulk repair takes users:<list> or file:<path>, without user: or immutable_id: (each user gets its own value). Nothing was done.", actor.name));
                return;
            }
            let list = match file {
                Some(path) => read_list_file(path),
                None => UserList::parse_text(&users.join(" ")).map_err(|e| e.to_string()),
            };
            self.request_batch(actor, list, mode, reason).await;
            return;
        }
        let Some(upn) = upn else {
            self.say(&format!(
                "(only to {}) which user? /fix-immutable-id user:<UPN>",
                actor.name
            ));
            return;
        };
        let req = match RepairRequest::parse(actor.clone(), upn, id, reason) {
            Ok(r) => r.with_mode(mode),
            Err(e) => {
                self.say(&format!(
                    "(only to {}) {}. Nothing was changed.",
                    actor.name,
                    sanitize(&e.to_string(), 400)
                ));
                return;
            }
        };
        self.plan_and_show(actor, req).await;
    }

    /// `react 🔧`: the fix the person's last diagnosis offered, planned as `/fix-immutable-id`
    /// would plan it with that mode and value.
    async fn take_offer(&mut self, actor: Actor, roles: &[String]) {
        if !self.policy.may_request(roles) {
            self.say(&format!(
                "(only to {}) you do not hold a requester role, so you cannot ask for repairs.",
                actor.name
            ));
            return;
        }
        let Some((upn, mode, value)) = self.offers.remove(&actor.id) else {
            self.say(&format!(
                "(only to {}) no fix is on offer: /diagnose a user first.",
                actor.name
            ));
            return;
        };
        let req = match RepairRequest::parse(
            actor.clone(),
            &upn,
            value.as_deref(),
            Some("fix offered by /diagnose"),
        ) {
            Ok(r) => r.with_mode(mode),
            Err(e) => {
                self.say(&format!(
                    "(only to {}) {}. Nothing was changed.",
                    actor.name,
                    sanitize(&e.to_string(), 400)
                ));
                return;
            }
        };
        self.plan_and_show(actor, req).await;
    }

    async fn plan_and_show(&mut self, actor: Actor, req: RepairRequest) {
        self.say(&format!("(only to {}) planning…", actor.name));
        match self.engine.plan(&req).await {
            Ok(plan) => {
                let mut text = plan_message(&plan, self.policy.ttl);
                if self.single_operator() {
                    text.push_str(
                        "\n   ⚠ SINGLE-PERSON (BREAK-GLASS) REPAIR: this console runs with \
                         --single-operator, so its operator may approve this plan alone. The \
                         audit log marks it so.",
                    );
                }
                self.say(&text);
                let pending = PendingApproval::new(plan.run, actor, now_ms());
                self.requested_here.insert(plan.run);
                self.order.push(plan.run);
                self.pending.insert(plan.run, (plan, pending));
            }
            Err(PlanError::Refused(r)) => {
                self.say(&format!(
                    "(only to {}) refused: {} Nothing was changed.",
                    actor.name, r
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "planning failed");
                self.say(&format!(
                    "(only to {}) could not plan: {}. Nothing was changed; try again shortly.",
                    actor.name, e
                ));
            }
        }
    }

    /// `/diagnose user:<UPN>` (or the bare UPN): read-only, so anyone in console.people may ask,
    /// and the answer goes only to them, as in Discord.
    async fn diagnose(&mut self, actor: &Actor, args: &str) {
        let words: Vec<&str> = args.split_whitespace().collect();
        let upn = match words.as_slice() {
            [one] => one.strip_prefix("user:").unwrap_or(one),
            _ => {
                self.say(&format!(
                    "(only to {}) the form is /diagnose user:<UPN>.",
                    actor.name
                ));
                return;
            }
        };
        let upn = match crate::domain::Upn::parse(upn) {
            Ok(u) => u,
            Err(e) => {
                self.say(&format!(
                    "(only to {}) user: {}",
                    actor.name,
                    sanitize(&e.to_string(), 400)
                ));
                return;
            }
        };
        match self.engine.diagnose(&upn).await {
            Ok(d) => {
                let text = super::diagnosis::diagnosis_text(&d);
                self.say(&format!("(only to {}) {text}", actor.name));
                let offer = match &d.fix {
                    Fix::EntraOnly { value } => Some((ModeChoice::EntraOnly, Some(value.clone()))),
                    Fix::Full => Some((ModeChoice::Full, None)),
                    Fix::Nothing | Fix::Outside => None,
                };
                match offer {
                    Some((mode, value)) => {
                        self.say(&format!(
                            "(only to {}) react 🔧 to plan this fix for a second person's approval.",
                            actor.name
                        ));
                        self.offers
                            .insert(actor.id.clone(), (d.upn.clone(), mode, value));
                    }
                    None => {
                        self.offers.remove(&actor.id);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "diagnosis failed");
                self.say(&format!(
                    "(only to {}) could not diagnose: {}. Nothing was changed; try again shortly.",
                    actor.name,
                    sanitize(&e.to_string(), 400)
                ));
            }
        }
    }

    /// A run or a batch awaiting approval: the latest, or the one whose id starts with `run`.
    fn resolve(&self, run: &str) -> Option<RunId> {
        if run.is_empty() {
            return self
                .order
                .iter()
                .rev()
                .find(|r| self.pending.contains_key(r) || self.is_batch(r))
                .copied();
        }
        self.pending
            .keys()
            .chain(self.batches.keys())
            .find(|r| r.to_string().starts_with(run) || r.short() == run)
            .copied()
    }

    async fn react(&mut self, actor: Actor, roles: &[String], vote: Vote, run: &str) {
        let Some(run_id) = self.resolve(run) else {
            self.say("no run is awaiting approval.");
            return;
        };
        if self.is_batch(&run_id) {
            return self.react_batch(actor, roles, vote, run_id).await;
        }
        if vote == Vote::Approve {
            if let Identity::Operator { .. } = self.identity {
                let own = self.requested_here.contains(&run_id)
                    || self.pending[&run_id].1.requester.id == actor.id;
                if own {
                    self.approve_own(actor, roles, run_id).await;
                    return;
                }
            }
        }
        let policy = self.policy.clone();
        let verdict = {
            let (_, pending) = self.pending.get_mut(&run_id).expect("resolved");
            pending.vote(&policy, &actor, roles, false, vote, now_ms())
        };
        match verdict {
            Verdict::Ignored { reason, first_time } => {
                if first_time {
                    self.thread(&ignored_line(&actor.name, reason));
                }
            }
            Verdict::Counted { have, need } => {
                let plan = self.pending[&run_id].0.clone();
                if let Err(e) = self
                    .engine
                    .record_vote(&plan, &actor, VoteKind::Approve, need)
                {
                    self.thread(&format!(
                        "could not record the approval ({e:#}); it does not count yet."
                    ));
                    return;
                }
                self.thread(&format!("✅ approval {have}/{need} from {}", actor.name));
            }
            Verdict::Expired => {
                let _ = self.engine.close_unexecuted(run_id, RunState::Expired);
                self.pending.remove(&run_id);
                self.thread("⌛ this plan expired before it was approved; nothing was changed. Run the command again.");
            }
            Verdict::Rejected { by } => {
                let (plan, _) = self.pending.remove(&run_id).expect("resolved");
                let _ = self.engine.record_vote(&plan, &by, VoteKind::Reject, 1);
                self.thread(&format!("❌ rejected by {}; nothing was changed.", by.name));
            }
            Verdict::Approved { by } => {
                let (plan, _) = self.pending.remove(&run_id).expect("resolved");
                let need = self.policy.approvals_required;
                match self
                    .engine
                    .record_vote(&plan, &actor, VoteKind::Approve, need)
                {
                    Ok(Some((_, true))) => {}
                    Ok(_) => {
                        self.thread(
                            "this run is no longer awaiting approval; nothing more was done.",
                        );
                        return;
                    }
                    Err(e) => {
                        self.thread(&format!(
                            "could not record the approval ({e:#}); nothing was done."
                        ));
                        return;
                    }
                }
                let names: Vec<String> = by.iter().map(|a| a.name.clone()).collect();
                self.thread(&format!("✅ approved by {} — starting", names.join(", ")));
                let summary = self.execute(&plan).await;
                self.finished.push(summary);
            }
        }
    }

    /// The operator approving a plan they asked for: refused, unless the console runs with
    /// `--single-operator`, when it approves alone as a break-glass repair marked in the plan,
    /// the thread and the audit log.
    async fn approve_own(&mut self, actor: Actor, roles: &[String], run_id: RunId) {
        if !self.single_operator() {
            self.thread(&format!(
                "ℹ {0}'s approval does not count: {0} asked for this repair, and a second person \
                 must approve it from their own console session, as their own operating-system \
                 user. For a single-person (break-glass) repair, start the console with \
                 --single-operator. Nothing was done.",
                actor.name
            ));
            return;
        }
        if !self.policy.may_approve(roles) {
            self.thread(&format!(
                "ℹ {}'s approval does not count: {}, and --single-operator does not change who \
                 may approve. Nothing was done.",
                actor.name,
                crate::approval::Ignored::NotApprover.explain()
            ));
            return;
        }
        let (plan, _) = self.pending.remove(&run_id).expect("resolved");
        match self.engine.record_single_operator_approval(&plan, &actor) {
            Ok(Some((_, true))) => {}
            Ok(_) => {
                self.thread("this run is no longer awaiting approval; nothing more was done.");
                return;
            }
            Err(e) => {
                self.thread(&format!(
                    "could not record the approval ({e:#}); nothing was done."
                ));
                return;
            }
        }
        self.thread(&format!(
            "⚠ approved by {} alone — SINGLE-PERSON (BREAK-GLASS) REPAIR (--single-operator); \
             recorded as such in the audit log — starting",
            actor.name
        ));
        let summary = self.execute(&plan).await;
        self.finished.push(summary);
    }

    /// After a restart: settle interrupted runs, then take up plans still awaiting approval
    /// (their approvals so far and their original expiry kept).
    pub async fn recover(&mut self) -> anyhow::Result<()> {
        let (reporter, mut rx) = Reporter::channel();
        let engine = self.engine.clone();
        let settled = engine.recover(|_| reporter.clone()).await?;
        drop(reporter);
        while let Ok(ev) = rx.try_recv() {
            self.render(ev);
        }
        self.finished.extend(settled);
        // Batches the restart interrupted go on: their users that had not started run now.
        let running = self
            .engine
            .store()
            .batches_in_state(crate::store::BatchState::Running)?;
        for b in running {
            if let Ok(id) = RunId::parse(&b.id) {
                self.say(&format!(
                    "batch {} was interrupted; continuing it.",
                    id.short()
                ));
                self.run_batch(id).await;
            }
        }
        for (plan, created_at_ms) in self.engine.awaiting_approval()? {
            let approvers = self.engine.store().approvers(&plan.run.to_string())?;
            let pending = PendingApproval::with_approvals(
                plan.run,
                plan.requester.clone(),
                created_at_ms,
                approvers
                    .into_iter()
                    .map(|(id, name)| Actor::new(id, name))
                    .collect(),
            );
            self.say(&format!(
                "run {} for {} is still awaiting approval (react ✅ to approve).",
                plan.run.short(),
                plan.upn
            ));
            self.order.push(plan.run);
            self.pending.insert(plan.run, (plan, pending));
        }
        Ok(())
    }

    async fn execute(&mut self, plan: &Plan) -> RunSummary {
        let _working = self
            .lifecycle
            .enter(format!("run {} for {}", plan.run.short(), plan.upn));
        let (reporter, mut rx) = Reporter::channel();
        let engine = self.engine.clone();
        let fut = engine.execute(plan, &reporter);
        tokio::pin!(fut);
        let summary = loop {
            tokio::select! {
                Some(ev) = rx.recv() => self.render(ev),
                s = &mut fut => break s,
            }
        };
        while let Ok(ev) = rx.try_recv() {
            self.render(ev);
        }
        summary
    }

    fn render(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::Started { .. } => {}
            RunEvent::Note { text, .. } => self.thread(&format!("ℹ {text}")),
            RunEvent::Step(r) => self.thread(&step_line(&r)),
            RunEvent::Finished(s) => self.thread(&summary_line(&s)),
        }
    }

    fn cancel(&mut self, actor: Actor, roles: &[String], run: &str) {
        let Some(run_id) = self.resolve(run) else {
            self.say("no run is awaiting approval.");
            return;
        };
        if self.is_batch(&run_id) {
            return self.cancel_batch(actor, roles, run_id);
        }
        let requester = self.pending[&run_id].1.requester.id.clone();
        if actor.id != requester && !self.policy.may_approve(roles) {
            self.say(&format!(
                "(only to {}) only the requester or an approver can cancel.",
                actor.name
            ));
            return;
        }
        self.pending.remove(&run_id);
        let _ = self
            .engine
            .close_unexecuted_by(run_id, RunState::Cancelled, &actor);
        self.thread(&format!(
            "🛑 cancelled by {}; nothing was changed.",
            actor.name
        ));
    }

    /// One run and its journal, found by a prefix of its id.
    fn status_of(&mut self, key: &str) {
        let key = key.to_ascii_lowercase();
        if key.len() < 4 || !key.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return self.say("give a run id, or at least its first 4 characters.");
        }
        let store = self.engine.store();
        if let Ok([batch]) = store.batches_by_prefix(&key).as_deref() {
            let text = match self
                .engine
                .batch_summary(batch, 0, std::time::Duration::ZERO)
            {
                Ok(s) => {
                    let mut lines = vec![super::batch_render::status_line(batch, &s.progress)];
                    lines.extend(super::batch_render::status_rows(&s));
                    lines.join("\n   ")
                }
                Err(e) => format!("could not read the batch: {e:#}"),
            };
            return self.say(&text);
        }
        let rows = match store.runs_by_prefix(&key) {
            Ok(r) => r,
            Err(e) => return self.say(&format!("could not read the store: {e:#}")),
        };
        let row = match rows.as_slice() {
            [one] => one,
            [] => return self.say(&format!("no run starts with `{}`.", sanitize(&key, 40))),
            many => {
                return self.say(&format!(
                    "{} runs start with `{}`; give more characters.",
                    many.len(),
                    sanitize(&key, 40)
                ))
            }
        };
        let mut lines = vec![format!(
            "run {} {} {} (by {})",
            &row.id[..8.min(row.id.len())],
            sanitize(&row.upn, 100),
            row.state,
            sanitize(&row.requester_name, 64)
        )];
        match store.journal(&row.id) {
            Ok(entries) if entries.is_empty() => lines.push("no writes were made.".into()),
            Ok(entries) => lines.extend(entries.iter().map(journal_line)),
            Err(e) => lines.push(format!("the journal could not be read: {e:#}")),
        }
        self.say(&lines.join("\n   "));
    }

    /// `watch: poll`: one pass of the watch; each card as the ops channel would show it.
    async fn watch_directive(&mut self, action: &str) {
        if action.trim() != "poll" {
            return self.say("usage: watch: poll");
        }
        let Some(watch) = &self.watch else {
            return self.say("the watch is not running in this console.");
        };
        let text = crate::watch::card::pass_text(&watch.pass().await);
        let _ = writeln!(self.out, "{text}");
    }

    fn status(&mut self) {
        let findings = crate::watch::card::findings_text(self.engine.store()).join("\n");
        self.status_runs();
        let _ = writeln!(self.out, "   {}", findings.replace('\n', "\n   "));
    }

    fn status_runs(&mut self) {
        // A batch is one line with its counts; its users are not listed one by one.
        let mut members = HashSet::new();
        let mut batch_lines = Vec::new();
        for b in self.engine.store().recent_batches(5).unwrap_or_default() {
            if let Ok(p) = self.engine.batch_progress(&b) {
                batch_lines.push(super::batch_render::status_line(&b, &p));
            }
            members.extend(b.members.iter().cloned());
        }
        if !batch_lines.is_empty() {
            self.say(&format!(
                "recent batches:\n   {}",
                batch_lines.join("\n   ")
            ));
        }
        match self.engine.store().recent_runs(10 + members.len() as u32) {
            Ok(runs) if runs.is_empty() => self.say("no runs yet."),
            Ok(runs) => {
                let lines: Vec<String> = runs
                    .iter()
                    .filter(|r| !members.contains(&r.id))
                    .take(10)
                    .map(|r| {
                        format!(
                            "{} {} {} (by {})",
                            &r.id[..8],
                            sanitize(&r.upn, 100),
                            r.state,
                            // The store is shared with Discord, whose names anyone can choose.
                            sanitize(&r.requester_name, 64)
                        )
                    })
                    .collect();
                self.say(&format!("recent runs:\n   {}", lines.join("\n   ")));
            }
            Err(e) => self.say(&format!("could not read the store: {e:#}")),
        }
    }
}

/// `o365-fixbot console`: events from standard input against the configured tenant, with state
/// in the data directory. Interrupted runs are settled before the first event is read.
///
/// Every line acts for the operating-system user (see [`Identity::Operator`]);
/// `single_operator` lets that user approve their own requests as break-glass repairs.
pub async fn serve_stdin(
    config: &crate::config::Config,
    single_operator: bool,
) -> anyhow::Result<()> {
    use crate::directory::graph::GraphClient;
    use crate::directory::okta::OktaClient;
    use tokio::io::AsyncBufReadExt;
    // First: a SIGTERM during startup is then a clean stop, not a kill.
    let mut signals = crate::ops::shutdown::Signals::install()?;
    let user = OsUser::current()?;
    if !config.console.people.contains_key(user.as_str()) {
        anyhow::bail!(
            "the operating-system user `{user}` is not in console.people, so the console cannot \
             act for it; add `{user} = [<roles>]` under [console.people] in the configuration"
        );
    }
    let store = crate::store::Store::open(&config.store.data_dir)?;
    let graph = GraphClient::new(config.graph_client_config()?)?;
    let okta = OktaClient::new(config.okta_client_config()?)?;
    let engine = Engine::new(graph, okta, store, config.repair.clone())
        .observed_by(crate::ops::metrics::observer());
    let instance = engine.store().instance_name();
    let lease = engine.claim_okta_app(&instance, std::time::Duration::from_secs(60))?;
    let parker = engine.clone();
    let mut console = Console::new(
        engine,
        ApprovalPolicy::from(&config.approval),
        config.console.people.clone(),
        None,
        std::io::stdout(),
    )
    .with_identity(Identity::Operator {
        user,
        single_operator,
    });
    let lifecycle = console.lifecycle();
    let grace = config.ops.shutdown_grace;
    {
        let recovered = console.recover();
        tokio::pin!(recovered);
        match until_signal(&mut recovered, &mut signals, grace, &lifecycle, &parker).await {
            Some(result) => result?,
            None => return Ok(()),
        }
    }
    // Bytes, not `lines()`: one line that is not UTF-8 must be refused alone rather than end
    // the console with the lines after it unread.
    let mut input = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            read = input.read_until(b'\n', &mut line) => read?,
            signal = signals.recv() => {
                tracing::warn!(signal, "shutting down: no more input is read; nothing is executing");
                break;
            }
        };
        if read == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line).to_vec();
        let handled = console.handle_raw_line(&text);
        tokio::pin!(handled);
        if until_signal(&mut handled, &mut signals, grace, &lifecycle, &parker)
            .await
            .is_none()
        {
            break;
        }
    }
    // Released now (also after a signal), so the next instance can start at once.
    drop(lease);
    Ok(())
}

/// Awaits `work`; on SIGTERM/SIGINT, gives it at most `grace` more (a second signal: none) and
/// returns `None`, so that no more input is read. Runs still executing then are named loudly:
/// recovery settles them on the next start.
async fn until_signal<F: std::future::Future + Unpin>(
    work: &mut F,
    signals: &mut Signals,
    grace: std::time::Duration,
    lifecycle: &Lifecycle,
    engine: &Engine,
) -> Option<F::Output> {
    let signal = tokio::select! {
        out = &mut *work => return Some(out),
        signal = signals.recv() => signal,
    };
    // Runs go on to a safe boundary and park there; the next start resumes them.
    engine.park();
    tracing::warn!(
        signal,
        grace_ms = grace.as_millis() as u64,
        "shutting down: no more input is read; waiting for the executing run"
    );
    let ended = tokio::select! {
        r = tokio::time::timeout(grace, &mut *work) => r.is_ok(),
        s = signals.recv() => {
            tracing::error!(signal = s, "a second signal: not waiting any longer");
            false
        }
    };
    if !ended {
        tracing::error!(
            runs = ?lifecycle.in_progress(),
            "STOPPING WITH A RUN STILL EXECUTING after the shutdown grace; the next start settles it from its journal (recovery)"
        );
    }
    None
}
