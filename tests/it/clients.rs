//! Graph and Okta clients against the sandbox: happy paths, throttling, timeouts, tokens, pacing.

use crate::harness::{
    calls_of, fast_http, graph, graph_with, okta, okta_with, sandbox, sandbox_with,
};
use o365_fixbot::directory::graph::{GraphClient, GraphError, UserPatch};
use o365_fixbot::directory::okta::{AppUserCredentials, AssignAppUser, OktaError};
use o365_fixbot::domain::{EntraObjectId, ImmutableId, OktaUserId, Upn};
use o365_fixbot::sandbox::{Fault, FaultAction, MappingMode, SandboxOptions};
use o365_fixbot::secret::Secret;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn upn(s: &str) -> Upn {
    Upn::parse(s).unwrap()
}

fn fault(op: &str, times: u32, action: FaultAction) -> Fault {
    Fault {
        op: op.into(),
        nth: 1,
        times,
        action,
    }
}

fn error(status: u16, code: &str) -> FaultAction {
    FaultAction::Error {
        status,
        code: code.into(),
        message: format!("injected {code}"),
    }
}

async fn entra_id(g: &GraphClient, name: &str) -> EntraObjectId {
    let u = g.user_by_upn(&upn(name)).await.unwrap().value.unwrap();
    EntraObjectId::parse(&u.id).unwrap()
}

// ---------------------------------------------------------------- Graph: happy paths

#[tokio::test]
async fn graph_reads_users_by_upn_and_id() {
    let sb = sandbox().await;
    let g = graph(&sb);

    let reply = g.user_by_upn(&upn("adele@contoso.com")).await.unwrap();
    assert!(reply.request_id.is_some(), "every reply carries request-id");
    let adele = reply.value.expect("adele exists");
    assert!(adele
        .user_principal_name
        .eq_ignore_ascii_case("adele@contoso.com"));

    let obrien = g
        .user_by_upn(&upn("o'brien@contoso.com"))
        .await
        .unwrap()
        .value;
    let obrien = obrien.expect("an apostrophe in the UPN reaches Graph intact");
    assert!(obrien
        .user_principal_name
        .eq_ignore_ascii_case("o'brien@contoso.com"));

    let id = EntraObjectId::parse(&adele.id).unwrap();
    let by_id = g.user_by_id(&id).await.unwrap().value.expect("by id");
    assert_eq!(by_id, adele);

    // Entra-only data is asked for by `$select` on every user read.
    let lynne = g
        .user_by_upn(&upn("lynne@contoso.com"))
        .await
        .unwrap()
        .value;
    assert_eq!(lynne.unwrap().on_premises_sync_enabled, Some(true));
    let user_reads: Vec<_> = sb
        .calls()
        .into_iter()
        .filter(|c| c.op == "graph.get_user" || c.op == "graph.list_users")
        .collect();
    assert!(!user_reads.is_empty());
    assert!(user_reads
        .iter()
        .all(|c| c.path_and_query.contains("$select=") || c.path_and_query.contains("%24select=")));

    assert!(g
        .user_by_upn(&upn("ghost@contoso.com"))
        .await
        .unwrap()
        .value
        .is_none());
    let missing = EntraObjectId::parse("00000000-0000-4000-8000-00000000dead").unwrap();
    assert!(g.user_by_id(&missing).await.unwrap().value.is_none());
}

