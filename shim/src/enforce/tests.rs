use std::path::{Path, PathBuf};

use policy_compiler::effective::node_default;
use policy_compiler::manifest::AuditLevel;
use policy_compiler::node_config::NodeConfig;
use policy_compiler::quantity::ByteSize;
use serde_json::{json, Value};

use super::*;

/// Paths resolve to themselves; the host's namespaces are `/proc/1/ns/*`.
struct FakeHost;

impl HostPaths for FakeHost {
    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        Some(path.to_owned())
    }

    fn is_own_namespace(&self, proc_name: &str, path: &Path) -> bool {
        path == Path::new("/proc/1/ns").join(proc_name)
    }

    /// `/compiled/<name>/skill` is a skill package whose digest is `sha256:<name>`.
    fn skill_digest(&self, dir: &Path) -> Option<String> {
        let name = dir.strip_prefix("/compiled").ok()?.parent()?.to_str()?;
        Some(format!("sha256:{name}"))
    }

    /// Image roots are real directories (temp dirs in these tests).
    fn image_skill(&self, root: &Path) -> Option<policy_compiler::Result<SkillPackage>> {
        RealHost.image_skill(root)
    }
}

/// An image root holding a skill whose `security_policy` is `policy`.
fn image_with_skill(policy: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let skill = root.path().join("skill");
    std::fs::create_dir(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        format!("---\nname: imaged\ndescription: A skill in an image.\nversion: 2.0.0\nsecurity_policy:\n  version: 1\n  entrypoint: [sh, run.sh]\n{policy}---\n"),
    )
    .unwrap();
    std::fs::write(skill.join("run.sh"), "echo hi\n").unwrap();
    root
}

const BUNDLE: &str = "/run/ctrd/io.containerd.runtime.v2.task/ns/c1";

fn config(toml: &str) -> ShimConfig {
    ShimConfig {
        node: NodeConfig::from_toml(Path::new("node.toml"), toml).unwrap(),
        origin: "node.toml".to_owned(),
    }
}

/// The spec `ctr run --rootfs` gives a plain container (abridged).
fn plain() -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL"],
                "effective": ["CAP_CHOWN", "CAP_KILL"],
                "permitted": ["CAP_CHOWN", "CAP_KILL"]
            },
            "noNewPrivileges": true
        },
        "root": {"path": "/srv/rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "cgroupsPath": "/ns/c1",
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}
            ]
        }
    })
}

fn enforce(spec: &mut Value, config: &ShimConfig) -> Result<Prepared, EnforceError> {
    enforce_spec("c1", spec, Path::new(BUNDLE), config, &FakeHost)
}

fn refused(mut spec: Value, config: &ShimConfig) -> String {
    let before = spec.clone();
    let err = enforce(&mut spec, config).unwrap_err();
    assert!(matches!(err, EnforceError::Refused { .. }), "{err}");
    assert_eq!(spec, before, "a refused spec is left alone");
    err.to_string()
}

fn fields(prepared: &Prepared) -> Vec<&str> {
    prepared.changes.iter().map(|c| c.field.as_str()).collect()
}

