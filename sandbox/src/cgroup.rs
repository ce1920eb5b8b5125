//! The cgroup skillbox creates for one execution.
//!
//! skillbox creates the sandbox's cgroup itself (in every cgroup v1
//! hierarchy, or once under cgroup v2), writes the limits, and hands its path
//! to runsc as `cgroupsPath`. runsc joins a cgroup that already exists
//! without taking ownership, so the cgroup outlives the sandbox: skillbox can
//! then read the OOM kill count and CPU time, and removes it afterwards.
//! Paths are injected (`CgroupFs`) so that tests can use a plain directory.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use policy_compiler::oci::CgroupLimits;

/// The file in a bundle listing the parent cgroups runsc created for it.
pub const CREATED_CGROUPS_FILE: &str = "skillbox-created-cgroups";

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupFs {
    /// One mount point per v1 hierarchy (`/sys/fs/cgroup/memory`, …).
    V1 { hierarchies: Vec<PathBuf> },
    /// The unified v2 hierarchy.
    V2 { root: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup filesystem found in /proc/self/mountinfo")]
    NotMounted,
    #[error("cannot remove {path}: still busy after killing its processes")]
    Busy { path: PathBuf },
}

/// Limits to change; `None` leaves a limit as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitUpdate {
    pub memory_bytes: Option<i64>,
    /// CFS quota and period in microseconds.
    pub cpu: Option<(i64, u64)>,
    pub pids: Option<i64>,
}

/// What the cgroup recorded about the execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub oom_kills: u64,
    pub cpu_usage: Duration,
    pub memory_peak_bytes: u64,
    pub memory_usage_bytes: u64,
    /// 0 when unlimited.
    pub memory_limit_bytes: u64,
    /// Host tasks in the cgroup (gVisor's own threads included).
    pub pids: u64,
    /// 0 when unlimited.
    pub pids_limit: u64,
}

/// Finds the cgroup mounts in `/proc/self/mountinfo` text. v1 wins when both
/// exist (a hybrid host), because that is what runsc uses there.
pub fn parse_mountinfo(text: &str) -> Option<CgroupFs> {
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        match right.split(' ').next() {
            Some("cgroup") => v1.push(PathBuf::from(mount_point)),
            Some("cgroup2") if v2.is_none() => v2 = Some(PathBuf::from(mount_point)),
            _ => {}
        }
    }
    if !v1.is_empty() {
        v1.sort();
        return Some(CgroupFs::V1 { hierarchies: v1 });
    }
    v2.map(|root| CgroupFs::V2 { root })
}

