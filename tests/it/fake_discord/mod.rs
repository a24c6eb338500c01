//! A fake Discord on 127.0.0.1 for the real serenity client: REST under `/api/v10/…` (every
//! request checked against Discord's OpenAPI description; anything it does not document is
//! recorded as a violation and answered 404) and a gateway websocket (Hello, heartbeat ACK,
//! READY on Identify, RESUMED on Resume, dispatches on demand). It keeps an in-memory model of
//! channels, messages, threads and reactions, and records when each interaction was dispatched
//! and answered. Tests wait on its state with [`FakeDiscord::wait_for`] (bounded in time), never
//! with sleeps.
//!
//! For restarts it keeps reactions made while no bot is connected ([`FakeDiscord::react_offline`])
//! and serves them back (`GET …/reactions/{emoji}`, paginated by user id, and
//! `GET /guilds/{g}/members/{user}`); it can re-deliver a dispatch (as after a resume), refuse
//! gateway connections for a while, and invalidate the session (op 9,
//! [`FakeDiscord::invalidate_session`]) while holding the READY owed to the next Identify
//! ([`FakeDiscord::hold_ready`]). For `check-config --online` it models the guild's roles, the
//! bot's roles and each channel's permission overwrites ([`GuildModel`]).
//!
//! Files: a message created with `multipart/form-data` must have a `payload_json` part (checked
//! against the spec like a JSON body) and one `files[n]` part with a filename per entry of
//! `payload_json.attachments` (matching id `n` and filename); anything else is a violation. The
//! files are kept per message ([`World::files`]). A slash command can carry an attachment
//! option ([`FakeDiscord::slash_with_file`]) whose file is served, as Discord's CDN would, at
//! `GET /attachments/{id}/{filename}` on the same address; downloads are counted.

#![allow(dead_code)]

pub mod openapi;
pub mod ratelimit;
#[cfg(test)]
mod tests;

pub use ratelimit::RateLimits;

use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ratelimit::counts_globally;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub const TOKEN: &str = "fake-bot-token";
pub const BOT_ID: u64 = 900_000_000_000_000_001;
pub const APP_ID: u64 = 900_000_000_000_000_002;
pub const GUILD: u64 = 800_000_000_000_000_001;
pub const CHANNEL: u64 = 800_000_000_000_000_010;
pub const OTHER_CHANNEL: u64 = 800_000_000_000_000_011;
pub const REQUESTER_ROLE: u64 = 700_000_000_000_000_001;
pub const APPROVER_ROLE: u64 = 700_000_000_000_000_002;
/// The bot's own role in [`GUILD`].
pub const BOT_ROLE: u64 = 700_000_000_000_000_003;
/// Another guild the bot is in, but not configured; [`FOREIGN_CHANNEL`] is there.
pub const OTHER_GUILD: u64 = 800_000_000_000_000_002;
pub const FOREIGN_CHANNEL: u64 = 800_000_000_000_000_020;
/// A voice channel in [`GUILD`].
pub const VOICE_CHANNEL: u64 = 800_000_000_000_000_012;
/// The guild's owner (not the bot).
pub const OWNER_ID: u64 = 1_000;
/// Every channel that exists besides threads.
const KNOWN_CHANNELS: [u64; 4] = [CHANNEL, OTHER_CHANNEL, VOICE_CHANNEL, FOREIGN_CHANNEL];

/// Permission bits, as Discord numbers them.
pub mod perm {
    pub const ADMINISTRATOR: u64 = 1 << 3;
    pub const ADD_REACTIONS: u64 = 1 << 6;
    pub const VIEW_CHANNEL: u64 = 1 << 10;
    pub const SEND_MESSAGES: u64 = 1 << 11;
    pub const ATTACH_FILES: u64 = 1 << 15;
    pub const READ_MESSAGE_HISTORY: u64 = 1 << 16;
    pub const CREATE_PUBLIC_THREADS: u64 = 1 << 35;
    pub const SEND_MESSAGES_IN_THREADS: u64 = 1 << 38;
}

/// The guild as `check-config --online` sees it: roles with their permissions (the `@everyone`
/// role has the guild's id), the bot's roles, the owner, and per-channel overwrites.
#[derive(Debug, Clone)]
pub struct GuildModel {
    pub roles: Vec<(u64, u64)>,
    pub bot_roles: Vec<u64>,
    pub owner: u64,
    /// Channel id → `permission_overwrites` as Discord sends them.
    pub overwrites: HashMap<u64, Vec<Value>>,
}

impl Default for GuildModel {
    /// Everything the bot needs: viewing, sending and history from `@everyone`, the rest from
    /// the bot's role.
    fn default() -> Self {
        use perm::*;
        Self {
            roles: vec![
                (GUILD, VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY),
                (
                    BOT_ROLE,
                    ADD_REACTIONS | CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS | ATTACH_FILES,
                ),
                (REQUESTER_ROLE, 0),
                (APPROVER_ROLE, 0),
            ],
            bot_roles: vec![BOT_ROLE],
            owner: OWNER_ID,
            overwrites: HashMap::new(),
        }
    }
}

/// One permission overwrite (`kind` 0 = role, 1 = member).
pub fn overwrite(id: u64, kind: u64, allow: u64, deny: u64) -> Value {
    json!({"id": id.to_string(), "type": kind, "allow": allow.to_string(), "deny": deny.to_string()})
}

/// Someone in the fake guild.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: u64,
    pub name: &'static str,
    pub roles: Vec<u64>,
    pub bot: bool,
}

impl Person {
    pub fn new(id: u64, name: &'static str, roles: &[u64]) -> Self {
        Self {
            id,
            name,
            roles: roles.to_vec(),
            bot: false,
        }
    }

    pub fn user_json(&self) -> Value {
        json!({
            "id": self.id.to_string(), "username": self.name, "discriminator": "0",
            "global_name": self.name, "avatar": null, "bot": self.bot, "public_flags": 0
        })
    }

    pub fn member_json(&self) -> Value {
        json!({
            "user": self.user_json(),
            "roles": self.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "nick": null, "avatar": null, "joined_at": "2024-01-01T00:00:00.000000+00:00",
            "premium_since": null, "deaf": false, "mute": false, "flags": 0, "pending": false,
            "permissions": "2147483648"
        })
    }
}

pub fn bot_person() -> Person {
    Person {
        id: BOT_ID,
        name: "fixbot",
        roles: vec![],
        bot: true,
    }
}

/// One REST request as received.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub template: String,
    pub body: Option<Value>,
    pub authorization: Option<String>,
    pub at: Instant,
}

/// A message in a channel or thread, with every version of its content.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: u64,
    pub channel: u64,
    pub content: String,
    pub versions: Vec<String>,
    pub allowed_mentions: Option<Value>,
    /// Who this message would notify, by Discord's rules for `allowed_mentions`.
    pub pings: Vec<String>,
    /// The message this one replies to (`message_reference`).
    pub reply_to: Option<u64>,
    /// The `nonce` it was created with, echoed back as Discord does.
    pub nonce: Option<Value>,
}

