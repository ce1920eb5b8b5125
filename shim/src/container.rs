//! One container run by the shim: a runsc sandbox created from a bundle
//! (compiled by skillbox or not) under its enforced policy, its stdio, its
//! exit status.
//!
//! Lifecycle: `create` (policy enforced on the bundle, then runsc create, then a thread reaps the sandbox pid,
//! whose exit status is the container's) → `start` → exit → `delete`.
//! Illegal transitions are `ContainerError::State` errors.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::cgroup::{CgroupFs, CgroupStats, LimitUpdate};
use crate::config::ShimConfig;
use crate::enforce::{prepare_bundle, EnforceError};
use crate::reaper;
use crate::runsc::{Runsc, RunscError};
pub use crate::stdio::StdioPaths;
use crate::stdio::{Logger, StdioError};

mod checkpoint;
pub use checkpoint::{checkpoint_request, CheckpointRequest};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The spec was refused, or could not be brought within its policy.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
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
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("container {id} is {state:?}; cannot {action}")]
    State {
        id: String,
        state: Status,
        action: &'static str,
    },
}

/// Where a container is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

/// How the container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
    /// The sandbox cgroup recorded an OOM kill.
    pub oom: bool,
}

#[derive(Debug)]
struct State {
    status: Status,
    exit: Option<Exit>,
}

#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
    pub pid: u32,
    runsc: Runsc,
    /// The host cgroup filesystem and the bundle's cgroupsPath.
    cgroup: Option<(CgroupFs, PathBuf)>,
    /// Ancestors of the cgroupsPath that did not exist before create
    /// (`/<namespace>` for `ctr run`), removed at delete when empty.
    created_cgroups: Vec<PathBuf>,
    state: Arc<Mutex<State>>,
    exited: watch::Receiver<Option<Exit>>,
    /// The `binary://` logger, waited for at delete (see stdio.rs).
    logger: Mutex<Option<Logger>>,
}

/// The host cgroup filesystem and the bundle's `linux.cgroupsPath`, if both
/// can be known.
fn cgroups_path(bundle: &Path) -> Option<(CgroupFs, PathBuf)> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    let path = spec["linux"]["cgroupsPath"].as_str()?;
    Some((CgroupFs::detect().ok()?, PathBuf::from(path)))
}

impl Container {
    /// Creates the sandbox for the bundle at `bundle` under the node config
    /// `config`. Blocking.
    pub fn create(
        id: &str,
        bundle: &Path,
        stdio: StdioPaths,
        runsc_root: &Path,
        config: &ShimConfig,
        namespace: &str,
    ) -> Result<Container, ContainerError> {
        // The spec is rewritten (or refused) before runsc reads it, and the
        // runsc flags are the shim's, never the bundle's.
        let prepared = prepare_bundle(id, bundle, config)?;
        let runsc = Runsc::new(&config.node.runsc.binary, runsc_root, prepared.runsc_flags);
        let created_cgroups = cgroups_path(bundle)
            .map(|(fs, path)| fs.missing_ancestors(&path))
            .unwrap_or_default();
        let pid_file = bundle.join("init.pid");
        // On any failure below, dropping the logger kills it.
        let opened = stdio.open(id, namespace)?;
        let mut logger = opened.logger;
        if let Err(err) = runsc.create(bundle, id, &pid_file, opened.streams) {
            // runsc wrote why to the container's stderr: let the logger keep it.
            if let Some(logger) = logger.take() {
                logger.finish();
            }
            return Err(err.into());
        }
        let pid_text = std::fs::read_to_string(&pid_file).map_err(|err| ContainerError::PidFile {
            path: pid_file.clone(),
            reason: err.to_string(),
        })?;
        let pid: u32 = pid_text.trim().parse().map_err(|_| ContainerError::PidFile {
            path: pid_file.clone(),
            reason: format!("{:?} is not a pid", pid_text.trim()),
        })?;

        let state = Arc::new(Mutex::new(State {
            status: Status::Created,
            exit: None,
        }));
        let (sender, exited) = watch::channel(None);
        let reaped_state = Arc::clone(&state);
        let cgroup = cgroups_path(bundle);
        let reaped_cgroup = cgroup.clone();
        std::thread::spawn(move || {
            let status = reaper::wait_exit(pid as i32);
            // runsc removes the cgroup only at delete: its OOM count is
            // still there when the sandbox has just died.
            let oom = reaped_cgroup
                .map(|(fs, path)| fs.stats(&path).oom_kills > 0)
                .unwrap_or(false);
            let exit = Exit {
                status,
                at: SystemTime::now(),
                oom,
            };
            let mut state = reaped_state.lock().unwrap_or_else(|e| e.into_inner());
            state.status = Status::Stopped;
            state.exit = Some(exit);
            let _ = sender.send(Some(exit));
        });
        Ok(Container {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            stdio,
            pid,
            runsc,
            cgroup,
            created_cgroups,
            state,
            exited,
            logger: Mutex::new(logger),
        })
    }

