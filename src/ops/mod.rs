//! Running it: metrics, health endpoints.

pub mod check;
pub mod health;
pub mod metrics;
