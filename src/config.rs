//! Configuration: a TOML file for everything but secrets, which come only from the environment
//! or `*_FILE` paths.

use crate::directory::assertion::{AssertionSigner, Certificate, PrivateKey};
use crate::directory::graph::{CertificateCredential, GraphConfig, GraphCredential};
use crate::directory::okta::{OktaConfig, OktaCredential, ServiceApp};
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
pub const DISCORD_TOKEN_ENV: &str = "FIXBOT_DISCORD_TOKEN";

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
    #[serde(default)]
    pub ops: OpsSettings,
    #[serde(default)]
    pub discord: DiscordSettings,
    #[serde(default)]
    pub watch: WatchSettings,
    /// Where this configuration came from; not a key of the file.
    #[serde(skip)]
    pub origin: ConfigOrigin,
}

/// Whether the configuration is the embedded sandbox default or the admin's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfigOrigin {
    /// `config/default.toml`, compiled in: the sandbox tenant, which makes its own credentials.
    Embedded,
    /// A file given with `--config` / `FIXBOT_CONFIG` (or a text parsed directly).
    #[default]
    File,
}

/// How the bot authenticates to Microsoft Graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphCredentialKind {
    /// `FIXBOT_GRAPH_CLIENT_SECRET` (or `_FILE`).
    #[default]
    ClientSecret,
    /// `graph.certificate_file` + `graph.private_key_file`: a signed client assertion.
    Certificate,
}

/// How the bot authenticates to Okta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OktaCredentialKind {
    /// `FIXBOT_OKTA_API_TOKEN` (or `_FILE`): `Authorization: SSWS …`.
    #[default]
    ApiToken,
    /// `okta.client_id` + `okta.private_key_file`: an OAuth 2.0 service app.
    ServiceApp,
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
    /// Client-side pace of Graph writes, under Graph's per-app write quota.
    #[serde(default)]
    pub write_budget: crate::directory::graph::WriteBudget,
    /// Token scope; `https://{graph_base host}/.default` when absent. Set it when Graph is
    /// reached through a private endpoint or a proxy whose host is not the resource's.
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub credential: GraphCredentialKind,
    /// PEM certificate registered with the app (`credential = "certificate"`).
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// PEM private key of that certificate; the key itself never goes in this file.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaSettings {
    pub org_url: Url,
    /// The Microsoft Office 365 app instance id (`0oa…`).
    pub app_id: String,
    #[serde(default)]
    pub credential: OktaCredentialKind,
    /// The OAuth 2.0 service app's client id (`credential = "service_app"`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// PEM private key whose public key is registered with the service app.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The key's `kid` in the service app's JWKS, when it holds more than one key.
    #[serde(default)]
    pub key_id: Option<String>,
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
    /// An approved run that had not started when the process stopped runs after a restart only
    /// while it is younger than this (counted from its plan); older ones expire unexecuted.
    #[serde(with = "millis")]
    pub approved_run_max_age: Duration,
    /// After provisioning is restored, how long the app user may be read (with backoff) for
    /// Okta to show the user linked to Office 365 again; 0 skips the check.
    #[serde(with = "millis")]
    pub link_check_window: Duration,
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
            approved_run_max_age: Duration::from_secs(30 * 60),
            link_check_window: Duration::from_secs(20),
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

/// Health, readiness and metrics endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsSettings {
    /// Loopback by default; `0.0.0.0:9464` inside a container so orchestrator probes reach it.
    pub listen: std::net::SocketAddr,
    /// How long a SIGTERM/SIGINT waits for executing runs to end and for their last posts,
    /// in ms. Kept under the orchestrator's stop timeout (Docker's `-t`, Kubernetes'
    /// `terminationGracePeriodSeconds`), which must be ≥ 30 s, or it is a SIGKILL mid-step.
    #[serde(with = "millis")]
    pub shutdown_grace: Duration,
}

