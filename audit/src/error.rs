//! The crate's one error type: one variant per failed operation.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Decoding one packet from the sentry (untrusted input).
    #[error("monitoring packet of {len} bytes is shorter than its 8-byte header")]
    ShortHeader { len: usize },
    #[error("monitoring header size {header_size} is outside the {len}-byte packet")]
    BadHeaderSize { header_size: u16, len: usize },
    #[error("monitoring packet of {len} bytes exceeds the limit")]
    TooLarge { len: usize },
    #[error("monitoring message of type {message_type} is not valid protobuf")]
    Protobuf {
        message_type: u16,
        #[source]
        source: prost::DecodeError,
    },

    // The monitor's socket and thread.
    #[error("creating the monitoring socket {path}")]
    CreateSocket {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("binding the monitoring socket {path}")]
    BindSocket {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("restricting the monitoring socket {path} to its owner")]
    SetSocketMode {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the monitor thread for {path}")]
    SpawnMonitor {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the monitor thread for {path} panicked")]
    MonitorPanicked { path: PathBuf },

    // Writing a session configuration.
    #[error("writing the pod init config {path}")]
    WritePodInitConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
