//! Where a run is shown in Discord, and how that is stored with the run (`chat_ref`) so a
//! restarted bot finds its plan message and thread again.

use crate::domain::RunId;
use crate::store::Fallback;
use serde_json::{json, Value};
use serenity::all::{ChannelId, GuildId, MessageId, UserId};

/// Where a run is shown: the plan message in its channel, and the thread started from it
/// (whose id is the message id). Stored with the run as its `chat_ref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) run: RunId,
    pub(super) guild: GuildId,
    pub(super) channel: ChannelId,
    pub(super) message: MessageId,
    pub(super) requester: UserId,
}

impl Place {
    pub(super) fn thread(&self) -> ChannelId {
        ChannelId::new(self.message.get())
    }

    /// Where the thread's messages go when it cannot take them: replies to the plan message.
    pub(super) fn fallback(&self) -> Fallback {
        Fallback {
            channel: self.channel.get(),
            reply_to: self.message.get(),
        }
    }

    /// Snowflakes as strings: they do not fit a JSON number everywhere.
    pub(super) fn chat_ref(&self, thread_created: bool) -> Value {
        json!({
            "guild": self.guild.get().to_string(),
            "channel": self.channel.get().to_string(),
            "message": self.message.get().to_string(),
            "thread": thread_created.then(|| self.thread().get().to_string()),
            "requester": self.requester.get().to_string(),
        })
    }

    /// The place and whether its thread was created.
    pub(super) fn from_chat_ref(run: RunId, v: &Value) -> Option<(Self, bool)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
