//! Exec, terminals and stdin through a private containerd: `ctr task exec`
//! with and without `-t`, `ctr run -t` (console socket, resize) and
//! `ctr run` with piped stdin (end of file through CloseIO).

use std::io::Write;
use std::process::Stdio;

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
#[test]
fn run_with_a_terminal_gets_a_console_of_the_clients_size() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-run-tty";
    let bundle = compile_skill(
        work.path(),
        "ttyrun",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do stty size && break; sleep 0.2; done; i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done; exit 6",
    );
    let id = "ttyrun-1";
    let args = containerd.run_bundle_args(&bundle.join("config.json"), id, &["-t", "--rm"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = containerd.ctr_in_terminal(namespace, &args, (40, 120));
    let output = text(&run.stdout);
    assert!(output.contains("40 120"), "{output}\n{}", text(&run.stderr));
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
