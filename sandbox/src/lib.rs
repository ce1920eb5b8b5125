//! One sandbox's host-side life, shared by every skillbox runtime (the
//! `skillbox` CLI and the containerd shim), as youki's libcontainer is for
//! its CLI: the only code that starts runsc ([`runsc`]), the bundle spec
//! loaded and written once ([`spec`]), the sandbox's cgroup ([`cgroup`]),
//! the audit and egress sessions and their fixed teardown order
//! ([`sandbox`]), one outcome rule ([`outcome`]), the teardown record a
//! killed runtime leaves ([`record`]) and the collector that removes what
//! such records name ([`gc`]).

pub mod cgroup;
pub mod gc;
pub mod outcome;
pub mod reaper;
pub mod record;
pub mod runsc;
pub mod runsc_version;
pub mod sandbox;
pub mod spec;

pub use outcome::{Ending, Outcome};
pub use sandbox::{Ended, Sandbox, SandboxConfig, SandboxError};
pub use spec::{BundleSpec, PodRole};
