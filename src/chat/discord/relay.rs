//! What the bot says about a run, all through the durable outbox: notes in its thread, the plan
//! message's state, one live progress message per execution (edited as steps complete, the
//! edits coalesced), compensations as their own posts, and the summary, which is queued by the
//! store in the same transaction as the run's outcome (see [`announcer`]).

use super::bot::{Bot, Slot};
use super::limits::OpenRun;
use super::place::Place;
use crate::chat::render::{plan_message, sanitize, state_line, step_line, summary_line, PlanState};
use crate::domain::RunId;
use crate::pipeline::{Phase, Plan, Reporter, RunEvent, RunOutcome, RunSummary};
use crate::store::{now_ms, Announcer, Finished, NewMessage, Put};
use serenity::all::UserId;
use std::sync::Arc;
use std::time::Duration;

/// The progress message is first posted this long after the run starts: a short repair is
/// posted once, complete, instead of being edited step by step.
const PROGRESS_FIRST: Duration = Duration::from_secs(2);
/// Edits of a progress message are at least this far apart (the latest content wins).
pub(super) const PROGRESS_EDIT_GAP: Duration = Duration::from_secs(3);

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

/// The outbox key of a run's plan message.
pub(super) fn plan_key(run: RunId) -> String {
    format!("plan:{run}")
}

fn progress_key(run: RunId) -> String {
    format!("progress:{run}")
}

pub(super) fn due_in(d: Duration) -> i64 {
    now_ms() + d.as_millis() as i64
}

/// A message in the run's thread (moved to the channel if the thread cannot take it).
pub(super) fn in_thread(
    place: &Place,
    key: String,
    content: String,
    pings: Vec<u64>,
    due: i64,
    mode: Put,
) -> NewMessage {
    NewMessage {
        key,
        run: Some(place.run.to_string()),
        channel: place.thread().get(),
        fallback: Some(place.fallback()),
        reply_to: None,
        edits: None,
        content,
        pings,
        due_at_ms: due,
        mode,
        components: None,
    }
}

/// The progress message's text: the header, then as many of the latest lines as fit (a header
/// too long itself keeps its end: it may hold an earlier process's lines).
fn progress_text(header: &str, lines: &[String]) -> String {
    let max_header = super::post::MAX_CONTENT / 2;
    let n = header.chars().count();
    let header: String = if n > max_header {
        "…"
            .chars()
            .chain(header.chars().skip(n - max_header + 1))
            .collect()
    } else {
        header.to_owned()
    };
    let budget = super::post::MAX_CONTENT - header.chars().count() - 8;
    let mut used = 0;
    let mut kept = 0;
    for l in lines.iter().rev() {
        let n = l.chars().count() + 1;
        if used + n > budget {
            break;
        }
        used += n;
        kept += 1;
    }
    let mut out = header;
    if kept < lines.len() {
        out.push_str("\n…");
    }
    for l in &lines[lines.len() - kept..] {
        out.push('\n');
        out.push_str(l);
    }
    out
}

/// What the store queues when a run's outcome is recorded, in the same transaction: the
/// summary (pinging the requester unless the run is only parked) and the plan message's final
/// state. Keyed by the audit head, which that outcome moves: each outcome is said once.
pub(super) fn announcer(ttl: Duration) -> Announcer {
    Arc::new(move |f: &Finished<'_>| {
        let Ok(run) = RunId::parse(f.run_id) else {
            return Vec::new();
        };
        let Some((place, _)) = f
            .chat_ref
            .as_ref()
            .and_then(|v| Place::from_chat_ref(run, v))
        else {
            return Vec::new();
        };
        let Ok(mut summary) = serde_json::from_value::<RunSummary>(f.summary.clone()) else {
            return Vec::new();
        };
        summary.audit_head = f.audit_head.clone();
        let parked = summary.outcome == RunOutcome::Parked;
        let pings = if parked {
            vec![]
        } else {
            vec![place.requester.get()]
        };
        let text = format!(
            "{} · requested by {}",
            summary_line(&summary),
            mention(place.requester)
        );
        let head = f
            .audit_head
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut out = vec![in_thread(
            &place,
            format!("summary:{run}:{head}"),
            text,
            pings,
            now_ms(),
            Put::Once,
        )];
        if let Some(Ok((_, plan))) = f.plan.as_ref().map(crate::pipeline::read_plan) {
            let state = PlanState::Finished {
                outcome: summary.outcome,
                approved_by: f.approvers.clone(),
            };
            out.push(NewMessage {
                key: plan_key(run),
                run: Some(run.to_string()),
                channel: place.channel.get(),
                fallback: None,
                reply_to: None,
                edits: Some(place.message.get()),
                content: compose(&plan_message(&plan, ttl), &state),
                pings: vec![],
                due_at_ms: now_ms(),
                mode: Put::Revise,
                components: None,
            });
        }
        out
    })
}

