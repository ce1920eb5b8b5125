//! Egress for a `skillbox run` whose policy allows some: an
//! `EgressSession` (the sandbox's network namespace, its nftables table,
//! the DNS proxy) in the caller's network namespace, and the bundle spec
//! pointed at it (`skillbox_egress::spec`). runsc then runs with
//! `--network=host`, i.e. on the kernel stack of that namespace
//! (docs/runsc-facts.md).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use policy_compiler::bundle::CompiledAnnotations;
use policy_compiler::node_config::{DnsUpstream, EgressSettings};
use skillbox_audit::jsonl::JsonLinesWriter;
use skillbox_egress::netns::NetnsName;
use skillbox_egress::session::{upstreams_or_resolv_conf, EgressSession, SessionConfig};
use skillbox_egress::spec::join_session;

use crate::cli::EgressArgs;

/// The resolvers given with `--dns-upstream`, else the node config's, else
/// /etc/resolv.conf's.
fn upstreams(args: &EgressArgs, node: &EgressSettings) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let given: Vec<DnsUpstream> = args
        .dns_upstreams
        .iter()
        .map(|given| {
            given
                .parse()
                .map_err(|err| anyhow::anyhow!("--dns-upstream {err}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let configured = if given.is_empty() {
        &node.dns_upstreams
    } else {
        &given
    };
    let addrs: Vec<_> = configured.iter().map(|upstream| upstream.0).collect();
    upstreams_or_resolv_conf(&addrs)
        .context("give the DNS proxy's upstream with --dns-upstream IP[:PORT] or [egress] dns_upstreams")
}

/// Points the bundle's spec at the session (the resolv.conf is written next
/// to the bundle).
fn rewrite_spec(bundle: &Path, session: &EgressSession) -> anyhow::Result<()> {
    let config = bundle.join(policy_compiler::bundle::CONFIG_JSON);
    let text =
        std::fs::read_to_string(&config).with_context(|| format!("{}: cannot read", config.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", config.display()))?;
    join_session(&mut spec, session, &bundle.with_file_name("resolv.conf")).with_context(|| {
        format!(
            "{}: cannot point the spec at the sandbox's network",
            config.display()
        )
    })?;
    std::fs::write(&config, spec.to_string()).with_context(|| format!("{}: cannot write", config.display()))
}

/// Starts egress for execution `id` of the compiled `bundle`, its events
/// joining the execution's audit log `events`, and rewrites its spec;
/// dropping the session removes everything.
pub fn start(
    id: &str,
    bundle: &Path,
    compiled: &CompiledAnnotations,
    args: &EgressArgs,
    node: &EgressSettings,
    events: &Arc<JsonLinesWriter>,
) -> anyhow::Result<EgressSession> {
    // Network namespace names are short and plain; ids are `<skill>-<hex>`.
    let name = NetnsName::new(&format!("skillbox-{}", &id[id.len().saturating_sub(16)..]))?;
    let ttl_grace = match args.ttl_grace_secs {
        Some(secs) => Duration::from_secs(secs),
        None => node.ttl_grace.as_duration(),
    };
    let config = SessionConfig {
        outer: None,
        upstreams: upstreams(args, node)?,
        ttl_grace,
        events: Arc::clone(events),
    };
    let session = EgressSession::start(id, name, &compiled.policy.network, &config)
        .context("cannot set up the sandbox's network egress")?;
    rewrite_spec(bundle, &session)?;
    Ok(session)
}
