//! Retry timing shared by the clients: `Retry-After` (decimal seconds) or exponential backoff
//! with jitter, within an overall deadline.

use super::HttpSettings;
use rand::Rng;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest server-requested wait taken at face value; anything larger is a misconfigured proxy,
/// and the call deadline caps it anyway.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` as a wait from `now`: delta seconds (Graph sends decimals such as `2.128`) or an
/// HTTP-date. Anything else is `None`, so the caller falls back to its own backoff.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = v.parse().ok()?;
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(
            secs.min(MAX_RETRY_AFTER.as_secs_f64()),
        ));
    }
    let at = parse_http_date(v)?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only HTTP-date form servers may send today.
fn parse_http_date(v: &str) -> Option<SystemTime> {
    let (_weekday, rest) = v.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let year: i64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How much of the exponential step is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, step]`: spreads a crowd best, but a wait can be near zero.
    Full,
    /// `step/2` plus uniform in `[0, step/2]`: always waits at least half the step.
    Equal,
}

/// Exponential backoff: `base`, `2·base`, `4·base`, … capped at `max`, then jittered.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    pub fn from_settings(http: &HttpSettings) -> Self {
        Self {
            base: http.base_backoff,
            max: http.max_backoff.max(http.base_backoff),
            jitter: Jitter::Equal,
        }
    }

    /// The un-jittered step before retry `n` (1 = the first retry).
    pub fn step(&self, n: u32) -> Duration {
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `n`, jittered.
    pub fn delay(&self, n: u32) -> Duration {
        let step = self.step(n);
        let ms = step.as_millis().min(u128::from(u64::MAX)) as u64;
        let mut rng = rand::rng();
        let ms = match self.jitter {
            Jitter::Full => rng.random_range(0..=ms),
            Jitter::Equal => ms / 2 + rng.random_range(0..=ms - ms / 2),
        };
        Duration::from_millis(ms)
    }
}

/// What one attempt of a call came to.
pub enum Attempt<T, E> {
    /// Success, or a failure that retrying cannot fix.
    Done(Result<T, E>),
    /// A failure worth retrying, after `after` (the service's `Retry-After`) or our own backoff.
    Retry { error: E, after: Option<Duration> },
    /// Retry at once: the failure was ours to fix (e.g. a stale token, now dropped).
    RetryNow { error: E },
}

/// What an attempt may use.
#[derive(Debug, Clone, Copy)]
pub struct AttemptCtx {
    /// 1-based.
    pub number: u32,
    /// For this HTTP exchange: the request timeout, clipped to what is left of the call deadline.
    pub timeout: Duration,
    /// The end of the whole call: waits inside an attempt (pacing) must not pass it.
    pub deadline: Instant,
}

impl AttemptCtx {
    /// The request timeout for an exchange starting now (after any wait inside the attempt).
    pub fn timeout_now(&self, request_timeout: Duration) -> Duration {
        request_timeout
            .min(self.deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1))
    }
}

/// Why the loop stopped retrying.
#[derive(Debug, Clone, Copy)]
pub struct GiveUp {
    pub attempts: u32,
    pub elapsed: Duration,
    /// The deadline, not the attempt count, ended the call.
    pub deadline: bool,
}

/// Runs `attempt` until it is done, `max_attempts` are used, or the next wait would end past
/// `call_deadline`; then `give_up` turns the last error into the caller's final error. Never
/// sleeps past the deadline: a wait that would cross it ends the call at once.
pub async fn run<T, E, F, Fut>(
    http: &HttpSettings,
    mut attempt: F,
    give_up: impl FnOnce(GiveUp, E) -> E,
) -> Result<T, E>
where
    F: FnMut(AttemptCtx) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let started = Instant::now();
    let deadline = started + http.call_deadline;
    let backoff = Backoff::from_settings(http);
    let max_attempts = http.max_attempts.max(1);
    let mut number = 0u32;
    let mut backoff_n = 0u32;
    loop {
        number += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let ctx = AttemptCtx {
            number,
            timeout: http.request_timeout.min(left).max(Duration::from_millis(1)),
            deadline,
        };
        let (error, after) = match attempt(ctx).await {
            Attempt::Done(r) => return r,
            Attempt::Retry { error, after } => (error, after),
            Attempt::RetryNow { error } => (error, Some(Duration::ZERO)),
        };
        let stop = |deadline_hit: bool| GiveUp {
            attempts: number,
            elapsed: started.elapsed(),
            deadline: deadline_hit,
        };
        if number >= max_attempts {
            return Err(give_up(stop(false), error));
        }
        let wait = match after {
            Some(w) => w,
            None => {
                backoff_n += 1;
                backoff.delay(backoff_n)
            }
        };
        let now = Instant::now();
        if now + wait >= deadline {
            return Err(give_up(stop(true), error));
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Seconds since the epoch, fractional: the unit of Okta's `X-Rate-Limit-Reset`.
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777) // Sun, 06 Nov 1994 08:49:37 GMT
    }

    #[test]
    fn retry_after_decimal_and_integer_seconds() {
        assert_eq!(
            parse_retry_after("1.5", now()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("2.128", now()),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(
            parse_retry_after(" 3 ", now()),
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse_retry_after("0", now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_http_date() {
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now()),
            Some(Duration::from_secs(10))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn retry_after_invalid_is_none() {
        for bad in [
            "",
            "soon",
            "-1",
            "1.2.3",
            ".",
            "1e3",
            "Sun, 06 Nov 1994 25:00:00 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad:?}");
        }
    }

    #[test]
    fn schedule_doubles_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            jitter: Jitter::Full,
        };
        let steps: Vec<u128> = (1..=6).map(|n| b.step(n).as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.step(500), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_stays_within_its_band() {
        for jitter in [Jitter::Full, Jitter::Equal] {
            let b = Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(10),
                jitter,
            };
            for n in 1..=5 {
                let step = b.step(n);
                let floor = if jitter == Jitter::Equal {
                    step / 2
                } else {
                    Duration::ZERO
                };
                for _ in 0..100 {
                    let d = b.delay(n);
                    assert!(d >= floor && d <= step, "{jitter:?} n={n} {d:?}");
                }
            }
        }
    }

    fn settings(attempts: u32, deadline_ms: u64) -> HttpSettings {
        HttpSettings {
            request_timeout: Duration::from_millis(500),
            call_deadline: Duration::from_millis(deadline_ms),
            max_attempts: attempts,
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn loop_retries_then_succeeds() {
        let r: Result<u32, String> = run(
            &settings(5, 5_000),
            |ctx| async move {
                if ctx.number < 3 {
                    Attempt::Retry {
                        error: format!("fail {}", ctx.number),
                        after: None,
                    }
                } else {
                    Attempt::Done(Ok(ctx.number))
                }
            },
            |_, e| e,
        )
        .await;
        assert_eq!(r, Ok(3));
    }

    #[tokio::test]
    async fn loop_stops_at_max_attempts() {
        let r: Result<(), (u32, bool, String)> = run(
            &settings(3, 5_000),
            |ctx| async move {
                Attempt::Retry {
                    error: (0, false, format!("fail {}", ctx.number)),
                    after: None,
                }
            },
            |g, e| (g.attempts, g.deadline, e.2),
        )
        .await;
        assert_eq!(r, Err((3, false, "fail 3".into())));
    }

    #[tokio::test]
    async fn loop_never_sleeps_past_the_deadline() {
        let started = Instant::now();
        let r: Result<(), (u32, bool)> = run(
            &settings(10, 300),
            |_| async move {
                Attempt::Retry {
                    error: (0, false),
                    after: Some(Duration::from_secs(5)),
                }
            },
            |g, _| (g.attempts, g.deadline),
        )
        .await;
        assert_eq!(r, Err((1, true)));
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[tokio::test]
    async fn attempt_timeout_is_clipped_to_the_deadline() {
        let r: Result<Duration, ()> = run(
            &settings(1, 100),
            |ctx| async move { Attempt::Done(Ok(ctx.timeout)) },
            |_, e| e,
        )
        .await;
        assert!(r.unwrap() <= Duration::from_millis(100));
    }
}
