//! Credentials without long-lived secrets, against the sandbox's token endpoints: a Graph
//! certificate assertion accepted and a wrong key refused; an Okta service-app token issued,
//! cached, renewed and used; DPoP and missing scopes reported by their codes.

use crate::harness::{calls_of, fast_http, sandbox};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use o365_fixbot::directory::assertion::{
    AssertionClaims, AssertionSigner, Certificate, PrivateKey, JWT_BEARER,
};
use o365_fixbot::directory::graph::{
    CertificateCredential, GraphClient, GraphCredential, GraphError,
};
use o365_fixbot::directory::okta::{OktaClient, OktaCredential, ServiceApp, SERVICE_APP_SCOPES};
use o365_fixbot::ops::check::check_okta;
use o365_fixbot::sandbox::scenario::{ALEX, TENANT_NAME};
use o365_fixbot::sandbox::Sandbox;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const SERVICE_APP: &str = "0oa1fixbotservice";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/credentials")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

fn certificate_credential(cert: &str, key: &str, client_id: &str) -> GraphCredential {
    let certificate = Certificate::from_pem_file("graph.certificate_file", &fixture(cert)).unwrap();
    let key = PrivateKey::from_pem_file("graph.private_key_file", &fixture(key)).unwrap();
    let signer = AssertionSigner::for_certificate(key, &certificate, client_id);
    GraphCredential::Certificate(Arc::new(CertificateCredential {
        certificate,
        signer,
    }))
}

fn graph_with_certificate(sb: &Sandbox, cert: &str, key: &str) -> GraphClient {
    let mut config = sb.graph_config(fast_http());
    config.credential = certificate_credential(cert, key, &sb.creds.client_id);
    GraphClient::new(config).unwrap()
}

fn okta_service_app(sb: &Sandbox, key: &str) -> OktaClient {
    let mut config = sb.okta_config(fast_http());
    let key = PrivateKey::from_pem_file("okta.private_key_file", &fixture(key)).unwrap();
    config.credential = OktaCredential::ServiceApp(Box::new(ServiceApp {
        client_id: SERVICE_APP.into(),
        signer: AssertionSigner::for_key(key, None, SERVICE_APP),
    }));
    OktaClient::new(config).unwrap()
}

fn graph_token_url(sb: &Sandbox) -> String {
    format!("{}/{TENANT_NAME}/oauth2/v2.0/token", sb.urls.authority)
}

