//! The shim binary's lifecycle (`containerd_shim::asynchronous::Shim`):
//! start a shim server per container, clean up in the `delete` subcommand.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use containerd_shim::asynchronous::util::write_str_to_file;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, Error, Flags, StartOpts};

use crate::cleanup::DeadShim;
use crate::events::ContainerdEvents;
use crate::task::TaskService;

/// The runtime type containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.skillbox.v1";
/// Parent of the per-namespace runsc state roots.
pub const RUNSC_STATE_DIR: &str = "/run/skillbox/shim";

pub struct SkillboxShim {
    id: String,
    namespace: String,
    /// `-bundle`, given to the `delete` subcommand (else the cwd).
    bundle: PathBuf,
    runsc_root: PathBuf,
    exit: Arc<ExitSignal>,
    /// The task service's events, flushed before the shim exits.
    events: OnceLock<Arc<ContainerdEvents>>,
}

/// How long an exiting shim waits for its last events (TaskExit,
/// TaskDelete) to reach containerd.
const EVENT_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The shim needs its own reaping: the sandbox pid's exit status is the
/// container's, so the library's catch-all reaper must stay off. The shim
/// stays a child subreaper so that the sandbox is re-parented to it.
pub fn config() -> Config {
    Config {
        no_reaper: true,
        ..Default::default()
    }
}

#[async_trait]
impl Shim for SkillboxShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        SkillboxShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle: PathBuf::from(&args.bundle),
            // One runsc root per containerd namespace, as containerd keeps
            // container ids unique per namespace only.
            runsc_root: PathBuf::from(RUNSC_STATE_DIR).join(&args.namespace),
            exit: Arc::new(ExitSignal::default()),
            events: OnceLock::new(),
        }
    }

    /// Starts (or finds) the shim server for the container: a pod's
    /// application container (CRI annotations, see `pod.rs`) is grouped
    /// under its sandbox's id, so the crate's `spawn` computes the socket of
    /// the pod's shim; the shim process it starts finds that socket serving
    /// and exits, and the pod's shim gets the Create. Every other container
    /// gets its own shim.
    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // The working directory is the container's bundle.
        let role = skillbox_sandbox::BundleSpec::pod_role_of(Path::new("."));
        let grouping = role.grouping(&opts.id).to_owned();
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // containerd reads the address back from the bundle; without it the
        // socket is left behind after the shim exits.
        write_str_to_file("address", &address).await?;
        Ok(address)
    }

    /// The `delete` subcommand, run by containerd after the shim is gone
    /// (cwd = the bundle): remove whatever the dead shim left (see
    /// `cleanup.rs`).
    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        let bundle = if self.bundle.as_os_str().is_empty() {
            std::env::current_dir().map_err(|err| Error::Other(format!("no bundle directory: {err}")))?
        } else {
            self.bundle.clone()
        };
        let dead = DeadShim {
            id: self.id.clone(),
            namespace: self.namespace.clone(),
            bundle,
            runsc_root: self.runsc_root.clone(),
        };
        let failures = tokio::task::spawn_blocking(move || dead.clean_up())
            .await
            .map_err(|err| Error::Other(format!("cleanup failed: {err}")))?;
        // containerd logs what the subcommand writes to stderr.
        for failure in &failures {
            eprintln!("skillbox cleanup: {failure}");
        }
        // The dead shim took the real status with it: report a kill.
        Ok(DeleteResponse {
            exit_status: 137,
            exited_at: MessageField::some(
                containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp::now(),
            ),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
        if let Some(events) = self.events.get() {
            if !events.flush(EVENT_FLUSH_TIMEOUT).await {
                tracing::warn!("exiting with events containerd has not received");
            }
        }
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let events = Arc::new(ContainerdEvents::new(publisher, &self.namespace));
        let _ = self.events.set(Arc::clone(&events));
        TaskService::new(&self.runsc_root, Arc::clone(&self.exit), events).with_namespace(&self.namespace)
    }
}