impl Default for OpsSettings {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// The watch: Okta System Log provisioning failures of the Office 365 app become diagnosis
/// cards in an ops channel. Off unless `enabled`. Durations are milliseconds, like every other
/// duration in this file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchSettings {
    /// Whether `serve` runs the watch (`o365-fixbot watch` runs it whatever this says).
    pub enabled: bool,
    /// The Discord channel the cards go to; required when `serve` runs the watch.
    #[serde(deserialize_with = "optional_snowflake")]
    pub channel_id: Option<u64>,
    /// How long to wait after a short page before following its `next` link; a full page is
    /// followed at once. At least [`WatchSettings::MIN_POLL_INTERVAL`]: the System Log bucket
    /// is as small as 20 requests a minute on some Okta editions.
    #[serde(with = "millis")]
    pub poll_interval: Duration,
    /// The event types read (Okta's provisioning error events); the System Log filter also asks
    /// for `outcome.result eq "FAILURE"` and the Office 365 app as a target.
    pub event_types: Vec<String>,
    /// Where the very first poll starts (`since` = now − lookback). Later polls resume from the
    /// cursor kept in the store, so this matters only once per data directory.
    #[serde(with = "millis")]
    pub lookback: Duration,
    /// Events per page (`limit`, 1–1000).
    pub page_limit: u32,
}

impl WatchSettings {
    pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(5);

    pub fn event_types(&self) -> Vec<&str> {
        self.event_types.iter().map(String::as_str).collect()
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.poll_interval >= Self::MIN_POLL_INTERVAL,
            "watch.poll_interval is {} ms: at least {} ms, so the watch does not spend the System Log's small rate-limit bucket",
            self.poll_interval.as_millis(),
            Self::MIN_POLL_INTERVAL.as_millis()
        );
        anyhow::ensure!(
            !self.event_types.is_empty(),
            "watch.event_types is empty: name at least one System Log event type, e.g. \"application.provision.user.push\""
        );
        for t in &self.event_types {
            anyhow::ensure!(
                !t.is_empty()
                    && t.contains('.')
                    && t.chars().all(|c| c.is_ascii_alphanumeric() || "._".contains(c)),
                "watch.event_types: `{t}` is not a System Log event type (dotted words such as application.provision.user.push)"
            );
        }
        anyhow::ensure!(
            (1..=crate::directory::okta::MAX_LOG_LIMIT).contains(&self.page_limit),
            "watch.page_limit must be between 1 and {}",
            crate::directory::okta::MAX_LOG_LIMIT
        );
        Ok(())
    }

    /// What `serve` needs when the watch is on: somewhere to post.
    pub fn validate_for_serve(&self) -> anyhow::Result<()> {
        if self.enabled {
            anyhow::ensure!(
                self.channel_id.is_some(),
                "watch.enabled is true but watch.channel_id is not set: name the Discord channel the watch posts its cards in"
            );
        }
        Ok(())
    }
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            channel_id: None,
            poll_interval: Duration::from_secs(60),
            event_types: crate::directory::okta::PROVISIONING_ERROR_EVENT_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            lookback: Duration::from_secs(24 * 3600),
            page_limit: 100,
        }
    }
}

/// Prefix of environment variables that override config keys: `FIXBOT_<SECTION>__<KEY>`, e.g.
/// `FIXBOT_STORE__DATA_DIR=/data` or `FIXBOT_REPAIR__ALLOWED_DOMAINS='["example.com"]'`.
/// Values are read as TOML values, falling back to a plain string.
pub const ENV_PREFIX: &str = "FIXBOT_";

/// People the console front end knows: name → roles.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    pub people: BTreeMap<String, Vec<String>>,
}

