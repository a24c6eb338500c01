//! Interaction replies, and helpers for every message the bot sends. Every message carries `allowed_mentions` naming exactly the people it
//! means to ping (usually nobody), so echoed text can never ping `@everyone`, `@here` or a role.
//! Content is capped at Discord's 2,000 characters. Errors are described without their URL,
//! which for interaction routes contains the interaction token.

use serenity::all::{
    ButtonStyle, ChannelId, CommandInteraction, ComponentInteraction, CreateActionRow,
    CreateAllowedMentions, CreateButton, CreateInteractionResponse,
    CreateInteractionResponseMessage, EditInteractionResponse, GuildId, Http, HttpError, Member,
    User, UserId,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Discord's limit for a message's content, in characters.
pub const MAX_CONTENT: usize = 2000;

/// Mentions allowed in a message: none by `parse`, only these users explicitly.
pub fn only(users: &[UserId]) -> CreateAllowedMentions {
    CreateAllowedMentions::new()
        .users(users.iter().copied())
        .empty_roles()
        .replied_user(false)
}

/// Caps text at Discord's limit, marking the cut.
pub fn fit(text: &str) -> String {
    if text.chars().count() <= MAX_CONTENT {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(MAX_CONTENT - 1).collect();
    s.push('…');
    s
}

/// A send error fit for logs and people: status and Discord's code, never the URL.
pub fn describe(err: &serenity::Error) -> String {
    match err {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => format!(
            "Discord answered {} (code {}: {})",
            r.status_code.as_u16(),
            r.error.code,
            super::super::render::sanitize(&r.error.message, 200)
        ),
        serenity::Error::Http(HttpError::Request(e)) => {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            format!("cannot reach Discord ({kind})")
        }
        other => {
            let text = other.to_string();
            // Strip anything URL-like, which could hold an interaction token.
            let cut = text.find("http").map_or(text.as_str(), |i| &text[..i]);
            format!("Discord request failed: {}", cut.trim())
        }
    }
}

fn transient(err: &serenity::Error) -> bool {
    match err {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => {
            r.status_code.as_u16() == 429 || r.status_code.is_server_error()
        }
        serenity::Error::Http(HttpError::Request(_)) => true,
        _ => false,
    }
}

/// Retries transient failures (5xx, 429, connection errors) a bounded number of times.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> serenity::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = serenity::Result<T>>,
{
    const BACKOFF: [Duration; 3] = [
        Duration::from_millis(250),
        Duration::from_secs(1),
        Duration::from_secs(3),
    ];
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && attempt < BACKOFF.len() => {
                tracing::warn!(what, attempt, error = %describe(&e), "retrying a Discord request");
                tokio::time::sleep(BACKOFF[attempt]).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Serenity's side: the replies to interactions (which must come within 3 s, so the first is
/// not retried) and reads. Channel messages, reactions and threads go through the outbox and
/// [`super::rest::DiscordRest`].
#[derive(Clone)]
pub struct Poster {
    http: Arc<Http>,
}

impl Poster {
    pub fn new(http: Arc<Http>) -> Self {
        Self { http }
    }

    pub fn http(&self) -> &Arc<Http> {
        &self.http
    }

    /// Answers an interaction at once, visible only to the person (type 4, flag 64).
    pub async fn reply_ephemeral<'a>(
        &self,
        ask: impl Into<Ask<'a>>,
        text: &str,
    ) -> serenity::Result<()> {
        let response = CreateInteractionResponse::Message(
            CreateInteractionResponseMessage::new()
                .content(fit(text))
                .ephemeral(true)
                .allowed_mentions(only(&[])),
        );
        match ask.into() {
            Ask::Command(c) => c.create_response(&self.http, response).await,
            Ask::Component(c) => c.create_response(&self.http, response).await,
        }
    }

    /// Acknowledges an interaction within the 3 s window; the reply stays ephemeral (type 5, flag 64).
    pub async fn defer_ephemeral(&self, cmd: &CommandInteraction) -> serenity::Result<()> {
        cmd.create_response(
            &self.http,
            CreateInteractionResponse::Defer(
                CreateInteractionResponseMessage::new().ephemeral(true),
            ),
        )
        .await
    }

    /// Acknowledges an interaction within the 3 s window; the reply will be seen in the channel
    /// (type 5, no flags).
    pub async fn defer_public(&self, cmd: &CommandInteraction) -> serenity::Result<()> {
        cmd.create_response(
            &self.http,
            CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new()),
        )
        .await
    }

    /// Fills in the deferred reply (the interaction token is valid for 15 minutes).
    pub async fn edit_reply<'a>(
        &self,
        ask: impl Into<Ask<'a>>,
        text: &str,
    ) -> serenity::Result<()> {
        self.edit_reply_with(ask, text, None).await
    }

    /// Fills in the deferred reply with one button under it (e.g. a diagnosis's offered fix).
    pub async fn edit_reply_with<'a>(
        &self,
        ask: impl Into<Ask<'a>>,
        text: &str,
        button: Option<(&str, &str)>,
    ) -> serenity::Result<()> {
        let ask = ask.into();
        let content = fit(text);
        retry("edit_reply", || {
            let mut edit = EditInteractionResponse::new()
                .content(content.clone())
                .allowed_mentions(only(&[]));
            if let Some((custom_id, label)) = button {
                edit = edit.components(vec![CreateActionRow::Buttons(vec![CreateButton::new(
                    custom_id,
                )
                .label(label)
                .style(ButtonStyle::Primary)])]);
            }
            async move {
                match ask {
                    Ask::Command(c) => c.edit_response(&self.http, edit).await,
                    Ask::Component(c) => c.edit_response(&self.http, edit).await,
                }
            }
        })
        .await
        .map(|_| ())
    }
}

