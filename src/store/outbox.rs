//! The chat outbox: each row is one message the bot owes a channel or thread, posted once (with
//! a nonce Discord deduplicates on) and then edited to each later revision of its content.
//! A row is pending while Discord has not got its latest revision; the sender in
//! `chat::discord::outbox` delivers pending rows in order per channel, across restarts.

use super::{now_ms, Store};
use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The row format this release writes and reads.
const FORMAT: i64 = 1;

/// Where a message goes when its thread cannot take it: the thread's parent channel, as a reply
/// to the run's plan message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub channel: u64,
    pub reply_to: u64,
}

/// A message to send, or a new revision of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// What this message is (`summary:<run>`, `progress:<run>`, …): a second put with the same
    /// key is a new revision of the same message, never a second message.
    pub key: String,
    pub run: Option<String>,
    pub channel: u64,
    /// Where it goes if `channel` (a thread) cannot take it.
    pub fallback: Option<Fallback>,
    /// Posted as a reply to this message of `channel`.
    pub reply_to: Option<u64>,
    /// A message already in Discord that this is a revision of (e.g. a plan message posted
    /// before the outbox knew it): the first put is then an edit of it, never a new post.
    pub edits: Option<u64>,
    pub content: String,
    /// The only users it may ping.
    pub pings: Vec<u64>,
    /// Not sent before this (coalescing): a pending revision keeps its earlier due time.
    pub due_at_ms: i64,
    pub mode: Put,
    /// Message components (an action row with a button) posted with the message; edits keep
    /// them, as Discord does when an edit does not name them.
    pub components: Option<Value>,
}

/// What a front end may say when a run's outcome is recorded: it is queued in the same
/// transaction as the outcome, so a crash can lose neither without the other.
#[derive(Debug)]
pub struct Finished<'a> {
    pub run_id: &'a str,
    pub summary: &'a Value,
    pub chat_ref: Option<Value>,
    pub plan: Option<Value>,
    pub approvers: Vec<String>,
    /// The audit head once the outcome's own record is in (`seq:hash-prefix`).
    pub audit_head: Option<String>,
}

/// Renders the messages for a finished run; set once by the chat front end.
pub type Announcer = std::sync::Arc<dyn Fn(&Finished<'_>) -> Vec<NewMessage> + Send + Sync>;

/// How a put treats a message already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// A new revision replaces the content (an edit once posted).
    Revise,
    /// Only the first put counts (a message said once, e.g. a summary).
    Once,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    pub run_id: Option<String>,
    pub channel: u64,
    pub fallback: Option<Fallback>,
    pub reply_to: Option<u64>,
    pub content: String,
    pub pings: Vec<u64>,
    pub nonce: String,
    pub revision: i64,
    pub sent_revision: i64,
    pub message_id: Option<u64>,
    pub gone: bool,
    pub due_at_ms: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub components: Option<Value>,
}

impl OutboxRow {
    /// Discord has every revision of it (or it can never have it).
    pub fn settled(&self) -> bool {
        self.gone || (self.message_id.is_some() && self.sent_revision >= self.revision)
    }
}

/// Discord takes a nonce of at most 25 characters: 16 random bytes in base64url are 22.
fn nonce() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

fn id_text(v: Option<String>) -> Option<u64> {
    v.and_then(|s| s.parse().ok())
}

const COLUMNS: &str = "id, key, run_id, channel_id, fallback_json, reply_to, content, pings_json, \
     nonce, revision, sent_revision, message_id, state, due_at_ms, attempts, last_error, format, \
     components_json";

fn row(r: &Row<'_>) -> rusqlite::Result<Option<OutboxRow>> {
    // A row written by a later release in a format this one does not know is left alone.
    if r.get::<_, i64>(16)? != FORMAT {
        return Ok(None);
    }
    Ok(Some(OutboxRow {
        id: r.get(0)?,
        key: r.get(1)?,
        run_id: r.get(2)?,
        channel: r.get::<_, String>(3)?.parse().unwrap_or(0),
        fallback: r
            .get::<_, Option<String>>(4)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        reply_to: id_text(r.get(5)?),
        content: r.get(6)?,
        pings: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
        nonce: r.get(8)?,
        revision: r.get(9)?,
        sent_revision: r.get(10)?,
        message_id: id_text(r.get(11)?),
        gone: r.get::<_, String>(12)? == "gone",
        due_at_ms: r.get(13)?,
        attempts: r.get(14)?,
        last_error: r.get(15)?,
        components: r
            .get::<_, Option<String>>(17)?
            .and_then(|s| serde_json::from_str(&s).ok()),
    }))
}

impl Store {
    /// Adds a message, or (with [`Put::Revise`]) a new revision of the one under the same key.
    /// Returns whether anything changed.
    pub fn outbox_put(&self, m: &NewMessage) -> anyhow::Result<bool> {
        self.with(|c| put(c, m))
    }