/// A thread started from a message (its id is that message's id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub parent: u64,
    pub name: String,
    pub archived: bool,
    pub locked: bool,
    pub deleted: bool,
}

/// How long Discord remembers a nonce for `enforce_nonce`.
pub const NONCE_WINDOW: Duration = Duration::from_secs(300);

/// One interaction and how the bot answered it.
#[derive(Debug, Clone, Default)]
pub struct Interaction {
    pub id: u64,
    pub token: String,
    pub dispatched: Option<Instant>,
    /// Type and flags of the first callback (4 = message, 5 = deferred; flags 64 = ephemeral).
    pub response: Option<(u64, u64)>,
    pub responded: Option<Instant>,
    pub callbacks: usize,
    /// Content of the immediate reply or of each edit of the deferred one.
    pub texts: Vec<String>,
    /// The `INTERACTION_CREATE` payload, to deliver it again.
    pub payload: Value,
    /// The components of the latest edit of the reply (buttons under it).
    pub components: Vec<Value>,
}

impl Interaction {
    pub fn latency(&self) -> Option<Duration> {
        Some(self.responded? - self.dispatched?)
    }

    pub fn last_text(&self) -> &str {
        self.texts.last().map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
pub struct World {
    pub requests: Vec<Req>,
    pub violations: Vec<String>,
    pub messages: BTreeMap<u64, Msg>,
    /// Message ids in the order they were created.
    pub order: Vec<u64>,
    pub threads: HashMap<u64, Thread>,
    /// (message, emoji, user) for every reaction added.
    pub reactions: Vec<(u64, String, u64)>,
    pub interactions: HashMap<u64, Interaction>,
    pub commands: Vec<Value>,
    pub identifies: Vec<Value>,
    pub resumes: usize,
    pub connections: usize,
    pub ready_sent: usize,
    /// `PUT …/guilds/{g}/commands` received (once per READY).
    pub command_puts: usize,
    /// Everyone who has acted, by id (for member and reaction lookups).
    pub people: HashMap<u64, Person>,
    /// While set, gateway connections are refused (503), as in an outage.
    pub gateway_down: bool,
    /// While set, an Identify is not answered (READY waits), as after an op 9.
    pub hold_ready: bool,
    /// An Identify received while `hold_ready`: its connection, answered on release.
    held_identify: Option<mpsc::UnboundedSender<GwCmd>>,
    pub guild: GuildModel,
    pub limits: RateLimits,
    /// Every 429 given: (route template, channel, or 0 for the global limit).
    pub rate_limited: Vec<(String, u64)>,
    /// Creates answered with an earlier message because of `enforce_nonce`.
    pub nonce_hits: usize,
    /// While set, starting a thread is refused (403 Missing Permissions).
    pub refuse_threads: bool,
    /// Files attached to created messages: message id → (filename, bytes), in `files[n]` order.
    pub files: HashMap<u64, Vec<(String, Vec<u8>)>>,
    /// Components a message was created with (its buttons), by message id.
    pub components: HashMap<u64, Value>,
    /// Attachments given with slash commands: id → (filename, bytes), served on request.
    pub cdn: HashMap<u64, (String, Vec<u8>)>,
    /// `GET /attachments/…` served.
    pub downloads: usize,
    /// The files of the multipart request being handled, for its create.
    upload: Option<Vec<(String, Vec<u8>)>>,
    rate: ratelimit::RateState,
    /// (channel, nonce as JSON) → (message, when created), for `enforce_nonce`.
    nonces: HashMap<(u64, String), (u64, Instant)>,
    /// Open gateway connection: dispatches go here.
    gateway: Option<mpsc::UnboundedSender<GwCmd>>,
    seq: u64,
}

impl World {
    pub fn messages_in(&self, channel: u64) -> Vec<&Msg> {
        self.order
            .iter()
            .filter_map(|id| self.messages.get(id))
            .filter(|m| m.channel == channel)
            .collect()
    }

    pub fn texts_in(&self, channel: u64) -> Vec<String> {
        self.messages_in(channel)
            .into_iter()
            .map(|m| m.content.clone())
            .collect()
    }

    pub fn connected(&self) -> bool {
        self.gateway.is_some()
    }

    /// An Identify is waiting for its READY (see [`FakeDiscord::hold_ready`]).
    pub fn identify_waiting(&self) -> bool {
        self.held_identify.is_some()
    }
}

enum GwCmd {
    Send(Value),
    Drop,
}

struct Shared {
    world: Mutex<World>,
    version: watch::Sender<u64>,
    spec: openapi::Spec,
    next_id: AtomicU64,
    addr: SocketAddr,
}

impl Shared {
    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    fn snowflake(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct FakeDiscord {
    shared: Arc<Shared>,
    pub base: String,
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Discord");
        let addr = listener.local_addr().expect("address");
        let (version, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            world: Mutex::new(World::default()),
            version,
            spec: openapi::Spec::load(),
            next_id: AtomicU64::new(1_000_000_000_000_000_000),
            addr,
        });
        let app = Router::new()
            .route("/gateway", get(gateway))
            .route("/attachments/{id}/{name}", get(cdn))
            .fallback(rest)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeDiscord {
            base: format!("http://{addr}"),
            shared,
        }
    }

    /// Reads the world.
    pub fn world<T>(&self, f: impl FnOnce(&World) -> T) -> T {
        f(&self.shared.world.lock().unwrap())
    }

    /// Changes the world (e.g. the guild's permissions).
    pub fn world_mut<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        let out = f(&mut self.shared.world.lock().unwrap());
        self.shared.changed();
        out
    }

    /// Refuses (or accepts again) gateway connections.
    pub fn set_gateway_down(&self, down: bool) {
        self.world_mut(|w| w.gateway_down = down);
    }

    /// Waits until `cond` holds, at most `limit`; panics with `what` and the REST log otherwise.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&World) -> Option<T>,
    ) -> T {
        let mut rx = self.shared.version.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            rx.borrow_and_update();
            if let Some(v) = self.world(&mut cond) {
                return v;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    let log = self.world(|w| {
                        let reqs: Vec<String> = w
                            .requests
                            .iter()
                            .map(|r| format!("{} {}", r.method, r.template))
                            .collect();
                        let msgs: Vec<String> = w
                            .order
                            .iter()
                            .filter_map(|id| w.messages.get(id))
                            .map(|m| format!("[{}] {}", m.channel, m.content))
                            .collect();
                        format!(
                            "requests: {reqs:#?}\nmessages: {msgs:#?}\nviolations: {:#?}\n\
                             rate limited: {:#?}",
                            w.violations, w.rate_limited
                        )
                    });
                    panic!("timed out after {limit:?} waiting for {what}\n{log}");
                }
            }
        }
    }

    /// Waits for the bot to identify, get READY and register its commands in the guild.
    pub async fn wait_ready(&self) {
        self.wait_for(
            "READY and command registration",
            Duration::from_secs(15),
            |w| (w.ready_sent > 0 && !w.commands.is_empty()).then_some(()),
        )
        .await;
    }

    fn dispatch(&self, t: &str, d: Value) {
        let mut w = self.shared.world.lock().unwrap();
        w.seq += 1;
        let frame = json!({"op": 0, "t": t, "s": w.seq, "d": d});
        let tx = w
            .gateway
            .clone()
            .expect("the bot is connected to the gateway");
        tx.send(GwCmd::Send(frame))
            .expect("gateway connection open");
    }

    /// Sends a slash command as `who` in `channel`; returns the interaction id.
    pub fn slash(&self, who: &Person, channel: u64, name: &str, options: &[(&str, &str)]) -> u64 {
        self.slash_raw(who, channel, name, string_options(options), None)
    }

    fn slash_raw(
        &self,
        who: &Person,
        channel: u64,
        name: &str,
        opts: Vec<Value>,
        resolved: Option<Value>,
    ) -> u64 {
        let mut data = json!({"id": "100", "name": name, "type": 1, "options": opts, "guild_id": GUILD.to_string()});
        if let Some(r) = resolved {
            data["resolved"] = r;
        }
        self.interact(who, channel, 2, data, None)
    }

    /// Delivers an `INTERACTION_CREATE` of `kind` (2 command, 3 component) as `who` in
    /// `channel`, remembered for its answers; returns its id.
    fn interact(
        &self,
        who: &Person,
        channel: u64,
        kind: u64,
        data: Value,
        message: Option<Value>,
    ) -> u64 {
        let id = self.shared.snowflake();
        let token = format!("itoken-{id}");
        let mut d = json!({
            "id": id.to_string(), "application_id": APP_ID.to_string(), "type": kind,
            "data": data,
            "guild_id": GUILD.to_string(), "channel_id": channel.to_string(),
            "channel": {"id": channel.to_string(), "type": 0, "name": "identity-ops"},
            "member": who.member_json(), "token": token, "version": 1,
            "app_permissions": "2251799813685247", "locale": "en-US", "guild_locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": GUILD.to_string()},
            "context": 0, "attachment_size_limit": 10485760
        });
        if let Some(m) = message {
            d["message"] = m;
        }
        {
            let mut w = self.shared.world.lock().unwrap();
            w.people.insert(who.id, who.clone());
            w.interactions.insert(
                id,
                Interaction {
                    id,
                    token,
                    dispatched: Some(Instant::now()),
                    payload: d.clone(),
                    ..Interaction::default()
                },
            );
        }
        self.dispatch("INTERACTION_CREATE", d);
        id
    }

    /// Sends `/name` with the string `options` and an attachment option `file` (type 11) whose
    /// file is `bytes` named `filename`, in `data.resolved.attachments` as Discord sends it;
    /// Discord reports `size` (normally `bytes.len()`). Returns the interaction id.
    #[allow(clippy::too_many_arguments)]
    pub fn slash_with_file(
        &self,
        who: &Person,
        channel: u64,
        name: &str,
        options: &[(&str, &str)],
        filename: &str,
        bytes: &[u8],
        size: usize,
    ) -> u64 {
        let att = self.shared.snowflake();
        let url = format!("http://{}/attachments/{att}/{filename}", self.shared.addr);
        self.world_mut(|w| w.cdn.insert(att, (filename.to_owned(), bytes.to_vec())));
        let mut opts = string_options(options);
        opts.push(json!({"name": "file", "type": 11, "value": att.to_string()}));
        let resolved = json!({"attachments": {att.to_string(): {
            "id": att.to_string(), "filename": filename, "size": size, "url": url,
            "proxy_url": url, "content_type": "text/csv; charset=utf-8", "ephemeral": true
        }}});
        self.slash_raw(who, channel, name, opts, Some(resolved))
    }

    /// `who` presses the button `custom_id` under the reply to `under` (an interaction's
    /// ephemeral reply); returns the new interaction's id. As Discord does, the press carries
    /// the message the button is on.
    pub fn press(&self, who: &Person, channel: u64, under: u64, custom_id: &str) -> u64 {
        let message = self.world(|w| {
            let i = &w.interactions[&under];
            let mut m = message_json(
                &Msg {
                    id: under,
                    channel,
                    content: i.last_text().to_owned(),
                    versions: vec![],
                    allowed_mentions: None,
                    pings: vec![],
                    reply_to: None,
                    nonce: None,
                },
                &bot_person().user_json(),
            );
            m["flags"] = json!(64);
            m["components"] = json!(i.components);
            m
        });
        self.press_with(who, channel, message, custom_id)
    }

    /// `who` presses the button `custom_id` on channel message `message` (a watch card, say).
    pub fn press_on_message(
        &self,
        who: &Person,
        channel: u64,
        message: u64,
        custom_id: &str,
    ) -> u64 {
        let message = self.world(|w| {
            let mut m = message_json(&w.messages[&message], &bot_person().user_json());
            m["components"] = w.components.get(&message).cloned().unwrap_or(json!([]));
            m
        });
        self.press_with(who, channel, message, custom_id)
    }

    fn press_with(&self, who: &Person, channel: u64, message: Value, custom_id: &str) -> u64 {
        let data = json!({"custom_id": custom_id, "component_type": 2});
        self.interact(who, channel, 3, data, Some(message))
    }

    /// Delivers an interaction again, as Discord may after a resume.
    pub fn redispatch_interaction(&self, id: u64) {
        let d = self.world(|w| w.interactions[&id].payload.clone());
        self.dispatch("INTERACTION_CREATE", d);
    }

    /// `who` reacts with `emoji` on message `message` in `channel`.
    pub fn react(&self, who: &Person, channel: u64, message: u64, emoji: &str) {
        self.react_offline(who, message, emoji);
        self.dispatch(
            "MESSAGE_REACTION_ADD",
            reaction_json(who, channel, message, emoji),
        );
    }

    /// Delivers `who`'s reaction again without adding it (a replayed dispatch).
    pub fn redispatch_reaction(&self, who: &Person, channel: u64, message: u64, emoji: &str) {
        self.dispatch(
            "MESSAGE_REACTION_ADD",
            reaction_json(who, channel, message, emoji),
        );
    }

    /// `who` reacts while no bot is connected: Discord keeps the reaction but dispatches
    /// nothing; a bot sees it only by listing the message's reactions.
    pub fn react_offline(&self, who: &Person, message: u64, emoji: &str) {
        self.world_mut(|w| {
            w.people.insert(who.id, who.clone());
            if !w
                .reactions
                .iter()
                .any(|(m, e, u)| *m == message && e == emoji && *u == who.id)
            {
                w.reactions.push((message, emoji.to_owned(), who.id));
            }
        });
    }

    /// Sends op 9 (invalid session, not resumable) on the open gateway connection: the client
    /// must identify again, and until READY it cannot answer interactions.
    pub fn invalidate_session(&self) {
        let w = self.shared.world.lock().unwrap();
        let tx = w
            .gateway
            .clone()
            .expect("the bot is connected to the gateway");
        tx.send(GwCmd::Send(
            json!({"op": 9, "d": false, "s": null, "t": null}),
        ))
        .expect("gateway connection open");
    }

    /// While `hold`, Identify gets no READY (as in Discord's 1–5 s wait after an op 9, made as
    /// long as a test needs); releasing sends the READY a held Identify is owed.
    pub fn hold_ready(&self, hold: bool) {
        let held = self.world_mut(|w| {
            w.hold_ready = hold;
            if hold {
                None
            } else {
                w.held_identify.take()
            }
        });
        if let Some(tx) = held {
            let _ = tx.send(GwCmd::Send(ready_frame(&self.shared)));
            self.shared.changed();
        }
    }

    /// Drops the gateway socket without a close frame, as a network failure would.
    pub fn drop_gateway(&self) {
        let mut w = self.shared.world.lock().unwrap();
        if let Some(tx) = w.gateway.take() {
            let _ = tx.send(GwCmd::Drop);
        }
        drop(w);
        self.shared.changed();
    }

    pub async fn wait_response(&self, interaction: u64, limit: Duration) -> Interaction {
        self.wait_for("the interaction's first response", limit, |w| {
            w.interactions
                .get(&interaction)
                .filter(|i| i.response.is_some())
                .cloned()
        })
        .await
    }

    /// Waits until the interaction's reply (immediate or deferred-then-edited) has text.
    pub async fn wait_reply(&self, interaction: u64, limit: Duration) -> Interaction {
        self.wait_for("the interaction's reply text", limit, |w| {
            w.interactions
                .get(&interaction)
                .filter(|i| !i.texts.is_empty())
                .cloned()
        })
        .await
    }

    /// Waits for the plan message created after the interaction: (plan message id).
    pub async fn wait_plan(&self, channel: u64, upn: &str, limit: Duration) -> u64 {
        let upn = upn.to_owned();
        self.wait_for("a plan message with its thread", limit, move |w| {
            w.messages_in(channel)
                .into_iter()
                .rev()
                .find(|m| m.content.contains("Repair plan for") && m.content.contains(&upn))
                .filter(|m| w.threads.contains_key(&m.id))
                .map(|m| m.id)
        })
        .await
    }

    /// Waits until a message in `channel` contains `needle`; returns its content.
    pub async fn wait_text(&self, channel: u64, needle: &str, limit: Duration) -> String {
        let n = needle.to_owned();
        self.wait_for(
            &format!("a message containing {needle:?}"),
            limit,
            move |w| {
                w.messages_in(channel)
                    .into_iter()
                    .find(|m| m.content.contains(&n))
                    .map(|m| m.content.clone())
            },
        )
        .await
    }

    pub fn violations(&self) -> Vec<String> {
        self.world(|w| w.violations.clone())
    }

    /// Changes one thread; panics if there is no thread with that id.
    fn thread_mut(&self, id: u64, f: impl FnOnce(&mut Thread)) {
        self.world_mut(|w| f(w.threads.get_mut(&id).expect("a thread with that id")));
    }

    /// Archives a thread, as Discord does after its auto-archive duration.
    pub fn archive_thread(&self, id: u64) {
        self.thread_mut(id, |t| t.archived = true);
    }

    /// Locks a thread (a locked thread is archived too): only moderators could reopen it.
    pub fn lock_thread(&self, id: u64) {
        self.thread_mut(id, |t| {
            t.locked = true;
            t.archived = true;
        });
    }

    /// Deletes a thread: every route on it answers 404 Unknown Channel from now on.
    pub fn delete_thread(&self, id: u64) {
        self.thread_mut(id, |t| t.deleted = true);
    }

    /// REST requests received, without the gateway URL lookups.
    pub fn rest_count(&self) -> usize {
        self.world(|w| {
            w.requests
                .iter()
                .filter(|r| !r.template.starts_with("/gateway"))
                .count()
        })
    }

    /// 429s given so far.
    pub fn rate_limited_count(&self) -> usize {
        self.world(|w| w.rate_limited.len())
    }

    /// Requests whose path names `id`: for a plan message, everything on it and on its thread
    /// (the thread's id is the message's).
    pub fn requests_touching(&self, id: u64) -> usize {
        let id = id.to_string();
        self.world(|w| w.requests.iter().filter(|r| r.path.contains(&id)).count())
    }

    /// Callback and webhook requests made for one interaction (found by its token).
    pub fn interaction_requests(&self, interaction: u64) -> usize {
        self.world(|w| {
            let needle = w
                .interactions
                .get(&interaction)
                .map_or_else(|| interaction.to_string(), |i| i.token.clone());
            w.requests
                .iter()
                .filter(|r| !counts_globally(&r.template) && r.path.contains(&needle))
                .count()
        })
    }
}