/// One execution's live progress message.
struct Progress {
    place: Place,
    header: String,
    lines: Vec<String>,
}

impl Progress {
    fn message(&self, due: i64) -> NewMessage {
        in_thread(
            &self.place,
            progress_key(self.place.run),
            progress_text(&self.header, &self.lines),
            vec![],
            due,
            Put::Revise,
        )
    }
}

impl Bot {
    /// Says `text` in the run's thread.
    pub(super) async fn thread_say(&self, place: &Place, text: &str, ping: &[UserId]) {
        let key = format!("note:{}:{}", place.run, uuid::Uuid::new_v4().simple());
        let pings = ping.iter().map(|u| u.get()).collect();
        self.outbox.put(&in_thread(
            place,
            key,
            text.to_owned(),
            pings,
            now_ms(),
            Put::Once,
        ));
    }

    pub(super) async fn edit_plan(&self, slot: &Slot, state: &PlanState) {
        self.edit_message(&slot.place, &compose(&slot.plan_text, state))
            .await;
    }

    /// What a run closed before execution says (a note in its thread, the plan's final state),
    /// to be queued in the same transaction as the state change.
    pub(super) fn closing(
        &self,
        slot: &Slot,
        note: String,
        ping: &[UserId],
        state: &PlanState,
    ) -> Vec<NewMessage> {
        let place = &slot.place;
        let pings = ping.iter().map(|u| u.get()).collect();
        vec![
            in_thread(
                place,
                format!("closed:{}", place.run),
                note,
                pings,
                now_ms(),
                Put::Once,
            ),
            NewMessage {
                key: plan_key(place.run),
                run: Some(place.run.to_string()),
                channel: place.channel.get(),
                fallback: None,
                reply_to: None,
                edits: Some(place.message.get()),
                content: compose(&slot.plan_text, state),
                pings: vec![],
                due_at_ms: now_ms(),
                mode: Put::Revise,
                components: None,
            },
        ]
    }

    /// Queues messages the store could not take with their state change (best effort).
    pub(super) fn say_now(&self, messages: &[NewMessage]) {
        for m in messages {
            self.outbox.put(m);
        }
    }

    /// The reactions that did not count, in one message of the thread kept up to date.
    pub(super) fn say_ignored(&self, place: &Place, lines: &[String]) {
        let header = if lines.len() > 1 {
            format!("ℹ {} reactions do not count:", lines.len())
        } else {
            String::new()
        };
        let text = progress_text(&header, lines);
        let key = format!("ignored:{}", place.run);
        self.outbox.put(&in_thread(
            place,
            key,
            text.trim_start().to_owned(),
            vec![],
            due_in(PROGRESS_EDIT_GAP.min(Duration::from_secs(1))),
            Put::Revise,
        ));
    }

    /// Sets the plan message's content (an edit, queued; a pending one is replaced).
    pub(super) async fn edit_message(&self, place: &Place, text: &str) {
        let key = plan_key(place.run);
        self.outbox.put(&NewMessage {
            key,
            run: Some(place.run.to_string()),
            channel: place.channel.get(),
            fallback: None,
            reply_to: None,
            // A plan posted by an earlier release has no row yet: this edits it all the same.
            edits: Some(place.message.get()),
            content: text.to_owned(),
            pings: vec![],
            due_at_ms: now_ms(),
            mode: Put::Revise,
            components: None,
        });
    }

