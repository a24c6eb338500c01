//! The watch's state: its place in the Okta System Log, the events it has handled and the
//! findings it reported. A page's events, findings, cards (outbox rows) and the cursor past it
//! are committed in one transaction, so a crash either loses the whole page (it is read again
//! from the old cursor) or none of it; and events are keyed by uuid, so a page read twice
//! (Okta sent no `next` link, or a changed filter restarted from a time) is handled once.

use super::{now_ms, outbox, NewMessage, Store};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The row format this release writes and reads.
const FORMAT: i64 = 1;

/// Where the watch resumes reading the System Log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WatchCursor {
    /// No page read yet: a polling query starting at `since` (ISO 8601, persistence time).
    Since { since: String },
    /// The `Link: rel="next"` of the last page handled: following it returns exactly the
    /// events persisted after that page.
    Next { link: String },
}

/// The cursor as stored, with the filter it belongs to (a `next` link carries its query's
/// filter, so a changed `watch.event_types` cannot reuse it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCursor {
    pub cursor: WatchCursor,
    pub filter: String,
    pub updated_at_ms: i64,
}

/// One event as handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandledEvent {
    pub uuid: String,
    pub upn: Option<String>,
    pub event_type: String,
    pub published: String,
    /// What became of it (`card`, `finding open`, `healthy`, `not posted: …`, `no user`, …).
    pub outcome: String,
}

/// What one diagnosis says about a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A person must act: open the finding (or keep it open) and post `card` unless the user
    /// already had one this day.
    Open(FindingUpdate),
    /// The user is healthy now: an open finding is closed.
    Healthy { upn: String, why: String },
}

/// A finding as the latest event and diagnosis describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingUpdate {
    pub upn: String,
    pub verdict: String,
    pub fix: String,
    pub why: String,
    pub event_type: String,
    pub display_message: Option<String>,
    pub reason: Option<String>,
    /// The card, as it goes to the channel.
    pub card: String,
    /// The card's fix button, when the bot can do the fix.
    pub components: Option<serde_json::Value>,
}

/// A finding as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingRow {
    pub upn: String,
    pub verdict: String,
    pub fix: String,
    pub why: String,
    pub event_type: String,
    pub display_message: Option<String>,
    pub reason: Option<String>,
    pub opened_at_ms: i64,
    pub last_seen_ms: i64,
    /// The UTC day (`YYYY-MM-DD`) of the last card posted about this user.
    pub last_card_day: Option<String>,
    pub cards: i64,
    pub closed_at_ms: Option<i64>,
    pub closed_why: Option<String>,
}

/// One page's worth of work, committed at once.
#[derive(Debug, Clone)]
pub struct WatchCommit<'a> {
    pub app_id: &'a str,
    pub filter: &'a str,
    /// Where the next read starts.
    pub cursor: &'a WatchCursor,
    pub events: &'a [HandledEvent],
    pub observations: &'a [Observation],
    /// The UTC day now (`YYYY-MM-DD`): one card per user per day.
    pub day: &'a str,
    /// The Discord channel cards are queued for, in this same transaction; `None` when the
    /// caller prints them itself.
    pub channel: Option<u64>,
}

const FINDING_COLUMNS: &str = "display_upn, verdict, fix, why, event_type, display_message, \
     reason, opened_at_ms, last_seen_ms, last_card_day, cards, closed_at_ms, closed_why, format";

