//! The process lifecycle of `serve`, as an orchestrator sees it: the real binary (with its own
//! sandbox tenant) against the fake Discord on 127.0.0.1, probed over `/readyz` and `/metrics`
//! and stopped with SIGTERM. Out of process because both the op 9 watcher (a tracing layer) and
//! the signal handling are process-wide.

use crate::fake_discord::{
    FakeDiscord, Person, APPROVER_ROLE, CHANNEL, GUILD, REQUESTER_ROLE, TOKEN,
};
use o365_fixbot::domain::RunState;
use o365_fixbot::sandbox::scenario::{ALEX, APP_ID, MEGAN};
use o365_fixbot::store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn alice() -> Person {
    Person::new(1001, "alice", &[REQUESTER_ROLE])
}
fn bob() -> Person {
    Person::new(1002, "bob", &[APPROVER_ROLE])
}

/// A `serve --sandbox` process and where it keeps things.
struct Served {
    child: Option<Child>,
    dir: PathBuf,
    ops: SocketAddr,
}

impl Served {
    /// Starts the binary with `latency` on every sandbox call (how long a run takes) and
    /// `grace_ms` as `[ops] shutdown_grace`; returns once it has READY and its commands.
    async fn start(fake: &FakeDiscord, latency_ms: u64, grace_ms: u64) -> Served {
        let dir =
            std::env::temp_dir().join(format!("fixbot-proc-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // A free loopback port for the ops endpoints (the binary reports it only in its log).
        let ops = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
# Required sections; `serve --sandbox` replaces them with its own tenant's.
[graph]
authority = "http://127.0.0.1:9/login"
graph_base = "http://127.0.0.1:9/graph/v1.0"
tenant_id = "sandbox-tenant"
client_id = "fixbot-sandbox"

[okta]
org_url = "http://127.0.0.1:9/okta"
app_id = "{APP_ID}"

[repair]
allowed_domains = ["contoso.com", "fabrikam.com"]
verify_attempts = 3
verify_interval = 30
pause_linger = 200
compensation_attempts = 3
compensation_backoff = 10

[approval]
approvals_required = 1

[sandbox]
latency = {latency_ms}
graph_read_lag = 0
ordinary_users = 5

[store]
data_dir = {data:?}

[discord]
guild_ids = [{GUILD}]
channel_ids = [{CHANNEL}]
requester_role_ids = [{REQUESTER_ROLE}]
approver_role_ids = [{APPROVER_ROLE}]
commands_per_minute = 600
command_burst = 100

[ops]
listen = "{ops}"
shutdown_grace = {grace_ms}
"#,
                data = dir.join("data").to_string_lossy(),
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_o365-fixbot"))
            .args(["--config", config.to_str().unwrap()])
            .args(["serve", "--sandbox", "--discord-api", &fake.base])
            .env("FIXBOT_DISCORD_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("the binary starts");
        let served = Served {
            child: Some(child),
            dir,
            ops,
        };
        fake.wait_ready().await;
        served
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `limit` (a thread blocks in `wait`; no polling).
    fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(());
            (child, status)
        });
        match rx.recv_timeout(limit) {
            Ok(()) => waiter.join().unwrap().1.unwrap(),
            Err(_) => panic!(
                "the bot did not exit within {limit:?} of SIGTERM\n{}",
                self.log()
            ),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let res = reqwest::get(format!("http://{}{path}", self.ops))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()));
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// `/readyz` has no change signal: polled, bounded; returns the body.
    async fn until_ready(&self, status: u16, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let (s, body) = self.get("/readyz").await;
            if s == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz still {s} ({body}) after {limit:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn gauge(&self) -> String {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find(|l| l.starts_with("fixbot_gateway_connected "))
            .unwrap_or_else(|| panic!("no gateway gauge in\n{text}"))
            .trim_start_matches("fixbot_gateway_connected ")
            .to_owned()
    }

    /// Waits until the running bot's journal records an outcome for `step` (read from its
    /// database beside it: the chat shows progress only every few seconds).
    async fn wait_journalled(&self, step: &str, limit: Duration) {
        let path = self.dir.join("data").join("fixbot.sqlite3");
        let deadline = Instant::now() + limit;
        loop {
            let done = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM journal WHERE step = ?1 AND outcome IS NOT NULL",
                    [step],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0);
            if done > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "step {step} never journalled\n{}",
                self.log()
            );
            // Another process's database: there is no signal to await, so it is polled.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn store(&self) -> Store {
        Store::open(&self.dir.join("data")).expect("the store opens once the bot is gone")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_from_an_op_9_until_the_next_ready_and_the_gauge_follows() {
    let fake = FakeDiscord::start().await;
    let mut bot = Served::start(&fake, 5, 5_000).await;
    bot.until_ready(200, T).await;
    assert_eq!(bot.gauge().await, "1");

    fake.hold_ready(true);
    let sent = Instant::now();
    fake.invalidate_session();
    let body = bot.until_ready(503, T).await;
    // serenity keeps its stage `Connected` for ~5 s after op 9: readiness must not wait for it.
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "readiness dropped only after {:?}",
        sent.elapsed()
    );
    assert!(body.contains("gateway not connected"), "{body}");
    assert_eq!(bot.gauge().await, "0");

    // The client identifies again; Discord has not answered yet: still not ready.
    fake.wait_for("a new Identify, held", T, |w| {
        w.identify_waiting().then_some(())
    })
    .await;
    assert_eq!(bot.get("/readyz").await.0, 503);
    assert_eq!(bot.gauge().await, "0");

    fake.hold_ready(false);
    bot.until_ready(200, T).await;
    assert_eq!(bot.gauge().await, "1");
    assert!(fake.world(|w| w.ready_sent >= 2 && w.identifies.len() >= 2));

    bot.sigterm();
    assert!(bot.exit_within(T).success(), "{}", bot.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_commands_restarting_brings_the_executing_run_to_a_safe_boundary_and_releases_the_lease(
) {
    let fake = FakeDiscord::start().await;
    // 1 s per sandbox call: the signal lands mid-run, and the call in flight then (the run
    // parks only between calls) keeps the gateway up for the commands sent after the signal.
    let mut bot = Served::start(&fake, 1_000, 25_000).await;
    let ask = fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[
            ("user", ALEX),
            ("reason", "INC-9 shutdown"),
            ("mode", "full"),
        ],
    );
    fake.wait_response(ask, T).await;
    let plan = fake.wait_plan(CHANNEL, ALEX, T).await;
    // A second plan, still awaiting approval when the signal comes.
    let ask2 = fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[
            ("user", MEGAN),
            ("reason", "INC-9 approved late"),
            ("mode", "full"),
        ],
    );
    fake.wait_response(ask2, T).await;
    let waiting = fake.wait_plan(CHANNEL, MEGAN, T).await;
    fake.react(&bob(), CHANNEL, plan, "✅");
    fake.wait_text(plan, "— starting", T).await;
    assert!(
        fake.world(|w| !w.texts_in(plan).iter().any(|t| t.contains("🎉"))),
        "the run ended before the signal; the test needs a slower sandbox"
    );

    bot.sigterm();
    let body = bot.until_ready(503, T).await;
    assert!(body.contains("shutting down"), "{body}");
    // A command while shutting down is answered, privately, and nothing is done.
    let late = fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[
            ("user", "adele@contoso.com"),
            ("reason", "after the signal"),
        ],
    );
    let reply = fake.wait_reply(late, T).await;
    assert_eq!(reply.response.map(|r| r.1), Some(64), "ephemeral");
    assert!(reply.last_text().contains("restarting"), "{reply:?}");
    // An approval completed meanwhile is recorded, and its run left for the next start.
    fake.react(&bob(), CHANNEL, waiting, "✅");
    fake.wait_text(waiting, "starts as soon as it is back", T)
        .await;

    let status = bot.exit_within(T);
    assert!(status.success(), "exit {status}\n{}", bot.log());
    // The run executing at the signal reached a safe boundary before the exit, and said which:
    // finished (its Okta half had begun) or parked before its Okta half (resumed at the next
    // start). Where the signal lands depends on timing; both must be said, and stored, right.
    let parked = fake.world(|w| w.texts_in(plan).iter().any(|t| t.contains("⏸")));
    if !parked {
        fake.wait_text(plan, "🎉", Duration::ZERO).await;
    }
    let store = bot.store();
    // Everything the runs said reached Discord before the exit (the outbox was flushed).
    assert_eq!(store.outbox_pending_count().unwrap(), 0, "{}", bot.log());
    let runs = store.recent_runs(10).unwrap();
    assert_eq!(
        runs.len(),
        2,
        "nothing was planned after the signal: {runs:?}"
    );
    let state_of = |upn: &str| runs.iter().find(|r| r.upn == upn).map(|r| r.state);
    let expected = if parked {
        RunState::Running
    } else {
        RunState::Succeeded
    };
    assert_eq!(state_of(ALEX), Some(expected));
    assert_eq!(state_of(MEGAN), Some(RunState::Approved), "not started");
    // The Okta app lease is free for the next instance, whatever its name.
    assert!(
        store
            .acquire_lease(
                &format!("okta-app:{APP_ID}"),
                "the-next-instance",
                Duration::from_secs(60)
            )
            .unwrap()
            .is_ok(),
        "the lease was left held\n{}",
        bot.log()
    );
    assert!(fake.violations().is_empty(), "{:#?}", fake.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_outlives_the_grace_is_named_in_the_log_and_the_exit_is_still_clean() {
    let fake = FakeDiscord::start().await;
    // 400 ms per call against a 300 ms grace: even the call in flight at the signal (before
    // the run can park) outlives it.
    let mut bot = Served::start(&fake, 400, 300).await;
    let ask = fake.slash(
        &alice(),
        CHANNEL,
        "fix-immutable-id",
        &[("user", ALEX), ("reason", "INC-9 grace"), ("mode", "full")],
    );
    fake.wait_response(ask, T).await;
    let plan = fake.wait_plan(CHANNEL, ALEX, T).await;
    fake.react(&bob(), CHANNEL, plan, "✅");
    // Paused: step 2's PATCH (400 ms) is in flight now, and a run parks only between calls.
    bot.wait_journalled("5", T).await;
    let signalled = Instant::now();
    bot.sigterm();
    let status = bot.exit_within(T);
    assert!(status.success(), "exit {status}\n{}", bot.log());
    // The grace, serenity's close and the runtime's shutdown, not a hang.
    assert!(signalled.elapsed() < Duration::from_secs(12));
    let log = bot.log();
    assert!(log.contains("STILL EXECUTING"), "{log}");
    assert!(log.contains(ALEX), "the log names the run: {log}");
    // Left for recovery: not claimed settled, and the lease is free.
    let store = bot.store();
    let runs = store.recent_runs(10).unwrap();
    assert_ne!(runs[0].state, RunState::Succeeded, "{runs:?}");
    assert!(store
        .acquire_lease(
            &format!("okta-app:{APP_ID}"),
            "the-next-instance",
            Duration::from_secs(60)
        )
        .unwrap()
        .is_ok());
}
