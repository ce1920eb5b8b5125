//! The Helm chart `charts/skillbox` as a whole, rendered with the real helm
//! and checked offline: `helm lint --strict`, golden manifests under
//! `tests/golden/chart/`, every rendered object validated strictly against
//! the Kubernetes 1.30 and newest OpenAPI schemas (kubernetes-validate), the
//! ServiceMonitor against `tests/chart/servicemonitor.schema.json`, the
//! values schema refusing bad values with their messages, NOTES.txt and
//! Chart.yaml. What single objects hold is in `chart_manifests.rs`.
//!
//! The tools come from `scripts/fetch-chart-tools.sh` (pinned, cached under
//! target/skillbox-cache/chart-tools; see `skillbox_test_support::chart`).
//! A tool that cannot be had fails the tests with its name.
//!
//! Regenerate the golden files after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --test chart`.

use std::fs;
use std::process::Command;

use skillbox_test_support::chart::{
    chart_dir, chart_test_file, documents, find, manifests_py, render, run, template, text, tools,
    values_file, KUBE_VERSIONS, NAMESPACE, RELEASE, VALUES_SETS,
};
use skillbox_test_support::workspace_dir;

fn update_golden() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0")
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
fn the_chart_packages_with_its_schema_and_renders_from_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        Command::new(&tools().helm)
            .arg("package")
            .arg(chart_dir())
            .arg("--destination")
            .arg(dir.path()),
        None,
    );
    assert!(output.status.success(), "helm package: {}", text(&output));
    let archive = dir
        .path()
        .join(format!("skillbox-{}.tgz", env!("CARGO_PKG_VERSION")));
    let listing = run(Command::new("tar").arg("-tzf").arg(&archive), None);
    assert!(listing.status.success(), "tar -tzf: {}", text(&listing));
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for file in [
        "skillbox/Chart.yaml",
        "skillbox/values.yaml",
        "skillbox/values.schema.json",
        "skillbox/templates/NOTES.txt",
        "skillbox/templates/daemonset.yaml",
        "skillbox/templates/uninstall-hook.yaml",
    ] {
        assert!(
            listing.lines().any(|l| l == file),
            "{file} not in the archive:\n{listing}"
        );
    }
    // The archive renders what the directory does, schema included.
    let output = run(
        Command::new(&tools().helm)
            .args(["template", RELEASE])
            .arg(&archive)
            .args(["--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[0]]),
        None,
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout) == render("defaults"));
    let output = run(
        Command::new(&tools().helm)
            .args(["template", RELEASE])
            .arg(&archive)
            .args(["--set", "metricz.port=1"]),
        None,
    );
    assert!(!output.status.success() && text(&output).contains("Additional property metricz is not allowed"));
}

#[test]
fn every_rendering_matches_its_golden_file() {
    for set in VALUES_SETS {
        let rendered = render(set);
        let golden = workspace_dir()
            .join("tests/golden/chart")
            .join(format!("{set}.yaml"));
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
    let schema = chart_test_file("servicemonitor.schema.json");
    let rendered = render("full");
    let schema = schema.to_str().unwrap();
    let validate = ["--validate", schema, "--kind", "ServiceMonitor"];
    let output = manifests_py(&validate, &rendered);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("checked 1 ServiceMonitor, 0 errors"), "{out}");

    // The schema does catch a misspelled field.
    let broken = rendered.replace("scrapeTimeout: 10s", "scrapeTimout: 10s");
    assert_ne!(broken, rendered);
    let output = manifests_py(&validate, &broken);
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
