//! The shim never runs a container looser than its effective policy, under a
//! real, private containerd: a plain busybox root (no skillbox policy) runs
//! under the node's default policy, and what `ctr run` can ask for beyond it
//! (`--privileged`, `--net-host`, a host bind mount, `--cap-add`, a policy
//! annotation above the ceiling) is refused or tightened. Nothing is left
//! behind either way.

use std::path::Path;
use std::time::{Duration, Instant};

use skillbox_sandbox::cgroup::CgroupFs;
use skillbox_shim::enforce::ENFORCED;

mod common;

use common::containerd::*;

/// `ctr --rootfs` gives the process no environment at all, so the shell is
/// named by path and sets PATH itself.
fn sh(script: &str) -> Vec<String> {
    vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("export PATH=/bin:/usr/bin; {script}"),
    ]
}

/// Runs `script` in a plain container from `rootfs`, detached, its output in
/// `<dir>/<id>.log`; returns the log once it has a line `ready`.
fn run_detached(
    containerd: &Containerd,
    namespace: &str,
    rootfs: &Path,
    id: &str,
    extra: &[&str],
    script: &str,
) -> String {
    let log = rootfs.parent().unwrap().join(format!("{id}.log"));
    let uri = format!("file://{}", log.display());
    let mut flags = vec!["-d", "--log-uri", &uri];
    flags.extend_from_slice(extra);
    let command = sh(script);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let out = containerd.run_rootfs(namespace, rootfs, id, &flags, &command);
    assert!(
        out.status.success(),
        "ctr run failed: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        if logged.lines().any(|line| line == "ready") {
            return logged;
        }
        assert!(Instant::now() < deadline, "no `ready` from {id}: {logged}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `io.skillbox.enforced` list in the spec the shim gave runsc.
fn enforced(containerd: &Containerd, namespace: &str, id: &str) -> Vec<String> {
    let config = containerd.bundle_dir(namespace, id).join("config.json");
    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    serde_json::from_str(spec["annotations"][ENFORCED].as_str().unwrap()).unwrap()
}

/// `ctr run --rm` of a plain container that must be refused: no output,
/// FAILED_PRECONDITION, nothing left. Returns ctr's stderr.
fn refused(namespace: &str, id: &str, extra: &[&str]) -> String {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let rootfs = private_rootfs(work.path());
    let mut flags = vec!["--rm"];
    flags.extend_from_slice(extra);
    let command = sh("echo should-not-run");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let out = containerd.run_rootfs(namespace, &rootfs, id, &flags, &command);
    assert!(!out.status.success(), "ran: {}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("should-not-run"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("refused, the sandbox would run looser than its policy")
            && stderr.contains("failed precondition"),
        "{stderr}"
    );
    assert_nothing_left(&containerd, namespace, id, &format!("/{namespace}"));
    // The shim's own account reaches containerd's log, not only ctr's stderr.
    let log = containerd.log();
    assert!(
        log.lines()
            .any(|line| line.contains("spec refused") && line.contains(id)),
        "no refusal of {id} in containerd's log:\n{log}"
    );
    stderr
}

#[test]
fn plain_busybox_runs_under_the_node_default_policy() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-enf-default";
    let id = "plain-1";
    let rootfs = private_rootfs(work.path());
    let logged = run_detached(
        &containerd,
        namespace,
        &rootfs,
        id,
        &[],
        "touch /written-by-the-test 2>/dev/null && echo root-writable; \
         echo scratch > /tmp/scratch && echo tmp-writable; \
         cat /proc/net/dev; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; \
         echo ready; sleep 30",
    );
    assert!(!logged.contains("root-writable"), "{logged}");
    assert!(!rootfs.join("written-by-the-test").exists());
    assert!(logged.contains("tmp-writable"), "{logged}");
    // No network: loopback is the only interface.
    let interfaces: Vec<&str> = logged
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim())
        .filter(|name| !name.is_empty() && !name.starts_with("Cap") && !name.contains('|'))
        .collect();
    assert_eq!(interfaces, ["lo"], "{logged}");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(logged.contains(&format!("{set}:\t0000000000000000")), "{logged}");
    }
    // The node's default limits, in the sandbox's cgroup on the host.
    let cgroup = format!("/{namespace}/{id}");
    let stats = CgroupFs::detect().unwrap().stats(Path::new(&cgroup));
    assert_eq!(stats.memory_limit_bytes, 256 << 20);
    let changes = enforced(&containerd, namespace, id);
    for field in ["root.readonly: unset -> true", "process.capabilities: "] {
        assert!(changes.iter().any(|c| c.starts_with(field)), "{changes:?}");
    }
    kill_and_remove(&containerd, namespace, id);
    // runsc creates /<namespace> too and removes only the leaf; the shim
    // removes the parent it saw created.
    assert_nothing_left(&containerd, namespace, id, &format!("/{namespace}"));
}

