//! CLI surface that is not a skill run: the published schema and the host probe.

use std::time::Duration;

use skillbox_test_support::sandbox::processes_mentioning;
use skillbox_test_support::{busybox_rootfs, cgroup_hierarchies, run_with_watchdog, workspace_dir, Cli};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

#[test]
fn policy_schema_prints_the_committed_schema() {
    let schema = SKILLBOX.run(["policy", "schema"]);
    assert_eq!(schema.code, 0, "{}", schema.describe());
    let committed =
        std::fs::read_to_string(workspace_dir().join("schema/security_policy.schema.json")).unwrap();
    assert!(
        schema.stdout == committed,
        "`skillbox policy schema` differs from the committed schema file"
    );
    let value: serde_json::Value = serde_json::from_str(&schema.stdout).unwrap();
    assert_eq!(value["title"], "security_policy");
}

#[test]
fn probe_finds_a_working_network_none_mode() {
    let state = tempfile::tempdir().unwrap();
    let mut command = SKILLBOX.command();
    command
        .args(["probe", "--format", "json", "--base-rootfs"])
        .arg(busybox_rootfs())
        .env("SKILLBOX_STATE_DIR", state.path());
    let probe = run_with_watchdog(command, Duration::from_secs(120));
    assert_eq!(probe.code, 0, "{}", probe.describe());
    let value: serde_json::Value = serde_json::from_str(&probe.stdout).unwrap();
    assert!(value["version"]["release"].as_u64().is_some(), "{}", probe.stdout);
    // Every skill runs with --network=none today, so it must work here.
    assert_eq!(
        value["network"]["none"]["status"], "supported",
        "{}",
        probe.stdout
    );
    let leftovers = processes_mentioning(&state.path().to_string_lossy(), None);
    assert!(leftovers.is_empty(), "probe left processes behind: {leftovers:?}");
    let entries: Vec<_> = std::fs::read_dir(state.path()).unwrap().collect();
    assert!(entries.is_empty(), "probe left state behind: {entries:?}");
    let cgroups = probe_cgroups();
    assert!(cgroups.is_empty(), "probe left cgroups behind: {cgroups:?}");
}

/// Cgroups named like the probe's trial sandboxes, in any hierarchy.
fn probe_cgroups() -> Vec<std::path::PathBuf> {
    cgroup_hierarchies()
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("skillbox-probe-"))
        })
        .collect()
}