#[tokio::test]
async fn graph_domains_and_roles() {
    let sb = sandbox().await;
    let g = graph(&sb);

    let contoso = g
        .domain("contoso.com")
        .await
        .unwrap()
        .value
        .expect("contoso.com");
    assert!(contoso.id.eq_ignore_ascii_case("contoso.com"));
    assert!(!contoso.authentication_type.is_empty());
    assert!(g.domain("nowhere.example").await.unwrap().value.is_none());

    let initial = g.initial_domain().await.unwrap();
    assert!(
        initial.value.ends_with(".onmicrosoft.com"),
        "{}",
        initial.value
    );
    let d = g.domain(&initial.value).await.unwrap().value.unwrap();
    assert!(d.is_initial && !d.is_federated());

    let isaiah = entra_id(&g, "isaiah@contoso.com").await;
    let roles = g.directory_roles(&isaiah).await.unwrap().value;
    assert!(
        roles
            .iter()
            .any(|r| r.display_name.as_deref() == Some("Global Administrator")),
        "{roles:?}"
    );
    let adele = entra_id(&g, "adele@contoso.com").await;
    assert!(g.directory_roles(&adele).await.unwrap().value.is_empty());
}

#[tokio::test]
async fn graph_uniqueness_query_keeps_the_plus() {
    let sb = sandbox().await;
    let g = graph(&sb);
    let plus = g
        .user_by_upn(&upn("plusid@contoso.com"))
        .await
        .unwrap()
        .value
        .unwrap();
    let value = plus
        .on_premises_immutable_id
        .clone()
        .expect("plusid has an ID");
    assert!(value.contains('+'), "the scenario's ID has a '+': {value}");

    let found = g
        .users_with_immutable_id(&ImmutableId::parse_value(&value).unwrap())
        .await
        .unwrap();
    assert!(found.request_id.is_some());
    let ids: Vec<&str> = found.value.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, [plus.id.as_str()]);

    let query = sb
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.op == "graph.list_users")
        .expect("the query was served");
    assert!(
        query.path_and_query.contains("%2B"),
        "{}",
        query.path_and_query
    );
    assert!(query.status < 300);

    let none = g
        .users_with_immutable_id(&ImmutableId::generate())
        .await
        .unwrap();
    assert!(none.value.is_empty());
}

