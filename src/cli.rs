//! Command line: parsing and wiring only; each subcommand's work lives in its own module.

use crate::config::Config;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "o365-fixbot",
    version,
    about = "Repairs Okta → Office 365 ImmutableID mismatches from chat, with a two-person rule"
)]
struct Cli {
    /// Configuration file; without it, the embedded sandbox configuration. Keys can be
    /// overridden with FIXBOT_<SECTION>__<KEY> environment variables.
    #[arg(long, global = true, env = "FIXBOT_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on standard error; RUST_LOG sets the level.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Discord bot (token from FIXBOT_DISCORD_TOKEN or FIXBOT_DISCORD_TOKEN_FILE).
    Serve {
        /// Repair the embedded sandbox tenant instead of the configured Graph and Okta (trying
        /// the bot out in a test server).
        #[arg(long)]
        sandbox: bool,
        /// Discord API base instead of https://discord.com (an HTTP proxy, or a fake); overrides
        /// discord.api_base.
        #[arg(long, value_name = "URL")]
        discord_api: Option<url::Url>,
    },
    /// Start the sandbox tenant and tell the whole story in the terminal.
    Demo {
        /// Read chat events from standard input instead of the built-in story.
        #[arg(long)]
        stdin: bool,
    },
    /// Validate the configuration; with --online, check each credential and permission with
    /// read-only calls to Graph, Okta and Discord.
    CheckConfig {
        #[arg(long)]
        online: bool,
        /// With --online: make the whole repair plan for this user, read-only (nothing is
        /// written, no run is stored), and print it.
        #[arg(long, value_name = "UPN", requires = "online")]
        user: Option<String>,
    },
    /// Diagnose one user, read-only: Entra and Okta side by side, a verdict and the smallest
    /// safe fix. Nothing is written anywhere.
    Diagnose {
        /// The user's UPN.
        #[arg(value_name = "UPN")]
        upn: String,
    },
    /// Watch the Okta System Log for the Office 365 app's provisioning failures, diagnose each
    /// user and print a card for every one a person must act on (one per user per UTC day).
    /// Uses [watch] from the configuration; state is kept in the data directory.
    Watch {
        /// One catch-up pass from the stored cursor, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Ask the running bot's /healthz (for container health checks; a minimal image has no curl).
    Healthcheck,
    /// Chat events from standard input against the configured tenant, with state kept in the
    /// data directory (recovers interrupted runs on start). Every line acts for the
    /// operating-system user, who cannot approve their own requests.
    Console {
        /// Break-glass: let the operating-system user approve their own requests alone. The
        /// plan, the thread and the audit log mark such repairs as single-person.
        #[arg(long)]
        single_operator: bool,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Serve the sandbox tenant (Graph, token endpoint, Okta) until interrupted.
    Sandbox {
        /// Address to listen on (loopback by default).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Check every record's hash and link, and that the log still reaches the head recorded in
    /// the data directory's `audit-head` file; report the first broken record or a cut tail
    /// (exit 1).
    Verify {
        /// Also check against a head recorded elsewhere, as `seq:hash` (a run summary's
        /// "audit head", or a previous verify's; at least 16 hex digits of the hash).
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<crate::store::AuditHead>,
    },
    /// Write every record as JSON lines to standard output (for a SIEM).
    Export,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Bounded: a blocking read of standard input (console) or a run left past its grace would
    // otherwise hold the exit after a graceful shutdown has already said what it left.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
    };
    // Each layer has its own filter: the gateway watcher must see serenity's op 9 line whatever
    // RUST_LOG lets through to the log.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(crate::chat::discord::session::layer())
        .try_init();
}

fn load_config(path: &Option<PathBuf>) -> anyhow::Result<Config> {
    Config::load_layered(path.as_deref())
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli.config)?;
    match cli.command {
        Command::Demo { stdin } => {
            let script = if stdin {
                // Bytes: a line that is not UTF-8 is the console's to refuse, alone.
                let mut s = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut s)
                    .context("cannot read standard input")?;
                Some(s)
            } else {
                None
            };
            crate::demo::run(&config, script.as_deref(), &mut std::io::stdout()).await
        }
        Command::Serve {
            sandbox,
            discord_api,
        } => serve(config, sandbox, discord_api).await,
        Command::Console { single_operator } => {
            crate::chat::console::serve_stdin(&config, single_operator).await
        }
        Command::CheckConfig { online, user } => {
            check_config(&config, online, user.as_deref()).await
        }
        Command::Diagnose { upn } => diagnose(&config, &upn).await,
        Command::Watch { once } => crate::watch::command::run(&config, once).await,
        Command::Healthcheck => crate::ops::health::probe(config.ops.listen).await,
        Command::Audit { action } => audit(&config, action),
        Command::Sandbox { listen } => {
            serve_sandbox(&config, listen.unwrap_or(config.sandbox.listen)).await
        }
    }
}

