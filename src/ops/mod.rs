//! Running it: metrics, health endpoints.

pub mod health;
pub mod metrics;