    /// Makes every pending message due now (a shutdown flushes what is waiting to coalesce).
    pub fn outbox_due_now(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET due_at_ms = ?1 WHERE state = 'live' AND sent_revision < revision AND due_at_ms > ?1",
                params![now],
            )
        })
    }

    /// Records a message the caller posted itself (e.g. the plan message, whose id is needed
    /// at once), so that later revisions of it are edits.
    pub fn outbox_put_sent(
        &self,
        key: &str,
        run: Option<&str>,
        channel: u64,
        content: &str,
        message_id: u64,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT INTO outbox (format, key, run_id, channel_id, content, pings_json, nonce,
                    revision, sent_revision, message_id, state, due_at_ms, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, '[]', ?6, 1, 1, ?7, 'live', ?8, ?8, ?8)
                 ON CONFLICT(key) DO UPDATE SET message_id = excluded.message_id,
                    channel_id = excluded.channel_id, updated_at_ms = excluded.updated_at_ms",
                params![FORMAT, key, run, channel.to_string(), content, nonce(), message_id.to_string(), now],
            )
        })?;
        Ok(())
    }

    /// Messages Discord does not have yet (or not in their latest revision), oldest first.
    pub fn outbox_pending(&self) -> anyhow::Result<Vec<OutboxRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE state = 'live' AND sent_revision < revision ORDER BY id"
            ))?;
            let rows = st.query_map([], row)?;
            rows.filter_map(Result::transpose).collect()
        })
    }

    /// [`Store::outbox_pending`] of one channel (its sender reads only these; the index on
    /// `(state, channel_id, id)` serves it).
    pub fn outbox_pending_in(&self, channel: u64) -> anyhow::Result<Vec<OutboxRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE state = 'live' AND channel_id = ?1
                   AND sent_revision < revision ORDER BY id"
            ))?;
            let rows = st.query_map(params![channel.to_string()], row)?;
            rows.filter_map(Result::transpose).collect()
        })
    }

    pub fn outbox_row(&self, key: &str) -> anyhow::Result<Option<OutboxRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM outbox WHERE key = ?1"),
                params![key],
                row,
            )
            .optional()
            .map(Option::flatten)
        })
    }

    /// Discord has `revision` of the row, as message `message_id`.
    pub fn outbox_delivered(&self, id: i64, revision: i64, message_id: u64) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET sent_revision = MAX(sent_revision, ?2), message_id = ?3,
                    attempts = 0, last_error = NULL, updated_at_ms = ?4 WHERE id = ?1",
                params![id, revision, message_id.to_string(), now_ms()],
            )
        })?;
        Ok(())
    }

    /// Not delivered this time: tried again at `due_at_ms`.
    pub fn outbox_later(&self, id: i64, due_at_ms: i64, error: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, due_at_ms = ?2, last_error = ?3,
                    updated_at_ms = ?4 WHERE id = ?1",
                params![id, due_at_ms, error, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Can never be delivered (its target is gone and it has nowhere else to go).
    pub fn outbox_gone(&self, id: i64, error: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET state = 'gone', last_error = ?2, updated_at_ms = ?3 WHERE id = ?1",
                params![id, error, now_ms()],
            )
        })?;
        Ok(())
    }

    /// The message is to be posted anew (its earlier copy was deleted): same key, new nonce.
    pub fn outbox_repost(&self, id: i64) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET message_id = NULL, sent_revision = 0, nonce = ?2,
                    updated_at_ms = ?3 WHERE id = ?1",
                params![id, nonce(), now_ms()],
            )
        })?;
        Ok(())
    }

    /// Records that `channel` (a thread) cannot take messages, and moves every message still
    /// owed to it to its fallback: posted anew in the parent channel as a reply to the plan
    /// message. The first moved message of each run starts with `note`. Returns how many moved.
    pub fn outbox_divert(&self, channel: u64, why: &str, note: &str) -> anyhow::Result<usize> {
        let now = now_ms();
        let ch = channel.to_string();
        self.tx(|c| {
            // Only the move that finds the thread unavailable says so; later ones just move.
            let first = c.execute(
                "INSERT INTO chat_unavailable (channel_id, why, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(channel_id) DO NOTHING",
                params![ch, why, now],
            )? == 1;
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE state = 'live' AND sent_revision < revision
                   AND channel_id = ?1 AND fallback_json IS NOT NULL ORDER BY id"
            ))?;
            let rows: Vec<OutboxRow> = st
                .query_map(params![ch], row)?
                .filter_map(Result::transpose)
                .collect::<rusqlite::Result<_>>()?;
            let mut noted = std::collections::HashSet::new();
            for r in &rows {
                let Some(fb) = r.fallback else { continue };
                let content = if first && !note.is_empty() && noted.insert(r.run_id.clone()) {
                    format!("{note}\n{}", r.content)
                } else {
                    r.content.clone()
                };
                c.execute(
                    "UPDATE outbox SET channel_id = ?2, reply_to = ?3, fallback_json = NULL,
                        content = ?4, message_id = NULL, sent_revision = 0, nonce = ?5,
                        due_at_ms = ?6, updated_at_ms = ?6 WHERE id = ?1",
                    params![
                        r.id,
                        fb.channel.to_string(),
                        fb.reply_to.to_string(),
                        content,
                        nonce(),
                        now
                    ],
                )?;
            }
            Ok(rows.len())
        })
    }

    /// Why `channel` cannot take messages, if it is known not to.
    pub fn chat_unavailable(&self, channel: u64) -> anyhow::Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT why FROM chat_unavailable WHERE channel_id = ?1",
                params![channel.to_string()],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Messages still owed to Discord.
    pub fn outbox_pending_count(&self) -> anyhow::Result<u64> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM outbox WHERE state = 'live' AND sent_revision < revision",
                [],
                |r| r.get(0),
            )
        })
    }
}

