//! `check-config`'s own checks: what the configuration tells offline, and the read-only Graph and
//! Okta calls that show, per check, ok or the exact missing piece, up to a whole plan for one
//! user. Discord checks itself in `chat::discord::check`; the command line picks which run.

use super::check_report::Check;
use crate::config::{
    Config, GraphCredentialKind, OktaCredentialKind, GRAPH_SECRET_ENV, OKTA_TOKEN_ENV,
};
use crate::directory::assertion::Certificate;
use crate::directory::graph::{GraphClient, GraphCredential, GraphError};
use crate::directory::okta::{OktaClient, OktaCredential, OktaError, SERVICE_APP_SCOPES};
use std::time::{Duration, SystemTime};

/// What the embedded default is, and how to leave it.
pub const SANDBOX_DEFAULT: &str = "the embedded default: the sandbox tenant on 127.0.0.1 that `demo` and `serve --sandbox` use, which makes its own credentials. To point the bot at a real tenant, copy config/example.toml, fill it in and pass --config (or FIXBOT_CONFIG); docs/going-live.md walks through it";

/// A certificate this close to expiry is worth a warning: renewing needs an upload to Entra.
const CERT_WARN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Graph application permissions the repair needs.
pub const GRAPH_PERMISSIONS: &[&str] = &[
    "User.ReadWrite.All",
    "Domain.Read.All",
    "Organization.Read.All",
];

