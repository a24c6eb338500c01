//! Delivers the store's outbox to Discord: one sender per channel, in order (a message waits for
//! the ones queued before it in the same channel; an edit only for its own due time), paced by
//! [`DiscordRest`]'s buckets, tried again until Discord has it or its target is gone, and taken
//! up again after a restart (a repeated post carries the same nonce, so it is never doubled).
//!
//! A thread that cannot take messages (archived, locked, deleted, or never created) is reopened
//! when allowed; otherwise what it is owed goes to the parent channel as replies to the plan
//! message, the first one saying why.

use super::rest::{code, DiscordRest, Post, RestError};
use crate::store::{now_ms, NewMessage, OutboxRow, Store};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Longest wait between tries of a message Discord did not take.
const MAX_BACKOFF_MS: i64 = 60_000;
/// The dispatcher looks at the store at least this often (due times pass without a wake-up).
const TICK: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    rest: Arc<DiscordRest>,
    wake: Notify,
    /// Channels with a sender running.
    busy: Mutex<HashSet<u64>>,
    /// Threads this process has tried to reopen.
    reopened: Mutex<HashSet<u64>>,
    /// Bumped on every delivery or give-up, for [`Outbox::flush`].
    progress: watch::Sender<u64>,
    /// Set when the front end that started the sender is gone: nothing more is sent.
    stopped: std::sync::atomic::AtomicBool,
    /// The channel senders running, stopped with the dispatcher (a call waiting out a rate
    /// limit must not post after its front end is gone).
    senders: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// Stops the sender when dropped (the front end's task ended or was aborted), so that two
/// front ends on one store never both send.
#[derive(Debug)]
pub struct Running {
    outbox: Outbox,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.outbox
            .inner
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.dispatcher.abort();
        if let Ok(senders) = self.outbox.inner.senders.lock() {
            for s in senders.iter() {
                s.abort();
            }
        }
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

/// What the sender does with one message next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Send(Box<OutboxRow>),
    /// Nothing due in this channel before this time (ms since the epoch).
    WaitUntil(i64),
    Idle,
}

/// The next message of one channel's pending rows (in id order): the first unposted message
/// holds back every later post; edits go when due.
fn next(rows: &[OutboxRow], now: i64) -> Next {
    let mut earliest: Option<i64> = None;
    let mut posts_blocked = false;
    for r in rows {
        let is_post = r.message_id.is_none();
        if is_post && posts_blocked {
            continue;
        }
        if r.due_at_ms <= now {
            return Next::Send(Box::new(r.clone()));
        }
        earliest = Some(earliest.map_or(r.due_at_ms, |e| e.min(r.due_at_ms)));
        posts_blocked |= is_post;
    }
    earliest.map_or(Next::Idle, Next::WaitUntil)
}

fn backoff_ms(attempts: i64) -> i64 {
    (1000i64 << attempts.clamp(0, 6)).min(MAX_BACKOFF_MS)
}

impl Outbox {
    pub fn new(store: Store, rest: Arc<DiscordRest>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                rest,
                wake: Notify::new(),
                busy: Mutex::new(HashSet::new()),
                reopened: Mutex::new(HashSet::new()),
                progress: watch::channel(0).0,
                stopped: std::sync::atomic::AtomicBool::new(false),
                senders: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn rest(&self) -> &Arc<DiscordRest> {
        &self.inner.rest
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Queues a message (or a revision of one) and wakes the sender.
    pub fn put(&self, m: &NewMessage) {
        match self.inner.store.outbox_put(m) {
            Ok(true) => self.inner.wake.notify_one(),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(key = m.key, error = %format!("{e:#}"), "could not queue a chat message")
            }
        }
    }

    /// Wakes the sender (e.g. after messages were queued in another transaction).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Starts the dispatcher: pending messages, including those an earlier process left, are
    /// sent from now on.
    pub fn start(&self) -> Running {
        self.inner
            .stopped
            .store(false, std::sync::atomic::Ordering::Release);
        let me = self.clone();
        Running {
            outbox: self.clone(),
            dispatcher: tokio::spawn(async move { me.dispatch().await }),
        }
    }

    fn stopped(&self) -> bool {
        self.inner
            .stopped
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits, at most `grace`, until Discord has every message queued; returns how many are
    /// still owed then. Messages waiting to be coalesced are made due at once.
    pub async fn flush(&self, grace: Duration) -> u64 {
        let _ = self.inner.store.outbox_due_now();
        self.inner.wake.notify_one();
        let mut rx = self.inner.progress.subscribe();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let left = self.inner.store.outbox_pending_count().unwrap_or(0);
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return left;
            }
        }
    }

    async fn dispatch(&self) {
        loop {
            let wait = self.spawn_due();
            let _ = tokio::time::timeout(wait, self.inner.wake.notified()).await;
        }
    }

