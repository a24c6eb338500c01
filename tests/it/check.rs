//! `check-config`: offline and online checks, each failure naming the exact missing piece.

use crate::harness::{fast_http, graph, okta, sandbox};
use crate::recovery::{command, tenant};
use o365_fixbot::directory::graph::{GraphClient, GraphCredential};
use o365_fixbot::directory::okta::{OktaClient, OktaCredential};
use o365_fixbot::ops::check::{check_graph, check_okta};
use o365_fixbot::ops::check_report::Check;
use o365_fixbot::secret::Secret;

fn failures(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| !c.passed())
        .map(ToString::to_string)
        .collect()
}

fn domains() -> Vec<String> {
    vec!["contoso.com".into(), "fabrikam.com".into()]
}

#[tokio::test]
async fn graph_checks_pass_and_name_each_missing_piece() {
    let sb = sandbox().await;
    let ok = check_graph(&graph(&sb), &domains()).await;
    assert!(failures(&ok).is_empty(), "{:#?}", failures(&ok));
    assert!(ok
        .iter()
        .any(|c| c.name == "graph permission User.ReadWrite.All"));

    sb.set_app_roles(&["User.ReadWrite.All", "Organization.Read.All"]);
    let got = failures(&check_graph(&graph(&sb), &domains()).await);
    assert!(
        got.iter()
            .any(|f| f.contains("graph permission Domain.Read.All: missing")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|f| f.contains("graph domain contoso.com") && f.contains("lacks Domain.Read.All")),
        "{got:#?}"
    );

    let mut config = sb.graph_config(fast_http());
    config.credential = GraphCredential::ClientSecret(Secret::new("wrong"));
    let got = failures(&check_graph(&GraphClient::new(config).unwrap(), &domains()).await);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("AADSTS7000215") && !got[0].contains("wrong"),
        "{got:#?}"
    );

    sb.set_app_roles(&[
        "User.ReadWrite.All",
        "Domain.Read.All",
        "Organization.Read.All",
    ]);
    let got = failures(&check_graph(&graph(&sb), &["northwind.com".into()]).await);
    assert!(
        got.iter()
            .any(|f| f.contains("not a domain of this tenant")),
        "{got:#?}"
    );
}