/// What can be told without calling anything.
pub fn offline(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    if config.is_sandbox_default() {
        out.push(Check::ok("tenant", SANDBOX_DEFAULT));
        let made = "made by the sandbox each time it starts: none to set";
        out.push(Check::ok("graph credential", made));
        out.push(Check::ok("okta credential", made));
    } else {
        out.push(graph_credential(config, SystemTime::now()));
        out.push(okta_credential(config));
    }
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

fn secret(name: &str, env: &str) -> Check {
    match crate::secret::Secret::from_env(env) {
        Ok(Some(_)) => Check::ok(name, format!("set ({env} or {env}_FILE)")),
        Ok(None) => Check::failed(name, format!("set {env} or {env}_FILE")),
        Err(e) => Check::failed(name, format!("{e:#}")),
    }
}

/// The Graph credential the configuration names, read and checked without sending it.
fn graph_credential(config: &Config, now: SystemTime) -> Check {
    match config.graph.credential {
        GraphCredentialKind::ClientSecret => secret("graph client secret", GRAPH_SECRET_ENV),
        GraphCredentialKind::Certificate => match config.graph_credential() {
            Ok(GraphCredential::Certificate(c)) => certificate_validity(&c.certificate, now),
            Ok(GraphCredential::ClientSecret(_)) => Check::failed(
                "graph certificate",
                "graph.credential is not \"certificate\"",
            ),
            Err(e) => Check::failed("graph certificate", format!("{e:#}")),
        },
    }
}

/// An expired certificate fails; one expiring within 30 days warns, naming the date.
fn certificate_validity(cert: &Certificate, now: SystemTime) -> Check {
    let name = "graph certificate";
    let what = format!(
        "`{}` (x5t#S256 {}), key matches",
        cert.subject,
        cert.thumbprint_s256()
    );
    match cert.remaining(now) {
        None => Check::failed(
            name,
            format!("{what}, but it expired on {}: make a new certificate, upload it to the app registration (Certificates & secrets) and point graph.certificate_file and graph.private_key_file at it", cert.not_after_text),
        ),
        Some(left) if left < CERT_WARN => Check::warn(
            name,
            format!("{what}; expires on {} ({} days): upload its successor to the app registration before then", cert.not_after_text, left.as_secs() / 86_400),
        ),
        Some(left) => Check::ok(
            name,
            format!("{what}; valid until {} ({} days)", cert.not_after_text, left.as_secs() / 86_400),
        ),
    }
}

/// The Okta credential the configuration names, read without sending it.
fn okta_credential(config: &Config) -> Check {
    match config.okta.credential {
        OktaCredentialKind::ApiToken => secret("okta api token", OKTA_TOKEN_ENV),
        OktaCredentialKind::ServiceApp => match config.okta_credential() {
            Ok(c) => Check::ok(
                "okta service app",
                format!(
                    "{}; key {}",
                    c.describe(),
                    config
                        .okta
                        .private_key_file
                        .as_deref()
                        .unwrap_or(std::path::Path::new("?"))
                        .display()
                ),
            ),
            Err(e) => Check::failed("okta service app", format!("{e:#}")),
        },
    }
}

/// What `--online` prints: the checks, and the dry-run plan when `--user` asked for one.
pub struct OnlineReport {
    pub checks: Vec<Check>,
    pub plan: Option<String>,
}

/// The online checks against the configured tenant; for the embedded default, against a
/// sandbox started for the purpose (it makes its own credentials). With `user`, the whole plan
/// for that user is read, and nothing is written.
pub async fn online(config: &Config, user: Option<&str>) -> OnlineReport {
    let mut checks = Vec::new();
    let mut _sandbox = None;
    let (graph, okta) = if config.is_sandbox_default() {
        let opts =
            crate::demo::sandbox_options(config, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        match crate::sandbox::Sandbox::start(opts).await {
            Ok(sb) => {
                let g = GraphClient::new(sb.graph_config(config.http.clone()));
                let o = OktaClient::new(sb.okta_config(config.http.clone()));
                checks.push(Check::ok(
                    "sandbox",
                    format!(
                        "started on {} for these checks",
                        sb.urls.graph.origin().ascii_serialization()
                    ),
                ));
                _sandbox = Some(sb);
                (g, o)
            }
            Err(e) => {
                checks.push(Check::failed("sandbox", format!("could not start: {e:#}")));
                return OnlineReport { checks, plan: None };
            }
        }
    } else {
        (
            config.graph_client_config().and_then(GraphClient::new),
            config.okta_client_config().and_then(OktaClient::new),
        )
    };
    match &graph {
        Ok(g) => checks.extend(check_graph(g, &config.repair.allowed_domains).await),
        Err(e) => checks.push(Check::failed("graph client", format!("{e:#}"))),
    }
    match &okta {
        Ok(o) => {
            if config.watch.enabled {
                // Asked before the first token, so the checks below run with the scopes serve
                // will ask for.
                o.also_read_logs().await;
            }
            checks.extend(check_okta(o).await);
            if config.watch.enabled {
                checks.push(check_system_log(o).await);
            }
        }
        Err(e) => checks.push(Check::failed("okta client", format!("{e:#}"))),
    }
    let mut plan = None;
    if let Some(upn) = user {
        let (Ok(g), Ok(o)) = (graph, okta) else {
            checks.push(Check::failed(
                format!("plan for {upn}"),
                "not tried: it needs both the Graph and the Okta client",
            ));
            return OnlineReport { checks, plan };
        };
        let (check, text) = plan_for_user(config, g, o, upn).await;
        checks.push(check);
        plan = text;
    }
    OnlineReport { checks, plan }
}

/// The engine's own plan for `upn`, read-only: the reads a repair makes, in the order it makes
/// them, with nothing written to either system and no run stored. The engine's store lives in
/// a throwaway directory, so the data directory (and a running bot holding it) is untouched.
pub async fn plan_for_user(
    config: &Config,
    graph: GraphClient,
    okta: OktaClient,
    upn: &str,
) -> (Check, Option<String>) {
    use crate::pipeline::{PlanError, RepairRequest};
    let name = format!("plan for {upn}");
    let req = match RepairRequest::parse(
        crate::domain::Actor::new("check-config", "check-config"),
        upn,
        None,
        Some("check-config --online --user (read-only)"),
    ) {
        Ok(r) => r,
        Err(e) => return (Check::failed(name, format!("{e}")), None),
    };
    let dir = std::env::temp_dir().join(format!(
        "o365-fixbot-check-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let store = match crate::store::Store::open(&dir) {
        Ok(s) => s,
        Err(e) => {
            return (
                Check::failed(name, format!("no scratch store: {e:#}")),
                None,
            )
        }
    };
    let engine = crate::pipeline::Engine::new(graph, okta, store, config.repair.clone());
    let result = engine.plan_read_only(&req).await;
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(plan) => {
            let text = crate::chat::render::plan_message(&plan, config.approval.ttl);
            // The chat message's first line asks for approval; this plan is never stored.
            // …and its expiry line counts down an approval that cannot happen.
            let body: Vec<&str> = text
                .lines()
                .skip(1)
                .filter(|l| !l.trim_start().starts_with("Expires in"))
                .collect();
            let body = body.join("\n");
            (
                Check::ok(
                    name,
                    format!("every read the repair needs succeeded ({} mode); nothing was written and no run was stored", match plan.mode {
                        crate::pipeline::RepairMode::Full => "full",
                        crate::pipeline::RepairMode::EntraOnly => "Entra-only",
                    }),
                ),
                Some(format!(
                    "Dry-run plan for {} (read-only; not stored, cannot be approved):\n{body}",
                    plan.upn
                )),
            )
        }
        Err(PlanError::Refused(r)) => (
            Check::warn(
                name,
                format!("the plan refuses this user: {r}. The reads before the refusal succeeded; try a test user the bot may repair to prove them all"),
            ),
            None,
        ),
        Err(e @ PlanError::Unavailable { .. }) => (Check::failed(name, e.to_string()), None),
        Err(e) => (Check::failed(name, e.to_string()), None),
    }
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

/// Graph: the credential, each permission, the organization and each allowed domain.
pub async fn check_graph(graph: &GraphClient, domains: &[String]) -> Vec<Check> {
    let mut out = Vec::new();
    match graph.granted_roles().await {
        Err(GraphError::Auth {
            error, description, ..
        }) => {
            let code = description.split(':').next().unwrap_or_default();
            let what = match graph.credential() {
                GraphCredential::ClientSecret(_) => format!("graph.tenant_id, graph.client_id and {GRAPH_SECRET_ENV}"),
                GraphCredential::Certificate(_) => "graph.tenant_id, graph.client_id, and that the certificate in graph.certificate_file is uploaded to that app registration (Certificates & secrets)".to_owned(),
            };
            out.push(Check::failed(
                "graph credentials",
                format!(
                    "the token endpoint refused the app's {} ({error}, {code}): check {what}",
                    graph.credential().describe()
                ),
            ));
            return out;
        }
        Err(e) => {
            out.push(Check::failed("graph credentials", format!("no token: {e}")));
            return out;
        }
        Ok(roles) => {
            out.push(Check::ok(
                "graph credentials",
                format!(
                    "token issued for the app's {}",
                    graph.credential().describe()
                ),
            ));
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

/// The watch: one page of the System Log, read-only, as the watch will read it.
pub async fn check_system_log(okta: &OktaClient) -> Check {
    use crate::directory::okta::{LogCursor, LogQuery, PROVISIONING_ERROR_EVENT_TYPES};
    let since = crate::utc::iso(std::time::SystemTime::now());
    let query =
        LogQuery::provisioning_failures(okta.app_id(), PROVISIONING_ERROR_EVENT_TYPES, &since, 1);
    match okta.logs_page(&LogCursor::Start(query)).await {
        Ok(_) => Check::ok("okta system log", "readable (the watch polls it)"),
        Err(e) => Check::failed(
            "okta system log",
            match okta.credential() {
                OktaCredential::ServiceApp(a) => format!(
                    "the watch cannot read it ({e}): grant {} to the service app {} (Okta API Scopes tab)",
                    crate::directory::okta::LOGS_SCOPE,
                    a.client_id
                ),
                OktaCredential::ApiToken(_) => format!(
                    "the watch cannot read it ({e}): the API token's admin needs a role that can read the System Log"
                ),
            },
        ),
    }
}

/// Okta: the credential (and a service app's scopes), the Office 365 app, provisioning, profile
/// mappings.
pub async fn check_okta(okta: &OktaClient) -> Vec<Check> {
    let mut out = Vec::new();
    let app_id = okta.app_id().to_owned();
    match okta.app().await {
        Ok(r) => {
            let name = r.value.get("name").and_then(|v| v.as_str()).unwrap_or("?");
            let label = r.value.get("label").and_then(|v| v.as_str()).unwrap_or("?");
            out.push(okta_credential_accepted(okta).await);
            if matches!(okta.credential(), OktaCredential::ServiceApp(_)) {
                let granted = okta.granted_scopes().await.unwrap_or_default();
                for scope in SERVICE_APP_SCOPES {
                    out.push(if granted.iter().any(|g| g == scope) {
                        Check::ok(format!("okta scope {scope}"), "granted")
                    } else {
                        Check::failed(
                            format!("okta scope {scope}"),
                            format!("not in the token: grant {scope} on the service app's Okta API Scopes tab"),
                        )
                    });
                }
            }
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
            let service_app = match okta.credential() {
                OktaCredential::ServiceApp(a) => Some(a.client_id.clone()),
                OktaCredential::ApiToken(_) => None,
            };
            let what = match (e.code(), &service_app) {
                (Some("invalid_client"), Some(id)) => format!(
                    "Okta's token endpoint refused the service app {id} (invalid_client: {}): check okta.client_id, that the public key of okta.private_key_file is in the app's public keys (okta.key_id names it when there are several), and that the app uses \"Public key / Private key\" client authentication", summary_of(&e)
                ),
                (Some("invalid_scope"), Some(id)) => format!(
                    "Okta refused the scopes the bot asks for ({}): grant {} to the service app {id} (Okta API Scopes tab)", summary_of(&e), SERVICE_APP_SCOPES.join(", ")
                ),
                (Some("invalid_dpop_proof" | "use_dpop_nonce"), Some(_)) => summary_of(&e),
                (Some("E0000011"), Some(id)) => format!("Okta rejected the service app {id}'s access token (E0000011)"),
                (Some("E0000006"), Some(id)) => format!(
                    "the service app {id} may not read the app {app_id}: it needs the okta.apps.read scope and an admin role covering the Microsoft Office 365 app (Admin roles tab: Application Administrator for that app, or a custom role)"
                ),
                (Some("E0000011"), None) => format!("Okta rejected the API token: check {OKTA_TOKEN_ENV}"),
                (Some("E0000007"), _) => {
                    format!("the app {app_id} was not found: fix okta.app_id (Applications → Microsoft Office 365 → the id in the URL)")
                }
                (Some("E0000006"), None) => format!(
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

fn summary_of(e: &OktaError) -> String {
    match e {
        OktaError::Api { summary, .. } => summary.clone(),
        other => other.to_string(),
    }
}

/// Which credential Okta accepted, and what it lets the bot do.
async fn okta_credential_accepted(okta: &OktaClient) -> Check {
    match okta.credential() {
        OktaCredential::ApiToken(_) => Check::ok(
            "okta credential",
            "API token (SSWS) accepted; it acts with the rights of the admin who created it, which must include managing the Microsoft Office 365 app (assign, unassign, provisioning)",
        ),
        OktaCredential::ServiceApp(a) => Check::ok(
            "okta credential",
            format!(
                "service app {} accepted (private_key_jwt; a Bearer token, renewed before it expires); it can do what its scopes and admin roles both allow",
                a.client_id
            ),
        ),
    }
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
