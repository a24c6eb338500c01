//! Okta resources as the repair reads and writes them. Profiles and capabilities stay raw JSON so
//! they are carried over and restored byte-for-byte.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OktaUser {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub profile: Map<String, Value>,
}

impl OktaUser {
    pub fn login(&self) -> Option<&str> {
        self.profile.get("login").and_then(Value::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OktaGroup {
    pub id: String,
    #[serde(default)]
    pub profile: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AppUserCredentials {
    #[serde(rename = "userName", default)]
    pub user_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppUser {
    pub id: String,
    /// `USER` (direct) or `GROUP`.
    pub scope: String,
    pub status: String,
    #[serde(default)]
    pub sync_state: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub credentials: Option<AppUserCredentials>,
    #[serde(default)]
    pub profile: Map<String, Value>,
}

impl AppUser {
    pub fn immutable_id(&self) -> Option<&str> {
        self.profile
            .get("immutableId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
    pub fn user_name(&self) -> Option<&str> {
        self.credentials
            .as_ref()
            .and_then(|c| c.user_name.as_deref())
    }
}

/// Body of `POST /api/v1/apps/{appId}/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignAppUser {
    pub id: String,
    pub scope: String,
    pub credentials: AppUserCredentials,
    pub profile: Map<String, Value>,
}

/// A group assignment of the app: `GET /api/v1/apps/{appId}/groups`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AppGroup {
    pub id: String,
}

/// A profile mapping into the app, with its property expressions.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ProfileMapping {
    pub id: String,
    #[serde(default)]
    pub source: Value,
    #[serde(default)]
    pub target: Value,
    /// property name → `{expression, pushStatus}`; empty in the list view.
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// `GET /api/v1/apps/{appId}/features/USER_PROVISIONING`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Feature {
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub description: Option<String>,
    pub capabilities: Value,
}
