//! Okta failures, keyed on `errorCode` so callers can branch on it.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OktaError {
    #[error("Okta {status} {code}: {summary} (request id {})", request_id.as_deref().unwrap_or("none"))]
    Api {
        status: u16,
        code: String,
        summary: String,
        request_id: Option<String>,
    },
    #[error("Okta did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Okta call gave up after {attempts} attempts over {elapsed:?}; last: {last}")]
    Exhausted {
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    #[error("could not reach Okta: {0}")]
    Transport(String),
    #[error("unexpected Okta response: {0}")]
    Decode(String),
}

impl OktaError {
    pub fn code(&self) -> Option<&str> {
        match self {
            OktaError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn request_id(&self) -> Option<&str> {
        match self {
            OktaError::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            OktaError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
