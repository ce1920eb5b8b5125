//! The shim's own harness: a private containerd driving the shim. The rest
//! (prerequisites, the busybox base, compiled skills, the fake internet)
//! is skillbox-test-support's.

/// Used by some test files only.
#[allow(dead_code)]
pub mod containerd;
