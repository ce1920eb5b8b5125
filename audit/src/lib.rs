//! The audit trail of skill executions.
//!
//! - `event`: the one event schema every part of skillbox writes — the
//!   sandbox's lifecycle, what gVisor's runtime monitoring reports of the
//!   skill's processes, files and sockets, and (in the same envelope) the
//!   egress events of `skillbox-egress`;
//! - `jsonl`: the built-in exporter, a JSON Lines file per execution;
//! - `reader`: reading and following those files (`skillbox audit`);
//! - `metrics`: the node's Prometheus metrics, counted from the events;
//! - `registry`: the rows the registry's `audit_log` table gets;
//! - `gvisor`: the runtime-monitoring session configuration and the monitor
//!   that receives the sentry's messages and turns them into events;
//! - `budget`: the per-execution budget of repetitive events;
//! - `execution`: one execution's audit as a runtime drives it (log,
//!   monitor, lifecycle events).

pub mod budget;
mod error;
pub mod event;
pub mod execution;
pub mod gvisor;
pub mod jsonl;
pub mod metrics;
pub mod reader;
pub mod registry;

pub use error::Error;
pub use event::{AuditEvent, Outcome, SandboxIdentity, SkillIdentity, Task};
pub use policy_compiler::manifest::AuditLevel;
