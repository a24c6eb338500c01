//! The approval window: a timer per run awaiting approval, and closing the run as expired when
//! it runs out (or when the bot finds it ran out while it was offline).

use super::bot::{Bot, Slot, SlotState};
use super::post::Poster;
use super::relay::mention;
use crate::chat::render::PlanState;
use crate::domain::RunState;
use crate::store::now_ms;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::AbortHandle;

impl Bot {
    /// Expires the run at `expires_ms` unless it has moved on by then.
    pub(super) fn start_timer(
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

    async fn expire(&self, poster: &Poster, slot: &Slot) {
        let mut st = slot.state.lock().await;
        if !st.open {
            return;
        }
        self.expire_locked(poster, slot, &mut st, false, false)
            .await;
    }

    /// Closes the run as expired; says so only if this moved it (not if it moved on elsewhere).
    pub(super) async fn expire_locked(
        &self,
        _poster: &Poster,
        slot: &Slot,
        st: &mut SlotState,
        abort: bool,
        while_offline: bool,
    ) {
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
        let say = self.closing(slot, text, &[requester], &PlanState::Expired);
        match self.engine.close_unexecuted_saying(
            slot.run(),
            RunState::Expired,
            &self.system_actor(),
            &say,
        ) {
            Ok(true) => self.outbox.wake(),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(run = %slot.run(), error = %format!("{e:#}"), "could not record the expiry");
                self.say_now(&say);
            }
        }
        self.close(slot, st, abort);
    }
}
