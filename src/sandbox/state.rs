//! The tenant's state: Entra users (with the version readers still see), Okta users, groups, the
//! Office 365 app, and everything the sandbox records for inspection.

use serde_json::{Map, Value};
use std::time::{Duration, Instant, SystemTime};

use super::faults::Faults;
use super::graph_limit::WriteQuota;
use super::ratelimit::RateLimiter;
use super::syslog::{self, SystemLog};
use super::token::TokenStore;
use super::{CallRecord, MappingMode};

pub(crate) type Props = Map<String, Value>;

/// One Entra user: its stored properties, and the version readers see until replication catches up.
pub(crate) struct EntraEntry {
    pub current: Props,
    pub prev: Option<(Props, Instant)>,
}

pub(crate) struct Domain {
    pub name: String,
    pub federated: bool,
    pub is_initial: bool,
    pub is_default: bool,
}

pub(crate) struct DirectoryRole {
    pub id: String,
    pub display_name: String,
    pub template_id: String,
    /// Object ids of users and role-assignable groups the role is assigned to.
    pub members: Vec<String>,
}

/// An Entra security group; a role-assignable one (`isAssignableToRole`) can hold directory
/// roles for its members, and has users only as members (no nesting).
pub(crate) struct EntraGroup {
    pub id: String,
    pub display_name: String,
    pub role_assignable: bool,
    pub members: Vec<String>,
}

pub(crate) struct OktaUserRec {
    pub id: String,
    pub status: String,
    pub created: String,
    pub last_updated: String,
    pub profile: Props,
    /// For a user sourced from AD: the AD objectGUID (base64), what Okta's expression
    /// `findDirectoryUser().externalId` gives. Not part of the Okta user's profile.
    pub directory_external_id: Option<String>,
}

pub(crate) struct OktaGroupRec {
    pub id: String,
    /// `OKTA_GROUP` or `BUILT_IN`.
    pub kind: &'static str,
    pub name: String,
    pub description: String,
    pub members: Vec<String>,
}

pub(crate) struct AppGroupRec {
    pub group_id: String,
    pub priority: u32,
}

#[derive(Clone)]
pub(crate) struct AppUserRec {
    pub user_id: String,
    pub scope: String,
    pub status: String,
    /// `SYNCHRONIZED`, `SYNCING`, `OUT_OF_SYNC` (assigned while provisioning was paused), …
    pub sync_state: String,
    pub external_id: Option<String>,
    pub created: String,
    pub last_updated: String,
    pub status_changed: String,
    pub user_name: String,
    pub profile: Props,
}

pub(crate) struct State {
    pub latency: Duration,
    pub graph_read_lag: Duration,
    pub token_lifetime: Duration,
    pub mapping: MappingMode,

    pub tenant_name: String,
    pub tenant_guid: String,
    pub client_id: String,
    pub client_secret: String,
    pub okta_token: String,
    pub app_id: String,
    /// `http://127.0.0.1:PORT/graph/v1.0`, no trailing slash.
    pub graph_base: String,
    /// `http://127.0.0.1:PORT/okta`, no trailing slash.
    pub okta_base: String,

    pub org_name: String,
    pub domains: Vec<Domain>,
    pub entra: Vec<EntraEntry>,
    pub roles: Vec<DirectoryRole>,
    pub groups: Vec<EntraGroup>,

    pub okta_users: Vec<OktaUserRec>,
    pub okta_groups: Vec<OktaGroupRec>,
    pub app_groups: Vec<AppGroupRec>,
    pub app_users: Vec<AppUserRec>,
    pub capabilities: Value,
    /// The app user schema's `definitions.custom.properties`.
    pub app_schema_custom: Value,
    /// App users stay `SYNCING` when provisioning resumes instead of being linked at once.
    pub hold_sync: bool,
    pub provisioning_writes: Vec<Value>,
    pub deprovisions: Vec<String>,

    pub tokens: TokenStore,
    /// Graph application permissions granted to the bot's app (carried by new tokens).
    pub app_roles: Vec<String>,
    /// Whether the Okta API token's admin may manage the Office 365 app.
    pub okta_app_admin: bool,
    /// Whether provisioning is enabled for the app (else the features API answers 404).
    pub provisioning_enabled: bool,
    pub faults: Faults,
    pub rate: RateLimiter,
    pub okta_throttled: u64,
    /// Graph's per-app write quota, and the 429s it has served.
    pub graph_writes: WriteQuota,
    pub graph_throttled: u64,
    pub calls: Vec<CallRecord>,
    /// Okta's System Log.
    pub syslog: SystemLog,
}

pub(crate) fn prop_str<'a>(p: &'a Props, name: &str) -> Option<&'a str> {
    p.get(name).and_then(Value::as_str)
}