#[test]
fn a_compiled_bundle_without_its_policy_runs_under_the_default_policy() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-enf-stripped";
    let bundle = compile_skill(work.path(), "stripped", "echo ran as $(id -u)");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    spec.as_object_mut().unwrap().remove("annotations");
    let config = work.path().join("stripped.json");
    std::fs::write(&config, spec.to_string()).unwrap();
    let out = containerd.run_bundle(namespace, &config, "stripped-1", &["--rm"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    assert_eq!(text(&out.stdout), "ran as 65534\n");
    assert_nothing_left(&containerd, namespace, "stripped-1", "/skillbox-test-stripped");
}

#[test]
fn privileged_is_refused_naming_the_devices() {
    let stderr = refused("skillbox-test-enf-privileged", "privileged-1", &["--privileged"]);
    assert!(stderr.contains("linux.devices: "), "{stderr}");
    assert!(stderr.contains("host device(s)"), "{stderr}");
}

#[test]
fn host_network_is_refused_naming_the_namespace() {
    let stderr = refused("skillbox-test-enf-nethost", "nethost-1", &["--net-host"]);
    assert!(
        stderr.contains(
            "linux.namespaces: no network namespace: the sandbox may not share the host's network namespace"
        ),
        "{stderr}"
    );
}

#[test]
fn a_host_bind_mount_is_refused_naming_the_source() {
    let stderr = refused(
        "skillbox-test-enf-bind",
        "bind-1",
        &["--mount", "type=bind,src=/etc,dst=/hostetc,options=rbind:ro"],
    );
    assert!(
        stderr
            .contains(".source (/hostetc): host path /etc: a bind mount's source must be inside the bundle"),
        "{stderr}"
    );
    assert!(stderr.contains("ceiling.bind_mount_sources"), "{stderr}");
}

#[test]
fn added_capabilities_are_dropped_and_listed() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-enf-capadd";
    let id = "capadd-1";
    let rootfs = private_rootfs(work.path());
    let logged = run_detached(
        &containerd,
        namespace,
        &rootfs,
        id,
        &["--cap-add", "CAP_SYS_ADMIN"],
        "grep -E '^Cap(Eff|Bnd)' /proc/self/status; echo ready; sleep 30",
    );
    assert!(logged.contains("CapEff:\t0000000000000000"), "{logged}");
    assert!(logged.contains("CapBnd:\t0000000000000000"), "{logged}");
    let changes = enforced(&containerd, namespace, id);
    let capabilities = changes
        .iter()
        .find(|c| c.starts_with("process.capabilities: "))
        .unwrap_or_else(|| panic!("{changes:?}"));
    assert!(
        capabilities.contains("CAP_SYS_ADMIN") && capabilities.ends_with(" -> none"),
        "{capabilities}"
    );
    // containerd keeps the spec it was given: `ctr c info` does not show
    // the shim's rewrite, the bundle's config.json does.
    let info = text(&containerd.ctr(namespace, &["containers", "info", id]).stdout);
    assert!(
        info.contains("CAP_SYS_ADMIN") && !info.contains(ENFORCED),
        "{info}"
    );
    kill_and_remove(&containerd, namespace, id);
    assert_nothing_left(&containerd, namespace, id, &format!("/{namespace}"));
}

