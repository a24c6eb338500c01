//! Shared helpers: start the sandbox, build clients.