#[tokio::test]
async fn okta_checks_pass_and_name_each_missing_piece() {
    let sb = sandbox().await;
    let ok = check_okta(&okta(&sb)).await;
    assert!(failures(&ok).is_empty(), "{:#?}", failures(&ok));

    sb.set_provisioning_enabled(false);
    let got = failures(&check_okta(&okta(&sb)).await);
    assert!(
        got.iter()
            .any(|f| f.contains("provisioning feature API is unavailable")),
        "{got:#?}"
    );
    sb.set_provisioning_enabled(true);

    sb.set_okta_app_admin(false);
    let got = failures(&check_okta(&okta(&sb)).await);
    assert!(
        got.iter().any(|f| f.contains("has no rights on the app")),
        "{got:#?}"
    );
    sb.set_okta_app_admin(true);

    let mut config = sb.okta_config(fast_http());
    config.app_id = "0oa1missing".into();
    let got = failures(&check_okta(&OktaClient::new(config).unwrap()).await);
    assert!(
        got.iter()
            .any(|f| f.contains("was not found: fix okta.app_id")),
        "{got:#?}"
    );

    let mut config = sb.okta_config(fast_http());
    config.credential = OktaCredential::ApiToken(Secret::new("bad-token"));
    let got = failures(&check_okta(&OktaClient::new(config).unwrap()).await);
    assert!(
        got.iter().any(|f| f.contains("rejected the API token")),
        "{got:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_checks_online_and_exits_non_zero_on_failure() {
    let t = tenant().await;
    let out = command(&t, &["check-config", "--online"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("all ") && text.contains("checks passed"),
        "{text}"
    );
    assert!(!text.contains(t.sb.creds.okta_token.expose()));

    t.sb.set_okta_app_admin(false);
    let out = command(&t, &["check-config", "--online"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FAILED  okta app"), "{text}");

    // Offline, with no secrets in the environment: each one named.
    let out = command(&t, &["check-config"])
        .env_remove("FIXBOT_GRAPH_CLIENT_SECRET")
        .env_remove("FIXBOT_OKTA_API_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("set FIXBOT_GRAPH_CLIENT_SECRET or FIXBOT_GRAPH_CLIENT_SECRET_FILE"),
        "{text}"
    );
    assert!(
        text.contains("set FIXBOT_OKTA_API_TOKEN or FIXBOT_OKTA_API_TOKEN_FILE"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_run_and_step_spans_and_never_a_secret() {
    use std::io::Write;
    use std::process::Stdio;
    let t = tenant().await;
    let mut child = command(
        &t,
        &["--log-format", "json", "console", "--single-operator"],
    )
    .env("RUST_LOG", "o365_fixbot=debug")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"/fix-immutable-id user:alex@fabrikam.com\nreact \xE2\x9C\x85\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let step = events
        .iter()
        .find(|e| e["fields"]["message"] == "step")
        .unwrap_or_else(|| panic!("no step event: {stderr}"));
    let spans = step["spans"].as_array().expect("span list");
    assert_eq!(spans[0]["name"], "run", "{step}");
    assert!(spans[0]["run"].is_string(), "{step}");
    assert_eq!(spans[0]["target"], "alex@fabrikam.com", "{step}");
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "step" && s["step"].is_number()),
        "{step}"
    );
    for secret in [
        t.sb.creds.client_secret.expose(),
        t.sb.creds.okta_token.expose(),
    ] {
        assert!(!stderr.contains(secret), "a secret reached the logs");
    }
}

/// The binary with nothing configured: no `--config`, no `FIXBOT_*` variables.
fn bare_binary(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_o365-fixbot"))
        .args(args)
        .env_clear()
        .env("RUST_LOG", "error")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

#[test]
fn check_config_on_the_embedded_default_passes_and_says_it_is_the_sandbox() {
    let out = bare_binary(&["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert!(
        text.contains("sandbox tenant") && text.contains("config/example.toml"),
        "{text}"
    );
    assert!(text.contains("docs/going-live.md"), "{text}");

    // Online: against a sandbox it starts for the purpose, down to a whole plan.
    let out = bare_binary(&["check-config", "--online", "--user", "alex@fabrikam.com"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("graph permission User.ReadWrite.All: granted"),
        "{text}"
    );
    assert!(
        text.contains("ok      plan for alex@fabrikam.com"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_user_prints_the_plan_and_writes_nothing() {
    let t = tenant().await;
    t.sb.reset_calls();
    let out = command(
        &t,
        &["check-config", "--online", "--user", "megan@contoso.com"],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Dry-run plan for megan@contoso.com"),
        "{text}"
    );
    assert!(text.contains("nothing was written"), "{text}");
    let calls = t.sb.calls();
    // The plan's own reads happened: the Okta user, the app user, the uniqueness query.
    for op in ["okta.get_user", "okta.get_app_user", "graph.list_users"] {
        assert!(calls.iter().any(|c| c.op == op), "no {op}: {calls:#?}");
    }
    let writes: Vec<_> = calls
        .iter()
        .filter(|c| c.method != "GET" && !c.op.ends_with(".token"))
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    // No run stored: the data directory was not even opened.
    let data = t.config.parent().unwrap().join("data");
    assert!(!data.join("fixbot.sqlite3").exists());

    // A user the plan refuses is a warning that says why, not a failed configuration.
    let out = command(
        &t,
        &["check-config", "--online", "--user", "lynne@contoso.com"],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warn    plan for lynne@contoso.com"),
        "{text}"
    );

    // A read the repair needs is refused: the plan line fails and names it.
    t.sb.set_okta_app_admin(false);
    let out = command(
        &t,
        &["check-config", "--online", "--user", "megan@contoso.com"],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("FAILED  plan for megan@contoso.com: could not read Okta"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_a_certificate_and_a_service_app_and_needs_no_secret() {
    use crate::credentials::fixture;
    let t = tenant().await;
    t.sb.register_graph_certificate(&std::fs::read_to_string(fixture("graph-cert.pem")).unwrap())
        .unwrap();
    t.sb.register_okta_service_app(
        "0oa1fixbotservice",
        &std::fs::read_to_string(fixture("okta-public.pem")).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(&t.config).unwrap();
    let text = text
        .replacen(
            "[graph]\n",
            &format!(
                "[graph]\ncredential = \"certificate\"\ncertificate_file = {:?}\nprivate_key_file = {:?}\n",
                fixture("graph-cert.pem"),
                fixture("graph-key.pem")
            ),
            1,
        )
        .replacen(
            "[okta]\n",
            &format!(
                "[okta]\ncredential = \"service_app\"\nclient_id = \"0oa1fixbotservice\"\nprivate_key_file = {:?}\n",
                fixture("okta-key.pem")
            ),
            1,
        );
    let config = t.config.with_file_name("keys.toml");
    std::fs::write(&config, text).unwrap();
    let run = |args: &[&str]| {
        command(&t, args)
            .args(["--config", config.to_str().unwrap()])
            .env_remove("FIXBOT_GRAPH_CLIENT_SECRET")
            .env_remove("FIXBOT_OKTA_API_TOKEN")
            .output()
            .unwrap()
    };
    let out = run(&["check-config", "--online", "--user", "alex@fabrikam.com"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ok      graph certificate"), "{text}");
    assert!(
        text.contains("graph credentials: token issued for the app's certificate"),
        "{text}"
    );
    assert!(
        text.contains("okta credential: service app 0oa1fixbotservice accepted"),
        "{text}"
    );
    assert!(
        text.contains("ok      okta scope okta.apps.manage: granted"),
        "{text}"
    );
    assert!(
        text.contains("ok      plan for alex@fabrikam.com"),
        "{text}"
    );

    // The key of another certificate: refused at start, naming both settings.
    let wrong = std::fs::read_to_string(&config)
        .unwrap()
        .replace("graph-key.pem", "other-key.pem");
    std::fs::write(&config, wrong).unwrap();
    let out = run(&["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("FAILED  graph certificate")
            && text.contains("graph.private_key_file")
            && text.contains("graph.certificate_file"),
        "{text}"
    );
}
