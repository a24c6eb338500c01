//! Okta's System Log (`GET /api/v1/logs`): events in persistence order, `since`/`until`/
//! `filter`/`q`/`limit`/`after`, and the polling protocol's `Link: rel="next"`.
//!
//! A query without `until` is a *polling* query: its `since` bounds the persistence time and
//! its answer always carries a `next` link, even when empty, whose `after` cursor continues
//! right after the last event scanned; new events appear on that link later. A query with
//! `until` is *bounded*: `since`/`until` bound `published` and `next` appears only while more
//! events match. The sandbox serves ascending order only (polling requires it in Okta).

use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

use super::clock::{epoch_ms, okta_time, parse_iso_ms, random_alnum};
use super::okta::{bad_limit, validation};
use super::reply::{Ctx, Reply};
use super::state::{prop_str, State};

/// Okta's default page size for `/api/v1/logs`, and its maximum.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;
/// Okta's default `since` is seven days before `until` (or now).
const DEFAULT_LOOKBACK: Duration = Duration::from_secs(7 * 24 * 3600);

/// The event type Okta logs when it fails to push a profile update to the app ("Error updating
/// user" in Okta's "Provisioning integration error events" table); the periodic push of a
/// mismatched user records this one.
pub const PUSH_PROFILE: &str = "application.provision.user.push_profile";
/// "Error creating a new user": the push of a newly assigned or re-linked app user.
pub const PUSH: &str = "application.provision.user.push";

struct LogRec {
    seq: u64,
    persisted_ms: i64,
    published_ms: i64,
    event: Value,
}

/// The org's System Log.
#[derive(Default)]
pub(crate) struct SystemLog {
    events: Vec<LogRec>,
    next_seq: u64,
}

