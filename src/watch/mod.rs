//! The watch: reads the Office 365 app's provisioning failures from the Okta System Log,
//! diagnoses each affected user and reports the ones a person must act on as cards, one per
//! user per UTC day.
//!
//! Polling follows the System Log's own protocol (see `directory::okta::syslog`): the first
//! query gives `since`; every page's `Link: rel="next"` is the cursor, followed at once while
//! pages come back full and after `poll_interval` otherwise. The cursor lives in the store and
//! moves only in the transaction that records the page's events, findings and cards, so a crash
//! anywhere before that commit reads the page again and a crash after it reads on: no event is
//! missed or handled twice, also across a restart and for events logged while the bot was down.
//! Events are also keyed by uuid, which covers the rare re-read (no `next` link, a changed
//! filter). A 429 on the System Log's bucket is waited out by the Okta client's pacer; if its
//! budget runs out the pass ends without committing, and the next one reads the same page.
//!
//! A finding stays open until a later event's diagnosis shows the user healthy, or a repair run
//! for the user succeeds after the finding was opened (`/fix-status` lists the open ones).

pub mod card;
pub mod command;

use crate::config::WatchSettings;
use crate::directory::okta::{LogCursor, LogEvent, LogQuery, OktaError};
use crate::domain::Upn;
use crate::pipeline::diagnose::Diagnosis;
use crate::pipeline::{Engine, PlanError};
use crate::store::{FindingUpdate, HandledEvent, Observation, WatchCommit, WatchCursor};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Pages one pass follows at most before it lets the caller look at its stop signal; the next
/// pass goes on from the stored cursor.
const MAX_PAGES_PER_PASS: usize = 50;
/// When `watch.event_types` changed, the old `next` link (which carries the old filter) cannot
/// be followed: a new query starts this long before the old cursor was last saved. The overlap
/// is harmless, as events are handled once by uuid.
const REFILTER_OVERLAP: Duration = Duration::from_secs(300);

/// What time it is; injectable so the one-card-a-day rule can be tested without waiting a day.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Called after cards were queued in the outbox, to wake its sender.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Why a pass stopped early; the page it was on is read again by the next pass.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("could not read the Okta System Log: {0}")]
    Okta(#[from] OktaError),
    /// A read failed while diagnosing (Graph or Okta unavailable): worth trying again later.
    #[error("could not diagnose {upn}: {error}")]
    Diagnose { upn: String, error: PlanError },
    #[error("the store failed: {0:#}")]
    Store(anyhow::Error),
}

/// A card the watch posted (queued in the outbox, or for the caller to print).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub upn: String,
    pub text: String,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub pages: usize,
    /// Events the System Log returned on those pages.
    pub fetched: usize,
    /// Events handled for the first time.
    pub events: usize,
    pub cards: Vec<Card>,
    /// The last page was short: the log has nothing more for now.
    pub caught_up: bool,
}

pub struct Watch {
    engine: Engine,
    app_id: String,
    event_types: Vec<String>,
    poll_interval: Duration,
    lookback: Duration,
    page_limit: u32,
    clock: Clock,
    channel: Option<u64>,
    wake: Option<Wake>,
}