/// `check-config`: the checkers know nothing of each other; this picks the ones that apply.
async fn check_config(config: &Config, online: bool, user: Option<&str>) -> anyhow::Result<()> {
    use crate::ops::{check, check_report::Check};
    let mut checks = vec![Check::ok("configuration", "parsed and validated")];
    checks.extend(check::offline(config));
    if online {
        let report = check::online(config, user).await;
        checks.extend(report.checks);
        if let Some(plan) = report.plan {
            println!("{plan}\n");
        }
        if !config.discord.guild_ids.is_empty() {
            match config.discord_token() {
                Ok(token) => checks.extend(
                    crate::chat::discord::check::check_discord_and_watch(
                        &config.discord,
                        &token,
                        config.watch.channel_id.filter(|_| config.watch.enabled),
                    )
                    .await,
                ),
                Err(e) => checks.push(Check::failed("discord token", format!("{e:#}"))),
            }
        }
    }
    crate::ops::check_report::print(&checks)
}

/// `diagnose`: on the embedded default, against a sandbox started for the purpose, as
/// `check-config --online` does; the UPN is checked before anything is started.
async fn diagnose(config: &Config, upn: &str) -> anyhow::Result<()> {
    use crate::directory::graph::GraphClient;
    use crate::directory::okta::OktaClient;
    let upn = crate::domain::Upn::parse(upn).map_err(|e| anyhow::anyhow!("user: {e}"))?;
    let mut _sandbox = None;
    let (graph, okta) = if config.is_sandbox_default() {
        let opts = crate::demo::sandbox_options(config, SocketAddr::from(([127, 0, 0, 1], 0)));
        let sb = crate::sandbox::Sandbox::start(opts)
            .await
            .context("cannot start the sandbox tenant")?;
        let clients = (
            GraphClient::new(sb.graph_config(config.http.clone()))?,
            OktaClient::new(sb.okta_config(config.http.clone()))?,
        );
        _sandbox = Some(sb);
        clients
    } else {
        (
            GraphClient::new(config.graph_client_config()?)?,
            OktaClient::new(config.okta_client_config()?)?,
        )
    };
    let d = crate::pipeline::diagnose::diagnose(&graph, &okta, &config.repair, &upn).await?;
    println!("{}", crate::chat::diagnosis::diagnosis_text(&d));
    Ok(())
}