#[tokio::test]
async fn graph_patch_moves_upn_and_sets_id() {
    let sb = sandbox().await;
    let g = graph(&sb);
    let name = "user0001@contoso.com";
    let id = entra_id(&g, name).await;
    let initial = g.initial_domain().await.unwrap().value;
    let temp = upn(name).with_domain(&initial).unwrap();
    let new_id = ImmutableId::generate();

    let r = g
        .update_user(
            &id,
            &UserPatch {
                user_principal_name: Some(temp.to_string()),
                ..UserPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(r.request_id.is_some());
    assert_eq!(
        sb.entra_user(id.as_str()).unwrap().user_principal_name,
        temp.to_string()
    );

    g.update_user(
        &id,
        &UserPatch {
            user_principal_name: Some(name.into()),
            on_premises_immutable_id: Some(new_id.to_string()),
        },
    )
    .await
    .unwrap();
    let stored = sb.entra_user(id.as_str()).unwrap();
    assert_eq!(stored.user_principal_name, name);
    assert_eq!(
        stored.on_premises_immutable_id.as_deref(),
        Some(new_id.as_str())
    );
}

#[tokio::test]
async fn graph_refusals_keep_code_and_request_id() {
    let sb = sandbox().await;
    let g = graph(&sb);
    let lynne = entra_id(&g, "lynne@contoso.com").await;
    let err = g
        .update_user(
            &lynne,
            &UserPatch {
                on_premises_immutable_id: Some(ImmutableId::generate().to_string()),
                ..UserPatch::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("Request_BadRequest"), "{err}");
    assert_eq!(err.status(), Some(400));
    assert!(err.request_id().is_some());
    assert_eq!(
        calls_of(&sb, "graph.update_user"),
        1,
        "a refusal is not retried"
    );
}

#[tokio::test]
async fn graph_client_is_shared_across_tasks() {
    let sb = sandbox().await;
    let g = graph(&sb);
    let mut tasks = Vec::new();
    for i in 1..=20 {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("user{i:04}@contoso.com");
            g.user_by_upn(&upn(&name)).await.map(|r| r.value.is_some())
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap());
    }
    assert_eq!(calls_of(&sb, "graph.token"), 1, "one token for all tasks");
}

// ---------------------------------------------------------------- Graph: retries

#[tokio::test]
async fn graph_429_waits_for_decimal_retry_after() {
    let sb = sandbox().await;
    let g = graph(&sb);
    g.initial_domain().await.unwrap(); // token fetched before the clock starts
    sb.inject(fault(
        "graph.list_users",
        1,
        FaultAction::Throttle {
            retry_after: Some("1.5".into()),
        },
    ));
    let started = Instant::now();
    let user = g.user_by_upn(&upn("adele@contoso.com")).await.unwrap();
    let elapsed = started.elapsed();
    assert!(user.value.is_some());
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(calls_of(&sb, "graph.list_users"), 2);
}

#[tokio::test]
async fn graph_retries_503_and_concurrency_violation() {
    let sb = sandbox().await;
    let g = graph(&sb);
    sb.inject(fault(
        "graph.list_users",
        1,
        error(503, "serviceNotAvailable"),
    ));
    assert!(g
        .user_by_upn(&upn("megan@contoso.com"))
        .await
        .unwrap()
        .value
        .is_some());
    assert_eq!(calls_of(&sb, "graph.list_users"), 2);

    // A managed domain: the ImmutableID may be set without moving the UPN first.
    let alex = entra_id(&g, "alex@fabrikam.com").await;
    sb.inject(fault(
        "graph.update_user",
        2,
        error(409, "Directory_ConcurrencyViolation"),
    ));
    let id = ImmutableId::generate();
    g.update_user(
        &alex,
        &UserPatch {
            on_premises_immutable_id: Some(id.to_string()),
            ..UserPatch::default()
        },
    )
    .await
    .expect("retried past two conflicts");
    assert_eq!(calls_of(&sb, "graph.update_user"), 3);
    assert_eq!(
        sb.entra_user(alex.as_str())
            .unwrap()
            .on_premises_immutable_id
            .as_deref(),
        Some(id.as_str())
    );
}

#[tokio::test]
async fn graph_timeouts_are_retried_within_the_deadline() {
    let sb = sandbox().await;
    let mut http = fast_http();
    http.request_timeout = Duration::from_millis(500);
    let g = graph_with(&sb, http.clone());
    g.initial_domain().await.unwrap();

    sb.inject(fault(
        "graph.list_users",
        1,
        FaultAction::Delay(Duration::from_secs(2)),
    ));
    let started = Instant::now();
    assert!(g
        .user_by_upn(&upn("adele@contoso.com"))
        .await
        .unwrap()
        .value
        .is_some());
    assert!(started.elapsed() >= Duration::from_millis(500));

    sb.clear_faults();
    http.call_deadline = Duration::from_secs(3);
    http.max_attempts = 100;
    let g = graph_with(&sb, http);
    g.initial_domain().await.unwrap();
    sb.inject(fault(
        "graph.list_users",
        1_000,
        FaultAction::Delay(Duration::from_secs(2)),
    ));
    let started = Instant::now();
    let err = g.user_by_upn(&upn("adele@contoso.com")).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, GraphError::Timeout(_) | GraphError::Exhausted { .. }),
        "{err:?}"
    );
    assert!(elapsed <= Duration::from_millis(3_300), "{elapsed:?}");
}

#[tokio::test]
async fn graph_renews_a_refused_token() {
    let sb = sandbox().await;
    let g = graph(&sb);
    g.user_by_upn(&upn("adele@contoso.com")).await.unwrap();
    sb.expire_tokens();
    let u = g.user_by_upn(&upn("adele@contoso.com")).await.unwrap();
    assert!(u.value.is_some());
    assert_eq!(calls_of(&sb, "graph.token"), 2);
    assert_eq!(g.token_fetches(), 2);
}

