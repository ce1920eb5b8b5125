//! Everything skillbox knows about runsc's command line, and nothing else.
//!
//! This crate is pure: it spawns no processes, touches no files and reads no
//! clock. Callers run runsc and feed the text back in; keeping the syntax and
//! its interpretation here makes both exhaustively unit-testable and puts
//! every runsc-version quirk in one place.
//!
//! - [`flags`]: per-sandbox flags a skill's policy implies.
//! - [`command`]: global options and subcommands rendered to an argv.
//! - [`version`]: parsing `runsc --version`.
//! - [`probe`]: classifying host probe trial runs.
//! - [`overhead`]: skill pids quota → sandbox cgroup pids limit.

#![forbid(unsafe_code)]

pub mod command;
pub mod error;
pub mod flags;
pub mod overhead;
pub mod probe;
pub mod version;

pub use command::{argv, GlobalOptions, Subcommand};
pub use error::Error;
pub use flags::{NetworkMode, Platform, PlatformChoice, RunscFlags};
pub use overhead::HostTaskBudget;
pub use probe::{
    classify_platform_trial, classify_trial, HostCapabilities, ModeSupport, NetworkSupport, PlatformSupport,
};
pub use version::RunscVersion;
