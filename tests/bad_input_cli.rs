//! Invalid skills and node configs through the CLI: the library's message
//! after `error: ` on stderr, exit code 1, and nothing written.

use std::fs;

use skillbox_test_support::{example_dir, with_policy, Cli, Skill};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

/// The CLI prints the same messages, prefixed with `error: `, and exits 1.
#[test]
fn cli_reports_errors_with_exit_code_1() {
    let skill = Skill::with_skill_md(&with_policy("  netwrok: { allow: [] }\n"));
    let dir = skill.path().to_str().unwrap();
    let field_error = format!(
        "error: {dir}/SKILL.md: security_policy.netwrok: unknown field `netwrok`, expected one of \
         `version`, `entrypoint`, `network`, `filesystem`, `resources`, `env`, `audit` at line 6 column 3\n"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let bundle = out_dir.path().join("bundle");
    let compile = SKILLBOX.run([
        "compile",
        dir,
        "--base-rootfs",
        "/nonexistent-rootfs",
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(
        (compile.code, compile.stderr.as_str()),
        (1, field_error.as_str()),
        "{}",
        compile.describe()
    );
    assert!(!bundle.exists(), "a failed compile left a bundle behind");

    let explain = SKILLBOX.run(["policy", "explain", dir]);
    assert_eq!(
        (explain.code, explain.stderr.as_str()),
        (1, field_error.as_str()),
        "{}",
        explain.describe()
    );
    assert_eq!(explain.stdout, "");

    let empty = tempfile::tempdir().unwrap();
    let missing = SKILLBOX.run(["policy", "explain", empty.path().to_str().unwrap()]);
    let expected = format!(
        "error: {}: not a skill folder: SKILL.md is missing\n",
        empty.path().display()
    );
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (1, expected.as_str()),
        "{}",
        missing.describe()
    );

    let node = out_dir.path().join("node.toml");
    fs::write(&node, "[ceiling]\nmemroy = \"1Gi\"\n").unwrap();
    let hello = example_dir("hello");
    let bad_node = SKILLBOX.run([
        "policy".as_ref(),
        "explain".as_ref(),
        hello.as_os_str(),
        "--node-config".as_ref(),
        node.as_os_str(),
    ]);
    let expected = format!(
        "error: {}: ceiling.memroy: unknown field `memroy`, expected one of `mode`, `cpus`, `memory`, `pids`, \
         `timeout`, `writable_size`, `always_deny`, `allowed_domain_suffixes`, `bind_mount_sources`\n",
        node.display()
    );
    assert_eq!(
        (bad_node.code, bad_node.stderr.as_str()),
        (1, expected.as_str()),
        "{}",
        bad_node.describe()
    );
}

#[test]
fn cli_prints_warnings_for_clamped_values() {
    let skill = Skill::with_skill_md(&with_policy(
        "  entrypoint: [\"true\"]\n  resources: { memory: 4Gi }\n",
    ));
    let work = tempfile::tempdir().unwrap();
    let node = work.path().join("node.toml");
    fs::write(&node, "[ceiling]\nmode = \"clamp\"\n").unwrap();
    let bundle = work.path().join("bundle");
    let compile = SKILLBOX.run([
        "compile".as_ref(),
        skill.path().as_os_str(),
        "--base-rootfs".as_ref(),
        work.path().as_os_str(),
        "--node-config".as_ref(),
        node.as_os_str(),
        "-o".as_ref(),
        bundle.as_os_str(),
    ]);
    assert_eq!(compile.code, 0, "{}", compile.describe());
    assert_eq!(
        compile.stderr,
        "warning: security_policy.resources.memory: lowered from 4Gi to the node ceiling 2Gi\n"
    );
    let config = fs::read_to_string(bundle.join("config.json")).unwrap();
    assert!(
        config.contains(&format!("\"limit\": {}", 2u64 << 30)),
        "memory not clamped:\n{config}"
    );
}
