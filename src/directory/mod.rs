//! Clients for the two directories the repair touches: Microsoft Graph (Entra ID) and Okta.

pub mod assertion;
pub mod graph;
mod oauth;
pub mod okta;
pub mod retry;

use std::time::Duration;

/// A successful API answer with the id the service gave the request, for the journal and thread.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub value: T,
    pub request_id: Option<String>,
}

impl<T> Reply<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Reply<U> {
        Reply {
            value: f(self.value),
            request_id: self.request_id,
        }
    }
}

/// Time limits and retry budget shared by both clients.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// One HTTP exchange.
    #[serde(with = "millis")]
    pub request_timeout: Duration,
    /// One logical call, all retries and waits included.
    #[serde(with = "millis")]
    pub call_deadline: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// First backoff when the service gives no `Retry-After`; doubles each attempt, with jitter.
    #[serde(with = "millis")]
    pub base_backoff: Duration,
    #[serde(with = "millis")]
    pub max_backoff: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(15),
            call_deadline: Duration::from_secs(120),
            max_attempts: 6,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(20),
        }
    }
}

/// Durations in config files are whole milliseconds.
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