    pub fn status(&self) -> (Status, Option<Exit>) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.status, state.exit)
    }

    /// Starts the container's process. Blocking.
    pub fn start(&self) -> Result<(), ContainerError> {
        match self.status().0 {
            Status::Created => {}
            other => {
                return Err(ContainerError::State {
                    id: self.id.clone(),
                    state: other,
                    action: "start",
                })
            }
        }
        self.runsc.start(&self.id)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.status == Status::Created {
            state.status = Status::Running;
        }
        Ok(())
    }

    /// Freezes (`pause`) or thaws (`resume`) every process of the container.
    /// Blocking.
    pub fn set_paused(&self, paused: bool) -> Result<(), ContainerError> {
        let (from, to, action) = if paused {
            (Status::Running, Status::Paused, "pause")
        } else {
            (Status::Paused, Status::Running, "resume")
        };
        let current = self.status().0;
        if current != from {
            return Err(ContainerError::State {
                id: self.id.clone(),
                state: current,
                action,
            });
        }
        if paused {
            self.runsc.pause(&self.id)?;
        } else {
            self.runsc.resume(&self.id)?;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.status == from {
            state.status = to;
        }
        Ok(())
    }

    /// What the sandbox cgroup has recorded (all zeros if it is unknown).
    pub fn stats(&self) -> CgroupStats {
        self.cgroup
            .as_ref()
            .map(|(fs, path)| fs.stats(path))
            .unwrap_or_default()
    }

    /// The container's processes (sandbox pids). Blocking.
    pub fn pids(&self) -> Result<Vec<u32>, ContainerError> {
        Ok(self.runsc.pids(&self.id)?)
    }

    /// Changes the sandbox cgroup's limits. Blocking.
    pub fn update(&self, update: &LimitUpdate) -> Result<(), ContainerError> {
        let Some((fs, path)) = &self.cgroup else {
            return Err(ContainerError::NoCgroup {
                bundle: self.bundle.clone(),
            });
        };
        Ok(fs.set_limits(path, update)?)
    }

    /// Waits for the container to exit.
    pub async fn wait(&self) -> Exit {
        let mut exited = self.exited.clone();
        let exit = exited
            .wait_for(Option::is_some)
            .await
            .map(|exit| *exit)
            .ok()
            .flatten();
        // The sender lives until the exit is recorded, so this is set.
        exit.unwrap_or(Exit {
            status: 255,
            at: SystemTime::now(),
            oom: false,
        })
    }

    /// Sends `signal` to the container (all its processes with `all`). A
    /// container that already stopped is not an error. Blocking.
    pub fn kill(&self, signal: u32, all: bool) -> Result<(), ContainerError> {
        match self.runsc.kill_with(&self.id, signal as i32, all) {
            Err(_) if self.status().0 == Status::Stopped => Ok(()),
            other => other.map(|_| ()).map_err(ContainerError::from),
        }
    }

    /// Removes the sandbox. A running container is killed first. Blocking.
    pub fn delete(&self) -> Result<Option<Exit>, ContainerError> {
        if self.status().0 != Status::Stopped {
            let _ = self.runsc.kill(&self.id, nix::sys::signal::SIGKILL as i32);
        }
        // Reap the helpers only once the sandbox pid has been collected, so
        // that the reaper thread gets the container's status.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.status().0 != Status::Stopped && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        reaper::reap_orphans(Duration::from_secs(2));
        if let Err(err) = self.runsc.delete_force(&self.id) {
            tracing::warn!(%err, id = %self.id, "runsc delete failed");
        }
        if let Some((fs, _)) = &self.cgroup {
            fs.remove_if_empty(&self.created_cgroups);
        }
        // The sandbox is gone, and with it the last write end of the
        // logger's pipes: it drains them and exits.
        let logger = self.logger.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(logger) = logger {
            let end = logger.finish();
            tracing::info!(id = %self.id, ?end, "binary logger finished");
        }
        Ok(self.status().1)
    }
}
