//! `check-config --online`, the Discord part: read-only REST calls that show, per check, ok or
//! the exact missing piece. All of them are `GET`s with the bot token:
//!
//! - `GET /users/@me`: the token is valid (and which bot it is)
//! - `GET /guilds/{g}`: each configured guild is reachable (the bot is in it); its roles
//! - `GET /guilds/{g}/members/{bot}`: the bot's roles there
//! - `GET /channels/{c}`: each configured channel exists, is a text channel, is in a configured
//!   guild, and its permission overwrites
//!
//! The bot's permissions in each channel are computed as Discord does: the guild owner and
//! `ADMINISTRATOR` have all; otherwise `@everyone`'s permissions and the bot's roles', then the
//! channel's `@everyone` overwrite, its role overwrites (all denies, then all allows), and its
//! member overwrite. The permissions the bot needs are [`NEEDED`]; it sends no embeds, so it
//! does not need `EMBED_LINKS`.
//!
//! Requests go to `discord.api_base` when set (like `serve`), else `https://discord.com`; with
//! reqwest rather than serenity's `Http`, so that each answer's status and Discord error code
//! can be reported as they are.

use crate::config::DiscordSettings;
use crate::ops::check_report::Check;
use crate::secret::Secret;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

pub const ADMINISTRATOR: u64 = 1 << 3;
pub const ADD_REACTIONS: u64 = 1 << 6;
pub const VIEW_CHANNEL: u64 = 1 << 10;
pub const SEND_MESSAGES: u64 = 1 << 11;
pub const ATTACH_FILES: u64 = 1 << 15;
pub const READ_MESSAGE_HISTORY: u64 = 1 << 16;
pub const CREATE_PUBLIC_THREADS: u64 = 1 << 35;
pub const SEND_MESSAGES_IN_THREADS: u64 = 1 << 38;

/// The channel permissions the bot needs, by Discord's names, and what for.
pub const NEEDED: &[(&str, u64, &str)] = &[
    ("VIEW_CHANNEL", VIEW_CHANNEL, "to see the channel at all"),
    ("SEND_MESSAGES", SEND_MESSAGES, "to post the plan"),
    (
        "ADD_REACTIONS",
        ADD_REACTIONS,
        "to add ✅ and ❌ to the plan",
    ),
    (
        "READ_MESSAGE_HISTORY",
        READ_MESSAGE_HISTORY,
        "to react, and to read reactions back after a restart",
    ),
    (
        "CREATE_PUBLIC_THREADS",
        CREATE_PUBLIC_THREADS,
        "to start the run's thread",
    ),
    (
        "SEND_MESSAGES_IN_THREADS",
        SEND_MESSAGES_IN_THREADS,
        "to post each step in the thread",
    ),
    (
        "ATTACH_FILES",
        ATTACH_FILES,
        "to attach a bulk repair's CSV to its plan and summary",
    ),
];

/// Channel types that take a plan message with a thread: text and announcement channels.
const TEXT_CHANNELS: &[u64] = &[0, 5];

/// A failed request, fit to show: HTTP status and Discord's error code and message.
struct Failure {
    status: Option<u16>,
    code: Option<u64>,
    text: String,
}