/// The Discord front end (`o365-fixbot serve`). Ids are Discord snowflakes, written as TOML
/// integers or strings. Role ids, not role names: names can be renamed and repeated, ids cannot,
/// and ids are what Discord's events carry. `[approval]` still gives `approvals_required` and
/// `ttl`; its `requester_roles` / `approver_roles` are the console's role *names* and are not used
/// by Discord.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordSettings {
    /// Guilds whose commands are served; slash commands are registered in each on start.
    #[serde(deserialize_with = "snowflakes")]
    pub guild_ids: Vec<u64>,
    /// Channels that accept commands (plans are posted where the command was typed).
    #[serde(deserialize_with = "snowflakes")]
    pub channel_ids: Vec<u64>,
    /// Roles whose members may ask for repairs.
    #[serde(deserialize_with = "snowflakes")]
    pub requester_role_ids: Vec<u64>,
    /// Roles whose members may approve (or reject) repairs.
    #[serde(deserialize_with = "snowflakes")]
    pub approver_role_ids: Vec<u64>,
    /// Accounts that belong to one person (e.g. an admin's main and `-adm` accounts): none of
    /// them may approve a run another one requested.
    #[serde(deserialize_with = "snowflake_groups")]
    pub linked_accounts: Vec<Vec<u64>>,
    /// REST and gateway base URL instead of `https://discord.com` (an HTTP proxy such as
    /// twilight-http-proxy, or a test fake). Turns serenity's own ratelimiter off.
    pub api_base: Option<Url>,
    /// Commands one person may send per minute, and how many at once.
    pub commands_per_minute: u32,
    pub command_burst: u32,
    /// Runs open at once (awaiting approval or executing); more are refused until one ends.
    pub max_open_runs: usize,
    /// Auto-archive of the result thread, minutes: 60, 1440, 4320 or 10080.
    pub thread_auto_archive_minutes: u16,
}

impl Default for DiscordSettings {
    fn default() -> Self {
        Self {
            guild_ids: Vec::new(),
            channel_ids: Vec::new(),
            requester_role_ids: Vec::new(),
            approver_role_ids: Vec::new(),
            linked_accounts: Vec::new(),
            api_base: None,
            commands_per_minute: 6,
            command_burst: 3,
            max_open_runs: 20,
            thread_auto_archive_minutes: 1440,
        }
    }
}

impl DiscordSettings {
    /// What `serve` needs before it connects; the rest of the config may omit `[discord]`.
    pub fn validate_for_serve(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.guild_ids.is_empty(),
            "discord.guild_ids is empty: name the guild(s) the bot serves"
        );
        anyhow::ensure!(
            !self.channel_ids.is_empty(),
            "discord.channel_ids is empty: name the channel(s) that accept commands"
        );
        anyhow::ensure!(
            !self.requester_role_ids.is_empty() && !self.approver_role_ids.is_empty(),
            "discord.requester_role_ids and discord.approver_role_ids must both name at least one role id"
        );
        anyhow::ensure!(
            self.commands_per_minute >= 1 && self.command_burst >= 1,
            "discord.commands_per_minute and discord.command_burst must be at least 1"
        );
        anyhow::ensure!(
            self.max_open_runs >= 1,
            "discord.max_open_runs must be at least 1"
        );
        anyhow::ensure!(
            [60, 1440, 4320, 10080].contains(&self.thread_auto_archive_minutes),
            "discord.thread_auto_archive_minutes must be 60, 1440, 4320 or 10080"
        );
        if let Some(base) = &self.api_base {
            anyhow::ensure!(
                matches!(base.scheme(), "http" | "https") && base.path() == "/",
                "discord.api_base must be a bare http(s) origin such as http://127.0.0.1:3000"
            );
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SnowflakeRepr {
    Int(u64),
    Text(String),
}

impl SnowflakeRepr {
    fn get<E: serde::de::Error>(self) -> Result<u64, E> {
        match self {
            SnowflakeRepr::Int(v) => Ok(v),
            SnowflakeRepr::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| E::custom(format!("`{s}` is not a Discord id (a number)"))),
        }
    }
}

fn snowflakes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    Vec::<SnowflakeRepr>::deserialize(d)?
        .into_iter()
        .map(SnowflakeRepr::get)
        .collect()
}

fn optional_snowflake<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<SnowflakeRepr>::deserialize(d)?
        .map(SnowflakeRepr::get)
        .transpose()
}