fn string_options(options: &[(&str, &str)]) -> Vec<Value> {
    options
        .iter()
        .map(|(k, v)| json!({"name": k, "type": 3, "value": v}))
        .collect()
}

/// Discord's CDN for attachments given with slash commands.
async fn cdn(
    State(sh): State<Arc<Shared>>,
    axum::extract::Path((id, name)): axum::extract::Path<(u64, String)>,
) -> Response {
    let found = {
        let mut w = sh.world.lock().unwrap();
        w.downloads += 1;
        w.cdn
            .get(&id)
            .filter(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
    };
    sh.changed();
    match found {
        Some(bytes) => bytes.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A multipart part: its field name, its filename if any, its bytes.
type Part = (String, Option<String>, Vec<u8>);
/// A file as sent: (filename, bytes).
type File = (String, Vec<u8>);

/// Splits a `multipart/form-data` body into (name, filename, bytes) parts.
fn multipart_parts(content_type: &str, body: &[u8]) -> Result<Vec<Part>, String> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .ok_or("multipart without a boundary")?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut at = find(body, delim.as_bytes(), 0).ok_or("no first boundary")? + delim.len();
    let mut parts = Vec::new();
    // Bounded by the body: each part moves past one boundary.
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        let start = at + 2; // CRLF after the boundary
        let head_end = find(body, b"\r\n\r\n", start).ok_or("a part without headers")?;
        let head = String::from_utf8_lossy(&body[start..head_end]).to_string();
        let next = find(body, format!("\r\n{delim}").as_bytes(), head_end)
            .ok_or("a part without a closing boundary")?;
        let content = body[head_end + 4..next].to_vec();
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .ok_or("a part without Content-Disposition")?;
        let field = |key: &str| {
            disposition
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('"').to_owned())
        };
        let name = field("name").ok_or("a part without a name")?;
        parts.push((name, field("filename"), content));
        at = next + 2 + delim.len();
    }
}

