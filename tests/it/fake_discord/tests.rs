//! The fake's own unkindness, checked over HTTP: nonces, replies, thread states and the
//! interaction original.

use super::*;

struct Client {
    fake: FakeDiscord,
    http: reqwest::Client,
}

impl Client {
    async fn start() -> Client {
        Client {
            fake: FakeDiscord::start().await,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/api/v10{path}", self.fake.base);
        let mut req = self
            .http
            .request(method, url)
            .header("authorization", format!("Bot {TOKEN}"));
        if !body.is_null() {
            req = req.json(&body);
        }
        let res = req.send().await.expect("the fake answers");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, channel: u64, body: Value) -> (u16, Value) {
        let path = format!("/channels/{channel}/messages");
        self.call(Method::POST, &path, body).await
    }

    /// A plan message in [`CHANNEL`] with its thread; returns the id of both.
    async fn plan_with_thread(&self) -> u64 {
        let (_, m) = self.post(CHANNEL, msg("plan", "n-plan")).await;
        let id: u64 = m["id"].as_str().unwrap().parse().unwrap();
        let path = format!("/channels/{CHANNEL}/messages/{id}/threads");
        let (status, _) = self.call(Method::POST, &path, json!({"name": "t"})).await;
        assert_eq!(status, 200);
        id
    }
}

fn msg(content: &str, nonce: &str) -> Value {
    json!({"content": content, "nonce": nonce, "enforce_nonce": true,
        "allowed_mentions": {"parse": []}})
}

#[tokio::test]
async fn an_enforced_nonce_returns_the_first_message() {
    let c = Client::start().await;
    let (s1, first) = c.post(CHANNEL, msg("hello", "n1")).await;
    let (s2, again) = c.post(CHANNEL, msg("hello", "n1")).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, again);
    assert_eq!(first["nonce"], "n1");
    let (_, other) = c.post(OTHER_CHANNEL, msg("hello", "n1")).await;
    assert_ne!(other["id"], first["id"]);
    c.fake.world(|w| {
        assert_eq!(w.nonce_hits, 1);
        assert_eq!(w.order.len(), 2);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    });
}

#[tokio::test]
async fn a_long_nonce_is_invalid_and_a_missing_one_is_a_violation() {
    let c = Client::start().await;
    let (status, body) = c.post(CHANNEL, msg("x", &"n".repeat(26))).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(50035)));
    let plain = json!({"content": "no nonce", "allowed_mentions": {"parse": []}});
    assert_eq!(c.post(CHANNEL, plain).await.0, 200);
    let v = c.fake.violations();
    assert!(
        v.iter().any(|v| v.contains("nonce of 26 characters")),
        "{v:?}"
    );
    assert!(v
        .iter()
        .any(|v| v.contains("without nonce + enforce_nonce: no nonce")));
}

#[tokio::test]
async fn a_reply_needs_its_message_unless_told_otherwise() {
    let c = Client::start().await;
    let (_, first) = c.post(CHANNEL, msg("first", "a")).await;
    let mut reply = msg("reply", "b");
    reply["message_reference"] = json!({"message_id": first["id"]});
    let (status, answer) = c.post(CHANNEL, reply).await;
    assert_eq!((status, answer["type"].as_u64()), (200, Some(19)));
    let mut lost = msg("lost", "c");
    lost["message_reference"] = json!({"message_id": "123"});
    assert_eq!(c.post(CHANNEL, lost.clone()).await.1["code"], 50035);
    lost["message_reference"]["fail_if_not_exists"] = json!(false);
    assert_eq!(c.post(CHANNEL, lost).await.0, 200);
    let first_id: u64 = first["id"].as_str().unwrap().parse().unwrap();
    c.fake.world(|w| {
        let replies: Vec<Option<u64>> = w.messages.values().map(|m| m.reply_to).collect();
        assert_eq!(replies, vec![None, Some(first_id), None]);
    });
}

#[tokio::test]
async fn archived_locked_and_deleted_threads_refuse_as_discord_does() {
    let c = Client::start().await;
    let t = c.plan_with_thread().await;
    assert_eq!(c.post(t, msg("in thread", "t1")).await.0, 200);
    c.fake.archive_thread(t);
    assert_eq!(c.post(t, msg("late", "t2")).await.1["code"], 50083);
    let open = json!({"archived": false});
    let (status, thread) = c
        .call(Method::PATCH, &format!("/channels/{t}"), open.clone())
        .await;
    assert_eq!(
        (status, thread["thread_metadata"]["archived"].as_bool()),
        (200, Some(false))
    );
    assert_eq!(c.post(t, msg("late", "t2")).await.0, 200);
    c.fake.lock_thread(t);
    let (status, _) = c
        .call(Method::PATCH, &format!("/channels/{t}"), open.clone())
        .await;
    assert_eq!(status, 403);
    c.fake.delete_thread(t);
    let (status, body) = c
        .call(Method::GET, &format!("/channels/{t}"), Value::Null)
        .await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(10003)));
    assert_eq!(
        c.call(Method::PATCH, &format!("/channels/{t}"), open)
            .await
            .0,
        404
    );
    assert!(c.fake.violations().is_empty(), "{:?}", c.fake.violations());
}

