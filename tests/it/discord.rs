//! The Discord front end end to end: the real serenity client (in-process, over real HTTP and a
//! real websocket on 127.0.0.1) against the fake Discord, with the sandbox tenant behind the real
//! engine. Every test ends with [`Rig::finish`]: no REST request Discord does not document, no
//! message that could ping anyone the bot did not mean to.

use crate::fake_discord::{
    FakeDiscord, Person, APPROVER_ROLE, BOT_ID, CHANNEL, GUILD, OTHER_CHANNEL, REQUESTER_ROLE,
    TOKEN,
};
use crate::harness::calls_of;
use crate::pipeline::{env_with, test_policy, Env};
use o365_fixbot::chat::discord::{Bot, DiscordBot};
use o365_fixbot::config::{ApprovalSettings, DiscordSettings};
use o365_fixbot::domain::{Actor, RunState};
use o365_fixbot::ops::health::Readiness;
use o365_fixbot::pipeline::Plan;
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Fault, FaultAction, SandboxOptions};
use o365_fixbot::secret::Secret;
use o365_fixbot::store::VoteKind;
use serenity::all::ShardManager;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

pub fn alice() -> Person {
    Person::new(1001, "alice", &[REQUESTER_ROLE])
}
pub fn bob() -> Person {
    Person::new(1002, "bob", &[APPROVER_ROLE])
}
fn carol() -> Person {
    Person::new(1003, "carol", &[APPROVER_ROLE])
}
fn mallory() -> Person {
    Person::new(1004, "mallory", &[])
}