impl Failure {
    fn describe(&self) -> String {
        match (self.status, self.code) {
            (Some(s), Some(c)) => format!("Discord answered {s} (code {c}: {})", self.text),
            (Some(s), None) => format!("Discord answered {s}"),
            _ => self.text.clone(),
        }
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Api {
    async fn get(&self, path: &str) -> Result<Value, Failure> {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .send()
            .await
            .map_err(|e| Failure {
                status: None,
                code: None,
                text: format!(
                    "cannot reach Discord at {} ({})",
                    self.base,
                    if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "connection failed"
                    } else {
                        "request failed"
                    }
                ),
            })?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(Failure {
            status: Some(status.as_u16()),
            code: body["code"].as_u64(),
            text: crate::chat::render::sanitize(body["message"].as_str().unwrap_or(""), 200),
        })
    }
}

/// A snowflake or permission bit set, as Discord sends it (a string, sometimes a number).
fn num(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The bot's permissions in the guild (before channel overwrites).
pub fn base_permissions(guild: &Value, member_roles: &[u64], user: u64) -> u64 {
    let guild_id = num(&guild["id"]).unwrap_or(0);
    if num(&guild["owner_id"]) == Some(user) {
        return u64::MAX;
    }
    let roles: HashMap<u64, u64> = guild["roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| Some((num(&r["id"])?, num(&r["permissions"]).unwrap_or(0))))
                .collect()
        })
        .unwrap_or_default();
    let mut perms = roles.get(&guild_id).copied().unwrap_or(0);
    for r in member_roles {
        perms |= roles.get(r).copied().unwrap_or(0);
    }
    if perms & ADMINISTRATOR != 0 {
        return u64::MAX;
    }
    perms
}

/// Applies a channel's `permission_overwrites` to `base`, in Discord's order.
pub fn channel_permissions(
    base: u64,
    guild_id: u64,
    overwrites: &[Value],
    member_roles: &[u64],
    user: u64,
) -> u64 {
    if base & ADMINISTRATOR != 0 {
        return u64::MAX;
    }
    let bits = |o: &Value| (num(&o["allow"]).unwrap_or(0), num(&o["deny"]).unwrap_or(0));
    let mut perms = base;
    if let Some(o) = overwrites.iter().find(|o| num(&o["id"]) == Some(guild_id)) {
        let (allow, deny) = bits(o);
        perms = (perms & !deny) | allow;
    }
    let (mut allow, mut deny) = (0, 0);
    for o in overwrites.iter().filter(|o| {
        num(&o["type"]) == Some(0)
            && num(&o["id"]).is_some_and(|id| id != guild_id && member_roles.contains(&id))
    }) {
        let (a, d) = bits(o);
        allow |= a;
        deny |= d;
    }
    perms = (perms & !deny) | allow;
    if let Some(o) = overwrites
        .iter()
        .find(|o| num(&o["type"]) == Some(1) && num(&o["id"]) == Some(user))
    {
        let (allow, deny) = bits(o);
        perms = (perms & !deny) | allow;
    }
    perms
}

/// What the bot needs in a guild to judge its channels.
struct GuildFacts {
    guild: Value,
    bot_roles: Vec<u64>,
}

/// Checks the token, each guild, each channel and the bot's permissions there, read-only.
pub async fn check_discord(settings: &DiscordSettings, token: &Secret) -> Vec<Check> {
    check_discord_and_watch(settings, token, None).await
}

/// What the watch's channel needs: it only posts cards there.
pub const WATCH_NEEDED: &[(&str, u64, &str)] = &[
    ("VIEW_CHANNEL", VIEW_CHANNEL, "to see the channel at all"),
    ("SEND_MESSAGES", SEND_MESSAGES, "to post the watch's cards"),
];

/// [`check_discord`], and the watch's channel (`watch.channel_id`) when the watch is on.
pub async fn check_discord_and_watch(
    settings: &DiscordSettings,
    token: &Secret,
    watch_channel: Option<u64>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let root = settings
        .api_base
        .as_ref()
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_else(|| "https://discord.com".to_owned());
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!(
            "DiscordBot (https://github.com/o365-fixbot, ",
            env!("CARGO_PKG_VERSION"),
            ")"
        ))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::failed(
                "discord",
                format!("cannot build an HTTP client: {e}"),
            ));
            return out;
        }
    };
    let api = Api {
        client,
        base: format!("{root}/api/v10"),
        auth: format!("Bot {}", token.expose()),
    };

    // The token.
    let me = match api.get("/users/@me").await {
        Ok(me) => me,
        Err(f) => {
            let why = match f.status {
                Some(401) => format!("Discord rejected the bot token ({}); copy the token from the Developer Portal (Bot → Reset Token) into FIXBOT_DISCORD_TOKEN or FIXBOT_DISCORD_TOKEN_FILE", f.describe()),
                _ => f.describe(),
            };
            out.push(Check::failed("discord token", why));
            return out;
        }
    };
    let Some(bot_id) = num(&me["id"]) else {
        out.push(Check::failed(
            "discord token",
            "GET /users/@me answered without a user id",
        ));
        return out;
    };
    if me["bot"].as_bool() != Some(true) {
        out.push(Check::failed(
            "discord token",
            format!("the token belongs to user {bot_id}, which is not a bot account; use the application's bot token"),
        ));
        return out;
    }
    out.push(Check::ok(
        "discord token",
        format!(
            "valid: bot {} (id {bot_id})",
            crate::chat::render::sanitize(me["username"].as_str().unwrap_or("?"), 64)
        ),
    ));

    // Each guild, and the bot's roles in it.
    let mut guilds: HashMap<u64, GuildFacts> = HashMap::new();
    if settings.guild_ids.is_empty() {
        out.push(Check::failed(
            "discord guilds",
            "discord.guild_ids is empty: name the guild(s) the bot serves",
        ));
    }
    for &g in &settings.guild_ids {
        let name = format!("discord guild {g}");
        let guild = match api.get(&format!("/guilds/{g}")).await {
            Ok(v) => v,
            Err(f) => {
                let why = match (f.status, f.code) {
                    (Some(403 | 404), _) => format!("guild {g} is not reachable: the bot is not a member, or the id is wrong ({}); invite the bot with the `bot` and `applications.commands` scopes", f.describe()),
                    _ => format!("guild {g}: {}", f.describe()),
                };
                out.push(Check::failed(name, why));
                continue;
            }
        };
        let bot_roles = match api.get(&format!("/guilds/{g}/members/{bot_id}")).await {
            Ok(m) => m["roles"]
                .as_array()
                .map(|a| a.iter().filter_map(num).collect())
                .unwrap_or_default(),
            Err(f) => {
                out.push(Check::failed(
                    name,
                    format!(
                        "guild {g}: the bot's roles cannot be read ({})",
                        f.describe()
                    ),
                ));
                continue;
            }
        };
        out.push(Check::ok(
            name,
            format!(
                "reachable: {}",
                crate::chat::render::sanitize(guild["name"].as_str().unwrap_or("?"), 100)
            ),
        ));
        guilds.insert(g, GuildFacts { guild, bot_roles });
    }

    // Each channel: exists, is a text channel in a configured guild, and the bot may do its job.
    if settings.channel_ids.is_empty() {
        out.push(Check::failed(
            "discord channels",
            "discord.channel_ids is empty: name the channel(s) that take commands",
        ));
    }
    let channels = settings
        .channel_ids
        .iter()
        .map(|&c| (c, "discord channel", NEEDED))
        .chain(watch_channel.map(|c| (c, "watch channel", WATCH_NEEDED)));
    for (c, label, needed) in channels {
        let name = format!("{label} {c}");
        let channel = match api.get(&format!("/channels/{c}")).await {
            Ok(v) => v,
            Err(f) => {
                let why = match f.status {
                    Some(404) => format!("channel {c} does not exist ({})", f.describe()),
                    Some(403) => format!(
                        "channel {c}: the bot lacks VIEW_CHANNEL (it cannot see the channel: {})",
                        f.describe()
                    ),
                    _ => format!("channel {c}: {}", f.describe()),
                };
                out.push(Check::failed(name, why));
                continue;
            }
        };
        let Some(guild_id) = num(&channel["guild_id"]) else {
            out.push(Check::failed(
                name,
                format!(
                    "channel {c} is not in a guild (a direct message?); name a server text channel"
                ),
            ));
            continue;
        };
        if !settings.guild_ids.contains(&guild_id) {
            out.push(Check::failed(
                name,
                format!("channel {c} is in guild {guild_id}, which is not in discord.guild_ids"),
            ));
            continue;
        }
        let kind = channel["type"].as_u64().unwrap_or(u64::MAX);
        if !TEXT_CHANNELS.contains(&kind) {
            out.push(Check::failed(
                name,
                format!("channel {c} is of type {kind}, not a text or announcement channel: {} need one", if needed == WATCH_NEEDED { "the watch's cards" } else { "plans and their threads" }),
            ));
            continue;
        }
        let Some(facts) = guilds.get(&guild_id) else {
            out.push(Check::failed(
                name,
                format!("channel {c}: its permissions cannot be checked because guild {guild_id} is not reachable (see above)"),
            ));
            continue;
        };
        let base = base_permissions(&facts.guild, &facts.bot_roles, bot_id);
        let overwrites = channel["permission_overwrites"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let perms = channel_permissions(base, guild_id, &overwrites, &facts.bot_roles, bot_id);
        let missing: Vec<String> = needed
            .iter()
            .filter(|(_, bit, _)| perms & bit == 0)
            .map(|(n, bit, why)| {
                let where_ = if base & bit != 0 {
                    "denied by this channel's permission overwrites"
                } else {
                    "not granted by @everyone or any of the bot's roles"
                };
                format!("{n} ({why}; {where_})")
            })
            .collect();
        if missing.is_empty() {
            out.push(Check::ok(
                name,
                format!(
                    "#{} in guild {guild_id}: the bot has every permission it needs",
                    crate::chat::render::sanitize(channel["name"].as_str().unwrap_or("?"), 100)
                ),
            ));
        } else {
            out.push(Check::failed(
                name,
                format!("channel {c}: the bot lacks {}", missing.join(", ")),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const G: u64 = 10;
    const BOT: u64 = 99;
    const ROLE: u64 = 20;

    fn guild(everyone: u64, role: u64, owner: u64) -> Value {
        json!({"id": G.to_string(), "owner_id": owner.to_string(), "roles": [
            {"id": G.to_string(), "permissions": everyone.to_string()},
            {"id": ROLE.to_string(), "permissions": role.to_string()},
        ]})
    }

    #[test]
    fn roles_add_up_and_administrator_or_owner_have_everything() {
        let g = guild(VIEW_CHANNEL, SEND_MESSAGES, 1);
        assert_eq!(
            base_permissions(&g, &[ROLE], BOT),
            VIEW_CHANNEL | SEND_MESSAGES
        );
        assert_eq!(base_permissions(&g, &[], BOT), VIEW_CHANNEL);
        let admin = guild(0, ADMINISTRATOR, 1);
        assert_eq!(base_permissions(&admin, &[ROLE], BOT), u64::MAX);
        let owned = guild(0, 0, BOT);
        assert_eq!(base_permissions(&owned, &[], BOT), u64::MAX);
    }

    #[test]
    fn overwrites_apply_everyone_then_roles_then_member() {
        let base = VIEW_CHANNEL | SEND_MESSAGES | ADD_REACTIONS;
        let ow = |id: u64, kind: u64, allow: u64, deny: u64| json!({"id": id.to_string(), "type": kind, "allow": allow.to_string(), "deny": deny.to_string()});
        // @everyone denies reactions; the bot's role allows them back.
        let o = vec![ow(G, 0, 0, ADD_REACTIONS), ow(ROLE, 0, ADD_REACTIONS, 0)];
        assert_eq!(channel_permissions(base, G, &o, &[ROLE], BOT), base);
        // A role deny loses to a role allow of another role; a member deny wins over both.
        let o = vec![
            ow(ROLE, 0, 0, SEND_MESSAGES),
            ow(21, 0, SEND_MESSAGES, 0),
            ow(BOT, 1, 0, VIEW_CHANNEL),
        ];
        let p = channel_permissions(base, G, &o, &[ROLE, 21], BOT);
        assert_eq!(p, SEND_MESSAGES | ADD_REACTIONS);
        // Overwrites for roles the bot does not have do nothing; administrators ignore them.
        let o = vec![ow(22, 0, 0, VIEW_CHANNEL)];
        assert_eq!(channel_permissions(base, G, &o, &[ROLE], BOT), base);
        assert_eq!(
            channel_permissions(u64::MAX, G, &[ow(G, 0, 0, VIEW_CHANNEL)], &[], BOT),
            u64::MAX
        );
    }
}
