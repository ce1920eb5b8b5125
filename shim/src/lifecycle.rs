//! The words of a process's life that every layer of the shim shares: its
//! status and how it exited. A leaf module: it depends on nothing else of
//! the shim.

use std::time::SystemTime;

use skillbox_sandbox::Outcome;

/// Where a process is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The status reported to containerd: the process's own, 137 after an
    /// OOM kill, 124 after the policy's timeout.
    pub status: u32,
    pub at: SystemTime,
    pub outcome: Outcome,
}

impl Exit {
    /// An exit whose status is all that is known.
    pub fn with_status(status: u32) -> Exit {
        Exit {
            status,
            at: SystemTime::now(),
            outcome: Outcome::Exited,
        }
    }
}
