//! The Okta System Log: the sandbox's `/api/v1/logs` (filters, polling `Link: rel="next"`, its
//! own rate-limit bucket, provisioning failure events) read through the real Okta client.

use crate::harness::{fast_http, okta, okta_with, sandbox, sandbox_with};
use o365_fixbot::directory::okta::{
    AssignAppUser, LogCursor, LogEvent, LogQuery, OktaClient, OktaError,
    PROVISIONING_ERROR_EVENT_TYPES, PUSH, PUSH_PROFILE,
};
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{Sandbox, SandboxOptions};
use serde_json::{json, Value};
use std::time::Duration;

/// Earlier than anything the sandbox persists.
const LONG_AGO: &str = "2000-01-01T00:00:00.000Z";

/// Bounds every polling loop in these tests.
const MAX_POLLS: usize = 50;

fn failure(event_type: &str, target_id: &str) -> Value {
    json!({
        "eventType": event_type,
        "displayMessage": "Push user to Microsoft Office 365 failed",
        "outcome": { "result": "FAILURE", "reason": "test" },
        "target": [
            { "id": target_id, "type": "User", "alternateId": "t@contoso.com", "displayName": "T" },
            { "id": APP_ID, "type": "AppInstance", "alternateId": "Microsoft Office 365", "displayName": "Microsoft Office 365" }
        ]
    })
}

fn failures_query(since: &str, limit: u32) -> LogCursor {
    LogCursor::Start(LogQuery::provisioning_failures(
        APP_ID,
        PROVISIONING_ERROR_EVENT_TYPES,
        since,
        limit,
    ))
}

/// Follows `next` while pages come back full; returns the events and the cursor to poll later.
async fn drain(o: &OktaClient, from: LogCursor, limit: usize) -> (Vec<LogEvent>, String) {
    let mut cursor = from;
    let mut out = Vec::new();
    for _ in 0..MAX_POLLS {
        let page = o.logs_page(&cursor).await.expect("logs page").value;
        let next = page.next.expect("a polling answer always has a next link");
        let full = page.events.len() == limit;
        out.extend(page.events);
        cursor = LogCursor::Next(next.clone());
        if !full {
            return (out, next);
        }
    }
    panic!("more than {MAX_POLLS} pages");
}

fn uuids(events: &[LogEvent]) -> Vec<String> {
    events.iter().map(|e| e.uuid.clone()).collect()
}

async fn raw_logs(sb: &Sandbox, query: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/api/v1/logs", sb.urls.okta))
        .query(query)
        .header(
            "authorization",
            format!("SSWS {}", sb.creds.okta_token.expose()),
        )
        .send()
        .await
        .expect("the sandbox answers")
}

#[tokio::test]
async fn polling_returns_every_matching_event_once_in_order_and_resumes_from_the_cursor() {
    let sb = sandbox().await;
    let o = okta(&sb);
    let mut expected = Vec::new();
    for i in 0..7 {
        let t = [PUSH, PUSH_PROFILE][i % 2];
        expected.push(sb.add_log_event(failure(t, &format!("00u{i}"))));
        // Noise the filter leaves out: a success, another event type, another app.
        let mut ok = failure(t, "00uok");
        ok["outcome"]["result"] = json!("SUCCESS");
        sb.add_log_event(ok);
        sb.add_log_event(failure("user.session.start", "00uother"));
        let mut other_app = failure(t, "00uapp");
        other_app["target"][1]["id"] = json!("0oaother");
        sb.add_log_event(other_app);
    }

    let (events, cursor) = drain(&o, failures_query(LONG_AGO, 3), 3).await;
    assert_eq!(uuids(&events), expected, "every match once, ascending");
    assert!(events.iter().all(LogEvent::is_failure));
    assert_eq!(events[0].user_target().map(|t| t.id.as_str()), Some("00u0"));

    // Nothing new: the poll is empty and still hands back a cursor.
    let page = o
        .logs_page(&LogCursor::Next(cursor.clone()))
        .await
        .unwrap()
        .value;
    assert!(page.events.is_empty());
    let cursor = page.next.expect("next link on an empty poll");

    // Events persisted later appear on the stored cursor, once.
    let later = vec![
        sb.add_log_event(failure(PUSH, "00ulate1")),
        sb.add_log_event(failure(PUSH_PROFILE, "00ulate2")),
    ];
    sb.add_log_event(failure("user.session.start", "00unoise"));
    let (events, cursor) = drain(&o, LogCursor::Next(cursor), 3).await;
    assert_eq!(uuids(&events), later);
    let (again, _) = drain(&o, LogCursor::Next(cursor), 3).await;
    assert!(again.is_empty(), "not repeated: {again:?}");

    // `since` bounds persistence time: nothing persisted after a future instant yet.
    let page = o
        .logs_page(&failures_query("2999-01-01T00:00:00.000Z", 100))
        .await
        .unwrap()
        .value;
    assert!(page.events.is_empty());
    assert!(page.next.is_some(), "polling always links next");
}