#[test]
fn a_plain_container_gets_the_node_default_policy() {
    let config = config("");
    let mut spec = plain();
    let prepared = enforce(&mut spec, &config).unwrap();
    assert_eq!(prepared.source, PolicySource::NodeDefault);
    assert_eq!(prepared.policy, node_default(&config.node));
    assert_eq!(
        prepared.runsc_flags.to_args(),
        ["--network=none", "--platform=ptrace"]
    );
    assert_eq!(spec["root"]["readonly"], json!(true));
    for set in ["bounding", "effective", "inheritable", "permitted", "ambient"] {
        assert_eq!(spec["process"]["capabilities"][set], json!([]), "{set}");
    }
    let resources = &spec["linux"]["resources"];
    assert_eq!(
        resources["memory"],
        json!({"limit": 256 << 20, "swap": 256 << 20})
    );
    assert_eq!(resources["cpu"], json!({"quota": 50_000, "period": 100_000}));
    assert_eq!(resources["pids"], json!({"limit": 256 + 32 * 64}));
    // The cgroup device rules containerd wrote are kept.
    assert_eq!(resources["devices"], plain()["linux"]["resources"]["devices"]);
    let tmp = spec["mounts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        tmp,
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", "size=67108864"]})
    );
    assert_eq!(spec["linux"]["cgroupsPath"], json!("/ns/c1"));
    assert_eq!(
        fields(&prepared),
        [
            "root.readonly",
            "process.capabilities",
            "linux.resources.memory.limit",
            "linux.resources.memory.swap",
            "linux.resources.cpu",
            "linux.resources.pids.limit",
            "mounts (/tmp)",
        ]
    );
    assert_eq!(
        prepared.changes[1].to_string(),
        "process.capabilities: CAP_CHOWN CAP_KILL -> none"
    );
    let enforced: Vec<String> =
        serde_json::from_str(spec["annotations"][ENFORCED].as_str().unwrap()).unwrap();
    assert_eq!(enforced.len(), prepared.changes.len());
    assert_eq!(enforced[0], "root.readonly: unset -> true");
    let policy: EffectivePolicy =
        serde_json::from_str(spec["annotations"][annotations::POLICY].as_str().unwrap()).unwrap();
    assert_eq!(policy, prepared.policy);
}

#[test]
fn enforcing_twice_changes_nothing_more() {
    let config = config("");
    let mut spec = plain();
    enforce(&mut spec, &config).unwrap();
    let once = spec.clone();
    let again = enforce(&mut spec, &config).unwrap();
    assert_eq!(again.source, PolicySource::Bundle);
    assert_eq!(again.changes, []);
    assert_eq!(spec["linux"], once["linux"]);
    assert_eq!(spec["mounts"], once["mounts"]);
}

#[test]
fn lower_limits_are_kept_and_higher_ones_lowered() {
    let config = config("");
    let mut spec = plain();
    spec["linux"]["resources"]["memory"] = json!({"limit": 64 << 20, "swap": 1i64 << 40});
    spec["linux"]["resources"]["cpu"] = json!({"quota": 20_000, "period": 50_000});
    spec["linux"]["resources"]["pids"] = json!({"limit": 100_000});
    spec["linux"]["resources"]["unified"] = json!({"memory.max": "max"});
    let prepared = enforce(&mut spec, &config).unwrap();
    let resources = &spec["linux"]["resources"];
    assert_eq!(resources["memory"], json!({"limit": 64 << 20, "swap": 64 << 20}));
    // 0.4 CPU is below the default 0.5: kept as asked.
    assert_eq!(resources["cpu"], json!({"quota": 20_000, "period": 50_000}));
    assert_eq!(resources["pids"], json!({"limit": 256 + 32 * 64}));
    assert!(resources.get("unified").is_none());
    assert!(fields(&prepared).contains(&"linux.resources.unified"));

    spec["linux"]["resources"]["memory"] = json!({"limit": 1i64 << 40});
    spec["linux"]["resources"]["cpu"] = json!({"quota": 60_000, "period": 100_000});
    enforce(&mut spec, &config).unwrap();
    let resources = &spec["linux"]["resources"];
    assert_eq!(resources["memory"]["limit"], json!(256 << 20));
    assert_eq!(resources["cpu"], json!({"quota": 50_000, "period": 100_000}));
}

