//! The teardown record: one versioned JSON file per sandbox naming
//! everything on the host that its runtime made for it, written before each
//! thing is made. A runtime that dies (a SIGKILLed `skillbox run`, a killed
//! shim) leaves the record, and whoever finds it — the shim's `delete`
//! subcommand, `skillbox gc` — removes what it names with
//! [`TeardownRecord::remove`]. A runtime that ends normally removes the
//! things itself and then the record.
//!
//! Removal, in order, each step done even when an earlier one failed:
//! 1. `runsc kill --all <id> 9` and `runsc delete --force <id>` when runsc
//!    still has state for the container;
//! 2. SIGKILL to every process left whose arguments name both the runsc
//!    root and the bundle (the sandbox, gofer and their stubs, when runsc
//!    could not take them);
//! 3. the cgroups skillbox created (the sandbox's own after killing what is
//!    left in it, its ancestors once empty);
//! 4. the egress session's network namespace, veth, NAT and nftables tables;
//! 5. the audit monitor's socket and session file;
//! 6. the filesystems the runtime mounted for it (detached);
//! 7. the runtime's own directory, if it names one; then the record.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runsc_config::RunscFlags;
use serde::{Deserialize, Serialize};
use skillbox_egress::session::SessionRecord;

use crate::cgroup::CgroupFs;
use crate::runsc::Runsc;

/// The record's file name, in the sandbox's bundle (shim) or state
/// directory (`skillbox run`).
pub const RECORD_FILE: &str = "skillbox-sandbox.json";
/// The format written; a record of another version is refused.
pub const RECORD_VERSION: u32 = 1;
/// How long processes get to disappear after SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: cannot read the teardown record: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a teardown record: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: teardown record version {found}, this skillbox reads version {RECORD_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: cannot write the teardown record: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether removal looks for the sandbox's processes (steps 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessScan {
    /// runsc's state and any process left are removed.
    Kill,
    /// The runtime saw runsc delete the sandbox: nothing to look for.
    Skip,
}

/// The process that owns a sandbox: a pid and its start time, so that a
/// reused pid is not mistaken for the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub pid: u32,
    /// Clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start_time: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the owner still runs.
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

/// Field 22 of `/proc/<pid>/stat` (after the parenthesised command name,
/// which may itself hold spaces and parentheses).
fn start_time(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &text[text.rfind(')')? + 1..];
    // Fields 3.. follow the name: field 22 is the 20th of them.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// How to reach the sandbox's runsc state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunscRecord {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub flags: RunscFlags,
    pub bundle: PathBuf,
}

impl RunscRecord {
    /// How to reach the state of `runsc`'s container of `bundle`.
    pub fn of(runsc: &Runsc, bundle: &Path) -> RunscRecord {
        RunscRecord {
            binary: runsc.binary().to_owned(),
            root: runsc.root().to_owned(),
            flags: runsc.flags().clone(),
            bundle: bundle.to_owned(),
        }
    }
}

/// The audit monitor's files (see `skillbox_audit::execution`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub socket_dir: PathBuf,
    pub key: String,
}

/// Everything one sandbox holds on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeardownRecord {
    pub version: u32,
    /// runsc's container id.
    pub id: String,
    pub owner: Owner,
    pub runsc: RunscRecord,
    /// Cgroups skillbox created, outermost first, the sandbox's own last;
    /// relative to each hierarchy's root.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// Parent cgroups runsc creates for a pod member's `cgroupsPath`,
    /// removed once empty.
    #[serde(default)]
    pub runsc_cgroups: Vec<PathBuf>,
    #[serde(default)]
    pub egress: Option<SessionRecord>,
    #[serde(default)]
    pub audit: Option<AuditRecord>,
    /// Filesystems the runtime mounted for the sandbox (`skillbox run`'s
    /// output scratch), detached before the directory is removed.
    #[serde(default)]
    pub mounts: Vec<PathBuf>,
    /// A directory the runtime made for the sandbox (`skillbox run`'s
    /// execution directory), removed last.
    #[serde(default)]
    pub directory: Option<PathBuf>,
}

