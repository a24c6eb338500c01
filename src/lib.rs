//! o365-fixbot: repairs Okta → Office 365 ImmutableID mismatches from chat, with a two-person rule.

pub mod approval;
pub mod chat;
pub mod cli;
pub mod config;
pub mod demo;
pub mod directory;
pub mod domain;
pub mod ops;
pub mod pipeline;
pub mod sandbox;
pub mod secret;
pub mod store;
pub mod utc;
pub mod watch;