#[test]
fn privileged_is_refused_naming_the_devices() {
    let mut spec = plain();
    spec["linux"]["devices"] = json!([
        {"path": "/dev/autofs", "type": "c", "major": 10, "minor": 235},
        {"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232},
        {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
        {"path": "/dev/mem", "type": "c", "major": 1, "minor": 1}
    ]);
    let err = refused(spec, &config(""));
    assert_eq!(
        err,
        format!(
            "{BUNDLE}/config.json: refused, the sandbox would run looser than its policy: linux.devices: 4 host device(s) (/dev/autofs, /dev/kvm, /dev/sda, …): a sandbox gets no host devices (`ctr run --privileged` and `--device` add them)"
        )
    );
}

#[test]
fn host_namespaces_are_refused() {
    let mut spec = plain();
    spec["linux"]["namespaces"] =
        json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    let err = refused(spec, &config(""));
    assert!(
        err.ends_with("linux.namespaces: no network namespace: the sandbox may not share the host's network namespace; expected a network entry, new (no path) or joining another's (a pod's)"),
        "{err}"
    );

    let mut spec = plain();
    spec["linux"]["namespaces"][4] = json!({"type": "network", "path": "/proc/1/ns/net"});
    spec["linux"]["namespaces"][0] = json!({"type": "pid", "path": "/proc/1/ns/pid"});
    let err = refused(spec, &config(""));
    assert!(
        err.contains("linux.namespaces[4].path: /proc/1/ns/net: this is the host's network namespace")
            && err.contains("; linux.namespaces[0].path: /proc/1/ns/pid: this is the host's pid namespace"),
        "{err}"
    );

    // A pod's namespace is joined as usual.
    let mut spec = plain();
    spec["linux"]["namespaces"][4] = json!({"type": "network", "path": "/var/run/netns/cni-1234"});
    enforce(&mut spec, &config("")).unwrap();
}

#[test]
fn host_bind_mounts_are_refused_and_allowed_ones_kept() {
    let bind = |source: &str| json!({"destination": "/x", "type": "bind", "source": source, "options": ["rbind", "ro"]});
    let mut spec = plain();
    spec["mounts"].as_array_mut().unwrap().push(bind("/etc"));
    let err = refused(spec, &config(""));
    assert!(
        err.ends_with("mounts[3].source (/x): host path /etc: a bind mount's source must be inside the bundle (/run/ctrd/io.containerd.runtime.v2.task/ns/c1), this pod's kubelet or containerd directories (under [cri] kubelet_root, containerd_root, containerd_state), or under ceiling.bind_mount_sources [] in node.toml"),
        "{err}"
    );

    for (source, allowed) in [
        // Only a CRI pod's own directories, and this spec is in no pod.
        (
            "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~empty-dir/data",
            false,
        ),
        (
            "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/hosts",
            false,
        ),
        (&format!("{BUNDLE}/skill"), true),
        ("skill", true),
        ("../../etc", false),
        ("/srv/skills/hello/skill", false),
    ] {
        let mut spec = plain();
        spec["mounts"].as_array_mut().unwrap().push(bind(source));
        assert_eq!(enforce(&mut spec, &config("")).is_ok(), allowed, "{source}");
    }
    // A bind written as type "none" with a bind option is a bind too.
    let mut spec = plain();
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/x", "type": "none", "source": "/", "options": ["bind"]}));
    assert!(refused(spec, &config("")).contains("host path /"));

    let admin = config("[ceiling]\nbind_mount_sources = [\"/srv/skills\"]\n");
    let mut spec = plain();
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(bind("/srv/skills/hello/skill"));
    enforce(&mut spec, &admin).unwrap();
}

/// `plain()` as containerd's CRI plugin gives it for container `c1` of the
/// pod whose sandbox is `pod-sandbox` and whose uid is `pod-uid`.
fn in_pod() -> Value {
    let mut spec = plain();
    spec["annotations"] = json!({
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "pod-sandbox",
        "io.kubernetes.cri.sandbox-uid": "pod-uid",
    });
    spec
}

#[test]
fn a_pod_container_mounts_only_its_own_pods_kubelet_and_containerd_files() {
    let bind = |source: &str| json!({"destination": "/x", "type": "bind", "source": source, "options": ["rbind", "rw"]});
    for (source, allowed) in [
        (
            "/var/lib/kubelet/pods/pod-uid/volumes/kubernetes.io~empty-dir/data",
            true,
        ),
        ("/var/lib/kubelet/pods/pod-uid/etc-hosts", true),
        ("/var/lib/kubelet/pods/pod-uid/containers/app/1234", true),
        (
            "/var/lib/kubelet/pods/other-uid/volumes/kubernetes.io~secret/token",
            false,
        ),
        ("/var/lib/kubelet/pods/pod-uid/../other-uid/etc-hosts", false),
        ("/var/lib/kubelet/pods", false),
        (
            "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/pod-sandbox/hosts",
            true,
        ),
        (
            "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/pod-sandbox/shm",
            true,
        ),
        (
            "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/other-sandbox/shm",
            false,
        ),
        // The container's own CRI directory (image volumes), by its id.
        (
            "/var/lib/containerd/io.containerd.grpc.v1.cri/containers/c1/volumes/v",
            true,
        ),
        (
            "/var/lib/containerd/io.containerd.grpc.v1.cri/containers/c2/volumes/v",
            false,
        ),
        ("/etc", false),
    ] {
        let mut spec = in_pod();
        spec["mounts"].as_array_mut().unwrap().push(bind(source));
        let result = enforce(&mut spec, &config(""));
        assert_eq!(
            result.is_ok(),
            allowed,
            "{source}: {:?}",
            result.err().map(|e| e.to_string())
        );
        if allowed {
            // The pod's own files stay as kubelet asked (emptyDir is writable).
            assert_eq!(spec["mounts"][3]["options"], json!(["rbind", "rw"]), "{source}");
        }
    }
    // Where kubelet and containerd keep them is the node's to say.
    let moved = config("[cri]\nkubelet_root = \"/data/kubelet\"\ncontainerd_state = \"/tmp/ctrd/state\"\n");
    for source in [
        "/data/kubelet/pods/pod-uid/etc-hosts",
        "/tmp/ctrd/state/io.containerd.grpc.v1.cri/sandboxes/pod-sandbox/shm",
    ] {
        let mut spec = in_pod();
        spec["mounts"].as_array_mut().unwrap().push(bind(source));
        enforce(&mut spec, &moved).unwrap();
    }
    let mut spec = in_pod();
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(bind("/var/lib/kubelet/pods/pod-uid/etc-hosts"));
    assert!(refused(spec, &moved).contains("host path /var/lib/kubelet/pods/pod-uid/etc-hosts"));
    // An annotation cannot walk out of the directory it names.
    let mut spec = in_pod();
    spec["annotations"]["io.kubernetes.cri.sandbox-uid"] = json!("..");
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(bind("/var/lib/kubelet/etc"));
    refused(spec, &config(""));
}

#[test]
fn listed_host_paths_are_mounted_read_only() {
    let admin = config("[ceiling]\nbind_mount_sources = [\"/srv/data\"]\n");
    let mut spec = in_pod();
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "bind", "source": "/srv/data/set", "options": ["rbind", "rw"]}));
    let prepared = enforce(&mut spec, &admin).unwrap();
    assert_eq!(spec["mounts"][3]["options"], json!(["rbind", "ro"]));
    assert!(
        fields(&prepared).contains(&"mounts[3].options (/data)"),
        "{:?}",
        fields(&prepared)
    );
}

