//! Abuse limits: a per-person command rate (governor, GCRA) and a cap on runs open at once.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Limits {
    per_user: DefaultKeyedRateLimiter<u64>,
    clock: DefaultClock,
    open: Arc<AtomicUsize>,
    max_open: usize,
}

/// One open run: awaiting approval or executing. Dropping it frees the place.
#[derive(Debug)]
pub struct OpenRun {
    open: Arc<AtomicUsize>,
}

impl Drop for OpenRun {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    pub fn new(per_minute: u32, burst: u32, max_open: usize) -> Self {
        let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            per_user: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            open: Arc::new(AtomicUsize::new(0)),
            max_open: max_open.max(1),
        }
    }

    /// `Err(wait)` when this person has sent too many commands; `wait` is when the next is allowed.
    pub fn check_user(&self, user: u64) -> Result<(), Duration> {
        match self.per_user.check_key(&user) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Takes a place for a new run, or `None` when `max_open` runs are open.
    pub fn try_open(&self) -> Option<OpenRun> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_open).then_some(n + 1)
            })
            .ok()
            .map(|_| OpenRun {
                open: Arc::clone(&self.open),
            })
    }

    pub fn open_runs(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn max_open(&self) -> usize {
        self.max_open
    }

    /// Forgets people who have not sent a command lately (bounded memory).
    pub fn forget_idle(&self) {
        self.per_user.retain_recent();
    }
}

/// "in 12 s", "in 3 min": when to retry, rounded up.
pub fn retry_in(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if secs < 120 {
        format!("in {} s", secs.max(1))
    } else {
        format!("in {} min", secs.div_ceil(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_with_a_wait() {
        let l = Limits::new(2, 2, 5);
        assert!(l.check_user(1).is_ok());
        assert!(l.check_user(1).is_ok());
        let wait = l.check_user(1).unwrap_err();
        assert!(wait > Duration::from_secs(20) && wait <= Duration::from_secs(30));
        assert!(l.check_user(2).is_ok(), "limits are per person");
    }

    #[test]
    fn cap_counts_open_runs_and_frees_on_drop() {
        let l = Limits::new(60, 10, 2);
        let a = l.try_open().unwrap();
        let _b = l.try_open().unwrap();
        assert!(l.try_open().is_none());
        drop(a);
        assert_eq!(l.open_runs(), 1);
        assert!(l.try_open().is_some());
    }

    #[test]
    fn retry_wording() {
        assert_eq!(retry_in(Duration::from_millis(1500)), "in 2 s");
        assert_eq!(retry_in(Duration::from_secs(600)), "in 10 min");
    }
}
