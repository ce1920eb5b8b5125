//! Sandboxes run by hand in the fake internet's node namespace (runsc
//! `--network=host` on a given namespace), for tests of the egress pieces
//! below `skillbox run`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fake_internet::FakeInternet;

/// Compiles `skill` on the busybox base into `<work>/bundle` (failing the
/// test if it does not compile) and returns the bundle. Its cgroup is a
/// placeholder: [`run_sandboxed`] gives each sandbox its own.
pub fn compile_on_busybox(skill: &super::Skill, work: &Path) -> PathBuf {
    let bundle = work.join("bundle");
    super::compile_bundle(skill.path(), &bundle, "/skillbox-fake-sandbox");
    bundle
}

/// Runs the compiled `bundle` as sandbox `id` with `--network=host` in
/// the network namespace at `namespace`, its `/etc/resolv.conf` being
/// `resolv_conf`; runsc starts in the node namespace. Deletes the
/// sandbox afterwards.
pub fn run_sandboxed(
    fake: &FakeInternet,
    namespace: &Path,
    resolv_conf: &str,
    bundle: &Path,
    id: &str,
) -> super::Output {
    let config_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let namespaces = spec["linux"]["namespaces"].as_array_mut().unwrap();
    let entry = namespaces
        .iter_mut()
        .find(|ns| ns["type"] == "network")
        .expect("compiled specs have a network namespace");
    entry["path"] = namespace.to_str().unwrap().into();
    let resolv = bundle.parent().unwrap().join("resolv.conf");
    std::fs::write(&resolv, resolv_conf).unwrap();
    spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/etc/resolv.conf", "type": "bind",
        "source": resolv, "options": ["bind", "ro"],
    }));
    spec["linux"]["cgroupsPath"] = format!("/{id}").into();
    std::fs::write(&config_path, serde_json::to_string(&spec).unwrap()).unwrap();

    let state = bundle.parent().unwrap().join("runsc-state");
    let flags = [
        format!("--root={}", state.display()),
        "--network=host".into(),
        "--platform=ptrace".into(),
    ];
    let mut command = fake.node_command(&super::runsc_binary());
    command
        .args(&flags)
        .arg("run")
        .arg(format!("--bundle={}", bundle.display()))
        .arg(id);
    let output = super::run_with_watchdog(command, Duration::from_secs(60));
    let mut delete = fake.node_command(&super::runsc_binary());
    delete.args(&flags).args(["delete", "--force", id]);
    let _ = delete.output();
    output
}
