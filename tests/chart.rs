//! The Helm chart `charts/skillbox`, rendered with the real helm and checked
//! offline: `helm lint`, the values schema refusing bad values with their
//! messages, every rendered manifest validated against the Kubernetes
//! 1.30 and newest OpenAPI schemas (kubernetes-validate, strict), the
//! ServiceMonitor against `tests/chart/servicemonitor.schema.json`, golden
//! manifests under `tests/golden/chart/`, and the parts other code relies on:
//! the RuntimeClass, the installer's and the uninstall hook's command lines,
//! and the node config, which must parse as `NodeConfig`.
//!
//! The tools come from `scripts/fetch-chart-tools.sh` (pinned, cached under
//! target/skillbox-cache/chart-tools; run once per test binary). A tool that
//! cannot be had fails the tests with its name: nothing is skipped.
//!
//! Regenerate the golden files after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --test chart`.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use policy_compiler::NodeConfig;
use serde_json::{json, Value};

const RELEASE: &str = "skillbox";
const NAMESPACE: &str = "skillbox";
/// The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
/// newest kubernetes-validate ships schemas for.
const KUBE_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
/// The values sets under tests/chart/values/, each with a golden rendering.
const VALUES_SETS: [&str; 3] = ["defaults", "audit-export", "full"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("charts/skillbox")
}

fn values_file(set: &str) -> PathBuf {
    repo().join("tests/chart/values").join(format!("{set}.yaml"))
}

fn update_golden() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0")
}

struct Tools {
    helm: PathBuf,
    validate: PathBuf,
    python: PathBuf,
}

/// Fetches the tools once (the script does nothing when they are there)
/// and checks each is present.
fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let output = Command::new("bash")
            .arg("scripts/fetch-chart-tools.sh")
            .current_dir(repo())
            .output()
            .expect("run bash scripts/fetch-chart-tools.sh");
        assert!(
            output.status.success(),
            "scripts/fetch-chart-tools.sh failed (helm, kubectl and kubernetes-validate are needed for the chart tests):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"));
        let dir = repo().join(target).join("skillbox-cache/chart-tools");
        let tools = Tools {
            helm: dir.join("bin/helm"),
            validate: dir.join("venv/bin/kubernetes-validate"),
            python: dir.join("venv/bin/python"),
        };
        for (name, path) in [
            ("helm", &tools.helm),
            ("kubernetes-validate", &tools.validate),
            ("python (the kubernetes-validate venv)", &tools.python),
        ] {
            assert!(path.is_file(), "{name} missing at {} after fetch-chart-tools.sh", path.display());
        }
        tools
    })
}

fn run(command: &mut Command, stdin: Option<&str>) -> Output {
    let described = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {described}: {err}"));
    let mut pipe = child.stdin.take().expect("stdin piped");
    pipe.write_all(stdin.unwrap_or("").as_bytes())
        .unwrap_or_else(|err| panic!("writing to {described}: {err}"));
    drop(pipe);
    child
        .wait_with_output()
        .unwrap_or_else(|err| panic!("waiting for {described}: {err}"))
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `helm template` of the chart with these arguments (values files, --set).
fn template(args: &[&str]) -> Output {
    let mut command = Command::new(&tools().helm);
    command
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[0]])
        .args(args);
    run(&mut command, None)
}

