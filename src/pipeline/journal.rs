//! Write-ahead journalling of every write: the intent is committed before the call is made, the
//! outcome and request id after it.

use super::outcome::{classify, Verdict};
use crate::directory::graph::GraphError;
use crate::directory::okta::OktaError;
use crate::directory::Reply;
use crate::domain::RunId;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::future::Future;

/// A failed API call, reduced to what the thread and the compensation logic need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiFailure {
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
    /// The HTTP status, when an answer arrived.
    #[serde(default)]
    pub status: Option<u16>,
    /// The service refused (see [`super::outcome::classify`]), so the write certainly did not
    /// happen. Timeouts, transport errors and 5xx leave the outcome unknown.
    pub definitive: bool,
}

impl ApiFailure {
    fn classified(
        status: Option<u16>,
        code: Option<&str>,
        message: String,
        request_id: Option<&str>,
    ) -> Self {
        Self {
            definitive: classify(status, code) == Verdict::Refused,
            code: code.map(str::to_owned),
            message,
            request_id: request_id.map(str::to_owned),
            status,
        }
    }

    pub fn from_graph(e: &GraphError) -> Self {
        Self::classified(e.status(), e.code(), e.to_string(), e.request_id())
    }

    pub fn from_okta(e: &OktaError) -> Self {
        Self::classified(e.status(), e.code(), e.to_string(), e.request_id())
    }

    pub fn internal(message: String) -> Self {
        Self {
            code: None,
            message,
            request_id: None,
            status: None,
            definitive: false,
        }
    }

    pub fn is_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A client error that can be reduced to what the journal and the thread need.
pub trait ApiError {
    fn failure(&self) -> ApiFailure;
}

impl ApiError for GraphError {
    fn failure(&self) -> ApiFailure {
        ApiFailure::from_graph(self)
    }
}

impl ApiError for OktaError {
    fn failure(&self) -> ApiFailure {
        ApiFailure::from_okta(self)
    }
}

/// Journals writes in the store around the calls that make them.
#[derive(Debug, Clone)]
pub struct Journal {
    store: Store,
}

impl Journal {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Journals the intent, makes the call, journals the outcome. `call` is only invoked once
    /// the intent is durable.
    #[allow(clippy::too_many_arguments)]
    pub async fn write<T, E, F, Fut>(
        &self,
        run: RunId,
        step: &str,
        api: &str,
        object: &str,
        before: &Value,
        intended: &Value,
        call: F,
    ) -> Result<Reply<T>, ApiFailure>
    where
        E: ApiError,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Reply<T>, E>>,
    {
        let entry = self
            .store
            .journal_intent(&run.to_string(), step, api, object, before, intended)
            .map_err(|e| {
                ApiFailure::internal(format!("journal write failed, call not made: {e:#}"))
            })?;
        let result = call().await.map_err(|e| e.failure());
        let (ok, code, rid) = match &result {
            Ok(r) => (true, None, r.request_id.clone()),
            Err(f) => (false, f.code.clone(), f.request_id.clone()),
        };
        if let Err(e) = self
            .store
            .journal_outcome(entry, ok, code.as_deref(), rid.as_deref())
        {
            // The write happened (or not) regardless; an unknown outcome in the journal is
            // settled by re-sending on recovery, which is safe because every write is idempotent.
            tracing::error!(error = %format!("{e:#}"), entry, "journal outcome not recorded");
        }
        result
    }
}
