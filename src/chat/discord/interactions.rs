//! Slash-command interactions: who may do what where, `/fix-immutable-id` (plan, plan message,
//! thread), `/cancel` and `/diagnose` (read-only, ephemeral); `/fix-status`'s text is in
//! `status`.

use super::bot::{Bot, Slot, SlotState};
use super::commands::{self, Command};
use super::limits::retry_in;
use super::place::Place;
use super::post::{Ask, Poster};
use super::reactions::{self, REJECT};
use super::relay::compose;
use super::rest::{code as rest_code, Post, RestError};
use super::status::short_id;
use crate::approval::PendingApproval;
use crate::chat::render::{plan_message, sanitize, PlanState};
use crate::domain::RunId;
use crate::domain::{Actor, RunState};
use crate::pipeline::plan::ModeChoice;
use crate::pipeline::{PlanError, RepairRequest};
use crate::store::{now_ms, NewMessage, Put};
use serenity::all::{ChannelId, CommandInteraction, GuildId, MessageId, UserId};
use std::sync::Arc;
use tokio::sync::Mutex;

/// The answer to every command while the process shuts down (SIGTERM/SIGINT).
pub(super) const RESTARTING: &str =
    "🔄 the bot is restarting; try again in a minute. Nothing was done.";

/// What a repair is asked for with, from a command or a diagnosis's button.
pub(super) struct FixAsk<'a> {
    pub upn: &'a str,
    pub immutable_id: Option<&'a str>,
    pub mode: ModeChoice,
    pub reason: Option<&'a str>,
}

/// How an interaction's author is addressed in replies.
pub(super) fn author(ask: Ask<'_>) -> (UserId, String, Vec<String>) {
    match ask.member() {
        Some(m) => (
            m.user.id,
            reactions::display_name(m),
            reactions::role_ids(m),
        ),
        None => (ask.user().id, ask.user().name.clone(), Vec::new()),
    }
}