#[test]
fn a_skill_in_the_image_root_sets_the_policy_and_an_annotation_only_tightens_it() {
    let image = image_with_skill(
        "  filesystem:\n    writable:\n      - { path: /out, size: 1Mi }\n  resources: { memory: 64Mi, timeout: 5s }\n",
    );
    let config = config("");
    let mut spec = in_pod();
    spec["root"]["path"] = json!(image.path().display().to_string());
    let prepared = enforce(&mut spec, &config).unwrap();
    assert_eq!(prepared.source, PolicySource::Image);
    assert_eq!(prepared.policy.resources.memory, "64Mi".parse().unwrap());
    assert_eq!(
        prepared.policy.resources.timeout.as_duration(),
        std::time::Duration::from_secs(5)
    );
    assert_eq!(prepared.skill.name.as_deref(), Some("imaged"));
    assert_eq!(prepared.skill.version.as_deref(), Some("2.0.0"));
    assert!(prepared
        .skill
        .digest
        .as_deref()
        .is_some_and(|d| d.starts_with("sha256:")));
    // Its writable directory exists even though the image has no /out.
    let out = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/out")
        .cloned()
        .unwrap();
    assert_eq!(out["type"], "tmpfs");
    assert!(out["options"]
        .as_array()
        .unwrap()
        .contains(&json!("size=1048576")));

    // A pod annotation lowers the memory and cannot raise the timeout.
    let mut annotated = node_default(&config.node);
    annotated.resources.memory = "32Mi".parse().unwrap();
    annotated.resources.timeout = "1m".parse().unwrap();
    annotated.writable = prepared.policy.writable.clone();
    let mut spec = in_pod();
    spec["root"]["path"] = json!(image.path().display().to_string());
    spec["annotations"][annotations::POLICY] = json!(serde_json::to_string(&annotated).unwrap());
    let tightened = enforce(&mut spec, &config).unwrap();
    assert_eq!(tightened.source, PolicySource::Image);
    assert_eq!(tightened.policy.resources.memory, "32Mi".parse().unwrap());
    assert_eq!(
        tightened.policy.resources.timeout.as_duration(),
        std::time::Duration::from_secs(5)
    );
}

