//! The seam between the containerd task service and what runs a container
//! (as runwasi's `Instance`): the task service translates ttrpc calls and
//! publishes events; everything it asks of a container is here. `Container`
//! runs a real runsc sandbox; the task service's unit tests use a fake.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::protos::types::mount::Mount;
use skillbox_sandbox::cgroup::{CgroupStats, LimitUpdate};
use skillbox_sandbox::BundleSpec;

use crate::config::ShimConfig;
use crate::container::{Container, ContainerError, Exit, Status};
use crate::stdio::StdioPaths;

/// What Create asks for.
#[derive(Debug, Clone)]
pub struct CreateRequest<'a> {
    pub id: &'a str,
    /// The bundle's spec, loaded once (its directory is the bundle).
    pub spec: BundleSpec,
    pub stdio: StdioPaths,
    pub terminal: bool,
    /// The image root's mounts (empty when the bundle has its own root).
    pub rootfs: &'a [Mount],
    pub runsc_root: &'a Path,
    pub config: &'a ShimConfig,
    /// The containerd namespace.
    pub namespace: &'a str,
}

/// A process of a container as State reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessView {
    pub status: Status,
    pub exit: Option<Exit>,
    pub pid: u32,
    pub stdio: StdioPaths,
}

/// One container of the shim. Blocking methods are called on the blocking
/// pool; `exec_id` empty means the init process.
#[async_trait]
pub trait Instance: Send + Sync + Sized + 'static {
    /// Creates a container with its own sandbox.
    fn create(request: &CreateRequest<'_>) -> Result<Self, ContainerError>;
    /// Creates a container that joins the running sandbox of `sandbox`.
    fn create_member(request: &CreateRequest<'_>, sandbox: &Self) -> Result<Self, ContainerError>;

    fn id(&self) -> &str;
    fn bundle(&self) -> &Path;
    /// The init process's pid.
    fn pid(&self) -> u32;
    /// The id of the pod sandbox this container joined, if any.
    fn sandbox_id(&self) -> Option<&str>;

    /// The init process (`exec_id` empty) or an exec.
    fn process(&self, exec_id: &str) -> Result<ProcessView, ContainerError>;
    fn start(&self) -> Result<(), ContainerError>;
    /// The policy's wall-clock limit, counted from Start, if it has one.
    fn deadline(&self) -> Option<Duration>;
    /// Ends the container because its deadline passed; its exit reports
    /// the timeout.
    fn expire(&self) -> Result<(), ContainerError>;
    /// Waits for the init process (`exec_id` empty) or an exec to exit.
    async fn wait(&self, exec_id: &str) -> Result<Exit, ContainerError>;
    fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), ContainerError>;
    /// Removes the container's sandbox (or leaves its pod's); the exit, if
    /// it had one.
    fn delete(&self) -> Result<Option<Exit>, ContainerError>;

    fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioPaths,
        terminal: bool,
        spec: &[u8],
    ) -> Result<(), ContainerError>;
    /// Starts an exec; its pid.
    fn start_exec(&self, exec_id: &str) -> Result<u32, ContainerError>;
    /// Forgets an exited exec; its pid and exit.
    fn delete_exec(&self, exec_id: &str) -> Result<(u32, Option<Exit>), ContainerError>;

    fn set_paused(&self, paused: bool) -> Result<(), ContainerError>;
    fn stats(&self) -> CgroupStats;
    fn pids(&self) -> Result<Vec<u32>, ContainerError>;
    fn update(&self, update: &LimitUpdate) -> Result<(), ContainerError>;
    fn checkpoint(&self, image_path: &Path, exit: bool) -> Result<(), ContainerError>;
    fn resize(&self, exec_id: &str, width: u32, height: u32) -> Result<(), ContainerError>;
    fn close_stdin(&self, exec_id: &str) -> Result<(), ContainerError>;
}