#[test]
fn a_policy_annotation_above_the_ceiling_is_refused() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-enf-ceiling";
    let bundle = compile_skill(work.path(), "greedy", "echo should-not-run");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    let key = "io.skillbox.policy";
    let mut policy: serde_json::Value =
        serde_json::from_str(spec["annotations"][key].as_str().unwrap()).unwrap();
    policy["resources"]["memory"] = "4Gi".into();
    spec["annotations"][key] = policy.to_string().into();
    spec["linux"]["resources"]["memory"]["limit"] = (4i64 << 30).into();
    let config = work.path().join("greedy.json");
    std::fs::write(&config, spec.to_string()).unwrap();
    let out = containerd.run_bundle(namespace, &config, "greedy-1", &["--rm"]);
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("should-not-run"));
    let stderr = text(&out.stderr);
    let expected = format!(
        "config.json: annotations.\"io.skillbox.policy\".resources.memory: asks for 4Gi, above the node ceiling 2Gi (ceiling.memory in {})",
        containerd.node_config().display()
    );
    assert!(
        stderr.contains(&expected) && stderr.contains("failed precondition"),
        "{stderr}"
    );
    assert_nothing_left(&containerd, namespace, "greedy-1", "/skillbox-test-greedy");
}

/// `ctr run --config` runs a compiled bundle from containerd's own bundle
/// directory, so the skill's `/skill` bind comes from outside it: allowed
/// without any `ceiling.bind_mount_sources` entry when the folder is exactly
/// the skill that was compiled (its digest is the annotated one), refused
/// once a file of it changes.
#[test]
fn the_compiled_skill_mount_is_allowed_by_its_digest_only() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-enf-digest";
    // The built-in node config: temp dirs are not allowed bind sources.
    let defaults = work.path().join("defaults.toml");
    std::fs::write(&defaults, "").unwrap();
    let defaults = defaults.to_str().unwrap();
    let bundle = compile_skill(work.path(), "digested", "cat /skill/SKILL.md | head -n 2");
    let config = bundle.join("config.json");
    let out = containerd.run_bundle(
        namespace,
        &config,
        "digested-1",
        &["--rm", "--runtime-config-path", defaults],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "---\nname: digested\n");
    assert_nothing_left(&containerd, namespace, "digested-1", "/skillbox-test-digested");

    let skill_md = bundle.join("skill/SKILL.md");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&skill_md, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tampered = std::fs::read_to_string(&skill_md).unwrap() + "\nextra\n";
    std::fs::write(&skill_md, tampered).unwrap();
    let out = containerd.run_bundle(
        namespace,
        &config,
        "digested-2",
        &["--rm", "--runtime-config-path", defaults],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(".source (/skill): host path")
            && stderr.contains("io.skillbox.skill.digest")
            && stderr.contains("this folder's digest is sha256:"),
        "{stderr}"
    );
    assert_nothing_left(&containerd, namespace, "digested-2", "/skillbox-test-digested");
}

/// A bundle compiled without `--absolute-paths` names its skill copy
/// relative to itself; `ctr run --config` copies only `config.json`, so the
/// shim says what is missing and how to compile instead of runsc failing
/// obscurely.
#[test]
fn a_relative_bundle_run_through_ctr_is_refused_with_the_fix() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-enf-relative";
    let bundle = compile_skill(work.path(), "relative", "echo should-not-run");
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for mount in spec["mounts"].as_array_mut().unwrap() {
        if mount["destination"] == "/skill" {
            mount["source"] = "skill".into();
        }
    }
    std::fs::write(&config, serde_json::to_string(&spec).unwrap()).unwrap();
    let out = containerd.run_bundle(namespace, &config, "relative-1", &["--rm"]);
    assert!(!out.status.success(), "ran: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("(/skill): \"skill\", relative to the bundle, which has no such file")
            && stderr.contains("--absolute-paths"),
        "{stderr}"
    );
    assert_nothing_left(&containerd, namespace, "relative-1", "/skillbox-test-relative");
}