impl TeardownRecord {
    /// A record of nothing made yet, owned by this process.
    pub fn new(id: &str, runsc: RunscRecord) -> TeardownRecord {
        TeardownRecord {
            version: RECORD_VERSION,
            id: id.to_owned(),
            owner: Owner::current(),
            runsc,
            cgroups: Vec::new(),
            runsc_cgroups: Vec::new(),
            egress: None,
            audit: None,
            mounts: Vec::new(),
            directory: None,
        }
    }

    pub fn load(path: &Path) -> Result<TeardownRecord, RecordError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecordError::Read {
            path: path.to_owned(),
            source,
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|source| RecordError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let found = value["version"].as_u64().unwrap_or(0) as u32;
        if found != RECORD_VERSION {
            return Err(RecordError::Version {
                path: path.to_owned(),
                found,
            });
        }
        serde_json::from_value(value).map_err(|source| RecordError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the record to `path` atomically (a temporary file renamed
    /// over it), so that a reader never sees half a record.
    pub fn save(&self, path: &Path) -> Result<(), RecordError> {
        let error = |source| RecordError::Write {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(self).expect("a teardown record serializes");
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, text).map_err(error)?;
        std::fs::rename(&partial, path).map_err(error)
    }

    /// Removes everything the record names (see the module doc), then the
    /// record at `path`. Returns what could not be removed, one message
    /// each; the record stays when something could not.
    pub fn remove(&self, path: &Path) -> Vec<String> {
        self.remove_with(path, ProcessScan::Kill)
    }

    /// [`remove`](Self::remove), skipping steps 1 and 2 when the runtime
    /// knows runsc already deleted the sandbox.
    pub fn remove_with(&self, path: &Path, scan: ProcessScan) -> Vec<String> {
        let mut failures = Vec::new();
        if scan == ProcessScan::Kill {
            self.remove_sandbox(&mut failures);
        }
        if let Ok(fs) = CgroupFs::detect() {
            if let Err(err) = fs.remove_created(&self.cgroups) {
                failures.push(err.to_string());
            }
            fs.remove_if_empty(&self.runsc_cgroups);
        }
        if let Some(egress) = &self.egress {
            if let Err(err) = egress.remove() {
                failures.push(format!("cannot remove the sandbox's network: {err}"));
            }
        }
        if let Some(audit) = &self.audit {
            skillbox_audit::execution::remove_files(&audit.socket_dir, &audit.key);
        }
        for mount in &self.mounts {
            match nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH) {
                // Not mounted (any more), or gone.
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(err) => failures.push(format!("{}: cannot unmount: {err}", mount.display())),
            }
        }
        if let Some(directory) = &self.directory {
            match std::fs::remove_dir_all(directory) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    failures.push(format!("{}: cannot remove: {err}", directory.display()))
                }
                _ => {}
            }
        }
        if failures.is_empty() {
            let _ = std::fs::remove_file(path);
        }
        failures
    }

    /// Steps 1 and 2: runsc's state and every process of the sandbox.
    fn remove_sandbox(&self, failures: &mut Vec<String>) {
        // After a normal end runsc holds no state: skip its ~100 ms of calls.
        if self.has_runsc_state() {
            let runsc = Runsc::new(&self.runsc.binary, &self.runsc.root, self.runsc.flags.clone());
            // Fails when the sandbox is already gone; delete still removes state.
            let _ = runsc.kill_with(&self.id, Signal::SIGKILL as i32, true);
            if let Err(err) = runsc.delete_force(&self.id) {
                tracing::warn!(id = %self.id, %err, "runsc delete failed; killing what is left");
            }
        }
        let left = self.processes();
        if left.is_empty() {
            return;
        }
        tracing::warn!(id = %self.id, ?left, "killing the sandbox processes runsc left");
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + GRACE;
        while !self.processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self.processes();
        if !left.is_empty() {
            failures.push(format!("{}: processes {left:?} survived SIGKILL", self.id));
        }
    }

