//! Okta management API: users, the Office 365 app's users and groups, mappings, provisioning.

mod auth;
mod client;
mod error;
mod link;
mod model;
mod pacing;
mod profile;
mod syslog;

pub use auth::{OktaCredential, ServiceApp, LOGS_SCOPE, SERVICE_APP_SCOPES};
pub use client::{OktaClient, OktaConfig, PROFILE_RULES_TTL};
pub use error::OktaError;
pub use model::{
    AppGroup, AppUser, AppUserCredentials, AssignAppUser, Feature, OktaGroup, OktaUser,
    ProfileMapping,
};
pub use profile::{
    carry_over, AppProfileRules, AppUserSchema, CarryOver, CarryOverProblem, SchemaAttribute,
    ENTITLEMENT_ATTRIBUTES, IMMUTABLE_ID,
};
pub use syslog::{
    LogActor, LogCursor, LogEvent, LogOutcome, LogPage, LogQuery, DEACTIVATE, GENERAL_FAILURE,
    MAX_LOG_LIMIT, PROVISIONING_ERROR_EVENT_TYPES, PUSH, PUSH_PROFILE, VERIFY_EXISTS,
};
