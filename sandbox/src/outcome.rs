//! How a sandbox ended, decided the same way by every runtime: the one OOM
//! rule and the one timeout rule, and the status each outcome reports.

pub use skillbox_audit::Outcome;

/// The status reported for a sandbox the timeout ended (as `timeout(1)`).
pub const TIMEOUT_STATUS: i32 = 124;
/// The status reported for an OOM-killed sandbox (128 + SIGKILL).
pub const OOM_STATUS: i32 = 137;

/// What is known when a sandbox's init process has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ending {
    /// The process's status as a shell reports it (128 + signal when killed).
    pub status: i32,
    /// OOM kills the sandbox's cgroup recorded.
    pub oom_kills: u64,
    /// The policy's timeout fired and the runtime killed the sandbox.
    pub timed_out: bool,
    /// Someone else asked for the kill (a signal to `skillbox run`, a Kill
    /// or Delete through containerd) before it ended.
    pub killed: bool,
    /// The sandbox itself (runsc, the Sentry) reported a failure.
    pub sandbox_failed: bool,
}

impl Ending {
    /// The outcome, in this order: a timeout the runtime enforced; an OOM
    /// kill (the cgroup counted one and the process did not exit 0); a kill
    /// someone asked for; a failed sandbox; else the skill exited.
    pub fn outcome(&self) -> Outcome {
        if self.timed_out {
            Outcome::Timeout
        } else if self.oom_kills > 0 && self.status != 0 {
            Outcome::Oom
        } else if self.killed {
            Outcome::Killed
        } else if self.sandbox_failed {
            Outcome::SandboxFailed
        } else {
            Outcome::Exited
        }
    }

    /// The status to report: 124 after the timeout, 137 after an OOM kill,
    /// else the process's own.
    pub fn reported_status(&self) -> i32 {
        match self.outcome() {
            Outcome::Timeout => TIMEOUT_STATUS,
            Outcome::Oom => OOM_STATUS,
            _ => self.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending(status: i32) -> Ending {
        Ending {
            status,
            ..Ending::default()
        }
    }

    #[test]
    fn a_plain_exit_keeps_its_status() {
        assert_eq!(ending(3).outcome(), Outcome::Exited);
        assert_eq!(ending(3).reported_status(), 3);
    }

    #[test]
    fn the_timeout_wins_and_reports_124() {
        let timed_out = Ending {
            timed_out: true,
            oom_kills: 1,
            killed: true,
            ..ending(137)
        };
        assert_eq!(timed_out.outcome(), Outcome::Timeout);
        assert_eq!(timed_out.reported_status(), 124);
    }

    #[test]
    fn an_oom_kill_needs_a_failed_process() {
        let oom = Ending {
            oom_kills: 1,
            ..ending(137)
        };
        assert_eq!(oom.outcome(), Outcome::Oom);
        assert_eq!(oom.reported_status(), 137);
        // A runsc that reports another status for the killed sandbox.
        assert_eq!(
            Ending {
                oom_kills: 1,
                ..ending(255)
            }
            .outcome(),
            Outcome::Oom
        );
        // A skill that survived a killed child of its own and exited 0.
        assert_eq!(
            Ending {
                oom_kills: 1,
                ..ending(0)
            }
            .outcome(),
            Outcome::Exited
        );
    }

    #[test]
    fn a_requested_kill_is_killed_and_a_crash_sandbox_failed() {
        assert_eq!(
            Ending {
                killed: true,
                ..ending(137)
            }
            .outcome(),
            Outcome::Killed
        );
        let crashed = Ending {
            sandbox_failed: true,
            ..ending(128)
        };
        assert_eq!(crashed.outcome(), Outcome::SandboxFailed);
        assert_eq!(crashed.reported_status(), 128);
    }
}
