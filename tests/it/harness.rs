//! Shared helpers: start the sandbox, build clients.

#![allow(dead_code)]

use o365_fixbot::directory::graph::GraphClient;
use o365_fixbot::directory::okta::OktaClient;
use o365_fixbot::directory::HttpSettings;
use o365_fixbot::sandbox::{Sandbox, SandboxOptions};
use std::time::Duration;

/// The scenario tenant with a few ordinary users: enough for pagination, quick to start.
pub async fn sandbox() -> Sandbox {
    sandbox_with(SandboxOptions {
        ordinary_users: 20,
        ..SandboxOptions::default()
    })
    .await
}

pub async fn sandbox_with(opts: SandboxOptions) -> Sandbox {
    Sandbox::start(opts).await.expect("the sandbox starts")
}

/// Short waits so retry tests stay quick; still long enough for the sandbox to answer.
pub fn fast_http() -> HttpSettings {
    HttpSettings {
        request_timeout: Duration::from_secs(2),
        call_deadline: Duration::from_secs(20),
        max_attempts: 6,
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    }
}

pub fn graph(sb: &Sandbox) -> GraphClient {
    GraphClient::new(sb.graph_config(fast_http())).expect("graph client")
}

pub fn okta(sb: &Sandbox) -> OktaClient {
    OktaClient::new(sb.okta_config(fast_http())).expect("okta client")
}

pub fn graph_with(sb: &Sandbox, http: HttpSettings) -> GraphClient {
    GraphClient::new(sb.graph_config(http)).expect("graph client")
}

pub fn okta_with(sb: &Sandbox, http: HttpSettings) -> OktaClient {
    OktaClient::new(sb.okta_config(http)).expect("okta client")
}

/// Calls the sandbox served for one operation (`graph.token`, `okta.unassign`, …).
pub fn calls_of(sb: &Sandbox, op: &str) -> usize {
    sb.calls().iter().filter(|c| c.op == op).count()
}

/// The operating-system user the console acts for (as `id -un` names it), for configurations
/// that must list it in `[console.people]`.
pub fn os_user() -> String {
    std::process::Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("USER").ok())
        .expect("an operating-system user name")
}