#[tokio::test]
async fn graph_renews_a_token_before_it_expires() {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 5,
        token_lifetime: Duration::from_secs(2),
        ..SandboxOptions::default()
    })
    .await;
    let g = graph(&sb);
    g.user_by_upn(&upn("adele@contoso.com")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1900)).await;
    g.user_by_upn(&upn("adele@contoso.com")).await.unwrap();
    assert_eq!(calls_of(&sb, "graph.token"), 2);
    let refused = sb
        .calls()
        .iter()
        .filter(|c| c.op.starts_with("graph.") && c.status == 401)
        .count();
    assert_eq!(refused, 0, "renewed ahead of expiry, never refused");
}

#[tokio::test]
async fn graph_wrong_secret_is_an_auth_error_without_the_secret() {
    let sb = sandbox().await;
    let secret = "wrong-s3cret-Do-Not-Print";
    let mut config = sb.graph_config(fast_http());
    config.credential =
        o365_fixbot::directory::graph::GraphCredential::ClientSecret(Secret::new(secret));
    let g = GraphClient::new(config).unwrap();
    let err = g.user_by_upn(&upn("adele@contoso.com")).await.unwrap_err();
    assert!(matches!(err, GraphError::Auth { .. }), "{err:?}");
    assert!(!format!("{err}").contains(secret));
    assert!(!format!("{err:?}").contains(secret));
    assert_eq!(
        calls_of(&sb, "graph.token"),
        1,
        "refused credentials are not retried"
    );
    assert_eq!(calls_of(&sb, "graph.list_users"), 0);
}

// ---------------------------------------------------------------- Okta: happy paths

#[tokio::test]
async fn okta_users_groups_and_app_users() {
    let sb = sandbox().await;
    let o = okta(&sb);

    let reply = o.user("o'brien@contoso.com").await.unwrap();
    assert!(reply.request_id.is_some());
    let obrien = reply.value.expect("o'brien by login");
    assert!(obrien
        .login()
        .unwrap()
        .eq_ignore_ascii_case("o'brien@contoso.com"));
    assert!(o.user("nobody@contoso.com").await.unwrap().value.is_none());

    let diego_id = sb
        .okta_user_id("diego.s@contoso.com")
        .expect("diego in okta");
    let diego = OktaUserId::parse(&diego_id).unwrap();
    let app_user = o.app_user(&diego).await.unwrap().value.expect("assigned");
    assert_eq!(app_user.id, diego_id);
    let by_name = o
        .app_user_by_user_name("diego@contoso.com")
        .await
        .unwrap()
        .value
        .expect("found by app user name");
    assert_eq!(by_name.id, diego_id);
    assert!(o
        .app_user_by_user_name("nobody@contoso.com")
        .await
        .unwrap()
        .value
        .is_none());

    let grady = OktaUserId::parse(&sb.okta_user_id("grady@contoso.com").unwrap()).unwrap();
    let groups = o.user_groups(&grady).await.unwrap().value;
    let app_groups = o.app_groups().await.unwrap().value;
    assert!(!app_groups.is_empty());
    let granting: HashSet<&str> = app_groups.iter().map(|g| g.id.as_str()).collect();
    assert!(
        groups.iter().any(|g| granting.contains(g.id.as_str())),
        "grady is granted the app by a group"
    );
    let ghost = sb.okta_user_id("ghost@contoso.com").unwrap();
    let by_id = o.user(&ghost).await.unwrap().value.expect("by id");
    assert_eq!(by_id.id, ghost);
}

