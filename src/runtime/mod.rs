//! What only `skillbox run` does around a sandbox of the `skillbox-sandbox`
//! crate: its execution directory, `runsc run` in the foreground with
//! signals and the timeout in one wait, the egress settings its flags
//! give, and the files it hands in (`--input`) and takes out (`--output`).

pub mod egress;
pub mod execution;
pub mod inputs;
pub mod outputs;
pub mod plain_tree;
pub mod stdio;
