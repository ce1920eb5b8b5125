//! Host side of an execution: the runsc driver, the sandbox cgroup and the
//! lifecycle that ties them together with timeouts and signals.

pub mod cgroup;
pub mod execution;
pub mod runsc;