/// A hand-made assertion, to send what the bot's own signer never would.
fn forged(key: &str, x5t_s256: Option<String>, aud: &str, iss: &str, exp_offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(Algorithm::PS256);
    header.x5t_s256 = x5t_s256;
    let claims = AssertionClaims {
        aud: aud.into(),
        iss: iss.into(),
        sub: iss.into(),
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now - 600,
        iat: now - 600,
        exp: (now as i64 + exp_offset) as u64,
    };
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(read(key).as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_certificate_signed_assertion_gets_a_graph_token_and_graph_answers() {
    let sb = sandbox().await;
    sb.register_graph_certificate(&read("graph-cert.pem"))
        .unwrap();
    let graph = graph_with_certificate(&sb, "graph-cert.pem", "graph-key.pem");
    let user = graph
        .user_by_upn(&o365_fixbot::domain::Upn::parse(ALEX).unwrap())
        .await
        .unwrap();
    assert!(user.value.is_some());
    graph.initial_domain().await.unwrap();
    assert_eq!(graph.token_fetches(), 1, "the token is cached");
    assert_eq!(calls_of(&sb, "graph.token"), 1);
    assert!(graph.credential().describe().contains("x5t#S256"));
}

#[tokio::test]
async fn the_graph_token_endpoint_refuses_a_wrong_key_an_unknown_certificate_and_a_stale_assertion()
{
    let sb = sandbox().await;
    sb.register_graph_certificate(&read("graph-cert.pem"))
        .unwrap();
    let registered = Certificate::from_pem(read("graph-cert.pem").as_bytes())
        .unwrap()
        .thumbprint_s256();
    let url = graph_token_url(&sb);
    let client = sb.creds.client_id.clone();
    let ask = |assertion: String| {
        let url = url.clone();
        let client = client.clone();
        async move {
            post_form(
                &url,
                &[
                    ("client_id", &client),
                    ("scope", "https://graph.microsoft.com/.default"),
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };

    // The registered certificate's thumbprint, but signed with another key.
    let (status, body) = ask(forged(
        "other-key.pem",
        Some(registered.clone()),
        &url,
        &client,
        300,
    ))
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    assert_eq!(body["error_codes"][0], 700027, "{body}");

    // The right key, but expired, or for another audience, or another client.
    let (status, body) = ask(forged(
        "graph-key.pem",
        Some(registered.clone()),
        &url,
        &client,
        -120,
    ))
    .await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (401, Some(700024)),
        "{body}"
    );
    let (status, body) = ask(forged(
        "graph-key.pem",
        Some(registered.clone()),
        "https://login.microsoftonline.com/other/oauth2/v2.0/token",
        &client,
        300,
    ))
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    let (status, body) = ask(forged(
        "graph-key.pem",
        Some(registered.clone()),
        &url,
        "someone-else",
        300,
    ))
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );

    // The same, correctly made, is accepted: the refusals above are about what they changed.
    let (status, body) = ask(forged(
        "graph-key.pem",
        Some(registered),
        &url,
        &client,
        300,
    ))
    .await;
    assert_eq!(status, 200, "{body}");

    // Through the client: a valid pair whose certificate the app does not hold.
    let graph = graph_with_certificate(&sb, "other-cert.pem", "other-key.pem");
    match graph.initial_domain().await {
        Err(GraphError::Auth {
            status,
            error,
            description,
        }) => {
            assert_eq!((status, error.as_str()), (401, "invalid_client"));
            assert!(description.starts_with("AADSTS700027"), "{description}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        graph.token_fetches(),
        1,
        "a refused credential is not retried"
    );
}

#[tokio::test]
async fn an_okta_service_app_token_is_issued_cached_renewed_and_used_with_bearer() {
    let sb = sandbox().await;
    sb.register_okta_service_app(SERVICE_APP, &read("okta-public.pem"))
        .unwrap();
    let okta = okta_service_app(&sb, "okta-key.pem");
    let checks = check_okta(&okta).await;
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for scope in SERVICE_APP_SCOPES {
        assert!(
            checks
                .iter()
                .any(|c| c.name == format!("okta scope {scope}") && c.passed()),
            "{checks:#?}"
        );
    }
    assert!(
        checks
            .iter()
            .any(|c| c.name == "okta credential" && c.detail.contains(SERVICE_APP)),
        "{checks:#?}"
    );
    let calls_before = sb.calls().len();
    assert!(okta.user(ALEX).await.unwrap().value.is_some());
    assert_eq!(okta.token_fetches(), 1, "one token serves every call");
    assert_eq!(sb.calls().len(), calls_before + 1);

    // Okta ends the token early: the client fetches a fresh one and the call still succeeds.
    sb.expire_tokens();
    assert!(okta.user(ALEX).await.unwrap().value.is_some());
    assert_eq!(okta.token_fetches(), 2);
    assert_eq!(sb.okta_tokens_live(), 1);
}

#[tokio::test]
async fn the_okta_token_endpoint_refuses_a_wrong_key_missing_scopes_and_reports_dpop() {
    let sb = sandbox().await;
    sb.register_okta_service_app(SERVICE_APP, &read("okta-public.pem"))
        .unwrap();

    let wrong = okta_service_app(&sb, "other-key.pem");
    let err = wrong.user(ALEX).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(401), Some("invalid_client")),
        "{err}"
    );
    let checks = check_okta(&wrong).await;
    assert!(
        checks
            .iter()
            .any(|c| !c.passed() && c.detail.contains("okta.private_key_file")),
        "{checks:#?}"
    );

    sb.set_okta_service_app_scopes(&["okta.users.read", "okta.apps.read"]);
    let okta = okta_service_app(&sb, "okta-key.pem");
    let err = okta.user(ALEX).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_scope"), "{err}");
    let checks = check_okta(&okta).await;
    assert!(
        checks.iter().any(|c| !c.passed()
            && c.detail.contains("okta.apps.manage")
            && c.detail.contains("Okta API Scopes")),
        "{checks:#?}"
    );

    sb.set_okta_service_app_scopes(SERVICE_APP_SCOPES);
    sb.set_okta_dpop_required(true);
    let err = okta.user(ALEX).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_dpop_proof"), "{err}");
    assert!(
        err.to_string()
            .contains("Require Demonstrating Proof of Possession"),
        "{err}"
    );
}

#[tokio::test]
async fn the_okta_api_wants_the_scope_of_each_call_in_the_bearer_token() {
    let sb = sandbox().await;
    sb.register_okta_service_app(SERVICE_APP, &read("okta-public.pem"))
        .unwrap();
    let url = format!("{}/oauth2/v1/token", sb.urls.okta);
    let key = PrivateKey::from_pem_file("k", &fixture("okta-key.pem")).unwrap();
    let signer = AssertionSigner::for_key(key, None, SERVICE_APP);
    let assertion = signer.sign(&url, SystemTime::now()).unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "okta.users.read"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion.as_str()),
    ];
    let (status, body) = post_form(&url, &form).await;
    assert_eq!(status, 200, "{body}");
    // An assertion is good once.
    let (status, body) = post_form(&url, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );

    let token = users_only_token(&signer, &url).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{}{path}", sb.urls.okta))
            .bearer_auth(&token)
            .send()
    };
    let user = get(format!("/api/v1/users/{ALEX}")).await.unwrap();
    assert_eq!(user.status().as_u16(), 200);
    let app = get(format!("/api/v1/apps/{}", sb.creds.app_id))
        .await
        .unwrap();
    assert_eq!(app.status().as_u16(), 403);
    let challenge = app
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains("okta.apps.read"),
        "{challenge}"
    );
    let body: serde_json::Value = app.json().await.unwrap();
    assert_eq!(body["errorCode"], "E0000006");
}

/// A token with only `okta.users.read`.
async fn users_only_token(signer: &AssertionSigner, url: &str) -> String {
    let assertion = signer.sign(url, SystemTime::now()).unwrap();
    let (status, body) = post_form(
        url,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "okta.users.read"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "okta.users.read");
    body["access_token"].as_str().unwrap().to_owned()
}