    /// Relays a recovered run's events to its thread; the outcome is queued by the store.
    pub(super) async fn relay_recovered(
        &self,
        plan: Plan,
        rx: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
        approved_only: bool,
    ) {
        let Some((place, _)) = self.place_of(plan.run) else {
            // Not shown in Discord (e.g. planned by another front end): the log has it.
            let mut rx = rx;
            while let Some(ev) = rx.recv().await {
                if let RunEvent::Finished(s) = ev {
                    tracing::warn!(run = %plan.run, outcome = %s.outcome.state(), message = %s.message, "a run left by an earlier process was settled");
                }
            }
            return;
        };
        let restarted = if approved_only {
            "ℹ the bot restarted after this run was approved and before it started; starting it now."
        } else {
            "🔄 the bot restarted during this run."
        };
        // The progress an earlier process posted (or queued) is continued, not replaced.
        let header = match self.outbox.store().outbox_row(&progress_key(plan.run)) {
            Ok(Some(prior)) => format!("{}\n{restarted}", prior.content),
            _ => restarted.to_owned(),
        };
        let progress = Progress {
            place,
            header,
            lines: Vec::new(),
        };
        self.relay(progress, rx).await;
    }

    /// Executes an approved run; its progress, compensations and summary go to the thread.
    /// Runs in its own task: a gateway disconnect does not stop it, REST goes on regardless.
    pub(super) async fn execute(
        self: Arc<Self>,
        slot: Arc<Slot>,
        names: Vec<String>,
        permit: Option<OpenRun>,
    ) {
        let place = slot.place;
        let shown: Vec<String> = names.iter().map(|n| sanitize(n, 64)).collect();
        self.edit_plan(
            &slot,
            &PlanState::Running {
                approved_by: names.clone(),
            },
        )
        .await;
        let progress = Progress {
            place,
            header: format!("✅ approved by {} — starting", shown.join(", ")),
            lines: Vec::new(),
        };
        let (reporter, rx) = Reporter::channel();
        let engine = self.engine.clone();
        let plan = slot.plan.clone();
        let exec = tokio::spawn(async move { engine.execute(&plan, &reporter).await });
        self.relay(progress, rx).await;
        if let Err(e) = exec.await {
            tracing::error!(run = %place.run, error = %format!("{e:#}"), "the run's task failed");
            self.thread_say(&place,
                "🚨 the run stopped with an internal error; check the journal (`/fix-status run`) before doing anything else.",
                &[place.requester],
            )
            .await;
            self.edit_plan(
                &slot,
                &PlanState::Finished {
                    outcome: RunOutcome::NeedsAttention,
                    approved_by: names,
                },
            )
            .await;
        }
        drop(permit);
    }

    /// Drains a run's events into its progress message and thread until the run ends.
    async fn relay(
        &self,
        mut progress: Progress,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
    ) {
        let place = progress.place;
        self.outbox.put(&progress.message(due_in(PROGRESS_FIRST)));
        while let Some(ev) = rx.recv().await {
            match ev {
                RunEvent::Started { .. } => {}
                RunEvent::Note { text, .. } => {
                    progress.lines.push(format!("ℹ {text}"));
                    self.outbox
                        .put(&progress.message(due_in(PROGRESS_EDIT_GAP)));
                }
                RunEvent::Step(r) if r.phase == Phase::Compensation => {
                    self.thread_say(&place, &step_line(&r), &[]).await;
                }
                RunEvent::Step(r) => {
                    progress.lines.push(step_line(&r));
                    self.outbox
                        .put(&progress.message(due_in(PROGRESS_EDIT_GAP)));
                }
                // Queued with the outcome by the store ([`announcer`]); the run's messages
                // are all due now.
                RunEvent::Finished(s) => {
                    self.outbox.put(&progress.message(now_ms()));
                    if s.audit_head.is_none() {
                        // Not recorded as an outcome (e.g. refused at the gate): said here.
                        let text = format!(
                            "{} · requested by {}",
                            summary_line(&s),
                            mention(place.requester)
                        );
                        self.thread_say(&place, &text, &[place.requester]).await;
                    }
                    self.outbox.wake();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_keeps_the_header_and_the_latest_lines() {
        let lines: Vec<String> = (0..200)
            .map(|i| format!("line {i:03} {}", "x".repeat(40)))
            .collect();
        let t = progress_text("HEAD", &lines);
        assert!(t.chars().count() <= super::super::post::MAX_CONTENT);
        assert!(t.starts_with("HEAD\n…"));
        assert!(t.ends_with(&lines[199]));
    }

    #[test]
    fn compose_keeps_the_state_line_when_the_plan_is_long() {
        let long = "x".repeat(5000);
        let s = compose(&long, &PlanState::Expired);
        assert!(s.chars().count() <= super::super::post::MAX_CONTENT);
        assert!(s.ends_with(&state_line(&PlanState::Expired)));
    }
}
