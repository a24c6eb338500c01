//! Graph's identity write quota: write requests (POST, PATCH, PUT, DELETE) per application and
//! tenant in any window; over it, 429 with a `Retry-After` in (decimal) seconds.
//!
//! Microsoft documents 3,000 writes per 2 minutes 30 seconds per application + tenant pair, and
//! implements it as a token bucket; a sliding window of the same size is the strictest reading
//! of that figure, so a client that passes here passes there. A refused request costs nothing.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub(crate) struct WriteQuota {
    limit: u32,
    window: Duration,
    /// Per app: when each write inside the current window was admitted, oldest first.
    admitted: HashMap<String, VecDeque<Instant>>,
}

impl WriteQuota {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window: window.max(Duration::from_millis(1)),
            admitted: HashMap::new(),
        }
    }

    /// Counts one write by `app` at `now`, or says how long until one would be admitted.
    pub(crate) fn admit(&mut self, app: &str, now: Instant) -> Result<(), Duration> {
        let log = self.admitted.entry(app.to_owned()).or_default();
        while log
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            log.pop_front();
        }
        if log.len() < self.limit as usize {
            log.push_back(now);
            return Ok(());
        }
        let oldest = *log.front().expect("a full window holds writes");
        Err((oldest + self.window).saturating_duration_since(now))
    }
}

/// `Retry-After` as Graph sends it: seconds, with a fraction when the wait is not whole
/// (`2.128`), never less than a millisecond so a client does not retry at once.
pub(crate) fn retry_after_value(wait: Duration) -> String {
    let ms = wait.as_millis().max(1);
    if ms.is_multiple_of(1000) {
        format!("{}", ms / 1000)
    } else {
        format!("{}.{:03}", ms / 1000, ms % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides() {
        let mut q = WriteQuota::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(q.admit("a", t0).is_ok());
        assert!(q.admit("a", t0 + Duration::from_secs(4)).is_ok());
        let wait = q.admit("a", t0 + Duration::from_secs(5)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(5));
        // Another app has its own budget.
        assert!(q.admit("b", t0 + Duration::from_secs(5)).is_ok());
        // The refused write cost nothing: the first write leaves the window at t0 + 10 s.
        assert!(q.admit("a", t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(
            q.admit("a", t0 + Duration::from_secs(11)).unwrap_err(),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn retry_after_is_decimal_seconds() {
        assert_eq!(retry_after_value(Duration::from_millis(2128)), "2.128");
        assert_eq!(retry_after_value(Duration::from_millis(50)), "0.050");
        assert_eq!(retry_after_value(Duration::from_secs(3)), "3");
        assert_eq!(retry_after_value(Duration::ZERO), "0.001");
    }
}