#[tokio::test]
async fn bounded_queries_filter_published_and_link_next_only_while_more_match() {
    let sb = sandbox().await;
    let mut old = failure(PUSH, "00uold");
    old["published"] = json!("2024-05-01T12:00:00.000Z");
    let old_uuid = sb.add_log_event(old);
    sb.add_log_event(failure(PUSH, "00unew"));

    let res = raw_logs(
        &sb,
        &[
            ("since", "2024-05-01T00:00:00Z"),
            ("until", "2024-05-02T00:00:00Z"),
            (
                "filter",
                r#"target.id eq "00uold" or target.id eq "00unew""#,
            ),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let links: Vec<String> = res
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        links.iter().all(|l| !l.contains("rel=\"next\"")),
        "{links:?}"
    );
    let body: Vec<Value> = res.json().await.unwrap();
    assert_eq!(body.len(), 1);
    assert_eq!(body[0]["uuid"], json!(old_uuid));
}

#[tokio::test]
async fn unsupported_filters_and_parameters_are_refused_with_okta_errors() {
    let sb = sandbox().await;
    for (name, value) in [
        ("filter", r#"eventType sw "application""#),
        ("filter", r#"displayMessage eq "x""#),
        ("filter", r#"(eventType eq "a""#),
        ("since", "yesterday"),
        ("limit", "5000"),
        ("sortOrder", "DESCENDING"),
        ("after", "not-a-cursor"),
    ] {
        let res = raw_logs(&sb, &[(name, value)]).await;
        assert_eq!(res.status(), 400, "{name}={value}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["errorCode"], json!("E0000001"), "{name}={value}");
    }
    let res = raw_logs(
        &sb,
        &[(
            "filter",
            r#"(eventType eq "a" or eventType eq "b") and outcome.result eq "FAILURE" and target.id eq "x""#,
        )],
    )
    .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_periodic_push_logs_a_failure_for_mismatched_users_only() {
    let sb = sandbox().await;
    let o = okta(&sb);
    let megan = sb.okta_user_id(MEGAN).unwrap();
    let healthy = sb.okta_user_id(&ordinary_upn(1)).unwrap();

    let recorded = sb.record_push_failures();
    assert!(recorded > 0);
    let (events, _) = drain(&o, failures_query(LONG_AGO, 100), 100).await;
    assert_eq!(events.len(), recorded);
    let about = |id: &str| {
        events
            .iter()
            .filter(|e| e.target.iter().any(|t| t.id == id))
            .count()
    };
    assert_eq!(about(&megan), 1, "{events:#?}");
    assert_eq!(about(&healthy), 0);
    let e = events
        .iter()
        .find(|e| e.target.iter().any(|t| t.id == megan))
        .unwrap();
    assert_eq!(e.event_type, PUSH_PROFILE);
    let user = e.user_target().expect("a User target");
    assert_eq!(user.kind, "User");
    assert_eq!(user.alternate_id.as_deref(), Some(MEGAN));
    assert!(e.display_message.is_some());

    // Every periodic push reports the same users again (the watch dedupes, not the log).
    let before = sb.log_events();
    assert_eq!(sb.record_push_failures(), recorded);
    assert_eq!(sb.log_events(), before + recorded);

    // Okta pushes nothing while provisioning is off.
    sb.set_provisioning_enabled(false);
    assert_eq!(sb.record_push_failures(), 0);
}

#[tokio::test]
async fn the_log_bucket_answers_429_with_okta_headers_and_the_client_waits_it_out() {
    let sb = sandbox_with(SandboxOptions {
        ordinary_users: 2,
        okta_rate_window: Duration::from_secs(2),
        ..SandboxOptions::default()
    })
    .await;
    sb.set_okta_logs_rate_limit(2);
    for _ in 0..2 {
        assert_eq!(raw_logs(&sb, &[]).await.status(), 200);
    }
    let res = raw_logs(&sb, &[]).await;
    assert_eq!(res.status(), 429);
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("x-rate-limit-limit").as_deref(), Some("2"));
    assert_eq!(header("x-rate-limit-remaining").as_deref(), Some("0"));
    assert!(header("x-rate-limit-reset").is_some_and(|r| r.parse::<u64>().is_ok()));
    assert!(header("x-okta-request-id").is_some());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errorCode"], json!("E0000047"));

    // The other buckets are untouched by the System Log's.
    let o = okta_with(&sb, fast_http());
    assert!(o.user(MEGAN).await.unwrap().value.is_some());

    // The client waits for the window instead of failing, over several polls.
    let mut cursor = failures_query(LONG_AGO, 10);
    for _ in 0..4 {
        let page = o.logs_page(&cursor).await.expect("waited out").value;
        cursor = LogCursor::Next(page.next.expect("next"));
    }
    assert!(o.retried_429() + o.throttle_waits() > 0);
}

#[tokio::test]
async fn a_push_of_a_mismatched_user_logs_a_failure_and_a_healthy_one_does_not() {
    let sb = sandbox().await;
    let o = okta(&sb);
    let assign = |upn: &str| {
        let id = sb.okta_user_id(upn).unwrap();
        let a = sb.okta_app_user(&id).unwrap();
        AssignAppUser {
            id: a.id,
            scope: "USER".into(),
            credentials: a.credentials.unwrap(),
            profile: a.profile,
        }
    };
    let megan = sb.okta_user_id(MEGAN).unwrap();
    let healthy = sb.okta_user_id(&ordinary_upn(1)).unwrap();

    // Provisioning on: a changed assignment is pushed at once.
    o.assign(&assign(MEGAN)).await.unwrap();
    o.assign(&assign(&ordinary_upn(1))).await.unwrap();
    let (events, cursor) = drain(&o, failures_query(LONG_AGO, 100), 100).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].event_type, PUSH_PROFILE);
    assert_eq!(
        events[0].user_target().map(|t| t.id.clone()),
        Some(megan.clone())
    );
    assert!(events
        .iter()
        .all(|e| e.target.iter().all(|t| t.id != healthy)));
    // Office 365 refused the push: the app user is left in error, the healthy one synchronized.
    let sync = |id: &str| sb.okta_app_user(id).unwrap().sync_state;
    assert_eq!(sync(&megan).as_deref(), Some("ERROR"));
    assert_eq!(sync(&healthy).as_deref(), Some("SYNCHRONIZED"));

    // Paused: nothing is pushed, nothing logged; the resume pushes the pending users.
    let off = json!({
        "create": { "lifecycleCreate": { "status": "DISABLED" } },
        "update": { "profile": { "status": "DISABLED" } }
    });
    let on = json!({
        "create": { "lifecycleCreate": { "status": "ENABLED" } },
        "update": { "profile": { "status": "ENABLED" } }
    });
    o.set_provisioning(&off).await.unwrap();
    o.assign(&assign(MEGAN)).await.unwrap();
    o.assign(&assign(&ordinary_upn(1))).await.unwrap();
    let (events, cursor) = drain(&o, LogCursor::Next(cursor), 100).await;
    assert!(events.is_empty(), "{events:#?}");
    o.set_provisioning(&on).await.unwrap();
    let (events, _) = drain(&o, LogCursor::Next(cursor), 100).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].event_type, PUSH);
    assert_eq!(
        events[0].user_target().and_then(|t| t.alternate_id.clone()),
        Some(MEGAN.to_owned())
    );
    // The refused push left Megan unlinked and in error; the healthy user was linked.
    let megan_app = sb.okta_app_user(&megan).unwrap();
    assert_eq!(megan_app.sync_state.as_deref(), Some("ERROR"));
    let linked = sb.okta_app_user(&healthy).unwrap();
    assert_eq!(linked.sync_state.as_deref(), Some("SYNCHRONIZED"));
    assert!(linked.external_id.is_some());
}

#[tokio::test]
async fn a_new_assignment_office_365_refuses_stays_unlinked_in_error() {
    let sb = sandbox().await;
    let o = okta(&sb);
    let noel = sb
        .okta_user_id(NOEL)
        .expect("noel is in Okta, not assigned");
    assert!(sb.okta_app_user(&noel).is_none());
    // Okta sends a value Entra does not hold: the create is refused and logged.
    o.assign(&AssignAppUser {
        id: noel.clone(),
        scope: "USER".into(),
        credentials: serde_json::from_value(json!({ "userName": NOEL })).unwrap(),
        profile: serde_json::from_value(json!({ "immutableId": MEGAN_OKTA_IMMUTABLE_ID })).unwrap(),
    })
    .await
    .unwrap();
    let a = sb.okta_app_user(&noel).unwrap();
    assert_eq!(a.sync_state.as_deref(), Some("ERROR"));
    assert_eq!(a.status, "STAGED");
    assert!(a.external_id.is_none(), "not linked to the Office 365 user");
    let (events, _) = drain(&o, failures_query(LONG_AGO, 100), 100).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].event_type, PUSH);
}

#[tokio::test]
async fn a_cursor_is_followed_only_on_the_orgs_own_log_endpoint() {
    let sb = sandbox().await;
    let o = okta(&sb);
    sb.reset_calls();
    for foreign in [
        "https://evil.example/api/v1/logs?after=sbx1".to_owned(),
        format!("{}/api/v1/users?after=sbx1", sb.urls.okta),
    ] {
        let e = o.logs_page(&LogCursor::Next(foreign.clone())).await;
        assert!(matches!(e, Err(OktaError::Decode(_))), "{foreign}: {e:?}");
    }
    assert!(sb.calls().is_empty(), "nothing sent");
}
