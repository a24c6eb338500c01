//! Reactions as votes: live ones from the gateway and those read back after the bot was away,
//! judged by the approval policy under the run's lock and recorded in the store, which decides
//! atomically whether a vote approved or rejected the run.

use super::bot::{Bot, Slot, SlotState};
use super::place::Place;
use super::post::Poster;
use super::reactions::{self, Voter, REJECT};
use super::rest::RestError;
use crate::approval::{Ignored, Verdict, Vote};
use crate::chat::render::{ignored_line, sanitize, PlanState};
use crate::domain::{Actor, RunState};
use crate::store::{now_ms, VoteKind};
use serenity::all::{GuildId, Reaction, User};
use std::sync::Arc;

/// Reactors read back per emoji on start: pages of 100, at most this many pages.
const REACTION_PAGES: usize = 10;

impl Bot {
    /// Reads the plan message's ✅/❌ reactions back and judges each like a live one: reactions
    /// the gateway did not deliver (the bot was offline, or its session was lost). Votes already
    /// counted are recognised and pass silently. ❌ first: a rejection wins over approvals.
    pub(super) async fn read_back(
        self: &Arc<Self>,
        poster: &Poster,
        slot: &Arc<Slot>,
        st: &mut SlotState,
    ) {
        let place = slot.place;
        let run = place.run;
        let mut unreadable = Vec::new();
        for (emoji, vote) in [(REJECT, Vote::Reject), (reactions::APPROVE, Vote::Approve)] {
            let users = match self.reactors(&place, emoji).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "could not read reactions back");
                    self.thread_say(&place,
                        &format!("⚠ the {emoji} reactions made while the bot was offline could not be read back ({e}); if you reacted meanwhile, remove your reaction and react again."),
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
                let Some(voter) = self.member_voter(place.guild, &user).await else {
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
            self.thread_say(&place,
                &format!("⚠ the roles of {} could not be read, so their reactions were not counted; remove the reaction and react again.", unreadable.join(", ")),
                &[],
            )
            .await;
        }
    }

    /// Everyone who reacted with `emoji` on the plan message, in pages (bounded).
    pub(super) async fn reactors(
        &self,
        place: &Place,
        emoji: &str,
    ) -> Result<Vec<User>, RestError> {
        let mut out: Vec<User> = Vec::new();
        let mut after = None;
        for _ in 0..REACTION_PAGES {
            let page = self
                .outbox
                .rest()
                .reaction_users(place.channel.get(), place.message.get(), emoji, after, 100)
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
    pub(super) async fn member_voter(&self, guild: GuildId, user: &User) -> Option<Voter> {
        match self.outbox.rest().member(guild.get(), user.id.get()).await {
            Ok(m) => Some(Voter {
                user: user.id,
                actor: self.ids.actor(user.id, &reactions::display_name(&m)),
                roles: reactions::role_ids(&m),
                is_bot: user.bot,
            }),
            Err(RestError::Refused { status: 404, .. }) => Some(Voter {
                user: user.id,
                actor: self.ids.actor(user.id, &user.name),
                roles: Vec::new(),
                is_bot: user.bot,
            }),
            Err(e) => {
                tracing::warn!(user = %user.id, error = %e, "could not read a reactor's roles");
                None
            }
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
            self.on_batch_reaction(reaction.message_id.get(), &reaction, vote)
                .await;
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
                    st.ignored.push(ignored_line(&voter.actor.name, reason));
                    self.say_ignored(&slot.place, &st.ignored);
                }
            }
            Verdict::Expired => self.expire_locked(poster, slot, st, true, false).await,
            Verdict::Counted { .. } | Verdict::Approved { .. } => {
                self.record_approval(slot, st, &voter.actor).await
            }
            Verdict::Rejected { by } => self.record_rejection(poster, slot, st, &by).await,
        }
    }

    async fn record_approval(
        self: &Arc<Self>,
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
                self.thread_say(&slot.place, &text, &[]).await;
                self.edit_plan(
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
                // Entered before the shutdown flag is read and before the task is spawned: a
                // shutdown that begins meanwhile either sees this run or is seen here.
                let working = self.lifecycle.enter(format!(
                    "run {} for {}",
                    slot.run().short(),
                    slot.plan.upn
                ));
                if self.lifecycle.draining() {
                    drop(working);
                    // Recorded as approved: the next process starts it (startup recovery), so a
                    // shutdown never waits on a run it has not begun.
                    self.thread_say(&slot.place,
                        "✅ approved — the bot is restarting; this run starts as soon as it is back.",
                        &[],
                    )
                    .await;
                    return;
                }
                let bot = Arc::clone(self);
                let slot = Arc::clone(slot);
                tokio::spawn(async move {
                    bot.execute(slot, names, permit).await;
                    drop(working);
                });
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
                self.thread_say(&slot.place,
                    "⚠ the approval could not be recorded, so nothing was executed and this plan is closed. Run the command again.",
                    &[],
                )
                .await;
                self.edit_plan(
                    slot,
                    &PlanState::Abandoned {
                        why: "the approval could not be recorded".into(),
                    },
                )
                .await;
            }
        }
    }

    async fn record_rejection(
        &self,
        _poster: &Poster,
        slot: &Slot,
        st: &mut SlotState,
        by: &Actor,
    ) {
        let need = self.policy.approvals_required;
        let say = self.closing(
            slot,
            format!(
                "❌ rejected by {}; nothing was changed.",
                sanitize(&by.name, 64)
            ),
            &[],
            &PlanState::Rejected {
                by: by.name.clone(),
            },
        );
        let moved = match self.engine.record_vote_saying(
            &slot.plan,
            by,
            VoteKind::Reject,
            need,
            &say,
        ) {
            Ok(Some((_, true))) => true,
            // Recorded before but not applied (should not happen): close it explicitly.
            Ok(Some((_, false))) => self
                .engine
                .close_unexecuted_saying(slot.run(), RunState::Rejected, by, &say)
                .unwrap_or(false),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(run = %slot.run(), error = %format!("{e:#}"), "could not record a rejection");
                if !matches!(
                    self.engine
                        .close_unexecuted_saying(slot.run(), RunState::Rejected, by, &say),
                    Ok(true)
                ) {
                    self.say_now(&say);
                }
                true
            }
        };
        self.close(slot, st, true);
        if moved {
            self.outbox.wake();
        }
    }
}
