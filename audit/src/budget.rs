//! The per-execution budget of repetitive events: what keeps a skill from
//! drowning its own trail in one system call or one open repeated.
//!
//! The first `limit` routine events of an execution (`syscall` and
//! `file_open`, the per-call kinds) are all recorded. After that, a routine
//! event is recorded only when its kind (event type, process, and the
//! system call's name or the open's path and write flag) has not been seen
//! in this execution; repeats are dropped and counted, and the count is
//! written as `events_dropped` with source [`BUDGET_SOURCE`] every
//! [`REPORT_EVERY`] drops and when the execution ends. Every other event
//! (lifecycle, exec, clone, process exit, sockets and connects, egress
//! verdicts, loss counts) is always recorded, and so is the first of each
//! kind, so what is dropped is never a thing the skill did only once.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use crate::AuditEvent;

/// The `events_dropped` source of repeats the budget dropped.
pub const BUDGET_SOURCE: &str = "budget";

/// Drops are reported in batches of this many while the execution runs.
pub const REPORT_EVERY: u64 = 100_000;

/// Distinct kinds remembered; past this, new kinds are recorded unchecked.
const MAX_KINDS: usize = 1 << 16;

/// One execution's budget.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    admitted: u64,
    kinds: HashSet<u64>,
    unreported: u64,
}

/// Whether to record a routine event, and a count of drops to report now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub record: bool,
    pub report: Option<u64>,
}

impl Budget {
    /// A budget of `limit` routine events before repeats are dropped.
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            admitted: 0,
            kinds: HashSet::new(),
            unreported: 0,
        }
    }

    /// Decides on `event`: events that are not routine are always recorded.
    pub fn admit(&mut self, event: &AuditEvent) -> Admission {
        let record = |report| Admission { record: true, report };
        let Some(kind) = kind(event) else {
            return record(None);
        };
        let new_kind = self.kinds.len() >= MAX_KINDS || self.kinds.insert(kind);
        if self.admitted < self.limit || new_kind {
            self.admitted += 1;
            return record(None);
        }
        self.unreported += 1;
        let report = (self.unreported >= REPORT_EVERY).then(|| self.take_unreported());
        Admission {
            record: false,
            report,
        }
    }

    /// The drops not reported yet (at the end of the execution).
    pub fn take_unreported(&mut self) -> u64 {
        std::mem::take(&mut self.unreported)
    }
}

/// What makes a routine event a repeat of another; `None` for the rest.
fn kind(event: &AuditEvent) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    match event {
        AuditEvent::Syscall { task, name, .. } => ("syscall", &task.process, name).hash(&mut hasher),
        AuditEvent::FileOpen {
            task, path, write, ..
        } => ("file_open", &task.process, path, write).hash(&mut hasher),
        _ => return None,
    }
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Task;

    fn call(process: &str, name: &str) -> AuditEvent {
        AuditEvent::Syscall {
            task: Task {
                pid: Some(1),
                tid: Some(1),
                process: Some(process.to_owned()),
            },
            name: name.to_owned(),
            sysno: 0,
            result: None,
        }
    }

    #[test]
    fn past_the_limit_only_repeats_are_dropped_and_counted() {
        let mut budget = Budget::new(3);
        let recorded = |budget: &mut Budget, event: &AuditEvent| budget.admit(event).record;
        for _ in 0..3 {
            assert!(recorded(&mut budget, &call("sh", "getpid")));
        }
        // Spent: the same call again is dropped, a new one is not.
        assert!(!recorded(&mut budget, &call("sh", "getpid")));
        assert!(recorded(&mut budget, &call("sh", "ptrace")));
        assert!(recorded(&mut budget, &call("nc", "getpid")));
        assert!(!recorded(&mut budget, &call("sh", "ptrace")));
        // Lifecycle and security events are never dropped.
        for _ in 0..10 {
            assert!(recorded(&mut budget, &AuditEvent::Oom));
        }
        assert_eq!(budget.take_unreported(), 2);
        assert_eq!(budget.take_unreported(), 0);
    }

    #[test]
    fn drops_are_reported_in_batches() {
        let mut budget = Budget::new(0);
        assert!(budget.admit(&call("sh", "getpid")).record);
        let reports: Vec<u64> = (0..2 * REPORT_EVERY + 5)
            .filter_map(|_| budget.admit(&call("sh", "getpid")).report)
            .collect();
        assert_eq!(reports, [REPORT_EVERY, REPORT_EVERY]);
        assert_eq!(budget.take_unreported(), 5);
    }
}
