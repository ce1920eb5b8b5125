//! The warm pool (`skillbox pool serve`) and `skillbox run` through it: a
//! pre-booted sandbox runs exactly what a cold run would (arguments,
//! environment, stdin, inputs, outputs, exit status, audit), its clock
//! starts when it is handed out, it serves one execution, and neither a
//! run nor the pool leaves anything behind.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use skillbox_test_support::pool::TestPool;
use skillbox_test_support::sandbox::{processes_mentioning, SkillRun};
use skillbox_test_support::{busybox_rootfs, field, Cli, Skill};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

const POLICY: &str =
    "  resources: { cpus: 1, memory: 64Mi, pids: 16, timeout: 20s }\n  env: { pass: [GREETING] }\n";

/// Prints what a cold and a pooled run must agree on.
const SHOWS_ITSELF: &str = r#"echo "args=$*"
echo "count=$#"
echo "greeting=$GREETING"
echo "uid=$(id -u)"
echo "host=$(hostname)"
echo "pid=$$"
echo "stdin=$(cat)"
echo "env=$(env | sort | tr '\n' ' ')"
exit 3
"#;

fn warm_options(skill: &Skill) -> Vec<std::ffi::OsString> {
    vec![
        "--warm".into(),
        skill.path().into(),
        "--base-rootfs".into(),
        busybox_rootfs().into(),
    ]
}

/// `skillbox run` of `skill` as a client of `pool` (its socket and state
/// directory), to add options and arguments to.
fn pooled_run(skill: &Path, pool: &TestPool) -> Command {
    let mut command = SKILLBOX.command();
    command
        .arg("run")
        .arg(skill)
        .arg("--base-rootfs")
        .arg(busybox_rootfs())
        .arg("--pool")
        .arg(pool.socket())
        .env("SKILLBOX_STATE_DIR", pool.state_dir());
    command
}

/// `skillbox run` through `pool` (or cold), with `stdin` piped in.
fn run_with_stdin(
    skill: &Skill,
    pool: &TestPool,
    pooled: bool,
    stdin: &str,
) -> (std::process::Output, serde_json::Value) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut command = pooled_run(skill.path(), pool);
    command
        .arg("--report")
        .arg(report.path())
        .env("GREETING", "hi there")
        .env("NOT_PASSED", "secret");
    if !pooled {
        command.arg("--no-pool");
    }
    command.args(["--", "one", "two words"]);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let report = serde_json::from_str(&fs::read_to_string(report.path()).unwrap())
        .unwrap_or_else(|err| panic!("no report ({err}): {}", String::from_utf8_lossy(&output.stderr)));
    (output, report)
}

