//! The lifecycle of one `skillbox run` execution; the runsc driver and the
//! cgroup it uses live in the `skillbox-shim` library.

pub mod audit;
pub mod egress;
pub mod execution;
