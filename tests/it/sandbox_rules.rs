//! The sandbox follows api-facts.md: the rules real Graph and Okta enforce.
