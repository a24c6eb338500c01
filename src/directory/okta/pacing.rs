//! Pacing by `X-Rate-Limit-Remaining` / `X-Rate-Limit-Reset`: wait for the reset instead of
//! running into 429.
//!
//! Every request reserves a slot in its bucket first. The local count is decremented at
//! reservation, so a hundred tasks sharing one client do not all go through on the same stale
//! `Remaining`; each response then re-syncs the bucket from its headers.
//!
//! A 429 is judged by its own headers only: it holds its bucket until the time it names
//! (`Retry-After`, else its `X-Rate-Limit-Reset`), then one probe finds out what the bucket
//! allows. A concurrency-limit 429 names a reset earlier than the per-minute window's, and an
//! answer can arrive after one from a newer window: neither may stretch the wait to a reset that
//! 429 did not name.

use crate::directory::retry::epoch_now;
use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// `X-Rate-Limit-Reset` has whole-second resolution: waking right at the stated second can still
/// land in the old window.
const RESET_MARGIN: Duration = Duration::from_millis(1_000);

/// How long a task waits for news (a response re-syncing the bucket) before looking again.
const NEWS_POLL: Duration = Duration::from_millis(250);

/// The rate-limit headers of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    /// Epoch seconds.
    pub reset: u64,
}

impl RateHeaders {
    pub fn from_headers(h: &HeaderMap) -> Option<Self> {
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some(Self {
            limit: num("x-rate-limit-limit")?.min(u64::from(u32::MAX)) as u32,
            remaining: num("x-rate-limit-remaining")?.min(u64::from(u32::MAX)) as u32,
            reset: num("x-rate-limit-reset")?,
        })
    }
}

/// When a throttled request may go again (epoch seconds), from its 429's own headers:
/// `Retry-After` if Okta sent one, else the reset it names plus the margin. `None` when that time
/// is already here: the caller retries after its own short backoff.
pub fn throttled_until(
    rate: Option<RateHeaders>,
    retry_after: Option<Duration>,
    now: f64,
) -> Option<f64> {
    let until = match (retry_after, rate) {
        (Some(after), _) => now + after.as_secs_f64(),
        (None, Some(r)) if r.reset as f64 > now => r.reset as f64 + RESET_MARGIN.as_secs_f64(),
        _ => return None,
    };
    (until > now).then_some(until)
}

/// The bucket of an Okta path: `/api/v1/{resource}` (`/api/v1/users`, `/api/v1/apps`, …).
pub fn bucket_of(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.windows(2).position(|w| w == ["api", "v1"]) {
        Some(i) => match segs.get(i + 2) {
            Some(res) => format!("/api/v1/{res}"),
            None => "/api/v1".to_owned(),
        },
        None => format!("/{}", segs.first().copied().unwrap_or_default()),
    }
}

#[derive(Debug, Default)]
struct Bucket {
    /// From the last headers; `None` until a response named it.
    known: Option<Window>,
    /// Reserved and not yet answered.
    in_flight: u32,
    /// We already assumed a fresh window after `reset` passed; wait for headers before assuming
    /// again.
    refilled: bool,
    /// A response came without rate-limit headers: nothing to pace by, so do not hold requests
    /// back waiting for headers that may never come.
    headerless: bool,
    /// Epoch seconds before which a 429 told us not to send (the latest such time named).
    hold_until: Option<f64>,
    /// A 429 made the local count untrustworthy: after the hold, one request goes alone and its
    /// answer re-syncs the bucket.
    probing: bool,
    /// That probe is on its way.
    probe_out: bool,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    limit: u32,
    /// Locally counted: the server's figure minus our reservations since.
    remaining: u32,
    reset: u64,
}

#[derive(Default)]
struct Shared {
    buckets: Mutex<HashMap<String, Bucket>>,
    news: Notify,
    waits: AtomicU64,
}

/// Shared by all clones of one Okta client.
#[derive(Clone, Default)]
pub struct Pacer {
    shared: Arc<Shared>,
}

/// A reserved slot: hand it the response headers with [`Permit::finish`]; dropping it (transport
/// error, cancelled task) just releases it.
pub struct Permit {
    shared: Arc<Shared>,
    bucket: String,
    open: bool,
    probe: bool,
}

