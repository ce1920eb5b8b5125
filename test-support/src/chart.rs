//! The Helm chart's test harness: the pinned tools (helm, kubernetes-validate
//! and the Python of its venv, fetched once by `scripts/fetch-chart-tools.sh`
//! into `<target>/skillbox-cache/chart-tools`), rendering `charts/skillbox`
//! with a values set, and reading the rendered documents as JSON.
//!
//! A tool that cannot be had fails the test with its name: nothing skips.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::{target_dir, workspace_dir};

/// The release name and namespace every rendering uses.
pub const RELEASE: &str = "skillbox";
pub const NAMESPACE: &str = "skillbox";
/// The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
/// newest kubernetes-validate ships schemas for.
pub const KUBE_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
/// The values sets under tests/chart/values/, each with a golden rendering.
pub const VALUES_SETS: [&str; 3] = ["defaults", "audit-export", "full"];

pub fn chart_dir() -> PathBuf {
    workspace_dir().join("charts/skillbox")
}

/// `tests/chart/<name>`: values sets, the ServiceMonitor schema, manifests.py.
pub fn chart_test_file(name: &str) -> PathBuf {
    workspace_dir().join("tests/chart").join(name)
}

pub fn values_file(set: &str) -> PathBuf {
    chart_test_file(&format!("values/{set}.yaml"))
}

pub struct Tools {
    pub helm: PathBuf,
    pub validate: PathBuf,
    pub python: PathBuf,
}

/// Fetches the tools once per test binary (the script does nothing when
/// they are there) and checks each is present.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let target = target_dir();
        let output = Command::new("bash")
            .arg("scripts/fetch-chart-tools.sh")
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(workspace_dir())
            .stdin(Stdio::null())
            .output()
            .expect("run bash scripts/fetch-chart-tools.sh");
        assert!(
            output.status.success(),
            "scripts/fetch-chart-tools.sh failed (helm, kubectl and kubernetes-validate are needed for the chart tests):\n{}",
            text(&output)
        );
        let dir = target.join("skillbox-cache/chart-tools");
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
            assert!(
                path.is_file(),
                "{name} missing at {} after fetch-chart-tools.sh",
                path.display()
            );
        }
        tools
    })
}

/// Runs `command` with `stdin` (empty when `None`); its output, whatever
/// its status.
pub fn run(command: &mut Command, stdin: Option<&str>) -> Output {
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

/// Status, stdout and stderr, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `helm template` of the chart with these arguments (values files, --set).
pub fn template(args: &[&str]) -> Output {
    let mut command = Command::new(&tools().helm);
    command
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[0]])
        .args(args);
    run(&mut command, None)
}

/// `helm template` with the values set `set`, which must succeed.
pub fn render(set: &str) -> String {
    let values = values_file(set);
    rendered_with(&["--values", values.to_str().unwrap()])
}

/// `helm template` with `args`, which must succeed.
pub fn rendered_with(args: &[&str]) -> String {
    let output = template(args);
    assert!(
        output.status.success(),
        "helm template {args:?}: {}",
        text(&output)
    );
    String::from_utf8(output.stdout).expect("helm prints UTF-8")
}

/// Runs `tests/chart/manifests.py` (PyYAML from the tools' venv) with
/// `args` on `rendered`.
pub fn manifests_py(args: &[&str], rendered: &str) -> Output {
    run(
        Command::new(&tools().python)
            .arg(chart_test_file("manifests.py"))
            .args(args),
        Some(rendered),
    )
}

/// The rendered documents as JSON.
pub fn documents(rendered: &str) -> Vec<Value> {
    let output = manifests_py(&[], rendered);
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

/// The document of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The pod spec of a DaemonSet, Deployment or Job.
pub fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// The container `name` of a pod spec's `list` (`containers`,
/// `initContainers`).
pub fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {pod}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry {name}"))
}

/// A JSON array of strings.
pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}
