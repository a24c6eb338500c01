//! Client-side pacing of Graph writes, so bulk work stays under the app's write budget instead
//! of learning it from 429s.
//!
//! Microsoft documents the identity and access write quota as 3,000 requests per 2 minutes
//! 30 seconds per application + tenant pair (18,000 per 5 minutes per tenant, all apps together;
//! "Microsoft Graph service-specific throttling limits", identity and access service limits).
//! POST, PATCH, PUT and DELETE each cost one write; GETs cost none.

use crate::directory::millis;
use governor::{DefaultDirectRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `writes` write requests in any `window`, as this client sends them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriteBudget {
    pub writes: u32,
    #[serde(with = "millis")]
    pub window: Duration,
}

impl Default for WriteBudget {
    /// 80% of the documented 3,000 per 150 s: the rest is left to other apps' writes that count
    /// against the tenant-wide quota, and to requests a slow network bunches together on arrival.
    fn default() -> Self {
        Self {
            writes: 2_400,
            window: Duration::from_secs(150),
        }
    }
}

impl WriteBudget {
    /// A burst of a tenth of the budget goes at once (a repair's two PATCHes never wait); the
    /// rest is spread so that the burst plus the steady rate over one window is the budget.
    fn quota(&self) -> Option<Quota> {
        let writes = self.writes.max(1);
        if self.window.is_zero() {
            return None;
        }
        let burst = (writes / 10).max(1);
        let steady = (writes - burst).max(1);
        let period = (self.window / steady).max(Duration::from_nanos(1));
        Some(Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst)?))
    }
}

/// Paces writes by a GCRA limiter sized from the [`WriteBudget`], and holds every write while
/// Graph has said (429 + `Retry-After`) the app's budget is spent.
pub(super) struct WritePacer {
    limiter: Option<DefaultDirectRateLimiter>,
    not_before: Mutex<Option<Instant>>,
}

impl WritePacer {
    pub(super) fn new(budget: &WriteBudget) -> Self {
        Self {
            limiter: budget.quota().map(DefaultDirectRateLimiter::direct),
            not_before: Mutex::new(None),
        }
    }

    /// Waits until one more write may be sent; `false` when that would be after `deadline`
    /// (nothing is sent then).
    pub(super) async fn ready(&self, deadline: Instant) -> bool {
        let wait = async {
            // Graph's pause first: it can be lengthened while waiting, so read it again after
            // each wait; each round waits at least until the pause read, so this ends.
            for _ in 0..16 {
                let until = *self.not_before.lock().unwrap_or_else(|e| e.into_inner());
                match until {
                    Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                    _ => break,
                }
            }
            if let Some(l) = &self.limiter {
                l.until_ready().await;
            }
        };
        tokio::time::timeout_at(deadline.into(), wait).await.is_ok()
    }

    /// Graph refused a write for the budget: no write goes before `until`.
    pub(super) fn hold_until(&self, until: Instant) {
        let mut nb = self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        if nb.is_none_or(|t| t < until) {
            *nb = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_plus_one_window_of_steady_rate_is_the_budget() {
        let b = WriteBudget {
            writes: 3_000,
            window: Duration::from_secs(150),
        };
        let q = b.quota().unwrap();
        let burst = q.burst_size().get();
        let steady = b.window.as_nanos() / q.replenish_interval().as_nanos();
        assert_eq!(burst, 300);
        assert!(u128::from(burst) + steady <= 3_000, "{burst} + {steady}");
        assert!(u128::from(burst) + steady >= 2_990, "{burst} + {steady}");
    }

    #[test]
    fn tiny_budgets_still_pace() {
        let q = WriteBudget {
            writes: 1,
            window: Duration::from_secs(1),
        }
        .quota()
        .unwrap();
        assert_eq!(q.burst_size().get(), 1);
        assert_eq!(q.replenish_interval(), Duration::from_secs(1));
        assert!(WriteBudget {
            writes: 10,
            window: Duration::ZERO
        }
        .quota()
        .is_none());
    }

    #[tokio::test]
    async fn a_hold_delays_writes_and_the_deadline_ends_the_wait() {
        let p = WritePacer::new(&WriteBudget {
            writes: 1_000,
            window: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        p.hold_until(t0 + Duration::from_millis(120));
        // An earlier hold does not shorten a later one.
        p.hold_until(t0 + Duration::from_millis(10));
        assert!(!p.ready(t0 + Duration::from_millis(50)).await);
        assert!(p.ready(t0 + Duration::from_secs(5)).await);
        assert!(t0.elapsed() >= Duration::from_millis(120));
    }
}
