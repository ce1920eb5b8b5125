//! gVisor runtime monitoring: the sandbox's sentry reports container start,
//! clone, exec, exit and chosen system calls to a Unix SOCK_SEQPACKET
//! socket that skillbox serves (`docs/gvisor-monitoring-facts.md`).
//!
//! - [`config`]: the `--pod-init-config` file for an audit level;
//! - [`monitor`]: the socket server that turns messages into events;
//! - [`decode`] (with [`wire`], [`proto`], [`sockaddr`], [`limits`],
//!   [`sysno`]): one untrusted packet → one [`crate::AuditEvent`];
//! - [`filter`]: what the `security` level keeps of what it subscribes to.

pub mod config;
pub mod decode;
pub mod filter;
pub mod limits;
pub mod monitor;
pub mod proto;
pub mod sockaddr;
mod sys;
pub mod sysno;
pub mod wire;

#[cfg(test)]
mod decode_tests;

pub use config::{pod_init_config, write_pod_init_config, PodInitConfig};
pub use monitor::{EventSink, Monitor, MonitorStats};
