//! skillbox's containerd shim v2 (`containerd-shim-skillbox-v1`): the
//! containerd task service over sandboxes of the `skillbox-sandbox` crate.

pub mod cleanup;
pub mod config;
pub mod console;
pub mod container;
pub mod enforce;
pub mod error;
pub mod events;
pub mod exec;
pub mod instance;
pub mod introspection;
pub mod lifecycle;
pub mod pod;
pub mod process;
pub mod publisher;
pub mod rootfs;
pub mod service;
pub mod stats;
pub mod stdin;
pub mod stdio;
pub mod task;
pub mod update;
