//! How a run ends: the skill's status and output pass through unchanged, and
//! an interrupted skillbox removes the sandbox before it exits. The harness
//! checks after every run that no process, cgroup or runsc state is left.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use skillbox_test_support::sandbox::{RunResult, SkillRun};
use skillbox_test_support::{busybox_rootfs, Cli, Skill};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

#[test]
fn exit_status_and_streams_pass_through() {
    let script = "echo to-stdout\necho to-stderr >&2\nexit 3\n";
    let skill = Skill::sh("exit-three", "", script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    assert_eq!(run.output.code, 3, "{}", run.describe());
    assert_eq!(run.output.stdout, "to-stdout\n");
    assert!(run.output.stderr.contains("to-stderr\n"), "{}", run.describe());
    assert!(!run.output.stderr.contains("to-stdout"), "{}", run.describe());
    assert_eq!(run.outcome(), "exited");
    assert_eq!(run.report_u64("exit_code"), 3);
    let report = run.report();
    assert_eq!(report["skill"], "exit-three");
    let id = report["execution_id"].as_str().unwrap();
    assert!(id.starts_with("exit-three-"), "{id}");
    assert_eq!(report["cgroup"].as_str().unwrap(), format!("/skillbox/{id}"));
}

#[test]
fn arguments_reach_the_entrypoint() {
    let script = "for arg in \"$@\"; do echo \"[$arg]\"; done\n";
    let skill = Skill::sh("args", "", script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .args(&["one", "two words", "--flag", ""])
        .run();
    run.assert_success();
    assert_eq!(run.output.stdout, "[one]\n[two words]\n[--flag]\n[]\n");
}

fn interrupted_run(signal: &'static str) -> RunResult {
    interrupted_after(Duration::from_millis(2500), signal)
}

fn interrupted_after(delay: Duration, signal: &'static str) -> RunResult {
    let skill = Skill::sh(
        "interrupted",
        "  resources: { timeout: 60s }\n",
        "echo started\nsleep 60\necho woke\n",
    );
    SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .signal_after(delay, signal)
        .run()
}

#[test]
fn sigterm_removes_the_sandbox_and_exits_143() {
    let run = interrupted_run("TERM");
    assert_eq!(run.output.code, 143, "{}", run.describe());
    assert_eq!(run.outcome(), "killed", "{}", run.describe());
    assert!(run.output.stderr.contains("interrupted"), "{}", run.describe());
    assert_eq!(run.output.stdout, "started\n");
    assert!(run.output.elapsed < Duration::from_secs(10), "{}", run.describe());
}

#[test]
fn sigint_removes_the_sandbox_and_exits_130() {
    let run = interrupted_run("INT");
    assert_eq!(run.output.code, 130, "{}", run.describe());
    assert_eq!(run.outcome(), "killed", "{}", run.describe());
    assert!(run.output.elapsed < Duration::from_secs(10), "{}", run.describe());
}

#[test]
fn signal_during_setup_still_stops_the_sandbox() {
    // 30 ms is before runsc has created the container: the first kill finds
    // nothing, so skillbox must keep at it instead of letting the skill run.
    let run = interrupted_after(Duration::from_millis(30), "TERM");
    assert_eq!(run.output.code, 143, "{}", run.describe());
    assert!(!run.output.stdout.contains("woke"), "{}", run.describe());
    assert!(run.output.elapsed < Duration::from_secs(10), "{}", run.describe());
}

#[test]
fn a_crashed_sandbox_is_not_passed_off_as_the_skills_status() {
    // A stand-in for runsc whose Sentry "panics": it writes the panic log it
    // was given and exits 2, a status a skill could return as well. Every
    // other subcommand (kill, delete) succeeds.
    let dir = tempfile::tempdir().unwrap();
    let fake_runsc = dir.path().join("runsc");
    std::fs::write(
        &fake_runsc,
        "#!/bin/sh\n\
         for arg; do\n\
           case $arg in --panic-log=*) log=${arg#--panic-log=} ;; run) run=1 ;; esac\n\
         done\n\
         if [ -n \"$run\" ]; then\n\
           echo 'panic: error initializing first thread: resource temporarily unavailable' >\"$log\"\n\
           exit 2\n\
         fi\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake_runsc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let skill = Skill::sh("crashing", "", "exit 0\n");
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .env("SKILLBOX_RUNSC", fake_runsc.to_str().unwrap())
        .run();
    assert_eq!(run.output.code, 125, "{}", run.describe());
    assert_eq!(run.outcome(), "sandbox_failed", "{}", run.describe());
    assert!(
        run.output.stderr.contains(
            "the sandbox failed, not the skill (runsc exited 2): panic: error initializing first thread"
        ),
        "{}",
        run.describe()
    );
}

#[test]
fn a_refused_raw_socket_leaves_the_skills_status_its_own() {
    // busybox ping opens a raw ICMP socket, which the skill (no
    // CAP_NET_RAW) is refused; runsc logs a rate-limited warning about it
    // into its panic log. That is no crash: the skill's own status stands.
    let script = "ping -c1 -W1 127.0.0.1 || echo \"ping failed: $?\"\nexit 3\n";
    let skill = Skill::sh("raw-socket", "", script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    assert!(
        run.output.stderr.contains("ping: permission denied"),
        "{}",
        run.describe()
    );
    assert!(run.output.stdout.contains("ping failed: 1"), "{}", run.describe());
    assert_eq!(run.output.code, 3, "{}", run.describe());
    assert_eq!(run.outcome(), "exited", "{}", run.describe());
    assert_eq!(run.report_u64("exit_code"), 3);
}

#[test]
fn output_redirected_to_a_file_follows_what_was_written_before() {
    // `(echo first; skillbox run …) > out`: gVisor writes an imported
    // regular file from offset 0, so the skill's output used to overwrite
    // `first`. skillbox now relays a pipe and writes at the file's offset.
    skillbox_test_support::require_sandbox_prerequisites();
    let work = tempfile::tempdir().unwrap();
    let out_path = work.path().join("out");
    let skill = Skill::sh("to-a-file", "", "echo from-the-skill\necho to-stderr >&2\n");
    let mut out = std::fs::File::create(&out_path).unwrap();
    std::io::Write::write_all(&mut out, b"first line written by the caller\n").unwrap();
    let status = SKILLBOX
        .command()
        .arg("run")
        .arg(skill.path())
        .arg("--base-rootfs")
        .arg(busybox_rootfs())
        .env("SKILLBOX_STATE_DIR", work.path().join("state"))
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert!(text.starts_with("first line written by the caller\n"), "{text:?}");
    assert!(
        text.contains("from-the-skill\n") && text.contains("to-stderr\n"),
        "{text:?}"
    );
}