    /// Starts a sender for each channel with something due; returns how long to sleep.
    fn spawn_due(&self) -> Duration {
        let rows = match self.inner.store.outbox_pending() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read the chat outbox");
                return Duration::from_secs(1);
            }
        };
        crate::ops::metrics::metrics()
            .chat_owed
            .set(rows.len() as i64);
        let now = now_ms();
        let mut sleep = TICK;
        let mut channels: Vec<u64> = rows.iter().map(|r| r.channel).collect();
        channels.sort_unstable();
        channels.dedup();
        for ch in channels {
            let mine: Vec<OutboxRow> = rows.iter().filter(|r| r.channel == ch).cloned().collect();
            match next(&mine, now) {
                Next::Send(_) => {
                    let fresh = self
                        .inner
                        .busy
                        .lock()
                        .map(|mut b| b.insert(ch))
                        .unwrap_or(false);
                    if fresh {
                        let me = self.clone();
                        let task = tokio::spawn(async move { me.channel_sender(ch).await });
                        if let Ok(mut senders) = self.inner.senders.lock() {
                            senders.retain(|t| !t.is_finished());
                            senders.push(task.abort_handle());
                        }
                    }
                }
                Next::WaitUntil(t) => {
                    sleep = sleep.min(Duration::from_millis((t - now).max(1) as u64));
                }
                Next::Idle => {}
            }
        }
        sleep
    }

    /// Sends one channel's due messages in order, then hands the channel back.
    async fn channel_sender(self, channel: u64) {
        // Bounded: each round delivers, reschedules or gives up one message.
        for _ in 0..10_000 {
            if self.stopped() {
                break;
            }
            let rows = match self.inner.store.outbox_pending_in(channel) {
                Ok(r) => r,
                Err(_) => break,
            };
            match next(&rows, now_ms()) {
                Next::Send(row) => self.deliver(&row).await,
                Next::WaitUntil(_) | Next::Idle => break,
            }
            self.inner.progress.send_modify(|n| *n += 1);
        }
        if let Ok(mut b) = self.inner.busy.lock() {
            b.remove(&channel);
        }
        self.inner.wake.notify_one();
    }

    async fn deliver(&self, row: &OutboxRow) {
        let store = &self.inner.store;
        if row.fallback.is_some() {
            if let Ok(Some(why)) = store.chat_unavailable(row.channel) {
                self.divert(row.channel, &why);
                return;
            }
        }
        let content = super::post::fit(&row.content);
        let rest = &self.inner.rest;
        let result = match row.message_id {
            Some(id) => rest
                .edit_message(row.channel, id, &content, &row.pings)
                .await
                .map(|()| id),
            None => {
                let post = Post {
                    content: &content,
                    pings: &row.pings,
                    nonce: &row.nonce,
                    reply_to: row.reply_to,
                    components: row.components.as_ref(),
                };
                rest.create_message(row.channel, &post).await
            }
        };
        let outcome = match result {
            Ok(id) => store.outbox_delivered(row.id, row.revision, id),
            Err(RestError::Unknown(why)) => {
                tracing::warn!(key = %row.key, why = %why, "a chat message was not delivered; trying again");
                store.outbox_later(row.id, now_ms() + backoff_ms(row.attempts), &why)
            }
            Err(e @ RestError::Refused { .. }) => self.refused(row, &e).await,
        };
        if let Err(e) = outcome {
            tracing::error!(key = %row.key, error = %format!("{e:#}"), "could not record a chat delivery");
        }
    }

    /// A definitive refusal: reopen the thread, move to the channel, post anew, or give up.
    async fn refused(&self, row: &OutboxRow, e: &RestError) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let in_thread = row.fallback.is_some();
        match e.code() {
            Some(code::THREAD_ARCHIVED) if in_thread => {
                let first_try = self
                    .inner
                    .reopened
                    .lock()
                    .map(|mut r| r.insert(row.channel))
                    .unwrap_or(false);
                if first_try && self.inner.rest.unarchive(row.channel).await.is_ok() {
                    tracing::info!(thread = row.channel, "reopened an archived run thread");
                    return Ok(());
                }
                self.divert(
                    row.channel,
                    "archived or locked, and the bot could not reopen it",
                );
                Ok(())
            }
            Some(code::UNKNOWN_CHANNEL) if in_thread => {
                self.divert(row.channel, "deleted");
                Ok(())
            }
            Some(code::MISSING_ACCESS | code::MISSING_PERMISSIONS) if in_thread => {
                self.divert(row.channel, "not open to the bot");
                Ok(())
            }
            // The message was deleted: the latest revision is posted as a new message.
            Some(code::UNKNOWN_MESSAGE) if row.message_id.is_some() => store.outbox_repost(row.id),
            _ => {
                tracing::error!(key = %row.key, channel = row.channel, error = %e, "Discord refused a chat message; it is dropped");
                store.outbox_gone(row.id, &e.to_string())
            }
        }
    }

    fn divert(&self, thread: u64, why: &str) {
        let note = format!(
            "⚠ this run's thread is unavailable ({why}); its messages are posted here instead."
        );
        match self.inner.store.outbox_divert(thread, why, &note) {
            Ok(n) => tracing::warn!(
                thread,
                moved = n,
                why,
                "a run thread is unavailable; posting in its channel"
            ),
            Err(e) => {
                tracing::error!(thread, error = %format!("{e:#}"), "could not move messages off an unavailable thread")
            }
        }
        self.inner.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, posted: bool, due: i64) -> OutboxRow {
        OutboxRow {
            id,
            key: format!("k{id}"),
            run_id: None,
            channel: 1,
            fallback: None,
            reply_to: None,
            content: String::new(),
            pings: vec![],
            nonce: String::new(),
            revision: 1,
            sent_revision: 0,
            message_id: posted.then_some(9),
            gone: false,
            due_at_ms: due,
            attempts: 0,
            last_error: None,
            components: None,
        }
    }

    #[test]
    fn a_post_not_yet_due_holds_back_later_posts_but_not_edits() {
        let rows = [row(1, false, 500), row(2, false, 0), row(3, true, 0)];
        assert_eq!(next(&rows, 100), Next::Send(Box::new(rows[2].clone())));
        assert_eq!(next(&rows[..2], 100), Next::WaitUntil(500));
        assert_eq!(next(&rows[..2], 600), Next::Send(Box::new(rows[0].clone())));
        assert_eq!(next(&[], 0), Next::Idle);
    }

    #[test]
    fn backoff_grows_to_a_minute() {
        assert_eq!(backoff_ms(0), 1000);
        assert_eq!(backoff_ms(2), 4000);
        assert_eq!(backoff_ms(20), MAX_BACKOFF_MS);
    }
}