/// The domain part of a UPN.
pub(crate) fn upn_domain(upn: &str) -> &str {
    upn.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

impl State {
    /// The version of Entra user `i` that reads see at `now`.
    pub(crate) fn entra_visible(&self, i: usize, now: Instant) -> &Props {
        let e = &self.entra[i];
        match &e.prev {
            Some((old, at)) if now.saturating_duration_since(*at) < self.graph_read_lag => old,
            _ => &e.current,
        }
    }

    fn matches_key(p: &Props, key: &str) -> bool {
        prop_str(p, "id").is_some_and(|id| id.eq_ignore_ascii_case(key))
            || prop_str(p, "userPrincipalName").is_some_and(|u| u.eq_ignore_ascii_case(key))
    }

    /// By object id or UPN, as reads see it.
    pub(crate) fn entra_find_visible(&self, key: &str, now: Instant) -> Option<usize> {
        (0..self.entra.len()).find(|&i| Self::matches_key(self.entra_visible(i, now), key))
    }

    /// By object id or UPN, as stored.
    pub(crate) fn entra_find_current(&self, key: &str) -> Option<usize> {
        self.entra
            .iter()
            .position(|e| Self::matches_key(&e.current, key))
    }

    /// Stores a new version; readers keep seeing what they saw at this instant for the lag.
    pub(crate) fn entra_write(&mut self, i: usize, new: Props, now: Instant) {
        let seen = self.entra_visible(i, now).clone();
        let e = &mut self.entra[i];
        e.prev = Some((seen, now));
        e.current = new;
    }

    pub(crate) fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
    }

    pub(crate) fn is_federated(&self, domain: &str) -> bool {
        self.domain(domain).is_some_and(|d| d.federated)
    }

    /// Roles assigned to the user itself (`memberOf`).
    pub(crate) fn roles_of(&self, entra_id: &str) -> Vec<&DirectoryRole> {
        self.roles
            .iter()
            .filter(|r| r.members.iter().any(|m| m.eq_ignore_ascii_case(entra_id)))
            .collect()
    }

    /// Roles the user holds directly or through a role-assignable group it is a member of
    /// (`transitiveMemberOf`); what Entra enforces for sensitive actions.
    pub(crate) fn transitive_roles_of(&self, entra_id: &str) -> Vec<&DirectoryRole> {
        let groups: Vec<&str> = self
            .groups
            .iter()
            .filter(|g| g.role_assignable)
            .filter(|g| g.members.iter().any(|m| m.eq_ignore_ascii_case(entra_id)))
            .map(|g| g.id.as_str())
            .collect();
        self.roles
            .iter()
            .filter(|r| {
                r.members.iter().any(|m| {
                    m.eq_ignore_ascii_case(entra_id)
                        || groups.iter().any(|g| m.eq_ignore_ascii_case(g))
                })
            })
            .collect()
    }

    /// Groups the user is a direct member of.
    pub(crate) fn groups_of(&self, entra_id: &str) -> Vec<&EntraGroup> {
        self.groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m.eq_ignore_ascii_case(entra_id)))
            .collect()
    }

    /// An Okta user by id, login (case-insensitive), or unambiguous login short name.
    pub(crate) fn okta_find(&self, key: &str) -> Option<usize> {
        if let Some(i) = self.okta_users.iter().position(|u| u.id == key) {
            return Some(i);
        }
        let login = |u: &OktaUserRec| prop_str(&u.profile, "login").unwrap_or("").to_owned();
        if let Some(i) = self
            .okta_users
            .iter()
            .position(|u| login(u).eq_ignore_ascii_case(key))
        {
            return Some(i);
        }
        if key.contains('@') {
            return None;
        }
        let short: Vec<usize> = (0..self.okta_users.len())
            .filter(|&i| {
                let l = login(&self.okta_users[i]);
                l.split('@').next().unwrap_or("").eq_ignore_ascii_case(key)
            })
            .collect();
        (short.len() == 1).then(|| short[0])
    }

    pub(crate) fn app_user(&self, user_id: &str) -> Option<usize> {
        self.app_users.iter().position(|a| a.user_id == user_id)
    }

    /// Groups assigned to the app that hold this Okta user.
    pub(crate) fn granting_groups(&self, user_id: &str) -> Vec<&OktaGroupRec> {
        self.app_groups
            .iter()
            .filter_map(|ag| self.okta_groups.iter().find(|g| g.id == ag.group_id))
            .filter(|g| g.members.iter().any(|m| m == user_id))
            .collect()
    }

    pub(crate) fn deactivate_enabled(&self) -> bool {
        self.capabilities
            .pointer("/update/lifecycleDeactivate/status")
            .and_then(Value::as_str)
            == Some("ENABLED")
    }

    /// Whether Okta pushes new and changed app users to Office 365 (create and profile update
    /// on): what a resumed provisioning does.
    pub(crate) fn pushing(&self) -> bool {
        let on = |p: &str| self.capabilities.pointer(p).and_then(Value::as_str) == Some("ENABLED");
        on("/create/lifecycleCreate/status") && on("/update/profile/status")
    }

    /// Okta's background push: every app user waiting for it is linked to its Office 365 user
    /// (status `PROVISIONED`, `externalId` = the Entra object id), unless `hold_sync` keeps it
    /// `SYNCING`. A push Office 365 refuses (the ImmutableIDs do not match) is logged and leaves
    /// the app user unlinked in `syncState` ERROR; Okta does not retry a failed task by itself,
    /// so app users already in ERROR are left alone.
    pub(crate) fn push_pending(&mut self) {
        if !self.pushing() {
            return;
        }
        for i in 0..self.app_users.len() {
            if matches!(
                self.app_users[i].sync_state.as_str(),
                "SYNCHRONIZED" | "ERROR"
            ) {
                continue;
            }
            if self.hold_sync {
                self.app_users[i].sync_state = "SYNCING".into();
                continue;
            }
            let entra_id = self
                .entra_find_current(&self.app_users[i].user_name)
                .and_then(|j| prop_str(&self.entra[j].current, "id").map(str::to_owned));
            if self.push_mismatch(i) {
                let event = syslog::push_failure(self, syslog::PUSH, i);
                self.syslog.record(SystemTime::now(), event);
                self.app_users[i].sync_state = "ERROR".into();
                continue;
            }
            let a = &mut self.app_users[i];
            if let Some(id) = entra_id {
                a.external_id = Some(id);
                a.status = "PROVISIONED".into();
                a.sync_state = "SYNCHRONIZED".into();
            } else {
                a.sync_state = "ERROR".into();
            }
        }
    }

    /// Whether a push of app user `i` would send an ImmutableID the matching Entra user (by
    /// UPN) does not hold: Office 365 then refuses to match the user. An app user without a
    /// value, or without an Entra user, fails differently and is not counted here.
    pub(crate) fn push_mismatch(&self, i: usize) -> bool {
        let a = &self.app_users[i];
        let Some(okta) = prop_str(&a.profile, "immutableId").filter(|v| !v.is_empty()) else {
            return false;
        };
        let Some(j) = self.entra_find_current(&a.user_name) else {
            return false;
        };
        prop_str(&self.entra[j].current, "onPremisesImmutableId") != Some(okta)
    }

    /// Okta's periodic profile push to Office 365, while provisioning pushes: one
    /// `push_profile` failure per mismatched app user. Returns how many were recorded.
    pub(crate) fn record_push_failures(&mut self, now: SystemTime) -> usize {
        if !self.provisioning_enabled || !self.pushing() {
            return 0;
        }
        let mismatched: Vec<usize> = (0..self.app_users.len())
            .filter(|&i| self.push_mismatch(i))
            .collect();
        for &i in &mismatched {
            let event = syslog::push_failure(self, syslog::PUSH_PROFILE, i);
            self.syslog.record(now, event);
            self.app_users[i].sync_state = "ERROR".into();
        }
        mismatched.len()
    }

    /// Okta pushes one user's profile to Office 365 (e.g. after an admin edited it): a mismatched
    /// user's push fails, is logged as a `push_profile` failure, and leaves the app user in
    /// `syncState` ERROR. `name` is the app username (UPN) or the Okta login. Returns whether a
    /// failure was logged.
    pub(crate) fn record_push_failure_of(&mut self, name: &str, now: SystemTime) -> bool {
        if !self.provisioning_enabled || !self.pushing() {
            return false;
        }
        let by_login = self
            .okta_users
            .iter()
            .find(|u| prop_str(&u.profile, "login").is_some_and(|l| l.eq_ignore_ascii_case(name)))
            .map(|u| u.id.clone());
        let Some(i) = self.app_users.iter().position(|a| {
            a.user_name.eq_ignore_ascii_case(name) || by_login.as_deref() == Some(&a.user_id)
        }) else {
            return false;
        };
        if !self.push_mismatch(i) {
            return false;
        }
        let event = syslog::push_failure(self, syslog::PUSH_PROFILE, i);
        self.syslog.record(now, event);
        self.app_users[i].sync_state = "ERROR".into();
        true
    }

    pub(crate) fn set_deactivate(&mut self, enabled: bool) {
        let status = if enabled { "ENABLED" } else { "DISABLED" };
        if let Some(v) = self
            .capabilities
            .pointer_mut("/update/lifecycleDeactivate/status")
        {
            *v = Value::String(status.into());
        }
    }
}
