//! The watch: System Log provisioning failures become diagnosis cards, through the real Okta
//! and Graph clients against the sandbox, with the state in a real store file.

use crate::discord::{alice, bob, rig};
use crate::fake_discord::CHANNEL;
use crate::harness::{graph, okta, sandbox_with};
use crate::pipeline::test_policy;
use o365_fixbot::approval::ApprovalPolicy;
use o365_fixbot::chat::console::Console;
use o365_fixbot::config::{ApprovalSettings, WatchSettings};
use o365_fixbot::directory::graph::UserPatch;
use o365_fixbot::domain::EntraObjectId;
use o365_fixbot::pipeline::Engine;
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Sandbox, SandboxOptions};
use o365_fixbot::store::Store;
use o365_fixbot::watch::{Clock, Watch};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const T: Duration = Duration::from_secs(20);

fn settings(page_limit: u32) -> WatchSettings {
    WatchSettings {
        page_limit,
        lookback: Duration::from_secs(3600),
        ..WatchSettings::default()
    }
}

fn data_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fixbot-watch-{}", uuid::Uuid::new_v4().simple()))
}

/// An engine on `dir`'s store (opening it as a restarted bot would).
fn engine(sb: &Sandbox, dir: &Path) -> Engine {
    Engine::new(
        graph(sb),
        okta(sb),
        Store::open(dir).expect("store opens"),
        test_policy(),
    )
}

async fn small() -> Sandbox {
    sandbox_with(SandboxOptions {
        ordinary_users: 3,
        ..SandboxOptions::default()
    })
    .await
}

/// A clock the test moves by hand.
fn manual_clock(start: SystemTime) -> (Clock, Arc<Mutex<SystemTime>>) {
    let now = Arc::new(Mutex::new(start));
    let c = now.clone();
    (Arc::new(move || *c.lock().unwrap()), now)
}

fn card_users(cards: &[o365_fixbot::watch::Card]) -> Vec<String> {
    let mut v: Vec<String> = cards.iter().map(|c| c.upn.clone()).collect();
    v.sort();
    v
}

/// A provisioning failure as Okta logs it for the Office 365 app, about `upn`.
fn failure_about(upn: &str, app: &str, event_type: &str, result: &str) -> Value {
    json!({
        "eventType": event_type,
        "displayMessage": "Push user to Microsoft Office 365 failed",
        "outcome": { "result": result, "reason": "test failure" },
        "target": [
            { "id": "0ua1", "type": "AppUser", "alternateId": upn, "displayName": upn },
            { "id": app, "type": "AppInstance", "alternateId": "Microsoft Office 365", "displayName": "Microsoft Office 365" }
        ]
    })
}

#[tokio::test]
async fn the_cursor_survives_a_restart_no_event_is_missed_or_read_twice() {
    let sb = small().await;
    let dir = data_dir();
    // One UTC day throughout, even if the test runs across midnight.
    let (clock, _) = manual_clock(SystemTime::now());

    // Before: two users fail; the watch reads them and posts a card for each.
    assert!(sb.record_push_failure_of(MEGAN));
    assert!(sb.record_push_failure_of(ALEX));
    {
        let w = Watch::new(engine(&sb, &dir), &settings(2)).with_clock(clock.clone());
        let p = w.pass().await.expect("first pass");
        assert_eq!((p.fetched, p.events), (2, 2), "{p:?}");
        assert_eq!(card_users(&p.cards), [ALEX, MEGAN]);
        assert!(p.caught_up);
    } // the bot stops: the store is closed

    // While it is down: three more failures (one of them Megan's again) and events the filter
    // leaves out.
    assert!(sb.record_push_failure_of(OBRIEN));
    assert!(sb.record_push_failure_of(DIEGO));
    assert!(sb.record_push_failure_of(MEGAN));
    sb.add_log_event(failure_about(PRIYA, "0oaotherapp", PUSH_EVENT, "FAILURE"));

    // After the restart: exactly the three, across two pages (a full page is followed at once).
    let w = Watch::new(engine(&sb, &dir), &settings(2)).with_clock(clock);
    let p = w.pass().await.expect("pass after the restart");
    assert_eq!((p.fetched, p.events, p.pages), (3, 3, 2), "{p:?}");
    // Diego's Okta login differs from his UPN: the app user's name is what is diagnosed.
    assert_eq!(
        card_users(&p.cards),
        [DIEGO, OBRIEN],
        "Megan had hers today"
    );

    // After: one more, and nothing again.
    assert!(sb.record_push_failure_of(PRIYA));
    let p = w.pass().await.unwrap();
    assert_eq!((p.fetched, p.events), (1, 1), "{p:?}");
    assert_eq!(card_users(&p.cards), [PRIYA]);
    let p = w.pass().await.unwrap();
    assert_eq!((p.fetched, p.events, p.cards.len()), (0, 0, 0), "{p:?}");

    let store = Store::open_file(&dir.join("fixbot.sqlite3")).unwrap();
    assert_eq!(store.watch_events_handled().unwrap(), 6);
    let open: Vec<String> = store
        .watch_open_findings()
        .unwrap()
        .into_iter()
        .map(|f| f.upn)
        .collect();
    assert_eq!(open.len(), 5, "{open:?}");
    // Counted for /metrics too (process-wide, so other tests add to it).
    let text = o365_fixbot::ops::metrics::metrics().render();
    for series in ["fixbot_watch_events_total", "fixbot_watch_cards_total"] {
        let n: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(n >= 5.0, "{series} in {text}");
    }
}