#[tokio::test]
async fn thread_creation_can_be_refused_and_a_thread_reads_as_a_channel() {
    let c = Client::start().await;
    let t = c.plan_with_thread().await;
    let (_, body) = c
        .call(Method::GET, &format!("/channels/{t}"), Value::Null)
        .await;
    assert_eq!(
        (body["type"].as_u64(), body["parent_id"].as_str()),
        (Some(11), Some("800000000000000010"))
    );
    c.fake.world_mut(|w| w.refuse_threads = true);
    let (_, m) = c.post(CHANNEL, msg("second", "n2")).await;
    let path = format!(
        "/channels/{CHANNEL}/messages/{}/threads",
        m["id"].as_str().unwrap()
    );
    let (status, body) = c.call(Method::POST, &path, json!({"name": "t"})).await;
    assert_eq!((status, body["code"].as_u64()), (403, Some(50013)));
    assert_eq!(c.fake.requests_touching(t), 2);
}

#[tokio::test]
async fn the_sixth_create_gets_a_429_with_discords_headers() {
    let c = Client::start().await;
    for i in 0..5 {
        assert_eq!(c.post(CHANNEL, msg("m", &format!("r{i}"))).await.0, 200);
    }
    let url = format!("{}/api/v10/channels/{CHANNEL}/messages", c.fake.base);
    let res = c
        .http
        .post(url)
        .header("authorization", format!("Bot {TOKEN}"))
        .json(&msg("m", "r5"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let h = res.headers().clone();
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["x-ratelimit-scope"], "user");
    assert!(h.contains_key("x-ratelimit-bucket") && h.contains_key("x-ratelimit-reset"));
    let body: Value = res.json().await.unwrap();
    assert!(body["retry_after"].as_f64().unwrap() > 4.0);
    assert_eq!((c.fake.rate_limited_count(), c.fake.rest_count()), (1, 6));
    c.fake.world(|w| assert_eq!(w.order.len(), 5));
}

#[tokio::test]
async fn the_original_can_be_edited_after_an_immediate_reply() {
    let c = Client::start().await;
    let id = 42;
    let token = "itoken-42".to_owned();
    c.fake.world_mut(|w| {
        let i = Interaction {
            id,
            token: token.clone(),
            ..Interaction::default()
        };
        w.interactions.insert(id, i);
    });
    let reply = json!({"type": 4, "data": {"content": "hi", "allowed_mentions": {"parse": []}}});
    let callback = format!("/interactions/{id}/{token}/callback");
    assert_eq!(c.call(Method::POST, &callback, reply).await.0, 204);
    let edit = json!({"content": "edited", "allowed_mentions": {"parse": []}});
    let original = format!("/webhooks/{APP_ID}/{token}/messages/@original");
    assert_eq!(c.call(Method::PATCH, &original, edit).await.0, 200);
    assert_eq!(c.fake.interaction_requests(id), 2);
    c.fake
        .world(|w| assert_eq!(w.interactions[&id].texts, ["hi", "edited"]));
}

/// A multipart create as `parts` (name, filename, body), raw.
async fn post_multipart(c: &Client, parts: &[(&str, Option<&str>, &str)]) -> u16 {
    let boundary = "b0undary";
    let mut body = String::new();
    for (name, filename, content) in parts {
        let file = filename
            .map(|f| format!("; filename=\"{f}\""))
            .unwrap_or_default();
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n{content}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let res = c
        .http
        .post(format!(
            "{}/api/v10/channels/{CHANNEL}/messages",
            c.fake.base
        ))
        .header("authorization", format!("Bot {TOKEN}"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("the fake answers");
    res.status().as_u16()
}

#[tokio::test]
async fn a_file_needs_payload_json_and_a_matching_attachments_entry() {
    let c = Client::start().await;
    let mut payload = msg("plan", "n-file");
    payload["attachments"] = json!([{"id": "0", "filename": "plan.csv"}]);
    let p = payload.to_string();
    let ok = post_multipart(
        &c,
        &[
            ("payload_json", None, &p),
            ("files[0]", Some("plan.csv"), "upn\r\na@b.c"),
        ],
    )
    .await;
    assert_eq!(ok, 200);
    assert!(c.fake.violations().is_empty(), "{:?}", c.fake.violations());
    let files = c
        .fake
        .world(|w| w.files.values().cloned().collect::<Vec<_>>());
    assert_eq!(
        files,
        vec![vec![("plan.csv".to_owned(), b"upn\r\na@b.c".to_vec())]]
    );
    // No payload_json; a file not named in attachments; a filename that differs.
    let bad: [&[(&str, Option<&str>, &str)]; 3] = [
        &[("files[0]", Some("plan.csv"), "x")],
        &[
            ("payload_json", None, &msg("x", "n2").to_string()),
            ("files[0]", Some("plan.csv"), "x"),
        ],
        &[
            ("payload_json", None, &p),
            ("files[0]", Some("other.csv"), "x"),
        ],
    ];
    for (i, parts) in bad.iter().enumerate() {
        assert_eq!(post_multipart(&c, parts).await, 400, "case {i}");
    }
    assert_eq!(c.fake.violations().len(), 3, "{:?}", c.fake.violations());
}