impl SystemLog {
    /// Persists `event` now, filling `uuid` and `published` when missing (a test's event may
    /// bring its own `published`, e.g. one that reached the log late). Returns its `uuid`.
    pub(crate) fn record(&mut self, now: SystemTime, mut event: Value) -> String {
        if !event.is_object() {
            event = json!({});
        }
        let persisted_ms = epoch_ms(now);
        if event.get("uuid").and_then(Value::as_str).is_none() {
            event["uuid"] = json!(uuid::Uuid::new_v4().to_string());
        }
        let published_ms = match event.get("published").and_then(Value::as_str) {
            Some(p) => parse_iso_ms(p).unwrap_or(persisted_ms),
            None => {
                event["published"] = json!(okta_time(now));
                persisted_ms
            }
        };
        for (k, v) in [
            ("version", json!("0")),
            ("severity", json!("INFO")),
            ("legacyEventType", Value::Null),
            ("target", json!([])),
        ] {
            if event.get(k).is_none() {
                event[k] = v;
            }
        }
        self.next_seq += 1;
        let uuid = event["uuid"].as_str().unwrap_or_default().to_owned();
        self.events.push(LogRec {
            seq: self.next_seq,
            persisted_ms,
            published_ms,
            event,
        });
        uuid
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

/// The cursor after event `seq`: opaque to clients (they follow the link, never build it).
fn cursor(seq: u64) -> String {
    format!("sbx{seq}")
}

fn parse_cursor(s: &str) -> Option<u64> {
    s.strip_prefix("sbx")?.parse().ok()
}

/// A provisioning failure for the Office 365 app user of Okta user `user_idx`: what Okta logs
/// when it cannot push that user to Office 365 because the ImmutableID it sends does not match
/// the one Entra holds. `target[]` is the app user and the Okta user, as Okta shapes it.
pub(crate) fn push_failure(st: &State, event_type: &str, app_user_idx: usize) -> Value {
    let a = &st.app_users[app_user_idx];
    let okta_user = st.okta_users.iter().find(|u| u.id == a.user_id);
    let login = okta_user
        .and_then(|u| prop_str(&u.profile, "login"))
        .unwrap_or(&a.user_name)
        .to_owned();
    let display = okta_user
        .map(|u| {
            format!(
                "{} {}",
                prop_str(&u.profile, "firstName").unwrap_or_default(),
                prop_str(&u.profile, "lastName").unwrap_or_default()
            )
            .trim()
            .to_owned()
        })
        .unwrap_or_else(|| login.clone());
    let okta_value = prop_str(&a.profile, "immutableId").unwrap_or_default();
    let entra_value = st
        .entra_find_current(&a.user_name)
        .and_then(|j| prop_str(&st.entra[j].current, "onPremisesImmutableId"))
        .unwrap_or("(none)");
    let action = if event_type == PUSH {
        "create or link"
    } else {
        "push profile for"
    };
    json!({
        "eventType": event_type,
        "displayMessage": "Push user to Microsoft Office 365 failed",
        "severity": "ERROR",
        "actor": {
            "id": st.app_id,
            "type": "PublicClientApp",
            "alternateId": "Microsoft Office 365",
            "displayName": "Microsoft Office 365"
        },
        "outcome": {
            "result": "FAILURE",
            "reason": format!(
                "Could not {action} Office 365 user {}: ImmutableID mismatch (Okta sends {okta_value}, Entra has {entra_value})",
                a.user_name
            )
        },
        "target": [
            {
                "id": a.user_id,
                "type": "AppUser",
                "alternateId": a.user_name,
                "displayName": display
            },
            {
                "id": a.user_id,
                "type": "User",
                "alternateId": login,
                "displayName": display
            },
            {
                "id": st.app_id,
                "type": "AppInstance",
                "alternateId": "Microsoft Office 365",
                "displayName": "Microsoft Office 365"
            }
        ],
        "transaction": { "type": "JOB", "id": format!("sbx{}", random_alnum(17)), "detail": {} },
        "debugContext": { "debugData": {} },
        "client": null,
        "authenticationContext": null
    })
}

/// `GET /api/v1/logs`.
pub(crate) fn list(st: &State, ctx: &Ctx) -> Reply {
    let time = |name: &str| -> Result<Option<i64>, Reply> {
        match ctx.param(name) {
            None | Some("") => Ok(None),
            Some(v) => parse_iso_ms(v).map(Some).ok_or_else(|| {
                validation(name, &format!("{name}: not a valid ISO 8601 date-time"))
            }),
        }
    };
    let (since, until) = match (time("since"), time("until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let polling = until.is_none();
    let until_ms = until.unwrap_or_else(|| epoch_ms(ctx.wall));
    let since_ms = since.unwrap_or(until_ms - DEFAULT_LOOKBACK.as_millis() as i64);
    if ctx
        .param("sortOrder")
        .is_some_and(|o| !o.eq_ignore_ascii_case("ASCENDING"))
    {
        return validation(
            "sortOrder",
            "sortOrder: the sandbox serves ASCENDING only (polling requires it)",
        );
    }
    let limit = match ctx.param("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.trim().parse::<i64>() {
            Ok(n) if (0..=MAX_LIMIT as i64).contains(&n) => n as usize,
            _ => return bad_limit(),
        },
    };
    let filter = match ctx.param("filter").filter(|f| !f.trim().is_empty()) {
        None => None,
        Some(f) => match parse_filter(f) {
            Ok(e) => Some(e),
            Err(cause) => return validation("filter", &cause),
        },
    };
    let keywords: Vec<String> = ctx
        .param("q")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let after = match ctx.param("after") {
        None | Some("") => 0,
        Some(a) => match parse_cursor(a) {
            Some(seq) => seq,
            None => return validation("after", "after: not a cursor this org issued"),
        },
    };

    let matches = |r: &LogRec| {
        let in_time = if polling {
            r.persisted_ms >= since_ms
        } else {
            r.published_ms >= since_ms && r.published_ms < until_ms
        };
        in_time
            && filter.as_ref().is_none_or(|f| f.eval(&r.event))
            && (keywords.is_empty() || {
                let text = r.event.to_string().to_lowercase();
                keywords.iter().all(|k| text.contains(k.as_str()))
            })
    };
    let mut page = Vec::new();
    let mut more = false;
    for r in self_events(st).iter().filter(|r| r.seq > after) {
        if !matches(r) {
            continue;
        }
        if page.len() == limit {
            more = true;
            break;
        }
        page.push(r);
    }
    let last_returned = page.last().map(|r| r.seq);
    // A full page continues after its last event; a short one has scanned the whole log, so
    // polling continues after the newest event persisted so far, matching or not.
    let next_after = if more || (limit > 0 && page.len() == limit) {
        last_returned.unwrap_or(after)
    } else {
        self_events(st).last().map_or(after, |r| r.seq.max(after))
    };
    let base = format!("{}{}", st.okta_base, ctx.rel_path);
    let self_link = match &ctx.raw_query {
        Some(q) if !q.is_empty() => format!("{base}?{q}"),
        _ => base.clone(),
    };
    let body = Value::Array(page.iter().map(|r| r.event.clone()).collect());
    let mut reply =
        Reply::json(200, body).with_header("link", format!("<{self_link}>; rel=\"self\""));
    if polling || more {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in ctx.query.iter().filter(|(k, _)| k != "after") {
            q.append_pair(k, v);
        }
        q.append_pair("after", &cursor(next_after));
        reply = reply.with_header("link", format!("<{base}?{}>; rel=\"next\"", q.finish()));
    }
    reply
}

fn self_events(st: &State) -> &[LogRec] {
    &st.syslog.events
}

/// The part of Okta's SCIM filter language the sandbox understands: `attr eq "value"` joined by
/// `and` / `or` (`and` binds tighter), with parentheses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Eq(String, String),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

/// Attributes a filter may name; `target.*` matches when any target has the value.
const ATTRIBUTES: &[&str] = &[
    "uuid",
    "eventType",
    "severity",
    "outcome.result",
    "outcome.reason",
    "actor.id",
    "actor.alternateId",
    "target.id",
    "target.type",
    "target.alternateId",
];

impl Filter {
    fn eval(&self, event: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.eval(event) && b.eval(event),
            Filter::Or(a, b) => a.eval(event) || b.eval(event),
            Filter::Eq(attr, value) => match attr.split_once('.') {
                Some(("target", field)) => event
                    .get("target")
                    .and_then(Value::as_array)
                    .is_some_and(|ts| ts.iter().any(|t| t.get(field) == Some(&json!(value)))),
                Some((obj, field)) => {
                    event.get(obj).and_then(|o| o.get(field)) == Some(&json!(value))
                }
                None => event.get(attr.as_str()) == Some(&json!(value)),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '"' => {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err("filter: unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e) => v.push(e),
                            None => return Err("filter: unterminated string".into()),
                        },
                        Some(x) => v.push(x),
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let mut w = String::new();
                while let Some(&x) = chars.peek() {
                    if x.is_whitespace() || matches!(x, '(' | ')' | '"') {
                        break;
                    }
                    w.push(x);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

pub(crate) fn parse_filter(s: &str) -> Result<Filter, String> {
    let toks = tokenize(s)?;
    let mut pos = 0;
    let f = parse_or(&toks, &mut pos, 0)?;
    if pos != toks.len() {
        return Err(format!("filter: unexpected {:?}", toks[pos]));
    }
    Ok(f)
}

/// Nesting deeper than this is refused rather than recursed into.
const MAX_DEPTH: usize = 16;

fn is_word(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

fn parse_or(t: &[Tok], pos: &mut usize, depth: usize) -> Result<Filter, String> {
    let mut left = parse_and(t, pos, depth)?;
    while is_word(t.get(*pos), "or") {
        *pos += 1;
        left = Filter::Or(Box::new(left), Box::new(parse_and(t, pos, depth)?));
    }
    Ok(left)
}

fn parse_and(t: &[Tok], pos: &mut usize, depth: usize) -> Result<Filter, String> {
    let mut left = parse_term(t, pos, depth)?;
    while is_word(t.get(*pos), "and") {
        *pos += 1;
        left = Filter::And(Box::new(left), Box::new(parse_term(t, pos, depth)?));
    }
    Ok(left)
}

fn parse_term(t: &[Tok], pos: &mut usize, depth: usize) -> Result<Filter, String> {
    if depth > MAX_DEPTH {
        return Err("filter: nested too deeply".into());
    }
    match t.get(*pos) {
        Some(Tok::Open) => {
            *pos += 1;
            let f = parse_or(t, pos, depth + 1)?;
            if t.get(*pos) != Some(&Tok::Close) {
                return Err("filter: missing )".into());
            }
            *pos += 1;
            Ok(f)
        }
        Some(Tok::Word(attr)) => {
            if !ATTRIBUTES.contains(&attr.as_str()) {
                return Err(format!("filter: unsupported attribute {attr}"));
            }
            match (t.get(*pos + 1), t.get(*pos + 2)) {
                (Some(Tok::Word(op)), Some(Tok::Str(v))) if op.eq_ignore_ascii_case("eq") => {
                    *pos += 3;
                    Ok(Filter::Eq(attr.clone(), v.clone()))
                }
                (Some(Tok::Word(op)), _) => Err(format!("filter: unsupported operator {op}")),
                _ => Err(format!(
                    "filter: {attr} needs an operator and a quoted value"
                )),
            }
        }
        other => Err(format!("filter: unexpected {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_with_and_binding_tighter() {
        let f = parse_filter(
            r#"(eventType eq "a" or eventType eq "b") and outcome.result eq "FAILURE""#,
        )
        .unwrap();
        let ev = |t: &str, r: &str| json!({ "eventType": t, "outcome": { "result": r } });
        assert!(f.eval(&ev("a", "FAILURE")));
        assert!(f.eval(&ev("b", "FAILURE")));
        assert!(!f.eval(&ev("b", "SUCCESS")));
        let g =
            parse_filter(r#"eventType eq "a" or eventType eq "b" and severity eq "x""#).unwrap();
        assert!(g.eval(&ev("a", "SUCCESS")), "a or (b and x)");
        let t = parse_filter(r#"target.id eq "00u1""#).unwrap();
        assert!(t.eval(&json!({ "target": [{ "id": "0oa" }, { "id": "00u1" }] })));
        for bad in [
            r#"eventType sw "a""#,
            r#"displayMessage eq "x""#,
            r#"eventType eq "a"#,
            r#"(eventType eq "a""#,
            "eventType eq a",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