/// The JSON of a multipart create and its files, checked for the shape Discord documents.
fn read_multipart(content_type: &str, body: &[u8]) -> Result<(Value, Vec<File>), String> {
    let parts = multipart_parts(content_type, body)?;
    let payload = parts
        .iter()
        .find(|(n, _, _)| n == "payload_json")
        .ok_or("multipart without payload_json")?;
    let json: Value =
        serde_json::from_slice(&payload.2).map_err(|e| format!("payload_json is not JSON: {e}"))?;
    let declared = json["attachments"].as_array().cloned().unwrap_or_default();
    let mut files = Vec::new();
    for (name, filename, bytes) in &parts {
        if name == "payload_json" {
            continue;
        }
        let n = name
            .strip_prefix("files[")
            .and_then(|r| r.strip_suffix(']'))
            .ok_or(format!("unexpected part `{name}`"))?;
        let filename = filename
            .clone()
            .ok_or(format!("`{name}` without a filename"))?;
        let entry = declared
            .iter()
            .find(|a| {
                a["id"].as_str() == Some(n)
                    || a["id"].as_u64().map(|i| i.to_string()).as_deref() == Some(n)
            })
            .ok_or(format!("`{name}` is not in payload_json.attachments"))?;
        if entry["filename"].as_str().is_some_and(|f| f != filename) {
            return Err(format!(
                "`{name}`'s filename differs from payload_json.attachments"
            ));
        }
        files.push((filename, bytes.clone()));
    }
    if files.len() != declared.len() {
        return Err(format!(
            "payload_json.attachments names {} files, {} sent",
            declared.len(),
            files.len()
        ));
    }
    Ok((json, files))
}

