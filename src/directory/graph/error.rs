//! Graph failures, keyed on the service's own `error.code` so callers can branch on it.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// The service answered with an error envelope.
    #[error("Graph {status} {code}: {message} (request-id {})", request_id.as_deref().unwrap_or("none"))]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// The token endpoint refused the app's credentials.
    #[error("token endpoint refused the app credentials: {status} {error}: {description}")]
    Auth {
        status: u16,
        error: String,
        description: String,
    },
    #[error("Graph did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Graph call gave up after {attempts} attempts over {elapsed:?}; last: {last}")]
    Exhausted {
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    #[error("could not reach Graph: {0}")]
    Transport(String),
    #[error("unexpected Graph response: {0}")]
    Decode(String),
}

impl GraphError {
    /// The service's error code (`Request_BadRequest`, …), when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Api { code, .. } => Some(code),
            GraphError::Auth { error, .. } => Some(error),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            GraphError::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Api { status, .. } | GraphError::Auth { status, .. } => Some(*status),
            _ => None,
        }
    }
}