fn finding(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<FindingRow>> {
    // A row a later release wrote in a format this one does not know is left alone.
    if r.get::<_, i64>(13)? != FORMAT {
        return Ok(None);
    }
    Ok(Some(FindingRow {
        upn: r.get(0)?,
        verdict: r.get(1)?,
        fix: r.get(2)?,
        why: r.get(3)?,
        event_type: r.get(4)?,
        display_message: r.get(5)?,
        reason: r.get(6)?,
        opened_at_ms: r.get(7)?,
        last_seen_ms: r.get(8)?,
        last_card_day: r.get(9)?,
        cards: r.get(10)?,
        closed_at_ms: r.get(11)?,
        closed_why: r.get(12)?,
    }))
}

/// Whether a repair of `key`'s user succeeded at or after `since_ms`: that closes a finding
/// without waiting for the next event about the user.
const REPAIRED: &str = "EXISTS (SELECT 1 FROM runs r WHERE lower(r.upn) = watch_findings.upn \
     AND r.state = 'succeeded' AND r.updated_at_ms >= watch_findings.opened_at_ms)";

fn key(upn: &str) -> String {
    upn.trim().to_lowercase()
}

fn read_finding(c: &Connection, upn: &str) -> rusqlite::Result<Option<(FindingRow, bool)>> {
    c.query_row(
        &format!("SELECT {FINDING_COLUMNS}, {REPAIRED} FROM watch_findings WHERE upn = ?1"),
        params![key(upn)],
        |r| Ok(finding(r)?.map(|f| (f, r.get::<_, bool>(14).unwrap_or(false)))),
    )
    .optional()
    .map(Option::flatten)
}

/// Applies one observation; returns whether a card is due for it.
fn observe(
    c: &Connection,
    o: &Observation,
    day: &str,
    now: i64,
    channel: Option<u64>,
) -> rusqlite::Result<bool> {
    match o {
        Observation::Healthy { upn, why } => {
            c.execute(
                "UPDATE watch_findings SET closed_at_ms = ?2, closed_why = ?3, last_seen_ms = ?2
                 WHERE upn = ?1 AND closed_at_ms IS NULL",
                params![key(upn), now, why],
            )?;
            Ok(false)
        }
        Observation::Open(f) => {
            let existing = read_finding(c, &f.upn)?;
            let open = existing
                .as_ref()
                .is_some_and(|(row, repaired)| row.closed_at_ms.is_none() && !repaired);
            // One card per user per day, whether the finding is new, still open or reopened.
            let due = existing
                .as_ref()
                .is_none_or(|(row, _)| row.last_card_day.as_deref() != Some(day));
            let opened_at = match &existing {
                Some((row, _)) if open => row.opened_at_ms,
                _ => now,
            };
            c.execute(
                "INSERT INTO watch_findings (upn, format, display_upn, verdict, fix, why, event_type,
                    display_message, reason, opened_at_ms, last_seen_ms, last_card_day, cards)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT(upn) DO UPDATE SET format = ?2, display_upn = ?3, verdict = ?4,
                    fix = ?5, why = ?6, event_type = ?7, display_message = ?8, reason = ?9,
                    opened_at_ms = ?10, last_seen_ms = ?11, last_card_day = ?12,
                    cards = watch_findings.cards + ?13, closed_at_ms = NULL, closed_why = NULL",
                params![
                    key(&f.upn),
                    FORMAT,
                    f.upn,
                    f.verdict,
                    f.fix,
                    f.why,
                    f.event_type,
                    f.display_message,
                    f.reason,
                    opened_at,
                    now,
                    if due {
                        Some(day.to_owned())
                    } else {
                        existing.as_ref().and_then(|(r, _)| r.last_card_day.clone())
                    },
                    i64::from(due)
                ],
            )?;
            if due {
                if let Some(channel) = channel {
                    outbox::put(
                        c,
                        &NewMessage {
                            // Also the outbox's own guard: a second put of this key is a no-op.
                            key: format!("watch:{}:{day}", key(&f.upn)),
                            run: None,
                            channel,
                            fallback: None,
                            reply_to: None,
                            edits: None,
                            content: f.card.clone(),
                            pings: Vec::new(),
                            due_at_ms: now,
                            mode: super::Put::Once,
                            components: f.components.clone(),
                        },
                    )?;
                }
            }
            Ok(due)
        }
    }
}

