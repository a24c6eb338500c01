//! Delivery under Discord's real rules: the fake Discord enforces per-channel and global rate
//! limits (429 with `retry_after` until the window has passed), deduplicates nonces, and has
//! threads that are archived, locked, deleted or not creatable. Every message the bot owes must
//! arrive once, in order, without the bot earning a second 429 for one it was told to wait out.

use crate::discord::{alice, approval, bob, rig, rig_with, small_sandbox, start_on, Rig};
use crate::fake_discord::ratelimit::Limit;
use crate::fake_discord::{FakeDiscord, CHANNEL, TOKEN};
use o365_fixbot::sandbox::scenario::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// Posts a message as someone else would (same bot token), spending the channel's window; a
/// 429 is waited out as told (bounded).
async fn spend_window(fake: &FakeDiscord, channel: u64) {
    for _ in 0..5 {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v10/channels/{channel}/messages", fake.base))
            .header("authorization", format!("Bot {TOKEN}"))
            .json(&serde_json::json!({
                "content": "someone else", "allowed_mentions": {"parse": []},
                "nonce": uuid::Uuid::new_v4().simple().to_string()[..20].to_owned(),
                "enforce_nonce": true
            }))
            .send()
            .await
            .expect("the fake answers");
        if resp.status().is_success() {
            return;
        }
        assert_eq!(resp.status().as_u16(), 429);
        let body: serde_json::Value = resp.json().await.expect("a 429 body");
        let wait = body["retry_after"].as_f64().expect("retry_after");
        tokio::time::sleep(Duration::from_secs_f64(wait + 0.01)).await;
    }
    panic!("the window could not be spent");
}

/// Waits until Discord has the run's final plan state and the outbox owes nothing more.
async fn settled(rig: &Rig, plan: u64) {
    rig.fake
        .wait_for("the plan message's final state", T, |w| {
            let c = &w.messages[&plan].content;
            (!c.contains("awaiting approval") && !c.contains("running")).then_some(())
        })
        .await;
    tokio::time::timeout(T, async {
        while rig.bot.flush_chat(Duration::from_secs(1)).await > 0 {}
    })
    .await
    .expect("the outbox drains");
}

