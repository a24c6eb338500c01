//! Chat front ends: message rendering shared by all, the console adapter and Discord.

pub mod batch_render;
pub mod console;
pub mod diagnosis;
pub mod discord;
pub mod os_user;
pub mod render;
