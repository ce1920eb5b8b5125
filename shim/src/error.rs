//! The errors of the shim's containers and processes, one variant per
//! failed operation; the task service maps each to a ttrpc code
//! (`task.rs`).

use std::path::PathBuf;

use skillbox_sandbox::runsc::RunscError;
use skillbox_sandbox::spec::SpecError;
use skillbox_sandbox::SandboxError;

use crate::enforce::EnforceError;
use crate::lifecycle::Status;
use crate::stdio::StdioError;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The spec was refused, or could not be brought within its policy.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// The sandbox's audit trail, egress or cgroup could not be made.
    #[error(transparent)]
    Sandbox(#[from] Box<SandboxError>),
    #[error("cannot set up the network egress of container {id}: {reason}")]
    EgressUpstreams { id: String, reason: String },
    #[error(transparent)]
    Stdio(#[from] StdioError),
    /// The image root could not be mounted.
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error("{path}: cannot read the sandbox pid: {reason}")]
    PidFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Runsc(#[from] RunscError),
    #[error("container {id}: cannot checkpoint and leave it running: {reason}")]
    CheckpointUnsupported { id: String, reason: &'static str },
    #[error("{path}: cannot create the checkpoint directory: {source}")]
    CheckpointDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{bundle}: config.json names no cgroup (linux.cgroupsPath) to update")]
    NoCgroup { bundle: PathBuf },
    #[error("cannot update the sandbox cgroup: {0}")]
    Cgroup(#[from] skillbox_sandbox::cgroup::CgroupError),
    #[error("exec {exec_id}: bad process spec: {reason}")]
    ExecSpec { exec_id: String, reason: String },
    #[error("container {id} has no exec process {exec_id}")]
    NoExec { id: String, exec_id: String },
    #[error("exec {exec_id} already exists in container {id}")]
    ExecExists { id: String, exec_id: String },
    #[error("container {id} has no terminal")]
    NoTerminal { id: String },
    /// A pod operation refused (see `pod.rs`).
    #[error(transparent)]
    Pod(#[from] crate::pod::PodError),
    #[error("container {id} is {state:?}; cannot {action}")]
    State {
        id: String,
        state: Status,
        action: &'static str,
    },
}

impl From<SandboxError> for ContainerError {
    fn from(err: SandboxError) -> Self {
        ContainerError::Sandbox(Box::new(err))
    }
}

/// A stdio failure on `path` (a FIFO, a socket, the spec file).
pub(crate) fn stdio_error(path: impl Into<String>, source: std::io::Error) -> ContainerError {
    ContainerError::Stdio(StdioError::Open {
        path: path.into(),
        source,
    })
}
