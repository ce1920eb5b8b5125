//! Installing skillbox onto a Kubernetes node whose `/` is mounted at a
//! root directory: binaries, node config and a containerd drop-in, recorded
//! so that uninstall restores the host byte for byte. containerd is not
//! reloaded here: the new runtime handler takes effect at its next restart.

pub mod containerd_config;
pub mod install;
pub mod layout;
pub mod state;
pub mod status;
pub mod uninstall;
