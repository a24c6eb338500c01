//! One repair's life in Discord: command → (ephemeral) plan reply → plan message with ✅/❌ →
//! thread → votes → one execution with every step in the thread → the plan message's final state.
//!
//! Runs awaiting approval live in memory, keyed by their plan message. Each has an async mutex:
//! votes, cancellation and expiry take it in turn, and the store's atomic
//! awaiting_approval → approved transition ([`Engine::mark_approved`]) is the final gate, so two
//! approvers reacting at the same instant still execute the run once.

use super::commands::{self, Command};
use super::limits::{retry_in, Limits, OpenRun};
use super::post::Poster;
use super::reactions::{self, Identities, REJECT};
use crate::approval::{ApprovalPolicy, PendingApproval, Verdict};
use crate::chat::render::{
    ignored_line, plan_message, sanitize, state_line, step_line, summary_line, PlanState,
};
use crate::config::DiscordSettings;
use crate::domain::{Actor, RunId};
use crate::pipeline::{Engine, Plan, PlanError, RepairRequest, Reporter, RunEvent, RunSummary};
use crate::store::now_ms;
use dashmap::DashMap;
use serenity::all::{ChannelId, CommandInteraction, GuildId, MessageId, Reaction, Ready, UserId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio::task::AbortHandle;

/// The Discord front end's state, shared by every event handler task.
pub struct Bot {
    engine: Engine,
    policy: ApprovalPolicy,
    settings: DiscordSettings,
    ids: Identities,
    limits: Limits,
    /// Runs awaiting approval, by plan message id.
    pending: DashMap<u64, Arc<Slot>>,
    /// Runs executing now, for `/fix-status`.
    running: DashMap<RunId, Running>,
    me: OnceLock<UserId>,
    janitor: AtomicBool,
    /// Runs created before this are an earlier process's.
    started_ms: i64,
}

/// A run awaiting approval.
struct Slot {
    run: RunId,
    plan: Plan,
    guild: GuildId,
    channel: ChannelId,
    /// The plan message; the thread started from it has the same id.
    message: MessageId,
    requester: UserId,
    requester_name: String,
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

struct Running {
    upn: String,
    requester: String,
    approved_by: Vec<String>,
    started: Instant,
}

impl Slot {
    fn thread(&self) -> ChannelId {
        ChannelId::new(self.message.get())
    }

    fn text(&self, state: &PlanState) -> String {
        compose(&self.plan_text, state)
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
            running: DashMap::new(),
            me: OnceLock::new(),
            janitor: AtomicBool::new(false),
            started_ms: now_ms(),
        }
    }

    /// Runs awaiting approval in this process.
    pub fn pending_runs(&self) -> usize {
        self.pending.len()
    }

    pub async fn on_ready(self: &Arc<Self>, poster: &Poster, ready: Ready) {
        let _ = self.me.set(ready.user.id);
        tracing::info!(user = %ready.user.id, guilds = self.settings.guild_ids.len(), "connected to the Discord gateway");
        if !self.janitor.swap(true, Ordering::AcqRel) {
            self.void_orphans();
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

    /// Approval state lives in this process. Runs a previous process left awaiting approval
    /// cannot be approved any more (their plan messages are not known here): close them as
    /// expired, so the store does not show them pending forever. Runs once, on the first READY.
    fn void_orphans(&self) {
        let rows = match self.engine.store().recent_runs(1000) {
            Ok(r) => r,
            Err(e) => return tracing::error!(error = %e, "could not read runs left from before"),
        };
        for row in rows
            .iter()
            .filter(|r| r.state == crate::pipeline::AWAITING_APPROVAL)
            .filter(|r| r.created_at_ms < self.started_ms)
        {
            let Ok(run) = RunId::parse(&row.id) else {
                continue;
            };
            match self.engine.close_unexecuted(run, "expired") {
                Ok(true) => {
                    tracing::warn!(run = %row.id, upn = %row.upn, "a run left awaiting approval by an earlier process is closed as expired; the requester must run the command again")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(run = %row.id, error = %e, "could not close a run left from before")
                }
            }
        }
    }

    fn place_ok(&self, guild: Option<GuildId>, channel: ChannelId) -> Result<(), String> {
        let Some(guild) = guild.filter(|g| self.settings.guild_ids.contains(&g.get())) else {
            return Err("this bot only takes commands in its own server.".into());
        };
        let _ = guild;
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
        let (user, name, roles) = author(&cmd);
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
        let created = now_ms();
        let expires_unix = (created + self.policy.ttl.as_millis() as i64 + 999) / 1000;
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
                let _ = self.engine.close_unexecuted(plan.run, "cancelled");
                let text = format!("⚠ could not post the plan in this channel ({why}); nothing was changed. Check the bot's permissions (Send Messages, Add Reactions, Create Public Threads).");
                return self.edit_reply(poster, cmd, &text).await;
            }
        };
        let slot = Arc::new(Slot {
            run: plan.run,
            guild,
            channel: cmd.channel_id,
            message,
            requester: user,
            requester_name: actor.name.clone(),
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
        let setup = async {
            poster
                .react(slot.channel, message, reactions::APPROVE)
                .await?;
            poster.react(slot.channel, message, REJECT).await?;
            let name = format!("fix {} · {}", slot.plan.upn, slot.run.short());
            poster
                .thread(
                    slot.channel,
                    message,
                    &name,
                    self.settings.thread_auto_archive_minutes,
                )
                .await
        };
        if let Err(e) = setup.await {
            let why = super::post::describe(&e);
            st.open = false;
            self.pending.remove(&message.get());
            let _ = self.engine.close_unexecuted(slot.run, "cancelled");
            let _ = poster
                .edit(
                    slot.channel,
                    message,
                    &slot.text(&PlanState::Abandoned { why: why.clone() }),
                )
                .await;
            let text = format!("⚠ could not set up the approval ({why}); nothing was changed. Check the bot's permissions (Add Reactions, Create Public Threads, Send Messages in Threads).");
            return self.edit_reply(poster, cmd, &text).await;
        }
        let ttl = Duration::from_millis(
            (created + self.policy.ttl.as_millis() as i64 - now_ms()).max(0) as u64,
        );
        let timer = {
            let bot = Arc::clone(self);
            let slot = Arc::clone(&slot);
            let poster = poster.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ttl).await;
                bot.expire(&poster, &slot).await;
            })
        };
        st.timer = Some(timer.abort_handle());
        drop(st);
        let link = format!(
            "https://discord.com/channels/{}/{}/{}",
            guild.get(),
            slot.channel.get(),
            message.get()
        );
        let text = format!(
            "📝 plan posted for {} (run `{}`): {link}\nAn approver reacts ✅ on it (❌ rejects); it expires <t:{expires_unix}:R>. Steps will be posted in its thread.",
            slot.plan.upn,
            slot.run.short()
        );
        self.edit_reply(poster, cmd, &text).await;
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
        self.pending.remove(&slot.message.get());
    }

    async fn expire(&self, poster: &Poster, slot: &Slot) {
        let mut st = slot.state.lock().await;
        if !st.open {
            return;
        }
        self.expire_locked(poster, slot, &mut st, false).await;
    }

    async fn expire_locked(&self, poster: &Poster, slot: &Slot, st: &mut SlotState, abort: bool) {
        match self.engine.close_unexecuted(slot.run, "expired") {
            Ok(_) => {}
            Err(e) => tracing::error!(run = %slot.run, error = %e, "could not record the expiry"),
        }
        self.close(slot, st, abort);
        let text = format!(
            "⌛ this plan expired after {} min without enough approvals; nothing was changed. {}, run the command again if it is still needed.",
            self.policy.ttl.as_secs().div_ceil(60),
            mention(slot.requester)
        );
        self.thread_say(poster, slot, &text, &[slot.requester])
            .await;
        self.edit_plan(poster, slot, &PlanState::Expired).await;
    }

    async fn thread_say(&self, poster: &Poster, slot: &Slot, text: &str, ping: &[UserId]) {
        if let Err(e) = poster.send(slot.thread(), text, ping).await {
            tracing::warn!(run = %slot.run, error = %super::post::describe(&e), "could not post in the run's thread");
        }
    }

    async fn edit_plan(&self, poster: &Poster, slot: &Slot, state: &PlanState) {
        if let Err(e) = poster
            .edit(slot.channel, slot.message, &slot.text(state))
            .await
        {
            tracing::warn!(run = %slot.run, error = %super::post::describe(&e), "could not update the plan message");
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
        let Some(slot) = self
            .pending
            .get(&reaction.message_id.get())
            .map(|s| Arc::clone(s.value()))
        else {
            return;
        };
        if reaction.channel_id != slot.channel || reaction.guild_id != Some(slot.guild) {
            return;
        }
        let Some(voter) = reactions::voter(&reaction, &self.ids) else {
            return;
        };
        let mut st = slot.state.lock().await;
        if !st.open {
            return;
        }
        let verdict = st.approval.vote(
            &self.policy,
            &voter.actor,
            &voter.roles,
            voter.is_bot,
            vote,
            now_ms(),
        );
        match verdict {
            Verdict::Ignored { reason, first_time } => {
                if first_time {
                    let text = ignored_line(&voter.actor.name, reason);
                    self.thread_say(poster, &slot, &text, &[]).await;
                }
            }
            Verdict::Counted { have, need } => {
                let text = format!(
                    "✅ approval {have}/{need} from {}",
                    sanitize(&voter.actor.name, 64)
                );
                self.thread_say(poster, &slot, &text, &[]).await;
                self.edit_plan(
                    poster,
                    &slot,
                    &PlanState::Awaiting {
                        expires_unix: slot.expires_unix,
                        have,
                        need,
                    },
                )
                .await;
            }
            Verdict::Expired => self.expire_locked(poster, &slot, &mut st, true).await,
            Verdict::Rejected { by } => {
                match self.engine.close_unexecuted(slot.run, "rejected") {
                    Ok(true) => {}
                    Ok(false) => {
                        self.close(&slot, &mut st, true);
                        return;
                    }
                    Err(e) => {
                        tracing::error!(run = %slot.run, error = %e, "could not record a rejection");
                    }
                }
                self.close(&slot, &mut st, true);
                drop(st);
                let text = format!(
                    "❌ rejected by {}; nothing was changed.",
                    sanitize(&by.name, 64)
                );
                self.thread_say(poster, &slot, &text, &[]).await;
                self.edit_plan(poster, &slot, &PlanState::Rejected { by: by.name })
                    .await;
            }
            Verdict::Approved { by } => match self.engine.mark_approved(slot.run) {
                Ok(true) => {
                    let permit = st.permit.take();
                    self.close(&slot, &mut st, true);
                    drop(st);
                    let bot = Arc::clone(self);
                    let poster = poster.clone();
                    tokio::spawn(async move { bot.execute(&poster, slot, by, permit).await });
                }
                Ok(false) => {
                    // Moved on elsewhere (another instance, or a cancel that won the race).
                    self.close(&slot, &mut st, true);
                }
                Err(e) => {
                    tracing::error!(run = %slot.run, error = %e, "could not record an approval");
                    let _ = self.engine.close_unexecuted(slot.run, "cancelled");
                    self.close(&slot, &mut st, true);
                    drop(st);
                    self.thread_say(
                        poster,
                        &slot,
                        "⚠ the approval could not be recorded, so nothing was executed and this plan is closed. Run the command again.",
                        &[],
                    )
                    .await;
                    self.edit_plan(
                        poster,
                        &slot,
                        &PlanState::Abandoned {
                            why: "the approval could not be recorded".into(),
                        },
                    )
                    .await;
                }
            },
        }
    }

    /// Executes an approved run; every event goes to the thread with the bot token, in order.
    /// Runs in its own task: a gateway disconnect does not stop it, REST goes on regardless.
    async fn execute(
        self: Arc<Self>,
        poster: &Poster,
        slot: Arc<Slot>,
        by: Vec<Actor>,
        permit: Option<OpenRun>,
    ) {
        let names: Vec<String> = by.iter().map(|a| a.name.clone()).collect();
        self.running.insert(
            slot.run,
            Running {
                upn: slot.plan.upn.to_string(),
                requester: slot.requester_name.clone(),
                approved_by: names.clone(),
                started: Instant::now(),
            },
        );
        let shown: Vec<String> = names.iter().map(|n| sanitize(n, 64)).collect();
        self.thread_say(
            poster,
            &slot,
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
                    summary_posted |= self.post_event(poster, &slot, ev).await;
                }
                res = &mut exec => break res,
            }
        };
        while let Ok(ev) = rx.try_recv() {
            summary_posted |= self.post_event(poster, &slot, ev).await;
        }
        let outcome = match result {
            Ok(summary) => {
                if !summary_posted {
                    self.post_summary(poster, &slot, &summary).await;
                }
                summary.outcome
            }
            Err(e) => {
                tracing::error!(run = %slot.run, error = %e, "the run's task failed");
                self.thread_say(
                    poster,
                    &slot,
                    "🚨 the run stopped with an internal error; check the journal (`/fix-status run`) before doing anything else.",
                    &[slot.requester],
                )
                .await;
                crate::pipeline::RunOutcome::NeedsAttention
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
        self.running.remove(&slot.run);
        drop(permit);
    }

    /// Posts one run event; `true` when it was the summary.
    async fn post_event(&self, poster: &Poster, slot: &Slot, ev: RunEvent) -> bool {
        match ev {
            RunEvent::Started { .. } => false,
            RunEvent::Note { text, .. } => {
                self.thread_say(poster, slot, &format!("ℹ {text}"), &[])
                    .await;
                false
            }
            RunEvent::Step(r) => {
                self.thread_say(poster, slot, &step_line(&r), &[]).await;
                false
            }
            RunEvent::Finished(s) => {
                self.post_summary(poster, slot, &s).await;
                true
            }
        }
    }

    async fn post_summary(&self, poster: &Poster, slot: &Slot, s: &RunSummary) {
        let text = format!(
            "{} · requested by {}",
            summary_line(s),
            mention(slot.requester)
        );
        self.thread_say(poster, slot, &text, &[slot.requester])
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
                s.run.to_string().starts_with(&key)
                    || s.run.as_uuid().simple().to_string().starts_with(&key)
            })
            .map(|s| Arc::clone(s.value()))
            .collect();
        match found.len() {
            1 => Ok(found.into_iter().next().expect("one")),
            0 => Err(match self.engine.store().runs_by_prefix(&key) {
                Ok(rows) if rows.len() == 1 => format!(
                    "run `{}` is {}; only a run awaiting approval can be cancelled.",
                    &rows[0].id[..8],
                    rows[0].state.replace('_', " ")
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
                slot.run.short()
            );
        }
        match self.engine.close_unexecuted(slot.run, "cancelled") {
            Ok(true) => {}
            Ok(false) => {
                self.close(&slot, &mut st, true);
                return format!(
                    "⛔ run `{}` has already moved on; nothing was cancelled.",
                    slot.run.short()
                );
            }
            Err(e) => {
                tracing::error!(run = %slot.run, error = %e, "could not record a cancellation");
                return "⚠ could not record the cancellation; try again.".into();
            }
        }
        self.close(&slot, &mut st, true);
        drop(st);
        let text = format!(
            "🛑 cancelled by {}; nothing was changed.",
            sanitize(&actor.name, 64)
        );
        self.thread_say(poster, &slot, &text, &[]).await;
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
            slot.run.short(),
            slot.plan.upn
        )
    }

    fn status(&self, run: Option<&str>) -> String {
        match run {
            Some(r) => self.status_of(r),
            None => self.status_all(),
        }
    }

    fn status_all(&self) -> String {
        let mut out = String::new();
        let mut pending: Vec<Arc<Slot>> =
            self.pending.iter().map(|s| Arc::clone(s.value())).collect();
        pending.sort_by_key(|s| s.expires_unix);
        out.push_str(&format!("**Awaiting approval ({})**\n", pending.len()));
        for s in pending.iter().take(10) {
            out.push_str(&format!(
                "• `{}` {} · by {} · expires <t:{}:R>\n",
                s.run.short(),
                s.plan.upn,
                sanitize(&s.requester_name, 64),
                s.expires_unix
            ));
        }
        out.push_str(&format!("**Running ({})**\n", self.running.len()));
        for r in self.running.iter().take(10) {
            out.push_str(&format!(
                "• `{}` {} · by {} · approved by {} · {} s\n",
                r.key().short(),
                r.upn,
                sanitize(&r.requester, 64),
                sanitize(&r.approved_by.join(", "), 128),
                r.started.elapsed().as_secs()
            ));
        }
        match self.engine.store().recent_runs(10) {
            Ok(rows) => {
                out.push_str("**Recent**\n");
                for r in rows {
                    out.push_str(&format!(
                        "• `{}` {} · {} · by {}\n",
                        &r.id[..8.min(r.id.len())],
                        sanitize(&r.upn, 100),
                        r.state.replace('_', " "),
                        sanitize(&r.requester_name, 64)
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read recent runs");
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
            &row.id[..8.min(row.id.len())],
            sanitize(&row.upn, 100),
            row.state.replace('_', " "),
            sanitize(&row.requester_name, 64)
        );
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
}
