//! Microsoft Graph v1.0: the few user, domain and organization calls the repair needs.

mod client;
mod error;
mod model;
mod pacing;
mod token;

pub use client::{GraphClient, GraphConfig};
pub use error::GraphError;
pub use model::{ClientRequestId, DirectoryRole, EntraDomain, EntraUser, UserPatch};
pub use pacing::WriteBudget;
pub use token::{CertificateCredential, GraphCredential};

/// Fields every user read names in `$select`: Graph returns `onPremisesImmutableId`,
/// `onPremisesSyncEnabled` and `assignedLicenses` only when asked for.
pub const USER_SELECT: &str = "id,userPrincipalName,displayName,mail,accountEnabled,onPremisesImmutableId,onPremisesSyncEnabled,assignedLicenses";