impl CgroupFs {
    /// The directory of cgroup `relative` for `controller` (v1), or its
    /// unified directory (v2).
    pub fn controller_dir(&self, relative: &Path, controller: &str) -> Option<PathBuf> {
        let relative = relative.strip_prefix("/").unwrap_or(relative);
        match self {
            CgroupFs::V1 { hierarchies } => hierarchies
                .iter()
                .find(|h| {
                    h.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| name.split(',').any(|c| c == controller))
                })
                .map(|h| h.join(relative)),
            CgroupFs::V2 { root } => Some(root.join(relative)),
        }
    }

    /// What cgroup `relative` (a `cgroupsPath`) recorded; missing files read
    /// as zero, so a cgroup that is already gone reads as all zeros.
    pub fn stats(&self, relative: &Path) -> CgroupStats {
        let read = |controller: &str, file: &str| {
            self.controller_dir(relative, controller)
                .and_then(|dir| fs::read_to_string(dir.join(file)).ok())
        };
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok()).unwrap_or(0);
        let keyed = |text: Option<String>, key: &str| text.and_then(|t| keyed_value(&t, key)).unwrap_or(0);
        match self {
            CgroupFs::V1 { .. } => CgroupStats {
                oom_kills: keyed(read("memory", "memory.oom_control"), "oom_kill"),
                cpu_usage: Duration::from_nanos(number(read("cpuacct", "cpuacct.usage"))),
                memory_peak_bytes: number(read("memory", "memory.max_usage_in_bytes")),
                memory_usage_bytes: number(read("memory", "memory.usage_in_bytes")),
                memory_limit_bytes: number(read("memory", "memory.limit_in_bytes")),
                pids: number(read("pids", "pids.current")),
                pids_limit: number(read("pids", "pids.max")),
            },
            CgroupFs::V2 { .. } => CgroupStats {
                oom_kills: keyed(read("memory", "memory.events"), "oom_kill"),
                cpu_usage: Duration::from_micros(keyed(read("cpu", "cpu.stat"), "usage_usec")),
                memory_peak_bytes: number(read("memory", "memory.peak")),
                memory_usage_bytes: number(read("memory", "memory.current")),
                memory_limit_bytes: number(read("memory", "memory.max")),
                pids: number(read("pids", "pids.current")),
                pids_limit: number(read("pids", "pids.max")),
            },
        }
    }

    /// Writes the limits that are set in `update` to cgroup `relative`.
    pub fn set_limits(&self, relative: &Path, update: &LimitUpdate) -> Result<(), CgroupError> {
        let dir = |controller| self.controller_dir(relative, controller);
        if let (Some(bytes), Some(dir)) = (update.memory_bytes, dir("memory")) {
            match self {
                CgroupFs::V1 { .. } => {
                    // memory+swap must stay >= memory: raise it first when
                    // raising, lower it last when lowering.
                    let limit = dir.join("memory.limit_in_bytes");
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    let current: i64 = fs::read_to_string(&limit)
                        .ok()
                        .and_then(|text| text.trim().parse().ok())
                        .unwrap_or(i64::MAX);
                    let order: [&Path; 2] = if bytes > current {
                        [&memsw, &limit]
                    } else {
                        [&limit, &memsw]
                    };
                    for file in order {
                        if file == limit.as_path() || memsw.exists() {
                            write(file, bytes.to_string())?;
                        }
                    }
                }
                CgroupFs::V2 { .. } => {
                    write(&dir.join("memory.max"), bytes.to_string())?;
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, "0")?;
                    }
                }
            }
        }
        if let (Some((quota, period)), Some(dir)) = (update.cpu, dir("cpu")) {
            match self {
                CgroupFs::V1 { .. } => {
                    write(&dir.join("cpu.cfs_period_us"), period.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                }
                CgroupFs::V2 { .. } => write(&dir.join("cpu.max"), format!("{quota} {period}"))?,
            }
        }
        if let (Some(pids), Some(dir)) = (update.pids, dir("pids")) {
            write(&dir.join("pids.max"), pids.to_string())?;
        }
        Ok(())
    }

    fn roots(&self) -> Vec<&Path> {
        match self {
            CgroupFs::V1 { hierarchies } => hierarchies.iter().map(PathBuf::as_path).collect(),
            CgroupFs::V2 { root } => vec![root.as_path()],
        }
    }

    /// The ancestors of cgroup `relative` (a `cgroupsPath`) that exist in
    /// no hierarchy yet, outermost first: runsc creates them and removes
    /// only the leaf.
    pub fn missing_ancestors(&self, relative: &Path) -> Vec<PathBuf> {
        let relative = relative.strip_prefix("/").unwrap_or(relative);
        let mut missing: Vec<PathBuf> = relative
            .ancestors()
            .skip(1)
            .filter(|ancestor| !ancestor.as_os_str().is_empty())
            .filter(|ancestor| !self.roots().iter().any(|root| root.join(ancestor).exists()))
            .map(Path::to_owned)
            .collect();
        missing.reverse();
        missing
    }

    /// Records `relatives` (from `missing_ancestors`) in the bundle, so that
    /// the `delete` subcommand can remove them after a killed shim.
    pub fn record_created(bundle: &Path, relatives: &[PathBuf]) {
        let lines: Vec<String> = relatives.iter().map(|r| r.display().to_string()).collect();
        if let Err(err) = fs::write(bundle.join(CREATED_CGROUPS_FILE), lines.join("\n")) {
            tracing::warn!(%err, "cannot record the cgroups runsc will create");
        }
    }

    /// What `record_created` wrote in `bundle` (plain relative paths only).
    pub fn recorded_created(bundle: &Path) -> Vec<PathBuf> {
        let text = fs::read_to_string(bundle.join(CREATED_CGROUPS_FILE)).unwrap_or_default();
        text.lines()
            .map(PathBuf::from)
            .filter(|path| {
                !path.as_os_str().is_empty()
                    && path
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
            })
            .collect()
    }

    /// Removes cgroups `relatives` (outermost first, as `missing_ancestors`
    /// gives them) from every hierarchy, innermost first. `rmdir` of a cgroup
    /// with children or tasks fails, so one still in use stays.
    pub fn remove_if_empty(&self, relatives: &[PathBuf]) {
        for relative in relatives.iter().rev() {
            for root in self.roots() {
                let _ = fs::remove_dir(root.join(relative));
            }
        }
    }

    pub fn detect() -> Result<CgroupFs, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(|source| CgroupError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse_mountinfo(&text).ok_or(CgroupError::NotMounted)
    }
}

