//! Process-wide Prometheus metrics: runs by outcome, step durations, approvals pending, API calls
//! by service and status, throttling waits, compensations, and the watch's events, cards and
//! passes ended early.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
    pub phase: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub service: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub runs: Family<OutcomeLabels, Counter>,
    pub step_seconds: HistogramFamily<StepLabels>,
    pub approvals_pending: Gauge,
    pub gateway_connected: Gauge,
    pub chat_owed: Gauge,
    pub api_calls: Family<ApiLabels, Counter>,
    pub throttle_waits: Family<ServiceLabels, Counter>,
    pub compensations: Family<StepLabels, Counter>,
    pub watch_events: Counter,
    pub watch_cards: Counter,
    pub watch_failed_passes: Counter,
}

fn step_histogram() -> Histogram {
    // 5 ms … ~40 s: a step is one or a few API calls, retries included.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("fixbot");
        let runs = Family::<OutcomeLabels, Counter>::default();
        registry.register("runs", "Repair runs finished, by outcome", runs.clone());
        let step_seconds: HistogramFamily<StepLabels> =
            Family::new_with_constructor(step_histogram);
        registry.register(
            "step_duration_seconds",
            "Duration of each pipeline step, by step, phase and outcome",
            step_seconds.clone(),
        );
        let approvals_pending = Gauge::default();
        registry.register(
            "approvals_pending",
            "Runs awaiting approval",
            approvals_pending.clone(),
        );
        let gateway_connected = Gauge::default();
        registry.register(
            "gateway_connected",
            "1 while the chat gateway has a live session (READY/RESUMED since the last drop or op 9)",
            gateway_connected.clone(),
        );
        let chat_owed = Gauge::default();
        registry.register(
            "chat_messages_owed",
            "Messages (or revisions of one) in the outbox that Discord does not have yet",
            chat_owed.clone(),
        );
        let api_calls = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_calls",
            "HTTP calls to Graph, Okta and Discord, by service and status (0: no answer)",
            api_calls.clone(),
        );
        let throttle_waits = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "throttle_waits",
            "Waits for a rate-limit window or a Retry-After, by service",
            throttle_waits.clone(),
        );
        let compensations = Family::<StepLabels, Counter>::default();
        registry.register(
            "compensations",
            "Compensating or rolling-forward writes, by step and outcome",
            compensations.clone(),
        );
        let watch_events = Counter::default();
        registry.register(
            "watch_events",
            "Okta System Log events the watch handled (each once)",
            watch_events.clone(),
        );
        let watch_cards = Counter::default();
        registry.register(
            "watch_cards",
            "Cards the watch posted (one per user per UTC day)",
            watch_cards.clone(),
        );
        let watch_failed_passes = Counter::default();
        registry.register(
            "watch_failed_passes",
            "Watch passes that ended early (the same events are read again at the next poll)",
            watch_failed_passes.clone(),
        );
        Self {
            registry,
            runs,
            step_seconds,
            approvals_pending,
            gateway_connected,
            chat_owed,
            api_calls,
            throttle_waits,
            compensations,
            watch_events,
            watch_cards,
            watch_failed_passes,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn api_call(&self, service: &str, status: u16) {
        self.api_calls
            .get_or_create(&ApiLabels {
                service: service.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    pub fn throttle_wait(&self, service: &str) {
        self.throttle_waits
            .get_or_create(&ServiceLabels {
                service: service.to_owned(),
            })
            .inc();
    }
}

/// The process's metrics. Global because every client and run in the process adds to the same
/// series, and threading a handle through each constructor would buy nothing.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Feeds the metrics from run events, so the pipeline need not know about them.
pub struct MetricsObserver;

impl crate::pipeline::RunObserver for MetricsObserver {
    fn event(&self, event: &crate::pipeline::RunEvent) {
        use crate::pipeline::{Phase, RunEvent};
        let m = metrics();
        match event {
            RunEvent::Step(s) => {
                let labels = StepLabels {
                    step: s.step.number().to_string(),
                    phase: format!("{:?}", s.phase),
                    outcome: s.outcome.label().to_owned(),
                };
                m.step_seconds
                    .get_or_create(&labels)
                    .observe(s.duration.as_secs_f64());
                if s.phase != Phase::Forward {
                    m.compensations.get_or_create(&labels).inc();
                }
            }
            RunEvent::Finished(s) => {
                m.runs
                    .get_or_create(&OutcomeLabels {
                        outcome: s.outcome.state().as_str().to_owned(),
                    })
                    .inc();
            }
            _ => {}
        }
    }
}

/// The observer to give every engine.
pub fn observer() -> std::sync::Arc<dyn crate::pipeline::RunObserver> {
    std::sync::Arc::new(MetricsObserver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        metrics().api_call("graph", 200);
        metrics().throttle_wait("okta");
        let text = metrics().render();
        assert!(
            text.contains("fixbot_api_calls_total{service=\"graph\",status=\"200\"}"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fixbot_approvals_pending gauge"),
            "{text}"
        );
        assert!(
            text.contains("fixbot_throttle_waits_total{service=\"okta\"}"),
            "{text}"
        );
    }
}
