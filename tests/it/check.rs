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
