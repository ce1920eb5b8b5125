//! `skillbox run --input PATH --output DIR`: inputs arrive read-only at
//! `/workspace/in`, outputs written to `/workspace/out` (a tmpfs capped by
//! the policy) come back to DIR after the skill ends — regular files and
//! directories only, all or nothing — and nothing is left mounted.

use std::fs;

use skillbox_test_support::sandbox::SkillRun;
use skillbox_test_support::{busybox_rootfs, field, Cli, Skill};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

/// A policy with a 1 MiB `/workspace/out`.
const OUT_POLICY: &str = "  filesystem:\n    writable:\n      - { path: /workspace/out, size: 1Mi }\n";

fn stderr(run: &skillbox_test_support::sandbox::RunResult) -> String {
    run.output.stderr.clone()
}

#[test]
fn inputs_are_read_only_and_outputs_come_back_whole() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("sub/rows.csv"), "a,b\n1,2\n").unwrap();
    let note = work.path().join("note.txt");
    fs::write(&note, "hello input\n").unwrap();
    let out = work.path().join("results");
    let script = r#"
echo "note=$(cat /workspace/in/note.txt)"
echo "rows=$(wc -l < /workspace/in/data/sub/rows.csv)"
if echo x > /workspace/in/note.txt 2>/dev/null; then echo in_write=allowed; else echo in_write=blocked; fi
if touch /workspace/in/new 2>/dev/null; then echo in_create=allowed; else echo in_create=blocked; fi
mkdir -p /workspace/out/reports && echo '{"ok":true}' > /workspace/out/reports/r.json
wc -c < /workspace/in/data/sub/rows.csv > /workspace/out/size.txt
if dd if=/dev/zero of=/workspace/out/big bs=64k count=32 2>/dev/null; then echo cap=none; else echo cap=held; fi
rm -f /workspace/out/big
"#;
    let skill = Skill::sh("io", OUT_POLICY, script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .options(&[
            "--input".as_ref(),
            data.as_os_str(),
            "--input".as_ref(),
            note.as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
        ])
        .run();
    run.assert_success();
    let stdout = run.output.stdout.clone();
    assert_eq!(field(&stdout, "note"), "hello input");
    assert_eq!(field(&stdout, "rows"), "2");
    assert_eq!(field(&stdout, "in_write"), "blocked", "{stdout}");
    assert_eq!(field(&stdout, "in_create"), "blocked", "{stdout}");
    assert_eq!(
        field(&stdout, "cap"),
        "held",
        "the 1Mi cap let 2 MiB through: {stdout}"
    );
    assert_eq!(
        fs::read_to_string(out.join("reports/r.json")).unwrap(),
        "{\"ok\":true}\n"
    );
    assert_eq!(fs::read_to_string(out.join("size.txt")).unwrap().trim(), "8");
    assert!(!out.join("big").exists());
    let report = run.report();
    assert_eq!(report["outputs"]["files"], 2, "{report}");
    // The caller's input is untouched.
    assert_eq!(fs::read_to_string(&note).unwrap(), "hello input\n");
}

#[test]
fn an_output_link_writes_nothing_and_says_why() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("link");
    let script = "echo fine > /workspace/out/fine.txt; ln -s /etc/passwd /workspace/out/passwd; echo done";
    let skill = Skill::sh("bad-output", OUT_POLICY, script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .options(&["--output".as_ref(), out.as_os_str()])
        .run();
    let err = stderr(&run);
    assert_eq!(run.output.code, 125, "{}", run.describe());
    assert!(
        err.contains("/workspace/out/passwd is a symbolic link")
            && err.contains("regular files and directories only"),
        "{err}"
    );
    assert!(!out.exists(), "something was written to {}", out.display());
    let left: Vec<_> = fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "partial output directories left: {left:?}");
}

#[test]
fn a_fifo_made_in_the_sandbox_never_reaches_the_host() {
    // gVisor keeps a FIFO in its own file system: the host's tmpfs gets no
    // node, so only the regular file comes out (a FIFO found on the host
    // side would be refused: src/runtime/outputs.rs's unit tests).
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let script = "echo fine > /workspace/out/fine.txt; mkfifo /workspace/out/pipe && echo made";
    let skill = Skill::sh("fifo-output", OUT_POLICY, script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .options(&["--output".as_ref(), out.as_os_str()])
        .run();
    run.assert_success();
    let names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["fine.txt"], "{}", run.describe());
}

#[test]
fn bad_inputs_and_outputs_are_refused_before_the_skill_runs() {
    let work = tempfile::tempdir().unwrap();
    let marker = "ran-the-skill";
    let plain = Skill::sh("no-out", "", &format!("echo {marker}"));

    // --output without /workspace/out in the policy.
    let run = SkillRun::new(SKILLBOX, plain.path(), busybox_rootfs())
        .options(&["--output".as_ref(), work.path().join("o").as_os_str()])
        .run();
    let err = stderr(&run);
    assert_eq!(run.output.code, 125, "{err}");
    assert!(
        err.contains("security_policy.filesystem.writable") && err.contains("/workspace/out"),
        "{err}"
    );

    // An output directory that is not empty.
    let full = work.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep"), "mine").unwrap();
    let with_out = Skill::sh("with-out", OUT_POLICY, &format!("echo {marker}"));
    let run = SkillRun::new(SKILLBOX, with_out.path(), busybox_rootfs())
        .options(&["--output".as_ref(), full.as_os_str()])
        .run();
    assert!(stderr(&run).contains("not empty"), "{}", run.describe());
    assert_eq!(fs::read_to_string(full.join("keep")).unwrap(), "mine");

    // An input holding a symbolic link.
    let data = work.path().join("data");
    fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", data.join("shadow")).unwrap();
    let run = SkillRun::new(SKILLBOX, plain.path(), busybox_rootfs())
        .options(&["--input".as_ref(), data.as_os_str()])
        .run();
    let err = stderr(&run);
    assert_eq!(run.output.code, 125, "{err}");
    assert!(err.contains("shadow is a symbolic link"), "{err}");
    assert!(!run.output.stdout.contains(marker), "{}", run.describe());
}

#[test]
fn a_killed_run_leaves_its_output_mount_to_gc() {
    use std::io::BufRead;
    skillbox_test_support::require_sandbox_prerequisites();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let out = work.path().join("out");
    let skill = Skill::sh(
        "killed-output",
        OUT_POLICY,
        "echo x > /workspace/out/x\necho started\nsleep 60\n",
    );
    let mut child = SKILLBOX
        .command()
        .arg("run")
        .arg(skill.path())
        .arg("--base-rootfs")
        .arg(busybox_rootfs())
        .arg("--output")
        .arg(&out)
        .env("SKILLBOX_STATE_DIR", &state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n", "the skill did not start");
    let mounted = || {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&*state.to_string_lossy()))
            .count()
    };
    assert_eq!(
        mounted(),
        1,
        "the output tmpfs is not mounted under the state dir"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let gc = SKILLBOX
        .command()
        .arg("gc")
        .env("SKILLBOX_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    assert_eq!(mounted(), 0, "gc left the output tmpfs mounted");
    assert_eq!(
        fs::read_dir(&state).unwrap().count(),
        0,
        "gc left the execution directory"
    );
    assert!(!out.exists(), "a killed run wrote its outputs");
}
