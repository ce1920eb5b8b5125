//! `skillbox node install` and `uninstall` on a node whose containerd runs
//! as a service (restarted whenever it exits, its `/etc` the host root's):
//! a restart that does not happen fails install naming what containerd
//! still says; install then restarts containerd (its files are as asked,
//! but containerd does not see the handler) and its CRI knows the
//! `skillbox` handler; a skill image runs as a pod under it; a second
//! install restarts nothing; uninstall is refused while a skillbox pod
//! runs, then restores the host's files byte for byte and containerd
//! forgets the handler; a runc pod started before runs through all of it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use skillbox_cri_tests::config::HOST_SOCKET;
use skillbox_cri_tests::containerd::{skillbox_cli, skillbox_shim, PID_FILE};
use skillbox_cri_tests::images::SKILL_IMAGE;
use skillbox_cri_tests::{ContainerSpec, Handler, Node, NodeOptions, OrFail, Pod};
use skillbox_test_support::require;

/// Prints `tick <n>` every 100 ms; exits at once on TERM.
const TICKER: &str = "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done";

/// Every file and directory under the host root's `etc`, `usr/local/bin`
/// and `var/lib`: path → mode and contents.
fn host_files(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.insert(path.clone(), (mode, Vec::new()));
                walk(&path, out);
            } else if meta.is_file() {
                out.insert(path.clone(), (mode, std::fs::read(&path).unwrap_or_default()));
            } else {
                out.insert(path.clone(), (mode, Vec::new()));
            }
        }
    }
    let mut out = BTreeMap::new();
    for sub in ["etc", "usr/local/bin", "var/lib"] {
        walk(&root.join(sub), &mut out);
    }
    out
}

/// `skillbox node <args> --host-root <root>` restarting containerd the way
/// the node's service manager would (its supervisor starts it again).
fn skillbox_node(node: &Node, root: &Path, args: &[&str]) -> Output {
    let restart = format!("kill -TERM \"$(cat {})\"", root.join(PID_FILE).display());
    Command::new(skillbox_cli())
        .arg("node")
        .args(args)
        .arg("--host-root")
        .arg(root)
        .args(["--restart-command", &restart, "--reload-timeout", "60"])
        .env_remove("NODE_NAME")
        .output()
        .unwrap_or_else(|err| panic!("running skillbox node {args:?}: {err}\n{}", node.log_tail(20)))
}

fn succeeded(node: &Node, what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}\ncontainerd: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        node.log_tail(30)
    );
    stdout
}

fn containerd_pid(root: &Path) -> String {
    std::fs::read_to_string(root.join(PID_FILE)).unwrap_or_default()
}

/// The runc pod is READY with its container RUNNING and still ticking.
fn still_running(pod: &Pod, id: &str, when: &str) {
    pod.assert_ready_and_running(id, when);
    let ticks = |pod: &Pod| pod.log_text("ticker").len();
    let before = ticks(pod);
    std::thread::sleep(Duration::from_millis(500));
    assert!(ticks(pod) > before, "the runc container stopped ticking {when}");
}

