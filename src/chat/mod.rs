//! Chat front ends: message rendering shared by all, and the console adapter.

pub mod console;
pub mod render;