#[derive(Debug)]
enum Next {
    Go {
        probe: bool,
    },
    /// Until the window resets, or a 429's hold ends.
    Sleep(Duration),
    /// Until a response brings headers.
    AwaitNews,
}

impl Pacer {
    /// Times a request waited for a window to reset instead of being sent.
    pub fn waits(&self) -> u64 {
        self.shared.waits.load(Ordering::Relaxed)
    }

    /// Waits until `bucket` has a slot, then takes it.
    pub async fn reserve(&self, bucket: &str) -> Permit {
        loop {
            let news = self.shared.news.notified();
            tokio::pin!(news);
            // Registered before the lock is released, so a sync in between is not missed.
            news.as_mut().enable();
            let next = {
                let mut buckets = lock(&self.shared.buckets);
                let b = buckets.entry(bucket.to_owned()).or_default();
                decide(b, epoch_now())
            };
            match next {
                Next::Go { probe } => {
                    return Permit {
                        shared: self.shared.clone(),
                        bucket: bucket.to_owned(),
                        open: true,
                        probe,
                    }
                }
                Next::Sleep(d) => {
                    self.shared.waits.fetch_add(1, Ordering::Relaxed);
                    crate::ops::metrics::metrics().throttle_wait("okta");
                    tracing::debug!(
                        bucket,
                        wait_ms = d.as_millis() as u64,
                        "okta pacing: waiting for the rate-limit window to reset"
                    );
                    tokio::time::sleep(d).await;
                }
                Next::AwaitNews => {
                    let _ = tokio::time::timeout(NEWS_POLL, news).await;
                }
            }
        }
    }
}

fn decide(b: &mut Bucket, now: f64) -> Next {
    if let Some(until) = b.hold_until {
        if now < until {
            return Next::Sleep(Duration::from_secs_f64(until - now));
        }
        b.hold_until = None;
    }
    if b.probing {
        if b.probe_out {
            return Next::AwaitNews;
        }
        b.probe_out = true;
        b.in_flight += 1;
        return Next::Go { probe: true };
    }
    let Some(w) = b.known.as_mut() else {
        // Nothing known yet: one probe at a time, until the first headers arrive.
        if b.in_flight == 0 || b.headerless {
            b.in_flight += 1;
            return Next::Go { probe: false };
        }
        return Next::AwaitNews;
    };
    if w.remaining > 0 {
        w.remaining -= 1;
        b.in_flight += 1;
        return Next::Go { probe: false };
    }
    let wake = w.reset as f64 + RESET_MARGIN.as_secs_f64();
    if now < wake {
        return Next::Sleep(Duration::from_secs_f64(wake - now));
    }
    if !b.refilled {
        // The window rolled by the clock: assume a full one, less what is still in flight from
        // the old one; the first response of the new window corrects the count.
        b.refilled = true;
        w.remaining = w.limit.saturating_sub(b.in_flight).saturating_sub(1);
        b.in_flight += 1;
        return Next::Go { probe: false };
    }
    if b.in_flight == 0 {
        // Used up the assumed window without any headers coming back: probe once.
        b.in_flight += 1;
        return Next::Go { probe: false };
    }
    Next::AwaitNews
}

