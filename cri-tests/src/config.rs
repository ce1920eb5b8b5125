//! The files the private containerd reads, rendered by pure functions: its
//! config (version 2, CRI plugin on, runtime handlers `runc` and
//! `skillbox`, and `runc-runsc` when the benchmark asks for it), the CNI
//! network list and the skillbox node config.

use std::path::Path;

/// The runtime handler the control pods run under.
pub const RUNC_HANDLER: &str = "runc";
/// The runtime handler of skillbox pods, as a RuntimeClass names it.
pub const SKILLBOX_HANDLER: &str = "skillbox";
/// The benchmark's baseline handler: containerd's runc shim running runsc
/// (through a wrapper) as its OCI runtime, one gVisor sandbox per container.
pub const RUNC_RUNSC_HANDLER: &str = "runc-runsc";
/// The runtime type containerd turns into `containerd-shim-skillbox-v1`.
pub const SKILLBOX_RUNTIME_TYPE: &str = "io.containerd.skillbox.v1";
/// containerd's socket on a node, as the host sees it.
pub const HOST_SOCKET: &str = "/run/containerd/containerd.sock";
/// Where Debian's `containernetworking-plugins` installs the plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Where one containerd keeps everything: all under `dir`.
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    pub dir: &'a Path,
    pub sandbox_image: &'a str,
    /// The skillbox node config the shim reads (`ConfigPath`).
    pub node_config: &'a Path,
    /// The `runc-runsc` handler, if wanted (only the benchmark does).
    pub runc_runsc: Option<RuncRunsc<'a>>,
    /// A node before `skillbox node install`: the root its containerd sees
    /// as `/` for `/etc` and `/run/containerd` ([`crate::node::NodeOptions::bare_host`]).
    /// No `skillbox` handler then; the socket is under this root.
    pub host_root: Option<&'a Path>,
}

/// containerd's runc shim with runsc behind it: `BinaryName` is the
/// program the shim calls as its runc (a wrapper adding runsc's own flags),
/// `Root` where that runtime keeps its state (`<root>/k8s.io`), apart from
/// runc's.
#[derive(Debug, Clone)]
pub struct RuncRunsc<'a> {
    pub binary: &'a Path,
    pub root: &'a Path,
}

impl Layout<'_> {
    pub fn socket(&self) -> std::path::PathBuf {
        match self.host_root {
            Some(root) => root.join(HOST_SOCKET.trim_start_matches('/')),
            None => self.dir.join("containerd.sock"),
        }
    }

    pub fn cni_conf_dir(&self) -> std::path::PathBuf {
        self.dir.join("cni")
    }
}

/// containerd's config: its own root, state and sockets, the CRI plugin
/// with `restrict_oom_score_adj` (root here lacks CAP_SYS_RESOURCE), the
/// local pause image, both runtime handlers and the private CNI config. The
/// streaming server takes any free port: it listens in the harness's
/// network namespace.
pub fn containerd_config(layout: &Layout) -> String {
    let dir = layout.dir.display();
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    let runtimes = format!("{cri}.containerd.runtimes");
    let runc_runsc = layout
        .runc_runsc
        .as_ref()
        .map(|handler| {
            format!(
                r#"
[{runtimes}.{RUNC_RUNSC_HANDLER}]
  runtime_type = "io.containerd.runc.v2"

[{runtimes}.{RUNC_RUNSC_HANDLER}.options]
  BinaryName = "{binary}"
  Root = "{root}"
"#,
                binary = handler.binary.display(),
                root = handler.root.display(),
            )
        })
        .unwrap_or_default();
    let skillbox = match layout.host_root {
        Some(_) => String::new(),
        None => format!(
            r#"
[{runtimes}.{SKILLBOX_HANDLER}]
  runtime_type = "{SKILLBOX_RUNTIME_TYPE}"
  pod_annotations = ["io.skillbox.*"]
  container_annotations = ["io.skillbox.*"]

[{runtimes}.{SKILLBOX_HANDLER}.options]
  ConfigPath = "{node_config}"
"#,
            node_config = layout.node_config.display(),
        ),
    };
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  default_runtime_name = "{RUNC_HANDLER}"

[{runtimes}.{RUNC_HANDLER}]
  runtime_type = "io.containerd.runc.v2"

{skillbox}{runc_runsc}
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{conf_dir}"
"#,
        socket = layout.socket().display(),
        sandbox_image = layout.sandbox_image,
        conf_dir = layout.cni_conf_dir().display(),
    )
}

/// The pods' network: a bridge with host-local addresses in `subnet`, no
/// masquerading and no routes out. `isGateway` gives the bridge an address,
/// so the harness can reach pod IPs; it also turns on `ip_forward`, which is
/// per network namespace and so only the harness's own.
pub fn cni_conflist(network: &str, bridge: &str, subnet: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "cniVersion": "0.4.0",
        "name": network,
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet }]],
                "routes": []
            }
        }]
    }))
    .expect("a JSON value serializes")
}