fn count(texts: &[String], needle: &str) -> usize {
    texts.iter().filter(|t| t.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_is_waited_out_as_told_and_the_message_arrives_once() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ADELE, "INC-429").await;
    // One post per 3 s in each channel, and someone else has just used the thread's.
    rig.fake.world_mut(|w| {
        w.limits.create_message = Limit::new(1, Duration::from_secs(3));
    });
    spend_window(&rig.fake, plan).await;
    let spent = Instant::now();
    let cancel = rig
        .fake
        .slash(&alice(), CHANNEL, "cancel", &[("run", run.as_str())]);
    rig.fake.wait_reply(cancel, T).await;
    let note = rig.fake.wait_text(plan, "🛑 cancelled by alice", T).await;
    assert!(note.starts_with("🛑"), "{note}");
    // Told to wait, it waited: one 429, then the post, not a retry storm that earns more.
    let limited = rig.fake.world(|w| w.rate_limited.clone());
    assert_eq!(limited.len(), 1, "{limited:?}");
    let posted_at = rig.fake.world(|w| {
        w.requests
            .iter()
            .rev()
            .find(|r| r.method == "POST" && r.path == format!("/channels/{plan}/messages"))
            .map(|r| r.at)
            .expect("the post")
    });
    assert!(posted_at.duration_since(spent) >= Duration::from_millis(2900));
    assert_eq!(count(&rig.thread(plan), "cancelled by alice"), 1);
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_global_429_holds_every_route_and_everything_still_arrives() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ADELE, "INC-G").await;
    rig.fake.world_mut(|w| {
        w.limits.global = Limit::new(1, Duration::from_secs(2));
    });
    spend_window(&rig.fake, CHANNEL).await;
    let cancel = rig
        .fake
        .slash(&alice(), CHANNEL, "cancel", &[("run", run.as_str())]);
    rig.fake.wait_reply(cancel, T).await;
    rig.fake.wait_text(plan, "🛑 cancelled by alice", T).await;
    settled(&rig, plan).await;
    assert!(rig.plan_text(plan).contains("cancelled"));
    // The thread's post and the plan's edit share the global limit: each is told to wait at
    // most once per window it misses, never retried in a loop.
    let limited = rig.fake.rate_limited_count();
    assert!((1..=4).contains(&limited), "{limited} 429s");
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_successful_repair_costs_at_most_ten_requests_and_no_429() {
    let rig = rig().await;
    let before = rig.fake.world(|w| w.requests.len());
    let (plan, _) = rig.request(&alice(), ADELE, "INC-10R").await;
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.wait_text(plan, "🎉 done", T).await;
    settled(&rig, plan).await;
    let sent: Vec<String> = rig.fake.world(|w| {
        w.requests[before..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.template))
            .collect()
    });
    assert!(sent.len() <= 10, "{} requests: {sent:#?}", sent.len());
    assert_eq!(rig.fake.rate_limited_count(), 0);
    // The progress message holds every step; the summary pings the requester.
    let thread = rig.thread(plan);
    assert_eq!(count(&thread, "/9 "), 9, "{thread:#?}");
    let summary = rig.fake.world(|w| {
        w.messages_in(plan)
            .into_iter()
            .find(|m| m.content.contains("🎉 done"))
            .cloned()
            .expect("the summary")
    });
    assert_eq!(summary.pings, vec!["user:1001".to_owned()]);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repairs_in_one_channel_stay_under_its_limits() {
    let rig = rig().await;
    const N: usize = 8;
    let before = rig.fake.world(|w| w.requests.len());
    let asks: Vec<u64> = (1..=N)
        .map(|n| {
            let who = crate::fake_discord::Person::new(
                3000 + n as u64,
                "requester",
                &[crate::fake_discord::REQUESTER_ROLE],
            );
            rig.fake.slash(
                &who,
                CHANNEL,
                "fix-immutable-id",
                &[
                    ("user", &ordinary_upn(n)),
                    ("reason", "bulk"),
                    ("mode", "full"),
                ],
            )
        })
        .collect();
    let mut plans = Vec::new();
    for n in 1..=N {
        let plan = rig.fake.wait_plan(CHANNEL, &ordinary_upn(n), T).await;
        rig.fake
            .wait_for("the thread", T, |w| {
                w.threads.contains_key(&plan).then_some(())
            })
            .await;
        rig.fake.react(&bob(), CHANNEL, plan, "✅");
        plans.push(plan);
    }
    for plan in &plans {
        rig.fake.wait_text(*plan, "· requested by", T).await;
    }
    for plan in &plans {
        settled(&rig, *plan).await;
    }
    let sent = rig.fake.world(|w| w.requests.len()) - before;
    assert_eq!(rig.fake.rate_limited_count(), 0, "no 429 at all");
    assert!(sent <= 10 * N, "{sent} requests for {N} repairs");
    for i in asks {
        assert_eq!(
            rig.fake.interaction_requests(i),
            1,
            "one answer per command"
        );
    }
    let done = plans
        .iter()
        .filter(|p| rig.thread(**p).iter().any(|l| l.contains("🎉 done")))
        .count();
    assert_eq!(done, N);
    rig.finish(&[1001, 3001, 3002, 3003, 3004, 3005, 3006, 3007, 3008])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_owed_when_the_bot_stops_are_sent_once_after_the_restart() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ADELE, "INC-R").await;
    // The thread takes one post per ten minutes, and it has just had it: everything the run
    // says waits in the outbox.
    rig.fake.world_mut(|w| {
        w.limits.create_message = Limit::new(1, Duration::from_secs(600));
    });
    spend_window(&rig.fake, plan).await;
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    let store = rig.env.engine.store().clone();
    tokio::time::timeout(T, async {
        loop {
            let state = rig.state_of(&run);
            if state == o365_fixbot::domain::RunState::Succeeded {
                break;
            }
            // Nothing reaches Discord meanwhile (that is the point): the store is read.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the run finishes");
    assert!(
        store.outbox_pending_count().unwrap() >= 2,
        "progress and summary are owed"
    );
    let (fake, env) = rig.stop().await;
    fake.world_mut(|w| w.limits = Default::default());
    let rig = start_on(
        fake,
        env,
        approval(1, Duration::from_secs(1800)),
        |_| {},
        None,
    )
    .await;
    rig.fake.wait_text(plan, "🎉 done", T).await;
    settled(&rig, plan).await;
    let texts = rig.fake.world(|w| w.texts_in(plan));
    assert_eq!(count(&texts, "🎉 done"), 1, "{texts:#?}");
    assert_eq!(count(&texts, "approved by bob"), 1, "{texts:#?}");
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_whose_answer_was_lost_is_not_doubled_after_a_restart() {
    let rig = rig().await;
    let (plan, _) = rig.request(&alice(), ADELE, "INC-N").await;
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.wait_text(plan, "🎉 done", T).await;
    settled(&rig, plan).await;
    let (fake, env) = rig.stop().await;
    // As if the process died after Discord created the summary and before it was recorded.
    let db = rusqlite::Connection::open(env.engine.store().path()).unwrap();
    let n = db
        .execute(
            "UPDATE outbox SET sent_revision = 0, message_id = NULL WHERE key LIKE 'summary:%'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    let rig = start_on(
        fake,
        env,
        approval(1, Duration::from_secs(1800)),
        |_| {},
        None,
    )
    .await;
    tokio::time::timeout(T, async {
        while rig.bot.flush_chat(Duration::from_secs(1)).await > 0 {}
    })
    .await
    .expect("the outbox drains");
    assert_eq!(
        rig.fake.world(|w| w.nonce_hits),
        1,
        "posted again with its nonce"
    );
    assert_eq!(count(&rig.fake.world(|w| w.texts_in(plan)), "🎉 done"), 1);
    rig.finish(&[1001]).await;
}

/// Approves `plan` and waits for its summary in the channel, where it went instead of the
/// thread; returns the channel's messages that reply to the plan.
async fn approved_into_the_channel(rig: &Rig, plan: u64) -> Vec<crate::fake_discord::Msg> {
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.wait_text(CHANNEL, "🎉 done", T).await;
    settled(rig, plan).await;
    rig.fake.world(|w| {
        w.messages_in(CHANNEL)
            .into_iter()
            .filter(|m| m.reply_to == Some(plan))
            .cloned()
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_thread_sends_the_results_to_the_channel_as_replies_saying_why() {
    let rig = rig().await;
    let (plan, _) = rig.request(&alice(), ADELE, "INC-L").await;
    rig.fake.lock_thread(plan);
    let replies = approved_into_the_channel(&rig, plan).await;
    let texts: Vec<&str> = replies.iter().map(|m| m.content.as_str()).collect();
    assert!(
        texts[0].starts_with("⚠ this run's thread is unavailable"),
        "{texts:#?}"
    );
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("thread is unavailable"))
            .count(),
        1
    );
    let summary = replies
        .iter()
        .find(|m| m.content.contains("🎉 done"))
        .expect("the summary");
    assert_eq!(summary.pings, vec!["user:1001".to_owned()]);
    assert!(
        rig.fake.world(|w| w.texts_in(plan).is_empty()),
        "nothing got into the thread"
    );
    assert!(
        rig.plan_text(plan).contains("done"),
        "{}",
        rig.plan_text(plan)
    );
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archived_thread_is_reopened_and_used() {
    let rig = rig().await;
    let (plan, _) = rig.request(&alice(), ADELE, "INC-A").await;
    rig.fake.archive_thread(plan);
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.wait_text(plan, "🎉 done", T).await;
    settled(&rig, plan).await;
    assert!(rig.fake.world(|w| !w.threads[&plan].archived));
    let replies = rig.fake.world(|w| {
        w.messages_in(CHANNEL)
            .iter()
            .filter(|m| m.reply_to.is_some())
            .count()
    });
    assert_eq!(replies, 0);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_thread_sends_the_results_to_the_channel() {
    let rig = rig().await;
    let (plan, _) = rig.request(&alice(), ADELE, "INC-D").await;
    rig.fake.delete_thread(plan);
    let replies = approved_into_the_channel(&rig, plan).await;
    assert!(
        replies[0].content.contains("deleted"),
        "{:?}",
        replies[0].content
    );
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thread_that_cannot_be_created_leaves_the_plan_approvable_and_answers_in_the_channel() {
    let rig = rig_with(
        approval(1, Duration::from_secs(1800)),
        |_| {},
        small_sandbox(),
    )
    .await;
    rig.fake.world_mut(|w| w.refuse_threads = true);
    let ask = rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("user", ADELE), ("reason", "INC-T"), ("mode", "full")],
    );
    let plan = rig
        .fake
        .wait_for("the plan message", T, |w| {
            w.messages_in(CHANNEL)
                .iter()
                .find(|m| m.content.contains(ADELE))
                .map(|m| m.id)
        })
        .await;
    let note = rig
        .fake
        .wait_text(CHANNEL, "thread is unavailable", T)
        .await;
    assert!(note.contains("could not be created"), "{note}");
    assert_eq!(
        rig.fake.world(|w| w.interactions[&ask].texts.len()),
        1,
        "no failure said"
    );
    let replies = approved_into_the_channel(&rig, plan).await;
    assert!(replies.iter().any(|m| m.content.contains("🎉 done")));
    rig.finish(&[1001]).await;
}
