//! `skillbox run` under test: one private state directory per run, the
//! JSON report, and the check that the run left nothing on the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::{require_sandbox_prerequisites, run_with_watchdog_signal, runsc_binary, Cli, Output};

/// Timing-sensitive tests (CPU share, timeouts) take this exclusively so that
/// other sandboxes of the same test binary do not compete for the 2 CPUs.
static TIMING: RwLock<()> = RwLock::new(());

enum TimingGuard {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// How long a single `skillbox run` may take before the test kills it.
const WATCHDOG: Duration = Duration::from_secs(120);

/// A finished `skillbox run`.
#[derive(Debug)]
pub struct RunResult {
    pub output: Output,
    /// The `--report` JSON, when skillbox wrote one.
    pub report: Option<serde_json::Value>,
}

impl RunResult {
    pub fn describe(&self) -> String {
        format!("{}\n--- report ---\n{:?}", self.output.describe(), self.report)
    }

    pub fn report(&self) -> &serde_json::Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("skillbox wrote no report\n{}", self.describe()))
    }

    /// An integer field of the report.
    pub fn report_u64(&self, key: &str) -> u64 {
        self.report()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("report field {key} is not an integer\n{}", self.describe()))
    }

    pub fn outcome(&self) -> &str {
        self.report()["outcome"].as_str().unwrap_or("<missing>")
    }

    /// Panics unless the skill exited 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.output.code, 0, "skill failed\n{}", self.describe());
        self
    }
}

/// Builder for one `skillbox run`.
pub struct SkillRun {
    skillbox: Cli,
    skill: PathBuf,
    rootfs: PathBuf,
    args: Vec<String>,
    /// Options of `skillbox run` itself, before the skill's arguments.
    options: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    node_config: Option<String>,
    exclusive: bool,
    /// A signal sent to the CLI after a delay.
    signal: Option<(Duration, &'static str)>,
    /// The pool asked for a pre-booted sandbox: its socket and state
    /// directory (`None`: `--no-pool`).
    pool: Option<(PathBuf, PathBuf)>,
}

impl SkillRun {
    /// `skillbox run` of the skill folder `skill` on the base `rootfs`.
    pub fn new(skillbox: Cli, skill: &Path, rootfs: &Path) -> SkillRun {
        SkillRun {
            skillbox,
            skill: skill.to_owned(),
            rootfs: rootfs.to_owned(),
            args: Vec::new(),
            options: Vec::new(),
            env: Vec::new(),
            node_config: None,
            exclusive: false,
            signal: None,
            pool: None,
        }
    }

    /// Ask `pool` for a pre-booted sandbox (and keep the run's state in the
    /// pool's state directory, as the pool requires).
    pub fn pool(mut self, pool: &crate::pool::TestPool) -> Self {
        self.pool = Some((pool.socket().to_owned(), pool.state_dir().to_owned()));
        self
    }

    /// Arguments after `--`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Options of `skillbox run` (`--input`, `--output`, …).
    pub fn options<S: AsRef<std::ffi::OsStr>>(mut self, options: &[S]) -> Self {
        self.options = options.iter().map(|o| o.as_ref().to_owned()).collect();
        self
    }

    /// A variable set in the CLI's (the invoking) environment.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Node config TOML, written to a file and passed with `--node-config`.
    pub fn node_config(mut self, toml: &str) -> Self {
        self.node_config = Some(toml.to_owned());
        self
    }

    /// Run with no other sandbox of this test binary running.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Sends `signal` (a name `kill` understands, e.g. "TERM") to the CLI
    /// `delay` after it starts.
    pub fn signal_after(mut self, delay: Duration, signal: &'static str) -> Self {
        self.signal = Some((delay, signal));
        self
    }