#[test]
fn an_image_skill_above_the_ceiling_is_refused_naming_field_value_and_ceiling() {
    let image = image_with_skill("  resources: { memory: 4Gi }\n");
    let mut spec = in_pod();
    spec["root"]["path"] = json!(image.path().display().to_string());
    let err = enforce(&mut spec, &config("")).unwrap_err().to_string();
    assert!(
        err.contains("resources.memory") && err.contains("4Gi") && err.contains("2Gi"),
        "{err}"
    );
    assert!(err.contains("skill/SKILL.md"), "{err}");
}

#[test]
fn a_skill_directory_that_is_a_symlink_is_not_read() {
    let image = image_with_skill("");
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(image.path().join("skill"), root.path().join("skill")).unwrap();
    let mut spec = in_pod();
    spec["root"]["path"] = json!(root.path().display().to_string());
    assert_eq!(
        enforce(&mut spec, &config("")).unwrap().source,
        PolicySource::NodeDefault
    );
}

#[test]
fn unknown_mount_types_and_hooks_are_refused() {
    let mut spec = plain();
    spec["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/x", "type": "overlay", "source": "overlay", "options": ["lowerdir=/"]}),
    );
    spec["hooks"] = json!({"prestart": [{"path": "/usr/bin/evil"}], "poststop": []});
    let err = refused(spec, &config(""));
    assert!(
        err.ends_with("mounts[3].type (/x): \"overlay\": expected one of bind, tmpfs, proc, sysfs, devpts, mqueue, cgroup, cgroup2; hooks.prestart: /usr/bin/evil: hooks run on the host, outside the sandbox; expected none"),
        "{err}"
    );
}

#[test]
fn sys_and_cgroup_mounts_are_made_read_only() {
    let mut spec = plain();
    spec["mounts"][2]["options"] = json!(["nosuid", "rw"]);
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}));
    let prepared = enforce(&mut spec, &config("")).unwrap();
    assert_eq!(spec["mounts"][2]["options"], json!(["nosuid", "ro"]));
    assert_eq!(spec["mounts"][3]["options"], json!(["ro"]));
    let rendered: Vec<String> = prepared.changes.iter().map(ToString::to_string).collect();
    assert!(rendered.contains(&"mounts[2].options (/sys): nosuid,rw -> nosuid,ro".to_owned()));
}

