//! The Discord front end (`o365-fixbot serve`): a serenity client with only the `GUILDS` and
//! `GUILD_MESSAGE_REACTIONS` intents (no privileged intent), guild slash commands, a plan message
//! approved by reaction, and step results in a thread. See `docs/discord.md`.
//!
//! - [`commands`]: slash command definitions and option parsing
//! - `bot`: the plan → approval → execution state machine per run, whose steps are in
//!   `startup` (READY, restarts), `interactions` (the commands), `votes` (reactions counted),
//!   `expiry` (the approval window), `batch` (bulk repairs: one plan with a CSV, one
//!   approval, one progress message, a summary with the outcome CSV), `relay` (what is said in the thread and on the plan
//!   message) and `status` (`/fix-status`); `place` is where a run is shown
//! - [`reactions`]: reactions as votes, and who voted
//! - [`limits`]: per-person rate limit and the cap on open runs
//! - [`post`]: everything sent, with `allowed_mentions` limited
//! - [`check`]: `check-config --online` for Discord (token, guilds, channels, permissions)

mod batch;
mod bot;
mod buckets;
pub mod check;
pub mod commands;
mod expiry;
mod interactions;
pub mod limits;
pub mod offer;
pub mod outbox;
mod place;
pub mod post;
pub mod reactions;
mod relay;
pub mod rest;
pub mod session;
mod startup;
mod status;
mod votes;

pub use bot::Bot;

use crate::approval::ApprovalPolicy;
use crate::config::{ApprovalSettings, DiscordSettings};
use crate::ops::health::Readiness;
use crate::pipeline::Engine;
use crate::secret::Secret;
use post::Poster;
use serenity::all::{
    Client, ClientBuilder, ConnectionStage, Context, EventHandler, GatewayIntents, HttpBuilder,
    Interaction, Reaction, Ready, ResumedEvent, ShardManager, ShardStageUpdateEvent,
};
use std::sync::Arc;
use std::time::Duration;

/// The only gateway intents the bot needs: slash commands need none, reactions need
/// `GUILD_MESSAGE_REACTIONS`; `GUILDS` keeps the guild and thread state coherent.
pub const INTENTS: GatewayIntents =
    GatewayIntents::GUILDS.union(GatewayIntents::GUILD_MESSAGE_REACTIONS);

/// The approval policy for Discord: `[approval]`'s count and TTL with `[discord]`'s role ids.
pub fn policy(approval: &ApprovalSettings, discord: &DiscordSettings) -> ApprovalPolicy {
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect();
    ApprovalPolicy {
        requester_roles: ids(&discord.requester_role_ids),
        approver_roles: ids(&discord.approver_role_ids),
        ..ApprovalPolicy::from(approval)
    }
}

struct Handler {
    bot: Arc<Bot>,
    readiness: Option<Readiness>,
}

impl Handler {
    fn connected(&self, up: bool) {
        if let Some(r) = &self.readiness {
            r.set_connected(up);
        }
    }
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        if let Some(r) = &self.readiness {
            r.session_started();
        }
        self.bot
            .on_ready(&Poster::new(ctx.http.clone()), ready)
            .await;
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        if let Some(r) = &self.readiness {
            r.session_started();
        }
    }

    async fn shard_stage_update(&self, _ctx: Context, event: ShardStageUpdateEvent) {
        tracing::info!(from = %event.old, to = %event.new, "Discord gateway connection stage");
        self.connected(event.new == ConnectionStage::Connected);
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let poster = Poster::new(ctx.http.clone());
        match interaction {
            Interaction::Command(cmd) => self.bot.on_command(&poster, cmd).await,
            Interaction::Component(press) => self.bot.on_component(&poster, press).await,
            _ => {}
        }
    }

    async fn reaction_add(&self, ctx: Context, reaction: Reaction) {
        self.bot
            .on_reaction(&Poster::new(ctx.http.clone()), reaction)
            .await;
    }
}

/// A connected-to-be Discord bot. [`DiscordBot::run`] serves until the gateway gives up or
/// [`ShardManager::shutdown_all`] is called.
pub struct DiscordBot {
    client: Client,
    bot: Arc<Bot>,
    readiness: Option<Readiness>,
}

impl DiscordBot {
    /// Builds the client. With `settings.api_base`, REST and the gateway lookup go there instead of
    /// `https://discord.com` (serenity's `HttpBuilder::proxy`), and serenity's own ratelimiter is
    /// off: serenity ignores the proxy while it is on (serenity #1739), so the proxy (e.g.
    /// twilight-http-proxy) must do the rate limiting. `readiness` follows the gateway
    /// connection (for `/readyz`).
    pub async fn new(
        engine: Engine,
        approval: &ApprovalSettings,
        settings: &DiscordSettings,
        token: &Secret,
        readiness: Option<Readiness>,
    ) -> anyhow::Result<Self> {
        settings.validate_for_serve()?;
        let mut http = HttpBuilder::new(token.expose());
        if let Some(base) = &settings.api_base {
            http = http
                .proxy(base.as_str().trim_end_matches('/'))
                .ratelimiter_disabled(true);
        }
        let rest = Arc::new(rest::DiscordRest::new(settings.api_base.as_ref(), token)?);
        let outbox = outbox::Outbox::new(engine.store().clone(), rest);
        engine.store().set_announcer(relay::announcer(approval.ttl));
        let bot = Arc::new(Bot::new(
            engine,
            policy(approval, settings),
            settings.clone(),
            outbox.clone(),
        ));
        let client = ClientBuilder::new_with_http(http.build(), INTENTS)
            .event_handler(Handler {
                bot: Arc::clone(&bot),
                readiness: readiness.clone(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot build the Discord client: {e}"))?;
        Ok(Self {
            client,
            bot,
            readiness,
        })
    }

    pub fn shard_manager(&self) -> Arc<ShardManager> {
        Arc::clone(&self.client.shard_manager)
    }

    pub fn bot(&self) -> Arc<Bot> {
        Arc::clone(&self.bot)
    }

    /// Connects one shard and serves events until shut down.
    ///
    /// Readiness: READY, RESUMED and stage updates flip it at once, and an op 9 seen in serenity's
    /// log (see [`session`]) drops it until the next READY/RESUMED; serenity does not report
    /// every drop as a stage update (a resume started after a socket error is not), so a
    /// watchdog also reads the shard's stage each second — no shard runner (serenity is
    /// restarting the shard, e.g. while the gateway is unreachable) or a stage other than
    /// `Connected` is not ready.
    pub async fn run(mut self) -> anyhow::Result<()> {
        // Messages an earlier process left undelivered go out first, in order.
        let sender = self.bot.outbox.start();
        let watchdog = self.readiness.clone().map(|ready| {
            let shards = Arc::clone(&self.client.shard_manager);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let up = {
                        let runners = shards.runners.lock().await;
                        !runners.is_empty()
                            && runners
                                .values()
                                .all(|r| r.stage == ConnectionStage::Connected)
                    };
                    ready.set_connected(up);
                }
            })
        });
        let result = self.client.start().await;
        if let Some(w) = watchdog {
            w.abort();
        }
        drop(sender);
        if let Some(r) = &self.readiness {
            r.set_connected(false);
        }
        result.map_err(|e| anyhow::anyhow!("the Discord gateway connection ended: {e}"))
    }
}