/// The interaction being answered: a slash command or a button press.
#[derive(Clone, Copy)]
pub enum Ask<'a> {
    Command(&'a CommandInteraction),
    Component(&'a ComponentInteraction),
}

impl<'a> From<&'a CommandInteraction> for Ask<'a> {
    fn from(c: &'a CommandInteraction) -> Self {
        Ask::Command(c)
    }
}

impl<'a> From<&'a ComponentInteraction> for Ask<'a> {
    fn from(c: &'a ComponentInteraction) -> Self {
        Ask::Component(c)
    }
}

impl Ask<'_> {
    /// For logs: the command's name, or the button's kind.
    pub fn name(&self) -> &str {
        match self {
            Ask::Command(c) => &c.data.name,
            Ask::Component(_) => "button",
        }
    }

    pub fn guild_id(&self) -> Option<GuildId> {
        match self {
            Ask::Command(c) => c.guild_id,
            Ask::Component(c) => c.guild_id,
        }
    }

    pub fn channel_id(&self) -> ChannelId {
        match self {
            Ask::Command(c) => c.channel_id,
            Ask::Component(c) => c.channel_id,
        }
    }

    pub fn member(&self) -> Option<&Member> {
        match self {
            Ask::Command(c) => c.member.as_deref(),
            Ask::Component(c) => c.member.as_ref(),
        }
    }

    pub fn user(&self) -> &User {
        match self {
            Ask::Command(c) => &c.user,
            Ask::Component(c) => &c.user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_mentions_parse_nothing() {
        let v = serde_json::to_value(only(&[UserId::new(42)])).unwrap();
        assert_eq!(v["parse"], serde_json::json!([]));
        assert_eq!(v["users"], serde_json::json!(["42"]));
        assert_eq!(v["roles"], serde_json::json!([]));
    }

    #[test]
    fn fit_caps_at_discords_limit() {
        assert_eq!(fit(&"é".repeat(5000)).chars().count(), MAX_CONTENT);
        assert_eq!(fit("short"), "short");
    }
}