#[test]
fn missing_pieces_are_filled_in() {
    let mut spec = json!({"process": {"args": ["sh"]}, "root": {"path": "rootfs", "readonly": false}});
    let err = refused(spec.clone(), &config(""));
    assert_eq!(err.matches("linux.namespaces: no ").count(), 5, "{err}");
    spec["linux"] = json!({"namespaces": plain()["linux"]["namespaces"]});
    let prepared = enforce(&mut spec, &config("")).unwrap();
    assert_eq!(spec["linux"]["cgroupsPath"], json!("/skillbox/c1"));
    assert_eq!(spec["process"]["noNewPrivileges"], json!(true));
    assert!(fields(&prepared).contains(&"linux.cgroupsPath"));
    assert!(!fields(&prepared).contains(&"process.capabilities"));
    assert!(refused(json!([1]), &config("")).contains("not a JSON object"));
}

/// A compiled skill's spec: the policy in the annotation, limits already
/// the policy's.
fn compiled(policy: &EffectivePolicy) -> Value {
    let mut spec = plain();
    let config = config("");
    enforce(&mut spec, &config).unwrap();
    spec["annotations"] = json!({
        annotations::POLICY: serde_json::to_string(policy).unwrap(),
        annotations::RUNSC_FLAGS: "{\"network\":\"host\",\"platform\":\"kvm\",\"overlay\":false}",
    });
    spec
}

#[test]
fn a_compiled_policy_is_used_and_held_within_the_ceiling() {
    let mut policy = node_default(&NodeConfig::default());
    policy.resources.memory = ByteSize::mebibytes(512);
    let mut spec = compiled(&policy);
    let prepared = enforce(&mut spec, &config("")).unwrap();
    assert_eq!(prepared.source, PolicySource::Bundle);
    assert_eq!(prepared.policy, policy);
    // The bundle cannot choose its runsc flags.
    assert_eq!(
        prepared.runsc_flags.to_args(),
        ["--network=none", "--platform=ptrace"]
    );
    assert_eq!(fields(&prepared), ["annotations.\"io.skillbox.runsc.flags\""]);
    // The spec's memory (256Mi from the plain default) is below the policy's 512Mi.
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], json!(256 << 20));

    policy.resources.memory = ByteSize::mebibytes(4096);
    let err = enforce(&mut compiled(&policy), &config(""))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("{BUNDLE}/config.json: annotations.\"io.skillbox.policy\".resources.memory: asks for 4Gi, above the node ceiling 2Gi (ceiling.memory in node.toml)")
    );
    let clamp = config("[ceiling]\nmode = \"clamp\"\n");
    let mut spec = compiled(&policy);
    spec["linux"]["resources"]["memory"]["limit"] = json!(4i64 << 30);
    let prepared = enforce(&mut spec, &clamp).unwrap();
    assert_eq!(prepared.policy.resources.memory, ByteSize::mebibytes(2048));
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], json!(2i64 << 30));

    let mut spec = compiled(&policy);
    spec["annotations"][annotations::POLICY] = json!("{\"entrypoint\": 3}");
    let err = enforce(&mut spec, &config("")).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{BUNDLE}/config.json: annotations.\"io.skillbox.policy\": not a valid effective policy: "
        )),
        "{err}"
    );
}

#[test]
fn a_bundle_cannot_lower_the_audit_level_below_the_node_minimum() {
    let mut policy = node_default(&NodeConfig::default());
    policy.audit = AuditLevel::None;
    let mut spec = compiled(&policy);
    let prepared = enforce(&mut spec, &config("")).unwrap();
    assert_eq!(prepared.policy.audit, AuditLevel::Security);
    let raised = &prepared.changes[0];
    assert_eq!(raised.field, "annotations.\"io.skillbox.policy\"");
    assert!(
        raised
            .to
            .contains("raised from none to the node minimum security"),
        "{raised:?}"
    );
    // The policy written back into the spec is the raised one.
    let written: EffectivePolicy =
        serde_json::from_str(spec["annotations"][annotations::POLICY].as_str().unwrap()).unwrap();
    assert_eq!(written.audit, AuditLevel::Security);
    let prepared = enforce(
        &mut compiled(&policy),
        &config("[audit]\nmin_syscalls = \"all\"\n"),
    )
    .unwrap();
    assert_eq!(prepared.policy.audit, AuditLevel::All);
    let prepared = enforce(
        &mut compiled(&policy),
        &config("[audit]\nmin_syscalls = \"none\"\n"),
    )
    .unwrap();
    assert_eq!(prepared.policy.audit, AuditLevel::None);
}

