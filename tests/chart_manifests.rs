//! What the Helm chart's rendered objects hold, where other code relies on
//! it: the RuntimeClass, the node config (parsed as `NodeConfig`), the
//! installer's, uninstall hook's and exporter's command lines and
//! confinement (and that this tree's `skillbox` accepts every command
//! line), the mounts, RBAC and the Service. The chart as a whole (lint,
//! schemas, goldens) is checked in `chart.rs`.

use std::path::PathBuf;
use std::process::Command;

use policy_compiler::NodeConfig;
use serde_json::{json, Value};
use skillbox_test_support::chart::{
    container, documents, find, pod_spec, render, rendered_with, run, strings, text, values_file, NAMESPACE,
    VALUES_SETS,
};

#[test]
fn the_runtime_class_names_the_skillbox_handler_with_the_measured_overhead() {
    for (set, memory, cpu) in [("defaults", "25Mi", "50m"), ("full", "32Mi", "100m")] {
        let docs = documents(&render(set));
        let class = find(&docs, "RuntimeClass", "skillbox");
        assert_eq!(class["apiVersion"], "node.k8s.io/v1");
        assert_eq!(class["handler"], "skillbox");
        assert_eq!(
            class["overhead"],
            json!({"podFixed": {"memory": memory, "cpu": cpu}})
        );
        assert_eq!(
            class["scheduling"]["nodeSelector"],
            json!({"skillbox.dev/runtime": "ready"})
        );
        let daemonset = find(&docs, "DaemonSet", "skillbox");
        assert_eq!(
            class["scheduling"].get("tolerations"),
            pod_spec(daemonset).get("tolerations"),
            "{set}: the RuntimeClass tolerates what the DaemonSet does"
        );
    }
}

/// The node config the ConfigMap carries, parsed as the installer will.
fn node_config(docs: &[Value], set: &str) -> (String, NodeConfig) {
    let map = find(docs, "ConfigMap", "skillbox");
    let toml = map["data"]["config.toml"]
        .as_str()
        .expect("config.toml in the ConfigMap")
        .to_owned();
    let origin = PathBuf::from(format!("{set}: config.toml"));
    let config = NodeConfig::from_toml(&origin, &toml).unwrap_or_else(|err| {
        panic!("{set}: the rendered config.toml is not a valid node config: {err}\n{toml}")
    });
    (toml, config)
}

#[test]
fn the_rendered_node_config_parses_as_a_node_config() {
    for set in VALUES_SETS {
        let docs = documents(&render(set));
        let (toml, config) = node_config(&docs, set);
        if set != "full" {
            assert_eq!(
                config,
                NodeConfig::default(),
                "{set}: empty nodeConfig, built-in values\n{toml}"
            );
        }
    }
    let docs = documents(&render("full"));
    let (toml, config) = node_config(&docs, "full");
    assert!(toml.contains("\npids = 128\n"), "integers stay integers:\n{toml}");
    let config = serde_json::to_value(&config).unwrap();
    for (pointer, expected) in [
        ("/ceiling/mode", json!("clamp")),
        ("/ceiling/pids", json!(128)),
        ("/ceiling/memory", json!("1Gi")),
        ("/ceiling/timeout", json!("5m")),
        (
            "/ceiling/allowed_domain_suffixes",
            json!(["weather.gov", "noaa.gov"]),
        ),
        ("/ceiling/env_pass_allow", json!(["WEATHER_API_KEY"])),
        ("/defaults/pids", json!(32)),
        ("/runsc/platform", json!("systrap")),
        ("/egress/dns_upstreams", json!(["10.96.0.10:53", "10.96.0.11:53"])),
        ("/audit/keep_files", json!(8)),
        ("/audit/event_budget", json!(250000)),
        ("/audit/min_syscalls", json!("all")),
        ("/cri/kubelet_root", json!("/srv/kubelet")),
        ("/cri/sandbox_memory", json!("96Mi")),
    ] {
        assert_eq!(config.pointer(pointer), Some(&expected), "{pointer} in {config}");
    }
}