impl Store {
    /// The watch's cursor for `app_id`, if it has one.
    pub fn watch_cursor(&self, app_id: &str) -> anyhow::Result<Option<StoredCursor>> {
        let row: Option<(i64, String, String, i64)> = self.with(|c| {
            c.query_row(
                "SELECT format, cursor_json, filter, updated_at_ms FROM watch_cursor WHERE app_id = ?1",
                params![app_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
        })?;
        let Some((format, json, filter, updated_at_ms)) = row else {
            return Ok(None);
        };
        anyhow::ensure!(
            format == FORMAT,
            "the watch cursor was written in format {format}, which this release does not read"
        );
        let cursor = serde_json::from_str(&json)
            .map_err(|e| anyhow::anyhow!("the stored watch cursor is unreadable: {e}"))?;
        Ok(Some(StoredCursor {
            cursor,
            filter,
            updated_at_ms,
        }))
    }

    /// Stores where the watch starts, before it has read anything (so a first poll that never
    /// completes does not move its `since` on the next start).
    pub fn watch_set_cursor(
        &self,
        app_id: &str,
        filter: &str,
        cursor: &WatchCursor,
    ) -> anyhow::Result<()> {
        self.tx(|c| save_cursor(c, app_id, filter, cursor))
    }

    /// Which of `uuids` were handled already.
    pub fn watch_handled(&self, uuids: &[&str]) -> anyhow::Result<HashSet<String>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT 1 FROM watch_events WHERE uuid = ?1")?;
            let mut seen = HashSet::new();
            for u in uuids {
                if stmt.exists(params![u])? {
                    seen.insert((*u).to_owned());
                }
            }
            Ok(seen)
        })
    }

    /// Commits one page: its events, the findings and the cards they call for, and the cursor
    /// past it. Returns the users (as given) that are due a card; with a channel, their cards
    /// are queued in the outbox in this same transaction.
    pub fn watch_commit(&self, page: &WatchCommit<'_>) -> anyhow::Result<Vec<String>> {
        let now = now_ms();
        self.tx(|c| {
            for e in page.events {
                c.execute(
                    "INSERT INTO watch_events (uuid, upn, event_type, published, outcome, handled_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(uuid) DO NOTHING",
                    params![e.uuid, e.upn, e.event_type, e.published, e.outcome, now],
                )?;
            }
            let mut carded = Vec::new();
            for o in page.observations {
                if observe(c, o, page.day, now, page.channel)? {
                    if let Observation::Open(f) = o {
                        carded.push(f.upn.clone());
                    }
                }
            }
            save_cursor(c, page.app_id, page.filter, page.cursor)?;
            Ok(carded)
        })
    }

    /// Findings still open: not closed by a healthy diagnosis, and no repair of the user has
    /// succeeded since the finding was opened. Oldest first.
    pub fn watch_open_findings(&self) -> anyhow::Result<Vec<FindingRow>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {FINDING_COLUMNS} FROM watch_findings
                 WHERE closed_at_ms IS NULL AND NOT {REPAIRED} ORDER BY opened_at_ms, upn"
            ))?;
            let rows = stmt.query_map([], finding)?;
            rows.filter_map(Result::transpose).collect()
        })
    }

    /// One user's finding, open or closed.
    pub fn watch_finding(&self, upn: &str) -> anyhow::Result<Option<FindingRow>> {
        Ok(self.with(|c| read_finding(c, upn))?.map(|(f, _)| f))
    }

    /// How many events the watch has handled (each once).
    pub fn watch_events_handled(&self) -> anyhow::Result<u64> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM watch_events", [], |r| r.get(0)))
    }
}

fn save_cursor(
    c: &Connection,
    app_id: &str,
    filter: &str,
    cursor: &WatchCursor,
) -> rusqlite::Result<()> {
    let json = serde_json::to_string(cursor)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    c.execute(
        "INSERT INTO watch_cursor (app_id, format, cursor_json, filter, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(app_id) DO UPDATE SET format = ?2, cursor_json = ?3, filter = ?4,
            updated_at_ms = ?5",
        params![app_id, FORMAT, json, filter, now_ms()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{new_run, temp_store};
    use super::*;
    use crate::domain::RunState;

    fn open(upn: &str) -> Observation {
        Observation::Open(FindingUpdate {
            upn: upn.into(),
            verdict: "Entra is missing the ImmutableID".into(),
            fix: "the full repair".into(),
            why: "because".into(),
            event_type: "application.provision.user.push".into(),
            display_message: None,
            reason: None,
            card: format!("card for {upn}"),
            components: None,
        })
    }

    fn commit(s: &Store, obs: &[Observation], day: &str) -> Vec<String> {
        s.watch_commit(&WatchCommit {
            app_id: "app",
            filter: "f",
            cursor: &WatchCursor::Next { link: "l".into() },
            events: &[],
            observations: obs,
            day,
            channel: Some(7),
        })
        .unwrap()
    }

    #[test]
    fn one_card_per_user_per_day_and_a_repair_closes_the_finding() {
        let (s, _d) = temp_store();
        assert_eq!(commit(&s, &[open("A@x.com")], "2026-01-01"), ["A@x.com"]);
        assert!(commit(&s, &[open("a@x.com")], "2026-01-01").is_empty());
        assert_eq!(s.outbox_pending_in(7).unwrap().len(), 1);
        assert_eq!(commit(&s, &[open("a@x.com")], "2026-01-02"), ["a@x.com"]);
        assert_eq!(s.watch_open_findings().unwrap().len(), 1);
        s.insert_run(&new_run("r1", "A@x.com")).unwrap();
        s.set_run_summary("r1", RunState::Succeeded, &serde_json::json!({}))
            .unwrap();
        assert!(s.watch_open_findings().unwrap().is_empty());
        commit(
            &s,
            &[Observation::Healthy {
                upn: "a@x.com".into(),
                why: "healthy".into(),
            }],
            "2026-01-02",
        );
        assert!(s
            .watch_finding("a@x.com")
            .unwrap()
            .unwrap()
            .closed_at_ms
            .is_some());
        assert_eq!(
            s.watch_cursor("app").unwrap().unwrap().cursor,
            WatchCursor::Next { link: "l".into() }
        );
    }
}
