//! What a handler knows about the request it serves (`Ctx`) and what it answers (`Reply`).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::Value;
use std::time::{Instant, SystemTime};

/// Graph's JSON content type.
pub(crate) const GRAPH_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
pub(crate) const PLAIN_JSON: &str = "application/json; charset=utf-8";

pub(crate) struct Ctx {
    pub method: Method,
    /// Path relative to the service prefix (`/users/x`, `/api/v1/users/x`).
    pub rel_path: String,
    /// The raw query string, if any.
    pub raw_query: Option<String>,
    /// Query pairs, decoded as `application/x-www-form-urlencoded` (a raw `+` is a space).
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request_id: String,
    pub now: Instant,
    pub wall: SystemTime,
}

impl Ctx {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn into_response(self, content_type: &str) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = Response::builder().status(status);
        let headers = builder.headers_mut().expect("fresh builder");
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.append(HeaderName::from_static(name), v);
            }
        }
        let body = match &self.body {
            Some(v) => {
                headers.insert(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_str(content_type).expect("static content type"),
                );
                Body::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Body::empty(),
        };
        builder.body(body).expect("valid response")
    }
}
