//! Translating a skill's process quota into the sandbox cgroup's pids limit.
//!
//! The sandbox cgroup counts *host* tasks, and gVisor itself needs many of
//! them: the Sentry's Go threads, the gofer, and (on ptrace) one stub process
//! per application process plus the Sentry threads tracing it. Copying the
//! skill's quota straight into `pids.limit` therefore kills the sandbox: a
//! limit of 32 stops it at boot. Measured on the development host with the
//! ptrace platform, an idle sandbox holds 35 host tasks and each additional
//! application process adds about 8.
//!
//! The cgroup limit computed here is only a host-side backstop against a
//! runaway sandbox. The skill's own quota is enforced separately inside gVisor
//! through `RLIMIT_NPROC`, which gVisor honours (verified), so the headroom
//! below does not let the skill run more processes than its policy allows.

use crate::flags::Platform;

/// Host tasks an idle ptrace sandbox was measured to hold.
pub const MEASURED_IDLE_TASKS_PTRACE: u32 = 35;

/// Host tasks each extra application process was measured to add (ptrace).
pub const MEASURED_TASKS_PER_PROCESS_PTRACE: u32 = 8;

/// How many host tasks to budget for one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTaskBudget {
    /// Tasks reserved for gVisor itself, before any application process.
    pub base_tasks: u32,
    /// Tasks reserved for each process the skill may run.
    pub tasks_per_process: u32,
}

impl HostTaskBudget {
    /// The budget for `platform`, with headroom above the measurements
    /// (256 vs 35 idle, 32 vs 8 per process): the Go runtime grows its thread
    /// count under load, and a skill that keeps creating and reaping
    /// processes at its quota held up to 364 host tasks with a quota of 16
    /// (stubs of reaped processes linger), crashing the Sentry under a
    /// 64 + 10/process budget. This is a backstop against a runaway sandbox;
    /// the skill's own quota is RLIMIT_NPROC.
    pub fn for_platform(platform: Platform) -> Self {
        match platform {
            Platform::Ptrace => HostTaskBudget {
                base_tasks: 256,
                tasks_per_process: 32,
            },
            // Not measured: systrap needs no per-process tracer threads and
            // kvm uses vCPU threads instead, so the ptrace numbers are
            // expected to be an over-estimate. Re-measure before tightening.
            Platform::Kvm | Platform::Systrap => HostTaskBudget {
                base_tasks: 256,
                tasks_per_process: 32,
            },
        }
    }

    /// The value for the sandbox cgroup's `pids.limit` (an `i64`, as in the
    /// OCI runtime spec) when the skill may run `skill_pids` processes:
    /// `base_tasks + skill_pids * tasks_per_process`, saturating.
    pub fn cgroup_pids_limit(&self, skill_pids: u32) -> i64 {
        i64::from(skill_pids)
            .saturating_mul(i64::from(self.tasks_per_process))
            .saturating_add(i64::from(self.base_tasks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptrace_budget_covers_measurements() {
        let b = HostTaskBudget::for_platform(Platform::Ptrace);
        assert_eq!(
            b,
            HostTaskBudget {
                base_tasks: 256,
                tasks_per_process: 32
            }
        );
        assert!(b.base_tasks > MEASURED_IDLE_TASKS_PTRACE);
        assert!(b.tasks_per_process > MEASURED_TASKS_PER_PROCESS_PTRACE);
    }

    #[test]
    fn unmeasured_platforms_use_ptrace_numbers() {
        let ptrace = HostTaskBudget::for_platform(Platform::Ptrace);
        assert_eq!(HostTaskBudget::for_platform(Platform::Kvm), ptrace);
        assert_eq!(HostTaskBudget::for_platform(Platform::Systrap), ptrace);
    }

    #[test]
    fn limit_formula() {
        let b = HostTaskBudget::for_platform(Platform::Ptrace);
        assert_eq!(b.cgroup_pids_limit(0), 256);
        assert_eq!(b.cgroup_pids_limit(1), 288);
        assert_eq!(b.cgroup_pids_limit(16), 768);
    }

    #[test]
    fn never_below_the_boot_killing_limit() {
        for p in Platform::ALL {
            let limit = HostTaskBudget::for_platform(p).cgroup_pids_limit(1);
            assert!(limit > 32, "{p}: {limit}");
            let idle = i64::from(MEASURED_IDLE_TASKS_PTRACE + MEASURED_TASKS_PER_PROCESS_PTRACE);
            assert!(limit >= idle, "{p}: {limit}");
        }
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let b = HostTaskBudget {
            base_tasks: u32::MAX,
            tasks_per_process: u32::MAX,
        };
        // (2^32 - 1)^2 exceeds i64::MAX, so the product must clamp.
        assert_eq!(b.cgroup_pids_limit(u32::MAX), i64::MAX);
    }
}