    /// Whether runsc has a state file for the container in its root
    /// (`<id>_sandbox:<sandbox id>.state`, see docs/runsc-facts.md).
    fn has_runsc_state(&self) -> bool {
        let prefix = format!("{}_sandbox:", self.id);
        std::fs::read_dir(&self.runsc.root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or(false)
    }

    /// The live processes whose arguments name both the runsc root and the
    /// bundle: this sandbox's runsc, sandbox, gofer and stubs.
    fn processes(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let root = self.runsc.root.display().to_string();
        let bundle = self.runsc.bundle.display().to_string();
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let args = arguments(*pid);
                args.iter().any(|arg| names_path(arg, &root))
                    && args.iter().any(|arg| names_path(arg, &bundle))
            })
            .collect()
    }
}

/// Whether `arg` names `path` or something under it, also as `--flag=path`.
fn names_path(arg: &str, path: &str) -> bool {
    arg.match_indices(path).any(|(at, _)| {
        let rest = &arg[at + path.len()..];
        let before = &arg[..at];
        (rest.is_empty() || rest.starts_with('/')) && (before.is_empty() || before.ends_with('='))
    })
}

fn arguments(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|byte| *byte == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path) -> TeardownRecord {
        TeardownRecord::new(
            "hello-1",
            RunscRecord {
                binary: "runsc".into(),
                root: dir.join("runsc"),
                flags: RunscFlags::default(),
                bundle: dir.join("bundle"),
            },
        )
    }

    #[test]
    fn paths_are_matched_whole() {
        let root = "/run/skillbox/shim/ns-a";
        assert!(names_path("--root=/run/skillbox/shim/ns-a", root));
        assert!(names_path("/run/skillbox/shim/ns-a/x.state", root));
        assert!(!names_path("--root=/run/skillbox/shim/ns-ab", root));
        assert!(!names_path("/other/run/skillbox/shim/ns-a", root));
    }

    #[test]
    fn this_process_is_a_live_owner_and_a_changed_start_time_is_not() {
        let owner = Owner::current();
        assert!(owner.start_time > 0 && owner.is_alive());
        let reused = Owner {
            start_time: owner.start_time + 1,
            ..owner
        };
        assert!(!reused.is_alive());
    }

    #[test]
    fn a_record_reads_back_and_other_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_FILE);
        let mut written = record(dir.path());
        written.cgroups = vec!["skillbox".into(), "skillbox/hello-1".into()];
        written.audit = Some(AuditRecord {
            socket_dir: dir.path().to_owned(),
            key: "run-1".into(),
        });
        written.save(&path).unwrap();
        assert_eq!(TeardownRecord::load(&path).unwrap(), written);
        assert!(!path.with_extension("json.partial").exists());

        let mut value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        value["version"] = 2.into();
        std::fs::write(&path, value.to_string()).unwrap();
        let err = TeardownRecord::load(&path).unwrap_err().to_string();
        assert!(err.contains("teardown record version 2"), "{err}");
    }

    #[test]
    fn removing_takes_the_audit_files_and_the_directory_then_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_FILE);
        let execution = dir.path().join("execution");
        std::fs::create_dir_all(execution.join("bundle")).unwrap();
        std::fs::write(dir.path().join("run-1.sock"), "").unwrap();
        std::fs::write(dir.path().join("run-1.json"), "").unwrap();
        let mut written = record(dir.path());
        written.audit = Some(AuditRecord {
            socket_dir: dir.path().to_owned(),
            key: "run-1".into(),
        });
        written.directory = Some(execution.clone());
        written.save(&path).unwrap();
        assert_eq!(written.remove(&path), Vec::<String>::new());
        assert!(!execution.exists() && !path.exists());
        assert!(!dir.path().join("run-1.sock").exists() && !dir.path().join("run-1.json").exists());
    }
}
