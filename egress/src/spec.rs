//! Pointing a sandbox's OCI spec at its egress session: the network
//! namespace entry names the session's namespace, and a read-only
//! `/etc/resolv.conf` names the DNS proxy. runsc then runs with
//! `--network=host`, i.e. on that namespace's kernel stack
//! (docs/runsc-facts.md). Used by `skillbox run` and the shim alike.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::session::EgressSession;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the spec has no linux.namespaces entry of type network; expected one, which egress replaces")]
    NoNetworkNamespace,
    #[error("the spec's mounts is not an array")]
    Mounts,
    #[error("{path}: cannot write the sandbox's resolv.conf: {source}")]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The index and the `path` (if any) of the spec's network namespace entry.
pub fn network_namespace(spec: &Value) -> Option<(usize, Option<&str>)> {
    spec["linux"]["namespaces"]
        .as_array()?
        .iter()
        .enumerate()
        .find(|(_, namespace)| namespace["type"] == "network")
        .map(|(index, namespace)| (index, namespace["path"].as_str().filter(|path| !path.is_empty())))
}

/// Rewrites `spec` to run in `session`: its network namespace, and
/// `resolv_conf` (written here) bind-mounted read-only at /etc/resolv.conf,
/// replacing any mount already there.
pub fn join_session(spec: &mut Value, session: &EgressSession, resolv_conf: &Path) -> Result<(), SpecError> {
    let (index, _) = network_namespace(spec).ok_or(SpecError::NoNetworkNamespace)?;
    spec["linux"]["namespaces"][index]["path"] = session.namespace_path().display().to_string().into();
    std::fs::write(resolv_conf, session.resolv_conf()).map_err(|source| SpecError::ResolvConf {
        path: resolv_conf.to_owned(),
        source,
    })?;
    mount_resolv_conf(spec, resolv_conf)
}

/// Bind-mounts `resolv_conf` read-only at /etc/resolv.conf in `spec`,
/// replacing any mount already there (a pod's other containers join their
/// sandbox's session this way).
pub fn mount_resolv_conf(spec: &mut Value, resolv_conf: &Path) -> Result<(), SpecError> {
    if spec["mounts"].is_null() {
        spec["mounts"] = json!([]);
    }
    let mounts = spec["mounts"].as_array_mut().ok_or(SpecError::Mounts)?;
    mounts.retain(|mount| mount["destination"] != "/etc/resolv.conf");
    mounts.push(json!({
        "destination": "/etc/resolv.conf",
        "type": "bind",
        "source": resolv_conf,
        "options": ["bind", "ro"],
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_namespace_entry_is_found_with_its_path() {
        let spec = json!({"linux": {"namespaces": [
            {"type": "pid"},
            {"type": "network", "path": "/var/run/netns/cni-1"},
        ]}});
        assert_eq!(network_namespace(&spec), Some((1, Some("/var/run/netns/cni-1"))));
        let fresh = json!({"linux": {"namespaces": [{"type": "network", "path": ""}]}});
        assert_eq!(network_namespace(&fresh), Some((0, None)));
        assert_eq!(network_namespace(&json!({})), None);
    }
}
