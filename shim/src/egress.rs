//! Egress for a container whose effective policy allows some: an
//! `EgressSession` (its own network namespace, veth, nftables table, DNS
//! proxy) whose outer side is the namespace the spec asked for — the pod's
//! (CRI puts it under /var/run/netns) or, for a spec that asks for a new
//! one (`ctr run`), the shim's own. The spec is pointed at the session and
//! runsc runs with `--network=host` on the session's namespace.
//!
//! What the session made is recorded by name in the bundle
//! ([`EGRESS_RECORD`]) before the spec names it, so the `delete`
//! subcommand removes it after a killed shim; Delete removes the record
//! with the session.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::EffectivePolicy;
use serde_json::Value;
use skillbox_audit::jsonl::JsonLinesWriter;
use skillbox_egress::netns::{NetnsName, NETNS_DIR};
use skillbox_egress::session::{upstreams_or_resolv_conf, EgressSession, SessionConfig, SessionRecord};
use skillbox_egress::spec::{join_session, network_namespace};

use crate::audit::session_key;
use crate::config::ShimConfig;

/// The bundle file naming what a container's egress session made.
pub const EGRESS_RECORD: &str = "skillbox-egress.json";
/// The sandbox's resolv.conf (naming the DNS proxy), in the bundle.
const RESOLV_CONF: &str = "skillbox-resolv.conf";

#[derive(Debug, thiserror::Error)]
pub enum EgressSetupError {
    #[error("{path}: {field}: {value}: {expected}")]
    Spec {
        path: PathBuf,
        field: String,
        value: String,
        expected: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("cannot set up the network egress of container {id}: {source}")]
    Session {
        id: String,
        #[source]
        source: Box<skillbox_egress::session::EgressError>,
    },
}

/// The outer namespace the spec asks for: `None` for a new one (the
/// shim's own namespace is then the outer side), else a namespace named
/// under /var/run/netns (or /run/netns).
fn outer_namespace(spec: &Value, path: &Path) -> Result<Option<NetnsName>, EgressSetupError> {
    let Some((index, given)) = network_namespace(spec) else {
        return Err(EgressSetupError::Spec {
            path: path.to_owned(),
            field: "linux.namespaces".to_owned(),
            value: "no network namespace".to_owned(),
            expected: "a network namespace entry (new, or the pod's)".to_owned(),
        });
    };
    let Some(given) = given else {
        return Ok(None);
    };
    let named = Path::new(given)
        .parent()
        .filter(|dir| *dir == Path::new(NETNS_DIR) || *dir == Path::new("/run/netns"))
        .and(Path::new(given).file_name())
        .and_then(|name| NetnsName::new(&name.to_string_lossy()).ok());
    named.map(Some).ok_or_else(|| EgressSetupError::Spec {
        path: path.to_owned(),
        field: format!("linux.namespaces[{index}].path"),
        value: given.to_owned(),
        expected: format!("egress needs the pod's network namespace named under {NETNS_DIR} (as CNI and `ip netns` make them), or none"),
    })
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> EgressSetupError {
    EgressSetupError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// A container's running egress: dropping it removes the session, then
/// its record.
pub struct ContainerEgress {
    session: Option<EgressSession>,
    record: PathBuf,
    /// The network policy it enforces (pod members must share it).
    pub network: EffectiveNetwork,
}

impl std::fmt::Debug for ContainerEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerEgress")
            .field("record", &self.record)
            .finish()
    }
}

impl Drop for ContainerEgress {
    fn drop(&mut self) {
        drop(self.session.take());
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Starts egress for container `id` of containerd namespace `namespace`
/// under `policy` (which allows some) and points `<bundle>/config.json` at
/// it.
pub fn start(
    id: &str,
    namespace: &str,
    bundle: &Path,
    policy: &EffectivePolicy,
    config: &ShimConfig,
    events: &Arc<JsonLinesWriter>,
) -> Result<ContainerEgress, EgressSetupError> {
    let path = bundle.join(policy_compiler::bundle::CONFIG_JSON);
    let text =
        std::fs::read_to_string(&path).map_err(|err| file_error(&path, format!("cannot read: {err}")))?;
    let mut spec: Value =
        serde_json::from_str(&text).map_err(|err| file_error(&path, format!("not JSON: {err}")))?;
    let outer = outer_namespace(&spec, &path)?;
    let settings = &config.node.egress;
    let session_error = |source| EgressSetupError::Session {
        id: id.to_owned(),
        source: Box::new(source),
    };
    let configured: Vec<_> = settings.dns_upstreams.iter().map(|upstream| upstream.0).collect();
    let upstreams = upstreams_or_resolv_conf(&configured).map_err(session_error)?;
    let key = session_key(namespace, id);
    let session_config = SessionConfig {
        outer,
        upstreams,
        ttl_grace: settings.ttl_grace.as_duration(),
        events: Arc::clone(events),
    };
    let name = NetnsName::new(&format!("skillbox-{key}")).map_err(|err| session_error(err.into()))?;
    let session =
        EgressSession::start(&key, name, &policy.network, &session_config).map_err(session_error)?;
    // Recorded before the spec names it: a shim killed from here on leaves
    // a record for the `delete` subcommand.
    let record = bundle.join(EGRESS_RECORD);
    let text = serde_json::to_string(&session.record()).expect("a session record serializes");
    let egress = ContainerEgress {
        session: Some(session),
        record,
        network: policy.network.clone(),
    };
    std::fs::write(&egress.record, text)
        .map_err(|err| file_error(&egress.record, format!("cannot write: {err}")))?;
    let session = egress.session.as_ref().expect("just set");
    join_session(&mut spec, session, &bundle.join(RESOLV_CONF)).map_err(|err| {
        file_error(
            &path,
            format!("cannot point the spec at the sandbox's network: {err}"),
        )
    })?;
    std::fs::write(&path, spec.to_string())
        .map_err(|err| file_error(&path, format!("cannot write: {err}")))?;
    tracing::info!(
        %id,
        namespace = %session.namespace_path().display(),
        table = session.table_name(),
        "egress enforced"
    );
    Ok(egress)
}

/// Removes what a dead shim's session left (after `kill -9`), from the
/// bundle's record. Returns what could not be removed.
pub fn clean_up_recorded(bundle: &Path) -> Result<(), String> {
    let path = bundle.join(EGRESS_RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(format!("{}: cannot read: {err}", path.display())),
    };
    let record: SessionRecord = serde_json::from_str(&text)
        .map_err(|err| format!("{}: not a session record: {err}", path.display()))?;
    record
        .remove()
        .map_err(|err| format!("{}: cannot remove the sandbox's network: {err}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_outer_namespace_is_the_pods_or_the_shims() {
        let path = Path::new("/b/config.json");
        let spec = |ns: Value| json!({"linux": {"namespaces": [{"type": "pid"}, ns]}});
        assert_eq!(
            outer_namespace(&spec(json!({"type": "network"})), path).unwrap(),
            None
        );
        assert_eq!(
            outer_namespace(
                &spec(json!({"type": "network", "path": "/var/run/netns/cni-1"})),
                path
            )
            .unwrap(),
            Some(NetnsName::new("cni-1").unwrap())
        );
        let err = outer_namespace(&spec(json!({"type": "network", "path": "/proc/42/ns/net"})), path)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/b/config.json: linux.namespaces[1].path: /proc/42/ns/net: egress needs"),
            "{err}"
        );
    }
}