fn reaction_json(who: &Person, channel: u64, message: u64, emoji: &str) -> Value {
    json!({
        "user_id": who.id.to_string(), "channel_id": channel.to_string(),
        "message_id": message.to_string(), "guild_id": GUILD.to_string(),
        "member": who.member_json(), "emoji": {"id": null, "name": emoji},
        "message_author_id": BOT_ID.to_string(), "burst": false, "burst_colors": [], "type": 0
    })
}

// --- gateway ---------------------------------------------------------------------------------

/// READY for a new session.
fn ready_frame(sh: &Shared) -> Value {
    let mut w = sh.world.lock().unwrap();
    w.seq += 1;
    w.ready_sent += 1;
    json!({"op": 0, "t": "READY", "s": w.seq, "d": {
        "v": 10, "user": bot_person().user_json(),
        "guilds": [{"id": GUILD.to_string(), "unavailable": true}],
        "session_id": format!("session-{}", w.ready_sent),
        "resume_gateway_url": format!("ws://{}/gateway", sh.addr),
        "shard": [0, 1],
        "application": {"id": APP_ID.to_string(), "flags": 0}
    }})
}

async fn gateway(State(sh): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    if sh.world.lock().unwrap().gateway_down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    ws.on_upgrade(move |socket| session(sh, socket))
}

async fn session(sh: Arc<Shared>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<GwCmd>();
    {
        let mut w = sh.world.lock().unwrap();
        w.connections += 1;
        w.gateway = Some(tx.clone());
    }
    sh.changed();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 41250}, "s": null, "t": null});
    if socket
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(GwCmd::Send(v)) => {
                    if socket.send(WsMessage::Text(v.to_string().into())).await.is_err() { break; }
                }
                Some(GwCmd::Drop) | None => break,
            },
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { break };
                let WsMessage::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                match v["op"].as_u64() {
                    Some(1) => {
                        let _ = tx.send(GwCmd::Send(json!({"op": 11, "d": null, "s": null, "t": null})));
                    }
                    Some(2) => {
                        let held = {
                            let mut w = sh.world.lock().unwrap();
                            w.identifies.push(v["d"].clone());
                            if w.hold_ready {
                                w.held_identify = Some(tx.clone());
                            }
                            w.hold_ready
                        };
                        if !held {
                            let _ = tx.send(GwCmd::Send(ready_frame(&sh)));
                        }
                        sh.changed();
                    }
                    Some(6) => {
                        let resumed = {
                            let mut w = sh.world.lock().unwrap();
                            w.resumes += 1;
                            w.seq += 1;
                            json!({"op": 0, "t": "RESUMED", "s": w.seq, "d": {}})
                        };
                        let _ = tx.send(GwCmd::Send(resumed));
                        sh.changed();
                    }
                    _ => {}
                }
            }
        }
    }
    {
        let mut w = sh.world.lock().unwrap();
        if w.gateway.as_ref().is_some_and(|g| g.same_channel(&tx)) {
            w.gateway = None;
        }
    }
    sh.changed();
}

// --- REST ------------------------------------------------------------------------------------

fn discord_error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

fn message_json(m: &Msg, author: &Value) -> Value {
    let mut out = json!({
        "id": m.id.to_string(), "channel_id": m.channel.to_string(), "author": author,
        "content": m.content, "timestamp": "2025-01-01T00:00:00.000000+00:00",
        "edited_timestamp": null, "tts": false, "mention_everyone": false, "mentions": [],
        "mention_roles": [], "attachments": [], "embeds": [], "pinned": false, "type": 0,
        "flags": 0, "components": []
    });
    if let Some(nonce) = &m.nonce {
        out["nonce"] = nonce.clone();
    }
    if let Some(to) = m.reply_to {
        out["type"] = json!(19);
        out["message_reference"] = json!({"type": 0, "message_id": to.to_string(),
            "channel_id": m.channel.to_string(), "guild_id": GUILD.to_string()});
    }
    out
}

fn content_ok(w: &mut World, content: &str, what: &str) {
    // The docs (which win over the spec's 4,000) limit content to 2,000 characters.
    let n = content.chars().count();
    if n > 2000 {
        w.violations
            .push(format!("{what}: content of {n} characters"));
    }
}

/// Discord's 400 for a body that breaks a documented constraint.
fn invalid_form_body(field: &str, code: &str, message: &str) -> Response {
    let errors = json!({field: {"_errors": [{"code": code, "message": message}]}});
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": errors})),
    )
        .into_response()
}

/// A message create whose string nonce is over 25 characters gets Discord's 400 (not the 404
/// given to requests the spec rejects), so a client sees what it would see live: (violation,
/// answer).
fn long_nonce(method: &Method, path: &str, body: Option<&Value>) -> Option<(String, Response)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let create = method == Method::POST && matches!(segs[..], ["channels", _, "messages"]);
    let len = body?.get("nonce")?.as_str()?.chars().count();
    (create && len > 25).then(|| {
        (
            format!("message nonce of {len} characters (at most 25)"),
            invalid_form_body(
                "nonce",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
            ),
        )
    })
}

fn thread_json(id: u64, t: &Thread) -> Value {
    json!({
        "id": id.to_string(), "type": 11, "guild_id": GUILD.to_string(), "name": t.name,
        "parent_id": t.parent.to_string(), "owner_id": BOT_ID.to_string(),
        "last_message_id": null, "rate_limit_per_user": 0, "flags": 0,
        "message_count": 0, "member_count": 1, "total_message_sent": 0,
        "thread_metadata": {"archived": t.archived, "auto_archive_duration": 1440,
            "archive_timestamp": "2025-01-01T00:00:00.000000+00:00", "locked": t.locked}
    })
}