impl Watch {
    /// A watch of the engine's Okta app, printing its cards (see [`Watch::posting_to`]).
    pub fn new(engine: Engine, settings: &WatchSettings) -> Self {
        let app_id = engine.okta().app_id().to_owned();
        Self {
            engine,
            app_id,
            event_types: settings.event_types.clone(),
            poll_interval: settings.poll_interval,
            lookback: settings.lookback,
            page_limit: settings
                .page_limit
                .clamp(1, crate::directory::okta::MAX_LOG_LIMIT),
            clock: Arc::new(SystemTime::now),
            channel: None,
            wake: None,
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Queues cards for Discord `channel` through the durable outbox, in the transaction that
    /// records them; `wake` tells the outbox's sender.
    pub fn posting_to(mut self, channel: u64, wake: Wake) -> Self {
        self.channel = Some(channel);
        self.wake = Some(wake);
        self
    }

    /// The System Log filter, which the stored cursor belongs to.
    fn query(&self, since: &str) -> LogQuery {
        let types: Vec<&str> = self.event_types.iter().map(String::as_str).collect();
        LogQuery::provisioning_failures(&self.app_id, &types, since, self.page_limit)
    }

    /// What the stored cursor belongs to: the org and the filter. A `next` link is followed
    /// only on its own org and carries its query's filter, so a change of either starts a new
    /// query instead of following a link that no longer applies.
    fn filter(&self) -> String {
        format!(
            "{} {}",
            self.engine.okta().org_url(),
            self.query("").filter.unwrap_or_default()
        )
    }

    /// The stored cursor, or a new one (stored at once, so a first poll that never completes
    /// does not move `since` on the next start).
    fn start(&self, filter: &str) -> Result<WatchCursor, WatchError> {
        let store = self.engine.store();
        let stored = store
            .watch_cursor(&self.app_id)
            .map_err(WatchError::Store)?;
        let fresh = match stored {
            Some(s) if s.filter == filter => return Ok(s.cursor),
            Some(s) => {
                tracing::warn!(
                    "the Okta org or watch.event_types changed: the System Log is read again from shortly before the last poll"
                );
                crate::utc::from_ms(s.updated_at_ms)
                    .checked_sub(REFILTER_OVERLAP)
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            }
            None => (self.clock)()
                .checked_sub(self.lookback)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        };
        let cursor = WatchCursor::Since {
            since: crate::utc::iso(fresh),
        };
        store
            .watch_set_cursor(&self.app_id, filter, &cursor)
            .map_err(WatchError::Store)?;
        Ok(cursor)
    }

    /// Reads from the stored cursor until a short page (at most [`MAX_PAGES_PER_PASS`] pages),
    /// committing each page before reading the next.
    pub async fn pass(&self) -> Result<Pass, WatchError> {
        self.engine.okta().also_read_logs().await;
        let filter = self.filter();
        let mut cursor = self.start(&filter)?;
        let mut pass = Pass::default();
        for _ in 0..MAX_PAGES_PER_PASS {
            let from = match &cursor {
                WatchCursor::Since { since } => LogCursor::Start(self.query(since)),
                WatchCursor::Next { link } => LogCursor::Next(link.clone()),
            };
            let page = self.engine.okta().logs_page(&from).await?.value;
            pass.pages += 1;
            pass.fetched += page.events.len();
            // Okta always sends `next` for a polling query; without one the page is read again
            // at the next poll (not at once: it would answer the same), and the uuids keep it
            // from being handled twice.
            let full = page.events.len() >= self.page_limit as usize && page.next.is_some();
            let next = page
                .next
                .map(|link| WatchCursor::Next { link })
                .unwrap_or_else(|| cursor.clone());
            let (events, observations, cards) = self.handle(&page.events).await?;
            let day = crate::utc::day((self.clock)());
            let carded = self
                .engine
                .store()
                .watch_commit(&WatchCommit {
                    app_id: &self.app_id,
                    filter: &filter,
                    cursor: &next,
                    events: &events,
                    observations: &observations,
                    day: &day,
                    channel: self.channel,
                })
                .map_err(WatchError::Store)?;
            pass.events += events.len();
            let m = crate::ops::metrics::metrics();
            m.watch_events.inc_by(events.len() as u64);
            m.watch_cards.inc_by(carded.len() as u64);
            // Page by page: a long catch-up must not hold back the cards already committed.
            if !carded.is_empty() {
                if let Some(wake) = &self.wake {
                    wake();
                }
            }
            for upn in carded {
                if let Some(text) = cards.get(&upn) {
                    pass.cards.push(Card {
                        upn,
                        text: text.clone(),
                    });
                }
            }
            cursor = next;
            if !full {
                pass.caught_up = true;
                break;
            }
        }
        Ok(pass)
    }

    /// Diagnoses the users of one page's new events, each user once. A read that failed is an
    /// error (the page is read again later); anything else is recorded with the event.
    #[allow(clippy::type_complexity)]
    async fn handle(
        &self,
        events: &[LogEvent],
    ) -> Result<(Vec<HandledEvent>, Vec<Observation>, HashMap<String, String>), WatchError> {
        let uuids: Vec<&str> = events.iter().map(|e| e.uuid.as_str()).collect();
        let seen = self
            .engine
            .store()
            .watch_handled(&uuids)
            .map_err(WatchError::Store)?;
        let mut handled = Vec::new();
        // The user's latest event in the page, and what the diagnosis made of it.
        let mut latest: Vec<(String, &LogEvent)> = Vec::new();
        let mut diagnoses: HashMap<String, Result<Diagnosis, String>> = HashMap::new();
        for e in events.iter().filter(|e| !seen.contains(&e.uuid)) {
            let record = |upn: Option<String>, outcome: String| HandledEvent {
                uuid: e.uuid.clone(),
                upn,
                event_type: e.event_type.clone(),
                published: e.published.clone(),
                outcome,
            };
            if !e.is_failure() {
                // The filter asks for failures only; anything else is not the watch's concern.
                handled.push(record(None, "not a failure".into()));
                continue;
            }
            let Some(name) = subject(e) else {
                handled.push(record(None, "no user among the targets".into()));
                continue;
            };
            let upn = match Upn::parse(&name) {
                Ok(u) => u,
                Err(err) => {
                    handled.push(record(Some(name), format!("not a UPN: {err}")));
                    continue;
                }
            };
            let key = upn.as_str().to_lowercase();
            if !diagnoses.contains_key(&key) {
                let d = match self.engine.diagnose(&upn).await {
                    Ok(d) => Ok(d),
                    Err(error @ PlanError::Unavailable { .. }) => {
                        return Err(WatchError::Diagnose {
                            upn: upn.to_string(),
                            error,
                        })
                    }
                    // Not a read failure: trying again would answer the same.
                    Err(other) => Err(other.to_string()),
                };
                diagnoses.insert(key.clone(), d);
            }
            let outcome = match &diagnoses[&key] {
                Ok(d) if card::needs_a_person(d.verdict) => {
                    format!("finding: {}", d.verdict.label())
                }
                Ok(d) => format!("no card: {}", d.verdict.label()),
                Err(why) => format!("not diagnosed: {why}"),
            };
            handled.push(record(Some(upn.to_string()), outcome));
            match latest.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = e,
                None => latest.push((key, e)),
            }
        }
        let mut observations = Vec::new();
        let mut cards = HashMap::new();
        for (key, e) in latest {
            let Some(Ok(d)) = diagnoses.get(&key) else {
                continue;
            };
            if card::needs_a_person(d.verdict) {
                let text = card::card(e, d);
                cards.insert(d.upn.clone(), text.clone());
                observations.push(Observation::Open(FindingUpdate {
                    upn: d.upn.clone(),
                    verdict: d.verdict.label().to_owned(),
                    fix: card::fix_words(&d.fix),
                    why: d.why.clone(),
                    event_type: e.event_type.clone(),
                    display_message: e.display_message.clone(),
                    reason: e.outcome.as_ref().and_then(|o| o.reason.clone()),
                    card: text,
                    // Pressed in a repair channel, it plans the fix for a second person.
                    components: crate::chat::discord::offer::components(d),
                }));
            } else {
                observations.push(Observation::Healthy {
                    upn: d.upn.clone(),
                    why: format!("diagnosed {}", d.verdict.label()),
                });
            }
        }
        Ok((handled, observations, cards))
    }

    /// Passes until `stop` turns true: at once again after a pass that did not catch up, after
    /// `poll_interval` otherwise or after an error (which is logged; the cursor has not moved).
    /// Stopping never cuts a page's commit in half: the commit has no await point.
    pub async fn run(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut on_cards: impl FnMut(&[Card]),
    ) {
        while !*stop.borrow() {
            let wait = tokio::select! {
                r = self.pass() => match r {
                    Ok(p) => {
                        on_cards(&p.cards);
                        if p.caught_up { self.poll_interval } else { Duration::ZERO }
                    }
                    Err(e) => {
                        crate::ops::metrics::metrics().watch_failed_passes.inc();
                        tracing::warn!(error = %e, "watch pass ended early; the same events are read again at the next poll");
                        self.poll_interval
                    }
                },
                _ = stop.changed() => break,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
        }
    }
}

/// The user an event is about, as a UPN. The `AppUser` target's `alternateId` is the Office 365
/// username, i.e. the UPN the diagnosis starts from (an Okta login may differ from it); without
/// one, the `User` target's login, which the diagnosis also resolves.
pub fn subject(e: &LogEvent) -> Option<String> {
    e.target
        .iter()
        .find(|t| t.kind == "AppUser")
        .or_else(|| e.user_target())
        .and_then(|t| t.alternate_id.clone())
        .filter(|s| !s.trim().is_empty())
}
