//! Identifiers that never change during a run: run ids, Entra object ids, Okta user ids, actors.

use std::fmt;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{0}` is not an Entra object id (a GUID)")]
    EntraObjectId(String),
    #[error("`{0}` is not an Okta user id")]
    OktaUserId(String),
    #[error("`{0}` is not a run id")]
    RunId(String),
}

/// One repair request, from plan to outcome.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct RunId(Uuid);

impl RunId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The full id; the 8-character short form shown in chat is resolved by the store.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| IdError::RunId(s.chars().take(64).collect()))
    }

    pub fn short(&self) -> String {
        self.0.simple().to_string()[..8].to_owned()
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", self.short())
    }
}

/// The Entra object id: the user's handle for the whole run, since the UPN changes mid-repair.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct EntraObjectId(String);

impl EntraObjectId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::parse_str(s)
            .map(|u| Self(u.hyphenated().to_string()))
            .map_err(|_| IdError::EntraObjectId(s.chars().take(64).collect()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EntraObjectId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<EntraObjectId> for String {
    fn from(v: EntraObjectId) -> String {
        v.0
    }
}
impl fmt::Display for EntraObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Okta's user id (`00u…`): letters and digits only, so it is safe in a URL path as is.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct OktaUserId(String);

impl OktaUserId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::OktaUserId(s.chars().take(64).collect()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OktaUserId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<OktaUserId> for String {
    fn from(v: OktaUserId) -> String {
        v.0
    }
}
impl fmt::Display for OktaUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person in chat: the platform's stable id and a display name for messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    pub id: String,
    pub name: String,
}

impl Actor {
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_validate() {
        assert!(EntraObjectId::parse("8d2e5a1c-0000-4000-8000-000000000001").is_ok());
        assert!(EntraObjectId::parse("../etc").is_err());
        assert!(OktaUserId::parse("00u1abc").is_ok());
        assert!(OktaUserId::parse("00u/../x").is_err());
        let r = RunId::new();
        assert_eq!(RunId::parse(&r.to_string()).unwrap(), r);
        assert_eq!(r.short().len(), 8);
    }
}
