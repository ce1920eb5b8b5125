//! Exec, terminals and stdin through a private containerd: `ctr task exec`
//! with and without `-t`, `ctr run -t` (console socket, resize) and
//! `ctr run` with piped stdin (end of file through CloseIO), and what many
//! execs leave in the shim.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::containerd::*;

/// `ctr task exec` into a running skill: output, exit status, the events,
/// and the policy held on the exec (user and capabilities of the skill,
/// whatever the exec asks for).
#[test]
fn exec_runs_in_the_sandbox_under_the_containers_policy() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-exec";
    let events = EventWatch::start(&containerd, work.path());
    let bundle = compile_skill(work.path(), "execed", "echo started > /tmp/marker; sleep 60");
    let id = "execed-1";
    let out = containerd.run_bundle(namespace, &bundle.join("config.json"), id, &["-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let exec = containerd.ctr(
        namespace,
        &[
            "tasks",
            "exec",
            "--exec-id",
            "probe",
            "--user",
            "0",
            id,
            "sh",
            "-c",
            "cat /tmp/marker; id -u; grep CapEff /proc/self/status; echo to-stderr >&2; exit 5",
        ],
    );
    let stdout = text(&exec.stdout);
    assert_eq!(exec.status.code(), Some(5), "{stdout}\n{}", text(&exec.stderr));
    // Same sandbox (the init's /tmp), the skill's uid, no capabilities.
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["started", "65534", "CapEff:\t0000000000000000"],
        "{}",
        text(&exec.stderr)
    );
    assert!(text(&exec.stderr).contains("to-stderr"));

    kill_and_remove(&containerd, namespace, id);
    let (topics, log) = events.topics(namespace);
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{log}"
    );
    assert!(
        log.contains("\"id\":\"probe\"") && log.contains("\"exit_status\":5"),
        "{log}"
    );
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-execed");
}

/// `ctr task exec -t`: the process runs on a terminal whose output reaches
/// the client (with a terminal, nothing else carries it) and its status is
/// reported. The window size is checked on `ctr run -t` below: in an exec,
/// runsc 20221219 sometimes fails TCGETS with ENOENT (see
/// docs/runsc-facts.md), so `stty` cannot be relied on here.
#[test]
fn exec_with_a_terminal_carries_output_and_status() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-exec-tty";
    let bundle = compile_skill(work.path(), "ttyexec", "sleep 60");
    let id = "ttyexec-1";
    let out = containerd.run_bundle(namespace, &bundle.join("config.json"), id, &["-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let exec = containerd.ctr_in_terminal(
        namespace,
        &[
            "tasks",
            "exec",
            "-t",
            "--exec-id",
            "tty",
            id,
            "sh",
            "-c",
            "echo exec-tty-done; exit 4",
        ],
        (33, 101),
    );
    let output = text(&exec.stdout);
    assert!(
        output.contains("exec-tty-done"),
        "{output}\n{}",
        text(&exec.stderr)
    );
    assert_eq!(exec.status.code(), Some(4), "{output}");

    kill_and_remove(&containerd, namespace, id);
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-ttyexec");
}

/// `ctr run -t`: the init process's terminal comes through runsc's console
/// socket, sized like the client's, and its output is complete at exit.
/// ctr sizes the terminal only after Start, so the skill asks until it sees
/// the size (busybox `stty size` exits 0 even when it cannot tell).
#[test]
fn run_with_a_terminal_gets_a_console_of_the_clients_size() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-run-tty";
    let bundle = compile_skill(
        work.path(),
        "ttyrun",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do s=$(stty size 2>&1); [ \"$s\" = \"40 120\" ] && break; sleep 0.2; done; echo size=$s; i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done; exit 6",
    );
    let id = "ttyrun-1";
    let args = containerd.run_bundle_args(&bundle.join("config.json"), id, &["-t", "--rm"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = containerd.ctr_in_terminal(namespace, &args, (40, 120));
    let output = text(&run.stdout);
    assert!(output.contains("size=40 120"), "{output}\n{}", text(&run.stderr));
    assert!(output.contains("line-299"), "output lost at exit:\n{output}");
    assert_eq!(run.status.code(), Some(6), "{output}");
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-ttyrun");
}

/// `ctr run` (stdin attached): what the client pipes in reaches the skill, and the end of
/// its input (CloseIO) lets the skill finish.
#[test]
fn piped_stdin_reaches_the_skill_and_ends() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-stdin";
    let bundle = compile_skill(work.path(), "reader", "wc -l; echo read-all");
    let id = "reader-1";
    let args = containerd.run_bundle_args(&bundle.join("config.json"), id, &["--rm"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = containerd
        .ctr_command(namespace, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    for line in 0..500 {
        writeln!(input, "input line {line}").unwrap();
    }
    drop(input);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the skill never saw the end of its stdin");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["500", "read-all"]
    );
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-reader");
}

/// The shim's open files, its child processes and the task's processes as
/// `ctr task ps` lists them: what an exec that was cleaned up leaves as it
/// found it.
#[derive(Debug, PartialEq)]
struct ShimFootprint {
    open_files: usize,
    children: Vec<String>,
    task_pids: Vec<String>,
}

fn shim_footprint(containerd: &Containerd, namespace: &str, id: &str, shim: i32) -> ShimFootprint {
    let open_files = std::fs::read_dir(format!("/proc/{shim}/fd")).unwrap().count();
    let mut children = Vec::new();
    for thread in std::fs::read_dir(format!("/proc/{shim}/task")).unwrap() {
        let listed = std::fs::read_to_string(thread.unwrap().path().join("children")).unwrap_or_default();
        children.extend(listed.split_whitespace().map(str::to_owned));
    }
    children.sort();
    let ps = containerd.ctr(namespace, &["tasks", "ps", id]);
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    let task_pids = text(&ps.stdout).lines().skip(1).map(str::to_owned).collect();
    ShimFootprint {
        open_files,
        children,
        task_pids,
    }
}

/// A shim lives as long as its task (a pod's, as long as the pod) and
/// serves every exec into it: 20 execs, four at a time, all succeed, and
/// once ended they leave its open files, its child processes and the
/// task's process list as the first exec left them.
#[test]
fn ended_execs_leave_nothing_behind_in_the_shim() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-exec-footprint";
    let bundle = compile_skill(work.path(), "execed-often", "sleep 120");
    let id = "execed-often-1";
    let out = containerd.run_bundle(namespace, &bundle.join("config.json"), id, &["-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exec = |n: usize| {
        let exec_id = format!("exec-{n}");
        let out = containerd.ctr(namespace, &["tasks", "exec", "--exec-id", &exec_id, id, "true"]);
        assert!(out.status.success(), "exec {n}: {}", text(&out.stderr));
    };

    // The first exec may open what the shim keeps for later ones.
    exec(0);
    let shim = shim_pid(namespace, id).expect("no shim process for the task");
    let first = shim_footprint(&containerd, namespace, id, shim);
    // Four at a time, as clients of one pod do.
    std::thread::scope(|scope| {
        for first in 0..4 {
            let exec = &exec;
            scope.spawn(move || (0..5).for_each(|n| exec(1 + first * 5 + n)));
        }
    });
    // An exec's exit is handled after ctr has its status: allow a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = shim_footprint(&containerd, namespace, id, shim);
    while after != first && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = shim_footprint(&containerd, namespace, id, shim);
    }
    assert_eq!(after, first, "20 more execs changed what the shim holds");

    kill_and_remove(&containerd, namespace, id);
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-execed-often");
}
