//! Graph resources as the repair reads and writes them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntraUser {
    pub id: String,
    pub user_principal_name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
    #[serde(default)]
    pub account_enabled: Option<bool>,
    #[serde(default)]
    pub on_premises_immutable_id: Option<String>,
    #[serde(default)]
    pub on_premises_sync_enabled: Option<bool>,
    #[serde(default)]
    pub assigned_licenses: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntraDomain {
    pub id: String,
    /// `Managed` or `Federated`.
    pub authentication_type: String,
    #[serde(default)]
    pub is_initial: bool,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default)]
    pub is_verified: bool,
}

impl EntraDomain {
    pub fn is_federated(&self) -> bool {
        self.authentication_type.eq_ignore_ascii_case("Federated")
    }
}

/// A directory role the user holds. Graph answers with only `id` and `@odata.type` ("limited
/// information") when the app may not read directory roles, so every other field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryRole {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub role_template_id: Option<String>,
}

impl DirectoryRole {
    /// The role's display name, when Graph let the app read it.
    pub fn name(&self) -> Option<&str> {
        self.display_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
    }
}

/// The `client-request-id` a request carries: a UUID chosen by the client, echoed by Graph in
/// `innerError`, and what Microsoft support traces a request by when no answer arrived. A write's
/// id is chosen before the call so the journal can hold it with the intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientRequestId(uuid::Uuid);

impl ClientRequestId {
    /// A fresh random (v4) id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// An id read back (from the journal, a header): any UUID form, kept as a UUID.
    pub fn parse(s: &str) -> Result<Self, uuid::Error> {
        uuid::Uuid::parse_str(s.trim()).map(Self)
    }

    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for ClientRequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for ClientRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hyphenated lowercase form Graph's own SDKs send.
        self.0.hyphenated().fmt(f)
    }
}

/// Body of `PATCH /users/{id}`: only the fields set are sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_premises_immutable_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_id_round_trips_and_refuses_garbage() {
        let id = ClientRequestId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(ClientRequestId::parse(&text).unwrap(), id);
        assert_eq!(
            ClientRequestId::parse(&text.to_uppercase()).unwrap(),
            id,
            "UUIDs compare by value"
        );
        assert!(ClientRequestId::parse("not-a-uuid").is_err());
        assert_ne!(ClientRequestId::new(), ClientRequestId::new());
    }

    #[test]
    fn limited_information_roles_have_no_name() {
        let r: DirectoryRole = serde_json::from_value(serde_json::json!({
            "@odata.type": "#microsoft.graph.directoryRole",
            "id": "r1",
            "displayName": null,
            "roleTemplateId": null,
        }))
        .unwrap();
        assert_eq!(r.name(), None);
        let r = DirectoryRole {
            display_name: Some("User Administrator".into()),
            ..r
        };
        assert_eq!(r.name(), Some("User Administrator"));
    }
}