/// Re-sync from a response. A later reset means the window rolled: the server's figure is the
/// truth, less what we sent since. Same window: keep the lower of ours and the server's, since
/// ours counts reservations the server has not seen and the server's counts other clients.
fn sync(b: &mut Bucket, h: RateHeaders) {
    match b.known.as_mut() {
        Some(w) if h.reset < w.reset => {} // a late answer from an older window
        Some(w) if h.reset == w.reset => {
            w.limit = h.limit;
            w.remaining = w.remaining.min(h.remaining.saturating_sub(b.in_flight));
        }
        _ => {
            b.known = Some(Window {
                limit: h.limit,
                remaining: h.remaining.saturating_sub(b.in_flight),
                reset: h.reset,
            });
            b.refilled = false;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a reserved request ended.
enum Outcome {
    /// No answer (transport error, cancelled task).
    Unanswered,
    /// Answered, not 429.
    Answered(Option<RateHeaders>),
    /// 429: hold the bucket until this time, if any, then probe.
    Throttled(Option<f64>),
}

impl Permit {
    /// A response other than 429 arrived: release the slot and re-sync the bucket from its
    /// headers.
    pub fn finish(mut self, headers: Option<RateHeaders>) {
        self.release(Outcome::Answered(headers));
    }

    /// A 429 arrived: hold the bucket until `until` (see [`throttled_until`]), then let one probe
    /// re-learn it. The 429's own counts are not synced: a concurrency-limit 429 reports a
    /// window that is not the bucket's per-minute one.
    pub fn throttled(mut self, until: Option<f64>) {
        self.release(Outcome::Throttled(until));
    }

    fn release(&mut self, outcome: Outcome) {
        if !self.open {
            return;
        }
        self.open = false;
        let mut buckets = lock(&self.shared.buckets);
        let b = buckets.entry(self.bucket.clone()).or_default();
        b.in_flight = b.in_flight.saturating_sub(1);
        if self.probe {
            b.probe_out = false;
        }
        match outcome {
            Outcome::Unanswered => {}
            Outcome::Answered(headers) => {
                if self.probe && b.probing {
                    // The first answer after a 429: its figures replace a count the 429 made
                    // meaningless, whichever window they name.
                    b.probing = false;
                    if headers.is_some() {
                        b.known = None;
                    }
                }
                match headers {
                    Some(h) => {
                        b.headerless = false;
                        sync(b, h);
                    }
                    None => b.headerless = true,
                }
            }
            Outcome::Throttled(until) => {
                b.probing = true;
                if let Some(until) = until {
                    b.hold_until = Some(b.hold_until.map_or(until, |h| h.max(until)));
                }
            }
        }
        drop(buckets);
        self.shared.news.notify_waiters();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.release(Outcome::Unanswered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_resource() {
        assert_eq!(bucket_of("/api/v1/users/00u1"), "/api/v1/users");
        assert_eq!(bucket_of("/api/v1/apps/0oa1/users/00u1"), "/api/v1/apps");
        assert_eq!(bucket_of("/okta/api/v1/mappings"), "/api/v1/mappings");
        assert_eq!(bucket_of("/api/v1"), "/api/v1");
    }

    #[test]
    fn reads_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-limit", "600".parse().unwrap());
        h.insert("x-rate-limit-remaining", "599".parse().unwrap());
        h.insert("x-rate-limit-reset", "1700000000".parse().unwrap());
        assert_eq!(
            RateHeaders::from_headers(&h),
            Some(RateHeaders {
                limit: 600,
                remaining: 599,
                reset: 1_700_000_000
            })
        );
        h.remove("x-rate-limit-reset");
        assert_eq!(RateHeaders::from_headers(&h), None);
    }

    #[test]
    fn reservations_count_down_and_then_sleep_until_reset() {
        let mut b = Bucket::default();
        let now = 1_000.0;
        assert!(matches!(decide(&mut b, now), Next::Go { .. })); // probe
        assert!(matches!(decide(&mut b, now), Next::AwaitNews));
        b.in_flight -= 1;
        sync(
            &mut b,
            RateHeaders {
                limit: 3,
                remaining: 2,
                reset: 1_002,
            },
        );
        assert!(matches!(decide(&mut b, now), Next::Go { .. }));
        assert!(matches!(decide(&mut b, now), Next::Go { .. }));
        match decide(&mut b, now) {
            Next::Sleep(d) => assert!(d >= Duration::from_secs(2)),
            _ => panic!("expected to sleep"),
        }
        // A stale answer from the same window cannot raise the count.
        b.in_flight -= 1;
        sync(
            &mut b,
            RateHeaders {
                limit: 3,
                remaining: 1,
                reset: 1_002,
            },
        );
        assert!(matches!(decide(&mut b, now), Next::Sleep(_)));
        // After the reset, a fresh window is assumed once, less what is still in flight.
        let later = 1_003.5;
        assert!(matches!(decide(&mut b, later), Next::Go { .. }));
        assert_eq!(b.known.unwrap().remaining, 1);
        assert_eq!(b.in_flight, 2);
    }

    #[test]
    fn a_new_window_takes_the_servers_count_less_in_flight() {
        let mut b = Bucket {
            known: Some(Window {
                limit: 10,
                remaining: 0,
                reset: 100,
            }),
            in_flight: 3,
            refilled: true,
            ..Bucket::default()
        };
        sync(
            &mut b,
            RateHeaders {
                limit: 10,
                remaining: 9,
                reset: 160,
            },
        );
        assert_eq!(b.known.unwrap().remaining, 6);
        assert!(!b.refilled);
    }

    #[tokio::test]
    async fn permits_release_on_drop() {
        let p = Pacer::default();
        let permit = p.reserve("/api/v1/users").await;
        drop(permit);
        // The probe slot is free again, so this does not wait.
        let permit = tokio::time::timeout(Duration::from_millis(50), p.reserve("/api/v1/users"))
            .await
            .expect("released");
        permit.finish(Some(RateHeaders {
            limit: 5,
            remaining: 4,
            reset: u64::MAX / 2,
        }));
        assert_eq!(p.waits(), 0);
    }

    #[test]
    fn a_429_is_timed_by_its_own_headers() {
        let now = 1_000.5;
        let rate = |reset| {
            Some(RateHeaders {
                limit: 600,
                remaining: 0,
                reset,
            })
        };
        assert_eq!(throttled_until(rate(1_002), None, now), Some(1_003.0));
        assert_eq!(
            throttled_until(rate(1_060), Some(Duration::from_millis(1_500)), now),
            Some(1_002.0),
            "Retry-After wins over the reset"
        );
        // A reset already here or gone: retry soon, not at some other window's end.
        assert_eq!(throttled_until(rate(1_000), None, now), None);
        assert_eq!(throttled_until(rate(900), None, now), None);
        assert_eq!(
            throttled_until(rate(1_060), Some(Duration::ZERO), now),
            None
        );
        assert_eq!(throttled_until(None, None, now), None);
    }

    fn headers(remaining: u32, reset: u64) -> Option<RateHeaders> {
        Some(RateHeaders {
            limit: 600,
            remaining,
            reset,
        })
    }

    #[tokio::test]
    async fn a_429_with_an_earlier_reset_holds_only_until_its_own_time_then_probes_once() {
        let p = Pacer::default();
        let bucket = "/api/v1/users";
        let window_end = epoch_now() as u64 + 60;
        p.reserve(bucket).await.finish(headers(599, window_end));
        let throttled = p.reserve(bucket).await;
        throttled.throttled(Some(epoch_now() + 0.2));

        let started = tokio::time::Instant::now();
        let probe = tokio::time::timeout(Duration::from_secs(2), p.reserve(bucket))
            .await
            .expect("held until the 429's own time, not the window's end");
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(probe.probe);
        // Until the probe answers, nobody else goes.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), p.reserve(bucket))
                .await
                .is_err()
        );
        probe.finish(headers(590, window_end));
        let next = tokio::time::timeout(Duration::from_millis(100), p.reserve(bucket))
            .await
            .expect("the probe's answer reopens the bucket");
        assert!(!next.probe);
    }

    #[tokio::test]
    async fn a_probe_that_gets_no_answer_passes_the_turn_on() {
        let p = Pacer::default();
        let bucket = "/api/v1/apps";
        p.reserve(bucket).await.throttled(None);
        let probe = p.reserve(bucket).await;
        assert!(
            probe.probe,
            "a 429 with nothing to wait for still probes first"
        );
        drop(probe);
        let next = tokio::time::timeout(Duration::from_millis(100), p.reserve(bucket))
            .await
            .expect("a lost probe does not block the bucket");
        assert!(next.probe);
    }

    #[test]
    fn the_probes_answer_replaces_the_count_a_429_spoiled() {
        let mut b = Bucket {
            known: Some(Window {
                limit: 600,
                remaining: 0,
                reset: 1_060,
            }),
            probing: true,
            ..Bucket::default()
        };
        assert!(matches!(decide(&mut b, 1_000.0), Next::Go { probe: true }));
        assert!(matches!(decide(&mut b, 1_000.0), Next::AwaitNews));
        let shared = Arc::new(Shared::default());
        lock(&shared.buckets).insert("/b".into(), b);
        Permit {
            shared: shared.clone(),
            bucket: "/b".into(),
            open: true,
            probe: true,
        }
        .finish(headers(590, 1_060));
        let mut buckets = lock(&shared.buckets);
        let b = buckets.get_mut("/b").unwrap();
        assert!(!b.probing);
        assert_eq!(b.known.unwrap().remaining, 590);
        assert!(matches!(decide(b, 1_000.0), Next::Go { probe: false }));
    }
}
