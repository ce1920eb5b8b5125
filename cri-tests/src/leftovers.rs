//! What a removed pod may leave on the host, looked for by the pod's own
//! ids so that pods of parallel tests do not count: runsc and runc state,
//! processes, the shim's socket, cgroups, the CNI network namespace and
//! results, nftables tables and mounts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use skillbox_test_support::sandbox::processes;

use crate::netns::NetNs;
use crate::pod::cgroup_parent;

/// What identifies one pod's traces on the host, taken before teardown.
#[derive(Debug, Clone)]
pub struct PodTraces {
    pub uid: String,
    pub sandbox_id: String,
    pub container_ids: Vec<String>,
    pub netns_path: Option<String>,
    /// The shim's socket under /run/containerd/s ([`crate::Node::shim_socket`]).
    pub shim_socket: PathBuf,
}

impl PodTraces {
    fn ids(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.sandbox_id).chain(&self.container_ids)
    }
}

/// Where the shim keeps runsc's state for CRI pods.
pub const SKILLBOX_RUNSC_ROOT: &str = "/run/skillbox/shim/k8s.io";
/// Where containerd's runc shim keeps runc's state for CRI pods.
pub const RUNC_ROOT: &str = "/run/containerd/runc/k8s.io";

/// Waits up to `limit` for every trace of `pod` to be gone; returns what is
/// still there.
pub fn wait_gone(pod: &PodTraces, netns: &NetNs, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = find(pod, netns);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What is left of `pod` now.
pub fn find(pod: &PodTraces, netns: &NetNs) -> Vec<String> {
    let mut left = Vec::new();
    for id in pod.ids() {
        for root in [SKILLBOX_RUNSC_ROOT, RUNC_ROOT] {
            let state = Path::new(root).join(id);
            if state.exists() {
                left.push(format!("state {}", state.display()));
            }
        }
    }
    for (pid, args) in processes() {
        if pod
            .ids()
            .any(|id| args.iter().any(|arg| arg.contains(id.as_str())))
        {
            left.push(format!("process {pid}: {}", args.join(" ")));
        }
    }
    for cgroup in cgroups_named(pod) {
        left.push(format!("cgroup {}", cgroup.display()));
    }
    if pod.shim_socket.exists() {
        left.push(format!("shim socket {}", pod.shim_socket.display()));
    }
    if let Some(path) = pod.netns_path.as_deref().filter(|path| Path::new(path).exists()) {
        left.push(format!("network namespace {path}"));
    }
    for result in std::fs::read_dir("/var/lib/cni/results")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = result.file_name().to_string_lossy().into_owned();
        if name.contains(pod.sandbox_id.as_str()) {
            left.push(format!("CNI result /var/lib/cni/results/{name}"));
        }
    }
    let tables: Vec<String> = pod
        .ids()
        .map(|id| skillbox_egress::rules::table_name(id))
        .collect();
    for (place, output) in [
        ("host", Command::new("nft").args(["list", "tables"]).output()),
        (
            "harness netns",
            netns.command(&["nft", "list", "tables"]).output(),
        ),
    ] {
        let listed = output
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default();
        for table in &tables {
            if listed
                .lines()
                .any(|line| line.split_whitespace().last() == Some(table.as_str()))
            {
                left.push(format!("nft table {table} in the {place}"));
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        if pod.ids().any(|id| line.contains(id.as_str())) || line.contains(&pod.uid) {
            left.push(format!("mount {line}"));
        }
    }
    left
}

/// Cgroups named after the pod (its kubelet parent) or one of its ids, in
/// any hierarchy, up to four levels deep.
fn cgroups_named(pod: &PodTraces) -> Vec<PathBuf> {
    let parent = cgroup_parent(&pod.uid);
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = hierarchy.path().join(parent.trim_start_matches('/'));
        if path.exists() {
            found.push(path);
        }
        walk(&hierarchy.path(), 4, &mut |dir| {
            let name = dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            if pod.ids().any(|id| name.contains(id.as_str())) {
                found.push(dir.to_owned());
            }
        });
    }
    found
}

fn walk(dir: &Path, depth: usize, visit: &mut dyn FnMut(&Path)) {
    if depth == 0 {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            let path = entry.path();
            visit(&path);
            walk(&path, depth - 1, visit);
        }
    }
}