#[tokio::test]
async fn okta_unassign_and_assign_round_trip() {
    let sb = sandbox().await;
    sb.set_deactivate(false);
    let o = okta(&sb);
    let id = OktaUserId::parse(&sb.okta_user_id("adele@contoso.com").unwrap()).unwrap();
    let before = o
        .app_user(&id)
        .await
        .unwrap()
        .value
        .expect("adele is assigned");
    assert_eq!(before.scope, "USER");

    let r = o.unassign(&id).await.unwrap();
    assert!(r.request_id.is_some());
    assert!(o.app_user(&id).await.unwrap().value.is_none());
    let delete = sb
        .calls()
        .into_iter()
        .find(|c| c.op == "okta.unassign")
        .unwrap();
    assert!(
        delete.path_and_query.contains("sendEmail=false"),
        "{}",
        delete.path_and_query
    );

    let new_id = ImmutableId::generate();
    let mut profile = before.profile.clone();
    profile.insert("immutableId".into(), new_id.to_string().into());
    let assigned = o
        .assign(&AssignAppUser {
            id: id.to_string(),
            scope: "USER".into(),
            credentials: AppUserCredentials {
                user_name: before.user_name().map(str::to_owned),
            },
            profile,
        })
        .await
        .unwrap();
    assert!(assigned.request_id.is_some());
    assert_eq!(assigned.value.immutable_id(), Some(new_id.as_str()));
    let stored = sb.okta_app_user(id.as_str()).unwrap();
    assert_eq!(stored.immutable_id(), Some(new_id.as_str()));
    assert!(sb.deprovisions().is_empty());
}

#[tokio::test]
async fn okta_group_granted_user_cannot_be_unassigned() {
    let sb = sandbox().await;
    sb.set_deactivate(false);
    let o = okta(&sb);
    let grady = OktaUserId::parse(&sb.okta_user_id("grady@contoso.com").unwrap()).unwrap();
    let err = o.unassign(&grady).await.unwrap_err();
    assert_eq!(err.code(), Some("E0000046"), "{err}");
    assert!(err.request_id().is_some());
}

#[tokio::test]
async fn okta_provisioning_feature_get_and_put() {
    let sb = sandbox().await;
    let o = okta(&sb);
    let feature = o.provisioning().await.unwrap().value;
    assert_eq!(feature.name, "USER_PROVISIONING");
    let original = feature.capabilities.clone();
    assert_eq!(original, sb.provisioning_capabilities());

    let mut paused = original.clone();
    for path in [
        "/create/lifecycleCreate/status",
        "/update/lifecycleDeactivate/status",
        "/update/profile/status",
        "/update/password/status",
    ] {
        if let Some(v) = paused.pointer_mut(path) {
            *v = "DISABLED".into();
        }
    }
    let r = o.set_provisioning(&paused).await.unwrap();
    assert_eq!(r.value.capabilities, paused);
    assert_eq!(sb.provisioning_capabilities(), paused);

    o.set_provisioning(&original).await.unwrap();
    assert_eq!(sb.provisioning_capabilities(), original);
    assert_eq!(sb.provisioning_writes().last(), Some(&original));
}

#[tokio::test]
async fn okta_mappings_into_the_app() {
    let sb = sandbox().await;
    let o = okta(&sb);
    let maps_immutable_id = |maps: &[o365_fixbot::directory::okta::ProfileMapping]| {
        maps.iter()
            .any(|m| m.properties.contains_key("immutableId"))
    };
    let unmapped = o.mappings_into_app().await.unwrap().value;
    assert!(!maps_immutable_id(&unmapped), "{unmapped:?}");
    sb.set_mapping(MappingMode::Ignore);
    let mapped = o.mappings_into_app().await.unwrap().value;
    assert!(maps_immutable_id(&mapped), "{mapped:?}");
}

#[tokio::test]
async fn okta_pagination_follows_link_headers() {
    let sb = sandbox().await;
    let o = okta(&sb);
    let all = o.list_app_users(None, 200).await.unwrap().value;
    assert!(all.len() > 15, "{} app users", all.len());
    let before = sb.calls().len();
    let paged = o.list_app_users(None, 5).await.unwrap().value;
    let pages = sb.calls().len() - before;
    assert!(
        pages >= all.len() / 5,
        "{pages} pages for {} users",
        all.len()
    );
    let ids: HashSet<&str> = paged.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids.len(), paged.len(), "no user twice");
    assert_eq!(
        ids,
        all.iter().map(|u| u.id.as_str()).collect::<HashSet<_>>()
    );
}

// ---------------------------------------------------------------- Okta: pacing and retries

