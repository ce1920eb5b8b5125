//! The audit trail of skill executions (issue 5).
//!
//! - `event`: the one event schema every part of skillbox writes — the
//!   sandbox's lifecycle, what gVisor's runtime monitoring reports of the
//!   skill's processes, files and sockets, and (in the same envelope) the
//!   egress events of `skillbox-egress`;
//! - `jsonl`: the built-in exporter, a JSON Lines file per execution;
//! - `reader`: reading and following those files (`skillbox audit`);
//! - `registry`: the rows the registry's `audit_log` table gets.

pub mod event;
pub mod jsonl;
pub mod reader;
pub mod registry;
