//! Okta's rate limits: fixed windows per endpoint bucket, reported on every response.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::clock::epoch_secs_f64;

/// What one request saw of its bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateStatus {
    pub limit: u32,
    pub remaining: u32,
    /// UTC epoch seconds at which the window resets.
    pub reset: u64,
    pub over: bool,
}

pub(crate) struct RateLimiter {
    limit: u32,
    window: Duration,
    origin: Instant,
    origin_epoch: f64,
    buckets: HashMap<&'static str, (u64, u32)>,
    /// Buckets whose limit differs from the default one.
    own_limits: HashMap<&'static str, u32>,
}

/// The System Log's own bucket. Okta's "Management rate limits" page lists "Get System Log
/// data: /api/v1/logs" apart from the user and app endpoints, per minute: 20 (Developer free),
/// 50 (Developer paid, One App, Enterprise), 120 (Workforce Identity). The sandbox plays a
/// Workforce org.
pub(crate) const LOGS_BUCKET: &str = "/api/v1/logs";
pub(crate) const LOGS_LIMIT: u32 = 120;

/// The bucket of an Okta API path (relative to the org, `/api/v1/...`).
pub(crate) fn bucket_for(path: &str) -> &'static str {
    for prefix in [
        "/api/v1/users",
        "/api/v1/apps",
        "/api/v1/mappings",
        LOGS_BUCKET,
    ] {
        if path == prefix || path.starts_with(&format!("{prefix}/")) {
            return prefix;
        }
    }
    "/api/v1"
}

impl RateLimiter {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window: window.max(Duration::from_millis(1)),
            origin: Instant::now(),
            origin_epoch: epoch_secs_f64(SystemTime::now()),
            buckets: HashMap::new(),
            own_limits: HashMap::from([(LOGS_BUCKET, LOGS_LIMIT)]),
        }
    }

    /// Gives `bucket` its own limit (same window).
    pub(crate) fn set_bucket_limit(&mut self, bucket: &'static str, limit: u32) {
        self.own_limits.insert(bucket, limit);
    }

    fn limit_of(&self, bucket: &str) -> u32 {
        self.own_limits.get(bucket).copied().unwrap_or(self.limit)
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// Counts one request against `bucket`.
    pub(crate) fn consume(&mut self, bucket: &'static str, now: Instant) -> RateStatus {
        let elapsed = now.saturating_duration_since(self.origin);
        let idx = (elapsed.as_nanos() / self.window.as_nanos()) as u64;
        let entry = self.buckets.entry(bucket).or_insert((idx, 0));
        if entry.0 != idx {
            *entry = (idx, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        let used = entry.1;
        let limit = self.limit_of(bucket);
        let reset = (self.origin_epoch + (idx + 1) as f64 * self.window.as_secs_f64()).ceil();
        RateStatus {
            limit,
            remaining: limit.saturating_sub(used),
            reset: reset as u64,
            over: used > limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_prefix() {
        assert_eq!(bucket_for("/api/v1/users/00u1/groups"), "/api/v1/users");
        assert_eq!(bucket_for("/api/v1/apps/0oa1/users"), "/api/v1/apps");
        assert_eq!(bucket_for("/api/v1/mappings"), "/api/v1/mappings");
        assert_eq!(bucket_for("/api/v1/usersx"), "/api/v1");
        assert_eq!(bucket_for("/api/v1/logs"), LOGS_BUCKET);
    }

    #[test]
    fn over_the_limit_in_one_window() {
        let mut r = RateLimiter::new(2, Duration::from_secs(3600));
        let now = Instant::now();
        assert!(!r.consume("/api/v1/users", now).over);
        let s = r.consume("/api/v1/users", now);
        assert_eq!((s.remaining, s.over), (0, false));
        assert!(r.consume("/api/v1/users", now).over);
        assert!(!r.consume("/api/v1/apps", now).over);
        r.set_bucket_limit(LOGS_BUCKET, 1);
        assert_eq!(r.consume(LOGS_BUCKET, now).limit, 1);
        assert!(r.consume(LOGS_BUCKET, now).over);
    }
}
