//! Invalid skills and node configs through the CLI: the library's message
//! after `error: ` on stderr, exit code 1, and nothing written.

use std::fs;
use std::time::Duration;

use skillbox_test_support::{example_dir, run_with_watchdog, with_policy, Cli, Skill};

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
         `timeout`, `writable_size`, `always_deny`, `allowed_domain_suffixes`, `bind_mount_sources`, `env_pass_deny`, `env_pass_allow`\n",
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

/// A skill asking for a secret-looking variable: refused naming the field,
/// the name and the node config entry; in clamp mode `policy explain` shows
/// it refused and compile leaves it out of the bundle.
#[test]
fn cli_refuses_secret_looking_env_names_naming_the_node_entry() {
    let skill = Skill::with_skill_md(&with_policy(
        "  entrypoint: [\"true\"]\n  env: { pass: [LANG, GITHUB_TOKEN] }\n",
    ));
    let dir = skill.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let node = work.path().join("node.toml");
    fs::write(&node, "").unwrap();
    let explain = |node: &std::path::Path| {
        SKILLBOX.run(["policy", "explain", dir, "--node-config", node.to_str().unwrap()])
    };
    let refused = explain(&node);
    let expected = format!(
        "error: {dir}/SKILL.md: security_policy.env.pass[1]: this node does not pass GITHUB_TOKEN to skills: \
         it matches *TOKEN* in ceiling.env_pass_deny, names that look like secrets; to pass it, add it to \
         ceiling.env_pass_allow in {}\n",
        node.display()
    );
    assert_eq!(
        (refused.code, refused.stderr.as_str()),
        (1, expected.as_str()),
        "{}",
        refused.describe()
    );

    fs::write(&node, "[ceiling]\nmode = \"clamp\"\n").unwrap();
    let clamped = explain(&node);
    assert_eq!(clamped.code, 0, "{}", clamped.describe());
    assert!(
        clamped.stdout.contains(
            "env        PATH, HOME, LANG (from the caller)\n           refused by the node: GITHUB_TOKEN (matches *TOKEN*) (ceiling.env_pass_deny)\n"
        ),
        "{}",
        clamped.stdout
    );
    let bundle = work.path().join("bundle");
    let mut compile = SKILLBOX.command();
    compile
        .args(["compile", dir, "--base-rootfs"])
        .arg(work.path())
        .arg("--node-config")
        .arg(&node)
        .arg("-o")
        .arg(&bundle)
        .env("LANG", "C.UTF-8")
        .env("GITHUB_TOKEN", "ghp_not_for_skills");
    let compiled = run_with_watchdog(compile, Duration::from_secs(60));
    assert_eq!(
        (compiled.code, compiled.stderr.as_str()),
        (
            0,
            "warning: security_policy.env.pass[1]: GITHUB_TOKEN matches *TOKEN* in ceiling.env_pass_deny; not passed\n"
        ),
        "{}",
        compiled.describe()
    );
    let config = fs::read_to_string(bundle.join("config.json")).unwrap();
    assert!(config.contains("LANG=C.UTF-8"), "{config}");
    assert!(
        !config.contains("ghp_not_for_skills"),
        "the token reached the bundle:\n{config}"
    );
}
