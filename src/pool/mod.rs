//! The warm pool: a local service (`skillbox pool serve`) that keeps
//! sandboxes booted ahead of their executions, and `skillbox run`'s side
//! of its unix-socket API. A run uses the pool when its socket is there
//! and the pool has a sandbox ready for it; otherwise it runs cold.

pub mod client;
pub mod service;
pub mod warm;
pub mod wire;
