//! What the bot says about a run: lines in its thread, the plan message's state, and an executing
//! (or recovered) run's events relayed to the thread in order.

use super::bot::{Bot, Slot};
use super::limits::OpenRun;
use super::place::Place;
use super::post::Poster;
use crate::chat::render::{plan_message, sanitize, state_line, step_line, summary_line, PlanState};
use crate::pipeline::{Plan, Reporter, RunEvent, RunOutcome, RunSummary};
use serenity::all::UserId;
use std::sync::Arc;

/// The plan message: the plan, then its state line; the plan is cut first if too long.
pub(super) fn compose(plan_text: &str, state: &PlanState) -> String {
    let line = state_line(state);
    let room = super::post::MAX_CONTENT.saturating_sub(line.chars().count() + 2);
    let plan: String = if plan_text.chars().count() > room {
        plan_text.chars().take(room).collect::<String>() + "…"
    } else {
        plan_text.to_owned()
    };
    format!("{plan}\n{line}")
}

pub(super) fn mention(user: UserId) -> String {
    format!("<@{}>", user.get())
}

impl Bot {
    pub(super) async fn thread_say(
        &self,
        poster: &Poster,
        place: &Place,
        text: &str,
        ping: &[UserId],
    ) {
        if let Err(e) = poster.send(place.thread(), text, ping).await {
            tracing::warn!(run = %place.run, error = %super::post::describe(&e), "could not post in the run's thread");
        }
    }

    pub(super) async fn edit_plan(&self, poster: &Poster, slot: &Slot, state: &PlanState) {
        self.edit_message(poster, &slot.place, &compose(&slot.plan_text, state))
            .await;
    }

    pub(super) async fn edit_message(&self, poster: &Poster, place: &Place, text: &str) {
        if let Err(e) = poster.edit(place.channel, place.message, text).await {
            tracing::warn!(run = %place.run, error = %super::post::describe(&e), "could not update the plan message");
        }
    }

    /// Posts a recovered run's events in its thread, then its final state on the plan message.
    pub(super) async fn relay_recovered(
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

    /// Executes an approved run; every event goes to the thread with the bot token, in order.
    /// Runs in its own task: a gateway disconnect does not stop it, REST goes on regardless.
    pub(super) async fn execute(
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
