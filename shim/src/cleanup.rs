//! What the shim's `delete` subcommand removes after its shim died. containerd
//! runs it with the bundle as working directory whenever a shim disconnects
//! (SIGKILLed, crashed, or at the end of a normal run), and after a restart
//! for each shim it cannot reach again.
//!
//! Steps, in order, each one done even when an earlier one failed:
//! 1. `runsc kill --all <id> 9` and `runsc delete --force <id>` with the
//!    bundle's own runsc flags (its `io.skillbox.runsc.flags` annotation) and
//!    the runsc binary that runs the sandbox (`/proc/<sandbox>/exe`), else the
//!    node config's.
//! 2. SIGKILL every process left whose arguments name both this runsc root and
//!    this bundle: the sandbox, the gofer and their stubs, when runsc could not
//!    (its state is gone or broken).
//! 3. Unmount the image root at `<bundle>/rootfs`, if one is mounted.
//! 4. Remove the bundle's `cgroupsPath` directories that are left and empty.
//! 5. Remove the namespace's runsc root when it is empty.
//! 6. Remove the egress session's network namespace, veth, NAT and
//!    nftables tables named in the bundle's record (`egress.rs`), if the
//!    shim died before its Delete removed them.
//! 7. Remove the audit monitor's socket and session file (the events it
//!    had received are in the log already; the rest died with the shim).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use skillbox_sandbox::cgroup::CgroupFs;
use crate::config;
use skillbox_sandbox::runsc::Runsc;

/// How long processes and cgroups get to disappear after SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// The container whose shim died.
#[derive(Debug, Clone)]
pub struct DeadShim {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    pub runsc_root: PathBuf,
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

impl DeadShim {
    /// Whether the process `pid` is a runsc process of this container.
    fn is_ours(&self, pid: i32) -> bool {
        let args = arguments(pid);
        let root = self.runsc_root.display().to_string();
        let bundle = self.bundle.display().to_string();
        args.iter().any(|arg| names_path(arg, &root)) && args.iter().any(|arg| names_path(arg, &bundle))
    }

    /// The runsc processes of this container still alive.
    fn processes(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| self.is_ours(*pid))
            .collect()
    }

    /// The sandbox pid runsc wrote for the shim, if that process still is
    /// this container's sandbox.
    fn sandbox_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.bundle.join("init.pid")).ok()?;
        let pid = text.trim().parse().ok()?;
        self.is_ours(pid).then_some(pid)
    }

    /// Whether runsc has a state file for the container in the root
    /// (`<id>_sandbox:<sandbox id>.state`, see docs/runsc-facts.md).
    fn has_runsc_state(&self) -> bool {
        let prefix = format!("{}_sandbox:", self.id);
        std::fs::read_dir(&self.runsc_root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or(false)
    }

    /// The runsc that runs the sandbox, else the node config's, else PATH's.
    fn runsc_binary(&self) -> PathBuf {
        self.sandbox_pid()
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .or_else(|| config::load(None).ok().map(|config| config.node.runsc.binary))
            .unwrap_or_else(|| PathBuf::from("runsc"))
    }

    /// Removes everything of the container; returns what could not be
    /// removed, one message each (empty when nothing is left).
    pub fn clean_up(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let flags = policy_compiler::bundle::read_annotations(&self.bundle)
            .map(|compiled| compiled.runsc_flags)
            .unwrap_or_default();
        // After a normal run the shim has deleted the container already and
        // runsc holds no state for it: skip runsc (~100 ms of calls).
        let deleted = if self.has_runsc_state() {
            let runsc = Runsc::new(self.runsc_binary(), &self.runsc_root, flags);
            // Fails when the sandbox is already gone; delete still removes state.
            let _ = runsc.kill(&self.id, Signal::SIGKILL as i32);
            runsc.delete_force(&self.id).map(|_| ())
        } else {
            Ok(())
        };

        let left = self.processes();
        if !left.is_empty() {
            tracing::warn!(id = %self.id, ?left, ?deleted, "killing the sandbox runsc left");
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
        if let Err(err) = crate::rootfs::unmount(&self.bundle) {
            failures.push(err.to_string());
        }
        if let Err(err) = self.remove_cgroup() {
            failures.push(err);
        }
        // The parents runsc created (`/<namespace>` for `ctr run`), once empty.
        if let Ok(fs) = CgroupFs::detect() {
            fs.remove_if_empty(&CgroupFs::recorded_created(&self.bundle));
        }
        // Other containers of the namespace may still use the root.
        let _ = std::fs::remove_dir(&self.runsc_root);
        if let Err(err) = crate::egress::clean_up_recorded(&self.bundle) {
            failures.push(err);
        }
        crate::audit::clean_up(&self.namespace, &self.id);
        failures
    }

    /// Removes the bundle's cgroup directories that runsc left, once empty.
    /// Processes are never killed by cgroup: another container may share it.
    fn remove_cgroup(&self) -> Result<(), String> {
        let Some(relative) = cgroups_path(&self.bundle) else {
            return Ok(());
        };
        let Ok(fs) = CgroupFs::detect() else {
            return Ok(());
        };
        let dirs: Vec<PathBuf> = match &fs {
            CgroupFs::V1 { hierarchies } => hierarchies.iter().map(|h| h.join(&relative)).collect(),
            CgroupFs::V2 { root } => vec![root.join(&relative)],
        };
        let deadline = Instant::now() + GRACE;
        for dir in dirs {
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => break,
                    // EBUSY: the last tasks are still leaving.
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Err(err) => return Err(format!("{}: cannot remove: {err}", dir.display())),
                }
            }
        }
        Ok(())
    }
}

/// The bundle's `linux.cgroupsPath`, relative to a hierarchy's root.
fn cgroups_path(bundle: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    let path = spec["linux"]["cgroupsPath"].as_str()?.trim_start_matches('/');
    // A relative or `slice:prefix:name` (systemd) path is not one we made.
    (!path.is_empty() && !path.contains(':') && !path.split('/').any(|part| part == ".."))
        .then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_matched_whole() {
        let root = "/run/skillbox/shim/ns-a";
        assert!(names_path("--root=/run/skillbox/shim/ns-a", root));
        assert!(names_path("/run/skillbox/shim/ns-a/x.state", root));
        assert!(!names_path("--root=/run/skillbox/shim/ns-ab", root));
        assert!(!names_path("/other/run/skillbox/shim/ns-a", root));
    }

    #[test]
    fn only_plain_absolute_cgroup_paths_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str| {
            std::fs::write(
                dir.path().join("config.json"),
                format!("{{\"linux\":{{\"cgroupsPath\":\"{path}\"}}}}"),
            )
            .unwrap()
        };
        write("/skillbox-test-x");
        assert_eq!(cgroups_path(dir.path()), Some(PathBuf::from("skillbox-test-x")));
        write("system.slice:skillbox:x");
        assert_eq!(cgroups_path(dir.path()), None);
        write("/a/../../etc");
        assert_eq!(cgroups_path(dir.path()), None);
        write("");
        assert_eq!(cgroups_path(dir.path()), None);
    }
}
