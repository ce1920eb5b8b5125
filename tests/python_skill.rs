//! The python-stats example on the Debian bookworm + python3-minimal base
//! (built by debootstrap once and cached in target/skillbox-cache/).

use skillbox_test_support::sandbox::SkillRun;
use skillbox_test_support::{example_dir, field, python_rootfs, Cli, Skill};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

#[test]
fn python_stats_summarises_its_bundled_csv() {
    let run = SkillRun::new(SKILLBOX, &example_dir("python-stats"), python_rootfs()).run();
    run.assert_success();
    assert_eq!(
        run.output.stdout,
        "temperature_c in assets/measurements.csv\n\
         count: 8\n\
         mean: 15.75\n\
         median: 15.75\n\
         stdev: 2.38\n\
         min: 12.50\n\
         max: 19.50\n\
         (summary saved to /tmp/summary.txt)\n"
    );
    assert_eq!(run.outcome(), "exited");
}

#[test]
fn python_stats_reports_a_missing_column() {
    let run = SkillRun::new(SKILLBOX, &example_dir("python-stats"), python_rootfs())
        .args(&["assets/measurements.csv", "humidity"])
        .run();
    assert_eq!(run.output.code, 2, "{}", run.describe());
    assert!(
        run.output
            .stderr
            .contains("python-stats: assets/measurements.csv has no column 'humidity'"),
        "{}",
        run.describe()
    );
}

#[test]
fn python_runs_unprivileged_on_a_read_only_root() {
    // The Debian base has real system files: the sandbox must keep them intact.
    let skill = Skill::with_skill_md(
        "---\nname: python-probe\ndescription: Probes the Debian base\nsecurity_policy:\n  version: 1\n  \
         entrypoint: [\"python3\", \"scripts/probe.py\"]\n---\n",
    )
    .file(
        "scripts/probe.py",
        r#"import os
print(f"uid={os.getuid()}")
for path in ["/etc/passwd", "/usr/lib/python3.11/os.py", "/skill/SKILL.md"]:
    try:
        with open(path, "a") as handle:
            handle.write("x")
        print(f"{path}=allowed")
    except OSError as err:
        print(f"{path}=blocked:{err.strerror}")
"#,
    );
    let run = SkillRun::new(SKILLBOX, skill.path(), python_rootfs()).run();
    run.assert_success();
    let out = &run.output.stdout;
    assert_eq!(field(out, "uid"), "65534");
    for path in ["/etc/passwd", "/usr/lib/python3.11/os.py", "/skill/SKILL.md"] {
        let result = field(out, path);
        assert!(result.starts_with("blocked:"), "{path}: {result}\n{out}");
    }
}