const PUSH_EVENT: &str = "application.provision.user.push";

#[tokio::test]
async fn one_card_per_user_per_utc_day_through_the_outbox() {
    let sb = small().await;
    let dir = data_dir();
    let (clock, now) = manual_clock(SystemTime::now());
    let woken = Arc::new(Mutex::new(0));
    let w = {
        let woken = woken.clone();
        Watch::new(engine(&sb, &dir), &settings(100))
            .with_clock(clock)
            .posting_to(42, Arc::new(move || *woken.lock().unwrap() += 1))
    };
    let store = Store::open_file(&dir.join("fixbot.sqlite3")).unwrap();

    // Two failures for Megan the same day: one card.
    assert!(sb.record_push_failure_of(MEGAN));
    assert!(sb.record_push_failure_of(MEGAN));
    let p = w.pass().await.unwrap();
    assert_eq!(p.events, 2);
    assert_eq!(card_users(&p.cards), [MEGAN]);
    assert_eq!(*woken.lock().unwrap(), 1, "the outbox's sender was told");
    // And again later that day: still one.
    assert!(sb.record_push_failure_of(MEGAN));
    assert!(w.pass().await.unwrap().cards.is_empty());
    let queued = store.outbox_pending_in(42).unwrap();
    assert_eq!(queued.len(), 1);
    let card = &queued[0].content;
    for part in [
        "megan@contoso.com",
        "application.provision.user.push_profile",
        "Push user to Microsoft Office 365 failed",
        "ImmutableID mismatch",
        "Diagnosis: Entra and Okta hold different ImmutableIDs",
        "Offered fix: Entra-only repair to Okta's value m1QNawNvWkeWAKNaCZlQ2A==",
        "/fix-immutable-id user:megan@contoso.com",
    ] {
        assert!(card.contains(part), "{part:?} in {card}");
    }

    // The next UTC day: a second card.
    *now.lock().unwrap() += Duration::from_secs(24 * 3600);
    assert!(sb.record_push_failure_of(MEGAN));
    let p = w.pass().await.unwrap();
    assert_eq!(card_users(&p.cards), [MEGAN]);
    assert_eq!(store.outbox_pending_in(42).unwrap().len(), 2);
    let f = store.watch_finding(MEGAN).unwrap().expect("a finding");
    assert_eq!(f.cards, 2);
    assert!(f.closed_at_ms.is_none());

    // Alex fails too (a card: his first today); then he is repaired outside the bot, and the
    // next failure event about him finds him healthy, closes his finding and posts nothing.
    assert!(sb.record_push_failure_of(ALEX));
    assert_eq!(card_users(&w.pass().await.unwrap().cards), [ALEX]);
    let entra = sb.entra_user(ALEX).unwrap();
    graph(&sb)
        .update_user(
            &EntraObjectId::parse(&entra.id).unwrap(),
            &UserPatch {
                user_principal_name: None,
                on_premises_immutable_id: Some(ALEX_OKTA_IMMUTABLE_ID.into()),
            },
        )
        .await
        .unwrap();
    sb.add_log_event(failure_about(ALEX, APP_ID, PUSH_EVENT, "FAILURE"));
    let p = w.pass().await.unwrap();
    assert_eq!(p.events, 1);
    assert!(p.cards.is_empty());
    let open: Vec<String> = store
        .watch_open_findings()
        .unwrap()
        .into_iter()
        .map(|f| f.upn)
        .collect();
    assert_eq!(open, [MEGAN]);
    let f = store.watch_finding(ALEX).unwrap().unwrap();
    assert!(
        f.closed_at_ms.is_some(),
        "the healthy diagnosis closes the finding"
    );
}

