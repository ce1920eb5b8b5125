//! skillbox's containerd shim v2 (`containerd-shim-skillbox-v1`) and the host
//! side of a sandbox shared with the `skillbox` CLI: the only code that
//! starts runsc, and the sandbox cgroup skillbox owns.

pub mod audit;
pub mod cgroup;
pub mod cleanup;
pub mod config;
pub mod console;
pub mod container;
pub mod egress;
pub mod enforce;
pub mod events;
pub mod exec;
pub mod introspection;
pub mod pod;
pub mod publisher;
pub mod reaper;
pub mod rootfs;
pub mod runsc;
pub mod service;
pub mod stats;
pub mod stdin;
pub mod stdio;
pub mod task;
pub mod update;
