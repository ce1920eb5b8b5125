//! What the egress session of a `skillbox run` is configured with: the DNS
//! proxy's upstreams and TTL grace, from the command line, else the node
//! config, else /etc/resolv.conf. The session itself is the sandbox's
//! (`skillbox_sandbox::Sandbox`).

use std::time::Duration;

use anyhow::Context;
use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::node_config::{DnsUpstream, EgressSettings as NodeEgress};
use skillbox_sandbox::sandbox::EgressSettings;

use crate::cli::EgressArgs;

/// The settings `--dns-upstream` and `--egress-ttl-grace` give, each else
/// the node config's.
pub fn settings(
    args: &EgressArgs,
    node: &NodeEgress,
    network: &EffectiveNetwork,
) -> anyhow::Result<EgressSettings> {
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
    let ttl_grace = match args.ttl_grace_secs {
        Some(secs) => Duration::from_secs(secs),
        None => node.ttl_grace.as_duration(),
    };
    EgressSettings::resolve(configured, ttl_grace, network)
        .context("give the DNS proxy's upstream with --dns-upstream IP[:PORT] or [egress] dns_upstreams")
}