#[tokio::test]
async fn the_log_buckets_429s_are_waited_out_and_nothing_is_missed() {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 3,
        okta_rate_window: Duration::from_secs(1),
        ..SandboxOptions::default()
    })
    .await;
    sb.set_okta_logs_rate_limit(2);
    let recorded = sb.record_push_failures();
    assert!(recorded >= 8, "{recorded}");
    let dir = data_dir();
    let e = engine(&sb, &dir);
    let w = Watch::new(e.clone(), &settings(2));
    // Someone else spends the bucket first, so the watch's first request meets a 429.
    for _ in 0..2 {
        let res = reqwest::Client::new()
            .get(format!("{}/api/v1/logs", sb.urls.okta))
            .header(
                "authorization",
                format!("SSWS {}", sb.creds.okta_token.expose()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let p = w.pass().await.expect("the 429s are waited out");
    assert!(sb.okta_throttled() > 0, "the bucket did refuse");
    assert!(e.okta().retried_429() > 0, "the watch met a 429 and waited");
    assert_eq!((p.fetched, p.events), (recorded, recorded), "{p:?}");
    assert!(p.caught_up);
    assert!(p.pages > recorded / 2);
    // Every mismatched user the log named has a card (one each), none twice.
    let users = card_users(&p.cards);
    let mut unique = users.clone();
    unique.dedup();
    assert_eq!(users, unique);
    for upn in [ADELE, MEGAN, ALEX, LYNNE, GRADY, ISAIAH] {
        assert!(users.iter().any(|u| u == upn), "{upn} in {users:?}");
    }
}

#[tokio::test]
async fn healthy_and_non_mismatch_users_get_no_card_and_other_events_are_not_fetched() {
    let sb = small().await;
    let dir = data_dir();
    // Failures about users whose problem is not an ImmutableID mismatch, or who are healthy.
    for upn in [ordinary_upn(1).as_str(), GHOST, NOEL, NESTOR] {
        sb.add_log_event(failure_about(upn, APP_ID, PUSH_EVENT, "FAILURE"));
    }
    // Events the filter leaves out: another app, a success, another event type.
    sb.add_log_event(failure_about(MEGAN, "0oaotherapp", PUSH_EVENT, "FAILURE"));
    sb.add_log_event(failure_about(MEGAN, APP_ID, PUSH_EVENT, "SUCCESS"));
    sb.add_log_event(failure_about(
        MEGAN,
        APP_ID,
        "user.session.start",
        "FAILURE",
    ));
    let w = Watch::new(engine(&sb, &dir), &settings(100));
    let p = w.pass().await.unwrap();
    assert_eq!((p.fetched, p.events), (4, 4), "{p:?}");
    assert!(p.cards.is_empty(), "{:?}", p.cards);
    let store = Store::open_file(&dir.join("fixbot.sqlite3")).unwrap();
    assert!(store.watch_open_findings().unwrap().is_empty());
}

#[tokio::test]
async fn the_console_polls_the_watch_and_fix_status_lists_open_findings() {
    let sb = small().await;
    let dir = data_dir();
    let e = engine(&sb, &dir);
    let people = BTreeMap::from([("alice".to_owned(), vec!["identity-admin".to_owned()])]);
    let mut console = Console::new(
        e.clone(),
        ApprovalPolicy::from(&ApprovalSettings::default()),
        people,
        Some(&sb),
        Vec::new(),
    )
    .with_watch(Watch::new(e, &settings(100)));
    console
        .run_script(
            "sandbox: push megan@contoso.com\nwatch: poll\nwatch: poll\nalice: /fix-status\n",
        )
        .await;
    let out = String::from_utf8(console.into_output()).unwrap();
    assert_eq!(
        out.matches("🔎 Okta could not provision megan@contoso.com")
            .count(),
        1,
        "{out}"
    );
    assert!(out.contains("nothing for a person to act on"), "{out}");
    assert!(out.contains("open watch findings (1)"), "{out}");
    assert!(
        out.contains("megan@contoso.com · Entra and Okta hold different ImmutableIDs · since "),
        "{out}"
    );
    assert!(
        out.contains("offered fix: Entra-only repair to Okta's value m1QNawNvWkeWAKNaCZlQ2A=="),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_runs_the_watch_into_the_ops_channel_and_fix_status_shows_the_finding() {
    let rig = rig().await;
    let settings = WatchSettings {
        enabled: true,
        channel_id: Some(CHANNEL),
        // Short, so the test sees the second poll (the configuration's minimum is for Okta).
        poll_interval: Duration::from_millis(100),
        ..settings(100)
    };
    assert!(rig.env.sb.record_push_failure_of(MEGAN));
    let running = o365_fixbot::watch::command::spawn_beside_discord(
        rig.env.engine.clone(),
        &settings,
        &rig.bot,
    )
    .unwrap()
    .expect("enabled");
    let card = rig
        .fake
        .wait_text(CHANNEL, "Okta could not provision megan@contoso.com", T)
        .await;
    assert!(card.contains("Offered fix: Entra-only repair"), "{card}");
    // The card carries the fix as a button: pressed in a repair channel, it plans the fix for a
    // second person's approval, as a diagnosis's button does.
    let (card_id, button) = rig.fake.world(|w| {
        let id = *w
            .order
            .iter()
            .find(|m| {
                w.messages[m]
                    .content
                    .contains("Okta could not provision megan")
            })
            .expect("the card");
        let b = w.components[&id][0]["components"][0]["custom_id"]
            .as_str()
            .expect("a button")
            .to_owned();
        (id, b)
    });
    assert!(
        button.starts_with(&format!("fix:e:{MEGAN_OKTA_IMMUTABLE_ID}:")),
        "{button}"
    );
    let press = rig
        .fake
        .press_on_message(&alice(), CHANNEL, card_id, &button);
    assert_eq!(
        rig.fake.wait_response(press, T).await.response,
        Some((4, 64))
    );
    let plan = rig.fake.wait_plan(CHANNEL, MEGAN, T).await;
    let text = rig.fake.world(|w| w.messages[&plan].content.clone());
    assert!(text.contains("Mode: Entra-only"), "{text}");
    // A later failure is found by a later poll.
    assert!(rig.env.sb.record_push_failure_of(ALEX));
    rig.fake
        .wait_text(CHANNEL, "Okta could not provision alex@fabrikam.com", T)
        .await;
    tokio::time::timeout(T, running.stop(T))
        .await
        .expect("the watch stops");

    let s = rig.fake.slash(&bob(), CHANNEL, "fix-status", &[]);
    let reply = rig.fake.wait_reply(s, T).await;
    let text = reply.last_text();
    assert!(text.contains("Open watch findings (2)"), "{text}");
    assert!(
        text.contains("megan@contoso.com · Entra and Okta hold different ImmutableIDs"),
        "{text}"
    );
    let cards = rig.fake.world(|w| {
        w.texts_in(CHANNEL)
            .iter()
            .filter(|t| t.contains("Okta could not provision"))
            .count()
    });
    assert_eq!(cards, 2, "one card each, none twice");
    rig.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_command_prints_cards_once_and_resumes_from_its_cursor() {
    let sb = small().await;
    let dir = data_dir();
    let config = dir.join("config.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"
[graph]
authority = "{}"
graph_base = "{}"
tenant_id = "{TENANT_NAME}"
client_id = "{CLIENT_ID}"
[okta]
org_url = "{}"
app_id = "{APP_ID}"
[repair]
allowed_domains = ["contoso.com", "fabrikam.com"]
[store]
data_dir = "{}"
[watch]
page_limit = 2
"#,
            sb.urls.authority,
            sb.urls.graph,
            sb.urls.okta,
            dir.join("data").display()
        ),
    )
    .unwrap();
    let run = |config: PathBuf, graph_secret: String, okta_token: String| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_o365-fixbot"))
                .args(["watch", "--once", "--config"])
                .arg(&config)
                .env("RUST_LOG", "error")
                .env("FIXBOT_GRAPH_CLIENT_SECRET", graph_secret)
                .env("FIXBOT_OKTA_API_TOKEN", okta_token)
                .output()
                .expect("the binary runs");
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        })
    };
    let secrets = || {
        (
            sb.creds.client_secret.expose().to_owned(),
            sb.creds.okta_token.expose().to_owned(),
        )
    };
    assert!(sb.record_push_failure_of(MEGAN));
    assert!(sb.record_push_failure_of(ADELE));
    assert!(sb.record_push_failure_of(ALEX));
    let (g, o) = secrets();
    let first = run(config.clone(), g, o).await.unwrap();
    for upn in [MEGAN, ADELE, ALEX] {
        assert_eq!(
            first
                .matches(&format!("Okta could not provision {upn} "))
                .count(),
            1,
            "{first}"
        );
    }
    let (g, o) = secrets();
    let second = run(config, g, o).await.unwrap();
    assert!(!second.contains("Okta could not provision"), "{second}");
}

#[tokio::test]
async fn an_ad_sourced_users_card_offers_entra_only_to_the_mapped_ad_object_guid() {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 2,
        mapping: o365_fixbot::sandbox::MappingMode::DirectoryUser,
        ..SandboxOptions::default()
    })
    .await;
    let dir = data_dir();
    assert!(sb.record_push_failure_of(DANA));
    let p = Watch::new(engine(&sb, &dir), &settings(100))
        .pass()
        .await
        .unwrap();
    assert_eq!(card_users(&p.cards), [DANA]);
    let card = &p.cards[0].text;
    assert!(
        card.contains("Diagnosis: Entra is missing the ImmutableID"),
        "{card}"
    );
    assert!(
        card.contains(&format!(
            "Entra-only repair to Okta's value {DANA_AD_OBJECT_GUID}"
        )),
        "{card}"
    );
    assert!(
        card.contains("hasDirectoryUser()?findDirectoryUser().externalId:null"),
        "{card}"
    );
}

