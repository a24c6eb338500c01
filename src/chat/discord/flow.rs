//! One repair's life in Discord: command → (ephemeral) plan reply → plan message with ✅/❌ →
//! thread → votes → one execution with every step in the thread → the plan message's final state.
//!
//! The store is the truth; memory is a cache of it. Each run awaiting approval has a [`Slot`]
//! keyed by its plan message, with an async mutex: votes, cancellation and expiry take it in
//! turn. Every counted vote goes through [`Engine::record_vote`], which records the voter and the
//! plan fingerprint and moves the run to `approved` atomically, so two approvers reacting at the
//! same instant, or one reaction delivered twice, still execute the run once. Where the plan
//! message and its thread are is stored with the run (`chat_ref`), so a restarted bot takes its
//! runs up again (see [`Bot::on_ready`]).

use super::commands::{self, Command};
use super::limits::{retry_in, Limits, OpenRun};
use super::post::Poster;
use super::reactions::{self, Identities, Voter, REJECT};
use crate::approval::{ApprovalPolicy, Ignored, PendingApproval, Verdict, Vote};
use crate::chat::render::{
    ignored_line, plan_message, sanitize, state_line, step_line, summary_line, PlanState,
};
use crate::config::DiscordSettings;
use crate::domain::{Actor, RunId, RunState};
use crate::pipeline::{
    Engine, Plan, PlanError, RepairRequest, Reporter, RunEvent, RunOutcome, RunSummary,
};
use crate::store::{now_ms, VoteKind};
use dashmap::DashMap;
use serde_json::{json, Value};
use serenity::all::{
    ChannelId, CommandInteraction, GuildId, MessageId, Reaction, ReactionType, Ready, User, UserId,
};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use tokio::task::AbortHandle;

/// Reactors read back per emoji on start: pages of 100, at most this many pages.
const REACTION_PAGES: usize = 10;
/// Discord's error code for "A thread has already been created for this message".
const THREAD_ALREADY_CREATED: isize = 160004;
/// Runs awaiting approval taken up at once on start.
const ADOPT_AT_ONCE: usize = 8;
/// Interaction ids remembered to drop a dispatch delivered twice (a token lives 15 minutes).
const SEEN_INTERACTIONS: usize = 4096;

/// The Discord front end's state, shared by every event handler task.
pub struct Bot {
    engine: Engine,
    policy: ApprovalPolicy,
    settings: DiscordSettings,
    ids: Identities,
    limits: Limits,
    /// Runs awaiting approval, by plan message id.
    pending: DashMap<u64, Arc<Slot>>,
    me: OnceLock<UserId>,
    first_ready: AtomicBool,
    /// Becomes `true` once the runs an earlier process left are settled and taken up again.
    started: watch::Sender<bool>,
    seen: std::sync::Mutex<Seen>,
}

/// Recently seen interaction ids, bounded.
#[derive(Default)]
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    /// `true` the first time `id` is seen.
    fn first(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_INTERACTIONS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Where a run is shown: the plan message in its channel, and the thread started from it
/// (whose id is the message id). Stored with the run as its `chat_ref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    run: RunId,
    guild: GuildId,
    channel: ChannelId,
    message: MessageId,
    requester: UserId,
}

impl Place {
    fn thread(&self) -> ChannelId {
        ChannelId::new(self.message.get())
    }

    /// Snowflakes as strings: they do not fit a JSON number everywhere.
    fn chat_ref(&self, thread_created: bool) -> Value {
        json!({
            "guild": self.guild.get().to_string(),
            "channel": self.channel.get().to_string(),
            "message": self.message.get().to_string(),
            "thread": thread_created.then(|| self.thread().get().to_string()),
            "requester": self.requester.get().to_string(),
        })
    }

    /// The place and whether its thread was created.
    fn from_chat_ref(run: RunId, v: &Value) -> Option<(Self, bool)> {
        let id = |k: &str| -> Option<u64> {
            match &v[k] {
                Value::String(s) => s.parse().ok(),
                Value::Number(n) => n.as_u64(),
                _ => None,
            }
            .filter(|n| *n != 0)
        };
        Some((
            Self {
                run,
                guild: GuildId::new(id("guild")?),
                channel: ChannelId::new(id("channel")?),
                message: MessageId::new(id("message")?),
                requester: UserId::new(id("requester")?),
            },
            id("thread").is_some(),
        ))
    }
}

/// A run awaiting approval.
struct Slot {
    place: Place,
    plan: Plan,
    plan_text: String,
    expires_unix: i64,
    state: Mutex<SlotState>,
}

struct SlotState {
    approval: PendingApproval,
    open: bool,
    timer: Option<AbortHandle>,
    permit: Option<OpenRun>,
}

impl Slot {
    fn run(&self) -> RunId {
        self.place.run
    }
}

/// The plan message: the plan, then its state line; the plan is cut first if too long.
fn compose(plan_text: &str, state: &PlanState) -> String {
    let line = state_line(state);
    let room = super::post::MAX_CONTENT.saturating_sub(line.chars().count() + 2);
    let plan: String = if plan_text.chars().count() > room {
        plan_text.chars().take(room).collect::<String>() + "…"
    } else {
        plan_text.to_owned()
    };
    format!("{plan}\n{line}")
}

fn mention(user: UserId) -> String {
    format!("<@{}>", user.get())
}

/// How a command's author is addressed in replies.
fn author(cmd: &CommandInteraction) -> (UserId, String, Vec<String>) {
    match &cmd.member {
        Some(m) => (
            m.user.id,
            reactions::display_name(m),
            reactions::role_ids(m),
        ),
        None => (cmd.user.id, cmd.user.name.clone(), Vec::new()),
    }
}

fn short_id(id: &str) -> &str {
    &id[..8.min(id.len())]
}

impl Bot {
    pub fn new(engine: Engine, policy: ApprovalPolicy, settings: DiscordSettings) -> Self {
        let limits = Limits::new(
            settings.commands_per_minute,
            settings.command_burst,
            settings.max_open_runs,
        );
        Self {
            ids: Identities::new(&settings.linked_accounts),
            engine,
            policy,
            settings,
            limits,
            pending: DashMap::new(),
            me: OnceLock::new(),
            first_ready: AtomicBool::new(false),
            started: watch::channel(false).0,
            seen: std::sync::Mutex::new(Seen::default()),
        }
    }

