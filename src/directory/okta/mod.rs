//! Okta management API: users, the Office 365 app's users and groups, mappings, provisioning.

mod auth;
mod client;
mod error;
mod link;
mod model;
mod pacing;

pub use auth::{OktaCredential, ServiceApp, SERVICE_APP_SCOPES};
pub use client::{OktaClient, OktaConfig};
pub use error::OktaError;
pub use model::{
    AppGroup, AppUser, AppUserCredentials, AssignAppUser, Feature, OktaGroup, OktaUser,
    ProfileMapping,
};