#[tokio::test]
async fn a_pass_that_cannot_diagnose_moves_nothing_and_the_next_one_handles_the_event_once() {
    let sb = small().await;
    let dir = data_dir();
    let w = Watch::new(engine(&sb, &dir), &settings(100));
    assert!(sb.record_push_failure_of(MEGAN));
    // Graph is down for longer than the client's retry budget: the diagnosis fails, and with
    // it the whole page — as if the bot had died between reading the page and saving it.
    sb.inject(o365_fixbot::sandbox::Fault {
        op: "graph.list_users".into(),
        nth: 1,
        times: 100,
        action: o365_fixbot::sandbox::FaultAction::Error {
            status: 503,
            code: "ServiceUnavailable".into(),
            message: "down".into(),
        },
    });
    let err = w.pass().await.expect_err("the diagnosis cannot read Graph");
    assert!(
        matches!(err, o365_fixbot::watch::WatchError::Diagnose { .. }),
        "{err}"
    );
    let store = Store::open_file(&dir.join("fixbot.sqlite3")).unwrap();
    assert_eq!(store.watch_events_handled().unwrap(), 0);
    assert!(store.watch_open_findings().unwrap().is_empty());
    sb.clear_faults();
    let p = w.pass().await.unwrap();
    assert_eq!((p.fetched, p.events), (1, 1));
    assert_eq!(card_users(&p.cards), [MEGAN]);
    assert_eq!(w.pass().await.unwrap().fetched, 0);
}