#[test]
fn the_installer_runs_privileged_with_the_host_root_and_the_agreed_arguments() {
    let docs = documents(&render("defaults"));
    let daemonset = find(&docs, "DaemonSet", "skillbox");
    assert_eq!(daemonset["spec"]["updateStrategy"]["type"], "RollingUpdate");
    let pod = pod_spec(daemonset);
    assert_eq!(pod["hostPID"], true);
    let install = container(pod, "initContainers", "install");
    assert_eq!(
        strings(&install["command"]),
        [
            "/opt/skillbox/bin/skillbox",
            "node",
            "install",
            "--host-root",
            "/host",
            "--shim",
            "/opt/skillbox/bin/containerd-shim-skillbox-v1",
            "--cli",
            "/opt/skillbox/bin/skillbox",
            "--runsc",
            "/opt/skillbox/bin/runsc",
            "--node-config",
            "/etc/skillbox-chart/config.toml",
            "--node-name",
            "$(NODE_NAME)",
            "--containerd-unit",
            "containerd",
            "--cri-socket",
            "/run/containerd/containerd.sock",
        ]
    );
    assert_eq!(install["image"], "localhost/skillbox/node:0.1.0");
    assert_eq!(install["securityContext"]["privileged"], true);
    assert_eq!(
        install["env"][0],
        json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    );
    let volumes = &pod["volumes"];
    let host_root = volumes
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "host-root")
        .unwrap();
    assert_eq!(host_root["hostPath"], json!({"path": "/", "type": "Directory"}));

    let metrics = container(pod, "containers", "metrics");
    assert_eq!(
        strings(&metrics["command"]),
        [
            "/opt/skillbox/bin/skillbox",
            "metrics-server",
            "--listen",
            "0.0.0.0:9464"
        ]
    );
    let security = &metrics["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    for mount in metrics["volumeMounts"].as_array().unwrap() {
        assert_eq!(mount["readOnly"], true, "metrics mounts read-only: {mount}");
    }
    assert_eq!(metrics["livenessProbe"]["httpGet"]["path"], "/metrics");
    assert_eq!(metrics["readinessProbe"]["httpGet"]["path"], "/metrics");
    assert!(
        pod["containers"].as_array().unwrap().len() == 1,
        "no audit exporter by default"
    );

    // The other values sets reach the same places.
    let docs = documents(&render("full"));
    let pod = pod_spec(find(&docs, "DaemonSet", "skillbox"));
    let install = strings(&container(pod, "initContainers", "install")["command"]).join(" ");
    assert!(
        install.ends_with(
            "--containerd-unit containerd-cri.service --cri-socket /run/containerd-cri/containerd.sock"
        ),
        "{install}"
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["nodeSelector"]["node-role.example.com/skills"], "true");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    let uninstall = find(&docs, "DaemonSet", "skillbox-uninstall");
    let uninstall =
        strings(&container(pod_spec(uninstall), "initContainers", "uninstall")["command"]).join(" ");
    assert!(
        uninstall.ends_with(
            "--containerd-unit containerd-cri.service --cri-socket /run/containerd-cri/containerd.sock --force"
        ),
        "{uninstall}"
    );
    let job = find(&docs, "Job", "skillbox-uninstall-wait");
    assert_eq!(
        strings(&pod_spec(job)["containers"][0]["command"]).last(),
        Some(&"600")
    );
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 660);
    let namespace = find(&docs, "Namespace", NAMESPACE);
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}

#[test]
fn a_restart_command_replaces_the_containerd_unit_for_install_and_uninstall() {
    let docs = documents(&rendered_with(&[
        "--set",
        "containerd.restartCommand=rc-service containerd restart",
    ]));
    for (daemonset, init) in [("skillbox", "install"), ("skillbox-uninstall", "uninstall")] {
        let pod = pod_spec(find(&docs, "DaemonSet", daemonset));
        let command = strings(&container(pod, "initContainers", init)["command"]);
        assert!(!command.contains(&"--containerd-unit"), "{command:?}");
        let at = command
            .iter()
            .position(|a| *a == "--restart-command")
            .expect("--restart-command");
        assert_eq!(command[at + 1], "rc-service containerd restart");
    }
}

