//! `Container` driven directly with real runsc, for the calls `ctr` 1.6
//! cannot make (it has no `task update`). The test process becomes a child
//! subreaper, as the shim is, so that it can reap the sandbox.

use std::path::Path;
use std::time::Duration;

use policy_compiler::NodeConfig;
use skillbox_sandbox::cgroup::{CgroupFs, LimitUpdate};
use skillbox_shim::config::ShimConfig;
use skillbox_shim::container::{Container, Status, StdioPaths};

#[test]
fn update_changes_the_sandbox_cgroup_limits() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let work = tempfile::tempdir().unwrap();
    let bundle = skillbox_test_support::compile_skill(work.path(), "update", "  entrypoint: [sleep, '30']\n");
    let cgroup = "/skillbox-test-update";

    let runsc_root = work.path().join("runsc");
    let container = Container::create(
        "update-1",
        skillbox_sandbox::BundleSpec::load(&bundle).unwrap(),
        StdioPaths::default(),
        false,
        &runsc_root,
        &ShimConfig {
            node: NodeConfig::default(),
            origin: "the built-in defaults".to_owned(),
        },
        "skillbox-test-update",
    )
    .unwrap();
    container.start().unwrap();
    assert_eq!(container.status().0, Status::Running);
    let fs = CgroupFs::detect().unwrap();
    assert_eq!(fs.stats(Path::new(cgroup)).memory_limit_bytes, 256 << 20);

    container
        .update(&LimitUpdate {
            memory_bytes: Some(64 << 20),
            pids: Some(600),
            ..Default::default()
        })
        .unwrap();
    let stats = fs.stats(Path::new(cgroup));
    assert_eq!(stats.memory_limit_bytes, 64 << 20);
    assert_eq!(stats.pids_limit, 600);

    container.kill(nix::sys::signal::SIGKILL as u32, true).unwrap();
    let exit = tokio::runtime::Runtime::new().unwrap().block_on(async {
        tokio::time::timeout(Duration::from_secs(10), container.wait())
            .await
            .unwrap()
    });
    assert_eq!(exit.status, 137);
    container.delete().unwrap();
    let left = fs.controller_dir(Path::new(cgroup), "memory").unwrap();
    assert!(!left.exists(), "{} left behind", left.display());
}
