//! The skillbox policy compiler: a skill folder and its `security_policy`
//! become a validated effective policy, an OCI runtime bundle and the runsc
//! flags that enforce it.
//!
//! Pure and deterministic: it reads the skill folder and the node config and
//! writes the bundle, and does nothing else (no processes, no network, no clock).
#![forbid(unsafe_code)]

pub mod bundle;
pub mod compile;
pub mod effective;
pub mod env_pass;
pub mod error;
pub mod frontmatter;
pub mod manifest;
pub mod network;
pub mod node_config;
pub mod oci;
pub mod package;
pub mod plain_yaml;
pub mod quantity;
pub mod schema;
pub mod scratch_path;

pub use compile::{compile, effective_policy, CompileOptions, Compiled};
pub use effective::{EffectivePolicy, Resolution};
pub use error::{Error, Result};
pub use node_config::NodeConfig;
pub use package::{load, SkillPackage};
