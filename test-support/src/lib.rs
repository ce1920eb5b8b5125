//! Shared harness of the integration tests: prerequisites, cached base root
//! filesystems, fixture skills, running the `skillbox` binary with a
//! watchdog, and checking that a run left nothing behind on the host.
//!
//! Sandbox tests need root, runsc, busybox-static and cgroups. They never
//! skip: a missing prerequisite is a panic naming it, so CI cannot go green
//! without actually exercising the sandbox.
//!
//! Paths come from where this crate and the running test binary are, never
//! from the test crate's own environment: cargo gives `CARGO_BIN_EXE_*` only
//! to the tests of the package that builds the binary, so those tests name
//! the CLI themselves ([`Cli`]).

pub mod attacks;
pub mod chart;
pub mod events;
pub mod fake_internet;
pub mod fake_sandbox;
pub mod pod;
pub mod pool;
pub mod postgres;
pub mod sandbox;
pub mod session;
mod skill;
pub mod topology;

pub use skill::{compile_bundle, compile_skill, field, with_policy, Skill};

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `skillbox` CLI under test. Cargo tells only the tests of the
/// `skillbox` package where it built the binary, so each of them names it:
/// `const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));`.
#[derive(Clone, Copy, Debug)]
pub struct Cli {
    binary: &'static str,
}

impl Cli {
    pub const fn new(binary: &'static str) -> Cli {
        Cli { binary }
    }

    /// The binary's path.
    pub fn path(self) -> &'static str {
        self.binary
    }

    /// A command running the binary, to add arguments to.
    pub fn command(self) -> Command {
        Command::new(self.binary)
    }

    /// `skillbox run` of `skill` on the busybox base with its audit log at
    /// `log`, as `command` (this binary, perhaps prefixed to run in a
    /// namespace) with those arguments added.
    pub fn audited_run(self, mut command: Command, skill: &Path, log: &Path) -> Command {
        command
            .arg("run")
            .arg("--base-rootfs")
            .arg(busybox_rootfs())
            .arg("--audit-log")
            .arg(log)
            .arg(skill);
        command
    }

    /// Runs `skillbox <args>` without a sandbox (compile, policy, …).
    pub fn run<I, S>(self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.args(args).env_remove("SKILLBOX_BASE_ROOTFS");
        run_with_watchdog(command, Duration::from_secs(60))
    }
}

/// The workspace root (the `skillbox` package), this crate's parent.
pub fn workspace_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives in the workspace root")
}

