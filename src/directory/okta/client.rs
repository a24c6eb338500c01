//! The Okta client: SSWS auth, pacing, 429 retry, pagination, typed errors.

use super::{AppGroup, AppUser, AssignAppUser, Feature, OktaError, OktaGroup, OktaUser, ProfileMapping};
use crate::directory::{HttpSettings, Reply};
use crate::domain::OktaUserId;
use crate::secret::Secret;
use url::Url;

#[derive(Debug, Clone)]
pub struct OktaConfig {
    /// e.g. `https://example.okta.com`.
    pub org_url: Url,
    pub api_token: Secret,
    /// The Microsoft Office 365 app instance id.
    pub app_id: String,
    pub http: HttpSettings,
}

#[derive(Clone)]
pub struct OktaClient {
    _todo: (),
}

impl OktaClient {
    pub fn new(_config: OktaConfig) -> anyhow::Result<Self> {
        todo!()
    }

    pub fn app_id(&self) -> &str {
        todo!()
    }

    /// `GET /api/v1/users/{id or login}` (login URL-encoded); `None` on 404 `E0000007`.
    pub async fn user(&self, _id_or_login: &str) -> Result<Reply<Option<OktaUser>>, OktaError> {
        todo!()
    }

    /// `GET /api/v1/users/{id}/groups`, all pages.
    pub async fn user_groups(&self, _user: &OktaUserId) -> Result<Reply<Vec<OktaGroup>>, OktaError> {
        todo!()
    }

    /// `GET /api/v1/apps/{appId}/users/{userId}`; `None` on 404.
    pub async fn app_user(&self, _user: &OktaUserId) -> Result<Reply<Option<AppUser>>, OktaError> {
        todo!()
    }

    /// The app user whose `credentials.userName` equals `user_name` (case-insensitive), searching
    /// `GET /api/v1/apps/{appId}/users?q=…` over all pages.
    pub async fn app_user_by_user_name(
        &self,
        _user_name: &str,
    ) -> Result<Reply<Option<AppUser>>, OktaError> {
        todo!()
    }

    /// `GET /api/v1/apps/{appId}/groups`, all pages.
    pub async fn app_groups(&self) -> Result<Reply<Vec<AppGroup>>, OktaError> {
        todo!()
    }

    /// `DELETE /api/v1/apps/{appId}/users/{userId}?sendEmail=false`.
    pub async fn unassign(&self, _user: &OktaUserId) -> Result<Reply<()>, OktaError> {
        todo!()
    }

    /// `POST /api/v1/apps/{appId}/users`.
    pub async fn assign(&self, _body: &AssignAppUser) -> Result<Reply<AppUser>, OktaError> {
        todo!()
    }

    /// Mappings whose target is the app (`GET /api/v1/mappings?targetId={appId}`), each fetched
    /// in full (`GET /api/v1/mappings/{id}`) so `properties` is filled.
    pub async fn mappings_into_app(&self) -> Result<Reply<Vec<ProfileMapping>>, OktaError> {
        todo!()
    }

    /// `GET /api/v1/apps/{appId}/features/USER_PROVISIONING`.
    pub async fn provisioning(&self) -> Result<Reply<Feature>, OktaError> {
        todo!()
    }

    /// `PUT /api/v1/apps/{appId}/features/USER_PROVISIONING` with the capabilities object only.
    pub async fn set_provisioning(
        &self,
        _capabilities: &serde_json::Value,
    ) -> Result<Reply<Feature>, OktaError> {
        todo!()
    }
}