/// Mounts the image root, runs `create`, and unmounts it again when the
/// sandbox could not be created.
fn with_rootfs(
    request: &CreateRequest<'_>,
    create: impl FnOnce() -> Result<Container, ContainerError>,
) -> Result<Container, ContainerError> {
    let bundle = request.spec.bundle();
    crate::rootfs::mount(bundle, request.rootfs)?;
    create().inspect_err(|_| {
        if let Err(undo) = crate::rootfs::unmount(bundle) {
            tracing::warn!(%undo, "image root left mounted");
        }
    })
}

#[async_trait]
impl Instance for Container {
    fn create(request: &CreateRequest<'_>) -> Result<Self, ContainerError> {
        with_rootfs(request, || {
            Container::create(
                request.id,
                request.spec.clone(),
                request.stdio.clone(),
                request.terminal,
                request.runsc_root,
                request.config,
                request.namespace,
            )
        })
    }

    fn create_member(request: &CreateRequest<'_>, sandbox: &Self) -> Result<Self, ContainerError> {
        with_rootfs(request, || {
            Container::create_member(
                request.id,
                request.spec.clone(),
                request.stdio.clone(),
                sandbox,
                request.config,
                request.namespace,
            )
        })
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn bundle(&self) -> &Path {
        &self.bundle
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn sandbox_id(&self) -> Option<&str> {
        Container::sandbox_id(self)
    }

    fn process(&self, exec_id: &str) -> Result<ProcessView, ContainerError> {
        if exec_id.is_empty() {
            let (status, exit) = self.status();
            return Ok(ProcessView {
                status,
                exit,
                pid: self.pid,
                stdio: self.stdio.clone(),
            });
        }
        let exec = self.exec(exec_id)?;
        let (status, exit) = exec.status();
        Ok(ProcessView {
            status,
            exit,
            pid: exec.pid(),
            stdio: exec.stdio.clone(),
        })
    }

    fn start(&self) -> Result<(), ContainerError> {
        Container::start(self)
    }

    fn deadline(&self) -> Option<Duration> {
        Container::deadline(self)
    }

    fn expire(&self) -> Result<(), ContainerError> {
        Container::expire(self)
    }

    async fn wait(&self, exec_id: &str) -> Result<Exit, ContainerError> {
        match exec_id {
            "" => Ok(Container::wait(self).await),
            exec_id => Ok(self.exec(exec_id)?.wait().await),
        }
    }

    fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), ContainerError> {
        match exec_id {
            "" => Container::kill(self, signal, all),
            exec_id => self.kill_exec(exec_id, signal),
        }
    }

    fn delete(&self) -> Result<Option<Exit>, ContainerError> {
        let exit = Container::delete(self);
        // After the sandbox (and its gofer) are gone.
        if let Err(err) = crate::rootfs::unmount(&self.bundle) {
            tracing::warn!(%err, "image root left mounted");
        }
        exit
    }

    fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioPaths,
        terminal: bool,
        spec: &[u8],
    ) -> Result<(), ContainerError> {
        Container::add_exec(self, exec_id, stdio, terminal, spec).map(|_| ())
    }

    fn start_exec(&self, exec_id: &str) -> Result<u32, ContainerError> {
        Container::start_exec(self, exec_id)
    }

    fn delete_exec(&self, exec_id: &str) -> Result<(u32, Option<Exit>), ContainerError> {
        Container::delete_exec(self, exec_id)
    }

    fn set_paused(&self, paused: bool) -> Result<(), ContainerError> {
        Container::set_paused(self, paused)
    }

    fn stats(&self) -> CgroupStats {
        Container::stats(self)
    }

    fn pids(&self) -> Result<Vec<u32>, ContainerError> {
        Container::pids(self)
    }

    fn update(&self, update: &LimitUpdate) -> Result<(), ContainerError> {
        Container::update(self, update)
    }

    fn checkpoint(&self, image_path: &Path, exit: bool) -> Result<(), ContainerError> {
        Container::checkpoint(self, image_path, exit)
    }

    fn resize(&self, exec_id: &str, width: u32, height: u32) -> Result<(), ContainerError> {
        Container::resize(self, exec_id, width, height)
    }

    fn close_stdin(&self, exec_id: &str) -> Result<(), ContainerError> {
        Container::close_stdin(self, exec_id)
    }
}
