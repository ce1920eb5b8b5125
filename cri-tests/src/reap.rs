//! The last resort when a runtime does not let a pod go: once containerd's
//! own calls have failed, the node clears what its pods left itself, so a
//! broken shim fails its test without leaving the machine dirty for the
//! next. Only things that name this node's directory or an abandoned pod's
//! ids are touched.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use skillbox_test_support::sandbox::processes;

use crate::leftovers::SKILLBOX_RUNSC_ROOT;
use crate::pod::cgroup_parent;

/// A pod whose teardown failed, with what identifies its traces.
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub sandbox_id: String,
    pub uid: String,
    pub netns_path: Option<String>,
    /// The shim's socket under /run/containerd/s.
    pub shim_socket: std::path::PathBuf,
}

/// SIGKILLs every process (but `keep`) whose arguments name `dir`: shims
/// (`-address <dir>/containerd.sock`) and runsc (`--bundle=<dir>/state/…`)
/// of this node. Returns their pids.
pub fn kill_processes_naming(dir: &Path, keep: u32) -> Vec<i32> {
    let dir = dir.display().to_string();
    let mut killed = Vec::new();
    for (pid, args) in processes() {
        if pid != keep as i32 && args.iter().any(|arg| arg.contains(&dir)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            killed.push(pid);
        }
    }
    if !killed.is_empty() {
        std::thread::sleep(Duration::from_millis(300));
    }
    killed
}

/// Unmounts (lazily, innermost first) every mount under `dir`.
pub fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.reverse();
    for point in points {
        let _ = Command::new("umount")
            .args(["-l", point])
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes what `pod` may have left once its processes are gone: runsc
/// state under the shim's root, the shim's socket, its CNI results and
/// network namespace, its cgroups.
pub fn clear(pod: &Abandoned) {
    let _ = std::fs::remove_file(&pod.shim_socket);
    for result in std::fs::read_dir("/var/lib/cni/results")
        .into_iter()
        .flatten()
        .flatten()
    {
        if result.file_name().to_string_lossy().contains(&pod.sandbox_id) {
            let _ = std::fs::remove_file(result.path());
        }
    }
    let root = Path::new(SKILLBOX_RUNSC_ROOT);
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains(&pod.sandbox_id) {
            continue;
        }
        if let Some(id) = name.split('_').next() {
            let _ = Command::new("timeout")
                .args(["--signal=KILL", "20", "runsc", "--root"])
                .arg(root)
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    if let Some(name) = pod
        .netns_path
        .as_deref()
        .and_then(|path| Path::new(path).file_name())
    {
        let _ = Command::new("ip")
            .arg("netns")
            .arg("delete")
            .arg(name)
            .stderr(Stdio::null())
            .status();
    }
    let parent = cgroup_parent(&pod.uid);
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        remove_cgroup_tree(&hierarchy.path().join(parent.trim_start_matches('/')));
    }
}

/// rmdir of a cgroup and its children, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            remove_cgroup_tree(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}
