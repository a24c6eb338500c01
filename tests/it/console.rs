//! The real binary: `demo` tells the whole story; `demo --stdin` takes scripted chat events.

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_o365-fixbot"));
    c.env("RUST_LOG", "error");
    c
}

/// Runs `demo --stdin` on `script`; asserts a clean exit and returns what it printed.
pub fn run_script(script: &str) -> String {
    let mut child = bin()
        .args(["demo", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("binary finishes");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn demo_tells_the_whole_story() {
    let out = bin().arg("demo").output().expect("demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // It opens with the watch finding Adele from Okta's failed push, before any request.
    let card = text
        .find("watch (ops channel): 🔎 Okta could not provision adele@contoso.com")
        .expect("the watch's card opens the story");
    let first_request = text.find("alice: /fix-immutable-id").unwrap();
    assert!(card < first_request, "{text}");
    assert!(
        text[card..first_request].contains("Diagnosis: Entra is missing the ImmutableID"),
        "{text}"
    );
    assert!(text.contains("open watch findings (1):"), "{text}");
    // And it ends with her diagnosed healthy, the finding closed by the repair.
    let last = text
        .rfind("Diagnosis of adele@contoso.com")
        .expect("a closing diagnosis");
    assert!(text[last..].contains("Verdict: healthy"), "{text}");
    assert!(text.contains("open watch findings: none."), "{text}");
    assert!(text.contains("alice's reaction does not count"), "{text}");
    assert!(text.contains("mallory's reaction does not count"), "{text}");
    assert!(text.contains("approved by bob"), "{text}");
    assert!(text.contains("✅ 9/9 resume Okta provisioning"), "{text}");
    assert!(text.contains("synced from on-premises AD"), "{text}");
    // The smallest fix by default, and a diagnosis's fix planned with 🔧.
    assert!(text.contains("Mode: Entra-only"), "{text}");
    assert!(text.contains("react 🔧 to plan this fix"), "{text}");
    assert!(text.contains("Reason: fix offered by /diagnose"), "{text}");
    // A bulk repair: refused users listed, one approval, one summary, one status line.
    assert!(
        text.contains("3 full repair · 0 Entra-only · 1 refused"),
        "{text}"
    );
    assert!(text.contains("🎉 bulk repair done"), "{text}");
    assert!(text.contains("3 users: ✅ 3"), "{text}");
    assert!(text.contains("↩ undo"), "{text}");
    assert!(text.contains("⏩ roll forward"), "{text}");
    assert!(text.contains("Final state of the sandbox tenant"), "{text}");
    assert!(
        text.contains("Users deprovisioned in Office 365: 0"),
        "{text}"
    );
    assert!(text.contains("Okta provisioning: create on, update on, deactivate on, password on"));
}

#[test]
fn scripted_events_drive_the_console() {
    let script = "\
# comments and blank lines are ignored

carol: /fix-immutable-id user:alex@fabrikam.com immutable_id:35918bc9-196d-40ea-9779-889d79b753f0 reason:@everyone <@&123> ```break```
carol: react ✅
mallory: react ✅
mallory: react ✅
bob: react ✅
stranger: react ✅
alice: /fix-immutable-id user:x' or 1 eq 1
alice: /fix-immutable-id user:adele@contoso.com immutable_id:ab_c
alice: /fix-immutable-id user:adele@contoso.com
alice: /cancel
";
    let out = run_script(script);
    // The GUID was converted in .NET byte order.
    assert!(out.contains("yYuRNW0Z6kCXeYidebdT8A=="), "{out}");
    assert!(
        out.contains("Entra and Okta both hold yYuRNW0Z6kCXeYidebdT8A=="),
        "{out}"
    );
    // Nothing the requester typed can ping or break formatting in what the bot says.
    let said: String = out
        .lines()
        .filter(|l| l.starts_with("fixbot:") || l.starts_with(' '))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(said.contains("Reason:"), "{said}");
    assert!(
        !said.contains("@everyone") && !said.contains("<@&") && !said.contains("```"),
        "{said}"
    );
    // Told once per person.
    assert_eq!(
        out.matches("mallory's reaction does not count").count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("carol's reaction does not count: you asked for this repair"),
        "{out}"
    );
    assert!(out.contains("I do not know `stranger`"), "{out}");
    assert!(out.contains("unexpected `or`"), "{out}");
    assert!(
        out.contains("immutable_id: the ImmutableID contains '_'"),
        "{out}"
    );
    assert!(
        out.contains("cancelled by alice; nothing was changed"),
        "{out}"
    );
}

#[test]
fn applyfail_makes_the_call_then_answers_with_the_error() {
    let script = "\
sandbox: applyfail graph.update_user 2 500 Service_InternalError
sandbox: applyfail graph.update_user second 500 Service_InternalError
alice: /fix-immutable-id user:adele@contoso.com
bob: react ✅
";
    let out = run_script(script);
    assert!(
        out.contains(
            "(sandbox: call 2 of graph.update_user will be made, then answered with 500 \
             Service_InternalError)"
        ),
        "{out}"
    );
    assert!(
        out.contains("usage: sandbox: applyfail <operation> <nth> <status> <code>"),
        "{out}"
    );
    assert!(out.contains("failed · [Service_InternalError]"), "{out}");
    // The ImmutableID write landed despite the error: Entra ends up holding what Okta holds.
    let adele = out
        .lines()
        .find(|l| l.trim_start().starts_with("adele@contoso.com ") && l.contains("Okta app"))
        .unwrap_or_else(|| panic!("no final state for adele\n{out}"));
    let ids: Vec<&str> = adele
        .split_whitespace()
        .skip_while(|w| *w != "ImmutableID")
        .filter(|w| w.ends_with("=="))
        .collect();
    assert_eq!(ids.len(), 2, "{adele}");
    assert_eq!(ids[0], ids[1], "{adele}");
}

#[test]
fn oversized_lines_are_refused_whole() {
    let long = format!(
        "alice: /fix-immutable-id user:{}@contoso.com\n",
        "a".repeat(10_000)
    );
    let out = run_script(&long);
    assert!(
        out.contains("at most 4096 are accepted. Nothing was done."),
        "{out}"
    );
    assert!(!out.contains("planning"), "{out}");
}

#[test]
fn sandbox_subcommand_serves_and_prints_its_urls() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("fixbot-sbx-{}", std::process::id()));
    let config = dir.join("config.toml");
    std::fs::create_dir_all(&dir).unwrap();
    let text = o365_fixbot::config::EMBEDDED_DEFAULT.replace(
        "data_dir = \"data/sandbox\"",
        &format!("data_dir = {:?}", dir.join("data").to_string_lossy()),
    );
    std::fs::write(&config, text).unwrap();
    let mut child = bin()
        .args([
            "--config",
            config.to_str().unwrap(),
            "sandbox",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for _ in 0..20 {
        let Some(Ok(line)) = lines.next() else { break };
        let done = line.starts_with("Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = printed.join("\n");
    assert!(
        text.contains("graph.graph_base = \"http://127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains("okta.org_url     = \"http://127.0.0.1:"),
        "{text}"
    );
    // Credentials go to files, never to the terminal.
    let secret_file = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("export FIXBOT_OKTA_API_TOKEN_FILE="))
        .expect("token file printed");
    let token = std::fs::read_to_string(secret_file).unwrap();
    assert!(!token.is_empty() && !text.contains(&token), "{text}");
}

/// What the bot said (the plan, replies, the thread), without the echoed input lines.
fn bot_lines(out: &str) -> String {
    out.lines()
        .filter(|l| l.starts_with("fixbot:") || l.starts_with(' '))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn plan_shows_a_bidi_reason_in_typed_order_and_no_masked_link() {
    let script = "alice: /fix-immutable-id user:adele@contoso.com reason:INC-1 \u{202E}evitucexe yb devorppa\u{202C} [runbook](https://evil.example/approve) \u{2066}x\u{2069}\u{200B}\u{FEFF}\u{00AD}\n";
    let out = run_script(script);
    let said = bot_lines(&out);
    let reason = said
        .lines()
        .find(|l| l.trim_start().starts_with("Reason:"))
        .unwrap_or_else(|| panic!("no reason in the plan\n{out}"));
    assert!(
        reason.contains("INC-1 evitucexe yb devorppa [runbook] (https://evil.example/approve) x"),
        "{reason:?}"
    );
    assert!(
        !said.chars().any(o365_fixbot::domain::is_format_char),
        "{said:?}"
    );
    assert!(!said.contains("]("), "{said}");
}

#[test]
fn a_line_that_is_not_utf8_is_refused_alone_and_later_lines_are_handled() {
    let mut child = bin()
        .args(["demo", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"\xff\xfe\n").unwrap();
        stdin.write_all(b"alice: /fix-status\n").unwrap();
    }
    let out = child.wait_with_output().expect("binary finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("that line is not UTF-8 text (byte 0xff at position 1)"),
        "{stdout}"
    );
    assert!(stdout.contains("Nothing was done."), "{stdout}");
    assert!(stdout.contains("alice: /fix-status"), "{stdout}");
    assert!(stdout.contains("fixbot: no runs yet."), "{stdout}");
}

/// `o365-fixbot console` as it runs against a configured tenant (here the sandbox, reached like
/// any tenant): every line acts for the operating-system user running the test.
mod operator {
    use crate::harness;
    use o365_fixbot::approval::ApprovalPolicy;
    use o365_fixbot::chat::console::{Console, Identity};
    use o365_fixbot::chat::os_user::OsUser;
    use o365_fixbot::config::{Config, EMBEDDED_DEFAULT};
    use o365_fixbot::domain::RunState;
    use o365_fixbot::sandbox::Sandbox;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    struct Session {
        _sandbox: Sandbox,
        dir: PathBuf,
        console: Console<'static, Vec<u8>>,
        /// The console's engine, for its store (the data directory is open once per process).
        engine: o365_fixbot::pipeline::Engine,
        user: OsUser,
    }

    impl Drop for Session {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn session(single_operator: bool) -> Session {
        let config = Config::parse(EMBEDDED_DEFAULT, std::path::Path::new("default.toml")).unwrap();
        let sandbox = harness::sandbox().await;
        let dir =
            std::env::temp_dir().join(format!("fixbot-operator-{}", uuid::Uuid::new_v4().simple()));
        let engine = o365_fixbot::demo::sandbox_engine(&config, &sandbox, &dir).unwrap();
        let user = OsUser::current().expect("the test runs as a named user");
        // The operator holds both roles: only the console's identity rule stands between them
        // and approving their own request.
        let people = BTreeMap::from([(
            user.to_string(),
            vec!["identity-admin".to_owned(), "identity-approver".to_owned()],
        )]);
        let console = Console::new(
            engine.clone(),
            ApprovalPolicy::from(&config.approval),
            people,
            None,
            Vec::new(),
        )
        .with_identity(Identity::Operator {
            user: user.clone(),
            single_operator,
        });
        Session {
            _sandbox: sandbox,
            dir,
            console,
            engine,
            user,
        }
    }

    fn output(s: &mut Session) -> String {
        String::from_utf8_lossy(&std::mem::take(s.console.out_mut())).into_owned()
    }

    #[tokio::test]
    async fn a_console_on_a_real_tenant_refuses_to_approve_its_own_request() {
        let mut s = session(false).await;
        s.console
            .handle_line("/fix-immutable-id user:adele@contoso.com reason:INC-9")
            .await;
        s.console.handle_line("approve").await;
        // Typing another person's name does not make the line theirs.
        s.console.handle_line("bob: approve").await;
        let out = output(&mut s);
        assert!(out.contains("Repair plan for adele@contoso.com"), "{out}");
        assert!(
            out.contains(&format!(
                "{0}'s approval does not count: {0} asked for this repair",
                s.user
            )),
            "{out}"
        );
        assert!(out.contains("--single-operator"), "{out}");
        assert!(
            out.contains("this console acts only for") && out.contains("not for `bob`"),
            "{out}"
        );
        assert!(!out.contains("BREAK-GLASS"), "{out}");
        assert!(s.console.finished.is_empty(), "nothing ran: {out}");
        let store = s.engine.store();
        let runs = store.recent_runs(5).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].state, RunState::AwaitingApproval);
        assert_eq!(runs[0].requester_name, s.user.as_str());
        assert!(store.approvers(&runs[0].id).unwrap().is_empty());
    }

    #[tokio::test]
    async fn single_operator_repairs_are_marked_break_glass_in_plan_thread_and_audit() {
        let mut s = session(true).await;
        s.console
            .handle_line("/fix-immutable-id user:adele@contoso.com reason:INC-9")
            .await;
        s.console.handle_line("approve").await;
        let out = output(&mut s);
        let plan_end = out.find("Requested by").expect("a plan");
        let approval = out.find("approved by").expect("an approval line");
        assert!(
            out[..approval].contains("SINGLE-PERSON (BREAK-GLASS) REPAIR") && plan_end < approval,
            "the plan says so before it is approved: {out}"
        );
        assert!(
            out.contains(&format!(
                "approved by {} alone — SINGLE-PERSON (BREAK-GLASS) REPAIR",
                s.user
            )),
            "{out}"
        );
        assert_eq!(s.console.finished.len(), 1, "{out}");
        let store = s.engine.store();
        let records = store.audit_records().unwrap();
        for kind in ["approve", "approved"] {
            let r = records
                .iter()
                .find(|r| r.kind == kind)
                .unwrap_or_else(|| panic!("no {kind} record: {records:#?}"));
            assert_eq!(r.actor.as_deref(), Some(s.user.as_str()));
            assert_eq!(r.data["single_operator"], true, "{r:#?}");
        }
        let request = records.iter().find(|r| r.kind == "request").unwrap();
        assert_eq!(request.actor.as_deref(), Some(s.user.as_str()));
    }
}

#[test]
fn console_refuses_to_start_for_an_operating_system_user_it_does_not_know() {
    let user = o365_fixbot::chat::os_user::OsUser::current().unwrap();
    let dir = std::env::temp_dir().join(format!("fixbot-nobody-{}", std::process::id()));
    let config = dir.join("config.toml");
    std::fs::create_dir_all(&dir).unwrap();
    // The embedded people, minus whoever runs the test, so the user is unknown on any machine.
    let text = o365_fixbot::config::EMBEDDED_DEFAULT
        .replace(
            "data_dir = \"data/sandbox\"",
            &format!("data_dir = {:?}", dir.join("data").to_string_lossy()),
        )
        .lines()
        .filter(|l| !l.starts_with(&format!("{user} =")))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).unwrap();
    let out = bin()
        .args(["--config", config.to_str().unwrap(), "console"])
        .stdin(Stdio::null())
        .output()
        .expect("binary runs");
    let created = dir.join("data").exists();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the operating-system user `{user}` is not in console.people"
        )),
        "{stderr}"
    );
    assert!(!created, "the data directory was not even created");
}

/// The whole path an operator takes: `o365-fixbot sandbox` serves a tenant, `console --config`
/// repairs it as the operating-system user, `audit export` shows what was recorded.
#[test]
fn console_against_a_served_tenant_refuses_self_approval_and_marks_single_operator_in_audit() {
    use std::io::{BufRead, BufReader};
    let user = o365_fixbot::chat::os_user::OsUser::current().unwrap();
    let dir = std::env::temp_dir().join(format!("fixbot-operator-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write_config = |name: &str, data: &str, extra: &str| {
        let path = dir.join(name);
        let text = o365_fixbot::config::EMBEDDED_DEFAULT.replace(
            "data_dir = \"data/sandbox\"",
            &format!("data_dir = {:?}", dir.join(data).to_string_lossy()),
        ) + extra;
        std::fs::write(&path, text).unwrap();
        path
    };
    let sandbox_config = write_config("sandbox.toml", "sandbox-data", "");
    /// Stops the served sandbox even when an assertion fails first.
    struct Served(std::process::Child);
    impl Drop for Served {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut sandbox = Served(
        bin()
            .args(["--config", sandbox_config.to_str().unwrap()])
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sandbox starts"),
    );
    let mut printed = Vec::new();
    for line in BufReader::new(sandbox.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("Ctrl-C") {
            break;
        }
        printed.push(line);
    }
    let value = |key: &str| -> String {
        printed
            .iter()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} not printed: {printed:?}"))
            .trim_start_matches([' ', '=', '"'])
            .trim_end_matches('"')
            .to_owned()
    };
    let env: Vec<(String, String)> = [
        ("FIXBOT_GRAPH__AUTHORITY", "graph.authority"),
        ("FIXBOT_GRAPH__GRAPH_BASE", "graph.graph_base"),
        ("FIXBOT_GRAPH__TENANT_ID", "graph.tenant_id"),
        ("FIXBOT_GRAPH__CLIENT_ID", "graph.client_id"),
        ("FIXBOT_OKTA__ORG_URL", "okta.org_url"),
        ("FIXBOT_OKTA__APP_ID", "okta.app_id"),
        (
            "FIXBOT_GRAPH_CLIENT_SECRET_FILE",
            "export FIXBOT_GRAPH_CLIENT_SECRET_FILE",
        ),
        (
            "FIXBOT_OKTA_API_TOKEN_FILE",
            "export FIXBOT_OKTA_API_TOKEN_FILE",
        ),
    ]
    .into_iter()
    .map(|(var, key)| (var.to_owned(), value(key)))
    .collect();
    let console_config = write_config(
        "console.toml",
        "console-data",
        &format!(
            "{:?} = [\"identity-admin\", \"identity-approver\"]\n",
            user.as_str()
        ),
    );
    let run = |args: &[&str], stdin: &str| {
        let mut child = bin()
            .args(["--config", console_config.to_str().unwrap()])
            .args(args)
            .envs(env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let refused = run(
        &["console"],
        "/fix-immutable-id user:adele@contoso.com reason:INC-9\napprove\n",
    );
    let broke_glass = run(&["console", "--single-operator"], "approve\n");
    let audit = run(&["audit", "export"], "");
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        refused.contains(&format!("{0}'s approval does not count: {0} asked", user)),
        "{refused}"
    );
    // The plan, still awaiting approval, is taken up by the next session, which may approve it
    // alone only because it was started with --single-operator.
    assert!(
        broke_glass.contains("still awaiting approval"),
        "{broke_glass}"
    );
    assert!(
        broke_glass.contains(&format!(
            "approved by {user} alone — SINGLE-PERSON (BREAK-GLASS)"
        )),
        "{broke_glass}"
    );
    assert!(broke_glass.contains("🎉 done"), "{broke_glass}");
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let request = records.iter().find(|r| r["kind"] == "request").unwrap();
    assert_eq!(request["actor"], user.as_str(), "{request}");
    let approve = records.iter().find(|r| r["kind"] == "approve").unwrap();
    assert_eq!(approve["actor"], user.as_str(), "{approve}");
    assert_eq!(approve["data"]["single_operator"], true, "{approve}");
}