#[tokio::test]
async fn okta_pacing_waits_instead_of_hitting_429() {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 5,
        okta_rate_limit: 5,
        okta_rate_window: Duration::from_secs(2),
        ..SandboxOptions::default()
    })
    .await;
    let o = okta(&sb);
    for _ in 0..12 {
        assert!(o.user("adele@contoso.com").await.unwrap().value.is_some());
    }
    assert_eq!(sb.okta_throttled(), 0, "no 429 served");
    assert!(o.throttle_waits() > 0);
    assert_eq!(o.retried_429(), 0);
    assert_eq!(o.calls(), 12);
}

#[tokio::test]
async fn okta_pacing_holds_for_concurrent_tasks() {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 5,
        okta_rate_limit: 40,
        okta_rate_window: Duration::from_secs(1),
        ..SandboxOptions::default()
    })
    .await;
    let mut http = fast_http();
    http.call_deadline = Duration::from_secs(30);
    let o = okta_with(&sb, http);
    // A hundred repairs sharing one client, each reading its user and its app user.
    let diego = OktaUserId::parse(&sb.okta_user_id("diego.s@contoso.com").unwrap()).unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let o = o.clone();
            let diego = diego.clone();
            tokio::spawn(async move {
                let user = o.user("megan@contoso.com").await?;
                let app_user = o.app_user(&diego).await?;
                Ok::<_, OktaError>(user.value.is_some() && app_user.value.is_some())
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap());
    }
    assert_eq!(sb.okta_throttled(), 0, "no 429 served");
    assert!(o.throttle_waits() > 0);
}

#[tokio::test]
async fn okta_injected_429_is_waited_out_and_retried() {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 5,
        okta_rate_window: Duration::from_secs(2),
        ..SandboxOptions::default()
    })
    .await;
    let o = okta(&sb);
    sb.inject(fault(
        "okta.get_user",
        1,
        FaultAction::Throttle { retry_after: None },
    ));
    assert!(o.user("adele@contoso.com").await.unwrap().value.is_some());
    assert_eq!(o.retried_429(), 1);
    assert_eq!(calls_of(&sb, "okta.get_user"), 2);
}

#[tokio::test]
async fn okta_retries_unavailable_and_timeouts_but_not_refusals() {
    let sb = sandbox().await;
    let mut http = fast_http();
    http.request_timeout = Duration::from_millis(500);
    let o = okta_with(&sb, http);
    sb.inject(fault("okta.get_feature", 1, error(503, "E0000009")));
    o.provisioning().await.unwrap();
    assert_eq!(calls_of(&sb, "okta.get_feature"), 2);

    sb.inject(fault(
        "okta.get_app_user",
        1,
        FaultAction::Delay(Duration::from_secs(2)),
    ));
    let diego = OktaUserId::parse(&sb.okta_user_id("diego.s@contoso.com").unwrap()).unwrap();
    assert!(o.app_user(&diego).await.unwrap().value.is_some());

    sb.inject(fault("okta.put_feature", 1, error(403, "E0000006")));
    let caps = sb.provisioning_capabilities();
    let err = o.set_provisioning(&caps).await.unwrap_err();
    assert_eq!(err.code(), Some("E0000006"));
    assert_eq!(calls_of(&sb, "okta.put_feature"), 1);
}