/// The skillbox node config: built-in values, with the kubelet root,
/// containerd root and state under the harness's directory `dir` (where the
/// private containerd and the kubelet-like pod directories live), so the
/// shim allows each pod exactly its own files there; audit logs go there too.
pub fn node_config(dir: &Path) -> String {
    format!(
        "[cri]\nkubelet_root = {:?}\ncontainerd_root = {:?}\ncontainerd_state = {:?}\n\n[audit]\nlog_dir = {:?}\n",
        dir.join("kubelet").display().to_string(),
        dir.join("root").display().to_string(),
        dir.join("state").display().to_string(),
        dir.join("audit").display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_both_handlers_and_the_private_paths() {
        let layout = Layout {
            dir: Path::new("/tmp/h"),
            sandbox_image: "localhost/skillbox-cri/pause:1",
            node_config: Path::new("/tmp/h/node.toml"),
            runc_runsc: None,
            host_root: None,
        };
        let config = containerd_config(&layout);
        let parsed: toml::Value = toml::from_str(&config).unwrap();
        let cri = &parsed["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(cri["cni"]["conf_dir"].as_str(), Some("/tmp/h/cni"));
        let runtimes = &cri["containerd"]["runtimes"];
        assert_eq!(
            runtimes["runc"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2")
        );
        let skillbox = &runtimes["skillbox"];
        assert_eq!(skillbox["runtime_type"].as_str(), Some(SKILLBOX_RUNTIME_TYPE));
        assert_eq!(
            skillbox["options"]["ConfigPath"].as_str(),
            Some("/tmp/h/node.toml")
        );
        assert_eq!(parsed["grpc"]["address"].as_str(), Some("/tmp/h/containerd.sock"));
        assert!(runtimes.get(RUNC_RUNSC_HANDLER).is_none());
    }

    #[test]
    fn the_benchmark_adds_the_runc_shim_driving_runsc() {
        let layout = Layout {
            dir: Path::new("/tmp/h"),
            sandbox_image: "localhost/skillbox-cri/pause:1",
            node_config: Path::new("/tmp/h/node.toml"),
            runc_runsc: Some(RuncRunsc {
                binary: Path::new("/t/release/runsc-as-runc"),
                root: Path::new("/tmp/h/runsc-runc"),
            }),
            host_root: None,
        };
        let parsed: toml::Value = toml::from_str(&containerd_config(&layout)).unwrap();
        let runtimes = &parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        let handler = &runtimes[RUNC_RUNSC_HANDLER];
        assert_eq!(handler["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert_eq!(
            handler["options"]["BinaryName"].as_str(),
            Some("/t/release/runsc-as-runc")
        );
        assert_eq!(handler["options"]["Root"].as_str(), Some("/tmp/h/runsc-runc"));
        assert_eq!(
            runtimes[SKILLBOX_HANDLER]["options"]["ConfigPath"].as_str(),
            Some("/tmp/h/node.toml")
        );
    }

    #[test]
    fn a_bare_host_has_runc_only_and_its_socket_under_the_host_root() {
        let layout = Layout {
            dir: Path::new("/tmp/h"),
            sandbox_image: "localhost/skillbox-cri/pause:1",
            node_config: Path::new("/tmp/h/node.toml"),
            runc_runsc: None,
            host_root: Some(Path::new("/tmp/h/host")),
        };
        let parsed: toml::Value = toml::from_str(&containerd_config(&layout)).unwrap();
        let runtimes = &parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert!(runtimes.get(SKILLBOX_HANDLER).is_none());
        assert!(runtimes.get(RUNC_HANDLER).is_some());
        assert_eq!(
            parsed["grpc"]["address"].as_str(),
            Some("/tmp/h/host/run/containerd/containerd.sock")
        );
    }

    #[test]
    fn the_network_never_masquerades_nor_routes_out() {
        let list: serde_json::Value = serde_json::from_str(&cni_conflist("n", "b0", "10.88.3.0/24")).unwrap();
        let bridge = &list["plugins"][0];
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["routes"], serde_json::json!([]));
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.88.3.0/24");
    }

    #[test]
    fn the_node_config_places_kubelet_and_containerd_in_the_harness_directory() {
        let text = node_config(Path::new("/tmp/h"));
        let config =
            policy_compiler::node_config::NodeConfig::from_toml(Path::new("node.toml"), &text).unwrap();
        assert_eq!(config.cri.kubelet_root, Path::new("/tmp/h/kubelet"));
        assert_eq!(config.cri.containerd_root, Path::new("/tmp/h/root"));
        assert_eq!(config.cri.containerd_state, Path::new("/tmp/h/state"));
        assert!(config.ceiling.bind_mount_sources.is_empty());
    }
}
