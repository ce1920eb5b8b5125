//! The example skills in examples/ do what their SKILL.md says.

use skillbox_test_support::sandbox::SkillRun;
use skillbox_test_support::{busybox_rootfs, example_dir, Cli};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

const EXAMPLES: &[&str] = &[
    "hello",
    "misbehaving",
    "python-stats",
    "file-writer",
    "network-fetch",
    "word-count",
];

#[test]
fn every_example_compiles_and_explains() {
    let rootfs = tempfile::tempdir().unwrap();
    for name in EXAMPLES {
        let dir = example_dir(name);
        let explain = SKILLBOX.run(["policy".as_ref(), "explain".as_ref(), dir.as_os_str()]);
        assert_eq!(explain.code, 0, "{name}: {}", explain.describe());
        assert_eq!(explain.stderr, "", "{name}: warnings from explain");

        let json = SKILLBOX.run([
            "policy".as_ref(),
            "explain".as_ref(),
            dir.as_os_str(),
            "--format".as_ref(),
            "json".as_ref(),
        ]);
        assert_eq!(json.code, 0, "{name}: {}", json.describe());
        let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(value["skill"], *name);

        let out = tempfile::tempdir().unwrap();
        let bundle = out.path().join("bundle");
        let compile = SKILLBOX.run([
            "compile".as_ref(),
            dir.as_os_str(),
            "--base-rootfs".as_ref(),
            rootfs.path().as_os_str(),
            "-o".as_ref(),
            bundle.as_os_str(),
        ]);
        assert_eq!(compile.code, 0, "{name}: {}", compile.describe());
        assert_eq!(compile.stderr, "", "{name}: compile warnings");
        assert!(bundle.join("config.json").is_file() && bundle.join("skill/SKILL.md").is_file());
    }
}

#[test]
fn hello_greets_and_lists_its_arguments() {
    let run = SkillRun::new(SKILLBOX, &example_dir("hello"), busybox_rootfs())
        .args(&["world", "two words"])
        .run();
    run.assert_success();
    assert_eq!(
        run.output.stdout,
        "Hello from skill 'hello', running as uid 65534.\narg 1: world\narg 2: two words\n"
    );
}

#[test]
fn file_writer_writes_only_to_its_output_directory() {
    let run = SkillRun::new(SKILLBOX, &example_dir("file-writer"), busybox_rootfs()).run();
    run.assert_success();
    assert_eq!(
        run.output.stdout,
        "wrote /output/report.txt: 10 lines, 131 bytes\n\
         sha256 a467b32efaff5741db918d8b08556164eeb00c4e19b789e0a6a5194b715f7452\n\
         /tmp: read-only (only /output is declared writable)\n"
    );
}

#[test]
fn misbehaving_demo_is_contained() {
    // TEST-NET-3 (also the demo's default): tests never aim at real hosts,
    // even though the sandbox has no network.
    let run = SkillRun::new(SKILLBOX, &example_dir("misbehaving"), busybox_rootfs())
        .args(&["203.0.113.1"])
        .env("SECRET_TOKEN", "hunter2-from-the-host")
        .run();
    run.assert_success();
    let out = &run.output.stdout;
    let expected_lines = [
        "write /skill/x: blocked (",
        "write /etc/passwd: blocked (",
        "write /tmp/scratch: allowed",
        "read host /etc/shadow: not visible",
        "env SECRET_TOKEN: not visible",
        "uid: 65534",
        "capabilities: none",
        "connect 203.0.113.1:80: blocked (",
        "network interfaces: lo",
        "fill /tmp past its 1Mi cap: blocked (No space left on device)",
        "start 40 processes: blocked after ",
        "done",
    ];
    let lines: Vec<&str> = out.lines().collect();
    for expected in expected_lines {
        assert!(
            lines.iter().any(|line| line.starts_with(expected)),
            "no line starting with {expected:?}\n{out}"
        );
    }
    assert!(!out.contains("VISIBLE") && !out.contains("hunter2"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("list all processes: sees only sh ")),
        "{out}"
    );
}
