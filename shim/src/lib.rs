//! The host side of a skillbox sandbox, shared by the `skillbox` CLI and the
//! containerd shim: the only code that starts runsc, and the sandbox cgroup
//! skillbox owns.

pub mod cgroup;
pub mod runsc;
