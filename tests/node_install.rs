//! `skillbox node install | uninstall | status` against fake host roots in
//! temporary directories: what install writes, that it is idempotent, that
//! uninstall restores the tree byte for byte and that status sees drift.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

const MAIN: &str = "etc/containerd/config.toml";
const DROP_IN: &str = "etc/containerd/conf.d/skillbox.toml";

/// A fake host root and the binaries to install from outside it.
struct Node {
    root: TempDir,
    inputs: TempDir,
    /// Set in the environment of every `skillbox node` run.
    env: Vec<(&'static str, std::ffi::OsString)>,
}

impl Node {
    fn new(main_config: Option<&str>) -> Node {
        let root = TempDir::new().unwrap();
        let inputs = TempDir::new().unwrap();
        fs::create_dir_all(root.path().join("usr/local/bin")).unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/hostname"), "node-1\n").unwrap();
        if let Some(text) = main_config {
            fs::create_dir_all(root.path().join("etc/containerd")).unwrap();
            fs::write(root.path().join(MAIN), text).unwrap();
        }
        for name in ["shim", "cli", "runsc"] {
            fs::write(
                inputs.path().join(name),
                format!("#!/bin/sh\necho {name} version 0.0~test\n"),
            )
            .unwrap();
            fs::set_permissions(inputs.path().join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
        Node {
            root,
            inputs,
            env: Vec::new(),
        }
    }

    fn with_env(mut self, name: &'static str, value: impl Into<std::ffi::OsString>) -> Node {
        self.env.push((name, value.into()));
        self
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .arg("node")
            .args(args)
            .arg("--host-root")
            .arg(self.root.path())
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .output()
            .unwrap()
    }

    fn install(&self, extra: &[&str]) -> Output {
        let input = |name: &str| self.inputs.path().join(name).display().to_string();
        let (shim, cli, runsc) = (input("shim"), input("cli"), input("runsc"));
        let mut args = vec![
            "install",
            "--no-reload",
            "--shim",
            &shim,
            "--cli",
            &cli,
            "--runsc",
            &runsc,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn uninstall(&self) -> Output {
        self.run(&["uninstall", "--no-reload"])
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.root.path().join(path)).unwrap()
    }

    /// Every file, directory and symlink under the root: path → kind, mode, sha of contents.
    fn tree(&self) -> BTreeMap<PathBuf, (String, u32, Vec<u8>)> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (String, u32, Vec<u8>)>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(base).unwrap().to_path_buf();
                let mode = meta.permissions().mode();
                if meta.is_dir() {
                    out.insert(rel, ("dir".into(), mode, Vec::new()));
                    walk(base, &path, out);
                } else {
                    out.insert(rel, ("file".into(), mode, fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root.path(), self.root.path(), &mut out);
        out
    }
}

fn ok(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Install, check, install again (no byte changes), uninstall (the tree as before).
fn round_trip(node: &Node) {
    let before = node.tree();
    assert_eq!(node.run(&["status"]).status.code(), Some(1));
    ok(&node.install(&[]));
    assert_eq!(
        node.read("usr/local/bin/containerd-shim-skillbox-v1"),
        "#!/bin/sh\necho shim version 0.0~test\n"
    );
    let mode = fs::metadata(node.root.path().join("usr/local/bin/runsc"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    ok(&node.run(&["status"]));
    let installed = node.tree();
    let again = ok(&node.install(&[]));
    assert!(
        again.contains("unchanged: skillbox is installed as asked"),
        "{again}"
    );
    assert_eq!(node.tree(), installed, "a second install changed bytes");
    ok(&node.uninstall());
    assert_eq!(node.tree(), before, "uninstall did not restore the tree");
    assert!(ok(&node.uninstall()).contains("nothing to do"));
    assert_eq!(node.run(&["status"]).status.code(), Some(1));
}

#[test]
fn version_2_without_imports_gets_one_and_the_grpc_cri_drop_in() {
    let node = Node::new(Some(
        "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.9\"\n",
    ));
    ok(&node.install(&[]));
    let main = node.read(MAIN);
    assert!(
        main.contains("imports = [\"/etc/containerd/conf.d/*.toml\"]"),
        "{main}"
    );
    assert!(node
        .read(DROP_IN)
        .contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.skillbox]"));
    ok(&node.uninstall());
    round_trip(&node);
}

#[test]
fn comments_kept_and_imports_extended_only_when_needed() {
    let text = "# Managed by ops\nversion = 2\nimports = [\"/etc/containerd/extra.toml\"] # extra\n\n# CRI\n[plugins.\"io.containerd.grpc.v1.cri\"]\n";
    let node = Node::new(Some(text));
    ok(&node.install(&[]));
    let main = node.read(MAIN);
    assert!(
        main.contains("# Managed by ops") && main.contains("# extra") && main.contains("# CRI"),
        "{main}"
    );
    assert!(
        main.contains("\"/etc/containerd/extra.toml\", \"/etc/containerd/conf.d/*.toml\""),
        "{main}"
    );
    ok(&node.uninstall());
    assert_eq!(node.read(MAIN), text);

    let covered = "# ops\nversion = 2\nimports = [\"conf.d/*.toml\"]\n";
    let node = Node::new(Some(covered));
    ok(&node.install(&[]));
    assert_eq!(
        node.read(MAIN),
        covered,
        "a config that already imports conf.d was changed"
    );
    ok(&node.uninstall());
    round_trip(&node);
}

#[test]
fn version_3_gets_the_cri_runtime_plugin_drop_in() {
    let node = Node::new(Some("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = \"runc\"\n"));
    ok(&node.install(&[]));
    let drop_in = node.read(DROP_IN);
    assert!(drop_in.contains("version = 3"), "{drop_in}");
    assert!(
        drop_in.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.skillbox]"),
        "{drop_in}"
    );
    ok(&node.uninstall());
    round_trip(&node);
}

#[test]
fn an_edit_of_the_main_config_after_install_survives_uninstall() {
    let text = "# Managed by ops\nversion = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.9\"\n";
    let node = Node::new(Some(text));
    ok(&node.install(&[]));
    let edited = node.read(MAIN).replace("pause:3.9", "pause:3.10");
    fs::write(node.root.path().join(MAIN), &edited).unwrap();
    let out = ok(&node.uninstall());
    assert!(out.contains("/etc/containerd/config.toml"), "{out}");
    assert_eq!(
        node.read(MAIN),
        text.replace("pause:3.9", "pause:3.10"),
        "uninstall lost the administrator's edit or kept the import"
    );
    assert!(!node.root.path().join(DROP_IN).exists());
}

#[test]
fn no_containerd_config_gets_a_minimal_one_that_uninstall_removes() {
    let node = Node::new(None);
    ok(&node.install(&[]));
    let main = node.read(MAIN);
    assert!(main.contains("version = 2") && main.contains("imports = [\"/etc/containerd/conf.d/*.toml\"]"));
    ok(&node.uninstall());
    assert!(!node.root.path().join("etc/containerd").exists());
    round_trip(&node);
}

#[test]
fn configs_that_cannot_take_a_drop_in_are_refused_naming_the_line() {
    for text in [
        "[plugins.cri]\n  sandbox_image = \"pause\"\n",
        "version = 1\n",
        "version = = 2\n[[[\n",
    ] {
        let node = Node::new(Some(text));
        let before = node.tree();
        let output = node.install(&[]);
        assert_eq!(output.status.code(), Some(1));
        let message = stderr(&output);
        assert!(message.contains("/etc/containerd/config.toml"), "{message}");
        assert!(
            message.contains("imports = [\"/etc/containerd/conf.d/*.toml\"]"),
            "{message}"
        );
        assert_eq!(node.tree(), before, "a refused install wrote something");
    }
}

#[test]
fn node_config_is_validated_and_changes_are_reported() {
    let node = Node::new(Some("version = 2\n"));
    let bad = node.inputs.path().join("bad.toml");
    fs::write(&bad, "[ceiling]\ncpu = 2\n").unwrap();
    let output = node.install(&["--node-config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("bad.toml") && message.contains("cpu"),
        "{message}"
    );

    let before = node.tree();
    ok(&node.install(&[]));
    let good = node.inputs.path().join("good.toml");
    fs::write(&good, "[ceiling]\ncpus = 1\n").unwrap();
    let out = ok(&node.install(&["--node-config", good.to_str().unwrap()]));
    assert!(out.contains("updated   /etc/skillbox/config.toml"), "{out}");
    assert!(out.contains("unchanged /usr/local/bin/runsc"), "{out}");
    assert_eq!(node.read("etc/skillbox/config.toml"), "[ceiling]\ncpus = 1\n");
    ok(&node.uninstall());
    assert_eq!(node.tree(), before);
}

#[test]
fn existing_binaries_are_restored_by_uninstall() {
    let node = Node::new(Some("version = 2\n"));
    let runsc = node.root.path().join("usr/local/bin/runsc");
    fs::write(&runsc, "old runsc\n").unwrap();
    fs::set_permissions(&runsc, fs::Permissions::from_mode(0o700)).unwrap();
    round_trip(&node);
    assert_eq!(node.read("usr/local/bin/runsc"), "old runsc\n");
}

#[test]
fn status_reports_versions_digests_and_drift() {
    let node = Node::new(Some("version = 2\n"));
    let before = node.run(&["status", "--json"]);
    assert_eq!(before.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();
    assert_eq!(json["installed"], false);

    ok(&node.install(&[]));
    let json: serde_json::Value = serde_json::from_str(&ok(&node.run(&["status", "--json"]))).unwrap();
    assert_eq!(json["installed"], true);
    assert_eq!(json["drop_in_present"], true);
    assert_eq!(json["import_present"], true);
    assert_eq!(json["node_config"], "/etc/skillbox/config.toml");
    let cli = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "cli")
        .unwrap();
    assert_eq!(cli["program_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(cli["sha256"].as_str().unwrap().len(), 64);
    let runsc = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "runsc")
        .unwrap();
    assert_eq!(runsc["program_version"], "0.0~test", "runsc's own --version");
    assert!(ok(&node.run(&["status"])).contains("healthy"));

    fs::write(node.root.path().join("usr/local/bin/runsc"), "tampered\n").unwrap();
    let drifted = node.run(&["status"]);
    assert_eq!(drifted.status.code(), Some(1));
    let text = String::from_utf8_lossy(&drifted.stdout);
    assert!(
        text.contains("/usr/local/bin/runsc") && text.contains("changed") && text.contains("drifted"),
        "{text}"
    );
}

#[test]
fn a_missing_binary_is_refused_before_anything_is_written() {
    let node = Node::new(Some("version = 2\n"));
    fs::remove_file(node.inputs.path().join("runsc")).unwrap();
    let before = node.tree();
    let output = node.install(&[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--runsc"), "{}", stderr(&output));
    assert_eq!(node.tree(), before);
}

#[test]
fn a_runsc_that_does_not_say_its_version_is_refused() {
    let node = Node::new(Some("version = 2\n"));
    fs::write(node.inputs.path().join("runsc"), "#!/bin/sh\necho hello\n").unwrap();
    let before = node.tree();
    let output = node.install(&[]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("--runsc") && err.contains("runsc version"), "{err}");
    assert_eq!(node.tree(), before);
}

/// One request the stand-in API server saw: method, path, content type, body.
type Request = (String, String, String, String);

/// A stand-in for the Kubernetes API server on loopback (no kube-apiserver
/// is packaged for this machine): it records each request and answers from
/// `respond(method, path, request number)` → (status, JSON body).
struct FakeApiServer {
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
    kubeconfig: tempfile::NamedTempFile,
}

impl FakeApiServer {
    fn start(respond: impl Fn(&str, &str, usize) -> (u16, String) + Send + 'static) -> FakeApiServer {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_owned(),
                    parts.next().unwrap_or("").to_owned(),
                );
                let (mut length, mut content_type) = (0, String::new());
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap_or((header, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "content-type" => content_type = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let number = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((
                        method.clone(),
                        path.clone(),
                        content_type,
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                    seen.len()
                };
                let (status, answer) = respond(&method, &path, number);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        let mut kubeconfig = tempfile::NamedTempFile::new().unwrap();
        write!(
            kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\nusers:\n- name: installer\n  user:\n    token: test-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: installer\ncurrent-context: fake\n"
        )
        .unwrap();
        FakeApiServer {
            url,
            requests,
            kubeconfig,
        }
    }

    /// `skillbox node <args>` against this server.
    fn skillbox_node(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .arg("node")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig.path())
            .output()
            .unwrap()
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn node_json(labels: &str) -> String {
    format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"node-1","labels":{{{labels}}}}}}}"#)
}

#[test]
fn install_labels_the_node_and_uninstall_removes_the_label_first() {
    let api = FakeApiServer::start(|_, _, _| (200, node_json(r#""skillbox.dev/runtime":"ready""#)));
    let node = Node::new(Some("version = 2\n"))
        .with_env("KUBECONFIG", api.kubeconfig.path())
        .with_env("NODE_NAME", "node-1");
    let out = ok(&node.install(&[]));
    assert!(
        out.contains("labelled node node-1 skillbox.dev/runtime=ready"),
        "{out}"
    );
    let out = ok(&node.uninstall());
    assert!(
        out.starts_with("removed label skillbox.dev/runtime from node node-1"),
        "{out}"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:?} at {}", api.url);
    for ((method, path, content_type, body), value) in requests.iter().zip(["\"ready\"", "null"]) {
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("PATCH", "/api/v1/nodes/node-1?")
        );
        assert_eq!(content_type, "application/merge-patch+json");
        assert_eq!(
            body,
            &format!(r#"{{"metadata":{{"labels":{{"skillbox.dev/runtime":{value}}}}}}}"#)
        );
    }
}

#[test]
fn a_refused_label_fails_install_naming_the_node_and_the_api_answer() {
    let api = FakeApiServer::start(|_, _, _| {
        (
            403,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"nodes \"node-1\" is forbidden: cannot patch","reason":"Forbidden","code":403}"#.to_owned(),
        )
    });
    let node = Node::new(Some("version = 2\n")).with_env("KUBECONFIG", api.kubeconfig.path());
    let output = node.install(&["--node-name", "node-1"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot set label skillbox.dev/runtime on node node-1") && err.contains("forbidden"),
        "{err}"
    );
}

#[test]
fn wait_daemonset_returns_once_every_pod_is_ready() {
    let api = FakeApiServer::start(|_, _, n| {
        let ready = if n < 3 { 1 } else { 2 };
        (
            200,
            format!(
                r#"{{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{{"name":"sb-uninstall","namespace":"skillbox","generation":1}},"status":{{"currentNumberScheduled":2,"desiredNumberScheduled":2,"numberMisscheduled":0,"numberReady":{ready},"observedGeneration":1}}}}"#
            ),
        )
    });
    let output = api.skillbox_node(&[
        "wait-daemonset",
        "--namespace",
        "skillbox",
        "--name",
        "sb-uninstall",
        "--timeout",
        "30",
    ]);
    let out = ok(&output);
    assert!(
        out.contains("DaemonSet skillbox/sb-uninstall: 2 of 2 pods ready"),
        "{out}"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests.iter().all(|(method, path, _, _)| method == "GET"
        && path == "/apis/apps/v1/namespaces/skillbox/daemonsets/sb-uninstall"));

    let never = FakeApiServer::start(|_, _, _| {
        (200, r#"{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"d","namespace":"n","generation":1},"status":{"currentNumberScheduled":1,"desiredNumberScheduled":1,"numberMisscheduled":0,"numberReady":0,"observedGeneration":1}}"#.to_owned())
    });
    let output = never.skillbox_node(&[
        "wait-daemonset",
        "--namespace",
        "n",
        "--name",
        "d",
        "--timeout",
        "2",
    ]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("DaemonSet n/d not ready within 2s: 0 of 1 pods ready"),
        "{err}"
    );
}