#[tokio::test]
async fn a_cursor_from_another_org_is_not_followed_the_watch_starts_anew() {
    let dir = data_dir();
    let first = small().await;
    assert!(first.record_push_failure_of(MEGAN));
    let p = Watch::new(engine(&first, &dir), &settings(100))
        .pass()
        .await
        .unwrap();
    assert_eq!(p.events, 1);
    // The same data directory, pointed at another org (here: another sandbox, another port).
    let second = small().await;
    assert!(second.record_push_failure_of(ALEX));
    let p = Watch::new(engine(&second, &dir), &settings(100))
        .pass()
        .await
        .expect("the old org's next link is not followed");
    assert_eq!(card_users(&p.cards), [ALEX]);
}

/// A service app's token carries `okta.logs.read` only once the watch uses the client: an org
/// that does not run the watch need not grant it.
#[tokio::test]
async fn with_a_service_app_the_watch_asks_for_the_log_scope_and_repairs_do_not() {
    use o365_fixbot::directory::assertion::{AssertionSigner, PrivateKey};
    use o365_fixbot::directory::okta::{OktaClient, OktaCredential, ServiceApp, LOGS_SCOPE};
    let sb = small().await;
    let fixture = |name: &str| crate::credentials::fixture(name);
    sb.register_okta_service_app(
        "0oa1fixbotservice",
        &std::fs::read_to_string(fixture("okta-public.pem")).unwrap(),
    )
    .unwrap();
    let client = || {
        let mut config = sb.okta_config(crate::harness::fast_http());
        let key =
            PrivateKey::from_pem_file("okta.private_key_file", &fixture("okta-key.pem")).unwrap();
        config.credential = OktaCredential::ServiceApp(Box::new(ServiceApp {
            client_id: "0oa1fixbotservice".into(),
            signer: AssertionSigner::for_key(key, None, "0oa1fixbotservice"),
        }));
        OktaClient::new(config).unwrap()
    };
    // Without the watch: a token without the log scope works for everything else.
    let repairs = client();
    assert!(repairs.user(MEGAN).await.unwrap().value.is_some());
    let granted = repairs.granted_scopes().await.unwrap_or_default();
    assert!(!granted.iter().any(|s| s == LOGS_SCOPE), "{granted:?}");

    // The watch's client: its first token (taken before the watch) is replaced by one with it.
    let okta = client();
    assert!(okta.user(MEGAN).await.unwrap().value.is_some());
    let e = Engine::new(
        graph(&sb),
        okta.clone(),
        Store::open(&data_dir()).unwrap(),
        test_policy(),
    );
    assert!(sb.record_push_failure_of(MEGAN));
    let p = Watch::new(e, &settings(100))
        .pass()
        .await
        .expect("the log is readable");
    assert_eq!(card_users(&p.cards), [MEGAN]);
    let granted = okta.granted_scopes().await.unwrap_or_default();
    assert!(granted.iter().any(|s| s == LOGS_SCOPE), "{granted:?}");

    // check-config says what to grant when the org has not granted the log scope.
    let ok = o365_fixbot::ops::check::check_system_log(&okta).await;
    assert!(ok.passed(), "{ok:?}");
    sb.set_okta_service_app_scopes(o365_fixbot::directory::okta::SERVICE_APP_SCOPES);
    let refused = client();
    refused.also_read_logs().await;
    let check = o365_fixbot::ops::check::check_system_log(&refused).await;
    assert!(!check.passed(), "{check:?}");
    assert!(
        format!("{check:?}").contains("grant okta.logs.read"),
        "{check:?}"
    );
}

