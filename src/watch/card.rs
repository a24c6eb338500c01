//! The watch's card: who failed to provision, what Okta said, the diagnosis and the fix it
//! offers; which verdicts make one; and the console's text for a pass and the open findings.

use super::{Pass, WatchError};
use crate::chat::render::sanitize;
use crate::directory::okta::LogEvent;
use crate::pipeline::diagnose::{Diagnosis, Fix, Verdict};
use crate::store::Store;

/// Discord rejects messages over 2,000 characters.
const DISCORD_LIMIT: usize = 2000;

/// Whether a verdict makes a card. The mismatches the bot repairs (Entra missing the ID, the two
/// differ) do, and so do the mismatches a person must fix elsewhere (synced from AD, granted
/// through a group, an admin target): in each the two ImmutableIDs disagree, which is why Okta's
/// push failed. Healthy users make none (the failure is already resolved), nor do users missing
/// in a system or not assigned to the app: their failures are not ImmutableID mismatches, and
/// the watch reports only what this bot is about. Those events are still recorded as handled.
pub fn needs_a_person(v: Verdict) -> bool {
    match v {
        Verdict::EntraMissingId
        | Verdict::Differ
        | Verdict::SyncedFromAd
        | Verdict::AssignedThroughGroup
        | Verdict::AdminTarget => true,
        Verdict::Healthy
        | Verdict::OktaAppUserMissing
        | Verdict::MissingInEntra
        | Verdict::MissingInOkta => false,
    }
}

/// The offered fix in a few words.
pub fn fix_words(fix: &Fix) -> String {
    match fix {
        Fix::Nothing => "nothing to do".into(),
        Fix::EntraOnly { value } => format!("Entra-only repair to Okta's value {value}"),
        Fix::Full => "the full repair (new ImmutableID in both systems)".into(),
        Fix::Outside => "outside the bot".into(),
    }
}

/// The card, sanitized (Okta's text and directory values are someone else's input) and within
/// one Discord message; the same text is printed by `o365-fixbot watch`.
pub fn card(event: &LogEvent, d: &Diagnosis) -> String {
    let mut out = format!(
        "🔎 Okta could not provision {} to Office 365\n",
        sanitize(&d.upn, 120)
    );
    let said = [
        event.display_message.as_deref(),
        event.outcome.as_ref().and_then(|o| o.reason.as_deref()),
    ]
    .into_iter()
    .flatten()
    .map(|s| sanitize(s, 400))
    .collect::<Vec<_>>()
    .join(": ");
    out.push_str(&format!(
        "Okta said ({}, {}): {}\n",
        sanitize(&event.event_type, 80),
        sanitize(&event.published, 40),
        if said.is_empty() {
            "no message".into()
        } else {
            said
        }
    ));
    out.push_str(&format!("Diagnosis: {}\n", d.verdict.label()));
    out.push_str(&format!(
        "Offered fix: {}. {}",
        sanitize(&fix_words(&d.fix), 160),
        sanitize(&d.why, 700)
    ));
    if matches!(d.fix, Fix::EntraOnly { .. } | Fix::Full) {
        out.push_str(&format!(
            "\nTo repair: /fix-immutable-id user:{} (a second person approves the plan)",
            sanitize(&d.upn, 120)
        ));
    }
    if out.chars().count() > DISCORD_LIMIT {
        out = out.chars().take(DISCORD_LIMIT - 1).collect::<String>() + "…";
    }
    out
}

/// One console pass (`watch: poll`) as the terminal shows it.
pub fn pass_text(pass: &Result<Pass, WatchError>) -> String {
    match pass {
        Ok(p) if p.cards.is_empty() => format!(
            "watch: {} new System Log event(s), nothing for a person to act on.",
            p.events
        ),
        Ok(p) => p
            .cards
            .iter()
            .map(|c| format!("watch (ops channel): {}", c.text.replace('\n', "\n   ")))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!(
            "fixbot: the watch could not finish its pass ({e}); it reads the same events again next time."
        ),
    }
}

/// The open findings for the console's `/fix-status`: user, verdict, since when, offered fix.
pub fn findings_text(store: &Store) -> Vec<String> {
    match store.watch_open_findings() {
        Ok(rows) if rows.is_empty() => vec!["open watch findings: none.".into()],
        Ok(rows) => std::iter::once(format!("open watch findings ({}):", rows.len()))
            .chain(rows.iter().map(|f| {
                format!(
                    "   {} · {} · since {} · offered fix: {}",
                    sanitize(&f.upn, 100),
                    f.verdict,
                    crate::utc::iso(crate::utc::from_ms(f.opened_at_ms)),
                    sanitize(&f.fix, 120)
                )
            }))
            .collect(),
        Err(e) => vec![format!("the watch findings could not be read: {e:#}")],
    }
}
