//! `check-config`'s own checks: what the configuration tells offline, and the read-only Graph and
//! Okta calls that show, per check, ok or the exact missing piece. Discord checks itself in
//! `chat::discord::check`; the command line picks which checkers run.

use super::check_report::Check;
use crate::config::{Config, GRAPH_SECRET_ENV, OKTA_TOKEN_ENV};
use crate::directory::graph::{GraphClient, GraphError};
use crate::directory::okta::{OktaClient, OktaError};

/// Graph application permissions the repair needs.
pub const GRAPH_PERMISSIONS: &[&str] = &[
    "User.ReadWrite.All",
    "Domain.Read.All",
    "Organization.Read.All",
];

/// What can be told without calling anything.
pub fn offline(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let secret = |name: &str, env: &str| match crate::secret::Secret::from_env(env) {
        Ok(Some(_)) => Check::ok(name, format!("set ({env} or {env}_FILE)")),
        Ok(None) => Check::failed(name, format!("set {env} or {env}_FILE")),
        Err(e) => Check::failed(name, format!("{e:#}")),
    };
    out.push(secret("graph client secret", GRAPH_SECRET_ENV));
    out.push(secret("okta api token", OKTA_TOKEN_ENV));
    out.push(if config.repair.allowed_domains.is_empty() {
        Check::failed(
            "repair.allowed_domains",
            "empty: name the UPN domains the bot may repair",
        )
    } else {
        Check::ok(
            "repair.allowed_domains",
            config.repair.allowed_domains.join(", "),
        )
    });
    if !config.discord.guild_ids.is_empty() {
        out.push(match config.discord.validate_for_serve() {
            Ok(()) => Check::ok("discord settings", "complete"),
            Err(e) => Check::failed("discord settings", format!("{e:#}")),
        });
    }
    out.push(shutdown_grace(config.ops.shutdown_grace));
    out
}

/// The grace must fit inside the orchestrator's stop timeout, which this process cannot see:
/// say what it must be, and warn where the usual 30 s would cut runs short.
fn shutdown_grace(grace: std::time::Duration) -> Check {
    let secs = grace.as_secs_f64();
    let need = (secs + 5.0).max(30.0).ceil();
    if grace.is_zero() {
        Check::warn(
            "ops.shutdown_grace",
            "0: a SIGTERM does not wait for executing runs; recovery settles them on the next start",
        )
    } else if need > 30.0 {
        Check::warn(
            "ops.shutdown_grace",
            format!("{secs} s: above the usual 30 s stop timeout; give the container at least {need} s (docker stop -t {need}, terminationGracePeriodSeconds: {need})"),
        )
    } else {
        Check::ok(
            "ops.shutdown_grace",
            format!("{secs} s; give the container a stop timeout of at least 30 s (docker stop -t 30, terminationGracePeriodSeconds: 30)"),
        )
    }
}

/// Graph: the credentials, each permission, the organization and each allowed domain.
pub async fn graph(config: &Config) -> Vec<Check> {
    let graph = match config.graph_client_config().and_then(GraphClient::new) {
        Ok(g) => g,
        Err(e) => return vec![Check::failed("graph client", format!("{e:#}"))],
    };
    check_graph(&graph, &config.repair.allowed_domains).await
}

pub async fn check_graph(graph: &GraphClient, domains: &[String]) -> Vec<Check> {
    let mut out = Vec::new();
    match graph.granted_roles().await {
        Err(GraphError::Auth {
            error, description, ..
        }) => {
            let code = description.split(':').next().unwrap_or_default();
            out.push(Check::failed(
                "graph credentials",
                format!("the token endpoint refused the app ({error}, {code}): check graph.tenant_id, graph.client_id and {GRAPH_SECRET_ENV}"),
            ));
            return out;
        }
        Err(e) => {
            out.push(Check::failed("graph credentials", format!("no token: {e}")));
            return out;
        }
        Ok(roles) => {
            out.push(Check::ok("graph credentials", "token issued"));
            match roles {
                Some(roles) => {
                    for p in GRAPH_PERMISSIONS {
                        out.push(if roles.iter().any(|r| r == p) {
                            Check::ok(format!("graph permission {p}"), "granted")
                        } else {
                            Check::failed(
                                format!("graph permission {p}"),
                                format!("missing: add the application permission {p} to the app registration and grant admin consent"),
                            )
                        });
                    }
                }
                None => out.push(Check::failed(
                    "graph permissions",
                    "the token carries no readable roles claim; check the app's application permissions by hand",
                )),
            }
        }
    }
    out.push(match graph.initial_domain().await {
        Ok(r) => Check::ok("graph organization", format!("initial domain {}", r.value)),
        Err(e) => Check::failed(
            "graph organization",
            describe_graph(&e, "Organization.Read.All"),
        ),
    });
    for d in domains {
        out.push(match graph.domain(d).await {
            Ok(r) => match r.value {
                Some(dom) => Check::ok(
                    format!("graph domain {d}"),
                    format!("{}, verified: {}", dom.authentication_type, dom.is_verified),
                ),
                None => Check::failed(
                    format!("graph domain {d}"),
                    "not a domain of this tenant: fix repair.allowed_domains",
                ),
            },
            Err(e) => Check::failed(
                format!("graph domain {d}"),
                describe_graph(&e, "Domain.Read.All"),
            ),
        });
    }
    out
}