#[tokio::test]
async fn okta_assign_is_not_retried_after_a_timeout() {
    let sb = sandbox().await;
    sb.set_deactivate(false);
    let mut http = fast_http();
    http.request_timeout = Duration::from_millis(500);
    let o = okta_with(&sb, http);
    let id = OktaUserId::parse(&sb.okta_user_id("megan@contoso.com").unwrap()).unwrap();
    let before = o.app_user(&id).await.unwrap().value.unwrap();
    o.unassign(&id).await.unwrap();
    sb.inject(fault(
        "okta.assign",
        1,
        FaultAction::Delay(Duration::from_secs(1)),
    ));
    let body = AssignAppUser {
        id: id.to_string(),
        scope: "USER".into(),
        credentials: AppUserCredentials {
            user_name: before.user_name().map(str::to_owned),
        },
        profile: before.profile.clone(),
    };
    let sent = o.calls();
    let err = o.assign(&body).await.unwrap_err();
    assert!(matches!(err, OktaError::Timeout(_)), "{err:?}");
    // A real Okta may have acted on the unanswered POST: it is sent once, never blindly again.
    assert_eq!(o.calls() - sent, 1);
    // (The sandbox drops a request whose client gave up, so here it did not land.)
    tokio::time::sleep(Duration::from_millis(800)).await;
    if sb.okta_app_user(id.as_str()).is_none() {
        o.assign(&body).await.unwrap();
    }

    o.unassign(&id).await.unwrap();
    sb.clear_faults();
    sb.inject(fault("okta.assign", 1, error(503, "E0000009")));
    let before_503 = calls_of(&sb, "okta.assign");
    o.assign(&body).await.expect("503 on assign is retried");
    assert_eq!(calls_of(&sb, "okta.assign") - before_503, 2);
    assert!(sb.okta_app_user(id.as_str()).is_some());
}

#[tokio::test]
async fn client_configs_print_secrets_redacted() {
    let sb = sandbox().await;
    let g = format!("{:?}", sb.graph_config(fast_http()));
    let o = format!("{:?}", sb.okta_config(fast_http()));
    assert!(!g.contains(sb.creds.client_secret.expose()), "{g}");
    assert!(!o.contains(sb.creds.okta_token.expose()), "{o}");
    assert!(g.contains("[redacted]") && o.contains("[redacted]"));
}

#[tokio::test]
async fn a_429_with_an_earlier_reset_is_honoured_not_stalled() {
    // A 60 s window: before the fix, the 429's earlier reset was dropped as "late" and the
    // request (and every other one in its bucket) waited for this window's end.
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 5,
        okta_rate_window: Duration::from_secs(60),
        ..SandboxOptions::default()
    })
    .await;
    let mut http = fast_http();
    http.call_deadline = Duration::from_secs(30);
    let o = okta_with(&sb, http);
    // The pacer learns the bucket's window (reset ~60 s ahead) from an ordinary answer.
    assert!(o.user("adele@contoso.com").await.unwrap().value.is_some());
    // The sandbox's injected 429 says the bucket frees up within a second or two, as a
    // concurrency-limit 429 does.
    sb.inject(fault(
        "okta.get_user",
        1,
        FaultAction::Throttle { retry_after: None },
    ));
    let started = Instant::now();
    let tasks: Vec<_> = [
        "adele@contoso.com",
        "megan@contoso.com",
        "diego.s@contoso.com",
    ]
    .into_iter()
    .map(|login| {
        let o = o.clone();
        tokio::spawn(async move { o.user(login).await.map(|r| r.value.is_some()) })
    })
    .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap());
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(6), "stalled for {elapsed:?}");
    assert_eq!(o.retried_429(), 1);
    assert_eq!(sb.okta_throttled(), 1, "no further 429 after the wait");
}

#[tokio::test]
async fn a_429_for_a_used_up_window_waits_for_its_reset_without_hammering() {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 5,
        okta_rate_limit: 3,
        okta_rate_window: Duration::from_secs(2),
        ..SandboxOptions::default()
    })
    .await;
    // Another integration uses up the bucket (in a window that starts now, so the three calls
    // surely share it); this client has seen no headers yet.
    let other = okta(&sb);
    sb.set_okta_rate_limit(3, Duration::from_secs(2));
    for _ in 0..3 {
        other.user("adele@contoso.com").await.unwrap();
    }
    let o = okta(&sb);
    let started = Instant::now();
    assert!(o.user("megan@contoso.com").await.unwrap().value.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(o.retried_429(), 1);
    assert_eq!(
        sb.okta_throttled(),
        1,
        "one probe after the named reset, not a retry storm"
    );
}
