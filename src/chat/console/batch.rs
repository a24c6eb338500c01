//! The console's bulk repairs: `/fix-immutable-id users:<list>` or `file:<path>` (a .txt or
//! .csv), one plan message, one approval under the same policy as a single repair, progress
//! lines, and the summary with every user's outcome written to a CSV beside the store.

use super::Console;
use crate::approval::{PendingApproval, Verdict, Vote};
use crate::chat::batch_render::{
    outcome_csv, plan_csv, plan_message, progress_line, summary_message,
};
use crate::chat::render::{ignored_line, sanitize};
use crate::domain::user_list::UserList;
use crate::domain::{Actor, RunId};
use crate::pipeline::batch::{BatchPlan, BatchRequest};
use crate::pipeline::{ModeChoice, Reporter};
use crate::store::{now_ms, BatchState};
use std::io::Write;
use std::time::Instant;

/// Users repaired at once within a batch (each user's steps are sequential; the clients pace
/// the APIs).
pub const BATCH_CONCURRENCY: usize = 8;

pub(super) struct PendingBatch {
    plan: BatchPlan,
    approval: PendingApproval,
}

impl<W: Write> Console<'_, W> {
    /// `users:` and `file:` of `/fix-immutable-id`: the list is parsed (every entry accounted
    /// for), planned, and shown as one plan awaiting a second person's approval.
    pub(super) async fn request_batch(
        &mut self,
        actor: Actor,
        list: Result<UserList, String>,
        mode: ModeChoice,
        reason: Option<&str>,
    ) {
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                self.say(&format!("(only to {}) {e}. Nothing was done.", actor.name));
                return;
            }
        };
        for r in list.malformed.iter().chain(&list.duplicates) {
            self.say(&format!(
                "(only to {}) entry {} `{}` is left out: {}",
                actor.name,
                r.at,
                sanitize(&r.text, 120),
                sanitize(&r.why, 200)
            ));
        }
        if list.users.is_empty() {
            self.say(&format!(
                "(only to {}) no valid user in the list. Nothing was done.",
                actor.name
            ));
            return;
        }
        let reason = reason
            .map(crate::domain::strip_invisible)
            .map(|r| {
                r.trim()
                    .chars()
                    .take(crate::pipeline::plan::MAX_REASON)
                    .collect::<String>()
            })
            .filter(|r| !r.is_empty());
        self.say(&format!(
            "(only to {}) planning {} users…",
            actor.name,
            list.users.len()
        ));
        let req = BatchRequest {
            requester: actor.clone(),
            users: list.users,
            mode,
            reason,
        };
        let plan = match self.engine.plan_batch(&req).await {
            Ok(p) => p,
            Err(e) => {
                self.say(&format!(
                    "(only to {}) could not plan: {}. Nothing was changed.",
                    actor.name,
                    sanitize(&format!("{e:#}"), 400)
                ));
                return;
            }
        };
        let mut text = plan_message(&plan, self.policy.ttl);
        match self.write_csv(&format!("batch-{}-plan.csv", plan.id), &plan_csv(&plan)) {
            Ok(path) => text.push_str(&format!("\n   Plan CSV: {path}")),
            Err(e) => text.push_str(&format!("\n   (the plan CSV could not be written: {e})")),
        }
        self.say(&text);
        if plan.plans.is_empty() {
            let _ = self
                .engine
                .close_batch(plan.id, BatchState::Cancelled, &actor);
            self.say("every user was refused; there is nothing to approve.");
            return;
        }
        let approval = PendingApproval::new(plan.id, actor, now_ms());
        self.requested_here.insert(plan.id);
        self.order.push(plan.id);
        self.batches
            .insert(plan.id, PendingBatch { plan, approval });
    }

    pub(super) fn is_batch(&self, id: &RunId) -> bool {
        self.batches.contains_key(id)
    }

    pub(super) async fn react_batch(
        &mut self,
        actor: Actor,
        roles: &[String],
        vote: Vote,
        id: RunId,
    ) {
        let policy = self.policy.clone();
        let own = matches!(self.identity, super::Identity::Operator { .. })
            && self.batches[&id].approval.requester.id == actor.id;
        let verdict = if own && vote == Vote::Approve {
            if !self.single_operator() {
                self.thread(&format!(
                    "ℹ {}'s approval does not count: {} asked for this bulk repair, and a second person must approve it from their own console session.",
                    actor.name, actor.name
                ));
                return;
            }
            // Break-glass, as for a single repair: the audit log names the one person.
            self.thread("⚠ SINGLE-PERSON (BREAK-GLASS) BULK REPAIR: approved by its requester alone (--single-operator).");
            Verdict::Approved {
                by: vec![actor.clone()],
            }
        } else {
            let pending = &mut self.batches.get_mut(&id).expect("resolved").approval;
            pending.vote(&policy, &actor, roles, false, vote, now_ms())
        };
        match verdict {
            Verdict::Ignored { reason, first_time } => {
                if first_time {
                    self.thread(&ignored_line(&actor.name, reason));
                }
            }
            Verdict::Counted { have, need } => {
                self.thread(&format!("✅ approval {have}/{need} from {}", actor.name));
            }
            Verdict::Expired => {
                self.batches.remove(&id);
                let _ = self.engine.close_batch(id, BatchState::Expired, &actor);
                self.thread("⌛ this batch expired before it was approved; nothing was changed.");
            }
            Verdict::Rejected { by } => {
                self.batches.remove(&id);
                let _ = self.engine.close_batch(id, BatchState::Rejected, &by);
                self.thread(&format!("❌ rejected by {}; nothing was changed.", by.name));
            }
            Verdict::Approved { by } => {
                let pending = self.batches.remove(&id).expect("resolved");
                match self.engine.approve_batch(id, &actor) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.thread(
                            "this batch is no longer awaiting approval; nothing more was done.",
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
                self.thread(&format!(
                    "✅ approved by {} — starting {} users",
                    names.join(", "),
                    pending.plan.plans.len()
                ));
                self.run_batch(id).await;
            }
        }
    }

    /// Executes (or continues) a batch, then prints its progress and summary.
    pub(super) async fn run_batch(&mut self, id: RunId) {
        let t0 = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let engine = self.engine.clone();
        let run = engine.execute_batch(
            id,
            BATCH_CONCURRENCY,
            |_| Reporter::discard(),
            move |p| {
                // A line per tenth of the batch, and the last: few lines, not one per user.
                let step = (p.total / 10).max(1);
                if p.finished % step == 0 || p.finished == p.total {
                    let _ = tx.send(progress_line(p, t0.elapsed()));
                }
            },
        );
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(line) = rx.recv() => self.thread(&line),
            }
        };
        while let Ok(line) = rx.try_recv() {
            self.thread(&line);
        }
        match result {
            Ok(summary) => {
                let mut text = summary_message(&summary);
                match self.write_csv(&format!("batch-{id}-outcome.csv"), &outcome_csv(&summary)) {
                    Ok(path) => text.push_str(&format!(" CSV: {path}")),
                    Err(e) => text.push_str(&format!(" (the CSV could not be written: {e})")),
                }
                self.thread(&text);
            }
            Err(e) => self.thread(&format!(
                "🚨 the batch stopped with an internal error ({}); its users' runs are in the journal (/fix-status).",
                sanitize(&format!("{e:#}"), 400)
            )),
        }
    }

    pub(super) fn cancel_batch(&mut self, actor: Actor, roles: &[String], id: RunId) {
        let requester = self.batches[&id].approval.requester.id.clone();
        if actor.id != requester && !self.policy.may_approve(roles) {
            self.say(&format!(
                "(only to {}) only the requester or an approver can cancel.",
                actor.name
            ));
            return;
        }
        self.batches.remove(&id);
        let _ = self.engine.close_batch(id, BatchState::Cancelled, &actor);
        self.thread(&format!(
            "🛑 batch cancelled by {}; nothing was changed.",
            actor.name
        ));
    }

    /// A CSV beside the store; returns its path.
    fn write_csv(&self, name: &str, body: &str) -> std::io::Result<String> {
        let dir = self
            .engine
            .store()
            .path()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let path = dir.join(name);
        std::fs::write(&path, body)?;
        Ok(path.display().to_string())
    }
}
