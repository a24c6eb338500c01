//! Connecting and reconnecting: slash command registration on every READY and, on the first,
//! settling the runs an earlier process died in and taking up those it left awaiting approval.

use super::bot::{Bot, Slot, SlotState};
use super::commands;
use super::post::Poster;
use crate::approval::PendingApproval;
use crate::chat::render::{plan_message, PlanState};
use crate::domain::{Actor, RunState};
use crate::pipeline::{Plan, Reporter};
use crate::store::now_ms;
use serenity::all::{GuildId, Ready};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Runs awaiting approval taken up at once on start.
const ADOPT_AT_ONCE: usize = 8;

impl Bot {
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
        let settled = self.recover_interrupted().await;
        let adopted = self.adopt_pending(poster).await;
        self.started.send_replace(true);
        // After the runs are settled (a batch's users in flight among them): batches continue
        // in their own task, so new commands are taken meanwhile.
        tokio::spawn(Arc::clone(self).resume_batches());
        tracing::info!(
            settled,
            adopted,
            ms = begun.elapsed().as_millis() as u64,
            "runs left by an earlier process are settled; taking new work"
        );
    }

    /// Runs an earlier process left approved or running are executed or settled by the engine;
    /// each run's events go to its thread, in order.
    async fn recover_interrupted(self: &Arc<Self>) -> usize {
        let approved_only: HashSet<String> =
            match self.engine.store().runs_in_state(RunState::Approved) {
                Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "could not read approved runs");
                    HashSet::new()
                }
            };
        let relays = std::sync::Mutex::new(Vec::new());
        let result = self
            .engine
            .recover(|plan| {
                let (reporter, rx) = Reporter::channel();
                let bot = Arc::clone(self);
                let plan = plan.clone();
                let approved = approved_only.contains(&plan.run.to_string());
                let working = bot.lifecycle.enter(format!(
                    "recovered run {} for {}",
                    plan.run.short(),
                    plan.upn
                ));
                let relay = tokio::spawn(async move {
                    bot.relay_recovered(plan, rx, approved).await;
                    drop(working);
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
                ignored: Vec::new(),
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
            match self.set_up(&slot).await {
                Ok(()) => self.save_place(&place, true),
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "could not finish setting up a plan taken up after a restart")
                }
            }
        }
        self.thread_say(&place,
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
        self.catch_up_batches().await;
    }
}
