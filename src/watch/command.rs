//! `o365-fixbot watch [--once]`: the watch on its own, printing its cards to standard output.
//! State (the cursor, the findings) is kept in the data directory like `serve`'s, so the two
//! share one history; the store allows one process per data directory at a time.

use super::{Card, Watch};
use crate::config::Config;
use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;

fn print(out: &mut impl Write, cards: &[Card]) {
    for c in cards {
        let _ = writeln!(out, "{}\n", c.text);
    }
    let _ = out.flush();
}

/// Runs the watch against the configured tenant (or, on the embedded default, a sandbox started
/// for the purpose, whose periodic push has logged its mismatched users). `once`: one catch-up
/// pass, then exit; otherwise until SIGTERM/SIGINT.
pub async fn run(config: &Config, once: bool) -> anyhow::Result<()> {
    // First: a SIGTERM during startup is then a clean stop, not a kill.
    let mut signals = crate::ops::shutdown::Signals::install()?;
    let mut _sandbox = None;
    let mut throwaway = None;
    let engine = if config.is_sandbox_default() {
        let sb = crate::sandbox::Sandbox::start(crate::demo::sandbox_options(
            config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .await
        .context("could not start the sandbox tenant")?;
        // A fresh sandbox's log is empty; Okta's periodic push gives the watch something to find.
        sb.record_push_failures();
        // A fresh tenant each time: its findings and cursor mean nothing to the next one.
        let dir = std::env::temp_dir().join(format!(
            "o365-fixbot-watch-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let engine = crate::demo::sandbox_engine(config, &sb, &dir)?;
        throwaway = Some(dir);
        _sandbox = Some(sb);
        engine
    } else {
        let graph = crate::directory::graph::GraphClient::new(config.graph_client_config()?)?;
        let okta = crate::directory::okta::OktaClient::new(config.okta_client_config()?)?;
        let store = crate::store::Store::open(&config.store.data_dir)?;
        crate::pipeline::Engine::new(graph, okta, store, config.repair.clone())
    };
    let watch = Watch::new(engine, &config.watch);
    let result = watch_until_done(watch, once, &mut signals).await;
    if let Some(dir) = throwaway {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn watch_until_done(
    watch: Watch,
    once: bool,
    signals: &mut crate::ops::shutdown::Signals,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    if once {
        let pass = watch.pass().await?;
        print(&mut out, &pass.cards);
        eprintln!(
            "watch: {} new event(s) on {} page(s), {} card(s){}",
            pass.events,
            pass.pages,
            pass.cards.len(),
            if pass.caught_up {
                ""
            } else {
                "; more remain for the next pass"
            }
        );
        return Ok(());
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        watch
            .run(stopped, |cards| print(&mut std::io::stdout(), cards))
            .await;
    });
    let signal = signals.recv().await;
    tracing::warn!(signal, "stopping the watch");
    let _ = stop.send(true);
    // The pass in flight stops at its next await point; a page is committed whole or not at all.
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .context("the watch did not stop in time")?
        .context("the watch task failed")?;
    Ok(())
}

/// The watch running beside `serve`.
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the watch and waits for it, at most `within`. A pass in flight ends at its next
    /// await point; a page is committed whole or not at all, so nothing is lost either way.
    pub async fn stop(self, within: std::time::Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(within, self.task).await.is_err() {
            tracing::warn!("the watch did not stop in time");
        }
    }
}

/// Starts the watch for `serve` when `[watch] enabled`: its cards go through the Discord bot's
/// durable outbox into `watch.channel_id`, queued in the same transaction as the findings.
pub fn spawn_beside_discord(
    engine: crate::pipeline::Engine,
    settings: &crate::config::WatchSettings,
    bot: &crate::chat::discord::Bot,
) -> anyhow::Result<Option<Running>> {
    if !settings.enabled {
        return Ok(None);
    }
    settings.validate_for_serve()?;
    let channel = settings
        .channel_id
        .context("watch.channel_id is required when the watch is enabled")?;
    let watch = Watch::new(engine, settings).posting_to(channel, bot.outbox_waker());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { watch.run(stopped, |_| {}).await });
    tracing::info!(channel, "the watch is reading the Okta System Log");
    Ok(Some(Running { stop, task }))
}