#[test]
fn install_restarts_containerd_into_the_skillbox_handler_and_uninstall_restores_the_host() {
    let runsc = require("runsc", "runsc");
    let node = Arc::new(Node::start_with(&NodeOptions {
        bare_host: true,
        ..NodeOptions::default()
    }));
    let root = node.host_root().expect("a bare host");
    let before = host_files(&root);

    let mut control = Pod::run(&node, Handler::Runc, "control").or_fail(&node);
    let ticker = control.start(&ContainerSpec::sh("ticker", TICKER)).or_fail(&node);
    control
        .wait_log("ticker", "tick 3", Duration::from_secs(20))
        .or_fail(&node);
    let refused = Pod::run(&node, Handler::Skillbox, "before-install")
        .map(|_| ())
        .expect_err("a skillbox pod ran before install");
    assert!(refused.to_string().contains("skillbox"), "{refused}");

    let shim = skillbox_shim();
    let node_config = node.node_config();
    let install_args = [
        "install",
        "--shim",
        shim.to_str().unwrap(),
        "--runsc",
        runsc.to_str().unwrap(),
        "--node-config",
        node_config.to_str().unwrap(),
        "--cri-socket",
        HOST_SOCKET,
    ];
    // A restart that does not restart: install fails naming what containerd
    // still says, having written the files.
    let failed = Command::new(skillbox_cli())
        .arg("node")
        .args(install_args)
        .arg("--host-root")
        .arg(&root)
        .args(["--restart-command", "true", "--reload-timeout", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success()
            && err.contains("did not answer again with the `skillbox` runtime handler within 2s")
            && err.contains("handlers: runc"),
        "{err}"
    );
    // Files as asked but containerd blind to the handler: install restarts it.
    let pid = containerd_pid(&root);
    let out = succeeded(&node, "install", &skillbox_node(&node, &root, &install_args));
    assert!(out.contains("unchanged: skillbox is installed as asked"), "{out}");
    assert_ne!(
        containerd_pid(&root),
        pid,
        "install did not restart containerd: {out}"
    );
    assert!(
        out.contains("containerd restarted") && out.contains("sees the `skillbox` runtime handler"),
        "{out}"
    );
    eprintln!(
        "cri-timing: node install {}",
        out.lines().find(|l| l.contains("restarted")).unwrap_or_default()
    );
    node.cri.reconnect();
    still_running(&control, &ticker, "after install restarted containerd");

    // A skill image runs under its own policy through the installed handler.
    let mut skill = Pod::run(&node, Handler::Skillbox, "installed-skill").or_fail(&node);
    let skill_id = skill
        .start(&ContainerSpec {
            image: SKILL_IMAGE.to_owned(),
            command: Vec::new(),
            ..ContainerSpec::sh("skill", "")
        })
        .or_fail(&node);
    skill
        .wait_log("skill", "ready", Duration::from_secs(30))
        .or_fail(&node);
    let log = skill.log_text("skill");
    for line in ["uid=65534", "out-ok", "skill-read-only"] {
        assert!(log.iter().any(|l| l == line), "no {line:?} in {log:?}");
    }

    // Installed as asked: nothing written, containerd not restarted.
    let installed = host_files(&root);
    let pid = containerd_pid(&root);
    let again = succeeded(
        &node,
        "a second install",
        &skillbox_node(&node, &root, &install_args),
    );
    assert!(again.contains("containerd not restarted"), "{again}");
    assert_eq!(containerd_pid(&root), pid, "{again}");
    assert!(
        host_files(&root) == installed,
        "a second install changed the host's files"
    );

    let status = Command::new(skillbox_cli())
        .args(["node", "status", "--json", "--host-root"])
        .arg(&root)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&succeeded(&node, "status", &status)).unwrap();
    assert_eq!(status["containerd"]["sees_handler"], true, "{status}");
    assert!(
        status["containerd"]["version"]
            .as_str()
            .unwrap_or_default()
            .starts_with("containerd"),
        "{status}"
    );

    // Not while a skill pod runs on the node.
    let uninstall_args = ["uninstall", "--cri-socket", HOST_SOCKET];
    let refused = skillbox_node(&node, &root, &uninstall_args);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("installed-skill") && err.contains("--force"),
        "{err}"
    );
    assert!(
        host_files(&root) == installed,
        "a refused uninstall changed the host's files"
    );
    let _ = skill_id;
    skill.teardown().or_fail(&node);

    let pid = containerd_pid(&root);
    let out = succeeded(&node, "uninstall", &skillbox_node(&node, &root, &uninstall_args));
    assert!(
        out.contains("no longer sees the `skillbox` runtime handler"),
        "{out}"
    );
    assert_ne!(
        containerd_pid(&root),
        pid,
        "uninstall did not restart containerd: {out}"
    );
    let after = host_files(&root);
    let differences: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|path| before.get(*path) != after.get(*path))
        .collect();
    assert!(
        differences.is_empty(),
        "uninstall did not restore the host: {differences:?}"
    );
    node.cri.reconnect();
    still_running(&control, &ticker, "after uninstall restarted containerd");
    let refused = Pod::run(&node, Handler::Skillbox, "after-uninstall")
        .map(|_| ())
        .expect_err("a skillbox pod ran after uninstall");
    assert!(refused.to_string().contains("skillbox"), "{refused}");
    control.teardown().or_fail(&node);
}
