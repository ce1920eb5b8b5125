//! What only `skillbox run` does around a sandbox of the `skillbox-sandbox`
//! crate: its execution directory, `runsc run` in the foreground with
//! signals and the timeout in one wait, and the egress settings its flags
//! give.

pub mod egress;
pub mod execution;
