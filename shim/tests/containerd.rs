//! The shim under a real, private containerd (Debian's 1.6.20): compiled
//! skill bundles run through `ctr run --runtime io.containerd.skillbox.v1
//! --config <bundle>/config.json`, and nothing is left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-skillbox-v1");
const RUNTIME: &str = "io.containerd.skillbox.v1";

/// The busybox base, with containerd's prerequisites checked first.
fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        for (program, package) in [("containerd", "containerd"), ("ctr", "containerd")] {
            common::require(program, package);
        }
        common::busybox_rootfs()
    })
}

/// A containerd with its own config, root, state and sockets in a temp dir,
/// started from a neutral directory, stopped on drop.
struct Containerd {
    dir: tempfile::TempDir,
    process: Child,
}

impl Containerd {
    fn start() -> Containerd {
        busybox_rootfs();
        let dir = tempfile::Builder::new()
            .prefix("skillbox-ctrd.")
            .tempdir()
            .unwrap();
        let path = dir.path();
        let bin = path.join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(SHIM, bin.join("containerd-shim-skillbox-v1")).unwrap();
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{0}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
            path.display()
        );
        std::fs::write(path.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(path.join("containerd.log")).unwrap();
        let process = Command::new("containerd")
            .arg("--config")
            .arg(path.join("config.toml"))
            // containerd looks for shims in its cwd before PATH.
            .current_dir("/")
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let containerd = Containerd { dir, process };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr run [extra…] --runtime io.containerd.skillbox.v1 --config <config> <id>`.
    fn run_bundle(&self, namespace: &str, config: &Path, id: &str, extra: &[&str]) -> Output {
        let config = config.to_str().unwrap();
        let args: Vec<&str> = std::iter::once("run")
            .chain(extra.iter().copied())
            .chain(["--runtime", RUNTIME, "--config", config, id])
            .collect();
        self.ctr(namespace, &args)
    }

    fn ctr(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.process.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = self.process.wait();
    }
}

/// Compiles a busybox skill whose entrypoint is `sh -c script` into a bundle.
fn compile_skill(dir: &Path, name: &str, script: &str) -> PathBuf {
    let escaped = script.replace('\'', "''");
    compile_skill_md(dir, name, &format!("  entrypoint: [sh, -c, '{escaped}']\n"))
}

/// Compiles a skill (cgroup `/skillbox-test-<name>`) once containerd's
/// prerequisites are checked.
fn compile_skill_md(dir: &Path, name: &str, policy: &str) -> PathBuf {
    busybox_rootfs();
    common::compile_skill(dir, name, policy)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Nothing of container `id` in `namespace` remains: no container, no runsc
/// state, no shim or runsc process, no cgroup.
fn assert_nothing_left(containerd: &Containerd, namespace: &str, id: &str, cgroup: &str) {
    let listed = text(
        &containerd
            .ctr(namespace, &["containers", "list", "--quiet"])
            .stdout,
    );
    assert!(
        !listed.lines().any(|line| line == id),
        "container {id} still listed"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let runsc_root = Path::new("/run/skillbox/shim").join(namespace);
        // Each test uses its own namespace, so its runsc root must be gone.
        let state: Vec<_> = match std::fs::read_dir(&runsc_root) {
            Ok(entries) => std::iter::once(runsc_root.clone())
                .chain(entries.filter_map(Result::ok).map(|e| e.path()))
                .collect(),
            Err(_) => Vec::new(),
        };
        let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .filter_map(Result::ok)
            .map(|hierarchy| hierarchy.path().join(cgroup.trim_start_matches('/')))
            .filter(|path| path.exists())
            .collect();
        let processes = Command::new("pgrep")
            .args(["-f", &format!("-namespace {namespace} .*-id {id}")])
            .output()
            .unwrap();
        let shims = text(&processes.stdout);
        if state.is_empty() && cgroups.is_empty() && shims.trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: runsc state {state:?}, cgroups {cgroups:?}, shim processes {shims:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn compiled_skills_run_through_containerd_with_their_status() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-status";

    let hello = compile_skill(
        work.path(),
        "hello",
        "echo hello from $(id -u); echo to-stderr >&2",
    );
    let config = hello.join("config.json");
    let out = containerd.run_bundle(namespace, &config, "hello-1", &["--rm"]);
    assert!(
        out.status.success(),
        "ctr run failed: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    assert_eq!(text(&out.stdout), "hello from 65534\n");
    assert!(text(&out.stderr).contains("to-stderr"), "{}", text(&out.stderr));
    assert_nothing_left(&containerd, namespace, "hello-1", "/skillbox-test-hello");

    let failing = compile_skill(work.path(), "three", "exit 3");
    let config = failing.join("config.json");
    let out = containerd.run_bundle(namespace, &config, "three-1", &["--rm"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_nothing_left(&containerd, namespace, "three-1", "/skillbox-test-three");
}

#[test]
fn bundles_without_a_compiled_policy_are_refused() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-refuse";
    let bundle = compile_skill(work.path(), "plain", "echo should-not-run");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    spec.as_object_mut().unwrap().remove("annotations");
    let config = work.path().join("plain.json");
    std::fs::write(&config, spec.to_string()).unwrap();
    let out = containerd.run_bundle(namespace, &config, "plain-1", &["--rm"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(!text(&out.stdout).contains("should-not-run"));
    assert!(
        stderr.contains("not a skillbox bundle")
            && stderr.contains("io.skillbox.policy")
            && stderr.contains("failed precondition"),
        "{stderr}"
    );
    assert_nothing_left(&containerd, namespace, "plain-1", "/skillbox-test-plain");
}

/// `ctr events` running in the background, collecting into a file.
struct EventWatch {
    process: Child,
    log: PathBuf,
}

impl EventWatch {
    fn start(containerd: &Containerd, dir: &Path) -> EventWatch {
        let log = dir.join("events.txt");
        let process = Command::new("ctr")
            .arg("--address")
            .arg(containerd.socket())
            .arg("events")
            .current_dir("/")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Give the subscription time to reach containerd.
        std::thread::sleep(Duration::from_millis(300));
        EventWatch { process, log }
    }

    /// Stops watching; returns the task topics seen in `namespace`, in
    /// order, and the whole log.
    fn topics(mut self, namespace: &str) -> (Vec<String>, String) {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.process.kill();
        let _ = self.process.wait();
        let log = std::fs::read_to_string(&self.log).unwrap();
        let topics = log
            .lines()
            .filter(|line| line.contains(&format!(" {namespace} /tasks/")))
            .filter_map(|line| line.split_whitespace().find(|word| word.starts_with("/tasks/")))
            .map(str::to_owned)
            .collect();
        (topics, log)
    }
}

/// The status column of `ctr task ls` for `id`.
fn task_status(containerd: &Containerd, namespace: &str, id: &str) -> String {
    let out = text(&containerd.ctr(namespace, &["tasks", "list"]).stdout);
    out.lines()
        .find(|line| line.split_whitespace().next() == Some(id))
        .and_then(|line| line.split_whitespace().nth(2))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn pids_pause_resume_kill_and_events_reach_containerd() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-events";
    let events = EventWatch::start(&containerd, work.path());

    let bundle = compile_skill(work.path(), "sleeper", "sleep 30");
    let config = bundle.join("config.json");
    let id = "sleeper-1";
    let out = containerd.run_bundle(namespace, &config, id, &["-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(task_status(&containerd, namespace, id), "RUNNING");
    // Pids lists the sandbox's processes: the skill's `sleep` is its pid 1.
    let ps = text(&containerd.ctr(namespace, &["tasks", "ps", id]).stdout);
    assert!(
        ps.lines()
            .skip(1)
            .any(|line| line.split_whitespace().next() == Some("1")),
        "{ps}"
    );
    assert!(containerd
        .ctr(namespace, &["tasks", "pause", id])
        .status
        .success());
    assert_eq!(task_status(&containerd, namespace, id), "PAUSED");
    assert!(containerd
        .ctr(namespace, &["tasks", "resume", id])
        .status
        .success());
    assert_eq!(task_status(&containerd, namespace, id), "RUNNING");
    kill_and_remove(&containerd, namespace, id);
    let (topics, log) = events.topics(namespace);
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{log}"
    );
    assert!(log.contains("\"exit_status\":137"), "{log}");
    assert_nothing_left(&containerd, namespace, id, "/skillbox-test-sleeper");
}

#[test]
fn out_of_memory_reports_task_oom_then_exit_137() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-oom";
    let events = EventWatch::start(&containerd, work.path());
    let bundle = compile_skill_md(
        work.path(),
        "hog",
        "  entrypoint: [sh, -c, 'dd if=/dev/zero of=/dev/null bs=300M count=1; echo survived']\n  resources: { memory: 64Mi }\n",
    );
    let config = bundle.join("config.json");
    let out = containerd.run_bundle(namespace, &config, "hog-1", &["--rm"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("survived"));
    let (topics, log) = events.topics(namespace);
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/oom",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{log}"
    );
    assert_nothing_left(&containerd, namespace, "hog-1", "/skillbox-test-hog");
}

/// SIGKILLs task `id`, waits until containerd sees it stopped, and deletes
/// the task and the container.
fn kill_and_remove(containerd: &Containerd, namespace: &str, id: &str) {
    let kill = containerd.ctr(namespace, &["tasks", "kill", "--signal", "SIGKILL", id]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while task_status(containerd, namespace, id) != "STOPPED" {
        assert!(Instant::now() < deadline, "task {id} never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    for args in [["tasks", "delete", id], ["containers", "delete", id]] {
        let out = containerd.ctr(namespace, &args);
        assert!(out.status.success(), "ctr {args:?}: {}", text(&out.stderr));
    }
}

/// The value of `metric` in `ctr task metrics` output.
fn metric(output: &str, metric: &str) -> u64 {
    output
        .lines()
        .find(|line| line.split_whitespace().next() == Some(metric))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {metric} in:\n{output}"))
}

#[test]
fn stats_are_the_sandbox_cgroups_real_figures() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-stats";
    let bundle = compile_skill_md(
        work.path(),
        "spinner",
        "  entrypoint: [sh, -c, 'while :; do :; done']\n  resources: { memory: 128Mi, cpus: 0.5, pids: 16 }\n",
    );
    let config = bundle.join("config.json");
    let id = "spinner-1";
    let out = containerd.run_bundle(namespace, &config, id, &["-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(1500));
    let out = containerd.ctr(namespace, &["tasks", "metrics", id]);
    let metrics = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(metric(&metrics, "cpuacct.usage") > 100_000_000, "{metrics}");
    assert!(metric(&metrics, "memory.usage_in_bytes") > 1 << 20, "{metrics}");
    assert_eq!(metric(&metrics, "memory.limit_in_bytes"), 128 << 20, "{metrics}");
    assert!(metric(&metrics, "pids.current") > 0, "{metrics}");
    // The sandbox cgroup's budget: 256 + 32 per process of the skill's quota.
    assert_eq!(metric(&metrics, "pids.limit"), 256 + 32 * 16, "{metrics}");
    kill_and_remove(&containerd, namespace, id);
    assert_nothing_left(&containerd, namespace, id, "/skillbox-test-spinner");
}

#[test]
fn file_log_uri_receives_stdout_and_stderr() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-logs";
    let bundle = compile_skill(
        work.path(),
        "logger",
        "echo to-stdout; echo to-stderr >&2; exit 3",
    );
    let config = bundle.join("config.json");
    let log = work.path().join("logger.log");
    let uri = format!("file://{}", log.display());
    let out = containerd.run_bundle(namespace, &config, "logger-1", &["--rm", "--log-uri", &uri]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("to-stdout"),
        "output went to ctr, not the log"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("to-stdout\n") && logged.contains("to-stderr\n"),
        "{logged}"
    );
    assert_nothing_left(&containerd, namespace, "logger-1", "/skillbox-test-logger");
}

#[test]
fn the_config_path_from_runtime_options_is_honoured() {
    use std::os::unix::fs::PermissionsExt;

    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-config";
    let bundle = compile_skill(work.path(), "configured", "echo configured");
    let config = bundle.join("config.json");

    // A bad config refuses the task and names the file and the field.
    let bad = work.path().join("bad.toml");
    std::fs::write(&bad, "[runsc]\nbinray = \"runsc\"\n").unwrap();
    let out = containerd.run_bundle(
        namespace,
        &config,
        "configured-1",
        &["--rm", "--runtime-config-path", bad.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.toml: runsc.binray: unknown field `binray`"),
        "{stderr}"
    );
    assert_nothing_left(
        &containerd,
        namespace,
        "configured-1",
        "/skillbox-test-configured",
    );

    // A good one is used: its [runsc] binary is a wrapper that leaves a mark.
    let marker = work.path().join("wrapper-ran");
    let wrapper = work.path().join("runsc-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec runsc \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let good = work.path().join("good.toml");
    std::fs::write(&good, format!("[runsc]\nbinary = \"{}\"\n", wrapper.display())).unwrap();
    let out = containerd.run_bundle(
        namespace,
        &config,
        "configured-2",
        &["--rm", "--runtime-config-path", good.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "configured\n");
    let calls = std::fs::read_to_string(&marker).unwrap();
    assert!(calls.contains("create") && calls.contains("start"), "{calls}");
    assert_nothing_left(
        &containerd,
        namespace,
        "configured-2",
        "/skillbox-test-configured",
    );
}
