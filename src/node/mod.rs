//! Installing skillbox onto a Kubernetes node whose `/` is mounted at a
//! root directory: binaries, node config and a containerd drop-in, recorded
//! so that uninstall restores the host byte for byte; containerd restarted
//! only when its config changed, and the node labelled for the scheduler.

pub mod activate;
pub mod containerd_config;
pub mod cri;
pub mod install;
pub mod kube_api;
pub mod layout;
pub mod restart;
pub mod state;
pub mod status;
pub mod uninstall;
