//! Egress for a `skillbox run` whose policy allows some: an
//! `EgressSession` (the sandbox's network namespace, its nftables table,
//! the DNS proxy) in the caller's network namespace, and the bundle spec
//! rewritten to use it (the namespace, `/etc/resolv.conf` naming the
//! proxy). runsc then runs with `--network=host`, i.e. on the kernel stack
//! of that namespace (docs/runsc-facts.md).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use policy_compiler::bundle::CompiledAnnotations;
use skillbox_egress::dns::parse_resolv_conf;
use skillbox_egress::events::{SandboxIdentity, SkillIdentity};
use skillbox_egress::netns::NetnsName;
use skillbox_egress::session::{EgressSession, SessionConfig};

use crate::cli::EgressArgs;

/// Where events go unless `--egress-log` says otherwise.
pub const DEFAULT_LOG_DIR: &str = "/var/log/skillbox/egress";

/// The resolvers given with `--dns-upstream`, else /etc/resolv.conf's.
fn upstreams(args: &EgressArgs) -> anyhow::Result<Vec<SocketAddr>> {
    if args.dns_upstreams.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let found = parse_resolv_conf(&text);
        if found.is_empty() {
            bail!("/etc/resolv.conf names no nameserver: give the DNS proxy's upstream with --dns-upstream IP[:PORT]");
        }
        return Ok(found);
    }
    args.dns_upstreams
        .iter()
        .map(|given| {
            given
                .parse::<SocketAddr>()
                .or_else(|_| given.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| anyhow::anyhow!("--dns-upstream {given:?}: expected IP or IP:PORT"))
        })
        .collect()
}

/// Points the bundle's spec at the session: its network namespace, and a
/// read-only `/etc/resolv.conf` naming the proxy (written next to the bundle).
fn rewrite_spec(bundle: &Path, session: &EgressSession) -> anyhow::Result<()> {
    let config = bundle.join(policy_compiler::bundle::CONFIG_JSON);
    let text =
        std::fs::read_to_string(&config).with_context(|| format!("{}: cannot read", config.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", config.display()))?;
    let namespaces = spec["linux"]["namespaces"]
        .as_array_mut()
        .context("the compiled spec has no linux.namespaces")?;
    let network = namespaces
        .iter_mut()
        .find(|namespace| namespace["type"] == "network")
        .context("the compiled spec has no network namespace")?;
    network["path"] = session.namespace_path().display().to_string().into();
    let resolv = bundle.with_file_name("resolv.conf");
    std::fs::write(&resolv, session.resolv_conf())
        .with_context(|| format!("{}: cannot write", resolv.display()))?;
    spec["mounts"]
        .as_array_mut()
        .context("the compiled spec has no mounts")?
        .push(serde_json::json!({
            "destination": "/etc/resolv.conf",
            "type": "bind",
            "source": resolv,
            "options": ["bind", "ro"],
        }));
    std::fs::write(&config, spec.to_string()).with_context(|| format!("{}: cannot write", config.display()))
}

/// Starts egress for execution `id` of the compiled `bundle` and rewrites
/// its spec; returns the session (dropping it removes everything) and the
/// events file.
pub fn start(
    id: &str,
    bundle: &Path,
    compiled: &CompiledAnnotations,
    args: &EgressArgs,
) -> anyhow::Result<(EgressSession, PathBuf)> {
    let events = match &args.egress_log {
        Some(path) => path.clone(),
        None => {
            std::fs::create_dir_all(DEFAULT_LOG_DIR)
                .with_context(|| format!("{DEFAULT_LOG_DIR}: cannot create"))?;
            Path::new(DEFAULT_LOG_DIR).join(format!("{id}.jsonl"))
        }
    };
    // Network namespace names are short and plain; ids are `<skill>-<hex>`.
    let name = NetnsName::new(&format!("skillbox-{}", &id[id.len().saturating_sub(16)..]))?;
    let config = SessionConfig {
        outer: None,
        upstreams: upstreams(args)?,
        // Added to each DNS record's TTL before a learned address expires
        // (`--egress-ttl-grace`, `SKILLBOX_EGRESS_TTL_GRACE`; default 10 s).
        ttl_grace: Duration::from_secs(args.ttl_grace_secs),
        events: events.clone(),
        identity: SandboxIdentity {
            execution_id: id.to_owned(),
            skill: SkillIdentity {
                name: compiled.skill_name.clone(),
                version: compiled.skill_version.clone(),
                digest: Some(compiled.skill_digest.clone()),
            },
            container_id: id.to_owned(),
        },
    };
    let session = EgressSession::start(id, name, &compiled.policy.network, &config)
        .context("cannot set up the sandbox's network egress")?;
    rewrite_spec(bundle, &session)?;
    Ok((session, events))
}
