//! The shim's configuration: the node config TOML (`[runsc]`, `[ceiling]`,
//! `[defaults]`, see `policy_compiler::node_config`) at the path containerd
//! passes in the task's runtime options (`ConfigPath`, from `ctr run
//! --runtime-config-path` or the CRI runtime's `options`). A missing file
//! gives the safe defaults; a bad one refuses the task, naming file and field.

use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedInputStream;
use policy_compiler::node_config::{NodeConfig, DEFAULT_NODE_CONFIG};
use skillbox_sandbox::runsc_version::resolve_platform;

/// What containerd names the runtime options message it sends to
/// non-runc runtimes (`runtimeoptions.v1.Options`).
pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";
/// `config_path` in `runtimeoptions.v1.Options { type_url = 1; config_path = 2; config_body = 3 }`.
const CONFIG_PATH_FIELD: u32 = 2;

/// The node config a task runs under, and how messages name it.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    pub node: NodeConfig,
    pub origin: String,
}

/// The `ConfigPath` in the task's runtime options, if any.
pub fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>, String> {
    let Some(any) = options.filter(|any| !any.value.is_empty()) else {
        return Ok(None);
    };
    if any.type_url.trim_start_matches("type.googleapis.com/") != RUNTIME_OPTIONS_TYPE {
        return Err(format!(
            "runtime options of type {:?}: expected {RUNTIME_OPTIONS_TYPE} (ConfigPath)",
            any.type_url
        ));
    }
    let mut input = CodedInputStream::from_bytes(&any.value);
    let mut path = None;
    let malformed = |err| format!("malformed {RUNTIME_OPTIONS_TYPE}: {err}");
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(malformed)? {
        let (field, wire_type) = (tag >> 3, tag & 7);
        if field == CONFIG_PATH_FIELD && wire_type == 2 {
            path = Some(PathBuf::from(input.read_string().map_err(malformed)?));
        } else {
            let wire_type = containerd_shim::protos::protobuf::rt::WireType::new(wire_type)
                .ok_or_else(|| format!("malformed {RUNTIME_OPTIONS_TYPE}: wire type {wire_type}"))?;
            input.skip_field(wire_type).map_err(malformed)?;
        }
    }
    Ok(path.filter(|path| !path.as_os_str().is_empty()))
}

/// Loads the config at `path` (default: the node config's default path),
/// with `[runsc] platform = "auto"` resolved for its runsc.
pub fn load(path: Option<&Path>) -> Result<ShimConfig, String> {
    let mut config = load_file(path)?;
    let binary = config.node.runsc.binary.clone();
    if let Err(err) = resolve_platform(&mut config.node.runsc, &binary) {
        tracing::warn!(%err, "[runsc] platform \"auto\" falls back to ptrace");
    }
    Ok(config)
}

fn load_file(path: Option<&Path>) -> Result<ShimConfig, String> {
    let path = path.unwrap_or(Path::new(DEFAULT_NODE_CONFIG));
    match std::fs::read_to_string(path) {
        Ok(text) => NodeConfig::from_toml(path, &text)
            .map(|node| ShimConfig {
                node,
                origin: path.display().to_string(),
            })
            .map_err(|err| err.to_string()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(ShimConfig {
            node: NodeConfig::default(),
            origin: format!("the built-in defaults ({} does not exist)", path.display()),
        }),
        Err(err) => Err(format!("{}: cannot read the shim config: {err}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim::protos::protobuf::CodedOutputStream;

    use super::*;

    fn options(path: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "io.containerd.skillbox.v1").unwrap();
            out.write_string(CONFIG_PATH_FIELD, path).unwrap();
            out.flush().unwrap();
        }
        Any {
            type_url: RUNTIME_OPTIONS_TYPE.to_owned(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn config_path_is_read_from_runtime_options() {
        assert_eq!(
            config_path(Some(&options("/etc/skillbox/node.toml"))).unwrap(),
            Some(PathBuf::from("/etc/skillbox/node.toml"))
        );
        assert_eq!(config_path(None).unwrap(), None);
        let wrong = Any {
            type_url: "containerd.runc.v1.Options".to_owned(),
            value: vec![8, 1],
            ..Default::default()
        };
        assert!(config_path(Some(&wrong))
            .unwrap_err()
            .contains("expected runtimeoptions.v1.Options"));
    }

    #[test]
    fn missing_file_means_defaults_and_bad_file_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load_file(Some(&dir.path().join("none.toml"))).unwrap();
        assert_eq!(missing.node, NodeConfig::default());
        // `load` also resolves the default `auto` platform for the runsc
        // on PATH.
        let resolved = load(Some(&dir.path().join("none.toml"))).unwrap();
        assert!(resolved.node.runsc.resolved_platform.is_some());
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[runsc]\nbinray = \"x\"\n").unwrap();
        let err = load(Some(&bad)).unwrap_err();
        assert!(
            err.contains("bad.toml: runsc.binray: unknown field `binray`"),
            "{err}"
        );
    }
}