fn render(set: &str) -> String {
    let values = values_file(set);
    let output = template(&["--values", values.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "helm template with {set}.yaml: {}",
        text(&output)
    );
    String::from_utf8(output.stdout).expect("helm prints UTF-8")
}

/// The rendered documents as JSON (PyYAML from the tools' venv reads them).
fn documents(rendered: &str) -> Vec<Value> {
    let output = run(
        Command::new(&tools().python).arg(repo().join("tests/chart/manifests.py")),
        Some(rendered),
    );
    assert!(
        output.status.success(),
        "tests/chart/manifests.py: {}",
        text(&output)
    );
    match serde_json::from_slice(&output.stdout).expect("manifests.py prints JSON") {
        Value::Array(docs) => docs,
        other => panic!("manifests.py printed {other}"),
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {pod}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry {name}"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

#[test]
fn helm_lint_passes_strict_for_every_values_set() {
    for set in VALUES_SETS {
        let values = values_file(set);
        for strict in [false, true] {
            let mut command = Command::new(&tools().helm);
            command
                .arg("lint")
                .arg(chart_dir())
                .args(["--values", values.to_str().unwrap()]);
            if strict {
                command.arg("--strict");
            }
            let output = run(&mut command, None);
            let out = text(&output);
            assert!(
                output.status.success(),
                "helm lint (strict {strict}) with {set}.yaml: {out}"
            );
            assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{out}");
            assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "{out}");
        }
    }
}

#[test]
fn every_rendering_matches_its_golden_file() {
    for set in VALUES_SETS {
        let rendered = render(set);
        let golden = repo().join("tests/golden/chart").join(format!("{set}.yaml"));
        if update_golden() {
            fs::create_dir_all(golden.parent().unwrap()).unwrap();
            fs::write(&golden, &rendered).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&golden)
            .unwrap_or_else(|err| panic!("{}: {err} (UPDATE_GOLDEN=1 writes it)", golden.display()));
        assert!(
            rendered == expected,
            "helm template with {set}.yaml differs from {}; if intended, regenerate with UPDATE_GOLDEN=1 cargo test --test chart\n{rendered}",
            golden.display()
        );
    }
}

/// Validates `rendered` against the Kubernetes schemas of `version`; every
/// document must pass and every kind but ServiceMonitor must have a schema.
fn validate_against_kubernetes(set: &str, rendered: &str, version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{set}.yaml"));
    fs::write(&file, rendered).unwrap();
    let output = run(
        Command::new(&tools().validate)
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file),
        None,
    );
    let out = text(&output);
    assert!(
        output.status.success(),
        "kubernetes-validate {version} of {set}.yaml: {out}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let passed = stdout
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    let no_schema: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("Couldn't find schema"))
        .collect();
    let service_monitors = rendered.matches("\nkind: ServiceMonitor\n").count();
    assert_eq!(
        no_schema.len(),
        service_monitors,
        "only ServiceMonitor may lack a schema: {out}"
    );
    assert!(
        no_schema.iter().all(|l| l.contains("kind ServiceMonitor")),
        "{out}"
    );
    let documents = rendered.matches("\n---\n").count() + usize::from(rendered.starts_with("---\n"));
    assert_eq!(
        passed + service_monitors,
        documents,
        "every document checked: {out}"
    );
}

#[test]
fn every_rendering_validates_against_kubernetes_schemas() {
    for set in VALUES_SETS {
        let rendered = render(set);
        for version in KUBE_VERSIONS {
            validate_against_kubernetes(set, &rendered, version);
        }
    }
}

#[test]
fn the_service_monitor_validates_against_its_schema_and_is_off_by_default() {
    let schema = repo().join("tests/chart/servicemonitor.schema.json");
    let rendered = render("full");
    let output = run(
        Command::new(&tools().python)
            .arg(repo().join("tests/chart/manifests.py"))
            .arg("--validate")
            .arg(&schema)
            .args(["--kind", "ServiceMonitor"]),
        Some(&rendered),
    );
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("checked 1 ServiceMonitor, 0 errors"), "{out}");

    // The schema does catch a misspelled field.
    let broken = rendered.replace("scrapeTimeout: 10s", "scrapeTimout: 10s");
    assert_ne!(broken, rendered);
    let output = run(
        Command::new(&tools().python)
            .arg(repo().join("tests/chart/manifests.py"))
            .arg("--validate")
            .arg(&schema)
            .args(["--kind", "ServiceMonitor"]),
        Some(&broken),
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("'scrapeTimout' was unexpected"),
        "{}",
        text(&output)
    );

    let docs = documents(&render("full"));
    let monitor = find(&docs, "ServiceMonitor", "skillbox");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
    for set in ["defaults", "audit-export"] {
        assert!(
            !render(set).contains("ServiceMonitor"),
            "{set}: no ServiceMonitor unless enabled"
        );
    }
}

/// Renders with `args` and returns helm's error output, which must fail.
fn rejected(args: &[&str]) -> String {
    let output = template(args);
    assert!(!output.status.success(), "helm template {args:?} was accepted");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        stderr.contains("values don't meet the specifications of the schema"),
        "{args:?}: {stderr}"
    );
    stderr
}

