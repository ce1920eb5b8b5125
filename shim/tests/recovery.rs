//! Cleanup and recovery under a real, private containerd (Debian's 1.6.20):
//! repeated runs, a SIGKILLed shim, a restarted containerd and a crashed
//! sandbox all end with nothing of the task left on the host.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod common;

use common::containerd::*;

/// Waits until `ready` holds, failing with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "{what} (after {timeout:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Starts `sleep 60` detached as `id` and waits until it runs.
fn run_sleeper(containerd: &Containerd, namespace: &str, config: &std::path::Path, id: &str) {
    let out = containerd.run_bundle(namespace, config, id, &["-d"]);
    assert!(
        out.status.success(),
        "ctr run -d {id}: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    assert_eq!(task_status(containerd, namespace, id), "RUNNING");
}

/// Runs the task's remaining removal steps: `ctr task delete` (which may
/// already have nothing to do) and `ctr container delete`.
fn remove_stopped(containerd: &Containerd, namespace: &str, id: &str) {
    let out = containerd.ctr(namespace, &["tasks", "delete", id]);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("not found"),
        "ctr task delete {id}: {stderr}"
    );
    let out = containerd.ctr(namespace, &["containers", "delete", id]);
    assert!(
        out.status.success(),
        "ctr container delete {id}: {}",
        text(&out.stderr)
    );
}

/// The exit status of the first `/tasks/exit` event for `id`, if any.
fn exit_status(log: &str, namespace: &str, id: &str) -> Option<u32> {
    let line = log.lines().find(|line| {
        line.contains(&format!(" {namespace} /tasks/exit "))
            && line.contains(&format!("\"container_id\":\"{id}\""))
    })?;
    let json = &line[line.find('{')?..];
    let event: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(event["exit_status"].as_u64().unwrap_or(0) as u32)
}

#[test]
fn twenty_run_and_delete_cycles_leave_nothing() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-rec-cycles";
    let short = compile_skill(work.path(), "rec-cycle", "echo cycle");
    let long = compile_skill(work.path(), "rec-cycle-long", "sleep 60");
    let started = Instant::now();
    for cycle in 0..20 {
        let id = format!("rec-cycle-{cycle}");
        let cgroup = if cycle % 4 == 3 {
            // Every fourth cycle runs detached and is killed and deleted.
            run_sleeper(&containerd, namespace, &long.join("config.json"), &id);
            kill_and_remove(&containerd, namespace, &id);
            "/skillbox-test-rec-cycle-long"
        } else {
            let out = containerd.run_bundle(namespace, &short.join("config.json"), &id, &["--rm"]);
            assert!(
                out.status.success(),
                "cycle {cycle}: {}\n{}",
                text(&out.stderr),
                containerd.log()
            );
            assert_eq!(text(&out.stdout), "cycle\n", "cycle {cycle}");
            "/skillbox-test-rec-cycle"
        };
        assert_no_leftovers(&containerd, namespace, &id, cgroup);
    }
    eprintln!("20 cycles with leftover checks: {:?}", started.elapsed());
    let listed = text(
        &containerd
            .ctr(namespace, &["containers", "list", "--quiet"])
            .stdout,
    );
    assert_eq!(listed.trim(), "", "containers left in {namespace}");
    for cycle in 0..20 {
        let cgroup = if cycle % 4 == 3 {
            "/skillbox-test-rec-cycle-long"
        } else {
            "/skillbox-test-rec-cycle"
        };
        assert_no_leftovers(&containerd, namespace, &format!("rec-cycle-{cycle}"), cgroup);
    }
}

#[test]
fn a_sigkilled_shim_is_noticed_and_cleaned_up() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-rec-shimkill";
    let id = "rec-orphan-1";
    let bundle = compile_skill(work.path(), "rec-orphan", "sleep 60");
    let events = EventWatch::start(&containerd, work.path());
    run_sleeper(&containerd, namespace, &bundle.join("config.json"), id);
    let shim = shim_pid(namespace, id).expect("the task's shim runs");
    let sandbox: Vec<i32> = task_processes(&containerd, namespace, id)
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| *pid != shim)
        .collect();
    assert!(!sandbox.is_empty(), "no runsc process found for {id}");

    kill(Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    // containerd notices the dead shim: the task is no longer running.
    // containerd notices the dead shim, runs its `delete` subcommand and
    // reports the task's exit.
    let noticed = wait_until(
        Duration::from_secs(20),
        "containerd never reported the exit",
        || exit_status(&events.log_so_far(), namespace, id).is_some(),
    );
    eprintln!("TaskExit for the SIGKILLed shim's task after {noticed:?}");
    remove_stopped(&containerd, namespace, id);
    let (_, log) = events.topics(namespace);
    assert_eq!(
        exit_status(&log, namespace, id),
        Some(137),
        "{log}\n{}",
        containerd.log()
    );
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-rec-orphan");
    // The sandbox the shim left behind is gone too.
    let alive: Vec<i32> = sandbox
        .into_iter()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(alive.is_empty(), "sandbox processes survived: {alive:?}");
}

