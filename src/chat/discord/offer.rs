//! A diagnosis's offered fix as a button, and what pressing it does: the plan exactly as
//! `/fix-immutable-id` would make it, with the mode and value the diagnosis chose, awaiting a
//! second person's approval as always.
//!
//! The button's `custom_id` carries everything (`fix:<e|f>:<value>:<Entra object id>`, at most
//! 67 of Discord's 100 characters), so a button still works after a restart and nothing is kept
//! per diagnosis. The object id, not the UPN, names the user: it always fits, and the plan is
//! made for the UPN Entra holds at the press.

use super::bot::Bot;
use super::interactions::{author, FixAsk};
use super::post::Poster;
use crate::chat::render::sanitize;
use crate::domain::{EntraObjectId, ImmutableId};
use crate::pipeline::diagnose::{Diagnosis, Fix};
use crate::pipeline::ModeChoice;
use serenity::all::ComponentInteraction;
use std::sync::Arc;

const PREFIX: &str = "fix:";

/// What a button asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub mode: ModeChoice,
    /// Okta's value, for the Entra-only fix.
    pub value: Option<ImmutableId>,
    pub entra_id: EntraObjectId,
}

impl Offer {
    pub fn custom_id(&self) -> String {
        let m = if self.mode == ModeChoice::EntraOnly {
            'e'
        } else {
            'f'
        };
        let v = self.value.as_ref().map_or("", |v| v.as_str());
        format!("{PREFIX}{m}:{v}:{}", self.entra_id)
    }

    /// `None` for anything this bot did not make (a custom id is client-supplied text).
    pub fn parse(custom_id: &str) -> Option<Self> {
        let mut parts = custom_id.strip_prefix(PREFIX)?.splitn(3, ':');
        let mode = match parts.next()? {
            "e" => ModeChoice::EntraOnly,
            "f" => ModeChoice::Full,
            _ => return None,
        };
        let value = match parts.next()? {
            "" => None,
            v => Some(ImmutableId::parse_value(v).ok()?),
        };
        let entra_id = EntraObjectId::parse(parts.next()?).ok()?;
        if (mode == ModeChoice::EntraOnly) != value.is_some() {
            return None;
        }
        Some(Self {
            mode,
            value,
            entra_id,
        })
    }
}

/// The button for a diagnosis whose fix the bot can do: (custom id, label).
pub fn button(d: &Diagnosis) -> Option<(String, &'static str)> {
    let entra_id = EntraObjectId::parse(&d.entra.as_ref()?.object_id).ok()?;
    let (mode, value, label) = match &d.fix {
        Fix::EntraOnly { value } => (
            ModeChoice::EntraOnly,
            Some(ImmutableId::parse_value(value).ok()?),
            "🔧 Plan the Entra-only fix",
        ),
        Fix::Full => (ModeChoice::Full, None, "🔧 Plan the full repair"),
        Fix::Nothing | Fix::Outside => return None,
    };
    let offer = Offer {
        mode,
        value,
        entra_id,
    };
    Some((offer.custom_id(), label))
}

/// The button as message components (one action row with one primary button), for a message
/// sent through the REST client or the outbox (a watch card).
pub fn components(d: &Diagnosis) -> Option<serde_json::Value> {
    let (custom_id, label) = button(d)?;
    Some(serde_json::json!([{
        "type": 1,
        "components": [{"type": 2, "style": 1, "label": label, "custom_id": custom_id}]
    }]))
}

impl Bot {
    /// A button press: only a diagnosis's fix button is known.
    pub async fn on_component(self: &Arc<Self>, poster: &Poster, press: ComponentInteraction) {
        if !self.first_sight(press.id.get()) {
            return;
        }
        let ask = (&press).into();
        let (user, name, roles) = author(ask);
        if self.lifecycle.draining() {
            return self
                .reply(poster, ask, super::interactions::RESTARTING)
                .await;
        }
        if !self.started() {
            return self
                .reply(poster, ask, "⏳ the bot has just restarted and is settling the runs it left; try again in a minute. Nothing was done.")
                .await;
        }
        if let Err(wait) = self.limits.check_user(user.get()) {
            let text = format!(
                "⏱ you are sending commands too fast; try again {}. Nothing was done.",
                super::limits::retry_in(wait)
            );
            return self.reply(poster, ask, &text).await;
        }
        if let Err(why) = self.place_ok(press.guild_id, press.channel_id) {
            return self.reply(poster, ask, &format!("⛔ {why}")).await;
        }
        let Some(offer) = Offer::parse(&press.data.custom_id) else {
            return self
                .reply(
                    poster,
                    ask,
                    "⛔ this button is not one this bot knows. Nothing was done.",
                )
                .await;
        };
        // The UPN Entra holds now: the plan reads everything again from it.
        let upn = match self.engine.graph().user_by_id(&offer.entra_id).await {
            Ok(r) => {
                match r.value {
                    Some(u) => u.user_principal_name,
                    None => return self
                        .reply(
                            poster,
                            ask,
                            "⛔ the diagnosed user no longer exists in Entra. Nothing was done.",
                        )
                        .await,
                }
            }
            Err(e) => {
                let text = format!(
                    "⚠ could not read the user from Microsoft Graph ({}). Nothing was changed; try again in a minute.",
                    sanitize(&e.to_string(), 400)
                );
                return self.reply(poster, ask, &text).await;
            }
        };
        let actor = self.ids.actor(user, &name);
        let value = offer.value.as_ref().map(|v| v.as_str().to_owned());
        let fix = FixAsk {
            upn: &upn,
            immutable_id: value.as_deref(),
            mode: offer.mode,
            reason: Some("fix offered by /diagnose"),
        };
        self.fix(poster, ask, actor, user, &roles, fix).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_button_id_round_trips_and_fits_discords_limit() {
        let offer = Offer {
            mode: ModeChoice::EntraOnly,
            value: Some(ImmutableId::parse_value("zHX2NueB9U6o4l2UDtkEdQ==").unwrap()),
            entra_id: EntraObjectId::parse("8d2e0002-5a1c-4b7e-9f00-000000000002").unwrap(),
        };
        let id = offer.custom_id();
        assert!(id.len() <= 100, "{id}");
        assert_eq!(Offer::parse(&id), Some(offer.clone()));
        let full = Offer {
            mode: ModeChoice::Full,
            value: None,
            ..offer
        };
        assert_eq!(Offer::parse(&full.custom_id()), Some(full));
    }

    #[test]
    fn foreign_or_inconsistent_ids_are_refused() {
        for id in [
            "",
            "fix:",
            "fix:x::8d2e0002-5a1c-4b7e-9f00-000000000002",
            "fix:e::8d2e0002-5a1c-4b7e-9f00-000000000002",
            "fix:f:zHX2NueB9U6o4l2UDtkEdQ==:8d2e0002-5a1c-4b7e-9f00-000000000002",
            "fix:e:not base64:8d2e0002-5a1c-4b7e-9f00-000000000002",
            "fix:f::not-a-guid",
            "approve:run",
        ] {
            assert_eq!(Offer::parse(id), None, "{id}");
        }
    }
}