#[test]
fn an_audit_log_dir_elsewhere_is_mounted_where_the_node_config_says() {
    let docs = documents(&rendered_with(&[
        "--set",
        "nodeConfig.audit.log_dir=/data/skillbox-audit",
        "--values",
        values_file("audit-export").to_str().unwrap(),
    ]));
    let pod = pod_spec(find(&docs, "DaemonSet", "skillbox"));
    for name in ["metrics", "audit-export"] {
        let mounts = container(pod, "containers", name)["volumeMounts"]
            .as_array()
            .unwrap()
            .clone();
        assert!(
            mounts.contains(
                &json!({"name": "audit-log-dir", "mountPath": "/data/skillbox-audit", "readOnly": true})
            ),
            "{name}: {mounts:?}"
        );
    }
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "audit-log-dir")
        .unwrap();
    assert_eq!(volume["hostPath"]["path"], "/data/skillbox-audit");
    // Under /var/log/skillbox, the one mount covers it.
    let rendered = rendered_with(&["--set", "nodeConfig.audit.log_dir=/var/log/skillbox/pods"]);
    assert!(rendered.contains("kind: DaemonSet") && !rendered.contains("audit-log-dir"));
}

/// Every `skillbox` command line in `docs`: (where, argv after the program).
fn skillbox_commands(docs: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut commands = Vec::new();
    for doc in docs {
        let pod = pod_spec(doc);
        for list in ["initContainers", "containers"] {
            for container in pod[list].as_array().into_iter().flatten() {
                let Some(command) = container["command"].as_array() else {
                    continue;
                };
                let argv: Vec<String> = command.iter().map(|a| a.as_str().unwrap().to_owned()).collect();
                if argv.first().map(String::as_str) == Some("/opt/skillbox/bin/skillbox") {
                    let at = format!(
                        "{} {} {}",
                        doc["kind"], doc["metadata"]["name"], container["name"]
                    );
                    commands.push((at, argv[1..].to_vec()));
                }
            }
        }
    }
    commands
}

#[test]
fn the_charts_command_lines_parse_with_this_skillbox() {
    // With --help appended, clap still refuses an unknown flag or a bad
    // value met before it, then prints help and exits 0.
    let mut seen = std::collections::BTreeSet::new();
    for (label, args) in [
        (
            "defaults",
            vec![
                "--values".to_owned(),
                values_file("defaults").display().to_string(),
            ],
        ),
        (
            "audit-export",
            vec![
                "--values".to_owned(),
                values_file("audit-export").display().to_string(),
            ],
        ),
        (
            "full",
            vec!["--values".to_owned(), values_file("full").display().to_string()],
        ),
        (
            "restart command",
            vec![
                "--set".to_owned(),
                "containerd.restartCommand=rc-service containerd restart".to_owned(),
            ],
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let docs = documents(&rendered_with(&args));
        for (at, argv) in skillbox_commands(&docs) {
            let output = run(
                Command::new(env!("CARGO_BIN_EXE_skillbox"))
                    .args(&argv)
                    .arg("--help"),
                None,
            );
            assert!(
                output.status.success(),
                "{label}: {at}: skillbox {argv:?} does not parse: {}",
                text(&output)
            );
            seen.insert(argv[..2].join(" "));
        }
    }
    let expected = [
        "audit export",
        "metrics-server --listen",
        "node install",
        "node uninstall",
        "node wait-daemonset",
    ];
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected);
}

