//! The sandbox follows api-facts.md: the rules real Graph and Okta enforce.

use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Fault, FaultAction, MappingMode, Sandbox, SandboxOptions};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn links(&self) -> Vec<String> {
        self.headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
    fn next_link(&self) -> Option<String> {
        self.links().into_iter().find_map(|l| {
            l.strip_suffix("; rel=\"next\"")
                .map(|u| u.trim_start_matches('<').trim_end_matches('>').to_owned())
        })
    }
    fn graph_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    fn graph_message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
    fn okta_code(&self) -> &str {
        self.body["errorCode"].as_str().unwrap_or("")
    }
}

async fn start(opts: SandboxOptions) -> Sandbox {
    Sandbox::start(SandboxOptions {
        ordinary_users: 3,
        ..opts
    })
    .await
    .expect("sandbox starts")
}

async fn sandbox() -> Sandbox {
    start(SandboxOptions::default()).await
}

async fn send(req: reqwest::RequestBuilder) -> Resp {
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
    }
}

async fn token_with(sb: &Sandbox, tenant: &str, secret: &str) -> Resp {
    let url = format!("{}/{tenant}/oauth2/v2.0/token", sb.urls.authority);
    let form = [
        ("client_id", sb.creds.client_id.as_str()),
        ("client_secret", secret),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
    ];
    send(reqwest::Client::new().post(url).form(&form)).await
}

