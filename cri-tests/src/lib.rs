//! The Kubernetes path of skillbox, end to end, without a kubelet: a
//! private containerd (Debian's 1.6.20, or 2.1 with
//! `SKILLBOX_CRI_CONTAINERD=2.1`) with its real CRI plugin, started inside a
//! network namespace of its own with a CNI bridge, driven over the CRI gRPC
//! API with kubelet's call sequence. Pods run under the runtime handler
//! `runc` (the control, proving the harness) or `skillbox` (our shim, one
//! gVisor sandbox per pod).
//!
//! Real components only: containerd, runc, runsc, the CNI plugins. Tests
//! need root and never skip: a missing prerequisite panics naming the
//! Debian package.

pub mod check;
pub mod client;
pub mod config;
pub mod containerd;
pub mod images;
pub mod leftovers;
pub mod logs;
pub mod netns;
pub mod node;
pub mod pod;
pub mod reap;
pub mod runsc_as_runc;
pub mod stream;

pub use check::OrFail;
pub use client::{CallError, Cri};
pub use node::{Handler, Node, NodeOptions};
pub use pod::{ContainerSpec, Exit, Pod};