#[test]
fn a_pooled_run_runs_exactly_what_a_cold_run_does_and_its_sandbox_is_replaced() {
    let skill = Skill::sh("shows-itself", POLICY, SHOWS_ITSELF);
    let pool = TestPool::start(SKILLBOX, &warm_options(&skill));
    pool.wait_ready(2);
    let (cold, cold_report) = run_with_stdin(&skill, &pool, false, "from stdin\n");
    let (warm, warm_report) = run_with_stdin(&skill, &pool, true, "from stdin\n");
    let describe = |output: &std::process::Output| {
        format!(
            "{}\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            pool.log()
        )
    };
    assert_eq!(cold_report["pooled"], false);
    assert_eq!(warm_report["pooled"], true, "{}", describe(&warm));
    assert_eq!(warm.status.code(), Some(3), "{}", describe(&warm));
    assert_eq!(
        warm.stdout,
        cold.stdout,
        "cold:\n{}\nwarm:\n{}",
        describe(&cold),
        describe(&warm)
    );
    let stdout = String::from_utf8_lossy(&warm.stdout).into_owned();
    assert_eq!(field(&stdout, "args"), "one two words");
    assert_eq!(field(&stdout, "count"), "2");
    assert_eq!(field(&stdout, "greeting"), "hi there");
    assert_eq!(field(&stdout, "pid"), "1", "the skill is the sandbox's init");
    assert_eq!(field(&stdout, "stdin"), "from stdin");
    assert!(!stdout.contains("NOT_PASSED"), "{stdout}");
    assert_eq!(warm_report["outcome"], "exited");
    assert_eq!(warm_report["exit_code"], 3);
    // The audit log records the skill's own program and arguments.
    let audit = fs::read_to_string(warm_report["audit_log"].as_str().unwrap()).unwrap();
    assert!(
        audit.contains(r#""type":"exec""#)
            && audit.contains(r#""argv":["sh","scripts/main.sh","one","two words"]"#),
        "{audit}"
    );
    assert!(audit.contains(r#""type":"exit","status":3"#), "{audit}");
    // Served once, replaced in the background.
    pool.wait_ready(2);
    let status = pool.status();
    assert_eq!(status["served"], 1, "{status}");
    assert!(status["ready_memory_bytes"].as_u64() > Some(1 << 20), "{status}");
    let id = warm_report["execution_id"].as_str().unwrap();
    assert!(processes_mentioning(id, None).is_empty());
    pool.stop();
}

#[test]
fn inputs_and_outputs_travel_through_a_pooled_sandbox() {
    let work = tempfile::tempdir().unwrap();
    let note = work.path().join("note.txt");
    fs::write(&note, "hello input\n").unwrap();
    let script =
        "echo \"note=$(cat /workspace/in/note.txt)\"\ncp /workspace/in/note.txt /workspace/out/copy.txt\n";
    let policy = "  filesystem:\n    writable:\n      - { path: /workspace/out, size: 1Mi }\n";
    let skill = Skill::sh("pooled-io", policy, script);
    let pool = TestPool::start(SKILLBOX, &[] as &[&str]);
    let run = |out: &str| {
        SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
            .pool(&pool)
            .options(&[
                "--input".as_ref(),
                note.as_os_str(),
                "--output".as_ref(),
                work.path().join(out).as_os_str(),
            ])
            .run()
    };
    // The first asks for a sandbox with these mounts: the pool has none yet.
    let first = run("out-1");
    first.assert_success();
    assert_eq!(first.report()["pooled"], false, "{}", first.describe());
    pool.wait_ready(2);
    let second = run("out-2");
    second.assert_success();
    assert_eq!(
        second.report()["pooled"],
        true,
        "{}\n{}",
        second.describe(),
        pool.log()
    );
    assert_eq!(field(&second.output.stdout, "note"), "hello input");
    assert_eq!(
        fs::read_to_string(work.path().join("out-2/copy.txt")).unwrap(),
        "hello input\n"
    );
    assert_eq!(second.report()["outputs"]["files"], 1);
    pool.stop();
}

#[test]
fn a_pooled_sandboxs_timeout_counts_from_when_it_is_handed_out() {
    let policy = "  resources: { timeout: 2s }\n";
    let sleeper = Skill::sh("pooled-sleeper", policy, "sleep \"$1\"; echo woke");
    let pool = TestPool::start(SKILLBOX, &warm_options(&sleeper));
    pool.wait_ready(2);
    // Booted well over 2 s before it is handed out.
    std::thread::sleep(Duration::from_secs(3));
    let fits = SkillRun::new(SKILLBOX, sleeper.path(), busybox_rootfs())
        .pool(&pool)
        .args(&["1"])
        .run();
    fits.assert_success();
    assert_eq!(fits.report()["pooled"], true, "{}", fits.describe());
    let overruns = SkillRun::new(SKILLBOX, sleeper.path(), busybox_rootfs())
        .pool(&pool)
        .args(&["30"])
        .run();
    assert_eq!(overruns.report()["pooled"], true, "{}", overruns.describe());
    assert_eq!(overruns.output.code, 124, "{}", overruns.describe());
    assert_eq!(overruns.outcome(), "timeout");
    assert!(
        overruns.output.stderr.contains("timeout of 2s fired"),
        "{}",
        overruns.describe()
    );
    pool.stop();
}

#[test]
fn an_interrupted_pooled_run_is_killed_and_removed() {
    let sleeper = Skill::sh("pooled-interrupted", "", "echo started; sleep 30");
    let pool = TestPool::start(SKILLBOX, &warm_options(&sleeper));
    pool.wait_ready(2);
    let run = SkillRun::new(SKILLBOX, sleeper.path(), busybox_rootfs())
        .pool(&pool)
        .signal_after(Duration::from_secs(1), "INT")
        .run();
    assert_eq!(run.report()["pooled"], true, "{}", run.describe());
    assert_eq!(run.output.code, 130, "{}", run.describe());
    assert_eq!(run.outcome(), "killed");
    assert!(
        run.output.stderr.contains("interrupted by signal 2"),
        "{}",
        run.describe()
    );
    assert!(run.output.elapsed < Duration::from_secs(10), "{}", run.describe());
    pool.stop();
}

#[test]
fn a_run_whose_client_vanishes_has_its_sandbox_killed() {
    let sleeper = Skill::sh("pooled-orphan", "", "echo started; sleep 30");
    let pool = TestPool::start(SKILLBOX, &warm_options(&sleeper));
    pool.wait_ready(1);
    let mut client = pooled_run(sleeper.path(), &pool)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(client.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "started\n");
    assert_eq!(pool.status()["running"], 1);
    client.kill().unwrap();
    client.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.status()["running"] != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {}\n{}",
            pool.status(),
            pool.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pool.stop();
}

#[test]
fn stopping_the_pool_removes_ready_and_running_sandboxes() {
    let sleeper = Skill::sh("pooled-stopped", "", "echo started; sleep 30");
    let pool = TestPool::start(SKILLBOX, &warm_options(&sleeper));
    pool.wait_ready(2);
    let mut command = pooled_run(sleeper.path(), &pool);
    let running = std::thread::spawn(move || command.stdin(Stdio::null()).output().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pool.status()["running"] != 1 {
        assert!(std::time::Instant::now() < deadline, "{}", pool.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // `stop` asserts that nothing is left: socket, state, processes.
    let log = pool.stop();
    let client = running.join().unwrap();
    assert_eq!(
        client.status.code(),
        Some(143),
        "{}\n{log}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(String::from_utf8_lossy(&client.stderr).contains("interrupted by signal 15"));
}

#[test]
fn a_changed_skill_is_never_served_from_a_stale_sandbox() {
    let skill = Skill::sh("pooled-changing", "", "echo version=1");
    let pool = TestPool::start(SKILLBOX, &warm_options(&skill));
    pool.wait_ready(2);
    let skill = skill.file("scripts/main.sh", "echo version=2");
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .pool(&pool)
        .run();
    run.assert_success();
    assert_eq!(field(&run.output.stdout, "version"), "2");
    assert_eq!(run.report()["pooled"], false);
    // The stale ones are gone and fresh ones booted; the next run is pooled.
    pool.wait_ready(2);
    let again = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .pool(&pool)
        .run();
    assert_eq!(again.report()["pooled"], true, "{}", again.describe());
    assert_eq!(field(&again.output.stdout, "version"), "2");
    pool.stop();
}

/// The pool lives for many executions: each served run closes what its
/// sandbox held in the pool (pipes, sockets, the monitoring session), so
/// with the same sandboxes ready its open files are those it had after the
/// first.
#[test]
fn served_runs_leave_nothing_open_in_the_pool() {
    let skill = Skill::sh("pooled-often", "", "echo served");
    let mut options = warm_options(&skill);
    options.extend(["--capacity".into(), "2".into(), "--per-skill".into(), "2".into()]);
    let pool = TestPool::start(SKILLBOX, &options);
    let serve = || {
        pool.wait_ready(2);
        let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
            .pool(&pool)
            .run();
        assert_eq!(run.report()["pooled"], true, "{}\n{}", run.describe(), pool.log());
        assert_eq!(run.output.stdout.trim(), "served", "{}", run.describe());
    };
    serve();
    pool.wait_ready(2);
    let first = pool.open_files();
    for _ in 0..6 {
        serve();
    }
    pool.wait_ready(2);
    assert_eq!(
        pool.open_files(),
        first,
        "6 more served runs changed the pool's open files"
    );
    assert_eq!(pool.status()["served"], 7);
    pool.stop();
}

#[test]
fn the_pool_is_bounded_and_keeps_the_most_recent_skills() {
    let first = Skill::sh("pooled-first", "", "echo first");
    let second = Skill::sh("pooled-second", "", "echo second");
    let mut options = warm_options(&first);
    options.extend(["--capacity".into(), "2".into(), "--per-skill".into(), "2".into()]);
    let pool = TestPool::start(SKILLBOX, &options);
    pool.wait_ready(2);
    // Asking for another skill drops the least recently used one.
    let run = SkillRun::new(SKILLBOX, second.path(), busybox_rootfs())
        .pool(&pool)
        .run();
    assert_eq!(run.report()["pooled"], false);
    pool.wait_ready(2);
    let status = pool.status();
    let skills = status["skills"].as_array().unwrap();
    assert_eq!(skills.len(), 1, "{status}");
    assert_eq!(
        skills[0]["skill_dir"],
        second.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(status["ready"], 2, "{status}");
    pool.stop();
}

#[test]
fn a_run_the_pool_cannot_serve_runs_cold() {
    let skill = Skill::sh("pooled-declined", "", "echo ran");
    let pool = TestPool::start(SKILLBOX, &warm_options(&skill));
    pool.wait_ready(2);
    // Another node config than the pool's.
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .pool(&pool)
        .node_config("[ceiling]\nmemory = \"256Mi\"\n")
        .run();
    run.assert_success();
    assert_eq!(run.report()["pooled"], false);
    assert_eq!(pool.status()["ready"], 2, "nothing was taken");
    pool.stop();
}

#[test]
fn a_killed_pool_leaves_nothing_the_next_one_does_not_remove() {
    let skill = Skill::sh("pooled-killed", "", "echo ran");
    let mut pool = TestPool::start(SKILLBOX, &warm_options(&skill));
    pool.wait_ready(2);
    pool.kill();
    // The next pool collects the dead one's sandboxes and launcher first;
    // `stop` then asserts that nothing at all is left.
    pool.restart(&[] as &[&str]);
    pool.stop();
}