/// Queues what the announcer says for a finished run, inside the outcome's transaction, and
/// makes the run's other pending messages due at once (nothing is left to coalesce).
pub(super) fn announce(
    c: &Connection,
    announcer: &Announcer,
    run_id: &str,
    summary: &Value,
) -> rusqlite::Result<()> {
    let chat_ref: Option<String> = c
        .query_row(
            "SELECT chat_ref FROM runs WHERE id = ?1",
            params![run_id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let Some(chat_ref) = chat_ref.and_then(|s| serde_json::from_str(&s).ok()) else {
        return Ok(());
    };
    let plan: Option<String> = c
        .query_row(
            "SELECT plan_json FROM runs WHERE id = ?1",
            params![run_id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let mut st = c.prepare(
        "SELECT voter_name FROM approvals WHERE run_id = ?1 AND vote = 'approve' ORDER BY at_ms",
    )?;
    let approvers = st
        .query_map(params![run_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let audit_head = super::anchor::db_head(c)?.map(|h| h.short());
    let finished = Finished {
        run_id,
        summary,
        chat_ref: Some(chat_ref),
        plan: plan.and_then(|p| serde_json::from_str(&p).ok()),
        approvers,
        audit_head,
    };
    let now = now_ms();
    c.execute(
        "UPDATE outbox SET due_at_ms = ?2 WHERE run_id = ?1 AND state = 'live' AND due_at_ms > ?2",
        params![run_id, now],
    )?;
    for m in announcer(&finished) {
        put(c, &m)?;
    }
    Ok(())
}

pub(super) fn put(c: &Connection, m: &NewMessage) -> rusqlite::Result<bool> {
    let mode = m.mode;
    let now = now_ms();
    let pings = serde_json::to_string(&m.pings).unwrap_or_else(|_| "[]".into());
    let fallback = m
        .fallback
        .map(|f| serde_json::to_string(&f).unwrap_or_default());
    let components = m.components.as_ref().map(Value::to_string);
    let inserted = c.execute(
        "INSERT INTO outbox (format, key, run_id, channel_id, fallback_json, reply_to, content,
            pings_json, nonce, revision, state, due_at_ms, created_at_ms, updated_at_ms, message_id,
            components_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, 'live', ?10, ?11, ?11, ?12, ?13)
         ON CONFLICT(key) DO NOTHING",
        params![
            FORMAT,
            m.key,
            m.run,
            m.channel.to_string(),
            fallback,
            m.reply_to.map(|r| r.to_string()),
            m.content,
            pings,
            nonce(),
            m.due_at_ms,
            now,
            m.edits.map(|e| e.to_string()),
            components
        ],
    )?;
    if inserted == 1 || mode == Put::Once {
        return Ok(inserted == 1);
    }
    // A revision of a settled message waits its own due time; one of a message already
    // pending keeps the earlier due time, so steady updates cannot starve it.
    let n = c.execute(
        "UPDATE outbox SET content = ?2, pings_json = ?3, revision = revision + 1,
            due_at_ms = CASE WHEN sent_revision >= revision THEN ?4 ELSE MIN(due_at_ms, ?4) END,
            updated_at_ms = ?5
         WHERE key = ?1 AND state = 'live' AND content <> ?2",
        params![m.key, m.content, pings, m.due_at_ms, now],
    )?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (std::path::PathBuf, Store) {
        let (s, dir) = crate::store::tests::temp_store();
        (dir, s)
    }

    fn msg(key: &str, content: &str, due: i64, mode: Put) -> NewMessage {
        NewMessage {
            key: key.into(),
            run: Some("r1".into()),
            channel: 10,
            fallback: Some(Fallback {
                channel: 1,
                reply_to: 10,
            }),
            reply_to: None,
            edits: None,
            content: content.into(),
            pings: vec![],
            due_at_ms: due,
            mode,
            components: None,
        }
    }

    #[test]
    fn a_revision_of_a_pending_message_keeps_one_row_and_the_earlier_due_time() {
        let (_d, s) = store();
        assert!(s.outbox_put(&msg("p", "a", 100, Put::Revise)).unwrap());
        assert!(s.outbox_put(&msg("p", "b", 900, Put::Revise)).unwrap());
        let rows = s.outbox_pending().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].content.as_str(),
                rows[0].revision,
                rows[0].due_at_ms
            ),
            ("b", 2, 100)
        );
        assert!(rows[0].nonce.len() <= 25);
    }

    #[test]
    fn once_means_once_and_delivery_settles_the_revision_sent() {
        let (_d, s) = store();
        assert!(s.outbox_put(&msg("s", "a", 0, Put::Once)).unwrap());
        assert!(!s.outbox_put(&msg("s", "b", 0, Put::Once)).unwrap());
        let r = s.outbox_pending().unwrap().remove(0);
        s.outbox_put(&msg("s", "a", 0, Put::Revise)).unwrap();
        s.outbox_delivered(r.id, r.revision, 77).unwrap();
        assert!(s.outbox_pending().unwrap().is_empty());
        // A revision after delivery is an edit of message 77, due when asked.
        s.outbox_put(&msg("s", "c", 5000, Put::Revise)).unwrap();
        let r = s.outbox_pending().unwrap().remove(0);
        assert_eq!((r.message_id, r.due_at_ms, r.revision), (Some(77), 5000, 2));
    }

    #[test]
    fn diverting_a_thread_moves_what_is_owed_to_the_channel_with_one_note() {
        let (_d, s) = store();
        s.outbox_put(&msg("a", "one", 0, Put::Revise)).unwrap();
        s.outbox_put(&msg("b", "two", 0, Put::Revise)).unwrap();
        assert_eq!(s.outbox_divert(10, "locked", "⚠ thread locked").unwrap(), 2);
        let rows = s.outbox_pending().unwrap();
        assert!(rows
            .iter()
            .all(|r| r.channel == 1 && r.reply_to == Some(10)));
        assert_eq!(rows[0].content, "⚠ thread locked\none");
        assert_eq!(rows[1].content, "two");
        assert_eq!(s.chat_unavailable(10).unwrap().as_deref(), Some("locked"));
    }

    #[test]
    fn what_a_state_change_says_is_queued_with_it_and_only_if_it_moved() {
        use crate::domain::RunState;
        let (_d, s) = store();
        s.insert_run(&crate::store::tests::new_run("r1", "a@b.com"))
            .unwrap();
        let from = [RunState::AwaitingApproval];
        let say = [msg("closed:r1", "cancelled", 0, Put::Once)];
        let moved = s
            .transition_run_saying("r1", &from, RunState::Cancelled, None, &Value::Null, &say)
            .unwrap();
        assert!(moved);
        let later = [msg("closed:again", "expired", 0, Put::Once)];
        let moved = s
            .transition_run_saying("r1", &from, RunState::Expired, None, &Value::Null, &later)
            .unwrap();
        assert!(!moved);
        let keys: Vec<String> = s
            .outbox_pending()
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["closed:r1"]);
    }

    #[test]
    fn an_outcome_queues_what_the_announcer_says_in_its_transaction() {
        use crate::domain::RunState;
        let (_d, s) = store();
        s.insert_run(&crate::store::tests::new_run("r1", "a@b.com"))
            .unwrap();
        // No chat_ref: nothing to say, and the outcome is still recorded.
        s.set_announcer(std::sync::Arc::new(|f: &Finished<'_>| {
            vec![msg(&format!("summary:{}", f.run_id), "done", 0, Put::Once)]
        }));
        s.set_run_summary("r1", RunState::Succeeded, &Value::Null)
            .unwrap();
        assert!(s.outbox_pending().unwrap().is_empty());
        s.set_chat_ref("r1", &serde_json::json!({"channel": "1"}))
            .unwrap();
        s.set_run_summary("r1", RunState::Succeeded, &Value::Null)
            .unwrap();
        let rows = s.outbox_pending().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key, "summary:r1");
    }

    #[test]
    fn a_revision_of_a_message_posted_elsewhere_is_an_edit_of_it() {
        let (_d, s) = store();
        let mut m = msg("plan", "final", 0, Put::Revise);
        m.edits = Some(55);
        s.outbox_put(&m).unwrap();
        let r = s.outbox_pending().unwrap().remove(0);
        assert_eq!(
            (r.message_id, r.sent_revision, r.revision),
            (Some(55), 0, 1)
        );
    }
}
