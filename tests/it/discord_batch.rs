//! Bulk repairs in Discord end to end: `/fix-immutable-id users:` and `file:` against the fake
//! Discord (multipart uploads checked, attachments served on 127.0.0.1) and the sandbox tenant.

use crate::discord::{alice, bob, rig, Rig};
use crate::fake_discord::{Person, CHANNEL};
use o365_fixbot::domain::RunState;
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Fault, FaultAction};
use o365_fixbot::store::BatchState;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn mallory() -> Person {
    Person::new(1004, "mallory", &[])
}

/// Waits for a batch's plan message and its thread; returns (message id, batch short id).
async fn wait_batch_plan(rig: &Rig) -> (u64, String) {
    let plan = rig
        .fake
        .wait_for("a batch plan message with its thread", T, |w| {
            w.messages_in(CHANNEL)
                .into_iter()
                .rev()
                .find(|m| m.content.contains("Bulk repair plan"))
                .filter(|m| w.threads.contains_key(&m.id))
                .map(|m| m.id)
        })
        .await;
    let text = rig.plan_text(plan);
    let short = text
        .split("(batch ")
        .nth(1)
        .and_then(|r| r.get(..8))
        .expect("the plan names its batch")
        .to_owned();
    (plan, short)
}

/// The CSV attached to a message.
fn attached_csv(rig: &Rig, message: u64) -> (String, String) {
    rig.fake.world(|w| {
        let files = w.files.get(&message).expect("a file is attached");
        assert_eq!(files.len(), 1, "one file");
        (
            files[0].0.clone(),
            String::from_utf8(files[0].1.clone()).expect("text"),
        )
    })
}

async fn reply_containing(rig: &Rig, interaction: u64, needle: &str) -> String {
    let n = needle.to_owned();
    rig.fake
        .wait_for(&format!("a reply containing {needle:?}"), T, move |w| {
            w.interactions
                .get(&interaction)
                .and_then(|i| i.texts.iter().find(|t| t.contains(&n)).cloned())
        })
        .await
}

