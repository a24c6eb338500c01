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

use super::limits::{Limits, OpenRun};
use super::outbox::Outbox;
use super::place::Place;
use super::reactions::Identities;
use crate::approval::{ApprovalPolicy, PendingApproval};
use crate::config::DiscordSettings;
use crate::domain::{Actor, RunId};
use crate::ops::shutdown::Lifecycle;
use crate::pipeline::{Engine, Plan};
use dashmap::DashMap;
use serenity::all::UserId;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use tokio::sync::{watch, Mutex};
use tokio::task::AbortHandle;

/// Interaction ids remembered to drop a dispatch delivered twice (a token lives 15 minutes).
const SEEN_INTERACTIONS: usize = 4096;

/// The Discord front end's state, shared by every event handler task.
pub struct Bot {
    pub(super) engine: Engine,
    pub(super) policy: ApprovalPolicy,
    pub(super) settings: DiscordSettings,
    pub(super) ids: Identities,
    pub(super) limits: Limits,
    /// Runs awaiting approval, by plan message id.
    pub(super) pending: DashMap<u64, Arc<Slot>>,
    /// Bulk repairs awaiting approval, by plan message id.
    pub(super) batches: DashMap<u64, Arc<super::batch::BatchSlot>>,
    pub(super) me: OnceLock<UserId>,
    pub(super) first_ready: AtomicBool,
    /// Becomes `true` once the runs an earlier process left are settled and taken up again.
    pub(super) started: watch::Sender<bool>,
    /// Shutting down (no new commands or executions), and the executions a shutdown waits for.
    pub(super) lifecycle: Lifecycle,
    /// Everything said in a channel or thread goes through here.
    pub(super) outbox: Outbox,
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

/// A run awaiting approval.
pub(super) struct Slot {
    pub(super) place: Place,
    pub(super) plan: Plan,
    pub(super) plan_text: String,
    pub(super) expires_unix: i64,
    pub(super) state: Mutex<SlotState>,
}

pub(super) struct SlotState {
    pub(super) approval: PendingApproval,
    pub(super) open: bool,
    pub(super) timer: Option<AbortHandle>,
    pub(super) permit: Option<OpenRun>,
    /// Reactions that did not count, said in one message edited as more come (a flood of
    /// reactions must not become a flood of posts under Discord's per-channel limit).
    pub(super) ignored: Vec<String>,
}

impl Slot {
    pub(super) fn run(&self) -> RunId {
        self.place.run
    }
}

impl Bot {
    pub fn new(
        engine: Engine,
        policy: ApprovalPolicy,
        settings: DiscordSettings,
        outbox: Outbox,
    ) -> Self {
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
            batches: DashMap::new(),
            me: OnceLock::new(),
            first_ready: AtomicBool::new(false),
            started: watch::channel(false).0,
            lifecycle: Lifecycle::default(),
            outbox,
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

    /// Stops taking commands (they are answered "restarting") and starting executions; runs
    /// already executing go on. See [`Bot::wait_idle`].
    pub fn begin_shutdown(&self) {
        self.lifecycle.begin_shutdown();
    }

    /// Waits, at most `grace`, until every execution (its posts included) has ended; returns the
    /// runs still executing then.
    pub async fn wait_idle(&self, grace: std::time::Duration) -> Vec<String> {
        self.lifecycle.wait_idle(grace).await
    }

    /// Waits, at most `grace`, until Discord has every message owed; returns how many are left.
    pub async fn flush_chat(&self, grace: std::time::Duration) -> u64 {
        self.outbox.flush(grace).await
    }

    /// Wakes the outbox's sender: for messages queued by others in their own transactions
    /// (the watch's cards).
    pub fn outbox_waker(&self) -> std::sync::Arc<dyn Fn() + Send + Sync> {
        let outbox = self.outbox.clone();
        std::sync::Arc::new(move || outbox.wake())
    }

    /// Requests sent through the bot's own REST client, and the 429s among their answers.
    pub fn rest_counts(&self) -> (u64, u64) {
        let s = self.outbox.rest().stats();
        (
            s.requests.load(std::sync::atomic::Ordering::Relaxed),
            s.rate_limited.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The bot as an actor in the audit log (expiry).
    pub(super) fn system_actor(&self) -> Actor {
        let id = self
            .me
            .get()
            .map(|u| u.get().to_string())
            .unwrap_or_else(|| "fixbot".into());
        Actor::new(id, "fixbot")
    }

    /// The run's place in Discord, from the store.
    pub(super) fn place_of(&self, run: RunId) -> Option<(Place, bool)> {
        match self.engine.store().chat_ref(&run.to_string()) {
            Ok(Some(v)) => Place::from_chat_ref(run, &v),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(run = %run, error = %format!("{e:#}"), "could not read where the run is shown");
                None
            }
        }
    }

    pub(super) fn save_place(&self, place: &Place, thread_created: bool) {
        if let Err(e) = self
            .engine
            .store()
            .set_chat_ref(&place.run.to_string(), &place.chat_ref(thread_created))
        {
            tracing::error!(run = %place.run, error = %format!("{e:#}"), "could not store where the run is shown; a restart will not find its plan message");
        }
    }

    /// Approvers recorded in the store, by name.
    pub(super) fn approver_names(&self, run: RunId) -> Vec<String> {
        self.engine
            .store()
            .approvers(&run.to_string())
            .map(|v| v.into_iter().map(|(_, name)| name).collect())
            .unwrap_or_default()
    }

    /// `true` the first time an interaction id is seen.
    pub(super) fn first_sight(&self, id: u64) -> bool {
        self.seen.lock().map(|mut s| s.first(id)).unwrap_or(true)
    }

    /// Closes a run that never executed; the caller holds its lock and has moved it in the store.
    pub(super) fn close(&self, slot: &Slot, st: &mut SlotState, abort_timer: bool) {
        st.open = false;
        st.permit = None;
        if let Some(t) = st.timer.take() {
            if abort_timer {
                t.abort();
            }
        }
        self.pending.remove(&slot.place.message.get());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