/// `check-config --online` with `[watch] enabled`: the watch's channel needs only to be seen and
/// posted in; one the bot cannot post in is named.
#[tokio::test]
async fn check_config_checks_the_watch_channel_for_what_the_cards_need() {
    use crate::fake_discord::{perm, FakeDiscord, BOT_ROLE, GUILD, OTHER_CHANNEL, TOKEN};
    use o365_fixbot::chat::discord::check::check_discord_and_watch;
    use o365_fixbot::secret::Secret;
    let fake = FakeDiscord::start().await;
    // Enough to post, not enough for plans (no reactions).
    fake.world_mut(|w| {
        w.guild.roles = vec![
            (
                GUILD,
                perm::VIEW_CHANNEL | perm::SEND_MESSAGES | perm::READ_MESSAGE_HISTORY,
            ),
            (
                BOT_ROLE,
                perm::CREATE_PUBLIC_THREADS | perm::SEND_MESSAGES_IN_THREADS | perm::ATTACH_FILES,
            ),
        ]
    });
    let s = crate::discord::settings(&fake);
    let checks = check_discord_and_watch(&s, &Secret::new(TOKEN), Some(OTHER_CHANNEL)).await;
    let watch = checks
        .iter()
        .find(|c| c.name == format!("watch channel {OTHER_CHANNEL}"))
        .expect("the watch channel is checked");
    assert!(watch.passed(), "{watch:?}");
    let commands = checks
        .iter()
        .find(|c| c.name == format!("discord channel {CHANNEL}"))
        .unwrap();
    assert!(!commands.passed(), "{commands:?}");

    // Without SEND_MESSAGES, the watch channel fails and says why.
    fake.world_mut(|w| {
        w.guild.roles = vec![(GUILD, perm::VIEW_CHANNEL), (BOT_ROLE, 0)];
    });
    let checks = check_discord_and_watch(&s, &Secret::new(TOKEN), Some(OTHER_CHANNEL)).await;
    let watch = checks
        .iter()
        .find(|c| c.name == format!("watch channel {OTHER_CHANNEL}"))
        .unwrap();
    let why = watch.failure().expect("it fails");
    assert!(
        why.contains("SEND_MESSAGES (to post the watch's cards"),
        "{why}"
    );
}