#[test]
fn a_task_survives_a_containerd_restart_and_can_be_removed() {
    let mut containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-rec-restart";
    let bundle = compile_skill(work.path(), "rec-survivor", "sleep 60");
    let config = bundle.join("config.json");
    for (id, signal) in [
        ("rec-survivor-term", Signal::SIGTERM),
        ("rec-survivor-kill", Signal::SIGKILL),
    ] {
        run_sleeper(&containerd, namespace, &config, id);
        let shim = shim_pid(namespace, id).expect("the task's shim runs");
        let restarted = Instant::now();
        containerd.restart(signal);
        eprintln!(
            "containerd restarted after {signal:?} in {:?}",
            restarted.elapsed()
        );
        assert_eq!(
            shim_pid(namespace, id),
            Some(shim),
            "the shim survives containerd"
        );
        assert_eq!(
            task_status(&containerd, namespace, id),
            "RUNNING",
            "{}",
            containerd.log()
        );
        let events = EventWatch::start(&containerd, work.path());
        let removed = Instant::now();
        kill_and_remove(&containerd, namespace, id);
        eprintln!("kill and remove after the restart took {:?}", removed.elapsed());
        // The shim's events reach the new containerd.
        wait_until(
            Duration::from_secs(10),
            &format!("no TaskExit after the restart: {}", containerd.log()),
            || exit_status(&events.log_so_far(), namespace, id).is_some(),
        );
        let (topics, log) = events.topics(namespace);
        assert_eq!(
            topics,
            ["/tasks/exit", "/tasks/delete"],
            "{log}\n{}",
            containerd.log()
        );
        assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-rec-survivor");
    }
}

#[test]
fn a_crashed_sandbox_exits_non_zero_and_leaves_nothing() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-rec-crash";
    let id = "rec-crash-1";
    let bundle = compile_skill(work.path(), "rec-crash", "sleep 60");
    let events = EventWatch::start(&containerd, work.path());
    run_sleeper(&containerd, namespace, &bundle.join("config.json"), id);
    let shim = shim_pid(namespace, id).expect("the task's shim runs");
    let runsc: Vec<(i32, Vec<String>)> = task_processes(&containerd, namespace, id)
        .into_iter()
        .filter(|(pid, _)| *pid != shim)
        .collect();
    assert!(
        runsc.iter().any(|(_, args)| args[0].contains("runsc-sandbox"))
            && runsc.iter().any(|(_, args)| args[0].contains("runsc-gofer")),
        "expected a runsc sandbox and gofer: {runsc:?}"
    );
    for (pid, _) in &runsc {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let stopped = wait_until(Duration::from_secs(10), "the crashed task never stopped", || {
        task_status(&containerd, namespace, id) == "STOPPED"
    });
    eprintln!("crashed sandbox reported stopped after {stopped:?}");
    assert_eq!(
        shim_pid(namespace, id),
        Some(shim),
        "the shim outlives its sandbox"
    );
    remove_stopped(&containerd, namespace, id);
    let (topics, log) = events.topics(namespace);
    assert!(topics.contains(&"/tasks/exit".to_owned()), "{log}");
    let status = exit_status(&log, namespace, id).expect("a TaskExit for the task");
    assert_ne!(status, 0, "{log}");
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-rec-crash");
}

