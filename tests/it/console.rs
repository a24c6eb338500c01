//! The real binary: `demo` tells the whole story; `demo --stdin` takes scripted chat events.

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_o365-fixbot"));
    c.env("RUST_LOG", "error");
    c
}

fn run_script(script: &str) -> String {
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
    assert!(text.contains("alice's reaction does not count"), "{text}");
    assert!(text.contains("mallory's reaction does not count"), "{text}");
    assert!(text.contains("approved by bob"), "{text}");
    assert!(text.contains("✅ 9/9 resume Okta provisioning"), "{text}");
    assert!(text.contains("synced from on-premises AD"), "{text}");
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