pub struct Rig {
    pub fake: FakeDiscord,
    pub env: Env,
    pub bot: Arc<Bot>,
    shards: Arc<ShardManager>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn settings(fake: &FakeDiscord) -> DiscordSettings {
    DiscordSettings {
        guild_ids: vec![GUILD],
        channel_ids: vec![CHANNEL],
        requester_role_ids: vec![REQUESTER_ROLE],
        approver_role_ids: vec![APPROVER_ROLE],
        api_base: Some(fake.base.parse().expect("url")),
        commands_per_minute: 600,
        command_burst: 100,
        max_open_runs: 50,
        ..DiscordSettings::default()
    }
}

pub fn approval(n: u32, ttl: Duration) -> ApprovalSettings {
    ApprovalSettings {
        approvals_required: n,
        ttl,
        ..ApprovalSettings::default()
    }
}

pub async fn rig_with(
    approval: ApprovalSettings,
    tweak: impl FnOnce(&mut DiscordSettings),
    opts: SandboxOptions,
) -> Rig {
    let env = env_with(opts, test_policy()).await;
    rig_on(env, approval, tweak).await
}

/// A bot started on an existing sandbox and store.
pub async fn rig_on(
    env: Env,
    approval: ApprovalSettings,
    tweak: impl FnOnce(&mut DiscordSettings),
) -> Rig {
    let fake = FakeDiscord::start().await;
    start_on(fake, env, approval, tweak, None).await
}

/// A bot started against an existing fake Discord (e.g. after an earlier bot was stopped), on an
/// existing sandbox and store. Returns once it has settled and taken up the runs left from
/// before and registered its commands.
pub async fn start_on(
    fake: FakeDiscord,
    env: Env,
    approval: ApprovalSettings,
    tweak: impl FnOnce(&mut DiscordSettings),
    readiness: Option<Readiness>,
) -> Rig {
    let puts = fake.world(|w| w.command_puts);
    let mut s = settings(&fake);
    tweak(&mut s);
    let bot = DiscordBot::new(
        env.engine.clone(),
        &approval,
        &s,
        &Secret::new(TOKEN),
        readiness,
    )
    .await
    .expect("the bot builds");
    let shards = bot.shard_manager();
    let handle = bot.bot();
    let task = tokio::spawn(bot.run());
    fake.wait_for("READY, startup and command registration", T, |w| {
        (w.ready_sent > 0 && w.command_puts > puts).then_some(())
    })
    .await;
    tokio::time::timeout(T, handle.wait_started())
        .await
        .expect("the bot finishes its startup");
    Rig {
        fake,
        env,
        bot: handle,
        shards,
        task,
    }
}

pub async fn rig() -> Rig {
    rig_with(
        approval(1, Duration::from_secs(1800)),
        |_| {},
        small_sandbox(),
    )
    .await
}

pub fn small_sandbox() -> SandboxOptions {
    SandboxOptions {
        ordinary_users: 20,
        ..SandboxOptions::default()
    }
}

impl Rig {
    /// `who` asks for a repair; waits for the ephemeral answer, the plan message and its thread.
    pub async fn request(&self, who: &Person, upn: &str, reason: &str) -> (u64, String) {
        let i = self.fake.slash(
            who,
            CHANNEL,
            "fix-immutable-id",
            &[("user", upn), ("reason", reason), ("mode", "full")],
        );
        let first = self.fake.wait_response(i, T).await;
        assert_eq!(
            first.response,
            Some((4, 64)),
            "answered ephemerally at once"
        );
        assert!(first.latency().unwrap() < Duration::from_secs(3));
        assert!(
            first.texts[0].contains("reading Entra and Okta"),
            "{:?}",
            first.texts
        );
        let plan = self.fake.wait_plan(CHANNEL, upn, T).await;
        let content = self.fake.world(|w| w.messages[&plan].content.clone());
        let run = content
            .split("(run ")
            .nth(1)
            .and_then(|r| r.get(..8))
            .expect("the plan names its run")
            .to_owned();
        self.fake
            .wait_for("the plan's thread", T, |w| {
                w.threads.contains_key(&plan).then_some(())
            })
            .await;
        // The set-up is recorded right after the thread is made; the store gives no signal,
        // so it is read until it says so (bounded).
        let store = self.env.engine.store();
        for _ in 0..400 {
            let rows = store.runs_by_prefix(&run).unwrap();
            let chat = store.chat_ref(&rows[0].id).unwrap();
            if chat.is_some_and(|c| c["thread"].is_string()) {
                return (plan, run);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the plan's set-up was never recorded");
    }

    /// The lines said in a run's thread, message by message (the progress message holds one
    /// line per step).
    pub fn thread(&self, plan: u64) -> Vec<String> {
        self.fake.world(|w| {
            w.texts_in(plan)
                .iter()
                .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
                .collect()
        })
    }

    pub fn plan_text(&self, plan: u64) -> String {
        self.fake.world(|w| w.messages[&plan].content.clone())
    }

    /// Stops the bot as a dying process would leave things: its gateway connection gone, and
    /// nothing more from it. Returns the fake Discord and the store for the next bot.
    pub async fn stop(self) -> (FakeDiscord, Env) {
        self.shards.shutdown_all().await;
        self.task.abort();
        self.fake
            .wait_for("the bot to leave the gateway", T, |w| {
                (!w.connected()).then_some(())
            })
            .await;
        (self.fake, self.env)
    }

    /// The stored plan of a run, by its short id.
    fn stored_plan(&self, run: &str) -> Plan {
        let row = &self.env.engine.store().runs_by_prefix(run).unwrap()[0];
        o365_fixbot::pipeline::read_plan(row.plan.as_ref().expect("a plan"))
            .expect("a plan")
            .1
    }

    pub fn state_of(&self, run: &str) -> RunState {
        self.env.engine.store().runs_by_prefix(run).unwrap()[0].state
    }

    /// The checks every test ends with.
    pub async fn finish(self, may_ping: &[u64]) {
        let v = self.fake.violations();
        assert!(v.is_empty(), "requests Discord would refuse: {v:#?}");
        let allowed: Vec<String> = may_ping.iter().map(|u| format!("user:{u}")).collect();
        self.fake.world(|w| {
            for m in w.messages.values() {
                for p in &m.pings {
                    assert!(allowed.contains(p), "message pings {p}: {:?}", m.content);
                }
                assert!(
                    m.versions.iter().all(|c| c.chars().count() <= 2000),
                    "overlong message"
                );
            }
            for i in w.interactions.values() {
                assert_eq!(i.callbacks, 1, "each interaction is answered exactly once");
            }
            assert!(
                w.requests.iter().all(|r| !r.path.contains("gateway/bot")),
                "single shard: no /gateway/bot"
            );
        });
        self.shards.shutdown_all().await;
        self.task.abort();
    }
}

fn steps_done(thread: &[String]) -> Vec<String> {
    thread
        .iter()
        .filter(|t| t.starts_with("✅ ") && t.contains("/9 "))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repair_from_command_to_summary() {
    let rig = rig().await;
    let identify = rig.fake.world(|w| w.identifies[0].clone());
    assert_eq!(
        identify["intents"],
        1 + (1 << 10),
        "GUILDS | GUILD_MESSAGE_REACTIONS only"
    );
    assert_eq!(identify["token"], format!("Bot {TOKEN}"));
    let names: Vec<String> = rig.fake.world(|w| {
        w.commands
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_owned())
            .collect()
    });
    assert_eq!(
        names,
        ["fix-immutable-id", "fix-status", "cancel", "diagnose"]
    );

    let (plan, run) = rig.request(&alice(), ADELE, "INC-4711 can't sign in").await;
    let text = rig.plan_text(plan);
    assert!(text.contains("Repair plan for adele@contoso.com"), "{text}");
    assert!(text.contains("State: ⏳ awaiting approval (0/1)"), "{text}");
    rig.fake.world(|w| {
        assert!(w.reactions.contains(&(plan, "✅".into(), BOT_ID)));
        assert!(w.reactions.contains(&(plan, "❌".into(), BOT_ID)));
        assert_eq!(w.threads[&plan].parent, CHANNEL);
        assert!(w.threads[&plan].name.contains("adele@contoso.com"));
    });

    rig.fake.react(&alice(), CHANNEL, plan, "✅");
    rig.fake
        .wait_text(
            plan,
            "alice's reaction does not count: you asked for this repair",
            T,
        )
        .await;
    rig.fake.react(&mallory(), CHANNEL, plan, "✅");
    rig.fake.react(&mallory(), CHANNEL, plan, "✅");
    rig.fake
        .wait_text(
            plan,
            "mallory's reaction does not count: you do not hold an approver role",
            T,
        )
        .await;
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake
        .wait_text(plan, "approved by bob — starting", T)
        .await;
    let summary = rig.fake.wait_text(plan, "🎉 done", T).await;
    assert!(
        summary.contains("<@1001>"),
        "the requester is told: {summary}"
    );

    let thread = rig.thread(plan);
    assert_eq!(steps_done(&thread).len(), 9, "{thread:#?}");
    // Each step once; the pause (5) opens alongside the Entra half, so it may come early.
    for n in 1..=9 {
        let prefix = format!("✅ {n}/9 ");
        assert_eq!(
            steps_done(&thread)
                .iter()
                .filter(|s| s.starts_with(&prefix))
                .count(),
            1,
            "step {n}: {thread:#?}"
        );
    }
    assert_eq!(
        thread
            .iter()
            .filter(|t| t.contains("mallory's reaction"))
            .count(),
        1,
        "told once per person"
    );
    assert!(
        !thread.iter().any(|t| t.contains("fixbot")),
        "the bot's own reactions are not votes: {thread:#?}"
    );
    rig.fake
        .wait_for("the plan message's final state", T, |w| {
            w.messages[&plan]
                .content
                .contains("State: 🎉 done · approved by bob")
                .then_some(())
        })
        .await;

    let user = rig.env.sb.entra_user(ADELE).unwrap();
    let okta_id = rig.env.sb.okta_user_id(ADELE).unwrap();
    let app = rig.env.sb.okta_app_user(&okta_id).unwrap();
    assert!(user.on_premises_immutable_id.is_some());
    assert_eq!(user.on_premises_immutable_id.as_deref(), app.immutable_id());
    assert_eq!(user.user_principal_name, ADELE);

    // Status, overall and for this run.
    let s = rig.fake.slash(&bob(), CHANNEL, "fix-status", &[]);
    let reply = rig.fake.wait_reply(s, T).await;
    assert_eq!(reply.response, Some((5, 64)));
    assert!(
        reply.last_text().contains(&run) && reply.last_text().contains("succeeded"),
        "{}",
        reply.last_text()
    );
    let s = rig
        .fake
        .slash(&bob(), CHANNEL, "fix-status", &[("run", &run)]);
    let reply = rig.fake.wait_reply(s, T).await;
    assert!(
        reply.last_text().contains("step 1"),
        "{}",
        reply.last_text()
    );
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejection_by_an_approver() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ALEX, "INC-1").await;
    rig.fake.react(&mallory(), CHANNEL, plan, "❌");
    rig.fake
        .wait_text(
            plan,
            "mallory's reaction does not count: only the requester or an approver can reject",
            T,
        )
        .await;
    rig.fake.react(&bob(), CHANNEL, plan, "❌");
    rig.fake
        .wait_text(plan, "❌ rejected by bob; nothing was changed", T)
        .await;
    rig.fake
        .wait_for("plan marked rejected", T, |w| {
            w.messages[&plan]
                .content
                .contains("State: ❌ rejected by bob")
                .then_some(())
        })
        .await;
    let row = &rig.env.engine.store().runs_by_prefix(&run).unwrap()[0];
    assert_eq!(row.state, RunState::Rejected);
    assert_eq!(calls_of(&rig.env.sb, "graph.update_user"), 0);
    assert_eq!(rig.bot.pending_runs(), 0);
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_requester_can_reject_their_own_request() {
    let rig = rig().await;
    let (plan, _) = rig.request(&alice(), ALEX, "oops").await;
    rig.fake.react(&alice(), CHANNEL, plan, "❌");
    rig.fake.wait_text(plan, "rejected by alice", T).await;
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_after_the_ttl_is_announced() {
    let rig = rig_with(
        approval(1, Duration::from_millis(1500)),
        |_| {},
        small_sandbox(),
    )
    .await;
    let (plan, run) = rig.request(&alice(), ALEX, "INC-2").await;
    let text = rig.fake.wait_text(plan, "⌛ this plan expired", T).await;
    assert!(text.contains("<@1001>"), "the requester is told: {text}");
    rig.fake
        .wait_for("plan marked expired", T, |w| {
            w.messages[&plan]
                .content
                .contains("State: ⌛ expired")
                .then_some(())
        })
        .await;
    assert_eq!(rig.bot.pending_runs(), 0);
    let row = &rig.env.engine.store().runs_by_prefix(&run).unwrap()[0];
    assert_eq!(row.state, RunState::Expired);
    assert_eq!(calls_of(&rig.env.sb, "graph.update_user"), 0);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_before_execution() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ALEX, "INC-3").await;
    let m = rig
        .fake
        .slash(&mallory(), CHANNEL, "cancel", &[("run", &run)]);
    let reply = rig.fake.wait_reply(m, T).await;
    assert!(
        reply
            .last_text()
            .contains("only the requester or an approver"),
        "{}",
        reply.last_text()
    );
    let c = rig
        .fake
        .slash(&alice(), CHANNEL, "cancel", &[("run", &run)]);
    let reply = rig.fake.wait_reply(c, T).await;
    assert_eq!(reply.response, Some((5, 64)));
    assert!(
        reply.last_text().contains("is cancelled"),
        "{}",
        reply.last_text()
    );
    rig.fake.wait_text(plan, "🛑 cancelled by alice", T).await;
    rig.fake
        .wait_for("plan marked cancelled", T, |w| {
            w.messages[&plan]
                .content
                .contains("State: 🛑 cancelled by alice")
                .then_some(())
        })
        .await;
    let row = &rig.env.engine.store().runs_by_prefix(&run).unwrap()[0];
    assert_eq!(row.state, RunState::Cancelled);
    // Too late now: a second cancel says so.
    let again = rig.fake.slash(&bob(), CHANNEL, "cancel", &[("run", &run)]);
    let reply = rig.fake.wait_reply(again, T).await;
    assert!(
        reply
            .last_text()
            .contains("is cancelled; only a run awaiting approval"),
        "{}",
        reply.last_text()
    );
    assert_eq!(calls_of(&rig.env.sb, "graph.update_user"), 0);
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_plan_is_not_executed() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ALEX, "INC-4").await;
    // Someone repairs ALEX by other means meanwhile.
    let other = crate::pipeline::plan(&rig.env, ALEX, None).await.unwrap();
    let (s, _) = crate::pipeline::run(&rig.env, &other).await;
    assert_eq!(s.outcome, o365_fixbot::pipeline::RunOutcome::Repaired);
    let writes = calls_of(&rig.env.sb, "graph.update_user");
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    let text = rig.fake.wait_text(plan, "the plan is stale", T).await;
    assert!(text.contains("Run the command again"), "{text}");
    rig.fake
        .wait_for("plan marked stale", T, |w| {
            w.messages[&plan]
                .content
                .contains("State: 🔁 stale")
                .then_some(())
        })
        .await;
    assert_eq!(calls_of(&rig.env.sb, "graph.update_user"), writes);
    let row = &rig.env.engine.store().runs_by_prefix(&run).unwrap()[0];
    assert_eq!(row.state, RunState::Stale);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_approvers_at_the_same_instant_execute_once() {
    let rig = rig().await;
    let (plan, _) = rig.request(&alice(), ADELE, "INC-5").await;
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.react(&carol(), CHANNEL, plan, "✅");
    rig.fake.wait_text(plan, "🎉 done", T).await;
    let thread = rig.thread(plan);
    assert_eq!(
        thread.iter().filter(|t| t.contains("— starting")).count(),
        1,
        "{thread:#?}"
    );
    assert_eq!(thread.iter().filter(|t| t.contains("🎉")).count(), 1);
    assert_eq!(steps_done(&thread).len(), 9);
    // One run's writes: UPN away, ID, UPN back.
    assert_eq!(calls_of(&rig.env.sb, "okta.assign"), 1);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_approvals_required_are_counted() {
    let rig = rig_with(
        approval(2, Duration::from_secs(1800)),
        |_| {},
        small_sandbox(),
    )
    .await;
    let (plan, _) = rig.request(&alice(), ALEX, "INC-6").await;
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake
        .wait_text(plan, "✅ approval 1/2 from bob", T)
        .await;
    rig.fake.react(&carol(), CHANNEL, plan, "✅");
    rig.fake
        .wait_text(plan, "approved by bob, carol — starting", T)
        .await;
    rig.fake.wait_text(plan, "🎉 done", T).await;
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_mid_pipeline_shows_the_step_the_code_and_each_compensation() {
    let rig = rig().await;
    let (plan, _) = rig.request(&alice(), MEGAN, "INC-7").await;
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
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    let summary = rig.fake.wait_text(plan, "failed and rolled back", T).await;
    // The pause opens alongside the Entra half; a refusal there closes it again untouched.
    assert!(
        summary.contains("provisioning was paused and restored exactly as before")
            || summary.contains("provisioning was not paused"),
        "{summary}"
    );
    let thread = rig.thread(plan);
    let failed = thread
        .iter()
        .find(|t| t.starts_with("❌ 2/9"))
        .unwrap_or_else(|| panic!("no failed step: {thread:#?}"));
    assert!(failed.contains("[Authorization_RequestDenied]"), "{failed}");
    assert!(
        thread.iter().any(|t| t.contains("↩ undo")),
        "compensations shown: {thread:#?}"
    );
    rig.fake
        .wait_for("plan marked rolled back", T, |w| {
            w.messages[&plan]
                .content
                .contains("State: ↩ failed and rolled back")
                .then_some(())
        })
        .await;
    let user = rig.env.sb.entra_user(MEGAN).unwrap();
    assert_eq!(user.user_principal_name, MEGAN);
    assert_eq!(
        user.on_premises_immutable_id.as_deref(),
        Some(MEGAN_ENTRA_IMMUTABLE_ID)
    );
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_pings_nobody_and_breaks_nothing() {
    let rig = rig().await;
    let reason = format!(
        "@everyone @here <@&{APPROVER_ROLE}> <@{}> ```rust\n}}``` {}",
        bob().id,
        "x".repeat(5000)
    );
    let (plan, _) = rig.request(&alice(), ADELE, &reason).await;
    let text = rig.plan_text(plan);
    assert!(text.chars().count() <= 2000);
    assert!(
        !text.contains("@everyone") && !text.contains("@here"),
        "{text}"
    );
    assert!(!text.contains("```"), "{text}");
    assert!(
        text.contains("State: ⏳"),
        "the state line survives: {text}"
    );
    // A hostile user name is refused, and the refusal does not echo a ping either.
    let i = rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("user", "@everyone"), ("immutable_id", "<@&1>")],
    );
    let reply = rig.fake.wait_reply(i, T).await;
    assert_eq!(
        reply.response,
        Some((4, 64)),
        "refused at once, ephemerally"
    );
    assert!(
        !reply.last_text().contains("@everyone"),
        "{}",
        reply.last_text()
    );
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bidi_reason_reads_as_typed_and_a_masked_link_shows_its_target() {
    let rig = rig().await;
    let reason = "INC-1 \u{202E}evitucexe yb devorppa\u{202C} \u{2067}[runbook](https://evil.example/ok)\u{2069}\u{200B}\u{FEFF}\u{00AD}";
    let (plan, _) = rig.request(&alice(), ADELE, reason).await;
    let text = rig.plan_text(plan);
    assert!(
        text.contains("Reason: INC-1 evitucexe yb devorppa [runbook] (https://evil.example/ok)"),
        "{text:?}"
    );
    assert!(
        !text.chars().any(o365_fixbot::domain::is_format_char),
        "{text:?}"
    );
    assert!(!text.contains("]("), "{text}");
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_dropped_mid_run_does_not_stop_the_run_or_its_thread() {
    let rig = rig().await;
    let (plan, _) = rig.request(&alice(), ADELE, "INC-8").await;
    // Hold the run in step 6 long enough to cut the gateway while it is under way (the
    // progress message shows step 5 from 2 s after the start).
    rig.env.sb.inject(Fault {
        op: "okta.unassign".into(),
        nth: 1,
        times: 1,
        action: FaultAction::Delay(Duration::from_millis(4000)),
    });
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.wait_text(plan, "5/9", T).await;
    let before = rig.thread(plan).len();
    rig.fake.drop_gateway();
    assert!(!rig.fake.world(|w| w.connected()));
    let summary = rig.fake.wait_text(plan, "🎉 done", T).await;
    let thread = rig.thread(plan);
    assert!(
        thread.len() > before,
        "results after the drop reached the thread"
    );
    assert_eq!(steps_done(&thread).len(), 9, "{thread:#?} {summary}");
    // And the bot comes back to the gateway by itself.
    rig.fake
        .wait_for("the bot to reconnect", Duration::from_secs(30), |w| {
            (w.connections >= 2 && (w.resumes > 0 || w.ready_sent > 1) && w.connected())
                .then_some(())
        })
        .await;
    let (plan2, _) = rig.request(&alice(), ALEX, "after reconnect").await;
    assert!(plan2 != plan);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abuse_limits_refuse_ephemerally_and_say_when_to_retry() {
    let rig = rig_with(
        approval(1, Duration::from_secs(1800)),
        |s| {
            s.commands_per_minute = 2;
            s.command_burst = 2;
            s.max_open_runs = 1;
        },
        small_sandbox(),
    )
    .await;
    let (_plan, _) = rig.request(&alice(), ADELE, "first").await;
    // The cap: one run is open.
    let dave = Person::new(1005, "dave", &[REQUESTER_ROLE]);
    let i = rig
        .fake
        .slash(&dave, CHANNEL, "fix-immutable-id", &[("user", ALEX)]);
    let reply = rig.fake.wait_reply(i, T).await;
    assert_eq!(reply.response, Some((4, 64)));
    assert!(
        reply.last_text().contains("the limit is 1") && reply.last_text().contains("try again"),
        "{}",
        reply.last_text()
    );
    // The rate: alice's burst of 2 is spent by the request above and one more.
    let a = rig.fake.slash(&alice(), CHANNEL, "fix-status", &[]);
    rig.fake.wait_reply(a, T).await;
    let b = rig.fake.slash(&alice(), CHANNEL, "fix-status", &[]);
    let reply = rig.fake.wait_reply(b, T).await;
    assert_eq!(reply.response, Some((4, 64)));
    assert!(
        reply.last_text().contains("too fast; try again in"),
        "{}",
        reply.last_text()
    );
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_configured_channels_and_requester_roles_may_ask() {
    let rig = rig().await;
    let i = rig.fake.slash(
        &alice(),
        OTHER_CHANNEL,
        "fix-immutable-id",
        &[("user", ADELE)],
    );
    let reply = rig.fake.wait_reply(i, T).await;
    assert_eq!(reply.response, Some((4, 64)));
    assert!(
        reply.last_text().contains("only in"),
        "{}",
        reply.last_text()
    );
    let i = rig
        .fake
        .slash(&mallory(), CHANNEL, "fix-immutable-id", &[("user", ADELE)]);
    let reply = rig.fake.wait_reply(i, T).await;
    assert!(
        reply.last_text().contains("requester role"),
        "{}",
        reply.last_text()
    );
    let i = rig.fake.slash(&mallory(), CHANNEL, "fix-status", &[]);
    let reply = rig.fake.wait_reply(i, T).await;
    assert!(
        reply.last_text().contains("only requesters and approvers"),
        "{}",
        reply.last_text()
    );
    // A refused plan stays private to the requester.
    let i = rig
        .fake
        .slash(&alice(), CHANNEL, "fix-immutable-id", &[("user", LYNNE)]);
    let reply = rig
        .fake
        .wait_for("the refusal", T, |w| {
            w.interactions[&i]
                .texts
                .iter()
                .any(|t| t.contains("refused"))
                .then(|| w.interactions[&i].clone())
        })
        .await;
    assert_eq!(
        reply.response,
        Some((4, 64)),
        "private from the first answer"
    );
    assert!(
        reply.last_text().contains("synced from on-premises AD"),
        "{}",
        reply.last_text()
    );
    assert!(
        rig.fake.world(|w| w.messages_in(CHANNEL).is_empty()),
        "nothing posted in the channel"
    );
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_awaiting_approval_never_posted_in_discord_is_closed_on_start() {
    let env = env_with(small_sandbox(), test_policy()).await;
    let orphan = crate::pipeline::plan(&env, ALEX, None).await.unwrap();
    let rig = rig_on(env, approval(1, Duration::from_secs(1800)), |_| {}).await;
    let row = rig
        .env
        .engine
        .store()
        .run(&orphan.run.to_string())
        .unwrap()
        .unwrap();
    assert_eq!(
        row.state,
        RunState::Cancelled,
        "nobody could approve it in Discord"
    );
    assert_eq!(rig.bot.pending_runs(), 0);
    rig.finish(&[]).await;
}

// --- restarts -------------------------------------------------------------------------------

fn count(thread: &[String], needle: &str) -> usize {
    thread.iter().filter(|t| t.contains(needle)).count()
}

fn assert_repaired(env: &Env, upn: &str) {
    let user = env.sb.entra_user(upn).unwrap();
    let okta_id = env.sb.okta_user_id(upn).unwrap();
    let app = env.sb.okta_app_user(&okta_id).unwrap();
    assert_eq!(
        user.user_principal_name, upn,
        "not left on the temporary UPN"
    );
    assert!(user.on_premises_immutable_id.is_some());
    assert_eq!(user.on_premises_immutable_id.as_deref(), app.immutable_id());
    assert_eq!(
        env.sb.provisioning_capabilities(),
        env.initial_caps,
        "provisioning restored exactly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chat_ref_is_stored_with_each_plan() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ALEX, "INC-10").await;
    let id = rig.stored_plan(&run).run.to_string();
    let chat = rig
        .env
        .engine
        .store()
        .chat_ref(&id)
        .unwrap()
        .expect("stored");
    assert_eq!(chat["guild"], GUILD.to_string());
    assert_eq!(chat["channel"], CHANNEL.to_string());
    assert_eq!(chat["message"], plan.to_string());
    assert_eq!(chat["thread"], plan.to_string());
    assert_eq!(chat["requester"], alice().id.to_string());
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_made_while_the_bot_was_down_executes_the_run_once() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ADELE, "INC-11").await;
    let (fake, env) = rig.stop().await;
    // While no bot is connected: judged later by the same policy as live reactions.
    fake.react_offline(&mallory(), plan, "❌");
    fake.react_offline(&alice(), plan, "✅");
    fake.react_offline(&bob(), plan, "✅");
    let rig = start_on(
        fake,
        env,
        approval(1, Duration::from_secs(1800)),
        |_| {},
        None,
    )
    .await;
    rig.fake
        .wait_text(
            plan,
            "🔄 the bot restarted; this plan still awaits approval",
            T,
        )
        .await;
    rig.fake
        .wait_text(
            plan,
            "mallory's reaction does not count: only the requester or an approver can reject",
            T,
        )
        .await;
    rig.fake
        .wait_text(
            plan,
            "alice's reaction does not count: you asked for this repair",
            T,
        )
        .await;
    rig.fake
        .wait_text(plan, "approved by bob — starting", T)
        .await;
    rig.fake.wait_text(plan, "🎉 done", T).await;
    // The same reaction delivered live again (as a resume would) changes nothing.
    rig.fake.redispatch_reaction(&bob(), CHANNEL, plan, "✅");
    rig.fake
        .wait_for("the plan message's final state", T, |w| {
            w.messages[&plan]
                .content
                .contains("State: 🎉 done · approved by bob")
                .then_some(())
        })
        .await;
    let thread = rig.thread(plan);
    assert_eq!(count(&thread, "— starting"), 1, "{thread:#?}");
    assert_eq!(count(&thread, "🎉"), 1, "{thread:#?}");
    assert_eq!(steps_done(&thread).len(), 9, "{thread:#?}");
    assert_eq!(calls_of(&rig.env.sb, "okta.assign"), 1);
    assert_eq!(rig.state_of(&run), RunState::Succeeded);
    let id = rig.stored_plan(&run).run.to_string();
    assert_eq!(
        rig.env.engine.store().approvers(&id).unwrap(),
        vec![(bob().id.to_string(), "bob".to_owned())],
        "the approval read back is recorded"
    );
    assert_repaired(&rig.env, ADELE);
    rig.fake.world(|w| {
        let read_back = |t: &str| w.requests.iter().filter(|r| r.template == t).count();
        assert_eq!(
            read_back("/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}"),
            2,
            "❌ then ✅ read back, one page each"
        );
        assert_eq!(
            read_back("/guilds/{guild_id}/members/{user_id}"),
            3,
            "each reactor's roles read (mallory, alice, bob)"
        );
    });
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_whose_set_up_was_cut_short_is_finished_on_start() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ALEX, "INC-18").await;
    let id = rig.stored_plan(&run).run.to_string();
    let (fake, env) = rig.stop().await;
    // The process died after creating the thread, before recording it, and one of the bot's
    // own reactions never made it.
    let mut chat = env.engine.store().chat_ref(&id).unwrap().unwrap();
    chat["thread"] = serde_json::Value::Null;
    env.engine.store().set_chat_ref(&id, &chat).unwrap();
    fake.world_mut(|w| {
        w.reactions
            .retain(|(m, e, u)| !(*m == plan && e == "❌" && *u == BOT_ID))
    });
    let rig = start_on(
        fake,
        env,
        approval(1, Duration::from_secs(1800)),
        |_| {},
        None,
    )
    .await;
    rig.fake
        .wait_text(
            plan,
            "🔄 the bot restarted; this plan still awaits approval",
            T,
        )
        .await;
    rig.fake.world(|w| {
        assert!(w.reactions.contains(&(plan, "❌".into(), BOT_ID)));
    });
    let chat = rig.env.engine.store().chat_ref(&id).unwrap().unwrap();
    assert_eq!(chat["thread"], plan.to_string());
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.wait_text(plan, "🎉 done", T).await;
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reactions_read_back_are_paginated() {
    let rig = rig().await;
    let (plan, _) = rig.request(&alice(), ALEX, "INC-17").await;
    let (fake, env) = rig.stop().await;
    // 120 people without a role react first (by id), then an approver: two pages of 100.
    for i in 0..120 {
        fake.react_offline(&Person::new(2000 + i, "visitor", &[]), plan, "✅");
    }
    let dana = Person::new(5000, "dana", &[APPROVER_ROLE]);
    fake.react_offline(&dana, plan, "✅");
    let rig = start_on(
        fake,
        env,
        approval(1, Duration::from_secs(1800)),
        |_| {},
        None,
    )
    .await;
    rig.fake
        .wait_text(plan, "approved by dana — starting", T)
        .await;
    rig.fake.wait_text(plan, "🎉 done", T).await;
    let pages: Vec<String> = rig.fake.world(|w| {
        w.requests
            .iter()
            .filter(|r| r.path.ends_with("/reactions/✅"))
            .map(|r| r.path.clone())
            .collect()
    });
    assert_eq!(pages.len(), 2, "{pages:?}");
    let thread = rig.thread(plan);
    assert_eq!(
        count(&thread, "120 reactions do not count"),
        1,
        "{thread:#?}"
    );
    assert!(count(&thread, "visitor's reaction does not count") > 10);
    // One message, kept up to date, rather than 120 posts under a 5-per-5-s channel limit.
    assert!(rig.fake.world(|w| w.texts_in(plan).len()) < 10);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_after_the_restart_executes_once_and_earlier_approvals_still_count() {
    let two = || approval(2, Duration::from_secs(1800));
    let rig = rig_with(two(), |_| {}, small_sandbox()).await;
    let (plan, run) = rig.request(&alice(), ADELE, "INC-12").await;
    rig.fake.react(&carol(), CHANNEL, plan, "✅");
    rig.fake
        .wait_text(plan, "✅ approval 1/2 from carol", T)
        .await;
    let (fake, env) = rig.stop().await;
    let rig = start_on(fake, env, two(), |_| {}, None).await;
    rig.fake
        .wait_for("the plan message to show 1/2 again", T, |w| {
            w.messages[&plan]
                .content
                .contains("awaiting approval (1/2)")
                .then_some(())
        })
        .await;
    assert_eq!(rig.bot.pending_runs(), 1);
    // /fix-status reads the store: the run from before the restart is there.
    let s = rig.fake.slash(&bob(), CHANNEL, "fix-status", &[]);
    let reply = rig.fake.wait_reply(s, T).await;
    assert!(
        reply.last_text().contains("Awaiting approval (1)") && reply.last_text().contains(&run),
        "{}",
        reply.last_text()
    );
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.redispatch_reaction(&bob(), CHANNEL, plan, "✅");
    rig.fake
        .wait_text(plan, "approved by carol, bob — starting", T)
        .await;
    rig.fake.wait_text(plan, "🎉 done", T).await;
    let thread = rig.thread(plan);
    assert_eq!(
        count(&thread, "approval 1/2"),
        1,
        "carol's approval is not announced again: {thread:#?}"
    );
    assert_eq!(count(&thread, "does not count"), 0, "{thread:#?}");
    assert_eq!(count(&thread, "— starting"), 1, "{thread:#?}");
    assert_eq!(calls_of(&rig.env.sb, "okta.assign"), 1);
    let s = rig
        .fake
        .slash(&bob(), CHANNEL, "fix-status", &[("run", &run)]);
    let reply = rig.fake.wait_reply(s, T).await;
    assert!(
        reply.last_text().contains("succeeded")
            && reply.last_text().contains("Approved by carol, bob"),
        "{}",
        reply.last_text()
    );
    assert_repaired(&rig.env, ADELE);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_that_expired_while_the_bot_was_down_is_announced_as_expired() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ALEX, "INC-13").await;
    let (fake, env) = rig.stop().await;
    // Too late: the TTL ran out while the bot was down.
    fake.react_offline(&bob(), plan, "✅");
    let rig = start_on(
        fake,
        env,
        approval(1, Duration::from_millis(1)),
        |_| {},
        None,
    )
    .await;
    let text = rig
        .fake
        .wait_text(
            plan,
            "while the bot was offline, without enough approvals",
            T,
        )
        .await;
    assert!(text.contains("<@1001>"), "the requester is told: {text}");
    rig.fake
        .wait_for("plan marked expired", T, |w| {
            w.messages[&plan]
                .content
                .contains("State: ⌛ expired")
                .then_some(())
        })
        .await;
    assert_eq!(rig.state_of(&run), RunState::Expired);
    assert_eq!(rig.bot.pending_runs(), 0);
    assert_eq!(calls_of(&rig.env.sb, "graph.update_user"), 0);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_interrupted_mid_pipeline_is_settled_on_start_and_its_thread_told() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ADELE, "INC-14").await;
    let stored = rig.stored_plan(&run);
    let (fake, env) = rig.stop().await;
    // What a process that died during step 1 leaves: approved, running, and the intent of the
    // first write journalled without its outcome.
    let id = stored.run.to_string();
    let store = env.engine.store();
    assert_eq!(
        env.engine
            .record_vote(&stored, &Actor::new("1002", "bob"), VoteKind::Approve, 1)
            .unwrap(),
        Some((1, true))
    );
    assert!(store
        .transition_run(&id, &[RunState::Approved], RunState::Running)
        .unwrap());
    store
        .journal_intent(
            &id,
            "1",
            "graph.update_user",
            stored.entra_id.as_str(),
            &serde_json::json!({"userPrincipalName": ADELE}),
            &serde_json::json!({"userPrincipalName": stored.temporary_upn.as_ref().map(|u| u.to_string())}),
        )
        .unwrap();
    let rig = start_on(
        fake,
        env,
        approval(1, Duration::from_secs(1800)),
        |_| {},
        None,
    )
    .await;
    // Startup is done once the bot takes commands: the run is settled by then.
    rig.fake
        .wait_text(plan, "the bot restarted during step 1", T)
        .await;
    let thread = rig.thread(plan);
    let note = thread
        .iter()
        .find(|l| l.contains("the bot restarted during step 1"))
        .expect("the note");
    assert!(note.starts_with("ℹ"), "{note}");
    let summary = rig.fake.wait_text(plan, "· requested by <@1001>", T).await;
    rig.fake
        .wait_for("the plan message's final state", T, |w| {
            let c = &w.messages[&plan].content;
            (!c.contains("awaiting approval") && c.contains("approved by bob")).then_some(())
        })
        .await;
    let state = rig.state_of(&run);
    assert_eq!(state, RunState::Succeeded, "{summary}");
    assert_repaired(&rig.env, ADELE);
    assert_eq!(rig.bot.pending_runs(), 0);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_approved_but_not_started_before_the_restart_runs_once_on_start() {
    let rig = rig().await;
    let (plan, run) = rig.request(&alice(), ALEX, "INC-15").await;
    let stored = rig.stored_plan(&run);
    let (fake, env) = rig.stop().await;
    env.engine
        .record_vote(&stored, &Actor::new("1002", "bob"), VoteKind::Approve, 1)
        .unwrap();
    let rig = start_on(
        fake,
        env,
        approval(1, Duration::from_secs(1800)),
        |_| {},
        None,
    )
    .await;
    rig.fake
        .wait_text(plan, "the bot restarted after this run was approved", T)
        .await;
    rig.fake.wait_text(plan, "🎉 done", T).await;
    assert_eq!(calls_of(&rig.env.sb, "okta.assign"), 1);
    assert_eq!(rig.state_of(&run), RunState::Succeeded);
    rig.finish(&[1001]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicated_dispatches_execute_once_and_say_nothing_twice() {
    let rig = rig().await;
    // The same slash command delivered twice: one plan, one answer.
    let i = rig.fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("user", ADELE), ("reason", "INC-16"), ("mode", "full")],
    );
    rig.fake.redispatch_interaction(i);
    let plan = rig.fake.wait_plan(CHANNEL, ADELE, T).await;
    rig.fake
        .wait_for("the plan's thread", T, |w| {
            w.threads.contains_key(&plan).then_some(())
        })
        .await;
    assert_eq!(
        rig.fake.world(|w| w.interactions[&i].texts.len()),
        1,
        "answered once"
    );
    // The same reaction delivered twice.
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    rig.fake.redispatch_reaction(&bob(), CHANNEL, plan, "✅");
    rig.fake.wait_text(plan, "🎉 done", T).await;
    // A later command is answered, so the duplicates were processed long before.
    let s = rig.fake.slash(&bob(), CHANNEL, "fix-status", &[]);
    rig.fake.wait_reply(s, T).await;
    let thread = rig.thread(plan);
    assert_eq!(count(&thread, "— starting"), 1, "{thread:#?}");
    assert_eq!(count(&thread, "does not count"), 0, "{thread:#?}");
    assert_eq!(count(&thread, "🎉"), 1, "{thread:#?}");
    assert_eq!(calls_of(&rig.env.sb, "okta.assign"), 1);
    assert_eq!(
        rig.fake.world(|w| w
            .messages_in(CHANNEL)
            .iter()
            .filter(|m| m.content.contains("Repair plan for"))
            .count()),
        1,
        "one plan message"
    );
    rig.finish(&[1001]).await;
}

/// Readiness has no change signal: polled, bounded.
async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_the_gateway_connection() {
    let env = env_with(small_sandbox(), test_policy()).await;
    let ready = Readiness::new(env.engine.store().clone());
    assert!(!ready.connected());
    let fake = FakeDiscord::start().await;
    let rig = start_on(
        fake,
        env,
        approval(1, Duration::from_secs(1800)),
        |_| {},
        Some(ready.clone()),
    )
    .await;
    assert!(ready.connected(), "READY makes it ready");
    let (plan, run) = rig.request(&alice(), ALEX, "before the outage").await;
    // An outage: the socket drops and the gateway refuses new connections for a while.
    rig.fake.set_gateway_down(true);
    rig.fake.drop_gateway();
    until("readiness to drop", Duration::from_secs(20), || {
        !ready.connected()
    })
    .await;
    // Meanwhile an approver reacts; the gateway cannot deliver it.
    rig.fake.react_offline(&bob(), plan, "✅");
    rig.fake.set_gateway_down(false);
    until("readiness to come back", Duration::from_secs(30), || {
        ready.connected()
    })
    .await;
    assert!(rig.fake.world(|w| w.connected() && w.ready_sent >= 2));
    // A new session: the reaction is read back, and the run executes once.
    rig.fake
        .wait_text(plan, "approved by bob — starting", T)
        .await;
    rig.fake.wait_text(plan, "🎉 done", T).await;
    assert_eq!(rig.state_of(&run), RunState::Succeeded);
    assert_eq!(count(&rig.thread(plan), "— starting"), 1);
    // Shut down: not ready any more.
    let v = rig.fake.violations();
    assert!(v.is_empty(), "{v:#?}");
    rig.fake.world(|w| {
        for m in w.messages.values() {
            assert!(m.pings.iter().all(|p| p == "user:1001"), "{:?}", m.content);
        }
    });
    rig.shards.shutdown_all().await;
    tokio::time::timeout(T, rig.task)
        .await
        .expect("the bot stops")
        .expect("the task ends")
        .expect("a clean stop");
    assert!(!ready.connected());
}

// --- check-config --online ------------------------------------------------------------------

mod check {
    use super::*;
    use crate::fake_discord::{
        overwrite, perm, BOT_ROLE, FOREIGN_CHANNEL, OTHER_GUILD, VOICE_CHANNEL,
    };
    use o365_fixbot::chat::discord::check::check_discord;
    use o365_fixbot::ops::check_report::Check;

    async fn run(fake: &FakeDiscord, tweak: impl FnOnce(&mut DiscordSettings)) -> Vec<Check> {
        let mut s = settings(fake);
        tweak(&mut s);
        check_discord(&s, &Secret::new(TOKEN)).await
    }

    fn failures(checks: &[Check]) -> Vec<String> {
        checks
            .iter()
            .filter_map(|c| c.failure().map(str::to_owned))
            .collect()
    }

    fn only_gets(fake: &FakeDiscord) {
        fake.world(|w| {
            assert!(w.requests.iter().all(|r| r.method == "GET"), "read-only");
        });
        let v = fake.violations();
        assert!(v.is_empty(), "{v:#?}");
    }

    #[tokio::test]
    async fn everything_in_place_passes() {
        let fake = FakeDiscord::start().await;
        let checks = run(&fake, |_| {}).await;
        assert!(checks.iter().all(Check::passed), "{checks:#?}");
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "discord token".to_owned(),
                format!("discord guild {GUILD}"),
                format!("discord channel {CHANNEL}")
            ]
        );
        assert!(checks[0].to_string().contains("fixbot"), "{}", checks[0]);
        only_gets(&fake);
    }

    #[tokio::test]
    async fn a_bad_token_is_named() {
        let fake = FakeDiscord::start().await;
        let mut s = settings(&fake);
        s.guild_ids = vec![GUILD];
        let checks = check_discord(&s, &Secret::new("not-the-token")).await;
        assert_eq!(checks.len(), 1, "nothing else can be checked: {checks:#?}");
        let f = failures(&checks);
        assert!(
            f[0].contains("Discord rejected the bot token") && f[0].contains("401"),
            "{f:?}"
        );
        assert!(!f[0].contains("not-the-token"), "the secret is never shown");
    }

    #[tokio::test]
    async fn an_unreachable_guild_and_missing_or_misplaced_channels_are_named() {
        let fake = FakeDiscord::start().await;
        let missing: u64 = 800_000_000_000_000_099;
        let checks = run(&fake, |s| {
            s.guild_ids = vec![GUILD, 800_000_000_000_000_077];
            s.channel_ids = vec![CHANNEL, missing, FOREIGN_CHANNEL, VOICE_CHANNEL];
        })
        .await;
        let f = failures(&checks);
        assert_eq!(f.len(), 4, "{checks:#?}");
        assert!(
            f[0].contains("guild 800000000000000077 is not reachable"),
            "{f:?}"
        );
        assert!(
            f[1].contains(&format!("channel {missing} does not exist")),
            "{f:?}"
        );
        assert!(
            f[2].contains(&format!(
                "channel {FOREIGN_CHANNEL} is in guild {OTHER_GUILD}, which is not in discord.guild_ids"
            )),
            "{f:?}"
        );
        assert!(
            f[3].contains(&format!("channel {VOICE_CHANNEL} is of type 2")),
            "{f:?}"
        );
        assert!(checks
            .iter()
            .any(|c| c.name == format!("discord channel {CHANNEL}") && c.passed()));
    }

    #[tokio::test]
    async fn a_permission_missing_from_the_roles_is_named() {
        let fake = FakeDiscord::start().await;
        fake.world_mut(|w| {
            w.guild.roles = vec![
                (
                    GUILD,
                    perm::VIEW_CHANNEL | perm::SEND_MESSAGES | perm::READ_MESSAGE_HISTORY,
                ),
                (
                    BOT_ROLE,
                    perm::CREATE_PUBLIC_THREADS
                        | perm::SEND_MESSAGES_IN_THREADS
                        | perm::ATTACH_FILES,
                ),
            ]
        });
        let checks = run(&fake, |_| {}).await;
        let f = failures(&checks);
        assert_eq!(f.len(), 1, "{checks:#?}");
        assert!(
            f[0].starts_with(&format!("channel {CHANNEL}: the bot lacks ADD_REACTIONS (")),
            "{f:?}"
        );
        assert!(f[0].contains("not granted by @everyone or any of the bot's roles"));
        assert!(
            !f[0].contains("SEND_MESSAGES"),
            "only what is missing: {f:?}"
        );
        only_gets(&fake);
    }

    /// A bulk repair's plan carries its CSV: without ATTACH_FILES it could not be posted.
    #[tokio::test]
    async fn a_bot_that_cannot_attach_files_is_told_so() {
        let fake = FakeDiscord::start().await;
        fake.world_mut(|w| {
            w.guild.roles[1].1 &= !perm::ATTACH_FILES;
        });
        let checks = run(&fake, |_| {}).await;
        let f = failures(&checks);
        assert_eq!(f.len(), 1, "{checks:#?}");
        assert!(
            f[0].contains("the bot lacks ATTACH_FILES (to attach a bulk repair's CSV"),
            "{f:?}"
        );
        only_gets(&fake);
    }

    #[tokio::test]
    async fn permissions_denied_by_channel_overwrites_are_named() {
        let fake = FakeDiscord::start().await;
        fake.world_mut(|w| {
            w.guild.overwrites.insert(
                CHANNEL,
                vec![overwrite(
                    BOT_ROLE,
                    0,
                    0,
                    perm::SEND_MESSAGES_IN_THREADS | perm::CREATE_PUBLIC_THREADS,
                )],
            );
        });
        let checks = run(&fake, |_| {}).await;
        let f = failures(&checks);
        assert_eq!(f.len(), 1, "{checks:#?}");
        assert!(
            f[0].contains("the bot lacks CREATE_PUBLIC_THREADS")
                && f[0].contains("SEND_MESSAGES_IN_THREADS")
                && f[0].contains("denied by this channel's permission overwrites"),
            "{f:?}"
        );
        // A member overwrite hiding the channel from the bot.
        fake.world_mut(|w| {
            w.guild.overwrites.insert(
                CHANNEL,
                vec![overwrite(
                    crate::fake_discord::BOT_ID,
                    1,
                    0,
                    perm::VIEW_CHANNEL,
                )],
            );
        });
        let f = failures(&run(&fake, |_| {}).await);
        assert!(f[0].contains("the bot lacks VIEW_CHANNEL"), "{f:?}");
        only_gets(&fake);
    }

    #[tokio::test]
    async fn overwrites_can_grant_and_administrators_and_owners_have_everything() {
        let fake = FakeDiscord::start().await;
        // @everyone is denied everything in the channel; the bot's role is allowed it back.
        fake.world_mut(|w| {
            let all = perm::VIEW_CHANNEL
                | perm::SEND_MESSAGES
                | perm::READ_MESSAGE_HISTORY
                | perm::ADD_REACTIONS;
            w.guild.overwrites.insert(
                CHANNEL,
                vec![overwrite(GUILD, 0, 0, all), overwrite(BOT_ROLE, 0, all, 0)],
            );
        });
        assert!(failures(&run(&fake, |_| {}).await).is_empty());
        // ADMINISTRATOR ignores every overwrite.
        fake.world_mut(|w| {
            w.guild.roles = vec![(GUILD, 0), (BOT_ROLE, perm::ADMINISTRATOR)];
            w.guild.overwrites.insert(
                CHANNEL,
                vec![overwrite(crate::fake_discord::BOT_ID, 1, 0, u64::MAX >> 1)],
            );
        });
        assert!(failures(&run(&fake, |_| {}).await).is_empty());
        // So does owning the guild.
        fake.world_mut(|w| {
            w.guild.roles = vec![(GUILD, 0)];
            w.guild.bot_roles = vec![];
            w.guild.owner = crate::fake_discord::BOT_ID;
        });
        assert!(failures(&run(&fake, |_| {}).await).is_empty());
        only_gets(&fake);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diagnose_is_answered_ephemerally_and_writes_nothing() {
    let rig = rig().await;
    rig.env.sb.reset_calls();
    let i = rig
        .fake
        .slash(&bob(), CHANNEL, "diagnose", &[("user", MEGAN)]);
    let reply = rig.fake.wait_reply(i, T).await;
    assert_eq!(reply.response, Some((5, 64)), "deferred, ephemeral");
    let text = reply.last_text();
    assert!(text.contains("Diagnosis of megan@contoso.com"), "{text}");
    assert!(
        text.contains("Entra and Okta hold different ImmutableIDs"),
        "{text}"
    );
    assert!(text.contains(MEGAN_OKTA_IMMUTABLE_ID), "{text}");
    assert!(text.chars().count() <= 2000);
    let writes: Vec<_> = rig
        .env
        .sb
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET" && !c.op.ends_with(".token"))
        .collect();
    assert!(writes.is_empty(), "diagnose wrote: {writes:?}");

    // public:true answers in the channel: deferred without the ephemeral flag.
    let i = rig.fake.slash(
        &bob(),
        CHANNEL,
        "diagnose",
        &[("user", GRADY), ("public", "true")],
    );
    let reply = rig.fake.wait_reply(i, T).await;
    assert_eq!(reply.response, Some((5, 0)), "deferred, public");
    assert!(
        reply.last_text().contains("assigned through a group"),
        "{}",
        reply.last_text()
    );

    // A malformed UPN is answered at once; someone without a role is refused.
    let i = rig
        .fake
        .slash(&alice(), CHANNEL, "diagnose", &[("user", "nobody")]);
    let reply = rig.fake.wait_reply(i, T).await;
    assert_eq!(reply.response, Some((4, 64)));
    assert!(reply.last_text().contains("user:"), "{}", reply.last_text());
    let i = rig
        .fake
        .slash(&mallory(), CHANNEL, "diagnose", &[("user", MEGAN)]);
    let reply = rig.fake.wait_reply(i, T).await;
    assert!(
        reply.last_text().contains("only requesters and approvers"),
        "{}",
        reply.last_text()
    );
    rig.finish(&[]).await;
}

/// A diagnosis offers its fix as a button; pressing it makes the plan exactly as
/// `/fix-immutable-id` would (the same mode and value), awaiting a second person's approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_diagnosis_button_plans_the_fix_for_a_second_persons_approval() {
    let rig = rig().await;
    let diag = rig
        .fake
        .slash(&bob(), CHANNEL, "diagnose", &[("user", MEGAN)]);
    let reply = rig.fake.wait_reply(diag, T).await;
    let buttons: Vec<String> = reply
        .components
        .iter()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["custom_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(buttons.len(), 1, "one offered fix: {:?}", reply.components);
    assert!(
        buttons[0].starts_with(&format!("fix:e:{MEGAN_OKTA_IMMUTABLE_ID}:")),
        "{buttons:?}"
    );
    // A healthy user is offered nothing.
    let i = rig
        .fake
        .slash(&bob(), CHANNEL, "diagnose", &[("user", &ordinary_upn(1))]);
    assert!(rig.fake.wait_reply(i, T).await.components.is_empty());

    // alice presses bob's button (as a public diagnosis allows): she is the requester.
    let press = rig.fake.press(&alice(), CHANNEL, diag, &buttons[0]);
    let answer = rig.fake.wait_reply(press, T).await;
    assert_eq!(answer.response, Some((4, 64)), "answered privately at once");
    let plan = rig.fake.wait_plan(CHANNEL, MEGAN, T).await;
    let text = rig.fake.world(|w| w.messages[&plan].content.clone());
    assert!(text.contains("Mode: Entra-only"), "{text}");
    assert!(text.contains(MEGAN_OKTA_IMMUTABLE_ID), "{text}");
    assert!(text.contains("Requested by alice"), "{text}");
    rig.fake
        .wait_for("the plan's thread", T, |w| {
            w.threads.contains_key(&plan).then_some(())
        })
        .await;
    rig.fake.react(&alice(), CHANNEL, plan, "✅");
    rig.fake
        .wait_text(plan, "alice's reaction does not count", T)
        .await;
    rig.fake.react(&bob(), CHANNEL, plan, "✅");
    let summary = rig.fake.wait_text(plan, "🎉 done", T).await;
    assert!(summary.contains(MEGAN_OKTA_IMMUTABLE_ID), "{summary}");
    assert_eq!(
        rig.env
            .sb
            .entra_user(MEGAN)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(MEGAN_OKTA_IMMUTABLE_ID)
    );
    assert!(
        rig.env.sb.provisioning_writes().is_empty(),
        "Okta untouched"
    );

    // A button this bot did not make changes nothing.
    let forged = rig
        .fake
        .press(&alice(), CHANNEL, diag, "fix:e:AAAA:not-an-id");
    let reply = rig.fake.wait_reply(forged, T).await;
    assert!(
        reply.last_text().contains("not one this bot knows"),
        "{}",
        reply.last_text()
    );
    rig.finish(&[alice().id]).await;
}
