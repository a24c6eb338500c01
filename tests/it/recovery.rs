//! Crash recovery, process level: the real binary against the sandbox, killed with SIGKILL at
//! every step boundary and between an API call and its journal write, then started again.

use crate::harness::{calls_of, sandbox_with};
use o365_fixbot::domain::RunState;
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Fault, FaultAction, Sandbox, SandboxOptions};
use o365_fixbot::store::{Store, Verification};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

pub struct Tenant {
    pub sb: Sandbox,
    dir: PathBuf,
    pub config: PathBuf,
    initial_caps: Value,
}

pub async fn tenant() -> Tenant {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 5,
        latency: Duration::from_millis(15),
        ..SandboxOptions::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("fixbot-crash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    let text = format!(
        r#"
[graph]
authority = "{authority}"
graph_base = "{graph}"
tenant_id = "{tenant}"
client_id = "{client}"

[okta]
org_url = "{okta}"
app_id = "{app}"

[http]
request_timeout = 2000
call_deadline = 20000
max_attempts = 4
base_backoff = 50
max_backoff = 500

[repair]
allowed_domains = ["contoso.com", "fabrikam.com"]
verify_attempts = 3
verify_interval = 30
pause_join_window = 60000
pause_linger = 1000
compensation_attempts = 3
compensation_backoff = 20

[store]
data_dir = {data:?}

# The console acts for the operating-system user; the crash tests run as one operator with
# --single-operator (break-glass), so that one person may request and approve.
[console.people]
alice = ["identity-admin"]
bob = ["identity-approver"]
{os_user:?} = ["identity-admin", "identity-approver"]
"#,
        authority = sb.urls.authority,
        graph = sb.urls.graph,
        okta = sb.urls.okta,
        tenant = sb.creds.tenant_id,
        client = sb.creds.client_id,
        app = sb.creds.app_id,
        data = dir.join("data").to_string_lossy(),
        os_user = crate::harness::os_user(),
    );
    std::fs::write(&config, text).unwrap();
    let initial_caps = sb.provisioning_capabilities();
    Tenant {
        sb,
        dir,
        config,
        initial_caps,
    }
}

/// The bot binary in `console` mode, its output read line by line on a thread.
struct Bot {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

pub fn command(t: &Tenant, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_o365-fixbot"));
    c.args(["--config", t.config.to_str().unwrap()])
        .args(args)
        .env("RUST_LOG", "error")
        .env(
            "FIXBOT_GRAPH_CLIENT_SECRET",
            t.sb.creds.client_secret.expose(),
        )
        .env("FIXBOT_OKTA_API_TOKEN", t.sb.creds.okta_token.expose());
    c
}

impl Bot {
    fn start(t: &Tenant) -> Bot {
        let mut child = command(t, &["console", "--single-operator"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Bot {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (bounded) for an output line matching `pred`.
    fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
        self.seen
    }

    /// Closes standard input and waits for a clean exit; returns everything printed.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "bot exited with {status}: {:#?}",
            self.seen
        );
        self.seen
    }
}

impl Bot {
    /// Sends SIGTERM with standard input still open (so end of input cannot be what stops it);
    /// returns the exit status and everything printed. Bounded: the process must be gone once
    /// its output ends, within [`WAIT`].
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success());
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        // Standard output closes a moment before the process is gone: wait for the exit itself,
        // bounded, on a thread (a blocking wait has no timeout).
        let pid = self.child.id();
        let mut child = self.child;
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_default()
            .max(Duration::from_secs(5));
        let status = match exited.recv_timeout(left) {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("still running {WAIT:?} after SIGTERM: {:#?}", self.seen)
            }
        };
        (status, self.seen)
    }
}

fn store(t: &Tenant) -> Store {
    Store::open(&t.dir.join("data")).expect("store opens once the bot is gone")
}

