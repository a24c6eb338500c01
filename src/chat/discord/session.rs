//! Notices a lost gateway session (op 9, invalid session) from serenity's own log, because
//! serenity 0.12.5 gives no other prompt signal: on op 9 its shard runner blocks about 5 s in its
//! restart path with the stage still `Connected` (so neither a `ShardStageUpdate` event nor the
//! shard manager's runner info changes), and the event handler hears nothing until the next READY.
//! The log line is emitted synchronously as the frame is handled, so readiness drops at once.

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Filter, Layer};

/// Where serenity logs the gateway frames a shard handles.
const TARGET: &str = "serenity::gateway::shard";
/// serenity 0.12's message for op 9 (`Shard::handle_event`).
const INVALIDATED: &str = "Received session invalidation";

/// A tracing layer that reports op 9 to [`crate::ops::health::gateway_session_lost`].
pub struct SessionWatch;

/// The layer with its own filter: it sees serenity's `info` events whatever `RUST_LOG` says.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    SessionWatch.with_filter(filter())
}

fn filter<S: Subscriber>() -> impl Filter<S> {
    Targets::new().with_target(TARGET, Level::INFO)
}

impl<S: Subscriber> Layer<S> for SessionWatch {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut seen = Message::default();
        event.record(&mut seen);
        if seen.invalidated {
            crate::ops::health::gateway_session_lost();
        }
    }
}

#[derive(Default)]
struct Message {
    invalidated: bool,
}

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.invalidated |= format!("{value:?}").contains(INVALIDATED);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.invalidated |= value.contains(INVALIDATED);
        }
    }
}