#[test]
fn a_shim_killed_while_paused_or_after_its_sandbox_died_is_cleaned_up() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-rec-shimkill2";
    let bundle = compile_skill(work.path(), "rec-paused", "sleep 60");
    let config = bundle.join("config.json");
    let events = EventWatch::start(&containerd, work.path());

    // Paused: the sandbox's processes are frozen when the shim dies.
    let id = "rec-paused-1";
    run_sleeper(&containerd, namespace, &config, id);
    let out = containerd.ctr(namespace, &["tasks", "pause", id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(task_status(&containerd, namespace, id), "PAUSED");
    let shim = shim_pid(namespace, id).expect("the task's shim runs");
    kill(Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    let noticed = wait_until(Duration::from_secs(20), "no TaskExit for the paused task", || {
        exit_status(&events.log_so_far(), namespace, id).is_some()
    });
    eprintln!("paused task: TaskExit after {noticed:?}");
    remove_stopped(&containerd, namespace, id);
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-rec-paused");

    // The sandbox crashed first, then the shim was killed before Delete.
    let id = "rec-paused-2";
    run_sleeper(&containerd, namespace, &config, id);
    let shim = shim_pid(namespace, id).expect("the task's shim runs");
    for (pid, _) in task_processes(&containerd, namespace, id) {
        if pid != shim {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    wait_until(Duration::from_secs(10), "the crashed task never stopped", || {
        task_status(&containerd, namespace, id) == "STOPPED"
    });
    kill(Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    remove_stopped(&containerd, namespace, id);
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-rec-paused");
    let (_, log) = events.topics(namespace);
    assert!(
        exit_status(&log, namespace, id).is_some_and(|status| status != 0),
        "{log}"
    );
}

#[test]
fn a_task_that_ends_while_containerd_is_down_can_be_removed() {
    let mut containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-rec-down";
    let id = "rec-brief-1";
    let bundle = compile_skill(work.path(), "rec-brief", "sleep 2; exit 7");
    run_sleeper(&containerd, namespace, &bundle.join("config.json"), id);
    containerd.restart_after(Signal::SIGKILL, Duration::from_secs(4));
    let events = EventWatch::start(&containerd, work.path());
    wait_until(Duration::from_secs(10), "the task never showed STOPPED", || {
        task_status(&containerd, namespace, id) == "STOPPED"
    });
    let out = containerd.ctr(namespace, &["tasks", "delete", id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("exit code 7"), "{}", text(&out.stderr));
    let out = containerd.ctr(namespace, &["containers", "delete", id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (topics, log) = events.topics(namespace);
    eprintln!("events after the restart:\n{log}");
    assert!(topics.contains(&"/tasks/delete".to_owned()), "{log}");
    assert!(log.contains("\"exit_status\":7"), "{log}");
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-rec-brief");
}

#[test]
fn a_shim_that_died_while_containerd_was_down_is_cleaned_up_on_restart() {
    let mut containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-rec-bothdown";
    let id = "rec-lost-1";
    let bundle = compile_skill(work.path(), "rec-lost", "sleep 60");
    run_sleeper(&containerd, namespace, &bundle.join("config.json"), id);
    let shim = shim_pid(namespace, id).expect("the task's shim runs");
    let sandbox: Vec<i32> = task_processes(&containerd, namespace, id)
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| *pid != shim)
        .collect();
    containerd.stop(Signal::SIGKILL);
    kill(Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    containerd.start_again();
    let gone = wait_until(
        Duration::from_secs(20),
        "the dead shim's task is still listed",
        || {
            let out = containerd.ctr(namespace, &["tasks", "list"]);
            out.status.success() && !text(&out.stdout).contains(id)
        },
    );
    eprintln!("task of the dead shim gone after {gone:?}");
    remove_stopped(&containerd, namespace, id);
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-rec-lost");
    let alive: Vec<i32> = sandbox
        .into_iter()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(alive.is_empty(), "sandbox processes survived: {alive:?}");
}

#[test]
fn a_dead_shim_whose_runsc_state_is_lost_still_leaves_nothing() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-rec-nostate";
    let id = "rec-nostate-1";
    let bundle = compile_skill(work.path(), "rec-nostate", "sleep 60");
    let events = EventWatch::start(&containerd, work.path());
    run_sleeper(&containerd, namespace, &bundle.join("config.json"), id);
    let shim = shim_pid(namespace, id).expect("the task's shim runs");
    // runsc can no longer find the container: only the processes and the
    // cgroup remain to be found.
    let runsc_root = std::path::Path::new("/run/skillbox/shim").join(namespace);
    for entry in std::fs::read_dir(&runsc_root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    kill(Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    wait_until(
        Duration::from_secs(20),
        "containerd never reported the exit",
        || exit_status(&events.log_so_far(), namespace, id).is_some(),
    );
    remove_stopped(&containerd, namespace, id);
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-rec-nostate");
}