#[test]
fn egress_in_a_policy_runs_on_the_namespace_the_shim_makes() {
    let mut policy = node_default(&NodeConfig::default());
    policy.network.allow = vec![serde_json::from_value(json!({"domain": "example.com"})).unwrap()];
    let mut spec = compiled(&policy);
    let prepared = enforce(&mut spec, &config("")).unwrap();
    assert_eq!(prepared.runsc_flags.network, runsc_config::NetworkMode::Host);
    assert_eq!(
        spec["annotations"][annotations::RUNSC_FLAGS],
        json!(serde_json::to_string(&prepared.runsc_flags).unwrap())
    );
    let without = enforce(&mut compiled(&node_default(&NodeConfig::default())), &config("")).unwrap();
    assert_eq!(without.runsc_flags.network, runsc_config::NetworkMode::None);
}

#[test]
fn the_real_host_knows_its_own_namespaces() {
    assert!(RealHost.is_own_namespace("net", Path::new("/proc/self/ns/net")));
    assert!(!RealHost.is_own_namespace("net", Path::new("/proc/self/ns/pid")));
    assert!(!RealHost.is_own_namespace("net", Path::new("/nonexistent/ns")));
}

#[test]
fn an_exec_gets_no_capabilities_and_the_init_processs_user() {
    let init = json!({"user": {"uid": 65534, "gid": 65534}, "capabilities": {"bounding": []}});
    let mut exec = json!({
        "args": ["sh"],
        "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": ["CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"]},
        "noNewPrivileges": false
    });
    let changes = enforce_exec_process(&mut exec, &init);
    assert_eq!(exec["user"], json!({"uid": 65534, "gid": 65534}));
    assert_eq!(exec["capabilities"]["bounding"], json!([]));
    assert_eq!(exec["capabilities"]["effective"], json!([]));
    assert_eq!(exec["noNewPrivileges"], json!(true));
    assert_eq!(exec["args"], json!(["sh"]));
    let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        ["process.capabilities", "process.noNewPrivileges", "process.user"]
    );

    let mut tight = exec.clone();
    assert!(enforce_exec_process(&mut tight, &init).is_empty());
}

#[test]
fn a_compiled_skill_mount_is_allowed_only_for_the_compiled_skill() {
    let with_skill = |source: &str, options: Value| {
        let mut spec = compiled(&node_default(&NodeConfig::default()));
        spec["annotations"][annotations::SKILL_DIGEST] = json!("sha256:hello");
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/skill", "type": "bind", "source": source, "options": options}));
        spec
    };
    let config = config("");
    let ro = json!(["rbind", "ro"]);
    enforce(&mut with_skill("/compiled/hello/skill", ro.clone()), &config).unwrap();

    let other = refused(with_skill("/compiled/evil/skill", ro.clone()), &config);
    assert!(
        other.contains("mounts[")
            && other.contains("host path /compiled/evil/skill")
            && other.contains("sha256:evil")
            && other.contains(annotations::SKILL_DIGEST),
        "{other}"
    );
    let not_a_skill = refused(with_skill("/etc", ro), &config);
    assert!(not_a_skill.contains("no skill package"), "{not_a_skill}");
    // Writable, or elsewhere than /skill: an ordinary host bind, refused.
    let writable = refused(
        with_skill("/compiled/hello/skill", json!(["rbind", "rw"])),
        &config,
    );
    assert!(writable.contains("ceiling.bind_mount_sources"), "{writable}");
}
