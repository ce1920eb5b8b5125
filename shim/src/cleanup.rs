//! What the shim's `delete` subcommand removes after its shim died. containerd
//! runs it with the bundle as working directory whenever a shim disconnects
//! (SIGKILLed, crashed, or at the end of a normal run), and after a restart
//! for each shim it cannot reach again.
//!
//! The sandbox's teardown record in the bundle (`skillbox_sandbox::record`)
//! names everything the dead shim made — runsc state and processes, cgroups,
//! the egress session, the audit monitor's files — and removes it in its
//! fixed order. After a normal run the shim removed the record with the
//! sandbox, and nothing is left to do but what only the shim knows of: the
//! image root mounted in the bundle, and the namespace's runsc root once it
//! is empty.

use std::path::PathBuf;

use skillbox_sandbox::record::{TeardownRecord, RECORD_FILE};

/// The container whose shim died.
#[derive(Debug, Clone)]
pub struct DeadShim {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    pub runsc_root: PathBuf,
}

impl DeadShim {
    /// Removes everything of the container; returns what could not be
    /// removed, one message each (empty when nothing is left).
    pub fn clean_up(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let path = self.bundle.join(RECORD_FILE);
        if path.exists() {
            match TeardownRecord::load(&path) {
                Ok(record) => {
                    tracing::warn!(id = %self.id, namespace = %self.namespace, "removing what a dead shim left");
                    failures.extend(record.remove(&path));
                }
                Err(err) => failures.push(err.to_string()),
            }
        }
        // After the sandbox (and its gofer) are gone.
        if let Err(err) = crate::rootfs::unmount(&self.bundle) {
            failures.push(err.to_string());
        }
        // Other containers of the namespace may still use the root.
        let _ = std::fs::remove_dir(&self.runsc_root);
        failures
    }
}
