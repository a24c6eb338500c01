//! Running it: metrics, health endpoints, `check-config`.

pub mod check;
pub mod check_report;
pub mod health;
pub mod metrics;
pub mod shutdown;
