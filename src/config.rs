//! Configuration: a TOML file for everything but secrets, which come only from the environment
//! or `*_FILE` paths.

use crate::directory::graph::GraphConfig;
use crate::directory::okta::OktaConfig;
use crate::directory::{millis, HttpSettings};
use crate::sandbox::MappingMode;
use crate::secret::Secret;
use anyhow::Context;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// The sandbox configuration compiled into the binary, so `demo` needs no files at all.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

/// Environment variables holding secrets (each also accepts `NAME_FILE`).
pub const GRAPH_SECRET_ENV: &str = "FIXBOT_GRAPH_CLIENT_SECRET";
pub const OKTA_TOKEN_ENV: &str = "FIXBOT_OKTA_API_TOKEN";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub graph: GraphSettings,
    pub okta: OktaSettings,
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub repair: RepairPolicy,
    #[serde(default)]
    pub approval: ApprovalSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub sandbox: SandboxSettings,
    #[serde(default)]
    pub console: ConsoleSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSettings {
    /// `https://login.microsoftonline.com`, or a national cloud's login host.
    pub authority: Url,
    /// `https://graph.microsoft.com/v1.0`, or a national cloud's Graph host.
    pub graph_base: Url,
    pub tenant_id: String,
    pub client_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaSettings {
    pub org_url: Url,
    /// The Microsoft Office 365 app instance id (`0oa…`).
    pub app_id: String,
}

/// What the repair may touch and how patiently it verifies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepairPolicy {
    /// UPN domains the bot may repair; anything else is refused at plan time.
    pub allowed_domains: Vec<String>,
    /// Users the bot must never touch (break-glass accounts, executives …).
    pub protected_users: Vec<String>,
    /// Whether targets holding an Entra directory role may be repaired (the app then needs a
    /// privileged role such as Privileged Authentication Administrator).
    pub allow_admin_targets: bool,
    /// Reads per verify step; Graph reads lag behind writes.
    pub verify_attempts: u32,
    #[serde(with = "millis")]
    pub verify_interval: Duration,
    /// A run joins an existing provisioning pause only while it is younger than this.
    #[serde(with = "millis")]
    pub pause_join_window: Duration,
    /// How long provisioning may stay paused, with no holder, for runs already under way.
    #[serde(with = "millis")]
    pub pause_linger: Duration,
    /// Attempts for compensations and roll-forwards, well past the normal retry budget.
    pub compensation_attempts: u32,
    #[serde(with = "millis")]
    pub compensation_backoff: Duration,
}

impl Default for RepairPolicy {
    fn default() -> Self {
        Self {
            allowed_domains: Vec::new(),
            protected_users: Vec::new(),
            allow_admin_targets: false,
            verify_attempts: 5,
            verify_interval: Duration::from_millis(500),
            pause_join_window: Duration::from_secs(60),
            pause_linger: Duration::from_secs(10),
            compensation_attempts: 8,
            compensation_backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSettings {
    pub requester_roles: Vec<String>,
    pub approver_roles: Vec<String>,
    pub approvals_required: u32,
    #[serde(with = "millis")]
    pub ttl: Duration,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            requester_roles: vec!["identity-admin".into()],
            approver_roles: vec!["identity-approver".into()],
            approvals_required: 1,
            ttl: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub data_dir: PathBuf,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
        }
    }
}

/// The embedded tenant used by `demo` and `sandbox`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    #[serde(with = "millis")]
    pub latency: Duration,
    #[serde(with = "millis")]
    pub graph_read_lag: Duration,
    pub ordinary_users: usize,
    pub okta_rate_limit: u32,
    pub mapping: MappingMode,
    /// Address `o365-fixbot sandbox` listens on.
    pub listen: std::net::SocketAddr,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            graph_read_lag: Duration::from_millis(300),
            ordinary_users: 300,
            okta_rate_limit: 600,
            mapping: MappingMode::Unmapped,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8089)),
        }
    }
}

/// People the console front end knows: name → roles.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    pub people: BTreeMap<String, Vec<String>>,
}

impl Config {
    pub fn embedded_default() -> anyhow::Result<Self> {
        Self::parse(
            EMBEDDED_DEFAULT,
            Path::new("<embedded config/default.toml>"),
        )
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        let cfg: Config = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}: {}", origin.display(), e.to_string().trim()))?;
        cfg.validate()
            .with_context(|| format!("{}: invalid configuration", origin.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.approval.approvals_required >= 1,
            "approval.approvals_required must be at least 1"
        );
        anyhow::ensure!(
            self.repair.verify_attempts >= 1,
            "repair.verify_attempts must be at least 1"
        );
        for d in &self.repair.allowed_domains {
            anyhow::ensure!(
                d.contains('.') && !d.contains('@'),
                "repair.allowed_domains: `{d}` is not a domain name"
            );
        }
        Ok(())
    }

    /// Graph client settings with the secret read from the environment.
    pub fn graph_client_config(&self) -> anyhow::Result<GraphConfig> {
        let secret = Secret::from_env(GRAPH_SECRET_ENV)?.with_context(|| {
            format!("set {GRAPH_SECRET_ENV} (or {GRAPH_SECRET_ENV}_FILE) to the Entra app's client secret")
        })?;
        Ok(self.graph_client_config_with(secret))
    }

    pub fn graph_client_config_with(&self, client_secret: Secret) -> GraphConfig {
        let host = self
            .graph
            .graph_base
            .host_str()
            .unwrap_or("graph.microsoft.com");
        GraphConfig {
            authority: self.graph.authority.clone(),
            graph_base: self.graph.graph_base.clone(),
            tenant_id: self.graph.tenant_id.clone(),
            client_id: self.graph.client_id.clone(),
            client_secret,
            scope: format!("https://{host}/.default"),
            http: self.http.clone(),
        }
    }

    pub fn okta_client_config(&self) -> anyhow::Result<OktaConfig> {
        let token = Secret::from_env(OKTA_TOKEN_ENV)?.with_context(|| {
            format!("set {OKTA_TOKEN_ENV} (or {OKTA_TOKEN_ENV}_FILE) to an Okta API token")
        })?;
        Ok(OktaConfig {
            org_url: self.okta.org_url.clone(),
            api_token: token,
            app_id: self.okta.app_id.clone(),
            http: self.http.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::embedded_default().unwrap();
        assert!(c
            .repair
            .allowed_domains
            .contains(&"contoso.com".to_string()));
        assert!(!c.console.people.is_empty());
    }

    #[test]
    fn example_parses() {
        Config::parse(
            include_str!("../config/example.toml"),
            Path::new("config/example.toml"),
        )
        .unwrap();
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file() {
        let text = EMBEDDED_DEFAULT.replace("[repair]", "[repair]\nclient_secret = \"x\"");
        let err = Config::parse(&text, Path::new("my.toml")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("my.toml") && msg.contains("client_secret"),
            "{msg}"
        );
    }
}