    /// Runs the skill, then asserts the host is clean.
    pub fn run(self) -> RunResult {
        require_sandbox_prerequisites();
        let _guard = if self.exclusive {
            TimingGuard::Exclusive(TIMING.write().unwrap_or_else(|e| e.into_inner()))
        } else {
            TimingGuard::Shared(TIMING.read().unwrap_or_else(|e| e.into_inner()))
        };
        let work = tempfile::Builder::new()
            .prefix("skillbox-run.")
            .tempdir()
            .unwrap();
        let state_dir = match &self.pool {
            Some((_, state_dir)) => state_dir.clone(),
            None => work.path().join("state"),
        };
        let report_path = work.path().join("report.json");
        let mut command = self.skillbox.command();
        command
            .arg("run")
            .arg(&self.skill)
            .arg("--base-rootfs")
            .arg(&self.rootfs)
            .arg("--report")
            .arg(&report_path)
            .env("SKILLBOX_STATE_DIR", &state_dir)
            .env_remove("SKILLBOX_BASE_ROOTFS")
            .env_remove("SKILLBOX_POOL");
        match &self.pool {
            Some((socket, _)) => command.arg("--pool").arg(socket),
            None => command.arg("--no-pool"),
        };
        if let Some(toml) = &self.node_config {
            let path = work.path().join("node.toml");
            std::fs::write(&path, toml).unwrap();
            command.arg("--node-config").arg(path);
        }
        command.args(&self.options);
        if !self.args.is_empty() {
            command.arg("--").args(&self.args);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let output = run_with_watchdog_signal(command, WATCHDOG, self.signal);
        let report = std::fs::read_to_string(&report_path).ok().map(|text| {
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("report is not JSON ({err}): {text}"))
        });
        let result = RunResult { output, report };
        let id = result
            .report
            .as_ref()
            .and_then(|r| r["execution_id"].as_str())
            .map(str::to_owned);
        assert_nothing_left(&state_dir, id.as_deref(), &result, self.pool.is_some());
        result
    }
}

/// Asserts that a finished run left no runsc state, execution directory,
/// cgroup or process behind. In a pool's state directory, which holds the
/// pool's other sandboxes, only this execution's are looked for.
fn assert_nothing_left(state_dir: &Path, id: Option<&str>, result: &RunResult, pooled: bool) {
    let context = || result.describe();
    // Every execution directory (bundle + runsc root) is removed.
    let leftovers: Vec<PathBuf> = std::fs::read_dir(state_dir)
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    let leftovers: Vec<PathBuf> = match (pooled, id) {
        (false, _) => leftovers,
        (true, Some(id)) => leftovers
            .into_iter()
            .filter(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(&format!("{id}.")))
            })
            .collect(),
        (true, None) => Vec::new(),
    };
    for runsc_root in leftovers
        .iter()
        .map(|dir| dir.join("runsc"))
        .filter(|root| root.is_dir())
    {
        let list = Command::new(runsc_binary())
            .arg("--root")
            .arg(&runsc_root)
            .args(["list", "--quiet"])
            .output()
            .expect("runsc list");
        let ids = String::from_utf8_lossy(&list.stdout);
        assert!(
            ids.trim().is_empty(),
            "runsc still lists containers {ids:?} in {}\n{}",
            runsc_root.display(),
            context()
        );
    }
    assert!(
        leftovers.is_empty(),
        "execution directories left behind: {leftovers:?}\n{}",
        context()
    );
    if let Some(id) = id {
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap() {
            let cgroup = hierarchy.unwrap().path().join("skillbox").join(id);
            assert!(
                !cgroup.exists(),
                "cgroup {} was left behind\n{}",
                cgroup.display(),
                context()
            );
        }
        let unified = Path::new("/sys/fs/cgroup/skillbox").join(id);
        assert!(
            !unified.exists(),
            "cgroup {} was left behind\n{}",
            unified.display(),
            context()
        );
    }
    // runsc processes carry the state root (and the id) in their argv. A
    // killed sandbox's processes may take a moment to be reaped.
    let needle = match (pooled, id) {
        (true, Some(id)) => id.to_owned(),
        (true, None) => return,
        (false, _) => state_dir.to_string_lossy().into_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let leftovers = processes_mentioning(&needle, id);
        if leftovers.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind: {leftovers:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every process but this one, with its arguments (zombies have none;
/// processes that end while being read are left out).
pub fn processes() -> Vec<(i32, Vec<String>)> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args = raw
                .split(|byte| *byte == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            Some((pid, args))
        })
        .collect()
}

/// `pid: cmdline` of every process whose command line mentions `needle` or `id`.
pub fn processes_mentioning(needle: &str, id: Option<&str>) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) || id.is_some_and(|id| cmdline.contains(id)) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}