fn batch_state(rig: &Rig, short: &str) -> BatchState {
    rig.env.engine.store().batches_by_prefix(short).unwrap()[0].state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_list_is_one_plan_with_a_csv_and_what_was_left_out_is_told_to_the_requester() {
    let rig = rig().await;
    let list = format!("{ADELE}, {LYNNE} {MEGAN}\nAdele@contoso.com not-a-upn");
    let i = rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("users", &list), ("mode", "full"), ("reason", "INC-9")],
    );
    let (plan, short) = wait_batch_plan(&rig).await;
    let text = rig.plan_text(plan);
    assert!(
        text.contains("2 full repair · 0 Entra-only · 1 refused"),
        "{text}"
    );
    assert!(text.contains(LYNNE) && text.contains("synced"), "{text}");
    assert!(text.contains("awaiting approval (0/1)"), "{text}");
    let (name, csv) = attached_csv(&rig, plan);
    assert!(name.ends_with("-plan.csv"), "{name}");
    for u in [ADELE, MEGAN, LYNNE] {
        assert!(csv.contains(u), "{u} in the CSV: {csv}");
    }
    // Left out entries go to the requester only, each with its position.
    let said = reply_containing(&rig, i, "left out").await;
    assert!(said.contains("not-a-upn"), "{said}");
    assert!(
        said.contains("entry 4"),
        "the duplicate, by position: {said}"
    );
    assert!(!rig
        .fake
        .world(|w| w.texts_in(CHANNEL).join("\n").contains("not-a-upn")));
    // /fix-status: one line for the batch, its users not listed one by one.
    let s = rig.fake.slash(&bob(), CHANNEL, "fix-status", &[]);
    let status = reply_containing(&rig, s, "Bulk repairs").await;
    assert!(
        status.contains(&format!("batch {short} awaiting_approval · 2 users")),
        "{status}"
    );
    assert!(!status.contains(ADELE), "members are not listed: {status}");
    let s = rig
        .fake
        .slash(&bob(), CHANNEL, "fix-status", &[("run", &short)]);
    let rows = reply_containing(&rig, s, &format!("batch {short}")).await;
    assert!(rows.contains(ADELE) && rows.contains(LYNNE), "{rows}");
    assert!(rig.env.sb.provisioning_writes().is_empty());
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attached_csv_is_planned_and_an_oversized_one_is_refused_before_download() {
    let rig = rig().await;
    let file = format!("upn,ticket\n{ADELE},INC-1\n{MEGAN},INC-2\n");
    rig.fake.slash_with_file(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("mode", "full")],
        "users.csv",
        file.as_bytes(),
        file.len(),
    );
    let (plan, _) = wait_batch_plan(&rig).await;
    let text = rig.plan_text(plan);
    assert!(text.contains("for 2 users"), "{text}");
    assert!(text.contains(ADELE) && text.contains(MEGAN), "{text}");
    assert_eq!(rig.fake.world(|w| w.downloads), 1);
    let big = rig.fake.slash_with_file(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[],
        "huge.csv",
        file.as_bytes(),
        300 * 1024,
    );
    let said = rig.fake.wait_reply(big, T).await;
    assert!(
        said.last_text().contains("huge.csv") && said.last_text().contains("at most"),
        "{:?}",
        said.texts
    );
    assert_eq!(
        rig.fake.world(|w| w.downloads),
        1,
        "refused before download"
    );
    // Exactly one of user, users or file.
    let both = rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("user", ADELE), ("users", MEGAN)],
    );
    let said = rig.fake.wait_reply(both, T).await;
    assert!(said.last_text().contains("exactly one"), "{:?}", said.texts);
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_person_approves_and_every_user_is_repaired_in_one_window() {
    let rig = rig().await;
    let list = format!("{ADELE} {MEGAN} {ALEX}");
    rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("users", &list), ("mode", "full")],
    );
    let (plan, short) = wait_batch_plan(&rig).await;
    let before = rig.fake.rest_count();
    // The requester's own ✅ and a stranger's do not count.
    rig.fake.react(&alice(), CHANNEL, plan, "✅");
    rig.fake.react(&mallory(), CHANNEL, plan, "✅");
    rig.fake
        .wait_text(plan, "mallory's reaction does not count", T)
        .await;
    let said = rig.thread(plan).join("\n");
    assert!(said.contains("alice's reaction does not count"), "{said}");
    assert_eq!(batch_state(&rig, &short), BatchState::AwaitingApproval);
    assert!(rig.env.sb.provisioning_writes().is_empty());
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    let summary = rig.fake.wait_text(plan, "bulk repair done", T).await;
    assert!(
        summary.starts_with("<@1001>"),
        "pings the requester: {summary}"
    );
    assert!(summary.contains("✅ 3 repaired"), "{summary}");
    let summary_id = rig.fake.world(|w| {
        w.messages_in(plan)
            .into_iter()
            .find(|m| m.content.contains("bulk repair done"))
            .unwrap()
            .id
    });
    let (name, csv) = attached_csv(&rig, summary_id);
    assert!(name.ends_with("-outcome.csv"), "{name}");
    for u in [ADELE, MEGAN, ALEX] {
        assert!(csv.contains(u), "{csv}");
    }
    // One progress message, edited in place; no per-user step lines.
    rig.fake
        .wait_for("the progress message at 3/3", T, |w| {
            w.messages_in(plan)
                .into_iter()
                .find(|m| m.content.contains("3/3"))
                .map(|_| ())
        })
        .await;
    rig.fake.world(|w| {
        let progress: Vec<_> = w
            .messages_in(plan)
            .into_iter()
            .filter(|m| m.content.contains("approved by bob"))
            .collect();
        assert_eq!(progress.len(), 1, "one progress message");
        assert!(progress[0].versions.len() >= 2, "edited in place");
        assert!(
            w.texts_in(plan).iter().all(|t| !t.contains("1/9")),
            "no step lines"
        );
    });
    for u in [ADELE, MEGAN, ALEX] {
        let e = rig.env.sb.entra_user(u).unwrap();
        let okta = rig.env.sb.okta_user_id(u).unwrap();
        let app = rig.env.sb.okta_app_user(&okta).unwrap();
        assert_eq!(e.on_premises_immutable_id.as_deref(), app.immutable_id());
    }
    assert_eq!(
        rig.env.sb.provisioning_writes().len(),
        2,
        "paused once, restored once"
    );
    rig.fake
        .wait_for("the plan's final state", T, |w| {
            w.messages[&plan]
                .content
                .contains("🏁 finished")
                .then_some(())
        })
        .await;
    assert_eq!(batch_state(&rig, &short), BatchState::Done);
    let used = rig.fake.rest_count() - before;
    eprintln!("REST requests for a batch of 3 after its plan: {used}");
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejected_batch_changes_nothing() {
    let rig = rig().await;
    let list = format!("{ADELE},{MEGAN}");
    rig.fake
        .slash(&alice(), CHANNEL, "fix-immutable-id", &[("users", &list)]);
    let (plan, short) = wait_batch_plan(&rig).await;
    rig.fake.react(&bob(), CHANNEL, plan, "❌");
    rig.fake.wait_text(plan, "rejected by bob", T).await;
    assert_eq!(batch_state(&rig, &short), BatchState::Rejected);
    let store = rig.env.engine.store();
    let row = &store.batches_by_prefix(&short).unwrap()[0];
    for m in &row.members {
        assert_eq!(store.run(m).unwrap().unwrap().state, RunState::Rejected);
    }
    assert!(rig.env.sb.provisioning_writes().is_empty());
    assert!(rig.env.sb.entra_user(ADELE).is_some());
    // A later ✅ changes nothing.
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake
        .wait_for("the plan's rejected state", T, |w| {
            w.messages[&plan].content.contains("rejected").then_some(())
        })
        .await;
    assert_eq!(batch_state(&rig, &short), BatchState::Rejected);
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_stops_a_running_batch_between_users() {
    let rig = rig().await;
    // Slow users: the first eight are still running when the cancel comes.
    rig.env.sb.inject(Fault {
        op: "graph.update_user".into(),
        nth: 1,
        times: 1000,
        action: FaultAction::Delay(Duration::from_millis(700)),
    });
    let users: Vec<String> = (1..=12).map(ordinary_upn).collect();
    let list = users.join("\n");
    rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("users", &list), ("mode", "full")],
    );
    let (plan, short) = wait_batch_plan(&rig).await;
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.wait_text(plan, "approved by bob", T).await;
    // The first eight have started (the store gives no signal; read until it says so, bounded).
    let store = rig.env.engine.store();
    let members = store.batches_by_prefix(&short).unwrap()[0].members.clone();
    let started = || {
        members
            .iter()
            .filter(|m| store.run(m).unwrap().unwrap().state != RunState::Approved)
            .count()
    };
    for _ in 0..500 {
        if started() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(started(), 8, "eight users at a time");
    let c = rig
        .fake
        .slash(&alice(), CHANNEL, "cancel", &[("run", &short)]);
    let said = reply_containing(&rig, c, "stopping").await;
    assert!(said.contains("4 users not started are cancelled"), "{said}");
    let summary = rig.fake.wait_text(plan, "bulk repair finished", T).await;
    assert!(summary.contains("✅ 8 repaired"), "{summary}");
    assert!(summary.contains("⏭ 4 skipped or cancelled"), "{summary}");
    let row = &store.batches_by_prefix(&short).unwrap()[0];
    let cancelled = row
        .members
        .iter()
        .filter(|m| store.run(m).unwrap().unwrap().state == RunState::Cancelled)
        .count();
    assert_eq!(cancelled, 4);
    assert_eq!(rig.env.sb.provisioning_writes().len(), 2);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_that_fails_is_listed_in_a_grouped_message_and_the_rest_go_on() {
    let rig = rig().await;
    // Graph refuses one write: that user rolls back, the others are repaired. Every user here
    // has an ImmutableID to go back to (a federated user without one cannot return from the
    // temporary UPN when Graph refuses the ID: that is a hand-over, not a roll-back), and with
    // users running concurrently the refused write may be any of theirs.
    rig.env.sb.inject(Fault {
        op: "graph.update_user".into(),
        nth: 2,
        times: 1,
        action: FaultAction::Error {
            status: 403,
            code: "Authorization_RequestDenied".into(),
            message: "injected".into(),
        },
    });
    let list = format!("{MEGAN} {OBRIEN} {ALEX}");
    rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("users", &list), ("mode", "full")],
    );
    let (plan, _) = wait_batch_plan(&rig).await;
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    let summary = rig.fake.wait_text(plan, "bulk repair finished", T).await;
    assert!(summary.contains("✅ 2 repaired"), "{summary}");
    assert!(summary.contains("↩ 1 rolled back"), "{summary}");
    let grouped: Vec<String> = rig.fake.world(|w| {
        w.texts_in(plan)
            .into_iter()
            .filter(|t| t.contains("did not succeed"))
            .collect()
    });
    assert_eq!(grouped.len(), 1, "one grouped message: {grouped:?}");
    assert!(
        grouped[0].starts_with("Users 1–3: 1 did not succeed"),
        "{grouped:?}"
    );
    assert_eq!(rig.env.sb.provisioning_writes().len(), 2);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_approved_when_the_bot_stopped_continues_in_its_thread_after_the_restart() {
    let rig = rig().await;
    let list = format!("{ADELE} {MEGAN}");
    rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("users", &list), ("mode", "full")],
    );
    let (plan, short) = wait_batch_plan(&rig).await;
    let (fake, env) = rig.stop().await;
    // Approved in the store, as by a process that died before executing it.
    let id = env.engine.store().batches_by_prefix(&short).unwrap()[0]
        .id
        .clone();
    let id = o365_fixbot::domain::RunId::parse(&id).unwrap();
    assert!(env
        .engine
        .approve_batch(id, &o365_fixbot::domain::Actor::new("1002", "bob"))
        .unwrap());
    let rig = crate::discord::start_on(
        fake,
        env,
        crate::discord::approval(1, Duration::from_secs(1800)),
        |_| {},
        None,
    )
    .await;
    let summary = rig.fake.wait_text(plan, "bulk repair done", T).await;
    assert!(summary.contains("✅ 2 repaired"), "{summary}");
    let said = rig.thread(plan).join("\n");
    assert!(said.contains("continuing after a restart"), "{said}");
    assert_eq!(batch_state(&rig, &short), BatchState::Done);
    assert_eq!(rig.env.sb.provisioning_writes().len(), 2);
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_twenty_costs_a_few_discord_requests_not_some_per_user() {
    let rig = rig().await;
    let before = rig.fake.rest_count();
    let users: Vec<String> = (1..=20).map(ordinary_upn).collect();
    rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("users", &users.join(",")), ("mode", "full")],
    );
    let (plan, short) = wait_batch_plan(&rig).await;
    let planned = rig.fake.rest_count();
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    let summary = rig.fake.wait_text(plan, "bulk repair done", T).await;
    assert!(summary.contains("✅ 20 repaired"), "{summary}");
    rig.fake
        .wait_for("the plan's final state", T, |w| {
            w.messages[&plan]
                .content
                .contains("🏁 finished")
                .then_some(())
        })
        .await;
    assert_eq!(batch_state(&rig, &short), BatchState::Done);
    let by_route = rig.fake.world(|w| {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for r in &w.requests[before..] {
            *m.entry(format!("{} {}", r.method, r.template)).or_default() += 1;
        }
        m
    });
    let (setup, run) = (planned - before, rig.fake.rest_count() - planned);
    eprintln!("Discord requests for 20 users: {setup} to plan, {run} to run: {by_route:#?}");
    // The plan: the reply, the multipart plan, ✅, ❌, the thread. The run: the plan's state
    // twice, the progress message and its edits, the summary; nothing per user.
    assert!(setup <= 6, "{by_route:#?}");
    assert!(run <= 10, "{by_route:#?}");
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_awaiting_batch_is_cancelled_by_an_approver_not_by_a_stranger() {
    let rig = rig().await;
    let list = format!("{ADELE},{MEGAN}");
    rig.fake
        .slash(&alice(), CHANNEL, "fix-immutable-id", &[("users", &list)]);
    let (plan, short) = wait_batch_plan(&rig).await;
    let c = rig
        .fake
        .slash(&mallory(), CHANNEL, "cancel", &[("run", &short)]);
    reply_containing(&rig, c, "only the requester or an approver").await;
    assert_eq!(batch_state(&rig, &short), BatchState::AwaitingApproval);
    let c = rig
        .fake
        .slash(&bob(), CHANNEL, "cancel", &[("run", &short)]);
    reply_containing(&rig, c, "is cancelled").await;
    rig.fake.wait_text(plan, "cancelled by bob", T).await;
    assert_eq!(batch_state(&rig, &short), BatchState::Cancelled);
    let store = rig.env.engine.store();
    for m in &store.batches_by_prefix(&short).unwrap()[0].members {
        assert_eq!(store.run(m).unwrap().unwrap().state, RunState::Cancelled);
    }
    // A ✅ after the cancel starts nothing.
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake
        .wait_for("the plan's cancelled state", T, |w| {
            w.messages[&plan]
                .content
                .contains("cancelled")
                .then_some(())
        })
        .await;
    assert!(rig.env.sb.provisioning_writes().is_empty());
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_not_approved_in_time_expires_and_changes_nothing() {
    let rig = crate::discord::rig_with(
        crate::discord::approval(1, Duration::from_secs(2)),
        |_| {},
        crate::discord::small_sandbox(),
    )
    .await;
    let list = format!("{ADELE},{MEGAN}");
    rig.fake
        .slash(&alice(), CHANNEL, "fix-immutable-id", &[("users", &list)]);
    let (plan, short) = wait_batch_plan(&rig).await;
    let said = rig.fake.wait_text(plan, "expired", T).await;
    assert!(said.contains("<@1001>"), "the requester is told: {said}");
    assert_eq!(batch_state(&rig, &short), BatchState::Expired);
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake
        .wait_for("the plan's expired state", T, |w| {
            w.messages[&plan].content.contains("expired").then_some(())
        })
        .await;
    assert_eq!(batch_state(&rig, &short), BatchState::Expired);
    assert!(rig.env.sb.provisioning_writes().is_empty());
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_made_while_the_session_was_lost_is_read_back_and_starts_the_batch_once() {
    let rig = rig().await;
    let list = format!("{ADELE},{MEGAN}");
    rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("users", &list), ("mode", "full")],
    );
    let (plan, short) = wait_batch_plan(&rig).await;
    // The session is lost (op 9); until the next READY the gateway cannot deliver reactions.
    rig.fake.hold_ready(true);
    rig.fake.invalidate_session();
    rig.fake
        .wait_for("a new Identify, held", T, |w| {
            w.identify_waiting().then_some(())
        })
        .await;
    rig.fake.react_offline(&bob(), plan, "✅");
    rig.fake.hold_ready(false);
    // A new session reads the reaction back; the batch runs to its summary.
    let summary = rig
        .fake
        .wait_text(plan, "bulk repair done", Duration::from_secs(60))
        .await;
    assert!(summary.contains("✅ 2 repaired"), "{summary}");
    let starts = rig
        .thread(plan)
        .iter()
        .filter(|l| l.contains("approved by bob — starting"))
        .count();
    assert_eq!(starts, 1, "started once");
    assert_eq!(batch_state(&rig, &short), BatchState::Done);
    rig.finish(&[1001]).await;
}
