//! The Graph client: token, retries, `$select`, advanced queries, typed errors.

use super::{DirectoryRole, EntraDomain, EntraUser, GraphError, UserPatch};
use crate::directory::{HttpSettings, Reply};
use crate::domain::{EntraObjectId, ImmutableId, Upn};
use crate::secret::Secret;
use url::Url;

/// Where and as whom to call Graph. Authority and Graph base are configurable for national
/// clouds and for the sandbox.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// e.g. `https://login.microsoftonline.com`; the token URL is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub authority: Url,
    /// e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_base: Url,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Token scope; `{graph host}/.default`.
    pub scope: String,
    pub http: HttpSettings,
}

#[derive(Clone)]
pub struct GraphClient {
    _todo: (),
}

impl GraphClient {
    pub fn new(_config: GraphConfig) -> anyhow::Result<Self> {
        todo!()
    }

    /// `GET /users/{upn}?$select=…`; `None` on 404 `Request_ResourceNotFound`.
    pub async fn user_by_upn(&self, _upn: &Upn) -> Result<Reply<Option<EntraUser>>, GraphError> {
        todo!()
    }

    /// `GET /users/{id}?$select=…`; `None` on 404.
    pub async fn user_by_id(
        &self,
        _id: &EntraObjectId,
    ) -> Result<Reply<Option<EntraUser>>, GraphError> {
        todo!()
    }

    /// `GET /domains/{name}`; `None` on 404.
    pub async fn domain(&self, _name: &str) -> Result<Reply<Option<EntraDomain>>, GraphError> {
        todo!()
    }

    /// The tenant's initial domain (`…onmicrosoft.com`) from `GET /organization`.
    pub async fn initial_domain(&self) -> Result<Reply<String>, GraphError> {
        todo!()
    }

    /// Directory roles the user holds: `GET /users/{id}/memberOf/microsoft.graph.directoryRole`.
    pub async fn directory_roles(
        &self,
        _id: &EntraObjectId,
    ) -> Result<Reply<Vec<DirectoryRole>>, GraphError> {
        todo!()
    }

    /// Users holding this ImmutableID: the advanced query with `ConsistencyLevel: eventual` and
    /// `$count=true`, the literal OData-escaped and the whole query percent-encoded.
    pub async fn users_with_immutable_id(
        &self,
        _id: &ImmutableId,
    ) -> Result<Reply<Vec<EntraUser>>, GraphError> {
        todo!()
    }

    /// `PATCH /users/{id}`; 204 expected.
    pub async fn update_user(
        &self,
        _id: &EntraObjectId,
        _patch: &UserPatch,
    ) -> Result<Reply<()>, GraphError> {
        todo!()
    }
}