#[test]
fn the_audit_exporter_reads_its_database_from_the_secret() {
    let docs = documents(&render("audit-export"));
    let pod = pod_spec(find(&docs, "DaemonSet", "skillbox"));
    let export = container(pod, "containers", "audit-export");
    assert_eq!(
        strings(&export["command"]),
        [
            "/opt/skillbox/bin/skillbox",
            "audit",
            "export",
            "--follow",
            "--cursor",
            "/var/lib/skillbox/audit-export/cursor",
        ]
    );
    assert_eq!(
        export["env"],
        json!([{
            "name": "SKILLBOX_REGISTRY_DATABASE",
            "valueFrom": {"secretKeyRef": {"name": "registry-database", "key": "conninfo"}}
        }])
    );
    let security = &export["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    for mount in export["volumeMounts"].as_array().unwrap() {
        let writable = mount["mountPath"] == "/var/lib/skillbox/audit-export";
        assert_eq!(mount["readOnly"].as_bool().unwrap_or(false), !writable, "{mount}");
    }
    let rendered = serde_json::to_string(&docs).unwrap();
    assert!(
        !rendered.contains("postgres"),
        "no connection string in the manifests"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    let cursor = volumes
        .iter()
        .find(|v| v["name"] == "audit-export-cursor")
        .unwrap();
    assert_eq!(
        cursor["hostPath"],
        json!({"path": "/var/lib/skillbox/audit-export", "type": "DirectoryOrCreate"})
    );
}

#[test]
fn uninstall_runs_as_pre_delete_hooks_in_order() {
    let docs = documents(&render("defaults"));
    let daemonset = find(&docs, "DaemonSet", "skillbox-uninstall");
    let job = find(&docs, "Job", "skillbox-uninstall-wait");
    for (hook, weight) in [(daemonset, "-5"), (job, "0")] {
        let annotations = &hook["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/hook"], "pre-delete");
        assert_eq!(annotations["helm.sh/hook-weight"], weight);
        assert_eq!(
            annotations["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded"
        );
    }
    let pod = pod_spec(daemonset);
    assert_eq!(
        strings(&container(pod, "initContainers", "uninstall")["command"]),
        [
            "/opt/skillbox/bin/skillbox",
            "node",
            "uninstall",
            "--host-root",
            "/host",
            "--node-name",
            "$(NODE_NAME)",
            "--containerd-unit",
            "containerd",
            "--cri-socket",
            "/run/containerd/containerd.sock",
        ]
    );
    assert_eq!(
        container(pod, "containers", "wait")["image"],
        "registry.k8s.io/pause:3.10"
    );
    assert_eq!(
        strings(&pod_spec(job)["containers"][0]["command"]),
        [
            "/opt/skillbox/bin/skillbox",
            "node",
            "wait-daemonset",
            "--namespace",
            NAMESPACE,
            "--name",
            "skillbox-uninstall",
            "--timeout",
            "300",
        ]
    );
    // The two DaemonSets never select each other's pods.
    let node = find(&docs, "DaemonSet", "skillbox");
    assert_ne!(node["spec"]["selector"], daemonset["spec"]["selector"]);
    assert_eq!(
        pod_spec(daemonset)["nodeSelector"],
        pod_spec(node)["nodeSelector"],
        "uninstall runs where install ran"
    );
}

#[test]
fn rbac_grants_only_node_labelling_and_reading_the_uninstall_daemonset() {
    let docs = documents(&render("defaults"));
    let cluster_role = find(&docs, "ClusterRole", "skillbox");
    assert_eq!(
        cluster_role["rules"],
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}])
    );
    let role = find(&docs, "Role", "skillbox-uninstall");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        role["rules"],
        json!([{
            "apiGroups": ["apps"],
            "resources": ["daemonsets"],
            "resourceNames": ["skillbox-uninstall"],
            "verbs": ["get"]
        }])
    );
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| k.contains("Role")).count(),
        4,
        "{kinds:?}"
    );
    let service = find(&docs, "Service", "skillbox-metrics");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(
        service["spec"]["selector"],
        find(&docs, "DaemonSet", "skillbox")["spec"]["selector"]["matchLabels"]
    );
}
