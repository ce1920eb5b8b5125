//! What a skill's declared policy would do with a TCP connection the
//! observing network accepted instead: the same order as the enforcing
//! table and DNS proxy (always-denied ranges, deny rules, allow rules,
//! default deny), and for a sinkhole address the DNS proxy's decision on
//! the name it was handed out for plus the name's ports. The rule texts
//! are those of the enforcing table's `connection` events.

use std::net::IpAddr;

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::{Destination, NetworkRule, Port};

use crate::dns::{DnsPolicy, NameDecision};
use crate::events::ConnectionVerdict;

/// The declared policy, ready to judge connections.
#[derive(Debug, Clone)]
pub struct DeclaredPolicy {
    network: EffectiveNetwork,
    names: DnsPolicy,
}

fn port_listed(ports: &Option<Vec<Port>>, port: u16) -> bool {
    ports
        .as_ref()
        .is_none_or(|ports| ports.iter().any(|p| p.get() == port))
}

fn cidr_rule_matches(rule: &NetworkRule, ip: IpAddr, port: u16) -> bool {
    matches!(&rule.destination, Destination::Cidr(cidr) if cidr.contains(ip))
        && port_listed(&rule.ports, port)
}

impl DeclaredPolicy {
    pub fn new(network: &EffectiveNetwork) -> Self {
        DeclaredPolicy {
            network: network.clone(),
            names: DnsPolicy::from_network(network),
        }
    }

    pub fn names(&self) -> &DnsPolicy {
        &self.names
    }

    /// The verdict and the rule that decided, for a TCP connection to `ip`
    /// port `port`, which the sandbox got for `name` if it has one.
    pub fn judge(&self, name: Option<&str>, ip: IpAddr, port: u16) -> (ConnectionVerdict, String) {
        if let Some(name) = name {
            return match self.names.decide(name) {
                NameDecision::Refused(refusal) => {
                    (ConnectionVerdict::Denied, format!("dns: {name}: {refusal}"))
                }
                NameDecision::Allowed(allowed) if port_listed(&allowed.ports, port) => (
                    ConnectionVerdict::Allowed,
                    format!("allow: {}", allowed.rules.join("; ")),
                ),
                NameDecision::Allowed(_) => (
                    ConnectionVerdict::Denied,
                    format!("default-deny: port {port} is not among {name}'s ports"),
                ),
            };
        }
        if let Some(range) = self.network.always_deny.iter().find(|cidr| cidr.contains(ip)) {
            return (ConnectionVerdict::Denied, format!("always-deny: cidr {range}"));
        }
        if let Some(rule) = self
            .network
            .deny
            .iter()
            .find(|rule| cidr_rule_matches(rule, ip, port))
        {
            return (ConnectionVerdict::Denied, format!("deny: {rule}"));
        }
        if let Some(rule) = self
            .network
            .allow
            .iter()
            .find(|rule| cidr_rule_matches(rule, ip, port))
        {
            return (ConnectionVerdict::Allowed, format!("allow: {rule}"));
        }
        (ConnectionVerdict::Denied, "default-deny".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn declared() -> DeclaredPolicy {
        let network: EffectiveNetwork = serde_json::from_value(json!({
            "allow": [
                {"domain": "api.example.org", "ports": [443]},
                {"cidr": "203.0.113.0/24", "ports": [80]},
            ],
            "deny": [{"cidr": "203.0.113.13/32"}, {"domain": "bad.example.org"}],
            "always_deny": ["169.254.0.0/16"],
        }))
        .unwrap();
        DeclaredPolicy::new(&network)
    }

    #[test]
    fn names_are_judged_with_their_ports() {
        let policy = declared();
        let sinkhole: IpAddr = "198.18.128.1".parse().unwrap();
        let verdict = |name, port| policy.judge(Some(name), sinkhole, port);
        assert_eq!(
            verdict("api.example.org", 443),
            (
                ConnectionVerdict::Allowed,
                "allow: domain api.example.org ports 443".to_owned()
            )
        );
        assert_eq!(
            verdict("api.example.org", 80),
            (
                ConnectionVerdict::Denied,
                "default-deny: port 80 is not among api.example.org's ports".to_owned()
            )
        );
        let (refused, rule) = verdict("exfil.example.net", 443);
        assert_eq!(refused, ConnectionVerdict::Denied);
        assert_eq!(rule, "dns: exfil.example.net: no allow rule matches the name");
    }

    #[test]
    fn addresses_are_judged_like_the_table_does() {
        let policy = declared();
        let judge = |ip: &str, port| policy.judge(None, ip.parse().unwrap(), port);
        assert_eq!(judge("203.0.113.7", 80).0, ConnectionVerdict::Allowed);
        assert_eq!(
            judge("203.0.113.7", 443),
            (ConnectionVerdict::Denied, "default-deny".to_owned())
        );
        assert_eq!(
            judge("203.0.113.13", 80),
            (
                ConnectionVerdict::Denied,
                "deny: cidr 203.0.113.13/32 (all ports)".to_owned()
            )
        );
        assert_eq!(
            judge("169.254.169.254", 80),
            (
                ConnectionVerdict::Denied,
                "always-deny: cidr 169.254.0.0/16".to_owned()
            )
        );
    }
}