fn write(path: &Path, value: impl AsRef<[u8]>) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The value of `key` in a flat keyed file such as `memory.events`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Err(err) if err.kind() != ErrorKind::AlreadyExists => Err(CgroupError::Write {
            path: path.to_owned(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// A cgroup at `<hierarchy>/<relative>` in each hierarchy, removed by `remove`.
#[derive(Debug)]
pub struct ExecutionCgroup {
    fs: CgroupFs,
    /// Relative path, e.g. `skillbox/hello-1a2b`; also runsc's `cgroupsPath`.
    relative: PathBuf,
}

impl ExecutionCgroup {
    /// Creates `<parent>/<name>` with `limits` applied.
    pub fn create(
        fs: CgroupFs,
        parent: &str,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<Self, CgroupError> {
        let cgroup = ExecutionCgroup {
            fs,
            relative: Path::new(parent).join(name),
        };
        // On error, dropping `cgroup` removes whatever was created.
        cgroup.create_dirs()?;
        cgroup.apply(limits)?;
        Ok(cgroup)
    }

    /// The path to give runsc as `linux.cgroupsPath`.
    pub fn cgroups_path(&self) -> String {
        format!("/{}", self.relative.display())
    }

    /// The `cgroups_path` that `create(_, parent, name, _)` will have.
    pub fn cgroups_path_for(parent: &str, name: &str) -> String {
        format!("/{parent}/{name}")
    }

    fn dirs(&self) -> Vec<PathBuf> {
        match &self.fs {
            CgroupFs::V1 { hierarchies } => hierarchies.iter().map(|h| h.join(&self.relative)).collect(),
            CgroupFs::V2 { root } => vec![root.join(&self.relative)],
        }
    }

    fn create_dirs(&self) -> Result<(), CgroupError> {
        match &self.fs {
            CgroupFs::V1 { hierarchies } => {
                for hierarchy in hierarchies {
                    let mut dir = hierarchy.clone();
                    for part in self.relative.components() {
                        let parent = dir.clone();
                        dir.push(part);
                        mkdir(&dir)?;
                        // A new cpuset is empty and nothing could join it.
                        for file in ["cpuset.cpus", "cpuset.mems"] {
                            if parent.join(file).exists() && read(&dir.join(file))?.trim().is_empty() {
                                write(&dir.join(file), read(&parent.join(file))?.trim())?;
                            }
                        }
                    }
                }
            }
            CgroupFs::V2 { root } => {
                let mut dir = root.clone();
                for part in self.relative.components() {
                    // Delegate the controllers we limit to the next level down.
                    let control = dir.join("cgroup.subtree_control");
                    if control.exists() {
                        write(&control, "+cpu +memory +pids")?;
                    }
                    dir.push(part);
                    mkdir(&dir)?;
                }
            }
        }
        Ok(())
    }

    /// Reads what the cgroup recorded; missing files read as zero.
    pub fn stats(&self) -> CgroupStats {
        self.fs.stats(&self.relative)
    }

    fn apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        self.fs.set_limits(
            &self.relative,
            &LimitUpdate {
                memory_bytes: Some(limits.memory_bytes),
                cpu: Some((limits.cpu_quota_us, limits.cpu_period_us)),
                pids: Some(limits.pids),
            },
        )
    }

    /// Kills whatever is left in the cgroup and removes its directories (and
    /// the shared parent when this was its last child).
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            remove_dir(&dir)?;
            if let Some(parent) = dir.parent() {
                // Another execution may still use the parent: that is fine.
                let _ = fs::remove_dir(parent);
            }
        }
        Ok(())
    }
}

impl Drop for ExecutionCgroup {
    fn drop(&mut self) {
        if let Err(err) = self.remove() {
            tracing::warn!(%err, "cgroup cleanup failed");
        }
    }
}

fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            // EBUSY: processes are still leaving after the kill; retry.
            Err(err) if err.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) => {
                if Instant::now() >= deadline {
                    return Err(CgroupError::Busy { path: dir.to_owned() });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn hybrid_hosts_use_v1() {
        let fs = parse_mountinfo(HYBRID).unwrap();
        assert_eq!(
            fs,
            CgroupFs::V1 {
                hierarchies: vec![
                    "/sys/fs/cgroup/cpu,cpuacct".into(),
                    "/sys/fs/cgroup/memory".into()
                ]
            }
        );
    }

    #[test]
    fn unified_hosts_use_v2() {
        let text = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(text),
            Some(CgroupFs::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert_eq!(parse_mountinfo("1 2 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn parents_runsc_creates_are_found_and_removed_when_empty() {
        let root = tempfile::tempdir().unwrap();
        let (memory, pids) = (root.path().join("memory"), root.path().join("pids"));
        fs::create_dir_all(memory.join("kept")).unwrap();
        fs::create_dir_all(&pids).unwrap();
        let fs = CgroupFs::V1 {
            hierarchies: vec![memory.clone(), pids.clone()],
        };
        assert_eq!(
            fs.missing_ancestors(Path::new("/ns/sub/c1")),
            [PathBuf::from("ns"), PathBuf::from("ns/sub")]
        );
        assert_eq!(fs.missing_ancestors(Path::new("/kept/c1")), Vec::<PathBuf>::new());
        for hierarchy in [&memory, &pids] {
            fs::create_dir_all(hierarchy.join("ns/sub")).unwrap();
        }
        // Another container still under ns/other keeps ns in memory.
        fs::create_dir_all(memory.join("ns/other")).unwrap();
        fs.remove_if_empty(&fs.missing_ancestors(Path::new("/absent/x")));
        fs.remove_if_empty(&[PathBuf::from("ns"), PathBuf::from("ns/sub")]);
        assert!(!memory.join("ns/sub").exists() && memory.join("ns/other").exists());
        assert!(!pids.join("ns").exists());
    }

    #[test]
    fn limits_and_stats_on_a_fake_v1_tree() {
        let root = tempfile::tempdir().unwrap();
        let memory = root.path().join("memory");
        let cpu = root.path().join("cpu,cpuacct");
        fs::create_dir_all(&memory).unwrap();
        fs::create_dir_all(&cpu).unwrap();
        let fs = CgroupFs::V1 {
            hierarchies: vec![cpu.clone(), memory.clone()],
        };
        let limits = CgroupLimits {
            memory_bytes: 64 << 20,
            cpu_quota_us: 50_000,
            cpu_period_us: 100_000,
            pids: 704,
        };
        let cgroup = ExecutionCgroup::create(fs, "skillbox", "x-1", &limits).unwrap();
        assert_eq!(cgroup.cgroups_path(), "/skillbox/x-1");
        let dir = memory.join("skillbox/x-1");
        assert_eq!(
            fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap(),
            "67108864"
        );
        assert_eq!(
            fs::read_to_string(cpu.join("skillbox/x-1/cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        fs::write(dir.join("memory.oom_control"), "oom_kill_disable 0\noom_kill 2\n").unwrap();
        fs::write(cpu.join("skillbox/x-1/cpuacct.usage"), "1500000000\n").unwrap();
        let stats = cgroup.stats();
        assert_eq!(stats.oom_kills, 2);
        assert_eq!(stats.cpu_usage, Duration::from_millis(1500));
    }
}