async fn serve(
    mut config: Config,
    use_sandbox: bool,
    discord_api: Option<url::Url>,
) -> anyhow::Result<()> {
    use crate::chat::discord::DiscordBot;
    // First: a SIGTERM during startup is then a clean stop, not a kill.
    let mut signals = crate::ops::shutdown::Signals::install()?;
    if discord_api.is_some() {
        config.discord.api_base = discord_api;
    }
    config.discord.validate_for_serve()?;
    config.watch.validate_for_serve()?;
    let token = config.discord_token()?;
    // Kept alive for the whole serve when used.
    let mut _sandbox = None;
    let engine = if use_sandbox {
        let sb = crate::sandbox::Sandbox::start(crate::demo::sandbox_options(
            &config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .await
        .context("could not start the sandbox tenant")?;
        let engine = crate::demo::sandbox_engine(&config, &sb, &config.store.data_dir)?;
        _sandbox = Some(sb);
        engine
    } else {
        let graph = crate::directory::graph::GraphClient::new(config.graph_client_config()?)?;
        let okta = crate::directory::okta::OktaClient::new(config.okta_client_config()?)?;
        let store = crate::store::Store::open(&config.store.data_dir)?;
        crate::pipeline::Engine::new(graph, okta, store, config.repair.clone())
            .observed_by(crate::ops::metrics::observer())
    };
    // Only one active instance may manage the Okta app; renewed until serve returns.
    let instance = engine.store().instance_name();
    let lease = engine.claim_okta_app(&instance, std::time::Duration::from_secs(60))?;
    let ready = crate::ops::health::Readiness::new(engine.store().clone());
    let (addr, _task) = crate::ops::health::serve(config.ops.listen, ready.clone()).await?;
    tracing::info!(%addr, "health and metrics endpoints listening");
    // Kept to park runs on a signal (the bot takes its own clone).
    let parker = engine.clone();
    let bot = DiscordBot::new(
        engine,
        &config.approval,
        &config.discord,
        &token,
        Some(ready.clone()),
    )
    .await?;
    let shards = bot.shard_manager();
    let handle = bot.bot();
    let watch =
        crate::watch::command::spawn_beside_discord(parker.clone(), &config.watch, &handle)?;
    let mut run = tokio::spawn(bot.run());
    let signal = tokio::select! {
        res = &mut run => return res.context("the Discord task failed")?,
        s = signals.recv() => s,
    };
    let grace = config.ops.shutdown_grace;
    let signalled = std::time::Instant::now();
    tracing::warn!(
        signal,
        grace_ms = grace.as_millis() as u64,
        "shutting down: new commands are answered \"restarting\"; waiting for executing runs"
    );
    // Runs go on to a safe boundary and park there: one in its Okta half finishes it, one in
    // its Entra half finishes that and leaves the pause; the next start resumes them.
    parker.park();
    // The watch reads nothing more; what it queued is in the outbox, flushed below.
    if let Some(w) = watch {
        w.stop(std::time::Duration::from_secs(2)).await;
    }
    // Commands are refused first, so a 503 "shutting down" already means they are.
    handle.begin_shutdown();
    ready.set_draining();
    // The gateway stays up meanwhile, so commands still get their "restarting" answer.
    let left = tokio::select! {
        left = handle.wait_idle(grace) => left,
        s = signals.recv() => {
            tracing::error!(signal = s, "a second signal: not waiting any longer");
            handle.wait_idle(std::time::Duration::ZERO).await
        }
    };
    if left.is_empty() {
        tracing::warn!("no run is executing; stopping");
    } else {
        tracing::error!(
            runs = ?left,
            "STOPPING WITH RUNS STILL EXECUTING after the shutdown grace; the next start settles them from their journal (recovery) — check `/fix-status` then"
        );
    }
    // What the runs said is delivered as far as the grace allows (at least 2 s, which the
    // 30 s stop timeout the README asks for leaves); the rest is sent by the next start.
    let rest = grace
        .saturating_sub(signalled.elapsed())
        .max(std::time::Duration::from_secs(2));
    let owed = handle.flush_chat(rest).await;
    if owed > 0 {
        tracing::warn!(
            owed,
            "chat messages not yet delivered; the next start sends them, once"
        );
    }
    // serenity waits up to 5 s per shard for a clean close; the process is leaving either way.
    if tokio::time::timeout(std::time::Duration::from_secs(6), shards.shutdown_all())
        .await
        .is_err()
    {
        tracing::warn!("the gateway connection did not close in time");
    }
    run.abort();
    // Released now, so the next instance (e.g. the replacement container) can start at once.
    drop(lease);
    tracing::warn!("stopped");
    Ok(())
}

async fn serve_sandbox(config: &Config, listen: SocketAddr) -> anyhow::Result<()> {
    let sandbox = crate::sandbox::Sandbox::start(crate::demo::sandbox_options(config, listen))
        .await
        .with_context(|| format!("could not serve the sandbox on {listen}"))?;
    // The sandbox's own throwaway credentials go to files, never to the terminal.
    let dir = config.store.data_dir.join("sandbox-secrets");
    std::fs::create_dir_all(&dir)?;
    let graph_file = dir.join("graph-client-secret");
    let okta_file = dir.join("okta-api-token");
    std::fs::write(&graph_file, sandbox.creds.client_secret.expose())?;
    std::fs::write(&okta_file, sandbox.creds.okta_token.expose())?;
    println!("sandbox tenant serving on {listen}");
    println!("  graph.authority  = \"{}\"", sandbox.urls.authority);
    println!("  graph.graph_base = \"{}\"", sandbox.urls.graph);
    println!("  graph.tenant_id  = \"{}\"", sandbox.creds.tenant_id);
    println!("  graph.client_id  = \"{}\"", sandbox.creds.client_id);
    println!("  okta.org_url     = \"{}\"", sandbox.urls.okta);
    println!("  okta.app_id      = \"{}\"", sandbox.creds.app_id);
    println!(
        "  export FIXBOT_GRAPH_CLIENT_SECRET_FILE={}",
        graph_file.display()
    );
    println!(
        "  export FIXBOT_OKTA_API_TOKEN_FILE={}",
        okta_file.display()
    );
    println!("Ctrl-C to stop.");
    crate::ops::shutdown::Signals::install()?.recv().await;
    Ok(())
}

fn audit(config: &Config, action: AuditAction) -> anyhow::Result<()> {
    use crate::store::{Store, Verification};
    use std::io::Write;
    let store = Store::open(&config.store.data_dir)?;
    match action {
        AuditAction::Verify { expect_head } => {
            match store.audit_verify_expecting(expect_head.as_ref())? {
                Verification::Intact { records } => {
                    let head = store
                        .audit_head()?
                        .map_or_else(|| "none".to_owned(), |h| h.to_string());
                    println!("audit log intact: {records} records, head {head}");
                    match store.audit_head_file()? {
                        // Behind is allowed: a crash between a commit and the file's update.
                        Some(file) if file.seq < records as i64 => println!(
                            "head file: at record {} ({} behind; it catches up on the next write)",
                            file.seq,
                            records as i64 - file.seq
                        ),
                        Some(_) => println!("head file: matches"),
                        None => println!(
                            "head file: none yet (written with the next audit record); a cut tail cannot be detected without one"
                        ),
                    }
                    if let Some(h) = expect_head {
                        println!("expected head {h}: present");
                    }
                    Ok(())
                }
                Verification::Broken { seq, reason } => {
                    anyhow::bail!("audit log broken at record {seq}: {reason}")
                }
                Verification::Truncated { reason, .. } => {
                    anyhow::bail!("audit log truncated: {reason}")
                }
            }
        }
        AuditAction::Export => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for record in store.audit_records()? {
                serde_json::to_writer(&mut out, &record)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        }
    }
}