fn snowflake_groups<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Vec<u64>>, D::Error> {
    Vec::<Vec<SnowflakeRepr>>::deserialize(d)?
        .into_iter()
        .map(|g| g.into_iter().map(SnowflakeRepr::get).collect())
        .collect()
}

impl Config {
    pub fn embedded_default() -> anyhow::Result<Self> {
        let mut c = Self::parse(
            EMBEDDED_DEFAULT,
            Path::new("<embedded config/default.toml>"),
        )?;
        c.origin = ConfigOrigin::Embedded;
        Ok(c)
    }

    /// The embedded sandbox default, its Graph and Okta endpoints untouched: the sandbox makes
    /// its own credentials for it, so none are asked of the admin.
    pub fn is_sandbox_default(&self) -> bool {
        self.origin == ConfigOrigin::Embedded
            && is_loopback(&self.graph.authority)
            && is_loopback(&self.graph.graph_base)
            && is_loopback(&self.okta.org_url)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        Self::parse_layered(text, origin, std::iter::empty())
    }

    /// The file at `path` (or the embedded default), then `FIXBOT_<SECTION>__<KEY>` overrides
    /// from the environment.
    pub fn load_layered(path: Option<&Path>) -> anyhow::Result<Self> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?,
                p.to_path_buf(),
            ),
            None => (
                EMBEDDED_DEFAULT.to_owned(),
                Path::new("<embedded config/default.toml>").to_path_buf(),
            ),
        };
        let mut cfg = Self::parse_layered(&text, &origin, std::env::vars())?;
        if path.is_none() {
            cfg.origin = ConfigOrigin::Embedded;
        }
        Ok(cfg)
    }

    pub fn parse_layered(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("{}: {}", origin.display(), e.to_string().trim())
        })?;
        let mut applied = Vec::new();
        for (name, value) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            // Secrets (`FIXBOT_GRAPH_CLIENT_SECRET`) and other single-word variables are not
            // config keys; only SECTION__KEY is.
            let Some((section, key)) = path.split_once("__") else {
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let table = doc
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(table) = table.as_table_mut() else {
                anyhow::bail!("{name}: `{section}` is not a section of the configuration");
            };
            table.insert(key, parsed);
            applied.push(name);
        }
        let cfg: Config = toml::Value::Table(doc).try_into().map_err(|e: toml::de::Error| {
            let mut msg = format!("{}: {}", origin.display(), e.to_string().trim());
            if !applied.is_empty() {
                msg.push_str(&format!(" (after overrides from {})", applied.join(", ")));
            }
            let lower = msg.to_ascii_lowercase();
            if lower.contains("secret") || lower.contains("token") || lower.contains("password") {
                msg.push_str(&format!(
                    ". Secrets are never read from the configuration: set {GRAPH_SECRET_ENV}, {OKTA_TOKEN_ENV} or FIXBOT_DISCORD_TOKEN (or their _FILE forms)"
                ));
            }
            anyhow::anyhow!(msg)
        })?;
        cfg.validate()
            .with_context(|| format!("{}: invalid configuration", origin.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.watch.validate()?;
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
        require_https("graph.authority", &self.graph.authority)?;
        require_https("graph.graph_base", &self.graph.graph_base)?;
        require_https("okta.org_url", &self.okta.org_url)?;
        if let Some(scope) = &self.graph.scope {
            anyhow::ensure!(
                scope.ends_with("/.default") && Url::parse(scope).is_ok(),
                "graph.scope is `{scope}`: the client-credentials flow needs the resource's URI followed by /.default, e.g. https://graph.microsoft.com/.default"
            );
        }
        match self.graph.credential {
            GraphCredentialKind::ClientSecret => anyhow::ensure!(
                self.graph.certificate_file.is_none() && self.graph.private_key_file.is_none(),
                "graph.certificate_file and graph.private_key_file are set but graph.credential is \"client_secret\": set graph.credential = \"certificate\" to use them, or remove them"
            ),
            GraphCredentialKind::Certificate => anyhow::ensure!(
                self.graph.certificate_file.is_some() && self.graph.private_key_file.is_some(),
                "graph.credential is \"certificate\": set graph.certificate_file (the PEM certificate uploaded to the app registration) and graph.private_key_file (its PEM private key)"
            ),
        }
        match self.okta.credential {
            OktaCredentialKind::ApiToken => anyhow::ensure!(
                self.okta.client_id.is_none()
                    && self.okta.private_key_file.is_none()
                    && self.okta.key_id.is_none(),
                "okta.client_id, okta.private_key_file or okta.key_id is set but okta.credential is \"api_token\": set okta.credential = \"service_app\" to use them, or remove them"
            ),
            OktaCredentialKind::ServiceApp => anyhow::ensure!(
                self.okta.client_id.as_deref().is_some_and(|c| !c.trim().is_empty())
                    && self.okta.private_key_file.is_some(),
                "okta.credential is \"service_app\": set okta.client_id (the service app's client id) and okta.private_key_file (the PEM private key whose public key the app holds)"
            ),
        }
        Ok(())
    }

    /// Graph client settings with the credential the configuration names: the client secret
    /// from the environment, or the certificate and its key from their files.
    pub fn graph_client_config(&self) -> anyhow::Result<GraphConfig> {
        Ok(self.graph_client_config_with(self.graph_credential()?))
    }

    /// The Graph credential alone (read and checked, nothing sent).
    pub fn graph_credential(&self) -> anyhow::Result<GraphCredential> {
        match self.graph.credential {
            GraphCredentialKind::ClientSecret => {
                let secret = Secret::from_env(GRAPH_SECRET_ENV)?.with_context(|| {
                    format!("set {GRAPH_SECRET_ENV} (or {GRAPH_SECRET_ENV}_FILE) to the Entra app's client secret, or use graph.credential = \"certificate\"")
                })?;
                Ok(GraphCredential::ClientSecret(secret))
            }
            GraphCredentialKind::Certificate => {
                let (Some(cert_path), Some(key_path)) =
                    (&self.graph.certificate_file, &self.graph.private_key_file)
                else {
                    anyhow::bail!("graph.credential is \"certificate\": set graph.certificate_file and graph.private_key_file");
                };
                let certificate = Certificate::from_pem_file("graph.certificate_file", cert_path)?;
                let key = PrivateKey::from_pem_file("graph.private_key_file", key_path)?;
                let signer =
                    AssertionSigner::for_certificate(key, &certificate, &self.graph.client_id);
                signer.check_pair(
                    &certificate,
                    "graph.private_key_file",
                    "graph.certificate_file",
                )?;
                Ok(GraphCredential::Certificate(std::sync::Arc::new(
                    CertificateCredential {
                        certificate,
                        signer,
                    },
                )))
            }
        }
    }

    /// `graph.scope`, or `https://{graph host}/.default`.
    pub fn graph_scope(&self) -> String {
        self.graph.scope.clone().unwrap_or_else(|| {
            let host = self
                .graph
                .graph_base
                .host_str()
                .unwrap_or("graph.microsoft.com");
            format!("https://{host}/.default")
        })
    }

    pub fn graph_client_config_with(&self, credential: GraphCredential) -> GraphConfig {
        GraphConfig {
            authority: self.graph.authority.clone(),
            graph_base: self.graph.graph_base.clone(),
            tenant_id: self.graph.tenant_id.clone(),
            client_id: self.graph.client_id.clone(),
            credential,
            scope: self.graph_scope(),
            http: self.http.clone(),
            write_budget: self.graph.write_budget.clone(),
        }
    }

    pub fn okta_client_config(&self) -> anyhow::Result<OktaConfig> {
        Ok(OktaConfig {
            org_url: self.okta.org_url.clone(),
            credential: self.okta_credential()?,
            app_id: self.okta.app_id.clone(),
            http: self.http.clone(),
        })
    }

    /// The Okta credential alone (read and checked, nothing sent).
    pub fn okta_credential(&self) -> anyhow::Result<OktaCredential> {
        match self.okta.credential {
            OktaCredentialKind::ApiToken => {
                let token = Secret::from_env(OKTA_TOKEN_ENV)?.with_context(|| {
                    format!("set {OKTA_TOKEN_ENV} (or {OKTA_TOKEN_ENV}_FILE) to an Okta API token, or use okta.credential = \"service_app\"")
                })?;
                Ok(OktaCredential::ApiToken(token))
            }
            OktaCredentialKind::ServiceApp => {
                let (Some(client_id), Some(key_path)) =
                    (&self.okta.client_id, &self.okta.private_key_file)
                else {
                    anyhow::bail!("okta.credential is \"service_app\": set okta.client_id and okta.private_key_file");
                };
                let key = PrivateKey::from_pem_file("okta.private_key_file", key_path)?;
                Ok(OktaCredential::ServiceApp(Box::new(ServiceApp {
                    client_id: client_id.clone(),
                    signer: AssertionSigner::for_key(key, self.okta.key_id.clone(), client_id),
                })))
            }
        }
    }

    /// The Discord bot token, from the environment only.
    pub fn discord_token(&self) -> anyhow::Result<Secret> {
        Secret::from_env(DISCORD_TOKEN_ENV)?.with_context(|| {
            format!(
                "set {DISCORD_TOKEN_ENV} (or {DISCORD_TOKEN_ENV}_FILE) to the Discord bot token"
            )
        })
    }
}