#[test]
fn the_values_schema_rejects_bad_values_with_their_names() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--set", "metrics.port=abc"],
            &["metrics.port: Invalid type. Expected: integer, given: string"],
        ),
        (
            &["--set", "uninstall.timeoutSeconds=soon"],
            &["uninstall.timeoutSeconds: Invalid type. Expected: integer, given: string"],
        ),
        (
            &["--set", "namespace.create=maybe"],
            &["namespace.create: Invalid type. Expected: boolean, given: string"],
        ),
        (
            &["--set", "metricz.port=9464"],
            &["(root): Additional property metricz is not allowed"],
        ),
        (
            &["--set", "image.tagg=1"],
            &["image: Additional property tagg is not allowed"],
        ),
        (
            &["--set", "nodeConfig.ceilling.cpus=1"],
            &["nodeConfig: Additional property ceilling is not allowed"],
        ),
        (
            &["--set", "nodeConfig.ceiling.memroy=1Gi"],
            &["nodeConfig.ceiling: Additional property memroy is not allowed"],
        ),
        (
            &["--set", "nodeConfig.ceiling.mode=soft"],
            &[
                r#"nodeConfig.ceiling.mode: nodeConfig.ceiling.mode must be one of the following: "reject", "clamp""#,
            ],
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            &[
                r#"image.pullPolicy: image.pullPolicy must be one of the following: "Always", "IfNotPresent", "Never""#,
            ],
        ),
        (
            &["--set", "auditExport.enabled=true"],
            &[
                "auditExport.databaseSecret.name: String length must be greater than or equal to 1",
                "auditExport.databaseSecret.key: String length must be greater than or equal to 1",
            ],
        ),
        (
            &[
                "--set",
                "auditExport.enabled=true",
                "--set",
                "auditExport.databaseSecret.name=db",
            ],
            &["auditExport.databaseSecret.key: String length must be greater than or equal to 1"],
        ),
        (
            &["--set", "runtimeClass.overhead.memory=25MB"],
            &["runtimeClass.overhead.memory: Does not match pattern"],
        ),
        (
            &["--set", "runtimeClass.overhead.cpu=fast"],
            &["runtimeClass.overhead.cpu: Does not match pattern"],
        ),
        (
            &["--set", "nodeConfig.defaults.memory=64MB"],
            &["nodeConfig.defaults.memory: Does not match pattern"],
        ),
        (
            &["--set", "nodeConfig.ceiling.timeout=30"],
            &["nodeConfig.ceiling.timeout: Invalid type. Expected: string, given: integer"],
        ),
        (
            &["--set", "containerd.socket=run/containerd.sock"],
            &["containerd.socket: Does not match pattern '^/'"],
        ),
        (
            &["--set", "tolerations[0].effect=Sometimes"],
            &["tolerations.0.effect: tolerations.0.effect must be one of the following"],
        ),
    ];
    for (args, messages) in cases {
        let stderr = rejected(args);
        for message in *messages {
            assert!(
                stderr.contains(message),
                "{args:?}: expected {message:?} in:\n{stderr}"
            );
        }
    }
    // With both, the audit exporter is accepted.
    let output = template(&[
        "--set",
        "auditExport.enabled=true",
        "--set",
        "auditExport.databaseSecret.name=db",
        "--set",
        "auditExport.databaseSecret.key=url",
    ]);
    assert!(output.status.success(), "{}", text(&output));
}

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
            daemonset["spec"]["template"]["spec"].get("tolerations"),
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
    let pod = &daemonset["spec"]["template"]["spec"];
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
    let pod = &find(&docs, "DaemonSet", "skillbox")["spec"]["template"]["spec"];
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
    let uninstall = strings(
        &container(
            &uninstall["spec"]["template"]["spec"],
            "initContainers",
            "uninstall",
        )["command"],
    )
    .join(" ");
    assert!(
        uninstall.ends_with(
            "--containerd-unit containerd-cri.service --cri-socket /run/containerd-cri/containerd.sock --force"
        ),
        "{uninstall}"
    );
    let job = find(&docs, "Job", "skillbox-uninstall-wait");
    assert_eq!(
        strings(&job["spec"]["template"]["spec"]["containers"][0]["command"]).last(),
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
    let output = template(&["--set", "containerd.restartCommand=rc-service containerd restart"]);
    assert!(output.status.success(), "{}", text(&output));
    let docs = documents(&String::from_utf8(output.stdout).unwrap());
    for (daemonset, init) in [("skillbox", "install"), ("skillbox-uninstall", "uninstall")] {
        let pod = &find(&docs, "DaemonSet", daemonset)["spec"]["template"]["spec"];
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
    let output = template(&[
        "--set",
        "nodeConfig.audit.log_dir=/data/skillbox-audit",
        "--values",
        values_file("audit-export").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let docs = documents(&String::from_utf8(output.stdout).unwrap());
    let pod = &find(&docs, "DaemonSet", "skillbox")["spec"]["template"]["spec"];
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
    let rendered =
        String::from_utf8(template(&["--set", "nodeConfig.audit.log_dir=/var/log/skillbox/pods"]).stdout)
            .unwrap();
    assert!(rendered.contains("kind: DaemonSet") && !rendered.contains("audit-log-dir"));
}

/// Every `skillbox` command line in `docs`: (where, argv after the program).
fn skillbox_commands(docs: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut commands = Vec::new();
    for doc in docs {
        let pod = &doc["spec"]["template"]["spec"];
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
        let output = template(&args);
        assert!(output.status.success(), "{label}: {}", text(&output));
        let docs = documents(&String::from_utf8(output.stdout).unwrap());
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
    let pod = &find(&docs, "DaemonSet", "skillbox")["spec"]["template"]["spec"];
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
    let pod = &daemonset["spec"]["template"]["spec"];
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
        strings(&job["spec"]["template"]["spec"]["containers"][0]["command"]),
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
        daemonset["spec"]["template"]["spec"]["nodeSelector"],
        node["spec"]["template"]["spec"]["nodeSelector"],
        "uninstall runs where install ran"
    );
}

#[test]
fn rbac_grants_only_node_labelling_and_reading_daemonsets() {
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
        json!([{"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get", "list", "watch"]}])
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

/// NOTES.txt as helm renders it after an install. `helm install --dry-run`
/// needs a cluster, so a copy of the chart renders it through `tpl` in a
/// ConfigMap, with the same values and helpers.
fn rendered_notes(args: &[&str]) -> String {
    let copy = tempfile::tempdir().unwrap();
    let chart = copy.path().join("skillbox");
    let status = Command::new("cp")
        .arg("-r")
        .arg(chart_dir())
        .arg(&chart)
        .status()
        .unwrap();
    assert!(status.success(), "cp -r of the chart");
    fs::rename(chart.join("templates/NOTES.txt"), chart.join("notes.txt")).unwrap();
    fs::write(
        chart.join("templates/notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ tpl (.Files.Get \"notes.txt\") . | quote }}\n",
    )
    .unwrap();
    let output = run(
        Command::new(&tools().helm)
            .args(["template", RELEASE])
            .arg(&chart)
            .args(["--namespace", NAMESPACE, "--show-only", "templates/notes.yaml"])
            .args(args),
        None,
    );
    assert!(output.status.success(), "{}", text(&output));
    let docs = documents(&String::from_utf8(output.stdout).unwrap());
    docs[0]["data"]["notes"].as_str().unwrap().to_owned()
}

#[test]
fn notes_show_a_first_skill_pod() {
    let notes = rendered_notes(&[]);
    for needle in [
        "runtimeClassName: skillbox",
        "skillbox image build",
        "kubectl logs hello-skill",
        "kubectl label namespace skillbox pod-security.kubernetes.io/enforce=privileged",
        "kubectl get nodes -l skillbox.dev/runtime=ready",
    ] {
        assert!(notes.contains(needle), "NOTES lack {needle:?}:\n{notes}");
    }
    let notes = rendered_notes(&["--set", "namespace.create=true"]);
    assert!(
        !notes.contains("kubectl label namespace"),
        "the chart labels the namespace it creates:\n{notes}"
    );
}

#[test]
fn the_chart_metadata_pins_kubernetes_and_the_app_version() {
    let chart = fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    // appVersion is the skillbox crate's version: the node image's tag.
    let app_version = format!("appVersion: {}", env!("CARGO_PKG_VERSION"));
    for line in ["apiVersion: v2", &app_version, "kubeVersion: \">=1.30.0-0\""] {
        assert!(chart.lines().any(|l| l == line), "Chart.yaml lacks {line}");
    }
    // An older cluster is refused.
    let output = run(
        Command::new(&tools().helm)
            .args(["template", RELEASE])
            .arg(chart_dir())
            .args(["--kube-version", "1.29.0"]),
        None,
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("incompatible with Kubernetes v1.29.0"),
        "{}",
        text(&output)
    );
}
