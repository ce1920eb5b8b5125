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
    #[error("{path} exists already: another sandbox owns it, and a cgroup is never shared")]
    Exists { path: PathBuf },
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

    /// Removes cgroups `created` (outermost first, the sandbox's own last):
    /// the sandbox's cgroup after killing what is left in it, then its
    /// ancestors once empty (another sandbox may still use one).
    pub fn remove_created(&self, created: &[PathBuf]) -> Result<(), CgroupError> {
        let Some((leaf, ancestors)) = created.split_last() else {
            return Ok(());
        };
        for root in self.roots() {
            remove_dir(&root.join(leaf))?;
        }
        self.remove_if_empty(ancestors);
        Ok(())
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

/// The sandbox's cgroup, which skillbox owns in every runtime: it creates
/// the cgroup (and any missing ancestor) with the limits written before
/// runsc starts, runsc joins it without taking ownership, so the cgroup
/// outlives the sandbox (its OOM count and CPU time stay readable), and
/// skillbox removes what it created at teardown.
#[derive(Debug)]
pub struct SandboxCgroup {
    fs: CgroupFs,
    /// Relative path, e.g. `skillbox/hello-1a2b`; also runsc's `cgroupsPath`.
    relative: PathBuf,
    /// What this created, outermost first; the last one is `relative`.
    created: Vec<PathBuf>,
}

impl SandboxCgroup {
    /// Creates cgroup `relative` with `limits` applied. A cgroup that
    /// exists already belongs to another sandbox: it is refused, never
    /// shared.
    pub fn create(fs: CgroupFs, relative: &Path, limits: &LimitUpdate) -> Result<Self, CgroupError> {
        let cgroup = SandboxCgroup::plan(fs, relative)?;
        cgroup.make(limits)?;
        Ok(cgroup)
    }

    /// What `create` would make, made by nothing yet: [`created`](Self::created)
    /// can be recorded before [`make`](Self::make). Refuses a cgroup that
    /// exists already.
    pub fn plan(fs: CgroupFs, relative: &Path) -> Result<Self, CgroupError> {
        let relative = relative.strip_prefix("/").unwrap_or(relative).to_owned();
        if let Some(dir) = fs
            .roots()
            .iter()
            .map(|root| root.join(&relative))
            .find(|dir| dir.exists())
        {
            return Err(CgroupError::Exists { path: dir });
        }
        let mut created = fs.missing_ancestors(&relative);
        created.push(relative.clone());
        Ok(SandboxCgroup {
            fs,
            relative,
            created,
        })
    }

    /// Makes the planned directories and writes `limits`. On error,
    /// dropping the cgroup removes whatever was made.
    pub fn make(&self, limits: &LimitUpdate) -> Result<(), CgroupError> {
        self.create_dirs()?;
        self.fs.set_limits(&self.relative, limits)
    }

    /// The path to give runsc as `linux.cgroupsPath`.
    pub fn cgroups_path(&self) -> String {
        format!("/{}", self.relative.display())
    }

    /// The cgroups this created, outermost first (for a teardown record).
    pub fn created(&self) -> &[PathBuf] {
        &self.created
    }

    fn create_dirs(&self) -> Result<(), CgroupError> {
        // A concurrent sandbox's teardown may remove a shared parent between
        // two mkdirs: try again from the top.
        let mut attempts = 3;
        loop {
            match self.create_dirs_once() {
                Err(CgroupError::Write { source, .. })
                    if source.kind() == ErrorKind::NotFound && attempts > 1 =>
                {
                    attempts -= 1;
                }
                other => return other,
            }
        }
    }

    fn create_dirs_once(&self) -> Result<(), CgroupError> {
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

    /// Changes the cgroup's limits.
    pub fn update(&self, update: &LimitUpdate) -> Result<(), CgroupError> {
        self.fs.set_limits(&self.relative, update)
    }

    /// Kills whatever is left in the cgroup and removes what this created.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.fs.remove_created(&self.created)
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        if let Err(err) = self.remove() {
            tracing::warn!(%err, "cgroup cleanup failed");
        }
    }
}

impl From<&CgroupLimits> for LimitUpdate {
    fn from(limits: &CgroupLimits) -> LimitUpdate {
        LimitUpdate {
            memory_bytes: Some(limits.memory_bytes),
            cpu: Some((limits.cpu_quota_us, limits.cpu_period_us)),
            pids: Some(limits.pids),
        }
    }
}

impl LimitUpdate {
    /// The limits an OCI spec's `linux.resources` sets (those it leaves
    /// out stay `None`).
    pub fn of_spec(spec: &serde_json::Value) -> LimitUpdate {
        let resources = &spec["linux"]["resources"];
        let quota = resources["cpu"]["quota"].as_i64().filter(|quota| *quota > 0);
        LimitUpdate {
            memory_bytes: resources["memory"]["limit"].as_i64().filter(|bytes| *bytes > 0),
            cpu: quota.map(|quota| (quota, resources["cpu"]["period"].as_u64().unwrap_or(100_000))),
            pids: resources["pids"]["limit"].as_i64().filter(|pids| *pids > 0),
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
        let cgroup =
            SandboxCgroup::create(fs.clone(), Path::new("/skillbox/x-1"), &(&limits).into()).unwrap();
        assert!(matches!(
            SandboxCgroup::create(fs, Path::new("skillbox/x-1"), &LimitUpdate::default()),
            Err(CgroupError::Exists { .. })
        ));
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
        assert_eq!(
            cgroup.created(),
            [PathBuf::from("skillbox"), PathBuf::from("skillbox/x-1")]
        );
    }

    #[test]
    fn limits_are_read_from_a_spec() {
        let spec = serde_json::json!({"linux": {"resources": {
            "memory": {"limit": 67108864},
            "cpu": {"quota": 50000, "period": 100000},
        }}});
        assert_eq!(
            LimitUpdate::of_spec(&spec),
            LimitUpdate {
                memory_bytes: Some(64 << 20),
                cpu: Some((50_000, 100_000)),
                pids: None,
            }
        );
        assert_eq!(
            LimitUpdate::of_spec(&serde_json::json!({})),
            LimitUpdate::default()
        );
    }
}