fn assert_invariants(t: &Tenant, upn: &str, output: &[String]) {
    let text = output.join("\n");
    let user = t.sb.entra_user(upn).unwrap();
    assert!(
        user.user_principal_name.eq_ignore_ascii_case(upn),
        "left on {}: {text}",
        user.user_principal_name
    );
    assert_eq!(
        t.sb.provisioning_capabilities(),
        t.initial_caps,
        "provisioning not restored: {text}"
    );
    assert!(t.sb.deprovisions().is_empty(), "deprovisioned: {text}");
    let okta_id = t.sb.okta_user_id(upn).unwrap();
    let app =
        t.sb.okta_app_user(&okta_id)
            .unwrap_or_else(|| panic!("left unassigned: {text}"));
    assert_eq!(
        user.on_premises_immutable_id.as_deref(),
        app.immutable_id(),
        "systems differ: {text}"
    );
    let s = store(t);
    assert!(
        s.pause(APP_ID).unwrap().is_none(),
        "pause left in the store"
    );
    assert!(
        s.runs_in_state(RunState::Running).unwrap().is_empty(),
        "a run is still marked running"
    );
    assert_eq!(
        s.journal_unsettled().unwrap(),
        0,
        "journal entries without an outcome remain after recovery"
    );
    drop(s);
    let verify = command(t, &["audit", "verify"]).output().unwrap();
    assert!(
        verify.status.success(),
        "audit chain: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

fn request(bot: &mut Bot, upn: &str) {
    bot.send(&format!(
        "/fix-immutable-id user:{upn} mode:full reason:crash test"
    ));
    assert!(
        bot.wait_for(|l| l.contains("Repair plan for")),
        "{:#?}",
        bot.seen
    );
    bot.send("react ✅");
}

fn is_step_done(line: &str, k: u8) -> bool {
    line.contains(&format!("fixbot: ✅ {k}/9")) || line.contains(&format!("fixbot: ⏭ {k}/9"))
}

async fn crash_after_step(upn: &str, k: u8) {
    let t = tenant().await;
    let mut bot = Bot::start(&t);
    request(&mut bot, upn);
    assert!(
        bot.wait_for(|l| is_step_done(l, k)),
        "step {k} never reported: {:#?}",
        bot.seen
    );
    let before = bot.kill();
    let finished_before = before.iter().any(|l| l.contains("🎉"));

    let again = Bot::start(&t).finish();
    let text = again.join("\n");
    if std::env::var_os("FIXBOT_SHOW_RECOVERY").is_some() {
        eprintln!("--- {upn} killed after step {k}\n{text}");
    }
    if !finished_before {
        assert!(
            text.contains("the bot restarted"),
            "{upn} after step {k}: {text}"
        );
        assert!(
            text.contains("🎉") || text.contains("done"),
            "{upn} after step {k}: no final message: {text}"
        );
    }
    assert_invariants(&t, upn, &again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_step_boundary_without_a_previous_id() {
    for k in 1..=8 {
        crash_after_step(ADELE, k).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_step_boundaries_with_a_previous_id() {
    for k in [1, 2, 3, 5, 6, 7] {
        crash_after_step(MEGAN, k).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_an_entra_write_and_its_journal_outcome() {
    let t = tenant().await;
    // Step 2's PATCH is applied, but its answer never arrives before the kill.
    t.sb.inject(Fault {
        op: "graph.update_user".into(),
        nth: 2,
        times: 1,
        action: FaultAction::HoldReply(Duration::from_secs(10)),
    });
    let id = t.sb.entra_user(ADELE).unwrap().id;
    let mut bot = Bot::start(&t);
    request(&mut bot, ADELE);
    // By object id: the user is on the temporary UPN now.
    assert!(wait_until(|| t
        .sb
        .entra_user(&id)
        .is_some_and(|u| u.on_premises_immutable_id.is_some())));
    bot.kill();
    {
        let s = store(&t);
        let run = s.recent_runs(1).unwrap().remove(0);
        let j = s.journal(&run.id).unwrap();
        // Step 2's PATCH is journalled with no outcome (the pause, opened alongside, may have
        // journalled after it).
        let step2 = j
            .iter()
            .rev()
            .find(|e| e.api == "graph.update_user")
            .unwrap();
        assert_eq!(
            (step2.step.as_str(), step2.outcome.as_deref()),
            ("2", None),
            "{j:#?}"
        );
    }
    let again = Bot::start(&t).finish();
    let text = again.join("\n");
    assert!(text.contains("the bot restarted during step 2"), "{text}");
    assert!(text.contains("🎉"), "{text}");
    assert_invariants(&t, ADELE, &again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_unassign_and_its_journal_outcome() {
    let t = tenant().await;
    t.sb.inject(Fault {
        op: "okta.unassign".into(),
        nth: 1,
        times: 1,
        action: FaultAction::HoldReply(Duration::from_secs(10)),
    });
    let mut bot = Bot::start(&t);
    request(&mut bot, MEGAN);
    let okta_id = t.sb.okta_user_id(MEGAN).unwrap();
    assert!(wait_until(|| t.sb.okta_app_user(&okta_id).is_none()));
    bot.kill();
    // Provisioning is paused and the user unassigned: the worst moment to die.
    assert_ne!(t.sb.provisioning_capabilities(), t.initial_caps);
    let again = Bot::start(&t).finish();
    let text = again.join("\n");
    assert!(text.contains("the bot restarted during step 6"), "{text}");
    assert_invariants(&t, MEGAN, &again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_after_a_restart_executes_the_run_once() {
    let t = tenant().await;
    let mut bot = Bot::start(&t);
    bot.send(&format!("/fix-immutable-id user:{ALEX} mode:full"));
    assert!(bot.wait_for(|l| l.contains("Repair plan for")));
    bot.send("react ✅");
    // Killed before the approval was read.
    bot.kill();
    let writes_before = calls_of(&t.sb, "graph.update_user");
    let mut bot = Bot::start(&t);
    assert!(
        bot.wait_for(|l| l.contains("still awaiting approval")),
        "{:#?}",
        bot.seen
    );
    bot.send("react ✅");
    bot.send("react ✅");
    let out = bot.finish();
    let text = out.join("\n");
    assert_eq!(
        text.matches(&format!("approved by {} alone", crate::harness::os_user()))
            .count(),
        1,
        "{text}"
    );
    // Managed user: one Entra write for the whole run, however the approvals arrived.
    assert_eq!(
        calls_of(&t.sb, "graph.update_user") - writes_before,
        1,
        "{text}"
    );
    assert_invariants(&t, ALEX, &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_audit_record_is_reported() {
    let t = tenant().await;
    let mut bot = Bot::start(&t);
    request(&mut bot, ALEX);
    assert!(bot.wait_for(|l| l.contains("🎉")));
    bot.finish();
    let db = t.dir.join("data").join("fixbot.sqlite3");
    corrupt(&db, b"\"outcome\":\"ok\"", b"\"outcome\":\"no\"");
    let verify = command(&t, &["audit", "verify"]).output().unwrap();
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(!verify.status.success(), "tampering not detected");
    assert!(err.contains("audit log broken at record"), "{err}");
    // Export still writes every record, for the auditor to look at.
    let export = command(&t, &["audit", "export"]).output().unwrap();
    let lines = String::from_utf8_lossy(&export.stdout).lines().count();
    assert!(lines > 5, "{lines}");
    let s = store(&t);
    assert!(matches!(
        s.audit_verify().unwrap(),
        Verification::Broken { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_audit_tail_is_reported_from_the_head_file_and_the_posted_head() {
    let t = tenant().await;
    let mut bot = Bot::start(&t);
    request(&mut bot, ALEX);
    assert!(bot.wait_for(|l| l.contains("🎉")));
    let seen = bot.finish();
    // The head the thread was told: the copy someone with the data directory cannot edit.
    let posted = seen
        .iter()
        .find_map(|l| l.split(" · audit head ").nth(1))
        .map(|h| h.split_whitespace().next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no audit head in the summary: {seen:#?}"));
    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify"];
        args.extend_from_slice(extra);
        command(&t, &args).output().unwrap()
    };
    let intact = verify(&["--expect-head", &posted]);
    assert_eq!(
        intact.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert!(String::from_utf8_lossy(&intact.stdout).contains("audit log intact"));

    let data = t.dir.join("data");
    {
        // Someone with the file drops the guard and deletes the newest records.
        let c = rusqlite::Connection::open(data.join("fixbot.sqlite3")).unwrap();
        c.execute_batch(
            "DROP TRIGGER audit_no_delete;
             DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 3 FROM audit);",
        )
        .unwrap();
    }
    let cut = verify(&[]);
    let err = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(1), "truncation not detected: {err}");
    assert!(err.contains("audit log truncated"), "{err}");
    assert!(err.contains("head file"), "{err}");

    // With the head file gone too, the head posted in chat still tells.
    std::fs::remove_file(data.join(o365_fixbot::store::HEAD_FILE)).unwrap();
    assert_eq!(verify(&[]).status.code(), Some(0));
    let cut = verify(&["--expect-head", &posted]);
    let err = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(1), "truncation not detected: {err}");
    assert!(
        err.contains("audit log truncated") && err.contains("expected head"),
        "{err}"
    );

    // A head too short to be trusted is a usage error, not a verdict.
    let short = posted
        .split_once(':')
        .map(|(s, h)| format!("{s}:{}", &h[..8]))
        .unwrap();
    assert_eq!(verify(&["--expect-head", &short]).status.code(), Some(2));
}

/// Edits the database file's bytes in place, as someone with the file could.
fn corrupt(db: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(db).unwrap();
    let mut hits = 0;
    let mut at = 0;
    while let Some(p) = bytes[at..].windows(from.len()).position(|w| w == from) {
        let p = at + p;
        bytes[p..p + to.len()].copy_from_slice(to);
        at = p + to.len();
        hits += 1;
    }
    assert!(hits > 0, "the record is in the file");
    std::fs::write(db, bytes).unwrap();
}

/// Polls sandbox state (another process changes it) at a bounded count.
fn wait_until(cond: impl Fn() -> bool) -> bool {
    for _ in 0..400 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_data_directory_refuses_to_start() {
    let t = tenant().await;
    let mut first = Bot::start(&t);
    first.send("/fix-status");
    assert!(
        first.wait_for(|l| l.contains("no runs yet")),
        "{:#?}",
        first.seen
    );
    let second = command(&t, &["console"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains("already using the data directory"), "{err}");
    first.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_entra_parks_the_run_at_a_safe_boundary_exits_0_and_the_next_start_completes_it(
) {
    let t = tenant().await;
    // Slow enough that the signal lands mid-run, well within the default 25 s grace.
    t.sb.set_latency(Duration::from_millis(120));
    let mut bot = Bot::start(&t);
    request(&mut bot, ADELE);
    assert!(
        bot.wait_for(|l| is_step_done(l, 1)),
        "step 1 never reported: {:#?}",
        bot.seen
    );
    assert!(
        !bot.seen.iter().any(|l| l.contains("🎉")),
        "ended too early"
    );
    let (status, output) = bot.terminate();
    assert!(status.success(), "exit {status}: {output:#?}");
    // Signalled in its Entra half: it finished that half, left the pause, and parked before
    // the Okta half, saying so.
    assert!(
        output.iter().any(|l| l.contains("⏸")),
        "the run parked and said so before the exit: {output:#?}"
    );
    assert!(!output
        .iter()
        .any(|l| l.contains("unassign from Office 365 in Okta ·")));
    assert_eq!(
        t.sb.provisioning_capabilities(),
        t.initial_caps,
        "the pause was left"
    );
    let user = t.sb.entra_user(ADELE).unwrap();
    assert_eq!(
        user.user_principal_name, ADELE,
        "the Entra half was finished"
    );
    let store = store(&t);
    assert_eq!(store.recent_runs(1).unwrap()[0].state, RunState::Running);
    assert!(
        store
            .acquire_lease(
                &format!("okta-app:{}", t.sb.creds.app_id),
                "the-next-instance",
                Duration::from_secs(60)
            )
            .unwrap()
            .is_ok(),
        "the Okta app lease was left held"
    );
    store
        .release_lease(
            &format!("okta-app:{}", t.sb.creds.app_id),
            "the-next-instance",
        )
        .unwrap();
    drop(store);
    // The next start resumes it from its journal and completes it.
    let again = Bot::start(&t).finish();
    assert!(again.iter().any(|l| l.contains("🎉")), "{again:#?}");
    assert_invariants(&t, ADELE, &again);
}

/// SIGKILL in the middle of a batch: the restart settles the users in flight and continues the
/// rest, each user repaired exactly once, inside the one provisioning window the batch held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_batch_each_user_is_repaired_once_in_one_window() {
    let t = tenant().await;
    let users: Vec<String> = (1..=5).map(ordinary_upn).collect();
    let mut bot = Bot::start(&t);
    bot.send(&format!(
        "/fix-immutable-id users:{} mode:full reason:cut-over",
        users.join(",")
    ));
    assert!(
        bot.wait_for(|l| l.contains("Bulk repair plan")),
        "{:#?}",
        bot.seen
    );
    bot.send("react ✅");
    assert!(
        bot.wait_for(|l| l.contains("fixbot: 2/5 ")),
        "{:#?}",
        bot.seen
    );
    let before = bot.kill();
    assert!(
        !before.iter().any(|l| l.contains("bulk repair done")),
        "the batch ended before the kill: {before:#?}"
    );

    let mut bot = Bot::start(&t);
    assert!(
        bot.wait_for(|l| l.contains("bulk repair done")),
        "{:#?}",
        bot.seen
    );
    let after = bot.finish();
    for u in &users {
        assert_invariants(&t, u, &after);
    }
    // A user in flight at the kill may have its unassign or assign sent again (unknown outcome):
    // Okta answers the DELETE 404 (already done) and the same assignment again 200. Each user is
    // unassigned once, and each user's run ends once, succeeded.
    let unassigned =
        t.sb.calls()
            .iter()
            .filter(|c| c.op == "okta.unassign" && c.status == 204)
            .count();
    assert_eq!(unassigned, 5, "each user unassigned once");
    let s = store(&t);
    let batch = &s.recent_batches(1).unwrap()[0];
    assert_eq!(batch.state, o365_fixbot::store::BatchState::Done);
    assert_eq!(batch.members.len(), 5);
    for m in &batch.members {
        let run = s.run(m).unwrap().unwrap();
        assert_eq!(run.state, RunState::Succeeded, "{}", run.upn);
    }
    drop(s);
    let restores =
        t.sb.provisioning_writes()
            .iter()
            .filter(|w| **w == t.initial_caps)
            .count();
    assert_eq!(restores, 1, "one window: {:?}", t.sb.provisioning_writes());
}