impl Bot {
    pub(super) fn place_ok(
        &self,
        guild: Option<GuildId>,
        channel: ChannelId,
    ) -> Result<(), String> {
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
        let (user, name, roles) = author((&cmd).into());
        if self.lifecycle.draining() {
            return self.reply(poster, &cmd, RESTARTING).await;
        }
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
                mode,
                reason,
            } => {
                let mode = match ModeChoice::parse(mode.as_deref().unwrap_or("")) {
                    Ok(m) => m,
                    Err(e) => {
                        let text = format!("⛔ {e}. Nothing was done.");
                        return self.reply(poster, &cmd, &text).await;
                    }
                };
                let ask = FixAsk {
                    upn: &upn,
                    immutable_id: immutable_id.as_deref(),
                    mode,
                    reason: reason.as_deref(),
                };
                self.fix(poster, (&cmd).into(), actor, user, &roles, ask)
                    .await
            }
            Command::FixBatch { list, mode, reason } => {
                let mode = match ModeChoice::parse(mode.as_deref().unwrap_or("")) {
                    Ok(m) => m,
                    Err(e) => {
                        let text = format!("⛔ {e}. Nothing was done.");
                        return self.reply(poster, &cmd, &text).await;
                    }
                };
                self.fix_batch(poster, &cmd, actor, list, mode, reason)
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
                let text = self.cancel(&actor, &roles, &run).await;
                self.edit_reply(poster, &cmd, &text).await;
            }
            Command::Diagnose { user: upn, public } => {
                // Read-only, but it shows directory data: the same people as /fix-status.
                if !self.policy.may_request(&roles) && !self.policy.may_approve(&roles) {
                    return self
                        .reply(
                            poster,
                            &cmd,
                            "⛔ only requesters and approvers can diagnose users.",
                        )
                        .await;
                }
                // A malformed UPN is answered at once, before any read.
                let upn = match crate::domain::Upn::parse(&upn) {
                    Ok(u) => u,
                    Err(e) => {
                        let text = format!("⛔ user: {}", sanitize(&e.to_string(), 300));
                        return self.reply(poster, &cmd, &text).await;
                    }
                };
                // Ephemeral unless asked for; the text is the same either way (sanitized, no pings).
                let ack = if public {
                    poster.defer_public(&cmd).await
                } else {
                    poster.defer_ephemeral(&cmd).await
                };
                if let Err(e) = ack {
                    return tracing::warn!(error = %super::post::describe(&e), "could not acknowledge /diagnose");
                }
                let (text, button) = match self.engine.diagnose(&upn).await {
                    Ok(d) => (
                        crate::chat::diagnosis::diagnosis_discord(&d),
                        super::offer::button(&d),
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "diagnosis failed");
                        let text = format!(
                            "⚠ could not diagnose: {}. Nothing was changed; try again shortly.",
                            sanitize(&e.to_string(), 600)
                        );
                        (text, None)
                    }
                };
                let button = button.as_ref().map(|(id, label)| (id.as_str(), *label));
                if let Err(e) = poster.edit_reply_with(&cmd, &text, button).await {
                    tracing::warn!(error = %super::post::describe(&e), "could not answer /diagnose");
                }
            }
        }
    }

    pub(super) async fn reply<'a>(&self, poster: &Poster, ask: impl Into<Ask<'a>>, text: &str) {
        let ask = ask.into();
        if let Err(e) = poster.reply_ephemeral(ask, text).await {
            tracing::warn!(command = %ask.name(), error = %super::post::describe(&e), "could not answer an interaction");
        }
    }

    pub(super) async fn edit_reply<'a>(
        &self,
        poster: &Poster,
        ask: impl Into<Ask<'a>>,
        text: &str,
    ) {
        let ask = ask.into();
        if let Err(e) = poster.edit_reply(ask, text).await {
            tracing::warn!(command = %ask.name(), error = %super::post::describe(&e), "could not edit a deferred reply");
        }
    }

    /// When the next place for a run frees up at the latest: the earliest expiry, if any.
    pub(super) fn cap_message(&self) -> String {
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

    /// `/fix-immutable-id`, or a diagnosis's fix button: the same plan, the same approval.
    pub(super) async fn fix(
        self: &Arc<Self>,
        poster: &Poster,
        cmd: Ask<'_>,
        actor: Actor,
        user: UserId,
        roles: &[String],
        ask: FixAsk<'_>,
    ) {
        let FixAsk {
            upn,
            immutable_id,
            mode,
            reason,
        } = ask;
        if !self.policy.may_request(roles) {
            return self
                .reply(poster, cmd, "⛔ you do not hold a requester role, so you cannot ask for repairs. Nothing was done.")
                .await;
        }
        let req = match RepairRequest::parse(actor.clone(), upn, immutable_id, reason) {
            Ok(r) => r.with_mode(mode),
            Err(e) => {
                let text = format!("⛔ {} Nothing was done.", sanitize(&e.to_string(), 400));
                return self.reply(poster, cmd, &text).await;
            }
        };
        let Some(permit) = self.limits.try_open() else {
            let text = self.cap_message();
            return self.reply(poster, cmd, &text).await;
        };
        // Answered at once (one request, private to the person): the reply is edited only if
        // the plan cannot be posted, so a repair costs no second interaction request.
        let ack = format!(
            "🔎 reading Entra and Okta for {}; the plan will be posted in this channel for a second person's approval (or the reason it cannot be, here).",
            req.upn
        );
        if let Err(e) = poster.reply_ephemeral(cmd, &ack).await {
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
        let Some(guild) = cmd.guild_id() else { return };
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
        let message = match self.post_plan(cmd.channel_id(), plan.run, &first).await {
            Ok(m) => m,
            Err(e) => {
                let _ = self.engine.close_unexecuted_by(
                    plan.run,
                    RunState::Cancelled,
                    &self.system_actor(),
                );
                let text = format!("⚠ could not post the plan in this channel ({e}); nothing was changed. Check the bot's permissions (Send Messages, Add Reactions, Create Public Threads).");
                return self.edit_reply(poster, cmd, &text).await;
            }
        };
        let place = Place {
            run: plan.run,
            guild,
            channel: cmd.channel_id(),
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
                ignored: Vec::new(),
            }),
            plan,
        });
        // Hold the run while it is set up: an approver fast enough to react before the thread
        // exists waits here instead of finding no thread.
        let mut st = slot.state.lock().await;
        self.pending.insert(message.get(), Arc::clone(&slot));
        if let Err(e) = self.set_up(&slot).await {
            self.close(&slot, &mut st, true);
            let _ = self.engine.close_unexecuted_by(
                slot.run(),
                RunState::Cancelled,
                &self.system_actor(),
            );
            let why = e.to_string();
            self.edit_message(
                &place,
                &compose(&slot.plan_text, &PlanState::Abandoned { why: why.clone() }),
            )
            .await;
            let text = format!("⚠ could not set up the approval ({why}); nothing was changed. Check the bot's permissions (Add Reactions, Create Public Threads, Send Messages in Threads).");
            return self.edit_reply(poster, cmd, &text).await;
        }
        self.save_place(&place, true);
        st.timer = Some(self.start_timer(poster, &slot, expires_ms));
    }

    /// Posts the plan message itself (its id is needed at once) and records it in the outbox,
    /// so its later states are edits of it.
    async fn post_plan(
        &self,
        channel: ChannelId,
        run: RunId,
        text: &str,
    ) -> Result<MessageId, RestError> {
        let key = super::relay::plan_key(run);
        let nonce = uuid::Uuid::new_v4().simple().to_string()[..24].to_owned();
        let post = Post {
            content: &super::post::fit(text),
            pings: &[],
            nonce: &nonce,
            reply_to: None,
            components: None,
        };
        let id = self
            .outbox
            .rest()
            .create_message(channel.get(), &post)
            .await?;
        if let Err(e) = self.outbox.store().outbox_put_sent(
            &key,
            Some(&run.to_string()),
            channel.get(),
            text,
            id,
        ) {
            tracing::error!(run = %run, error = %format!("{e:#}"), "could not record the plan message in the outbox");
        }
        Ok(MessageId::new(id))
    }

    /// Seeds ✅ and ❌ on the plan message and starts its thread (idempotent on Discord's side
    /// for the reactions; the thread is created once). A thread Discord will not create is not
    /// fatal: the run's messages then go to the channel as replies to the plan message.
    pub(super) async fn set_up(&self, slot: &Slot) -> Result<(), RestError> {
        let p = &slot.place;
        let rest = self.outbox.rest();
        rest.react(p.channel.get(), p.message.get(), reactions::APPROVE)
            .await?;
        rest.react(p.channel.get(), p.message.get(), REJECT).await?;
        let name = format!("fix {} · {}", slot.plan.upn, slot.run().short());
        match rest
            .start_thread(
                p.channel.get(),
                p.message.get(),
                &name,
                self.settings.thread_auto_archive_minutes,
            )
            .await
        {
            // Created before (by a process that died before recording it): it is there.
            Ok(_) => Ok(()),
            Err(RestError::Refused {
                code: rest_code::THREAD_ALREADY_CREATED,
                ..
            }) => Ok(()),
            Err(e @ RestError::Refused { .. }) => {
                tracing::warn!(run = %slot.run(), error = %e, "the run's thread could not be created; its messages go to the channel");
                let why = format!("it could not be created: {e}");
                if let Err(e) = self
                    .outbox
                    .store()
                    .outbox_divert(p.thread().get(), &why, "")
                {
                    tracing::error!(run = %slot.run(), error = %format!("{e:#}"), "could not record the missing thread");
                }
                self.outbox.put(&NewMessage {
                    key: format!("thread-missing:{}", slot.run()),
                    run: Some(slot.run().to_string()),
                    channel: p.channel.get(),
                    fallback: None,
                    reply_to: Some(p.message.get()),
                    edits: None,
                    content: format!("⚠ this run's thread is unavailable ({why}); its messages are posted here instead."),
                    pings: vec![],
                    due_at_ms: now_ms(),
                    mode: Put::Once,
                    components: None,
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
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

    async fn cancel(&self, actor: &Actor, roles: &[String], run: &str) -> String {
        let key = run.trim().to_ascii_lowercase();
        if key.len() >= 4 && key.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            if let Some(said) = self.cancel_batch_cmd(actor, roles, &key).await {
                return said;
            }
        }
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
        let say = self.closing(
            &slot,
            format!(
                "🛑 cancelled by {}; nothing was changed.",
                sanitize(&actor.name, 64)
            ),
            &[],
            &PlanState::Cancelled {
                by: actor.name.clone(),
            },
        );
        match self
            .engine
            .close_unexecuted_saying(slot.run(), RunState::Cancelled, actor, &say)
        {
            Ok(true) => self.outbox.wake(),
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
        format!(
            "🛑 run `{}` for {} is cancelled.",
            slot.run().short(),
            slot.plan.upn
        )
    }
}
