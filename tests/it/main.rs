//! The one integration test binary: real clients against the sandbox tenant on 127.0.0.1.

mod batch;
mod check;
mod clients;
mod console;
mod credentials;
mod diagnose;
mod discord;
mod discord_batch;
mod discord_delivery;
mod discord_process;
mod engine_model;
mod engine_rules;
mod fake_discord;
mod graph_fidelity;
mod harness;
mod okta_fidelity;
mod ops;
mod pause;
mod pipeline;
mod recovery;
mod sandbox_rules;
mod syslog;
mod watch;
