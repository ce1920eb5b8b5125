//! Prerequisites and the base root filesystem shared by the shim's tests.
//! A missing prerequisite fails the test and names what to install.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use policy_compiler::{compile, load, CompileOptions, NodeConfig};

/// Used by some test files only.
#[allow(dead_code)]
pub mod containerd;

pub fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "prerequisite missing: `{program}` (install Debian's {package})"
    );
}

/// The busybox base built by the same script the CLI's tests use (cached,
/// safe to call from parallel tests).
pub fn busybox_rootfs() -> PathBuf {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "prerequisite missing: these tests run as root"
    );
    require("runsc", "runsc");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let dir = root.join("target/skillbox-test/busybox-rootfs");
    let status = Command::new("bash")
        .arg(root.join("examples/rootfs/make-busybox-rootfs.sh"))
        .arg(&dir)
        .status()
        .expect("running make-busybox-rootfs.sh");
    assert!(
        status.success(),
        "make-busybox-rootfs.sh failed (needs busybox-static)"
    );
    dir
}

/// Compiles a busybox skill whose `security_policy` body (after
/// `version: 1`) is `policy` into `<dir>/<name>-bundle`, with the cgroup
/// `/skillbox-test-<name>`.
pub fn compile_skill(dir: &Path, name: &str, policy: &str) -> PathBuf {
    let skill = dir.join(name);
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        format!("---\nname: {name}\ndescription: test\nsecurity_policy:\n  version: 1\n{policy}---\n"),
    )
    .unwrap();
    let bundle = dir.join(format!("{name}-bundle"));
    compile(
        &load(&skill).unwrap(),
        &bundle,
        &CompileOptions {
            node: &NodeConfig::default(),
            node_config_name: "defaults",
            base_rootfs: &busybox_rootfs(),
            extra_args: &[],
            env: &BTreeMap::new(),
            cgroups_path: &format!("/skillbox-test-{name}"),
        },
    )
    .unwrap();
    bundle
}