    /// Runs awaiting approval in this process.
    pub fn pending_runs(&self) -> usize {
        self.pending.len()
    }

    /// Whether the runs an earlier process left have been settled and taken up again.
    pub fn started(&self) -> bool {
        *self.started.borrow()
    }

    /// Waits until [`Bot::started`].
    pub async fn wait_started(&self) {
        let mut rx = self.started.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The bot as an actor in the audit log (expiry).
    fn system_actor(&self) -> Actor {
        let id = self
            .me
            .get()
            .map(|u| u.get().to_string())
            .unwrap_or_else(|| "fixbot".into());
        Actor::new(id, "fixbot")
    }

    /// On every READY: registers the slash commands. On the first one, before any new work is
    /// taken: settles the runs an earlier process died in, and takes up those it left awaiting
    /// approval (see [`Bot::startup`]).
    pub async fn on_ready(self: &Arc<Self>, poster: &Poster, ready: Ready) {
        let _ = self.me.set(ready.user.id);
        tracing::info!(user = %ready.user.id, guilds = self.settings.guild_ids.len(), "connected to the Discord gateway");
        if !self.first_ready.swap(true, Ordering::AcqRel) {
            let bot = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(600));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match bot.upgrade() {
                        Some(b) => b.limits.forget_idle(),
                        None => break,
                    }
                }
            });
            self.startup(poster).await;
        } else if self.started() {
            // A new session: reactions made while disconnected were not delivered.
            self.catch_up(poster).await;
        }
        for g in &self.settings.guild_ids {
            if let Err(e) = poster
                .http()
                .create_guild_commands(GuildId::new(*g), &commands::definitions())
                .await
            {
                tracing::error!(guild = g, error = %super::post::describe(&e), "could not register the slash commands");
            }
        }
    }

    /// Settles interrupted runs (each thread is told), then takes up the runs awaiting approval
    /// with their original expiry and the reactions made while the bot was offline. Commands are
    /// refused and reactions wait until this is done.
    async fn startup(self: &Arc<Self>, poster: &Poster) {
        let begun = std::time::Instant::now();
        let settled = self.recover_interrupted(poster).await;
        let adopted = self.adopt_pending(poster).await;
        self.started.send_replace(true);
        tracing::info!(
            settled,
            adopted,
            ms = begun.elapsed().as_millis() as u64,
            "runs left by an earlier process are settled; taking new work"
        );
    }

    /// The run's place in Discord, from the store.
    fn place_of(&self, run: RunId) -> Option<(Place, bool)> {
        match self.engine.store().chat_ref(&run.to_string()) {
            Ok(Some(v)) => Place::from_chat_ref(run, &v),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(run = %run, error = %format!("{e:#}"), "could not read where the run is shown");
                None
            }
        }
    }

    fn save_place(&self, place: &Place, thread_created: bool) {
        if let Err(e) = self
            .engine
            .store()
            .set_chat_ref(&place.run.to_string(), &place.chat_ref(thread_created))
        {
            tracing::error!(run = %place.run, error = %format!("{e:#}"), "could not store where the run is shown; a restart will not find its plan message");
        }
    }

    /// Approvers recorded in the store, by name.
    fn approver_names(&self, run: RunId) -> Vec<String> {
        self.engine
            .store()
            .approvers(&run.to_string())
            .map(|v| v.into_iter().map(|(_, name)| name).collect())
            .unwrap_or_default()
    }

    /// Runs an earlier process left approved or running are executed or settled by the engine;
    /// each run's events go to its thread, in order.
    async fn recover_interrupted(self: &Arc<Self>, poster: &Poster) -> usize {
        let approved_only: HashSet<String> =
            match self.engine.store().runs_in_state(RunState::Approved) {
                Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "could not read approved runs");
                    HashSet::new()
                }
            };
        let relays = std::sync::Mutex::new(Vec::new());
        let result =
            self.engine
                .recover(|plan| {
                    let (reporter, rx) = Reporter::channel();
                    let bot = Arc::clone(self);
                    let poster = poster.clone();
                    let plan = plan.clone();
                    let approved = approved_only.contains(&plan.run.to_string());
                    let relay = tokio::spawn(async move {
                        bot.relay_recovered(&poster, plan, rx, approved).await
                    });
                    if let Ok(mut r) = relays.lock() {
                        r.push(relay);
                    }
                    reporter
                })
                .await;
        let relays = relays.into_inner().unwrap_or_default();
        for relay in relays {
            // Each relay ends when its reporter is dropped, i.e. when its run is settled.
            let _ = relay.await;
        }
        match result {
            Ok(settled) => settled.len(),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "recovering interrupted runs failed; check `/fix-status` and the journal");
                0
            }
        }
    }

    /// Posts a recovered run's events in its thread, then its final state on the plan message.
    async fn relay_recovered(
        &self,
        poster: &Poster,
        plan: Plan,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
        approved_only: bool,
    ) {
        let Some((place, _)) = self.place_of(plan.run) else {
            // Not shown in Discord (e.g. planned by another front end): the log has it.
            while let Some(ev) = rx.recv().await {
                if let RunEvent::Finished(s) = ev {
                    tracing::warn!(run = %plan.run, outcome = %s.outcome.state(), message = %s.message, "a run left by an earlier process was settled");
                }
            }
            return;
        };
        if approved_only {
            self.thread_say(
                poster,
                &place,
                "ℹ the bot restarted after this run was approved and before it started; starting it now.",
                &[],
            )
            .await;
        }
        let mut outcome = None;
        while let Some(ev) = rx.recv().await {
            if let RunEvent::Finished(s) = &ev {
                outcome = Some(s.outcome);
            }
            self.post_event(poster, &place, ev).await;
        }
        if let Some(outcome) = outcome {
            let text = compose(
                &plan_message(&plan, self.policy.ttl),
                &PlanState::Finished {
                    outcome,
                    approved_by: self.approver_names(plan.run),
                },
            );
            self.edit_message(poster, &place, &text).await;
        }
    }

    /// Takes up every run still awaiting approval; returns how many.
    async fn adopt_pending(self: &Arc<Self>, poster: &Poster) -> usize {
        let waiting = match self.engine.awaiting_approval() {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read the runs awaiting approval");
                return 0;
            }
        };
        let n = waiting.len();
        // A few at a time: each takes several requests (reactions, members, the thread).
        let mut tasks = tokio::task::JoinSet::new();
        for (plan, created_at_ms) in waiting {
            if tasks.len() >= ADOPT_AT_ONCE {
                let _ = tasks.join_next().await;
            }
            let bot = Arc::clone(self);
            let poster = poster.clone();
            tasks.spawn(async move { bot.adopt(&poster, plan, created_at_ms).await });
        }
        while tasks.join_next().await.is_some() {}
        n
    }

    /// Takes up one run an earlier process left awaiting approval: the TTL runs on from its
    /// creation, approvals already recorded still count, and reactions made while the bot was
    /// offline are read back and judged like live ones.
    async fn adopt(self: &Arc<Self>, poster: &Poster, plan: Plan, created_at_ms: i64) {
        let run = plan.run;
        let Some((place, thread_created)) = self.place_of(run) else {
            // Never posted (the earlier process died before the plan message, or another front
            // end planned it): nobody can approve it here.
            match self
                .engine
                .close_unexecuted_by(run, RunState::Cancelled, &self.system_actor())
            {
                Ok(_) => {
                    tracing::warn!(run = %run, upn = %plan.upn, "a run awaiting approval has no plan message in Discord; closed as cancelled — the requester must run the command again")
                }
                Err(e) => {
                    tracing::error!(run = %run, error = %format!("{e:#}"), "could not close a run without a plan message")
                }
            }
            return;
        };
        let expires_ms = created_at_ms + self.policy.ttl.as_millis() as i64;
        let approvals = self
            .engine
            .store()
            .approvers(&run.to_string())
            .unwrap_or_default()
            .into_iter()
            .map(|(id, name)| Actor::new(id, name))
            .collect();
        let slot = Arc::new(Slot {
            place,
            plan_text: plan_message(&plan, self.policy.ttl),
            expires_unix: (expires_ms + 999) / 1000,
            state: Mutex::new(SlotState {
                approval: PendingApproval::with_approvals(
                    run,
                    plan.requester.clone(),
                    created_at_ms,
                    approvals,
                ),
                open: true,
                timer: None,
                permit: self.limits.try_open(),
            }),
            plan,
        });
        let mut st = slot.state.lock().await;
        if now_ms() >= expires_ms {
            return self.expire_locked(poster, &slot, &mut st, true, true).await;
        }
        self.pending.insert(place.message.get(), Arc::clone(&slot));
        if !thread_created {
            // The earlier process died while setting the plan up: finish that first.
            match self.set_up(poster, &slot).await {
                Ok(()) => self.save_place(&place, true),
                Err(e) => {
                    tracing::warn!(run = %run, error = %super::post::describe(&e), "could not finish setting up a plan taken up after a restart")
                }
            }
        }
        self.thread_say(
            poster,
            &place,
            &format!(
                "🔄 the bot restarted; this plan still awaits approval (expires <t:{}:R>). Reactions made meanwhile are read back now; new ones count as usual.",
                slot.expires_unix
            ),
            &[],
        )
        .await;
        self.read_back(poster, &slot, &mut st).await;
        if !st.open {
            return;
        }
        let have = self
            .engine
            .store()
            .approvers(&run.to_string())
            .map_or(0, |v| v.len() as u32);
        self.edit_plan(
            poster,
            &slot,
            &PlanState::Awaiting {
                expires_unix: slot.expires_unix,
                have,
                need: self.policy.approvals_required,
            },
        )
        .await;
        st.timer = Some(self.start_timer(poster, &slot, expires_ms));
    }

    /// Reads the plan message's ✅/❌ reactions back and judges each like a live one: reactions
    /// the gateway did not deliver (the bot was offline, or its session was lost). Votes already
    /// counted are recognised and pass silently. ❌ first: a rejection wins over approvals.
    async fn read_back(self: &Arc<Self>, poster: &Poster, slot: &Arc<Slot>, st: &mut SlotState) {
        let place = slot.place;
        let run = place.run;
        let mut unreadable = Vec::new();
        for (emoji, vote) in [(REJECT, Vote::Reject), (reactions::APPROVE, Vote::Approve)] {
            let users = match self.reactors(poster, &place, emoji).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(run = %run, error = %super::post::describe(&e), "could not read reactions back");
                    self.thread_say(
                        poster,
                        &place,
                        &format!("⚠ the {emoji} reactions made while the bot was offline could not be read back ({}); if you reacted meanwhile, remove your reaction and react again.", super::post::describe(&e)),
                        &[],
                    )
                    .await;
                    continue;
                }
            };
            for user in users {
                if !st.open {
                    break;
                }
                if Some(&user.id) == self.me.get() {
                    continue;
                }
                let Some(voter) = self.member_voter(poster, place.guild, &user).await else {
                    unreadable.push(sanitize(&user.name, 64));
                    continue;
                };
                self.judge(poster, slot, st, &voter, vote).await;
            }
            if !st.open {
                break;
            }
        }
        if !unreadable.is_empty() {
            self.thread_say(
                poster,
                &place,
                &format!("⚠ the roles of {} could not be read, so their reactions were not counted; remove the reaction and react again.", unreadable.join(", ")),
                &[],
            )
            .await;
        }
    }

    /// After a new gateway session (not a resume, which replays what was missed): reads back the
    /// reactions on every plan still awaiting approval.
    async fn catch_up(self: &Arc<Self>, poster: &Poster) {
        let slots: Vec<Arc<Slot>> = self.pending.iter().map(|s| Arc::clone(s.value())).collect();
        for slot in slots {
            let mut st = slot.state.lock().await;
            if st.open {
                self.read_back(poster, &slot, &mut st).await;
            }
        }
    }

    /// Everyone who reacted with `emoji` on the plan message, in pages (bounded).
    async fn reactors(
        &self,
        poster: &Poster,
        place: &Place,
        emoji: &str,
    ) -> serenity::Result<Vec<User>> {
        let kind = ReactionType::Unicode(emoji.to_owned());
        let mut out: Vec<User> = Vec::new();
        let mut after = None;
        for _ in 0..REACTION_PAGES {
            let page = poster
                .http()
                .get_reaction_users(place.channel, place.message, &kind, 100, after)
                .await?;
            let full = page.len() == 100;
            after = page.last().map(|u| u.id.get());
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
        tracing::warn!(run = %place.run, emoji, "more reactors than are read back; the rest are not counted");
        Ok(out)
    }

    /// A reactor as a voter, with roles read from the guild. `None` when they cannot be read;
    /// someone who left the guild has no roles.
    async fn member_voter(&self, poster: &Poster, guild: GuildId, user: &User) -> Option<Voter> {
        match poster.http().get_member(guild, user.id).await {
            Ok(m) => Some(Voter {
                user: user.id,
                actor: self.ids.actor(user.id, &reactions::display_name(&m)),
                roles: reactions::role_ids(&m),
                is_bot: user.bot,
            }),
            Err(serenity::Error::Http(serenity::all::HttpError::UnsuccessfulRequest(r)))
                if r.status_code.as_u16() == 404 =>
            {
                Some(Voter {
                    user: user.id,
                    actor: self.ids.actor(user.id, &user.name),
                    roles: Vec::new(),
                    is_bot: user.bot,
                })
            }
            Err(e) => {
                tracing::warn!(user = %user.id, error = %super::post::describe(&e), "could not read a reactor's roles");
                None
            }
        }
    }

    /// `true` the first time an interaction id is seen.
    fn first_sight(&self, id: u64) -> bool {
        self.seen.lock().map(|mut s| s.first(id)).unwrap_or(true)
    }

    fn place_ok(&self, guild: Option<GuildId>, channel: ChannelId) -> Result<(), String> {
        if !guild.is_some_and(|g| self.settings.guild_ids.contains(&g.get())) {
            return Err("this bot only takes commands in its own server.".into());
        }
        if !self.settings.channel_ids.contains(&channel.get()) {
            let list: Vec<String> = self
                .settings
                .channel_ids
                .iter()
                .map(|c| format!("<#{c}>"))
                .collect();
            return Err(format!(
                "repair commands are taken only in {}.",
                list.join(", ")
            ));
        }
        Ok(())
    }

    pub async fn on_command(self: &Arc<Self>, poster: &Poster, cmd: CommandInteraction) {
        // The same interaction delivered twice (a replay after a resume) is answered once.
        if !self.first_sight(cmd.id.get()) {
            tracing::debug!(interaction = %cmd.id, "an interaction delivered twice is ignored");
            return;
        }
        let (user, name, roles) = author(&cmd);
        if !self.started() {
            return self
                .reply(poster, &cmd, "⏳ the bot has just restarted and is settling the runs it left; try again in a minute. Nothing was done.")
                .await;
        }
        // Local checks first: they answer at once, ephemerally, with one request.
        if let Err(wait) = self.limits.check_user(user.get()) {
            let text = format!(
                "⏱ you are sending commands too fast; try again {}. Nothing was done.",
                retry_in(wait)
            );
            return self.reply(poster, &cmd, &text).await;
        }
        if let Err(why) = self.place_ok(cmd.guild_id, cmd.channel_id) {
            return self.reply(poster, &cmd, &format!("⛔ {why}")).await;
        }
        let options = commands::string_options(&cmd.data);
        let command = match commands::parse(&cmd.data.name, &options) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .reply(poster, &cmd, &format!("⛔ {e}. Nothing was done."))
                    .await
            }
        };
        let actor = self.ids.actor(user, &name);
        match command {
            Command::Fix {
                user: upn,
                immutable_id,
                reason,
            } => {
                self.fix(
                    poster,
                    &cmd,
                    actor,
                    user,
                    &roles,
                    &upn,
                    immutable_id.as_deref(),
                    reason.as_deref(),
                )
                .await
            }
            Command::Status { run } => {
                if !self.policy.may_request(&roles) && !self.policy.may_approve(&roles) {
                    return self
                        .reply(
                            poster,
                            &cmd,
                            "⛔ only requesters and approvers can see repair status.",
                        )
                        .await;
                }
                if let Err(e) = poster.defer_ephemeral(&cmd).await {
                    return tracing::warn!(error = %super::post::describe(&e), "could not acknowledge /fix-status");
                }
                let text = self.status(run.as_deref());
                self.edit_reply(poster, &cmd, &text).await;
            }
            Command::Cancel { run } => {
                if let Err(e) = poster.defer_ephemeral(&cmd).await {
                    return tracing::warn!(error = %super::post::describe(&e), "could not acknowledge /cancel");
                }
                let text = self.cancel(poster, &actor, &roles, &run).await;
                self.edit_reply(poster, &cmd, &text).await;
            }
        }
    }

    async fn reply(&self, poster: &Poster, cmd: &CommandInteraction, text: &str) {
        if let Err(e) = poster.reply_ephemeral(cmd, text).await {
            tracing::warn!(command = %cmd.data.name, error = %super::post::describe(&e), "could not answer an interaction");
        }
    }

    async fn edit_reply(&self, poster: &Poster, cmd: &CommandInteraction, text: &str) {
        if let Err(e) = poster.edit_reply(cmd, text).await {
            tracing::warn!(command = %cmd.data.name, error = %super::post::describe(&e), "could not edit a deferred reply");
        }
    }

    /// When the next place for a run frees up at the latest: the earliest expiry, if any.
    fn cap_message(&self) -> String {
        let earliest = self.pending.iter().map(|s| s.expires_unix).min();
        let when = match earliest {
            Some(t) => format!("when one finishes or expires (at the latest <t:{t}:R>)"),
            None => "when a running repair finishes (usually within a minute)".to_owned(),
        };
        format!(
            "⏳ {} repairs are open (the limit is {}); try again {when}. Nothing was done.",
            self.limits.open_runs(),
            self.limits.max_open()
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn fix(
        self: &Arc<Self>,
        poster: &Poster,
        cmd: &CommandInteraction,
        actor: Actor,
        user: UserId,
        roles: &[String],
        upn: &str,
        immutable_id: Option<&str>,
        reason: Option<&str>,
    ) {
        if !self.policy.may_request(roles) {
            return self
                .reply(poster, cmd, "⛔ you do not hold a requester role, so you cannot ask for repairs. Nothing was done.")
                .await;
        }
        let req = match RepairRequest::parse(actor.clone(), upn, immutable_id, reason) {
            Ok(r) => r,
            Err(e) => {
                let text = format!("⛔ {} Nothing was done.", sanitize(&e.to_string(), 400));
                return self.reply(poster, cmd, &text).await;
            }
        };
        let Some(permit) = self.limits.try_open() else {
            let text = self.cap_message();
            return self.reply(poster, cmd, &text).await;
        };
        if let Err(e) = poster.defer_ephemeral(cmd).await {
            tracing::warn!(error = %super::post::describe(&e), "could not acknowledge /fix-immutable-id; not planning");
            return;
        }
        let plan = match self.engine.plan(&req).await {
            Ok(p) => p,
            Err(PlanError::Refused(r)) => {
                let text = format!(
                    "⛔ refused: {} Nothing was changed.",
                    sanitize(&r.to_string(), 1500)
                );
                return self.edit_reply(poster, cmd, &text).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "planning failed");
                let text = format!(
                    "⚠ could not plan: {}. Nothing was changed; try again in a minute.",
                    sanitize(&e.to_string(), 1500)
                );
                return self.edit_reply(poster, cmd, &text).await;
            }
        };
        let Some(guild) = cmd.guild_id else { return };
        // The TTL runs from the run's creation in the store, which a restart keeps.
        let created = self
            .engine
            .store()
            .run(&plan.run.to_string())
            .ok()
            .flatten()
            .map_or_else(now_ms, |r| r.created_at_ms);
        let expires_ms = created + self.policy.ttl.as_millis() as i64;
        let expires_unix = (expires_ms + 999) / 1000;
        let plan_text = plan_message(&plan, self.policy.ttl);
        let first = compose(
            &plan_text,
            &PlanState::Awaiting {
                expires_unix,
                have: 0,
                need: self.policy.approvals_required,
            },
        );
        let message = match poster.send(cmd.channel_id, &first, &[]).await {
            Ok(m) => m,
            Err(e) => {
                let why = super::post::describe(&e);
                let _ = self.engine.close_unexecuted_by(
                    plan.run,
                    RunState::Cancelled,
                    &self.system_actor(),
                );
                let text = format!("⚠ could not post the plan in this channel ({why}); nothing was changed. Check the bot's permissions (Send Messages, Add Reactions, Create Public Threads).");
                return self.edit_reply(poster, cmd, &text).await;
            }
        };
        let place = Place {
            run: plan.run,
            guild,
            channel: cmd.channel_id,
            message,
            requester: user,
        };
        // Stored at once: a restart from here on finds the plan message.
        self.save_place(&place, false);
        let slot = Arc::new(Slot {
            place,
            plan_text,
            expires_unix,
            state: Mutex::new(SlotState {
                approval: PendingApproval::new(plan.run, actor, created),
                open: true,
                timer: None,
                permit: Some(permit),
            }),
            plan,
        });
        // Hold the run while it is set up: an approver fast enough to react before the thread
        // exists waits here instead of finding no thread.
        let mut st = slot.state.lock().await;
        self.pending.insert(message.get(), Arc::clone(&slot));
        if let Err(e) = self.set_up(poster, &slot).await {
            let why = super::post::describe(&e);
            self.close(&slot, &mut st, true);
            let _ = self.engine.close_unexecuted_by(
                slot.run(),
                RunState::Cancelled,
                &self.system_actor(),
            );
            self.edit_message(
                poster,
                &place,
                &compose(&slot.plan_text, &PlanState::Abandoned { why: why.clone() }),
            )
            .await;
            let text = format!("⚠ could not set up the approval ({why}); nothing was changed. Check the bot's permissions (Add Reactions, Create Public Threads, Send Messages in Threads).");
            return self.edit_reply(poster, cmd, &text).await;
        }
        self.save_place(&place, true);
        st.timer = Some(self.start_timer(poster, &slot, expires_ms));
        drop(st);
        let link = format!(
            "https://discord.com/channels/{}/{}/{}",
            guild.get(),
            place.channel.get(),
            message.get()
        );
        let text = format!(
            "📝 plan posted for {} (run `{}`): {link}\nAn approver reacts ✅ on it (❌ rejects); it expires <t:{expires_unix}:R>. Steps will be posted in its thread.",
            slot.plan.upn,
            slot.run().short()
        );
        self.edit_reply(poster, cmd, &text).await;
    }

    /// Seeds ✅ and ❌ on the plan message and starts its thread (idempotent on Discord's side
    /// for the reactions; the thread is created once).
    async fn set_up(&self, poster: &Poster, slot: &Slot) -> serenity::Result<()> {
        let p = &slot.place;
        poster
            .react(p.channel, p.message, reactions::APPROVE)
            .await?;
        poster.react(p.channel, p.message, REJECT).await?;
        let name = format!("fix {} · {}", slot.plan.upn, slot.run().short());
        match poster
            .thread(
                p.channel,
                p.message,
                &name,
                self.settings.thread_auto_archive_minutes,
            )
            .await
        {
            Ok(_) => Ok(()),
            // Created before (by a process that died before recording it): it is there.
            Err(serenity::Error::Http(serenity::all::HttpError::UnsuccessfulRequest(r)))
                if r.error.code == THREAD_ALREADY_CREATED =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Expires the run at `expires_ms` unless it has moved on by then.
    fn start_timer(
        self: &Arc<Self>,
        poster: &Poster,
        slot: &Arc<Slot>,
        expires_ms: i64,
    ) -> AbortHandle {
        let wait = Duration::from_millis((expires_ms - now_ms()).max(0) as u64);
        let bot = Arc::clone(self);
        let slot = Arc::clone(slot);
        let poster = poster.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            bot.expire(&poster, &slot).await;
        })
        .abort_handle()
    }

    /// Closes a run that never executed; the caller holds its lock and has moved it in the store.
    fn close(&self, slot: &Slot, st: &mut SlotState, abort_timer: bool) {
        st.open = false;
        st.permit = None;
        if let Some(t) = st.timer.take() {
            if abort_timer {
                t.abort();
            }
        }
        self.pending.remove(&slot.place.message.get());
    }

    async fn expire(&self, poster: &Poster, slot: &Slot) {
        let mut st = slot.state.lock().await;
        if !st.open {
            return;
        }
        self.expire_locked(poster, slot, &mut st, false, false)
            .await;
    }

    /// Closes the run as expired; says so only if this moved it (not if it moved on elsewhere).
    async fn expire_locked(
        &self,
        poster: &Poster,
        slot: &Slot,
        st: &mut SlotState,
        abort: bool,
        while_offline: bool,
    ) {
        let moved = match self.engine.close_unexecuted_by(
            slot.run(),
            RunState::Expired,
            &self.system_actor(),
        ) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(run = %slot.run(), error = %format!("{e:#}"), "could not record the expiry");
                true
            }
        };
        self.close(slot, st, abort);
        if !moved {
            return;
        }
        let requester = slot.place.requester;
        let text = if while_offline {
            format!(
                "⌛ this plan expired <t:{}:R>, while the bot was offline, without enough approvals; nothing was changed. {}, run the command again if it is still needed.",
                slot.expires_unix,
                mention(requester)
            )
        } else {
            format!(
                "⌛ this plan expired after {} min without enough approvals; nothing was changed. {}, run the command again if it is still needed.",
                self.policy.ttl.as_secs().div_ceil(60),
                mention(requester)
            )
        };
        self.thread_say(poster, &slot.place, &text, &[requester])
            .await;
        self.edit_plan(poster, slot, &PlanState::Expired).await;
    }

    async fn thread_say(&self, poster: &Poster, place: &Place, text: &str, ping: &[UserId]) {
        if let Err(e) = poster.send(place.thread(), text, ping).await {
            tracing::warn!(run = %place.run, error = %super::post::describe(&e), "could not post in the run's thread");
        }
    }

    async fn edit_plan(&self, poster: &Poster, slot: &Slot, state: &PlanState) {
        self.edit_message(poster, &slot.place, &compose(&slot.plan_text, state))
            .await;
    }

    async fn edit_message(&self, poster: &Poster, place: &Place, text: &str) {
        if let Err(e) = poster.edit(place.channel, place.message, text).await {
            tracing::warn!(run = %place.run, error = %super::post::describe(&e), "could not update the plan message");
        }
    }

    pub async fn on_reaction(self: &Arc<Self>, poster: &Poster, reaction: Reaction) {
        let Some(user) = reaction.user_id else { return };
        // The bot's own seeded ✅/❌ come back as events: not votes, and nothing to say.
        if Some(&user) == self.me.get() {
            return;
        }
        let Some(vote) = reactions::vote_of(&reaction.emoji) else {
            return;
        };
        // Until the runs left from before are taken up, their slots do not exist yet.
        self.wait_started().await;
        let Some(slot) = self
            .pending
            .get(&reaction.message_id.get())
            .map(|s| Arc::clone(s.value()))
        else {
            return;
        };
        if reaction.channel_id != slot.place.channel || reaction.guild_id != Some(slot.place.guild)
        {
            return;
        }
        let Some(voter) = reactions::voter(&reaction, &self.ids) else {
            return;
        };
        let mut st = slot.state.lock().await;
        if !st.open {
            // Already approved, rejected, expired or cancelled: a late or replayed reaction.
            return;
        }
        self.judge(poster, &slot, &mut st, &voter, vote).await;
    }

    /// Applies one vote under the run's lock: the policy in memory says whether it counts, the
    /// store records it and decides, atomically, whether this vote approved or rejected the run.
    async fn judge(
        self: &Arc<Self>,
        poster: &Poster,
        slot: &Arc<Slot>,
        st: &mut SlotState,
        voter: &Voter,
        vote: Vote,
    ) {
        let verdict = st.approval.vote(
            &self.policy,
            &voter.actor,
            &voter.roles,
            voter.is_bot,
            vote,
            now_ms(),
        );
        match verdict {
            // Discord cannot deliver one person's ✅ twice except as a replay (or a read-back
            // of a vote already counted): nothing new to say.
            Verdict::Ignored {
                reason: Ignored::AlreadyCounted,
                ..
            } => {}
            Verdict::Ignored { reason, first_time } => {
                if first_time {
                    let text = ignored_line(&voter.actor.name, reason);
                    self.thread_say(poster, &slot.place, &text, &[]).await;
                }
            }
            Verdict::Expired => self.expire_locked(poster, slot, st, true, false).await,
            Verdict::Counted { .. } | Verdict::Approved { .. } => {
                self.record_approval(poster, slot, st, &voter.actor).await
            }
            Verdict::Rejected { by } => self.record_rejection(poster, slot, st, &by).await,
        }
    }

    async fn record_approval(
        self: &Arc<Self>,
        poster: &Poster,
        slot: &Arc<Slot>,
        st: &mut SlotState,
        voter: &Actor,
    ) {
        let need = self.policy.approvals_required;
        match self
            .engine
            .record_vote(&slot.plan, voter, VoteKind::Approve, need)
        {
            Ok(Some((have, false))) => {
                let text = format!(
                    "✅ approval {have}/{need} from {}",
                    sanitize(&voter.name, 64)
                );
                self.thread_say(poster, &slot.place, &text, &[]).await;
                self.edit_plan(
                    poster,
                    slot,
                    &PlanState::Awaiting {
                        expires_unix: slot.expires_unix,
                        have,
                        need,
                    },
                )
                .await;
            }
            Ok(Some((_, true))) => {
                let mut names = self.approver_names(slot.run());
                if names.is_empty() {
                    names.push(voter.name.clone());
                }
                let permit = st.permit.take();
                self.close(slot, st, true);
                let bot = Arc::clone(self);
                let poster = poster.clone();
                let slot = Arc::clone(slot);
                tokio::spawn(async move { bot.execute(&poster, slot, names, permit).await });
            }
            Ok(None) => {
                // Moved on elsewhere (a cancel or expiry that won the race).
                self.close(slot, st, true);
            }
            Err(e) => {
                tracing::error!(run = %slot.run(), error = %format!("{e:#}"), "could not record an approval");
                let _ = self.engine.close_unexecuted_by(
                    slot.run(),
                    RunState::Cancelled,
                    &self.system_actor(),
                );
                self.close(slot, st, true);
                self.thread_say(
                    poster,
                    &slot.place,
                    "⚠ the approval could not be recorded, so nothing was executed and this plan is closed. Run the command again.",
                    &[],
                )
                .await;
                self.edit_plan(
                    poster,
                    slot,
                    &PlanState::Abandoned {
                        why: "the approval could not be recorded".into(),
                    },
                )
                .await;
            }
        }
    }

    async fn record_rejection(&self, poster: &Poster, slot: &Slot, st: &mut SlotState, by: &Actor) {
        let need = self.policy.approvals_required;
        let moved = match self
            .engine
            .record_vote(&slot.plan, by, VoteKind::Reject, need)
        {
            Ok(Some((_, true))) => true,
            // Recorded before but not applied (should not happen): close it explicitly.
            Ok(Some((_, false))) => self
                .engine
                .close_unexecuted_by(slot.run(), RunState::Rejected, by)
                .unwrap_or(false),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(run = %slot.run(), error = %format!("{e:#}"), "could not record a rejection");
                let _ = self
                    .engine
                    .close_unexecuted_by(slot.run(), RunState::Rejected, by);
                true
            }
        };
        self.close(slot, st, true);
        if !moved {
            return;
        }
        let text = format!(
            "❌ rejected by {}; nothing was changed.",
            sanitize(&by.name, 64)
        );
        self.thread_say(poster, &slot.place, &text, &[]).await;
        self.edit_plan(
            poster,
            slot,
            &PlanState::Rejected {
                by: by.name.clone(),
            },
        )
        .await;
    }

    /// Executes an approved run; every event goes to the thread with the bot token, in order.
    /// Runs in its own task: a gateway disconnect does not stop it, REST goes on regardless.
    async fn execute(
        self: Arc<Self>,
        poster: &Poster,
        slot: Arc<Slot>,
        names: Vec<String>,
        permit: Option<OpenRun>,
    ) {
        let place = slot.place;
        let shown: Vec<String> = names.iter().map(|n| sanitize(n, 64)).collect();
        self.thread_say(
            poster,
            &place,
            &format!("✅ approved by {} — starting", shown.join(", ")),
            &[],
        )
        .await;
        self.edit_plan(
            poster,
            &slot,
            &PlanState::Running {
                approved_by: names.clone(),
            },
        )
        .await;

        let (reporter, mut rx) = Reporter::channel();
        let engine = self.engine.clone();
        let plan = slot.plan.clone();
        let mut exec = tokio::spawn(async move { engine.execute(&plan, &reporter).await });
        let mut summary_posted = false;
        let result = loop {
            tokio::select! {
                Some(ev) = rx.recv() => {
                    summary_posted |= self.post_event(poster, &place, ev).await;
                }
                res = &mut exec => break res,
            }
        };
        while let Ok(ev) = rx.try_recv() {
            summary_posted |= self.post_event(poster, &place, ev).await;
        }
        let outcome = match result {
            Ok(summary) => {
                if !summary_posted {
                    self.post_summary(poster, &place, &summary).await;
                }
                summary.outcome
            }
            Err(e) => {
                tracing::error!(run = %place.run, error = %e, "the run's task failed");
                self.thread_say(
                    poster,
                    &place,
                    "🚨 the run stopped with an internal error; check the journal (`/fix-status run`) before doing anything else.",
                    &[place.requester],
                )
                .await;
                RunOutcome::NeedsAttention
            }
        };
        self.edit_plan(
            poster,
            &slot,
            &PlanState::Finished {
                outcome,
                approved_by: names,
            },
        )
        .await;
        drop(permit);
    }

    /// Posts one run event; `true` when it was the summary.
    async fn post_event(&self, poster: &Poster, place: &Place, ev: RunEvent) -> bool {
        match ev {
            RunEvent::Started { .. } => false,
            RunEvent::Note { text, .. } => {
                self.thread_say(poster, place, &format!("ℹ {text}"), &[])
                    .await;
                false
            }
            RunEvent::Step(r) => {
                self.thread_say(poster, place, &step_line(&r), &[]).await;
                false
            }
            RunEvent::Finished(s) => {
                self.post_summary(poster, place, &s).await;
                true
            }
        }
    }

    async fn post_summary(&self, poster: &Poster, place: &Place, s: &RunSummary) {
        let text = format!(
            "{} · requested by {}",
            summary_line(s),
            mention(place.requester)
        );
        self.thread_say(poster, place, &text, &[place.requester])
            .await;
    }

    /// Finds a run awaiting approval by id or prefix (at least 4 characters).
    fn find_pending(&self, run: &str) -> Result<Arc<Slot>, String> {
        let key = run.trim().to_ascii_lowercase();
        if key.len() < 4 || !key.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(format!(
                "`{}` is not a run id; give at least its first 4 characters as shown in the plan.",
                sanitize(run, 40).replace('`', "'")
            ));
        }
        let found: Vec<Arc<Slot>> = self
            .pending
            .iter()
            .filter(|s| {
                s.run().to_string().starts_with(&key)
                    || s.run().as_uuid().simple().to_string().starts_with(&key)
            })
            .map(|s| Arc::clone(s.value()))
            .collect();
        match found.len() {
            1 => Ok(found.into_iter().next().expect("one")),
            0 => Err(match self.engine.store().runs_by_prefix(&key) {
                Ok(rows) if rows.len() == 1 => format!(
                    "run `{}` is {}; only a run awaiting approval can be cancelled.",
                    short_id(&rows[0].id),
                    rows[0].state.as_str().replace('_', " ")
                ),
                _ => format!("no run awaiting approval starts with `{key}`."),
            }),
            n => Err(format!(
                "{n} runs start with `{key}`; give more characters."
            )),
        }
    }

    async fn cancel(&self, poster: &Poster, actor: &Actor, roles: &[String], run: &str) -> String {
        let slot = match self.find_pending(run) {
            Ok(s) => s,
            Err(e) => return format!("⛔ {e}"),
        };
        let mut st = slot.state.lock().await;
        let own = st.approval.requester.id == actor.id;
        if !own && !self.policy.may_approve(roles) {
            return "⛔ only the requester or an approver can cancel a run.".into();
        }
        if !st.open {
            return format!(
                "⛔ run `{}` is no longer awaiting approval (it was approved, rejected or expired).",
                slot.run().short()
            );
        }
        match self
            .engine
            .close_unexecuted_by(slot.run(), RunState::Cancelled, actor)
        {
            Ok(true) => {}
            Ok(false) => {
                self.close(&slot, &mut st, true);
                return format!(
                    "⛔ run `{}` has already moved on; nothing was cancelled.",
                    slot.run().short()
                );
            }
            Err(e) => {
                tracing::error!(run = %slot.run(), error = %format!("{e:#}"), "could not record a cancellation");
                return "⚠ could not record the cancellation; try again.".into();
            }
        }
        self.close(&slot, &mut st, true);
        drop(st);
        let text = format!(
            "🛑 cancelled by {}; nothing was changed.",
            sanitize(&actor.name, 64)
        );
        self.thread_say(poster, &slot.place, &text, &[]).await;
        self.edit_plan(
            poster,
            &slot,
            &PlanState::Cancelled {
                by: actor.name.clone(),
            },
        )
        .await;
        format!(
            "🛑 run `{}` for {} is cancelled.",
            slot.run().short(),
            slot.plan.upn
        )
    }

    fn status(&self, run: Option<&str>) -> String {
        match run {
            Some(r) => self.status_of(r),
            None => self.status_all(),
        }
    }

    /// Everything from the store, so it survives restarts.
    fn status_all(&self) -> String {
        let store = self.engine.store();
        let ttl_ms = self.policy.ttl.as_millis() as i64;
        let mut out = String::new();
        match store.runs_in_state(RunState::AwaitingApproval) {
            Ok(rows) => {
                out.push_str(&format!("**Awaiting approval ({})**\n", rows.len()));
                for r in rows.iter().take(10) {
                    out.push_str(&format!(
                        "• `{}` {} · by {} · expires <t:{}:R>\n",
                        short_id(&r.id),
                        sanitize(&r.upn, 100),
                        sanitize(&r.requester_name, 64),
                        (r.created_at_ms + ttl_ms + 999) / 1000
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read runs awaiting approval");
                out.push_str("(runs awaiting approval could not be read)\n");
            }
        }
        let running: anyhow::Result<Vec<_>> = [RunState::Approved, RunState::Running]
            .into_iter()
            .map(|s| store.runs_in_state(s))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(|v| v.into_iter().flatten().collect());
        match running {
            Ok(rows) => {
                out.push_str(&format!("**Running ({})**\n", rows.len()));
                for r in rows.iter().take(10) {
                    let by = store
                        .approvers(&r.id)
                        .map(|v| v.into_iter().map(|(_, n)| n).collect::<Vec<_>>())
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "• `{}` {} · by {} · approved by {} · since <t:{}:R>\n",
                        short_id(&r.id),
                        sanitize(&r.upn, 100),
                        sanitize(&r.requester_name, 64),
                        sanitize(&by.join(", "), 128),
                        r.updated_at_ms / 1000
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read running runs");
                out.push_str("(running runs could not be read)\n");
            }
        }
        match store.recent_runs(10) {
            Ok(rows) => {
                out.push_str("**Recent**\n");
                for r in rows {
                    out.push_str(&format!(
                        "• `{}` {} · {} · by {}\n",
                        short_id(&r.id),
                        sanitize(&r.upn, 100),
                        r.state.as_str().replace('_', " "),
                        sanitize(&r.requester_name, 64)
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read recent runs");
                out.push_str("(recent runs could not be read)\n");
            }
        }
        out
    }

    fn status_of(&self, run: &str) -> String {
        let key = run.trim().to_ascii_lowercase();
        if key.len() < 4 || !key.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return "⛔ give a run id, or at least its first 4 characters.".into();
        }
        let rows = match self.engine.store().runs_by_prefix(&key) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "could not read runs");
                return "⚠ could not read the store; try again.".into();
            }
        };
        let row = match rows.as_slice() {
            [one] => one,
            [] => return format!("no run starts with `{key}`."),
            many => {
                return format!(
                    "{} runs start with `{key}`; give more characters.",
                    many.len()
                )
            }
        };
        let mut out = format!(
            "**Run `{}`** {} · {} · requested by {}\n",
            short_id(&row.id),
            sanitize(&row.upn, 100),
            row.state.as_str().replace('_', " "),
            sanitize(&row.requester_name, 64)
        );
        if let Ok(by) = self.engine.store().approvers(&row.id) {
            if !by.is_empty() {
                let names: Vec<String> = by.into_iter().map(|(_, n)| n).collect();
                out.push_str(&format!(
                    "Approved by {}\n",
                    sanitize(&names.join(", "), 256)
                ));
            }
        }
        match self.engine.store().journal(&row.id) {
            Ok(entries) if entries.is_empty() => out.push_str("No writes were made.\n"),
            Ok(entries) => {
                for j in entries.iter().take(30) {
                    out.push_str(&format!(
                        "• step {} · {} · {}{}{}\n",
                        sanitize(&j.step, 16),
                        sanitize(&j.api, 64),
                        sanitize(j.outcome.as_deref().unwrap_or("no outcome recorded"), 64),
                        j.error_code
                            .as_deref()
                            .map(|c| format!(" [{}]", sanitize(c, 64)))
                            .unwrap_or_default(),
                        j.request_id
                            .as_deref()
                            .map(|r| format!(" · request-id {}", sanitize(r, 64)))
                            .unwrap_or_default(),
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the journal");
                out.push_str("(the journal could not be read)\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_keeps_the_state_line_when_the_plan_is_long() {
        let long = "x".repeat(5000);
        let s = compose(&long, &PlanState::Expired);
        assert!(s.chars().count() <= super::super::post::MAX_CONTENT);
        assert!(s.ends_with(&state_line(&PlanState::Expired)));
    }

    #[test]
    fn chat_ref_round_trips() {
        let p = Place {
            run: RunId::new(),
            guild: GuildId::new(800_000_000_000_000_001),
            channel: ChannelId::new(800_000_000_000_000_010),
            message: MessageId::new(1_000_000_000_000_000_123),
            requester: UserId::new(1001),
        };
        assert_eq!(
            Place::from_chat_ref(p.run, &p.chat_ref(true)),
            Some((p, true))
        );
        assert_eq!(
            Place::from_chat_ref(p.run, &p.chat_ref(false)),
            Some((p, false))
        );
        assert_eq!(Place::from_chat_ref(p.run, &json!({})), None);
    }

    #[test]
    fn interactions_are_seen_once_and_memory_is_bounded() {
        let mut s = Seen::default();
        assert!(s.first(1));
        assert!(!s.first(1));
        for i in 2..(SEEN_INTERACTIONS as u64 + 10) {
            s.first(i);
        }
        assert!(s.set.len() <= SEEN_INTERACTIONS);
        assert!(s.first(1), "forgotten after the bound");
    }
}