/// Loopback hosts: 127.0.0.0/8, ::1 and `localhost` (the sandbox). Nothing else may be plain
/// http, since a token sent there crosses a network in clear.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn require_https(setting: &str, url: &Url) -> anyhow::Result<()> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        scheme => anyhow::bail!(
            "{setting} is `{url}`: {scheme}:// would send credentials and tokens unencrypted; use https:// (plain http is allowed only for loopback hosts, 127.0.0.0/8, ::1 and localhost, as the sandbox uses)"
        ),
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
    fn watch_section_defaults_bounds_and_serve_needs_a_channel() {
        let with = |vars: &[(&str, &str)]| {
            Config::parse_layered(
                EMBEDDED_DEFAULT,
                Path::new("d.toml"),
                vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
        };
        let c = with(&[]).unwrap();
        assert!(!c.watch.enabled);
        assert_eq!(c.watch.poll_interval, Duration::from_secs(60));
        assert_eq!(
            c.watch.event_types(),
            crate::directory::okta::PROVISIONING_ERROR_EVENT_TYPES
        );
        c.watch.validate_for_serve().unwrap();
        let on = with(&[("FIXBOT_WATCH__ENABLED", "true")]).unwrap();
        let err = format!("{:#}", on.watch.validate_for_serve().unwrap_err());
        assert!(err.contains("watch.channel_id"), "{err}");
        let on = with(&[
            ("FIXBOT_WATCH__ENABLED", "true"),
            ("FIXBOT_WATCH__CHANNEL_ID", "\"567890123456789012\""),
        ])
        .unwrap();
        assert_eq!(on.watch.channel_id, Some(567_890_123_456_789_012));
        on.watch.validate_for_serve().unwrap();
        for (key, value, needle) in [
            ("FIXBOT_WATCH__POLL_INTERVAL", "1000", "watch.poll_interval"),
            (
                "FIXBOT_WATCH__EVENT_TYPES",
                "[]",
                "watch.event_types is empty",
            ),
            (
                "FIXBOT_WATCH__EVENT_TYPES",
                "[\"application.provision.user.push\\\" or 1\"]",
                "is not a System Log event type",
            ),
            ("FIXBOT_WATCH__PAGE_LIMIT", "5000", "watch.page_limit"),
        ] {
            let err = format!("{:#}", with(&[(key, value)]).unwrap_err());
            assert!(err.contains(needle), "{key}={value}: {err}");
        }
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
    fn discord_section_takes_ids_as_numbers_or_strings() {
        let text = format!(
            "{EMBEDDED_DEFAULT}\n[discord]\nguild_ids = [1111]\nchannel_ids = [\"2222\"]\n\
             requester_role_ids = [3]\napprover_role_ids = [\"4\"]\nlinked_accounts = [[5, \"6\"]]\n\
             api_base = \"http://127.0.0.1:3000\"\n"
        );
        let c = Config::parse(&text, Path::new("d.toml")).unwrap();
        assert_eq!(c.discord.guild_ids, vec![1111]);
        assert_eq!(c.discord.channel_ids, vec![2222]);
        assert_eq!(c.discord.linked_accounts, vec![vec![5, 6]]);
        c.discord.validate_for_serve().unwrap();
        assert!(Config::embedded_default()
            .unwrap()
            .discord
            .validate_for_serve()
            .is_err());
        let bad = format!("{EMBEDDED_DEFAULT}\n[discord]\nguild_ids = [\"general\"]\n");
        let err = format!(
            "{:#}",
            Config::parse(&bad, Path::new("d.toml")).unwrap_err()
        );
        assert!(err.contains("general"), "{err}");
        let unknown = format!("{EMBEDDED_DEFAULT}\n[discord]\ntoken = \"x\"\n");
        assert!(Config::parse(&unknown, Path::new("d.toml")).is_err());
    }

    #[test]
    fn environment_overrides_keys_and_names_itself_in_errors() {
        let env = [
            ("FIXBOT_STORE__DATA_DIR".to_owned(), "/data/x".to_owned()),
            ("FIXBOT_OPS__LISTEN".to_owned(), "0.0.0.0:9464".to_owned()),
            (
                "FIXBOT_REPAIR__ALLOWED_DOMAINS".to_owned(),
                r#"["example.com"]"#.to_owned(),
            ),
            ("FIXBOT_REPAIR__VERIFY_ATTEMPTS".to_owned(), "9".to_owned()),
            (
                "FIXBOT_GRAPH_CLIENT_SECRET".to_owned(),
                "not-a-key".to_owned(),
            ),
        ];
        let c = Config::parse_layered(EMBEDDED_DEFAULT, Path::new("d.toml"), env).unwrap();
        assert_eq!(c.store.data_dir, PathBuf::from("/data/x"));
        assert_eq!(c.ops.listen.to_string(), "0.0.0.0:9464");
        assert_eq!(c.repair.allowed_domains, vec!["example.com".to_string()]);
        assert_eq!(c.repair.verify_attempts, 9);

        let bad = [(
            "FIXBOT_GRAPH__CLIENT_SECRET".to_owned(),
            "s3cr3t".to_owned(),
        )];
        let err = Config::parse_layered(EMBEDDED_DEFAULT, Path::new("d.toml"), bad).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("FIXBOT_GRAPH__CLIENT_SECRET") && msg.contains("client_secret"),
            "{msg}"
        );
        assert!(msg.contains("never read from the configuration"), "{msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");

        let wrong_type = [(
            "FIXBOT_REPAIR__VERIFY_ATTEMPTS".to_owned(),
            "many".to_owned(),
        )];
        let err =
            Config::parse_layered(EMBEDDED_DEFAULT, Path::new("d.toml"), wrong_type).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("d.toml") && msg.contains("verify_attempts"),
            "{msg}"
        );
    }

    #[test]
    fn endpoints_must_be_https_unless_loopback() {
        let with = |from: &str, to: &str| {
            Config::parse(&EMBEDDED_DEFAULT.replace(from, to), Path::new("t.toml"))
        };
        let err = format!(
            "{:#}",
            with("http://127.0.0.1:8089/okta", "http://okta.example.com").unwrap_err()
        );
        assert!(
            err.contains("okta.org_url") && err.contains("https://") && err.contains("loopback"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            with("http://127.0.0.1:8089/login", "http://10.0.0.5/login").unwrap_err()
        );
        assert!(err.contains("graph.authority"), "{err}");
        let err = format!(
            "{:#}",
            with(
                "http://127.0.0.1:8089/graph/v1.0",
                "ftp://graph.example/v1.0"
            )
            .unwrap_err()
        );
        assert!(err.contains("graph.graph_base"), "{err}");
        for loopback in [
            "http://localhost:1/okta",
            "http://127.9.9.9/okta",
            "http://[::1]:8/okta",
        ] {
            with("http://127.0.0.1:8089/okta", loopback).unwrap();
        }
        with("http://127.0.0.1:8089/okta", "https://example.okta.com").unwrap();
    }

    #[test]
    fn graph_scope_defaults_to_the_graph_host_and_can_be_set() {
        let c = Config::parse(
            &EMBEDDED_DEFAULT.replace(
                "http://127.0.0.1:8089/graph/v1.0",
                "https://graph.microsoft.us/v1.0",
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.graph_scope(), "https://graph.microsoft.us/.default");
        let proxied = EMBEDDED_DEFAULT.replace(
            "client_id = \"fixbot-sandbox\"",
            "client_id = \"fixbot-sandbox\"\nscope = \"https://graph.microsoft.com/.default\"",
        );
        let c = Config::parse(&proxied, Path::new("t.toml")).unwrap();
        assert_eq!(c.graph_scope(), "https://graph.microsoft.com/.default");
        let bad = proxied.replace("microsoft.com/.default", "microsoft.com/User.Read");
        let err = format!(
            "{:#}",
            Config::parse(&bad, Path::new("t.toml")).unwrap_err()
        );
        assert!(
            err.contains("graph.scope") && err.contains("/.default"),
            "{err}"
        );
    }

    #[test]
    fn each_credential_kind_names_the_settings_it_needs() {
        let cert = EMBEDDED_DEFAULT.replace(
            "client_id = \"fixbot-sandbox\"",
            "client_id = \"fixbot-sandbox\"\ncredential = \"certificate\"",
        );
        let err = format!(
            "{:#}",
            Config::parse(&cert, Path::new("t.toml")).unwrap_err()
        );
        assert!(
            err.contains("graph.certificate_file") && err.contains("graph.private_key_file"),
            "{err}"
        );
        let stray = EMBEDDED_DEFAULT.replace(
            "client_id = \"fixbot-sandbox\"",
            "client_id = \"fixbot-sandbox\"\nprivate_key_file = \"/k.pem\"",
        );
        let err = format!(
            "{:#}",
            Config::parse(&stray, Path::new("t.toml")).unwrap_err()
        );
        assert!(err.contains("graph.credential = \"certificate\""), "{err}");
        let app = EMBEDDED_DEFAULT.replace(
            "app_id = \"0oa1office365\"",
            "app_id = \"0oa1office365\"\ncredential = \"service_app\"\nclient_id = \"0oa9\"",
        );
        let err = format!(
            "{:#}",
            Config::parse(&app, Path::new("t.toml")).unwrap_err()
        );
        assert!(err.contains("okta.private_key_file"), "{err}");
        let missing = app.replace(
            "client_id = \"0oa9\"",
            "client_id = \"0oa9\"\nprivate_key_file = \"/nonexistent/okta.pem\"",
        );
        let c = Config::parse(&missing, Path::new("t.toml")).unwrap();
        let err = format!("{:#}", c.okta_credential().unwrap_err());
        assert!(
            err.contains("okta.private_key_file") && err.contains("cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn only_the_untouched_embedded_default_is_the_sandbox() {
        assert!(Config::embedded_default().unwrap().is_sandbox_default());
        let file = Config::parse(EMBEDDED_DEFAULT, Path::new("copy.toml")).unwrap();
        assert!(!file.is_sandbox_default());
        let mut real = Config::embedded_default().unwrap();
        real.okta.org_url = Url::parse("https://example.okta.com").unwrap();
        assert!(!real.is_sandbox_default());
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
