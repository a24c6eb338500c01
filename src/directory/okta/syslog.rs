//! Okta System Log events (`GET /api/v1/logs`) as the watch reads them, and the polling query.
//!
//! Polling protocol (Okta "System Log query"): the first request gives `since` and no `until`,
//! in ascending order; every answer to such a *polling* query carries `Link: <…>; rel="next"`,
//! even an empty one. Following that link later returns only events persisted after the ones
//! already seen, so the link itself is the cursor to keep: a restart resumes from it without
//! missing or repeating an event. `since` bounds the persistence time for polling queries,
//! which is why an event published late is still seen.

use serde::Deserialize;
use url::Url;

/// Okta's provisioning error event types for OIN apps, from Okta help "Provisioning Integration
/// Error Events" (its event-type table; the per-app table there says which an app emits):
///
/// - `application.provision.user.push`: "Error creating a new user" (assign, or link on
///   resume: what Office 365 refuses when the ImmutableID matches no user and the UPN exists);
/// - `application.provision.user.push_profile`: "Error updating user" (the profile push);
/// - `application.provision.user.deactivate`: "Error deactivating user";
/// - `application.provision.user.verify_exists`: "Error determining if a user exists";
/// - `application.integration.general_failure`: "General error not covered by other cases".
///
/// The watch's default set is the push, profile push and general failure types; the others
/// concern users the bot cannot repair by ImmutableID and stay configurable.
pub const PUSH: &str = "application.provision.user.push";
pub const PUSH_PROFILE: &str = "application.provision.user.push_profile";
pub const DEACTIVATE: &str = "application.provision.user.deactivate";
pub const VERIFY_EXISTS: &str = "application.provision.user.verify_exists";
pub const GENERAL_FAILURE: &str = "application.integration.general_failure";
pub const PROVISIONING_ERROR_EVENT_TYPES: &[&str] = &[PUSH, PUSH_PROFILE, GENERAL_FAILURE];

/// Okta's maximum page size for `/api/v1/logs`.
pub const MAX_LOG_LIMIT: u32 = 1_000;

/// One System Log event (the `LogEvent` schema), with the fields the watch needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    pub uuid: String,
    /// ISO 8601, e.g. `2024-05-01T12:00:00.000Z`.
    pub published: String,
    pub event_type: String,
    #[serde(default)]
    pub display_message: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub outcome: Option<LogOutcome>,
    #[serde(default)]
    pub actor: Option<LogActor>,
    #[serde(default)]
    pub target: Vec<LogActor>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOutcome {
    /// `SUCCESS`, `FAILURE`, `SKIPPED`, `ALLOW`, `DENY`, `CHALLENGE`, `UNKNOWN`.
    pub result: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// An actor or a target: `id`, `type` (`User`, `AppUser`, `AppInstance`, …), `alternateId`
/// (a user's login), `displayName`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogActor {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub alternate_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

impl LogEvent {
    pub fn is_failure(&self) -> bool {
        self.outcome.as_ref().is_some_and(|o| o.result == "FAILURE")
    }

    /// The Okta user the event is about: the `User` target, else the `AppUser` one (whose
    /// `alternateId` is the app user name, the UPN for Office 365).
    pub fn user_target(&self) -> Option<&LogActor> {
        let of = |kind: &str| self.target.iter().find(|t| t.kind == kind);
        of("User").or_else(|| of("AppUser"))
    }
}

/// The first request of a polling query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// ISO 8601 lower bound of persistence time.
    pub since: String,
    pub filter: Option<String>,
    pub limit: u32,
}

impl LogQuery {
    /// Failures of `event_types` concerning app instance `app_id`:
    /// `(eventType eq "a" or …) and outcome.result eq "FAILURE" and target.id eq "app"`.
    pub fn provisioning_failures(
        app_id: &str,
        event_types: &[&str],
        since: &str,
        limit: u32,
    ) -> Self {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let types = event_types
            .iter()
            .map(|t| format!("eventType eq {}", quote(t)))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut filter = format!(
            "outcome.result eq \"FAILURE\" and target.id eq {}",
            quote(app_id)
        );
        if !types.is_empty() {
            filter = format!("({types}) and {filter}");
        }
        Self {
            since: since.to_owned(),
            filter: Some(filter),
            limit: limit.clamp(1, MAX_LOG_LIMIT),
        }
    }

    /// The request URL under `logs_url` (`{org}/api/v1/logs`): ascending, no `until`.
    pub(crate) fn url(&self, logs_url: &Url) -> Url {
        let mut url = logs_url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("since", &self.since);
            if let Some(f) = &self.filter {
                q.append_pair("filter", f);
            }
            q.append_pair("limit", &self.limit.to_string());
            q.append_pair("sortOrder", "ASCENDING");
        }
        url
    }
}

/// Where a poll starts: a new query, or the `next` link an earlier poll returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogCursor {
    Start(LogQuery),
    Next(String),
}

/// One page of a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub events: Vec<LogEvent>,
    /// The `rel="next"` link: poll it next (now when the page was full, later otherwise).
    /// `None` only if Okta sent none, which a polling query should never see.
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_filter_quotes_and_groups() {
        let q = LogQuery::provisioning_failures(
            "0oa\"1",
            &[PUSH, PUSH_PROFILE],
            "2024-05-01T00:00:00Z",
            5000,
        );
        assert_eq!(
            q.filter.as_deref(),
            Some(
                r#"(eventType eq "application.provision.user.push" or eventType eq "application.provision.user.push_profile") and outcome.result eq "FAILURE" and target.id eq "0oa\"1""#
            )
        );
        assert_eq!(q.limit, MAX_LOG_LIMIT);
        let url = q.url(&Url::parse("https://x.okta.com/api/v1/logs").unwrap());
        assert!(url.as_str().contains("sortOrder=ASCENDING"), "{url}");
        assert!(!url.as_str().contains("until"), "{url}");
    }
}
