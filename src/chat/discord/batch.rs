//! Bulk repairs in Discord: `/fix-immutable-id users:` or `file:` → one plan message with the
//! full table attached as a CSV → one approval by ✅/❌ under the same policy as a single repair
//! → a thread with ONE progress message edited in place, the users that did not succeed grouped
//! a few per message, and a summary (pinging the requester only) with the outcome CSV attached.
//!
//! The batch is a store record over ordinary runs (see [`crate::pipeline::batch`]); its
//! approval moves the batch and every user in one transaction, so a vote delivered twice or two
//! approvers at the same instant still start it once. Votes are counted in memory, as the
//! console does: a restart closes a batch still awaiting approval (the requester asks again),
//! and continues one already running (`startup`).

use super::bot::Bot;
use super::commands::ListSource;
use super::interactions::author;
use super::place::Place;
use super::post::{fit, Ask, Poster};
use super::reactions::{self, Voter, REJECT};
use super::relay::{compose, due_in, in_thread, mention, plan_key, PROGRESS_EDIT_GAP};
use super::rest::{code as rest_code, Post, RestError, Upload};
use super::status::short_id;
use crate::approval::{Ignored, PendingApproval, Verdict, Vote};
use crate::chat::batch_render::{
    outcome_csv, plan_csv, plan_message, progress_line, summary_message,
};
use crate::chat::render::{ignored_line, sanitize, summary_line, PlanState};
use crate::domain::user_list::{ListError, UserList, MAX_FILE_BYTES};
use crate::domain::{Actor, RunId};
use crate::pipeline::batch::{BatchProgress, BatchRequest, BatchSummary};
use crate::pipeline::plan::ModeChoice;
use crate::pipeline::{Reporter, RunEvent, RunOutcome, RunSummary};
use crate::store::{now_ms, BatchState, Put};
use serenity::all::{AttachmentId, CommandInteraction, UserId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio::task::AbortHandle;

/// Users repaired at once within a batch, as on the console: each user's steps are sequential
/// and the API clients pace Okta and Graph, so more would only queue inside the clients.
pub(super) const BATCH_CONCURRENCY: usize = 8;
/// An attachment must arrive within this (it is at most [`MAX_FILE_BYTES`]).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Finished users per grouped results message: few messages, and none when all succeed.
const RESULTS_PER_MESSAGE: usize = 10;
/// How long the summary waits for the thread's queued messages, so it comes after them.
const SUMMARY_ORDER_WAIT: Duration = Duration::from_secs(15);
/// Entries left out of the list told to the requester one by one; the rest are counted.
const LEFT_OUT_SHOWN: usize = 20;

/// A bulk repair awaiting approval. `place.run` is the batch's id.
pub(super) struct BatchSlot {
    pub(super) place: Place,
    pub(super) plan_text: String,
    pub(super) expires_unix: i64,
    pub(super) state: Mutex<BatchSlotState>,
}

pub(super) struct BatchSlotState {
    approval: PendingApproval,
    open: bool,
    timer: Option<AbortHandle>,
    /// Reactions that did not count, in one message edited as more come.
    ignored: Vec<String>,
}

/// Where the list comes from, once the attachment (if any) is known to be small enough.
enum Source {
    Typed(String),
    File {
        name: String,
        url: String,
        size: usize,
    },
}

/// Whether `url` may be fetched: Discord's CDN is https; the tests' fake is on loopback.
fn download_allowed(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}

/// Downloads an attachment, at most `MAX_FILE_BYTES` and [`DOWNLOAD_TIMEOUT`]. A client of its
/// own: the bot's REST client carries the bot token, which must never go to a CDN.
async fn download(url: &str) -> Result<Vec<u8>, String> {
    let url = url::Url::parse(url).map_err(|_| "the attachment's address is not a URL")?;
    if !download_allowed(&url) {
        return Err("the attachment is not served over https".into());
    }
    let client = reqwest::Client::builder()
        .timeout(DOWNLOAD_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot download ({e})"))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|_| "the attachment could not be downloaded; try again")?;
    if !resp.status().is_success() {
        return Err(format!(
            "the attachment could not be downloaded (HTTP {}); try again",
            resp.status().as_u16()
        ));
    }
    let mut out = Vec::new();
    // Bounded by size: a body larger than announced stops here.
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|_| "the attachment's download was cut off; try again")?
    {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_FILE_BYTES {
            return Err(ListError::FileTooLarge { bytes: out.len() }.to_string());
        }
    }
    Ok(out)
}

/// The plan message's text with a last line of its own (fitted: the plan is cut first).
fn with_line(plan_text: &str, line: &str) -> String {
    let room = super::post::MAX_CONTENT.saturating_sub(line.chars().count() + 2);
    let plan: String = if plan_text.chars().count() > room {
        plan_text.chars().take(room).collect::<String>() + "…"
    } else {
        plan_text.to_owned()
    };
    format!("{plan}\n{line}")
}

fn progress_key(id: RunId) -> String {
    format!("batch-progress:{id}")
}

fn succeeded(s: &RunSummary) -> bool {
    matches!(
        s.outcome,
        RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward
    )
}

fn counts(p: &BatchProgress) -> String {
    format!(
        "✅ {} · ↩ {} · ⚠ {} · ⏭ {}",
        p.repaired, p.rolled_back, p.attention, p.skipped
    )
}

impl Bot {
    /// `/fix-immutable-id users:` or `file:`: the list read (every entry accounted for), the
    /// users planned, and one plan message awaiting approval.
    pub(super) async fn fix_batch(
        self: &Arc<Self>,
        poster: &Poster,
        cmd: &CommandInteraction,
        actor: Actor,
        list: ListSource,
        mode: ModeChoice,
        reason: Option<String>,
    ) {
        let (user, _, roles) = author(cmd.into());
        if !self.policy.may_request(&roles) {
            return self
                .reply(poster, cmd, "⛔ you do not hold a requester role, so you cannot ask for repairs. Nothing was done.")
                .await;
        }
        // The attachment is judged by what Discord says of it before anything is downloaded.
        let source = match list {
            ListSource::Typed(t) => Source::Typed(t),
            ListSource::File(id) => {
                let found = id
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n != 0)
                    .and_then(|n| cmd.data.resolved.attachments.get(&AttachmentId::new(n)));
                let Some(a) = found else {
                    return self
                        .reply(poster, cmd, "⛔ the attached file could not be found in the command; attach it again. Nothing was done.")
                        .await;
                };
                let size = a.size as usize;
                if size > MAX_FILE_BYTES {
                    let text = format!(
                        "⛔ `{}`: {}. Nothing was done.",
                        sanitize(&a.filename, 100).replace('`', "'"),
                        ListError::FileTooLarge { bytes: size }
                    );
                    return self.reply(poster, cmd, &text).await;
                }
                Source::File {
                    name: a.filename.clone(),
                    url: a.url.clone(),
                    size,
                }
            }
        };
        let Some(permit) = self.limits.try_open() else {
            let text = self.cap_message();
            return self.reply(poster, cmd, &text).await;
        };
        let ack = "🔎 reading the list, then Entra and Okta for every user in it; the plan will be posted in this channel for a second person's approval (or the reason it cannot be, here).";
        if let Err(e) = poster.reply_ephemeral(Ask::from(cmd), ack).await {
            tracing::warn!(error = %super::post::describe(&e), "could not acknowledge a bulk /fix-immutable-id; not planning");
            return;
        }
        let parsed = match source {
            Source::Typed(t) => UserList::parse_text(&t).map_err(|e| e.to_string()),
            Source::File { name, url, size } => {
                tracing::info!(file = %name, size, "downloading a bulk repair's list");
                match download(&url).await {
                    Ok(bytes) => UserList::parse_file(&name, &bytes)
                        .map_err(|e| format!("`{}`: {e}", sanitize(&name, 100).replace('`', "'"))),
                    Err(e) => Err(e),
                }
            }
        };
        let list = match parsed {
            Ok(l) => l,
            Err(e) => {
                let text = format!("⛔ {}. Nothing was done.", sanitize(&e, 600));
                return self.edit_reply(poster, cmd, &text).await;
            }
        };
        // Entries left out are told to the requester only: they are their typing, not news.
        let mut notes = String::new();
        let left_out: Vec<_> = list.malformed.iter().chain(&list.duplicates).collect();
        for r in left_out.iter().take(LEFT_OUT_SHOWN) {
            notes.push_str(&format!(
                "• entry {} `{}` is left out: {}\n",
                r.at,
                sanitize(&r.text, 80).replace('`', "'"),
                sanitize(&r.why, 160)
            ));
        }
        if left_out.len() > LEFT_OUT_SHOWN {
            notes.push_str(&format!(
                "• … and {} more entries left out\n",
                left_out.len() - LEFT_OUT_SHOWN
            ));
        }
        if list.users.is_empty() {
            let text = fit(&format!(
                "{notes}⛔ no valid user in the list. Nothing was done."
            ));
            return self.edit_reply(poster, cmd, &text).await;
        }
        let reason = reason
            .map(|r| crate::domain::strip_invisible(&r))
            .map(|r| {
                r.trim()
                    .chars()
                    .take(crate::pipeline::plan::MAX_REASON)
                    .collect::<String>()
            })
            .filter(|r| !r.is_empty());
        let req = BatchRequest {
            requester: actor.clone(),
            users: list.users,
            mode,
            reason,
        };
        let plan = match self.engine.plan_batch(&req).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "planning a batch failed");
                let text = fit(&format!(
                    "{notes}⚠ could not plan: {}. Nothing was changed; try again in a minute.",
                    sanitize(&format!("{e:#}"), 600)
                ));
                return self.edit_reply(poster, cmd, &text).await;
            }
        };
        let Some(guild) = cmd.guild_id else { return };
        let channel = cmd.channel_id;
        let expires_ms = now_ms() + self.policy.ttl.as_millis() as i64;
        let expires_unix = (expires_ms + 999) / 1000;
        let plan_text = plan_message(&plan, self.policy.ttl);
        let nothing_to_approve = plan.plans.is_empty();
        let first = if nothing_to_approve {
            with_line(
                &plan_text,
                "⛔ every user was refused; there is nothing to approve.",
            )
        } else {
            compose(
                &plan_text,
                &PlanState::Awaiting {
                    expires_unix,
                    have: 0,
                    need: self.policy.approvals_required,
                },
            )
        };
        let csv = plan_csv(&plan);
        let file = Upload {
            filename: &format!("batch-{}-plan.csv", plan.id.short()),
            content_type: "text/csv",
            bytes: csv.as_bytes(),
        };
        let posted = self.post_with_file(channel.get(), &first, &[], &file).await;
        let message = match posted {
            Ok(m) => m,
            Err(e) => {
                let _ =
                    self.engine
                        .close_batch(plan.id, BatchState::Cancelled, &self.system_actor());
                let text = fit(&format!("{notes}⚠ could not post the plan in this channel ({e}); nothing was changed. Check the bot's permissions (Send Messages, Attach Files, Add Reactions, Create Public Threads)."));
                return self.edit_reply(poster, cmd, &text).await;
            }
        };
        // Recorded so later states are edits of it, and so a restart finds its thread.
        if let Err(e) = self.outbox.store().outbox_put_sent(
            &plan_key(plan.id),
            Some(&plan.id.to_string()),
            channel.get(),
            &first,
            message,
        ) {
            tracing::error!(batch = %plan.id, error = %format!("{e:#}"), "could not record the batch's plan message");
        }
        let place = Place {
            run: plan.id,
            guild,
            channel,
            message: serenity::all::MessageId::new(message),
            requester: user,
        };
        if nothing_to_approve {
            let _ = self
                .engine
                .close_batch(plan.id, BatchState::Cancelled, &actor);
            let text = fit(&format!(
                "{notes}⛔ every user in the list was refused (see the plan); nothing was changed."
            ));
            return self.edit_reply(poster, cmd, &text).await;
        }
        let slot = Arc::new(BatchSlot {
            place,
            plan_text,
            expires_unix,
            state: Mutex::new(BatchSlotState {
                approval: PendingApproval::new(plan.id, actor, now_ms()),
                open: true,
                timer: None,
                ignored: Vec::new(),
            }),
        });
        // Held while set up: a fast approver waits here instead of finding no thread.
        let mut st = slot.state.lock().await;
        self.batches.insert(message, Arc::clone(&slot));
        if let Err(e) = self.set_up_batch(&slot, plan.plans.len()).await {
            st.open = false;
            self.batches.remove(&message);
            let _ = self
                .engine
                .close_batch(plan.id, BatchState::Cancelled, &self.system_actor());
            let why = e.to_string();
            self.edit_message(
                &place,
                &compose(&slot.plan_text, &PlanState::Abandoned { why: why.clone() }),
            )
            .await;
            let text = fit(&format!("{notes}⚠ could not set up the approval ({why}); nothing was changed. Check the bot's permissions (Add Reactions, Create Public Threads, Send Messages in Threads)."));
            return self.edit_reply(poster, cmd, &text).await;
        }
        st.timer = Some(self.start_batch_timer(&slot, expires_ms, permit));
        drop(st);
        if !notes.is_empty() {
            let text = fit(&format!(
                "{notes}The other {} users are planned in batch `{}` (posted in this channel).",
                plan.plans.len() + plan.refused.len(),
                plan.id.short()
            ));
            self.edit_reply(poster, cmd, &text).await;
        }
    }

    /// Posts a message with one file at once (its id is needed, and the outbox carries text
    /// only), with a nonce as every create.
    async fn post_with_file(
        &self,
        channel: u64,
        text: &str,
        pings: &[u64],
        file: &Upload<'_>,
    ) -> Result<u64, RestError> {
        let nonce = uuid::Uuid::new_v4().simple().to_string()[..24].to_owned();
        let post = Post {
            content: &fit(text),
            pings,
            nonce: &nonce,
            reply_to: None,
            components: None,
        };
        self.outbox
            .rest()
            .create_message_with_file(channel, &post, file)
            .await
    }

    /// ✅ and ❌ on the plan message, and its thread.
    async fn set_up_batch(&self, slot: &BatchSlot, users: usize) -> Result<(), RestError> {
        let p = &slot.place;
        let rest = self.outbox.rest();
        rest.react(p.channel.get(), p.message.get(), reactions::APPROVE)
            .await?;
        rest.react(p.channel.get(), p.message.get(), REJECT).await?;
        let name = format!("bulk fix · {users} users · {}", p.run.short());
        match rest
            .start_thread(
                p.channel.get(),
                p.message.get(),
                &name,
                self.settings.thread_auto_archive_minutes,
            )
            .await
        {
            Ok(_)
            | Err(RestError::Refused {
                code: rest_code::THREAD_ALREADY_CREATED,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Expires the batch at `expires_ms` unless it has moved on; the open-run permit is held
    /// until then or until the batch ends.
    fn start_batch_timer(
        self: &Arc<Self>,
        slot: &Arc<BatchSlot>,
        expires_ms: i64,
        permit: super::limits::OpenRun,
    ) -> AbortHandle {
        let wait = Duration::from_millis((expires_ms - now_ms()).max(0) as u64);
        let bot = Arc::clone(self);
        let slot = Arc::clone(slot);
        tokio::spawn(async move {
            // Approval hands the permit to the execution by aborting this task after taking
            // the slot: the permit is dropped with the task, and the execution holds its own.
            let _permit = permit;
            tokio::time::sleep(wait).await;
            let mut st = slot.state.lock().await;
            if st.open {
                bot.expire_batch(&slot, &mut st);
            }
        })
        .abort_handle()
    }

    fn close_batch_slot(&self, slot: &BatchSlot, st: &mut BatchSlotState) {
        st.open = false;
        if let Some(t) = st.timer.take() {
            t.abort();
        }
        self.batches.remove(&slot.place.message.get());
    }

    fn expire_batch(&self, slot: &BatchSlot, st: &mut BatchSlotState) {
        let id = slot.place.run;
        if let Ok(true) = self
            .engine
            .close_batch(id, BatchState::Expired, &self.system_actor())
        {
            self.say_in_batch(&slot.place, &format!(
                "⌛ this bulk repair expired after {} min without enough approvals; nothing was changed. {}, run the command again if it is still needed.",
                self.policy.ttl.as_secs().div_ceil(60),
                mention(slot.place.requester)
            ), &[slot.place.requester]);
            self.set_plan_line(slot, &compose(&slot.plan_text, &PlanState::Expired));
        }
        st.open = false;
        st.timer = None;
        self.batches.remove(&slot.place.message.get());
    }

    fn say_in_batch(&self, place: &Place, text: &str, ping: &[UserId]) {
        let key = format!("note:{}:{}", place.run, uuid::Uuid::new_v4().simple());
        self.outbox.put(&in_thread(
            place,
            key,
            fit(text),
            ping.iter().map(|u| u.get()).collect(),
            now_ms(),
            Put::Once,
        ));
    }

    fn set_plan_line(&self, slot: &BatchSlot, content: &str) {
        let place = &slot.place;
        self.outbox.put(&crate::store::NewMessage {
            key: plan_key(place.run),
            run: Some(place.run.to_string()),
            channel: place.channel.get(),
            fallback: None,
            reply_to: None,
            edits: Some(place.message.get()),
            content: content.to_owned(),
            pings: vec![],
            due_at_ms: now_ms(),
            mode: Put::Revise,
            components: None,
        });
    }

    /// A ✅/❌ on a batch's plan message (`None` if the message is not a batch's).
    pub(super) async fn on_batch_reaction(
        self: &Arc<Self>,
        message: u64,
        reaction: &serenity::all::Reaction,
        vote: Vote,
    ) -> bool {
        let Some(slot) = self.batches.get(&message).map(|s| Arc::clone(s.value())) else {
            return false;
        };
        if reaction.channel_id != slot.place.channel || reaction.guild_id != Some(slot.place.guild)
        {
            return true;
        }
        let Some(voter) = reactions::voter(reaction, &self.ids) else {
            return true;
        };
        let mut st = slot.state.lock().await;
        if st.open {
            self.judge_batch(&slot, &mut st, &voter, vote);
        }
        true
    }

    /// On a new gateway session: the ✅/❌ made on batch plans while disconnected (the gateway
    /// does not replay them), judged like live ones; ❌ first, as for a single run. Votes
    /// already counted pass silently.
    pub(super) async fn catch_up_batches(self: &Arc<Self>) {
        let slots: Vec<Arc<BatchSlot>> =
            self.batches.iter().map(|s| Arc::clone(s.value())).collect();
        for slot in slots {
            for (emoji, vote) in [(REJECT, Vote::Reject), (reactions::APPROVE, Vote::Approve)] {
                let users = match self.reactors(&slot.place, emoji).await {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::warn!(batch = %slot.place.run, error = %e, "could not read a batch's reactions back");
                        continue;
                    }
                };
                for user in users {
                    if Some(&user.id) == self.me.get() {
                        continue;
                    }
                    let Some(voter) = self.member_voter(slot.place.guild, &user).await else {
                        continue;
                    };
                    let mut st = slot.state.lock().await;
                    if !st.open {
                        break;
                    }
                    self.judge_batch(&slot, &mut st, &voter, vote);
                }
            }
        }
    }

    fn judge_batch(
        self: &Arc<Self>,
        slot: &Arc<BatchSlot>,
        st: &mut BatchSlotState,
        voter: &Voter,
        vote: Vote,
    ) {
        let id = slot.place.run;
        let verdict = st.approval.vote(
            &self.policy,
            &voter.actor,
            &voter.roles,
            voter.is_bot,
            vote,
            now_ms(),
        );
        match verdict {
            Verdict::Ignored {
                reason: Ignored::AlreadyCounted,
                ..
            } => {}
            Verdict::Ignored { reason, first_time } => {
                if first_time {
                    st.ignored.push(ignored_line(&voter.actor.name, reason));
                    self.say_ignored(&slot.place, &st.ignored);
                }
            }
            Verdict::Expired => self.expire_batch(slot, st),
            Verdict::Counted { have, need } => {
                self.say_in_batch(
                    &slot.place,
                    &format!(
                        "✅ approval {have}/{need} from {}",
                        sanitize(&voter.actor.name, 64)
                    ),
                    &[],
                );
                self.set_plan_line(
                    slot,
                    &compose(
                        &slot.plan_text,
                        &PlanState::Awaiting {
                            expires_unix: slot.expires_unix,
                            have,
                            need,
                        },
                    ),
                );
            }
            Verdict::Rejected { by } => {
                match self.engine.close_batch(id, BatchState::Rejected, &by) {
                    Ok(true) => {
                        self.say_in_batch(
                            &slot.place,
                            &format!(
                                "❌ rejected by {}; nothing was changed.",
                                sanitize(&by.name, 64)
                            ),
                            &[],
                        );
                        self.set_plan_line(
                            slot,
                            &compose(
                                &slot.plan_text,
                                &PlanState::Rejected {
                                    by: by.name.clone(),
                                },
                            ),
                        );
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(batch = %id, error = %format!("{e:#}"), "could not record a batch's rejection")
                    }
                }
                self.close_batch_slot(slot, st);
            }
            Verdict::Approved { by } => {
                let names: Vec<String> = by.iter().map(|a| a.name.clone()).collect();
                let moved = self.engine.approve_batch(id, &voter.actor);
                // The permit goes with the timer; the execution takes its own place.
                let permit = self.limits.try_open();
                self.close_batch_slot(slot, st);
                match moved {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::error!(batch = %id, error = %format!("{e:#}"), "could not record a batch's approval");
                        let _ = self.engine.close_batch(
                            id,
                            BatchState::Cancelled,
                            &self.system_actor(),
                        );
                        self.say_in_batch(&slot.place, "⚠ the approval could not be recorded, so nothing was executed and this plan is closed. Run the command again.", &[]);
                        return;
                    }
                }
                self.set_plan_line(
                    slot,
                    &compose(
                        &slot.plan_text,
                        &PlanState::Running {
                            approved_by: names.clone(),
                        },
                    ),
                );
                let working = self
                    .lifecycle
                    .enter(format!("batch {}", slot.place.run.short()));
                if self.lifecycle.draining() {
                    drop(working);
                    // Recorded as running: the next process continues it (startup).
                    self.say_in_batch(&slot.place, "✅ approved — the bot is restarting; this bulk repair starts as soon as it is back.", &[]);
                    return;
                }
                let bot = Arc::clone(self);
                let place = slot.place;
                tokio::spawn(async move {
                    bot.run_batch(place, names).await;
                    drop(permit);
                    drop(working);
                });
            }
        }
    }

    /// Executes an approved batch (or continues one after a restart): one progress message
    /// edited in place, the users that did not succeed grouped a few per message, and the
    /// summary with the outcome CSV.
    pub(super) async fn run_batch(self: Arc<Self>, place: Place, approved_by: Vec<String>) {
        let id = place.run;
        let t0 = Instant::now();
        let header = if approved_by.is_empty() {
            "🔄 continuing after a restart".to_owned()
        } else {
            let shown: Vec<String> = approved_by.iter().map(|n| sanitize(n, 64)).collect();
            format!("✅ approved by {} — starting", shown.join(", "))
        };
        let progress = |text: String, due: i64| {
            self.outbox.put(&in_thread(
                &place,
                progress_key(id),
                fit(&format!("{header}\n{text}")),
                vec![],
                due,
                Put::Revise,
            ));
        };
        progress("⏳ starting".into(), now_ms());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<RunSummary>();
        let collector = tokio::spawn(Arc::clone(&self).group_results(place, rx));
        let result = self
            .engine
            .execute_batch(
                id,
                BATCH_CONCURRENCY,
                move |_| {
                    // Only each user's outcome is kept: step lines would be hundreds of posts.
                    let (reporter, mut events) = Reporter::channel();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        while let Some(ev) = events.recv().await {
                            if let RunEvent::Finished(s) = ev {
                                let _ = tx.send(s);
                            }
                        }
                    });
                    reporter
                },
                // Edits at most every few seconds (the latest content wins in the outbox).
                |p| progress(progress_line(p, t0.elapsed()), due_in(PROGRESS_EDIT_GAP)),
            )
            .await;
        // Ends once every user's reporter is gone, i.e. every user is settled.
        let _ = collector.await;
        match result {
            Ok(summary) => {
                progress(progress_line(&summary.progress, t0.elapsed()), now_ms());
                self.post_summary(&place, &summary, !approved_by.is_empty())
                    .await;
            }
            Err(e) => {
                tracing::error!(batch = %id, error = %format!("{e:#}"), "a batch stopped");
                self.say_in_batch(&place, &format!(
                    "🚨 the bulk repair stopped with an internal error ({}); its users' runs are in the journal (`/fix-status run:{}`). {}",
                    sanitize(&format!("{e:#}"), 300),
                    id.short(),
                    mention(place.requester)
                ), &[place.requester]);
            }
        }
        self.outbox.wake();
    }

    /// Users that did not succeed, said a few at a time: one message per
    /// [`RESULTS_PER_MESSAGE`] finished users, and none when they all succeeded.
    async fn group_results(
        self: Arc<Self>,
        place: Place,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<RunSummary>,
    ) {
        let mut finished = 0usize;
        let mut from = 1usize;
        let mut lines: Vec<String> = Vec::new();
        let flush = |lines: &mut Vec<String>, from: usize, to: usize| {
            if !lines.is_empty() {
                let text = format!(
                    "Users {from}–{to}: {} did not succeed\n{}",
                    lines.len(),
                    lines.join("\n")
                );
                self.say_in_batch(&place, &text, &[]);
                lines.clear();
            }
        };
        while let Some(s) = rx.recv().await {
            finished += 1;
            if !succeeded(&s) {
                lines.push(format!("• {}", summary_line(&s)));
            }
            if finished.is_multiple_of(RESULTS_PER_MESSAGE) {
                flush(&mut lines, from, finished);
                from = finished + 1;
            }
        }
        flush(&mut lines, from, finished);
    }

    /// The summary with the outcome CSV, after the thread's queued messages (so it comes last).
    /// Pings the requester when a person is waiting for it (not after a restart).
    async fn post_summary(&self, place: &Place, summary: &BatchSummary, ping: bool) {
        let pings: Vec<u64> = if ping {
            vec![place.requester.get()]
        } else {
            vec![]
        };
        let who = if ping {
            format!("{} ", mention(place.requester))
        } else {
            String::new()
        };
        let text = format!("{who}{}", summary_message(summary));
        let left = self.outbox.flush(SUMMARY_ORDER_WAIT).await;
        if left > 0 {
            tracing::warn!(
                batch = %place.run,
                left,
                "the batch's messages were not all delivered before its summary"
            );
        }
        let csv = outcome_csv(summary);
        let file = Upload {
            filename: &format!("batch-{}-outcome.csv", short_id(&summary.id)),
            content_type: "text/csv",
            bytes: csv.as_bytes(),
        };
        if let Err(e) = self
            .post_with_file(place.thread().get(), &text, &pings, &file)
            .await
        {
            tracing::warn!(batch = %place.run, error = %e, "the batch summary with its CSV could not be posted; posting it without");
            let text = format!("{text}\n(the CSV could not be attached: {e}; `/fix-status run:{}` lists every user)", place.run.short());
            self.outbox.put(&in_thread(
                place,
                format!("batch-summary:{}", place.run),
                fit(&text),
                pings,
                now_ms(),
                Put::Once,
            ));
        }
        let line = format!(
            "🏁 finished · {} · see the thread",
            counts(&summary.progress)
        );
        let content = match self.outbox.store().outbox_row(&plan_key(place.run)) {
            Ok(Some(row)) => {
                // The plan as posted, its state line replaced.
                let plan = row
                    .content
                    .rsplit_once('\n')
                    .map_or(row.content.as_str(), |(p, _)| p)
                    .to_owned();
                with_line(&plan, &line)
            }
            _ => return,
        };
        self.outbox.put(&crate::store::NewMessage {
            key: plan_key(place.run),
            run: Some(place.run.to_string()),
            channel: place.channel.get(),
            fallback: None,
            reply_to: None,
            edits: Some(place.message.get()),
            content,
            pings: vec![],
            due_at_ms: now_ms(),
            mode: Put::Revise,
            components: None,
        });
        self.outbox.wake();
    }

    /// `/cancel` of a batch: closes one awaiting approval, or stops a running one between
    /// users. `None` when no batch starts with `key`.
    pub(super) async fn cancel_batch_cmd(
        &self,
        actor: &Actor,
        roles: &[String],
        key: &str,
    ) -> Option<String> {
        let rows = self.engine.store().batches_by_prefix(key).ok()?;
        let row = match rows.as_slice() {
            [] => return None,
            [one] => one,
            many => {
                return Some(format!(
                    "⛔ {} batches start with `{key}`; give more characters.",
                    many.len()
                ))
            }
        };
        if row.requester_id != actor.id && !self.policy.may_approve(roles) {
            return Some("⛔ only the requester or an approver can cancel a bulk repair.".into());
        }
        let Ok(id) = RunId::parse(&row.id) else {
            return Some("⚠ that batch's id cannot be read.".into());
        };
        let short = short_id(&row.id);
        let who = sanitize(&actor.name, 64);
        match row.state {
            BatchState::AwaitingApproval => {
                let slot = self
                    .batches
                    .iter()
                    .find(|s| s.place.run == id)
                    .map(|s| Arc::clone(s.value()));
                let Some(slot) = slot else {
                    // Not shown here (e.g. planned on the console): closed all the same.
                    return Some(
                        match self.engine.close_batch(id, BatchState::Cancelled, actor) {
                            Ok(true) => format!("🛑 batch `{short}` is cancelled."),
                            _ => format!("⛔ batch `{short}` has already moved on."),
                        },
                    );
                };
                let mut st = slot.state.lock().await;
                let moved = st.open
                    && matches!(
                        self.engine.close_batch(id, BatchState::Cancelled, actor),
                        Ok(true)
                    );
                self.close_batch_slot(&slot, &mut st);
                if !moved {
                    return Some(format!("⛔ batch `{short}` has already moved on."));
                }
                self.say_in_batch(
                    &slot.place,
                    &format!("🛑 cancelled by {who}; nothing was changed."),
                    &[],
                );
                self.set_plan_line(
                    &slot,
                    &compose(
                        &slot.plan_text,
                        &PlanState::Cancelled {
                            by: actor.name.clone(),
                        },
                    ),
                );
                Some(format!("🛑 batch `{short}` is cancelled."))
            }
            BatchState::Running => match self.engine.cancel_batch(id, actor) {
                Ok(n) => {
                    if let Ok(Some(row)) = self.outbox.store().outbox_row(&plan_key(id)) {
                        if let Some(message) = row.message_id {
                            let place = Place {
                                run: id,
                                guild: serenity::all::GuildId::new(
                                    self.settings.guild_ids.first().copied().unwrap_or(1),
                                ),
                                channel: serenity::all::ChannelId::new(row.channel),
                                message: serenity::all::MessageId::new(message),
                                requester: UserId::new(1),
                            };
                            self.say_in_batch(&place, &format!("🛑 {who} stopped this bulk repair: {n} users not started are cancelled; users already started finish or roll back."), &[]);
                        }
                    }
                    Some(format!("🛑 batch `{short}` is stopping: {n} users not started are cancelled; those already started finish or roll back."))
                }
                Err(e) => {
                    tracing::error!(batch = %id, error = %format!("{e:#}"), "could not cancel a batch");
                    Some("⚠ could not record the cancellation; try again.".into())
                }
            },
            other => Some(format!(
                "⛔ batch `{short}` is {}; only a batch awaiting approval or running can be cancelled.",
                other.as_str().replace('_', " ")
            )),
        }
    }

    /// After a restart: batches still awaiting approval are closed (their votes were in
    /// memory) and batches that were running continue, their progress and summary in their
    /// threads when known. Runs in its own task; new commands are taken meanwhile.
    pub(super) async fn resume_batches(self: Arc<Self>) {
        let store = self.engine.store();
        for row in store
            .batches_in_state(BatchState::AwaitingApproval)
            .unwrap_or_default()
        {
            let Ok(id) = RunId::parse(&row.id) else {
                continue;
            };
            if let Ok(true) =
                self.engine
                    .close_batch(id, BatchState::Cancelled, &self.system_actor())
            {
                if let Some(place) = self.batch_place(id) {
                    self.say_in_batch(&place, "🔄 the bot restarted before this bulk repair was approved; nothing was changed. Run the command again if it is still needed.", &[]);
                }
            }
        }
        for row in store
            .batches_in_state(BatchState::Running)
            .unwrap_or_default()
        {
            let Ok(id) = RunId::parse(&row.id) else {
                continue;
            };
            let working = self.lifecycle.enter(format!("batch {}", id.short()));
            match self.batch_place(id) {
                Some(place) => Arc::clone(&self).run_batch(place, Vec::new()).await,
                None => {
                    if let Err(e) = self
                        .engine
                        .execute_batch(id, BATCH_CONCURRENCY, |_| Reporter::discard(), |_| {})
                        .await
                    {
                        tracing::error!(batch = %id, error = %format!("{e:#}"), "continuing a batch failed");
                    }
                }
            }
            drop(working);
        }
        self.outbox.wake();
    }

    /// Where a batch's plan message is, from the outbox (the requester is not pinged).
    fn batch_place(&self, id: RunId) -> Option<Place> {
        let row = self.outbox.store().outbox_row(&plan_key(id)).ok()??;
        Some(Place {
            run: id,
            guild: serenity::all::GuildId::new(self.settings.guild_ids.first().copied()?),
            channel: serenity::all::ChannelId::new(row.channel),
            message: serenity::all::MessageId::new(row.message_id?),
            requester: UserId::new(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_attachments_are_fetched() {
        let ok = |u: &str| download_allowed(&url::Url::parse(u).unwrap());
        assert!(ok("https://cdn.discordapp.com/attachments/1/2/a.csv"));
        assert!(ok("http://127.0.0.1:4000/a.csv"));
        assert!(!ok("http://example.com/a.csv"));
        assert!(!ok("http://10.0.0.1/a.csv"));
        assert!(!ok("file:///etc/passwd"));
    }

    #[test]
    fn the_state_line_survives_a_long_plan() {
        let s = with_line(&"x".repeat(5000), "🏁 finished");
        assert!(s.chars().count() <= super::super::post::MAX_CONTENT);
        assert!(s.ends_with("🏁 finished"));
    }
}