/// Refuses a request on a deleted thread (404), or one that writes into an archived or locked
/// thread (400 50083), as Discord does.
fn thread_gate(w: &World, channel: u64, writes: bool) -> Option<Response> {
    let t = w.threads.get(&channel)?;
    if t.deleted {
        return Some(discord_error(
            StatusCode::NOT_FOUND,
            10003,
            "Unknown Channel",
        ));
    }
    (writes && (t.archived || t.locked))
        .then(|| discord_error(StatusCode::BAD_REQUEST, 50083, "Thread is archived"))
}

/// Who a message notifies: Discord's `allowed_mentions` rules over the content's mentions.
pub fn pings(content: &str, allowed: Option<&Value>) -> Vec<String> {
    let parse: Vec<String> = match allowed {
        None => vec!["everyone".into(), "users".into(), "roles".into()],
        Some(a) => a["parse"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let listed = |key: &str| -> Vec<String> {
        allowed
            .and_then(|a| a[key].as_array())
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if parse.iter().any(|p| p == "everyone")
        && (content.contains("@everyone") || content.contains("@here"))
    {
        out.push("@everyone".to_owned());
    }
    let mut rest = content;
    while let Some(i) = rest.find("<@") {
        rest = &rest[i + 2..];
        let role = rest.starts_with('&');
        let digits: String = rest
            .trim_start_matches(['&', '!'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if digits.is_empty() {
            continue;
        }
        let (kind, key) = if role {
            ("roles", "roles")
        } else {
            ("users", "users")
        };
        if parse.iter().any(|p| p == kind) || listed(key).contains(&digits) {
            out.push(format!("{}{digits}", if role { "role:" } else { "user:" }));
        }
    }
    out
}

async fn rest(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers: HeaderMap = req.headers().clone();
    let body: Bytes = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(_) => return discord_error(StatusCode::PAYLOAD_TOO_LARGE, 40005, "too large"),
    };
    let raw_path = uri.path();
    let Some(path) = raw_path.strip_prefix("/api/v10") else {
        let v = format!("{method} {raw_path}: not under /api/v10");
        sh.world.lock().unwrap().violations.push(v);
        sh.changed();
        return discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found");
    };
    let decoded: String = path
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect::<Vec<_>>()
        .join("/");
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .filter(|(k, _)| !k.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut upload = None;
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else if content_type.starts_with("multipart/form-data") {
        match read_multipart(&content_type, &body) {
            Ok((v, files)) if method == Method::POST && decoded.ends_with("/messages") => {
                upload = Some(files);
                Some(v)
            }
            Ok(_) => {
                let v = format!("{method} {decoded}: files sent where none are taken");
                sh.world.lock().unwrap().violations.push(v);
                sh.changed();
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            }
            Err(e) => {
                let v = format!("{method} {decoded}: {e}");
                sh.world.lock().unwrap().violations.push(v);
                sh.changed();
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            }
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                let v = format!("{method} {decoded}: body is not JSON: {e}");
                sh.world.lock().unwrap().violations.push(v);
                sh.changed();
                return discord_error(StatusCode::BAD_REQUEST, 50109, "invalid JSON");
            }
        }
    };
    if let Some(refused) = long_nonce(&method, &decoded, json_body.as_ref()) {
        sh.world.lock().unwrap().violations.push(refused.0);
        sh.changed();
        return refused.1;
    }
    let matched = match sh
        .spec
        .check(method.as_str(), &decoded, &query, json_body.as_ref())
    {
        Ok(m) => m,
        Err(e) => {
            sh.world.lock().unwrap().violations.push(e.clone());
            sh.changed();
            return discord_error(StatusCode::NOT_FOUND, 0, &e);
        }
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let needs_bot = counts_globally(&matched.template);
    let now = Instant::now();
    let response = {
        let mut w = sh.world.lock().unwrap();
        w.requests.push(Req {
            method: method.to_string(),
            path: decoded.clone(),
            template: matched.template.clone(),
            body: json_body.clone(),
            authorization: authorization.clone(),
            at: now,
        });
        if needs_bot && authorization.as_deref() != Some(&format!("Bot {TOKEN}")) {
            w.violations.push(format!(
                "{method} {}: without the bot token",
                matched.template
            ));
            discord_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized")
        } else {
            let p = |name: &str| {
                matched
                    .params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let channel: u64 = p("channel_id").parse().unwrap_or(0);
            match ratelimit::admit(&mut w, method.as_str(), &matched.template, channel, now) {
                Err(refused) => *refused,
                Ok(limit_headers) => {
                    w.upload = upload;
                    let mut answer = handle(
                        &sh,
                        &mut w,
                        &method,
                        &matched.template,
                        &p,
                        &query,
                        json_body,
                        now,
                    );
                    answer.headers_mut().extend(limit_headers);
                    answer
                }
            }
        }
    };
    sh.changed();
    response
}

#[allow(clippy::too_many_arguments)]
fn handle(
    sh: &Shared,
    w: &mut World,
    method: &Method,
    template: &str,
    p: &dyn Fn(&str) -> String,
    query: &[(String, String)],
    body: Option<Value>,
    now: Instant,
) -> Response {
    let bot = bot_person().user_json();
    let body = body.unwrap_or(Value::Null);
    let channel: u64 = p("channel_id").parse().unwrap_or(0);
    let writes = matches!(
        (method.as_str(), template),
        ("POST", "/channels/{channel_id}/messages")
            | ("PATCH", "/channels/{channel_id}/messages/{message_id}")
            | (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"
            )
    );
    if let Some(refused) = thread_gate(w, channel, writes) {
        return refused;
    }
    match (method.as_str(), template) {
        ("GET", "/gateway") => {
            axum::Json(json!({"url": format!("ws://{}/gateway", sh.addr)})).into_response()
        }
        ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands") => {
            let cmds: Vec<Value> = body
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|mut c| {
                    c["id"] = json!(sh.snowflake().to_string());
                    c["application_id"] = json!(APP_ID.to_string());
                    c["guild_id"] = json!(p("guild_id"));
                    c["version"] = json!("1");
                    if c.get("type").is_none() {
                        c["type"] = json!(1);
                    }
                    c
                })
                .collect();
            if p("application_id") != APP_ID.to_string() {
                w.violations.push(format!(
                    "commands registered for application {}",
                    p("application_id")
                ));
            }
            w.commands = cmds.clone();
            w.command_puts += 1;
            axum::Json(Value::Array(cmds)).into_response()
        }
        ("POST", "/interactions/{interaction_id}/{interaction_token}/callback") => {
            let id: u64 = p("interaction_id").parse().unwrap_or(0);
            let Some(i) = w.interactions.get_mut(&id) else {
                return discord_error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
            };
            if i.token != p("interaction_token") {
                return discord_error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
            }
            i.callbacks += 1;
            if i.response.is_some() {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    40060,
                    "Interaction has already been acknowledged.",
                );
            }
            let kind = body["type"].as_u64().unwrap_or(0);
            let flags = body["data"]["flags"].as_u64().unwrap_or(0);
            i.response = Some((kind, flags));
            i.responded = Some(now);
            if kind == 4 {
                let text = body["data"]["content"].as_str().unwrap_or("").to_owned();
                i.texts.push(text.clone());
                content_ok(w, &text, "interaction reply");
                if body["data"].get("allowed_mentions").is_none() {
                    w.violations
                        .push("interaction reply without allowed_mentions".into());
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original") => {
            let token = p("webhook_token");
            let Some(i) = w.interactions.values_mut().find(|i| i.token == token) else {
                return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
            };
            // The original exists once answered with a message (4) or a deferral (5).
            if !matches!(i.response, Some((4 | 5, _))) {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            let text = body["content"].as_str().unwrap_or("").to_owned();
            i.texts.push(text.clone());
            if let Some(c) = body.get("components").and_then(Value::as_array) {
                i.components = c.clone();
            }
            let bad_button = i
                .components
                .iter()
                .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
                .any(|b| {
                    // Discord: a non-link button needs a custom_id of 1–100 characters.
                    let id = b["custom_id"].as_str().unwrap_or("");
                    b["type"] != 2 || id.is_empty() || id.chars().count() > 100
                });
            let id = i.id;
            if bad_button {
                w.violations
                    .push("a reply's button breaks Discord's component rules".into());
            }
            if p("webhook_id") != APP_ID.to_string() {
                w.violations
                    .push("deferred reply edited with a wrong application id".into());
            }
            if body.get("allowed_mentions").is_none() {
                w.violations
                    .push("deferred reply edit without allowed_mentions".into());
            }
            content_ok(w, &text, "deferred reply");
            let m = Msg {
                id,
                channel: 0,
                content: text,
                versions: vec![],
                allowed_mentions: None,
                pings: vec![],
                reply_to: None,
                nonce: None,
            };
            axum::Json(message_json(&m, &bot)).into_response()
        }
        ("POST", "/channels/{channel_id}/messages") => create_message(sh, w, channel, &body, now),
        ("PATCH", "/channels/{channel_id}/messages/{message_id}") => {
            let id: u64 = p("message_id").parse().unwrap_or(0);
            let channel: u64 = p("channel_id").parse().unwrap_or(0);
            let Some(m) = w.messages.get_mut(&id).filter(|m| m.channel == channel) else {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            };
            if let Some(c) = body["content"].as_str() {
                m.content = c.to_owned();
                m.versions.push(c.to_owned());
            }
            if body.get("allowed_mentions").is_none() {
                w.violations
                    .push("message edit without allowed_mentions".into());
            }
            let m = w.messages[&id].clone();
            let allowed = body.get("allowed_mentions").cloned();
            let extra = pings(&m.content, allowed.as_ref());
            w.messages.get_mut(&id).expect("exists").pings.extend(extra);
            let c = m.content.clone();
            content_ok(w, &c, "edited message");
            axum::Json(message_json(&m, &bot)).into_response()
        }
        ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me") => {
            let id: u64 = p("message_id").parse().unwrap_or(0);
            let channel: u64 = p("channel_id").parse().unwrap_or(0);
            if w.messages.get(&id).is_none_or(|m| m.channel != channel) {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            let emoji = p("emoji_name");
            w.reactions.push((id, emoji.clone(), BOT_ID));
            // Discord echoes the bot's own reaction over the gateway.
            if let Some(tx) = &w.gateway {
                w.seq += 1;
                let frame = json!({"op": 0, "t": "MESSAGE_REACTION_ADD", "s": w.seq,
                    "d": reaction_json(&bot_person(), channel, id, &emoji)});
                let _ = tx.send(GwCmd::Send(frame));
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", "/channels/{channel_id}/messages/{message_id}/threads") => {
            let id: u64 = p("message_id").parse().unwrap_or(0);
            let channel: u64 = p("channel_id").parse().unwrap_or(0);
            if w.messages.get(&id).is_none_or(|m| m.channel != channel) {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            if w.refuse_threads {
                return discord_error(StatusCode::FORBIDDEN, 50013, "Missing Permissions");
            }
            if w.threads.contains_key(&id) {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    160004,
                    "A thread has already been created for this message",
                );
            }
            let thread = Thread {
                parent: channel,
                name: body["name"].as_str().unwrap_or("").to_owned(),
                archived: false,
                locked: false,
                deleted: false,
            };
            let mut out = thread_json(id, &thread);
            out["thread_metadata"]["auto_archive_duration"] =
                json!(body["auto_archive_duration"].as_u64().unwrap_or(1440));
            w.threads.insert(id, thread);
            axum::Json(out).into_response()
        }
        ("PATCH", "/channels/{channel_id}") if w.threads.contains_key(&channel) => {
            edit_thread(w, channel, &body)
        }
        ("PATCH", "/channels/{channel_id}") if !KNOWN_CHANNELS.contains(&channel) => {
            discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel")
        }
        ("GET", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}") => {
            let id: u64 = p("message_id").parse().unwrap_or(0);
            let channel: u64 = p("channel_id").parse().unwrap_or(0);
            if w.messages.get(&id).is_none_or(|m| m.channel != channel) {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let after: u64 = q("after").and_then(|a| a.parse().ok()).unwrap_or(0);
            let limit: usize = q("limit").and_then(|l| l.parse().ok()).unwrap_or(25);
            let emoji = p("emoji_name");
            let mut users: Vec<u64> = w
                .reactions
                .iter()
                .filter(|(m, e, u)| *m == id && *e == emoji && *u > after)
                .map(|(_, _, u)| *u)
                .collect();
            users.sort_unstable();
            users.dedup();
            let out: Vec<Value> = users
                .into_iter()
                .take(limit)
                .map(|u| match w.people.get(&u) {
                    Some(person) => person.user_json(),
                    None if u == BOT_ID => bot_person().user_json(),
                    None => Person::new(u, "someone", &[]).user_json(),
                })
                .collect();
            axum::Json(Value::Array(out)).into_response()
        }
        ("GET", "/guilds/{guild_id}/members/{user_id}") => {
            let user: u64 = p("user_id").parse().unwrap_or(0);
            if p("guild_id") != GUILD.to_string() {
                return discord_error(StatusCode::NOT_FOUND, 10004, "Unknown Guild");
            }
            let member = if user == BOT_ID {
                Person {
                    roles: w.guild.bot_roles.clone(),
                    ..bot_person()
                }
            } else {
                match w.people.get(&user) {
                    Some(person) => person.clone(),
                    None => return discord_error(StatusCode::NOT_FOUND, 10007, "Unknown Member"),
                }
            };
            axum::Json(member.member_json()).into_response()
        }
        ("GET", "/users/@me") => axum::Json(bot).into_response(),
        ("GET", "/guilds/{guild_id}") => {
            let id: u64 = p("guild_id").parse().unwrap_or(0);
            if id != GUILD && id != OTHER_GUILD {
                return discord_error(StatusCode::NOT_FOUND, 10004, "Unknown Guild");
            }
            let roles: Vec<Value> = w
                .guild
                .roles
                .iter()
                .enumerate()
                .map(|(i, (rid, perms))| {
                    json!({
                        "id": rid.to_string(), "name": if *rid == id { "@everyone".to_owned() } else { format!("role-{i}") },
                        "permissions": perms.to_string(), "position": i, "color": 0, "hoist": false,
                        "managed": false, "mentionable": false, "flags": 0
                    })
                })
                .collect();
            axum::Json(json!({
                "id": id.to_string(), "name": if id == GUILD { "Contoso IT" } else { "Elsewhere" },
                "owner_id": w.guild.owner.to_string(), "roles": roles, "features": [],
                "verification_level": 0, "default_message_notifications": 0,
                "explicit_content_filter": 0, "mfa_level": 0, "premium_tier": 0,
                "nsfw_level": 0, "preferred_locale": "en-US", "emojis": [], "stickers": []
            }))
            .into_response()
        }
        ("GET", "/channels/{channel_id}") => {
            let id = channel;
            if let Some(t) = w.threads.get(&id) {
                return axum::Json(thread_json(id, t)).into_response();
            }
            let (guild, kind, name) = match id {
                CHANNEL => (GUILD, 0, "identity-ops"),
                OTHER_CHANNEL => (GUILD, 0, "general"),
                VOICE_CHANNEL => (GUILD, 2, "voice"),
                FOREIGN_CHANNEL => (OTHER_GUILD, 0, "elsewhere"),
                _ => return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel"),
            };
            let overwrites = w.guild.overwrites.get(&id).cloned().unwrap_or_default();
            axum::Json(json!({
                "id": id.to_string(), "type": kind, "guild_id": guild.to_string(), "name": name,
                "position": 0, "permission_overwrites": overwrites, "nsfw": false,
                "parent_id": null, "last_message_id": null, "rate_limit_per_user": 0, "flags": 0
            }))
            .into_response()
        }
        (m, t) => {
            w.violations.push(format!(
                "{m} {t}: documented, but the bot has no business calling it"
            ));
            discord_error(StatusCode::FORBIDDEN, 50001, "Missing Access")
        }
    }
}

/// `POST /channels/{c}/messages`: checks the channel, the nonce and the reply, then creates.
fn create_message(
    sh: &Shared,
    w: &mut World,
    channel: u64,
    body: &Value,
    now: Instant,
) -> Response {
    let known = channel == CHANNEL || channel == OTHER_CHANNEL || w.threads.contains_key(&channel);
    if !known {
        return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
    }
    let content = body["content"].as_str().unwrap_or("").to_owned();
    let nonce = body.get("nonce").filter(|n| !n.is_null()).cloned();
    let enforced = nonce.is_some() && body["enforce_nonce"] == json!(true);
    let key = nonce.as_ref().map(|n| (channel, n.to_string()));
    if let Some(earlier) = key
        .as_ref()
        .filter(|_| enforced)
        .and_then(|k| w.nonces.get(k))
    {
        if now < earlier.1 + NONCE_WINDOW {
            if let Some(m) = w.messages.get(&earlier.0).cloned() {
                w.nonce_hits += 1;
                return axum::Json(message_json(&m, &bot_person().user_json())).into_response();
            }
        }
    }
    let reply_to = match reply_target(w, channel, body) {
        Ok(r) => r,
        Err(refused) => return refused.into_response(),
    };
    if !enforced {
        w.violations.push(format!(
            "message created without nonce + enforce_nonce: {content:.60}"
        ));
    }
    content_ok(w, &content, "message");
    let allowed = body.get("allowed_mentions").cloned();
    if allowed.is_none() {
        w.violations
            .push(format!("message without allowed_mentions: {content:.60}"));
    }
    let id = sh.snowflake();
    if let Some(k) = key.filter(|_| enforced) {
        w.nonces.insert(k, (id, now));
    }
    let m = Msg {
        id,
        channel,
        pings: pings(&content, allowed.as_ref()),
        versions: vec![content.clone()],
        content,
        allowed_mentions: allowed,
        reply_to,
        nonce,
    };
    let out = message_json(&m, &bot_person().user_json());
    if let Some(files) = w.upload.take() {
        w.files.insert(id, files);
    }
    if let Some(rows) = body.get("components").filter(|c| !c.is_null()) {
        // Discord: action rows (type 1) of at most 5 buttons (type 2); a non-link button needs
        // a custom_id of 1–100 characters and a label of at most 80.
        let ok = rows.as_array().is_some_and(|rows| {
            rows.len() <= 5
                && rows.iter().all(|r| {
                    r["type"] == 1
                        && r["components"].as_array().is_some_and(|bs| {
                            bs.len() <= 5
                                && bs.iter().all(|b| {
                                    let id = b["custom_id"].as_str().unwrap_or("");
                                    b["type"] == 2
                                        && (1..=100).contains(&id.chars().count())
                                        && b["label"]
                                            .as_str()
                                            .is_some_and(|l| l.chars().count() <= 80)
                                })
                        })
                })
        });
        if !ok {
            w.violations
                .push(format!("message components break Discord's rules: {rows}"));
        }
        w.components.insert(id, rows.clone());
    }
    w.messages.insert(id, m);
    w.order.push(id);
    axum::Json(out).into_response()
}

/// The message a create replies to. A reference to a message that is not in the referenced
/// channel fails the create unless `fail_if_not_exists` is false (then it is a plain message).
fn reply_target(w: &World, channel: u64, body: &Value) -> Result<Option<u64>, UnknownReference> {
    let Some(r) = body.get("message_reference").filter(|r| !r.is_null()) else {
        return Ok(None);
    };
    let id: u64 = r["message_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let in_channel: u64 = r["channel_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(channel);
    if w.messages.get(&id).is_some_and(|m| m.channel == in_channel) {
        return Ok(Some(id));
    }
    if r["fail_if_not_exists"] == json!(false) {
        return Ok(None);
    }
    Err(UnknownReference)
}

/// A reply to a message that is not there.
struct UnknownReference;

impl IntoResponse for UnknownReference {
    fn into_response(self) -> Response {
        invalid_form_body(
            "message_reference",
            "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
            "Unknown message",
        )
    }
}

/// `PATCH /channels/{thread}`: the bot may reopen (or close) its own thread unless a moderator
/// locked it; other changes are none of its business.
fn edit_thread(w: &mut World, id: u64, body: &Value) -> Response {
    let others: Vec<&String> = body
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "archived").collect())
        .unwrap_or_default();
    if !others.is_empty() {
        let v = format!("PATCH thread {id} with fields {others:?}: the bot only (un)archives");
        w.violations.push(v);
    }
    let t = w.threads.get_mut(&id).expect("checked by the caller");
    if let Some(archived) = body["archived"].as_bool() {
        if t.locked {
            return discord_error(StatusCode::FORBIDDEN, 50013, "Missing Permissions");
        }
        t.archived = archived;
    }
    axum::Json(thread_json(id, t)).into_response()
}