/// Cargo's target directory, found from the running test binary's path
/// (`<target>/<profile>/deps/<test>-<hash>`) so that `CARGO_TARGET_DIR` is
/// honoured.
pub fn target_dir() -> PathBuf {
    let test = std::env::current_exe().expect("the running test binary's path");
    test.parent()
        .filter(|deps| deps.ends_with("deps"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap_or_else(|| {
            panic!(
                "{} is not a test binary in <target>/<profile>/deps/",
                test.display()
            )
        })
        .to_owned()
}

pub fn example_dir(name: &str) -> PathBuf {
    workspace_dir().join("examples").join(name)
}

/// What a finished process did.
#[derive(Debug)]
pub struct Output {
    /// The exit code, or 128 + signal when the process was killed.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit code {} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion, killing it and panicking if it takes longer
/// than `limit`, so a hung CLI fails the test instead of hanging CI.
pub fn run_with_watchdog(command: Command, limit: Duration) -> Output {
    run_with_watchdog_signal(command, limit, None)
}

/// Like [`run_with_watchdog`], and sends `signal` (a name `kill` knows, e.g.
/// "TERM") to the child once it has run for the given delay.
pub fn run_with_watchdog_signal(
    mut command: Command,
    limit: Duration,
    mut signal: Option<(Duration, &str)>,
) -> Output {
    use std::os::unix::process::ExitStatusExt;
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some((_, name)) = signal.take_if(|(delay, _)| started.elapsed() >= *delay) {
            // try_wait has not reaped the child, so its pid cannot be reused yet.
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} still running after {limit:?}; killed it\n--- stdout ---\n{}--- stderr ---\n{}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        elapsed: started.elapsed(),
    }
}

/// Runs `argv`, panicking with its output unless it succeeds.
pub fn must(argv: &[&str]) -> String {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {argv:?}: {err}"));
    assert!(
        output.status.success(),
        "{argv:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The runsc binary the CLI will use.
pub fn runsc_binary() -> String {
    std::env::var("SKILLBOX_RUNSC").unwrap_or_else(|_| "runsc".to_owned())
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn command_works(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Where `program` is on `PATH`; panics, naming the Debian package to
/// install, when it is not there.
/// Every cgroup hierarchy's root directory: `/sys/fs/cgroup` itself (cgroup
/// v2) and each directory in it (v1 controllers, and v2's `unified` on a
/// hybrid host), for looking up or removing one cgroup path in all of them.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_owned()];
    let entries = std::fs::read_dir(root).into_iter().flatten().flatten();
    hierarchies.extend(entries.map(|entry| entry.path()).filter(|path| path.is_dir()));
    hierarchies
}

pub fn require(program: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("prerequisite missing: `{program}` (install Debian's {package})"))
}

/// Panics, naming what is missing, unless this host can run sandboxes.
pub fn require_sandbox_prerequisites() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let mut missing = Vec::new();
        if effective_uid() != Some(0) {
            missing.push(
                "root (skillbox run starts runsc and creates cgroups; run the tests as root)".to_owned(),
            );
        }
        let runsc = runsc_binary();
        if !command_works(&runsc, "--version") {
            missing.push(format!(
                "runsc (`{runsc} --version` failed; install gVisor's runsc or set SKILLBOX_RUNSC)"
            ));
        }
        if !Path::new("/bin/busybox").is_file() {
            missing.push("busybox-static (/bin/busybox is missing)".to_owned());
        }
        if !Path::new("/sys/fs/cgroup").is_dir() {
            missing.push("a cgroup filesystem at /sys/fs/cgroup".to_owned());
        }
        assert!(
            missing.is_empty(),
            "sandbox tests cannot run; missing prerequisites:\n  {}",
            missing.join("\n  ")
        );
    });
}

/// Runs one of the base-rootfs scripts in `examples/rootfs/`.
fn build_rootfs(script: &str, dir: &Path, limit: Duration) {
    let mut command = Command::new(workspace_dir().join("examples/rootfs").join(script));
    command.arg(dir);
    let output = run_with_watchdog(command, limit);
    assert!(
        output.code == 0 && dir.join(".complete").exists(),
        "{script} {} failed: {}",
        dir.display(),
        output.describe()
    );
}

/// The busybox base rootfs, built once into `target/skillbox-test/`. The
/// script builds into a temporary directory under a lock file and renames
/// it into place, so parallel test binaries never see a partial tree.
pub fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        require_sandbox_prerequisites();
        let dir = target_dir().join("skillbox-test/busybox-rootfs");
        build_rootfs("make-busybox-rootfs.sh", &dir, Duration::from_secs(120));
        dir
    })
}

/// The Debian bookworm + python3-minimal rootfs, cached in
/// `target/skillbox-cache/` (debootstrap takes ~30 s and needs the mirror).
pub fn python_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        require_sandbox_prerequisites();
        assert!(
            command_works("debootstrap", "--version"),
            "the python tests need debootstrap (apt-get install debootstrap)"
        );
        let dir = target_dir().join("skillbox-cache/debian-python3");
        build_rootfs("make-debian-python-rootfs.sh", &dir, Duration::from_secs(900));
        dir
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_this_workspace_and_the_target_directory_of_the_running_test() {
        assert!(workspace_dir().join("Cargo.toml").is_file());
        assert!(workspace_dir().join("examples/rootfs").is_dir());
        let target = target_dir();
        let test = std::env::current_exe().unwrap();
        assert_eq!(test.strip_prefix(&target).unwrap().components().count(), 3);
        let configured = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
        if let Some(configured) = configured.filter(|dir| dir.is_absolute()) {
            assert_eq!(target, configured);
        }
    }
}
