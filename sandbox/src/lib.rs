//! One sandbox's host-side life, shared by every skillbox runtime (the
//! `skillbox` CLI and the containerd shim): the only code that starts runsc,
//! the sandbox's cgroup, child reaping.

pub mod cgroup;
pub mod reaper;
pub mod runsc;