fn describe_graph(e: &GraphError, permission: &str) -> String {
    match e.code() {
        Some("Authorization_RequestDenied") => {
            format!("refused (Authorization_RequestDenied): the app lacks {permission}")
        }
        _ => e.to_string(),
    }
}

/// Okta: the token, the Office 365 app, provisioning, profile mappings.
pub async fn okta(config: &Config) -> Vec<Check> {
    let okta = match config.okta_client_config().and_then(OktaClient::new) {
        Ok(o) => o,
        Err(e) => return vec![Check::failed("okta client", format!("{e:#}"))],
    };
    check_okta(&okta).await
}

pub async fn check_okta(okta: &OktaClient) -> Vec<Check> {
    let mut out = Vec::new();
    let app_id = okta.app_id().to_owned();
    match okta.app().await {
        Ok(r) => {
            let name = r.value.get("name").and_then(|v| v.as_str()).unwrap_or("?");
            let label = r.value.get("label").and_then(|v| v.as_str()).unwrap_or("?");
            out.push(Check::ok("okta token", "accepted"));
            out.push(if name == "office365" {
                Check::ok("okta app", format!("{app_id} is {label}"))
            } else {
                Check::failed(
                    "okta app",
                    format!(
                        "{app_id} is `{label}` ({name}), not Microsoft Office 365: fix okta.app_id"
                    ),
                )
            });
        }
        Err(e) => {
            let what = match e.code() {
                Some("E0000011") => format!("Okta rejected the API token: check {OKTA_TOKEN_ENV}"),
                Some("E0000007") => {
                    format!("the app {app_id} was not found: fix okta.app_id (Applications → Microsoft Office 365 → the id in the URL)")
                }
                Some("E0000006") => format!(
                    "the token's admin has no rights on the app {app_id}: create the token as an admin who can manage the Microsoft Office 365 app"
                ),
                _ => e.to_string(),
            };
            out.push(Check::failed("okta app", what));
            return out;
        }
    }
    out.push(match okta.provisioning().await {
        Ok(r) if r.value.status.eq_ignore_ascii_case("ENABLED") => Check::ok(
            "okta provisioning",
            format!(
                "feature API available ({})",
                crate::pipeline::capabilities::describe(&r.value.capabilities)
            ),
        ),
        Ok(r) => Check::failed(
            "okta provisioning",
            format!("USER_PROVISIONING is {}: enable provisioning for the app", r.value.status),
        ),
        Err(e) => Check::failed(
            "okta provisioning",
            format!("the provisioning feature API is unavailable for the app ({}): enable provisioning (API integration) for it", describe_okta(&e)),
        ),
    });
    out.push(match okta.mappings_into_app().await {
        Ok(r) => Check::ok(
            "okta profile mappings",
            format!("{} mapping(s) into the app readable", r.value.len()),
        ),
        Err(e) => Check::failed(
            "okta profile mappings",
            format!(
                "cannot read profile mappings ({}): the token's admin needs read access to them",
                describe_okta(&e)
            ),
        ),
    });
    out
}

fn describe_okta(e: &OktaError) -> String {
    match (e.status(), e.code()) {
        (Some(s), Some(c)) => format!("{s} {c}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod grace_tests {
    use super::*;
    use crate::ops::check_report::Outcome;
    use std::time::Duration;

    #[test]
    fn a_grace_that_does_not_fit_a_30_s_stop_timeout_is_a_warning_naming_the_timeout_needed() {
        assert_eq!(shutdown_grace(Duration::from_secs(25)).outcome, Outcome::Ok);
        let long = shutdown_grace(Duration::from_secs(60));
        assert_eq!(long.outcome, Outcome::Warn);
        assert!(long.detail.contains("docker stop -t 65"), "{}", long.detail);
        assert_eq!(shutdown_grace(Duration::ZERO).outcome, Outcome::Warn);
    }
}