async fn token(sb: &Sandbox) -> String {
    let r = token_with(sb, &sb.creds.tenant_id, sb.creds.client_secret.expose()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_owned()
}

/// A Graph call; `pq` is appended to the Graph base verbatim (encode it yourself).
async fn graph(
    sb: &Sandbox,
    tok: &str,
    method: Method,
    pq: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{pq}", sb.urls.graph))
        .bearer_auth(tok);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    send(req).await
}

async fn get(sb: &Sandbox, tok: &str, pq: &str) -> Resp {
    graph(sb, tok, Method::GET, pq, None, &[]).await
}

async fn patch(sb: &Sandbox, tok: &str, id: &str, body: Value) -> Resp {
    graph(
        sb,
        tok,
        Method::PATCH,
        &format!("/users/{id}"),
        Some(body),
        &[],
    )
    .await
}

fn entra_id(sb: &Sandbox, upn: &str) -> String {
    sb.entra_user(upn).expect("entra user").id
}

/// An Okta call; `pq` is appended to the org URL verbatim.
async fn okta(sb: &Sandbox, method: Method, pq: &str, body: Option<Value>) -> Resp {
    okta_url(sb, method, &format!("{}{pq}", sb.urls.okta), body).await
}

async fn okta_url(sb: &Sandbox, method: Method, url: &str, body: Option<Value>) -> Resp {
    let mut req = reqwest::Client::new().request(method, url).header(
        "Authorization",
        format!("SSWS {}", sb.creds.okta_token.expose()),
    );
    if let Some(b) = body {
        req = req.json(&b);
    }
    send(req).await
}

fn okta_id(sb: &Sandbox, login: &str) -> String {
    sb.okta_user_id(login).expect("okta user")
}

fn app_path(sb: &Sandbox, rest: &str) -> String {
    format!("/api/v1/apps/{}{rest}", sb.creds.app_id)
}

async fn put_caps(sb: &Sandbox, caps: Value) -> Resp {
    let path = app_path(sb, "/features/USER_PROVISIONING");
    okta(sb, Method::PUT, &path, Some(caps)).await
}

fn user_keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with('@'))
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn select_decides_which_properties_come_back() {
    let sb = sandbox().await;
    let tok = token(&sb).await;
    let plain = get(&sb, &tok, "/users/megan%40contoso.com").await;
    assert_eq!(plain.status, 200);
    assert!(plain.header("request-id").is_some());
    assert_eq!(plain.body["userPrincipalName"], MEGAN);
    for hidden in [
        "onPremisesImmutableId",
        "onPremisesSyncEnabled",
        "assignedLicenses",
    ] {
        assert!(plain.body.get(hidden).is_none(), "{hidden} without $select");
    }

    let id = entra_id(&sb, MEGAN);
    let sel = get(
        &sb,
        &tok,
        &format!("/users/{id}?$select=onPremisesImmutableId,onPremisesSyncEnabled"),
    )
    .await;
    assert_eq!(sel.status, 200);
    assert_eq!(
        user_keys(&sel.body),
        ["id", "onPremisesImmutableId", "onPremisesSyncEnabled"]
    );
    assert_eq!(sel.body["onPremisesImmutableId"], MEGAN_ENTRA_IMMUTABLE_ID);
    assert_eq!(sel.body["onPremisesSyncEnabled"], Value::Null);

    let upper = get(&sb, &tok, "/users/MEGAN@Contoso.com?$select=id").await;
    assert_eq!(upper.body["id"], id.as_str());

    let missing = get(&sb, &tok, "/users/nobody%40contoso.com").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.graph_code(), "Request_ResourceNotFound");
    assert_eq!(
        missing.body["error"]["innerError"]["request-id"].as_str(),
        missing.header("request-id")
    );
    let bad = get(&sb, &tok, "/users/megan%40contoso.com?$select=nope").await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn immutable_id_filter_is_an_advanced_query() {
    let sb = sandbox().await;
    let tok = token(&sb).await;
    let q = format!(
        "/users?$filter=onPremisesImmutableId%20eq%20'{}'",
        MEGAN_ENTRA_IMMUTABLE_ID
    );
    let eventual = [("ConsistencyLevel", "eventual")];

    let no_header = get(&sb, &tok, &format!("{q}&$count=true")).await;
    assert_eq!(no_header.status, 400);
    assert_eq!(no_header.graph_code(), "Request_UnsupportedQuery");
    let no_count = graph(&sb, &tok, Method::GET, &q, None, &eventual).await;
    assert_eq!(no_count.status, 400);
    assert_eq!(no_count.graph_code(), "Request_UnsupportedQuery");

    let ok = graph(
        &sb,
        &tok,
        Method::GET,
        &format!("{q}&$count=true&$select=id,onPremisesImmutableId"),
        None,
        &eventual,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["@odata.count"], 1);
    assert_eq!(ok.body["value"][0]["id"], entra_id(&sb, MEGAN).as_str());
    assert_eq!(
        ok.body["value"][0]["onPremisesImmutableId"],
        MEGAN_ENTRA_IMMUTABLE_ID
    );

    // A UPN filter is not advanced; the OData literal doubles the apostrophe.
    let upn = get(
        &sb,
        &tok,
        "/users?$filter=userPrincipalName%20eq%20'o''brien%40contoso.com'",
    )
    .await;
    assert_eq!(upn.status, 200, "{}", upn.body);
    assert_eq!(upn.body["value"][0]["userPrincipalName"], OBRIEN);

    for bad in [
        "/users?$filter=userPrincipalName%20eq%20'o'brien%40contoso.com'",
        "/users?$filter=startswith(userPrincipalName,'a')",
        "/users?$filter=userPrincipalName%20eq%20'a'%20or%201%20eq%201",
    ] {
        let r = get(&sb, &tok, bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            ["Request_UnsupportedQuery", "BadRequest"].contains(&r.graph_code()),
            "{bad}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn raw_plus_in_the_query_is_a_space() {
    let sb = sandbox().await;
    let tok = token(&sb).await;
    let eventual = [("ConsistencyLevel", "eventual")];
    let count_for = |literal: String| {
        let sb = &sb;
        let tok = tok.clone();
        async move {
            let pq = format!("/users?$filter=onPremisesImmutableId%20eq%20'{literal}'&$count=true");
            let r = graph(sb, &tok, Method::GET, &pq, None, &eventual).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body["@odata.count"].as_u64().unwrap()
        }
    };
    assert!(PLUSID_IMMUTABLE_ID.contains('+'));
    let raw = PLUSID_IMMUTABLE_ID.to_owned();
    let encoded = PLUSID_IMMUTABLE_ID
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(count_for(raw).await, 0, "a raw + arrives as a space");
    assert_eq!(count_for(encoded).await, 1);
}

#[tokio::test]
async fn patch_refusals_follow_entra() {
    let sb = sandbox().await;
    let tok = token(&sb).await;
    let refuse = |r: &Resp, needle: &str| {
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.graph_code(), "Request_BadRequest", "{}", r.body);
        assert!(r.graph_message().contains(needle), "{}", r.body);
    };

    // Synced from on-premises: any property.
    let lynne = entra_id(&sb, LYNNE);
    let r = patch(&sb, &tok, &lynne, json!({"displayName": "x"})).await;
    refuse(&r, "originated within an external service");

    // Federated UPN: the ImmutableID cannot be set in place.
    let megan = entra_id(&sb, MEGAN);
    let r = patch(
        &sb,
        &tok,
        &megan,
        json!({"onPremisesImmutableId": "bmV3SWQ="}),
    )
    .await;
    refuse(&r, "federated");

    // Move megan to the initial domain first; then the value rules apply.
    let tmp = "megan@contoso.onmicrosoft.com";
    let r = patch(&sb, &tok, &megan, json!({"userPrincipalName": tmp})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = patch(&sb, &tok, &megan, json!({"onPremisesImmutableId": null})).await;
    refuse(
        &r,
        "Invalid value specified for property 'onPremisesImmutableId'",
    );
    let r = patch(&sb, &tok, &megan, json!({"onPremisesImmutableId": ""})).await;
    refuse(&r, "Invalid value specified");
    let r = patch(
        &sb,
        &tok,
        &megan,
        json!({"onPremisesImmutableId": "yYuRNW0Z6kCX_YidebdT8A=="}),
    )
    .await;
    refuse(&r, "Invalid value specified");
    let r = patch(
        &sb,
        &tok,
        &megan,
        json!({"onPremisesImmutableId": ALEX_ENTRA_IMMUTABLE_ID}),
    )
    .await;
    refuse(&r, "onPremisesImmutableId already exists");
    let r = patch(
        &sb,
        &tok,
        &megan,
        json!({"userPrincipalName": "megan@example.org"}),
    )
    .await;
    refuse(&r, "verified domain names");
    let r = patch(&sb, &tok, &megan, json!({"userPrincipalName": ALEX})).await;
    refuse(&r, "userPrincipalName already exists");
    let user = sb.entra_user(&megan).unwrap();
    assert_eq!(user.user_principal_name, tmp);
    assert_eq!(
        user.on_premises_immutable_id.as_deref(),
        Some(MEGAN_ENTRA_IMMUTABLE_ID)
    );

    // adele has no ImmutableID: she cannot return to the federated domain without one...
    let adele = entra_id(&sb, ADELE);
    let tmp = "adele@contoso.onmicrosoft.com";
    let r = patch(&sb, &tok, &adele, json!({"userPrincipalName": tmp})).await;
    assert_eq!(r.status, 204);
    let r = patch(&sb, &tok, &adele, json!({"userPrincipalName": ADELE})).await;
    refuse(&r, "SourceAnchor is a required property");
    // ...but setting it and moving back in one PATCH works.
    let new_id = "yYuRNW0Z6kCXeYidebdT8A==";
    let r = patch(
        &sb,
        &tok,
        &adele,
        json!({"onPremisesImmutableId": new_id, "userPrincipalName": ADELE}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let user = sb.entra_user(ADELE).unwrap();
    assert_eq!(user.on_premises_immutable_id.as_deref(), Some(new_id));

    // A Global Administrator's sensitive properties are out of the app's reach.
    let isaiah = entra_id(&sb, ISAIAH);
    let r = patch(
        &sb,
        &tok,
        &isaiah,
        json!({"userPrincipalName": "isaiah@contoso.onmicrosoft.com"}),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.graph_code(), "Authorization_RequestDenied");

    // Managed domain: the ImmutableID is set in place; unknown properties are ignored.
    let alex = entra_id(&sb, ALEX);
    let r = patch(
        &sb,
        &tok,
        &alex,
        json!({"onPremisesImmutableId": ALEX_OKTA_IMMUTABLE_ID, "nonsense": 1}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
}

#[tokio::test]
async fn tokens_expire_and_revoke() {
    let sb = sandbox().await;
    let tok = token(&sb).await;
    assert_eq!(get(&sb, &tok, "/organization").await.status, 200);
    sb.expire_tokens();
    let r = get(&sb, &tok, "/organization").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.graph_code(), "InvalidAuthenticationToken");
    let fresh = token(&sb).await;
    let org = get(&sb, &fresh, "/organization").await;
    assert_eq!(org.status, 200);
    let initial: Vec<&Value> = org.body["value"][0]["verifiedDomains"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["isInitial"] == true)
        .collect();
    assert_eq!(initial[0]["name"], INITIAL_DOMAIN);
    let dom = get(&sb, &fresh, "/domains/contoso.com").await;
    assert_eq!(dom.body["authenticationType"], "Federated");
    assert_eq!(get(&sb, &fresh, "/domains/nope.com").await.status, 404);
    assert_eq!(get(&sb, "garbage", "/organization").await.status, 401);

    let wrong = token_with(&sb, &sb.creds.tenant_id, "wrong").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["error"], "invalid_client");
    assert_eq!(wrong.body["error_codes"][0], 7000215);
    let tenant = token_with(&sb, "other-tenant", sb.creds.client_secret.expose()).await;
    assert_eq!(tenant.status, 400);
    assert_eq!(tenant.body["error_codes"][0], 90002);
    assert_eq!(
        token_with(&sb, TENANT_GUID, sb.creds.client_secret.expose())
            .await
            .status,
        200
    );

    let short = start(SandboxOptions {
        token_lifetime: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let tok = token(&short).await;
    assert_eq!(get(&short, &tok, "/organization").await.status, 401);
}

#[tokio::test]
async fn group_grant_blocks_unassign() {
    let sb = sandbox().await;
    let grady = okta_id(&sb, GRADY);
    let r = okta(
        &sb,
        Method::DELETE,
        &app_path(&sb, &format!("/users/{grady}?sendEmail=false")),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.okta_code(), "E0000046");
    assert!(r.body["errorId"].is_string());
    assert!(r.header("x-okta-request-id").is_some());
    assert_eq!(sb.okta_app_user(&grady).unwrap().scope, "GROUP");
    assert!(sb.deprovisions().is_empty());

    // The user's groups and the app's groups tell the client this in advance.
    let groups = okta(
        &sb,
        Method::GET,
        &format!("/api/v1/users/{grady}/groups"),
        None,
    )
    .await;
    let names: Vec<&str> = groups
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["profile"]["name"].as_str())
        .collect();
    assert!(names.contains(&LICENSED_GROUP));
    let app_groups = okta(&sb, Method::GET, &app_path(&sb, "/groups"), None).await;
    assert_eq!(app_groups.body.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn unassign_deprovisions_only_while_deactivate_is_enabled() {
    let sb = sandbox().await;
    let megan = okta_id(&sb, MEGAN);
    let r = okta(
        &sb,
        Method::DELETE,
        &app_path(&sb, &format!("/users/{megan}?sendEmail=false")),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(sb.deprovisions(), std::slice::from_ref(&megan));
    assert_eq!(sb.entra_user(MEGAN).unwrap().account_enabled, Some(false));
    assert!(sb.okta_app_user(&megan).is_none());
    let again = okta(
        &sb,
        Method::GET,
        &app_path(&sb, &format!("/users/{megan}")),
        None,
    )
    .await;
    assert_eq!(again.status, 404);
    assert_eq!(again.okta_code(), "E0000007");

    let r = put_caps(
        &sb,
        json!({"update": {"lifecycleDeactivate": {"status": "DISABLED"}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["capabilities"]["update"]["lifecycleDeactivate"]["status"],
        "DISABLED"
    );
    assert_eq!(
        r.body["capabilities"]["update"]["profile"]["status"],
        "ENABLED"
    );
    assert_eq!(sb.provisioning_writes().len(), 1);
    let alex = okta_id(&sb, ALEX);
    let r = okta(
        &sb,
        Method::DELETE,
        &app_path(&sb, &format!("/users/{alex}?sendEmail=false")),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(sb.deprovisions(), [megan]);
    assert_eq!(sb.entra_user(ALEX).unwrap().account_enabled, Some(true));
}

#[tokio::test]
async fn put_takes_the_capabilities_object_only() {
    let sb = sandbox().await;
    let path = app_path(&sb, "/features/USER_PROVISIONING");
    let feature = okta(&sb, Method::GET, &path, None).await;
    assert_eq!(feature.status, 200);
    assert_eq!(feature.body["name"], "USER_PROVISIONING");
    let before = sb.provisioning_capabilities();
    assert_eq!(feature.body["capabilities"], before);

    let r = put_caps(&sb, feature.body.clone()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.okta_code(), "E0000001");
    let r = put_caps(&sb, json!({"update": {"profile": {"status": "OFF"}}})).await;
    assert_eq!(r.status, 400);
    assert_eq!(sb.provisioning_capabilities(), before);
    assert!(sb.provisioning_writes().is_empty());

    let r = put_caps(&sb, before.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(sb.provisioning_writes(), [before]);
}

async fn reassign(sb: &Sandbox, okta_user: &str, user_name: &str, profile: Value) -> Resp {
    let body = json!({
        "id": okta_user,
        "scope": "USER",
        "credentials": {"userName": user_name},
        "profile": profile,
    });
    okta(sb, Method::POST, &app_path(sb, "/users"), Some(body)).await
}

#[tokio::test]
async fn mapping_modes_decide_the_assigned_immutable_id() {
    let sb = sandbox().await;
    sb.set_deactivate(false);
    let megan = okta_id(&sb, MEGAN);
    let fresh = "yYuRNW0Z6kCXeYidebdT8A==";
    let extra = json!({"immutableId": fresh, "licenses": [LICENSES], "roles": ["User"]});

    // Unmapped: the assignment sets it; the mapping lists no immutableId.
    let mapping = okta(
        &sb,
        Method::GET,
        &format!("/api/v1/mappings/{MAPPING_ID}"),
        None,
    )
    .await;
    assert!(mapping.body["properties"].get("immutableId").is_none());
    let r = reassign(&sb, &megan, MEGAN, extra.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["profile"]["immutableId"], fresh);
    assert_eq!(r.body["status"], "PROVISIONED");

    // Ignore: the Okta user's o365ImmutableId wins.
    sb.set_mapping(MappingMode::Ignore);
    let list = okta(
        &sb,
        Method::GET,
        &format!("/api/v1/mappings?targetId={}", sb.creds.app_id),
        None,
    )
    .await;
    let ids: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, [MAPPING_ID]);
    let mapping = okta(
        &sb,
        Method::GET,
        &format!("/api/v1/mappings/{MAPPING_ID}"),
        None,
    )
    .await;
    assert_eq!(
        mapping.body["properties"]["immutableId"]["expression"],
        "user.o365ImmutableId"
    );
    let r = reassign(&sb, &megan, MEGAN, extra.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["profile"]["immutableId"], MEGAN_OKTA_IMMUTABLE_ID);
    assert_eq!(
        sb.okta_user_profile(&megan).unwrap()["o365ImmutableId"],
        MEGAN_OKTA_IMMUTABLE_ID
    );

    // Reject: naming it fails; leaving it out takes the mapped value.
    sb.set_mapping(MappingMode::Reject);
    let r = reassign(&sb, &megan, MEGAN, extra).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.okta_code(), "E0000001");
    let r = reassign(&sb, &megan, MEGAN, json!({"licenses": [LICENSES]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        sb.okta_app_user(&megan).unwrap().immutable_id(),
        Some(MEGAN_OKTA_IMMUTABLE_ID)
    );

    let unknown = reassign(&sb, "00unobody", "x@contoso.com", json!({})).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.okta_code(), "E0000001");
}

#[tokio::test]
async fn okta_rate_limit_answers_429_with_headers() {
    let sb = sandbox().await;
    sb.set_okta_rate_limit(3, Duration::from_secs(60));
    let megan = okta_id(&sb, MEGAN);
    let path = format!("/api/v1/users/{megan}");
    for remaining in ["2", "1", "0"] {
        let r = okta(&sb, Method::GET, &path, None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-rate-limit-limit"), Some("3"));
        assert_eq!(r.header("x-rate-limit-remaining"), Some(remaining));
    }
    let r = okta(&sb, Method::GET, &path, None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.okta_code(), "E0000047");
    assert_eq!(r.header("x-rate-limit-remaining"), Some("0"));
    let reset: u64 = r.header("x-rate-limit-reset").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(reset >= now && reset <= now + 61, "reset {reset} now {now}");
    assert_eq!(sb.okta_throttled(), 1);
    // Another bucket is unaffected.
    let r = okta(&sb, Method::GET, "/api/v1/mappings", None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn okta_pages_follow_link_headers() {
    let sb = sandbox().await;
    let first = format!("{}{}?limit=4", sb.urls.okta, app_path(&sb, "/users"));
    let mut url = Some(first);
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(u) = url.take() {
        pages += 1;
        assert!(pages <= 20, "pagination does not end");
        let r = okta_url(&sb, Method::GET, &u, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.links().iter().any(|l| l.ends_with("rel=\"self\"")));
        let items = r.body.as_array().unwrap();
        assert!(items.len() <= 4);
        seen.extend(items.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        url = r.next_link();
    }
    // 15 scenario app users (nestor is Entra-only, noel is not assigned) + 3 ordinary.
    assert_eq!(seen.len(), 18);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len());
    assert!(pages >= 4);

    // q finds diego by his Office 365 user name although his Okta login differs.
    let r = okta(
        &sb,
        Method::GET,
        &format!("{}?q=diego%40contoso.com", app_path(&sb, "/users")),
        None,
    )
    .await;
    let found = r.body.as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["credentials"]["userName"], DIEGO);
    assert_eq!(
        okta(&sb, Method::GET, "/api/v1/users/diego%40contoso.com", None)
            .await
            .status,
        404
    );
    let obrien = okta(
        &sb,
        Method::GET,
        "/api/v1/users/o%27brien%40contoso.com",
        None,
    )
    .await;
    assert_eq!(obrien.status, 200);
    assert_eq!(obrien.body["profile"]["login"], OBRIEN);
}

#[tokio::test]
async fn faults_hit_the_nth_call_for_times_calls() {
    let sb = sandbox().await;
    let tok = token(&sb).await;
    sb.inject(Fault {
        op: "graph.get_domain".into(),
        nth: 2,
        times: 2,
        action: FaultAction::Error {
            status: 503,
            code: "serviceUnavailable".into(),
            message: "try later".into(),
        },
    });
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = get(&sb, &tok, "/domains/contoso.com").await;
        if r.status == 503 {
            assert_eq!(r.graph_code(), "serviceUnavailable");
            assert!(r.body["error"]["innerError"]["request-id"].is_string());
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 503, 503, 200]);

    sb.inject(Fault {
        op: "graph.update_user".into(),
        nth: 1,
        times: 1,
        action: FaultAction::Throttle {
            retry_after: Some("2.128".into()),
        },
    });
    let alex = entra_id(&sb, ALEX);
    let r = patch(
        &sb,
        &tok,
        &alex,
        json!({"onPremisesImmutableId": ALEX_OKTA_IMMUTABLE_ID}),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2.128"));
    assert_eq!(
        sb.entra_user(ALEX)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(ALEX_ENTRA_IMMUTABLE_ID),
        "a faulted write changes nothing"
    );

    sb.inject(Fault {
        op: "okta.get_user".into(),
        nth: 1,
        times: 1,
        action: FaultAction::Throttle { retry_after: None },
    });
    let r = okta(&sb, Method::GET, "/api/v1/users/megan%40contoso.com", None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.okta_code(), "E0000047");
    assert!(r.header("x-rate-limit-reset").is_some());
    assert_eq!(sb.okta_throttled(), 1);

    sb.set_deactivate(false);
    sb.inject(Fault {
        op: "okta.unassign".into(),
        nth: 1,
        times: 1,
        action: FaultAction::EnableDeactivate,
    });
    let megan = okta_id(&sb, MEGAN);
    let r = okta(
        &sb,
        Method::DELETE,
        &app_path(&sb, &format!("/users/{megan}")),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(sb.deprovisions(), [megan]);

    sb.inject(Fault {
        op: "okta.get_feature".into(),
        nth: 1,
        times: 1,
        action: FaultAction::Delay(Duration::from_millis(60)),
    });
    let t = Instant::now();
    let r = okta(
        &sb,
        Method::GET,
        &app_path(&sb, "/features/USER_PROVISIONING"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(60));

    let ops: Vec<String> = sb.calls().into_iter().map(|c| c.op).collect();
    for op in &ops {
        assert!(OPERATIONS.contains(&op.as_str()), "{op}");
    }
    assert_eq!(ops.iter().filter(|o| *o == "graph.get_domain").count(), 4);
    sb.reset_calls();
    assert!(sb.calls().is_empty());
}

#[tokio::test]
async fn reads_lag_behind_writes() {
    let sb = start(SandboxOptions {
        graph_read_lag: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let tok = token(&sb).await;
    let alex = entra_id(&sb, ALEX);
    let r = patch(
        &sb,
        &tok,
        &alex,
        json!({"onPremisesImmutableId": ALEX_OKTA_IMMUTABLE_ID}),
    )
    .await;
    assert_eq!(r.status, 204);
    let written = Instant::now();
    assert_eq!(
        sb.entra_user(&alex)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(ALEX_OKTA_IMMUTABLE_ID)
    );
    let pq = format!("/users/{alex}?$select=onPremisesImmutableId");
    let stale = get(&sb, &tok, &pq).await;
    if written.elapsed() < Duration::from_millis(250) {
        assert_eq!(stale.body["onPremisesImmutableId"], ALEX_ENTRA_IMMUTABLE_ID);
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fresh = get(&sb, &tok, &pq).await;
    assert_eq!(fresh.body["onPremisesImmutableId"], ALEX_OKTA_IMMUTABLE_ID);
}

#[tokio::test]
async fn okta_refuses_a_wrong_token() {
    let sb = sandbox().await;
    let r = send(
        reqwest::Client::new()
            .get(format!("{}/api/v1/users/megan%40contoso.com", sb.urls.okta))
            .header("Authorization", "SSWS wrong"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.okta_code(), "E0000011");
    assert!(r.header("x-rate-limit-limit").is_some());
}

#[tokio::test]
async fn latency_applies_and_drop_stops_the_server() {
    let sb = sandbox().await;
    sb.set_latency(Duration::from_millis(40));
    let t = Instant::now();
    assert_eq!(
        okta(&sb, Method::GET, "/api/v1/mappings", None)
            .await
            .status,
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(40));
    let url = format!("{}/api/v1/mappings", sb.urls.okta);
    drop(sb);
    let mut refused = false;
    for _ in 0..50 {
        if reqwest::Client::new().get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the server still answers after drop");
}

fn apply_then_fail(op: &str, status: u16, code: &str) -> Fault {
    Fault {
        op: op.into(),
        nth: 1,
        times: 1,
        action: FaultAction::ApplyThenFail {
            status,
            code: code.into(),
            message: format!("injected {code}"),
        },
    }
}

#[tokio::test]
async fn apply_then_fail_makes_the_write_and_answers_with_the_services_error() {
    let sb = sandbox().await;
    let tok = token(&sb).await;
    let alex = entra_id(&sb, ALEX);
    sb.inject(apply_then_fail(
        "graph.update_user",
        500,
        "Service_InternalError",
    ));
    let r = graph(
        &sb,
        &tok,
        Method::PATCH,
        &format!("/users/{alex}"),
        Some(json!({"onPremisesImmutableId": ALEX_OKTA_IMMUTABLE_ID})),
        &[("client-request-id", "c0ffee00-0000-4000-8000-000000000001")],
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.graph_code(), "Service_InternalError");
    let inner = &r.body["error"]["innerError"];
    assert!(inner["date"].is_string() && inner["request-id"].is_string());
    assert_eq!(
        inner["client-request-id"],
        "c0ffee00-0000-4000-8000-000000000001"
    );
    assert_eq!(
        sb.entra_user(&alex)
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(ALEX_OKTA_IMMUTABLE_ID),
        "the write landed although the answer was an error"
    );

    sb.set_deactivate(false);
    let megan = okta_id(&sb, MEGAN);
    sb.inject(apply_then_fail("okta.unassign", 500, "E0000009"));
    let r = okta(
        &sb,
        Method::DELETE,
        &app_path(&sb, &format!("/users/{megan}?sendEmail=false")),
        None,
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.okta_code(), "E0000009");
    for field in ["errorSummary", "errorLink", "errorId"] {
        assert!(r.body[field].is_string(), "{field}: {}", r.body);
    }
    assert!(r.body["errorCauses"].is_array());
    assert!(r.header("x-rate-limit-reset").is_some());
    assert!(
        sb.okta_app_user(&megan).is_none(),
        "the unassign landed although the answer was an error"
    );
    let record = sb.calls().into_iter().last().unwrap();
    assert_eq!((record.op.as_str(), record.status), ("okta.unassign", 500));
}

#[tokio::test]
async fn apply_then_fail_leaves_a_refused_call_refused() {
    let sb = sandbox().await;
    sb.inject(apply_then_fail("okta.unassign", 500, "E0000009"));
    let r = okta(
        &sb,
        Method::DELETE,
        &app_path(&sb, "/users/00unobody?sendEmail=false"),
        None,
    )
    .await;
    assert_eq!(r.status, 404, "nothing was applied, so nothing to pretend");
    assert_eq!(r.okta_code(), "E0000007");
}

#[tokio::test]
async fn a_cleared_immutable_id_makes_a_user_fresh_like_adele() {
    let sb = sandbox().await;
    let tok = token(&sb).await;
    let fresh = ordinary_upn(1);
    assert!(sb.clear_entra_immutable_id(&fresh));
    assert!(!sb.clear_entra_immutable_id("nobody@contoso.com"));
    let id = entra_id(&sb, &fresh);
    let r = get(
        &sb,
        &tok,
        &format!("/users/{id}?$select=id,onPremisesImmutableId"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["onPremisesImmutableId"], Value::Null);
    // Like adele, it can leave the federated domain but not come back without an ImmutableID.
    let tmp = "user0001@contoso.onmicrosoft.com";
    let r = patch(&sb, &tok, &id, json!({"userPrincipalName": tmp})).await;
    assert_eq!(r.status, 204);
    let r = patch(&sb, &tok, &id, json!({"userPrincipalName": fresh})).await;
    assert_eq!(r.status, 400, "{}", r.body);
}
