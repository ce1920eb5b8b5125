//! Which names the proxy resolves, for which ports, and which answered
//! addresses it may teach the firewall: a pure function of the policy.
//!
//! Precedence, for a queried name (lower-cased, trailing dot removed):
//!
//! 1. A name that is not a valid host name (labels of letters, digits and
//!    inner hyphens) is refused: no pattern could match it.
//! 2. A `deny` domain rule without ports that matches the name refuses it.
//! 3. No `allow` domain rule matching the name: refused.
//! 4. The name's ports are the union of the matching allow rules' ports
//!    (every port if one of them has none).
//! 5. Ports of matching `deny` domain rules with ports are taken out. If
//!    nothing is left the name is refused. If the allow covers every port,
//!    "every port but these" cannot be expressed as a learned port list, so
//!    the name is refused (fails closed; `policy lint` should flag it).
//!
//! For answered addresses: one inside the node's always-denied ranges or a
//! `deny` CIDR rule without ports is never learned (DNS rebinding to
//! metadata or node-internal addresses). `deny` CIDR rules with ports are
//! left to the firewall, which applies them before the learned sets.

use std::net::IpAddr;

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::{is_host_name, Cidr, Destination, DomainPattern, NetworkRule, Port};

/// The domain part of an effective network policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsPolicy {
    allow: Vec<(DomainPattern, Option<Vec<Port>>)>,
    deny: Vec<(DomainPattern, Option<Vec<Port>>)>,
    blocked: Vec<Cidr>,
}

/// What the proxy does with a queried name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameDecision {
    Allowed(AllowedName),
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedName {
    /// `None`: every port.
    pub ports: Option<Vec<Port>>,
    /// The matching allow rules, as `Display`ed by `NetworkRule`.
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    InvalidName,
    NotAllowed,
    Denied {
        rule: String,
    },
    /// A deny rule's ports leave none, or cut into an every-port allow.
    PortsDenied {
        rule: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::InvalidName => f.write_str("not a valid host name"),
            Refusal::NotAllowed => f.write_str("no allow rule matches the name"),
            Refusal::Denied { rule } => write!(f, "denied by {rule}"),
            Refusal::PortsDenied { rule } => {
                write!(
                    f,
                    "{rule} takes ports out of an allow that the proxy cannot narrow"
                )
            }
        }
    }
}

fn rule_text(pattern: &DomainPattern, ports: &Option<Vec<Port>>) -> String {
    NetworkRule {
        destination: Destination::Domain(pattern.clone()),
        ports: ports.clone(),
    }
    .to_string()
}

impl DnsPolicy {
    pub fn from_network(network: &EffectiveNetwork) -> Self {
        let domains = |rules: &[NetworkRule]| {
            rules
                .iter()
                .filter_map(|rule| match &rule.destination {
                    Destination::Domain(pattern) => Some((pattern.clone(), rule.ports.clone())),
                    Destination::Cidr(_) => None,
                })
                .collect()
        };
        let mut blocked = network.always_deny.clone();
        blocked.extend(
            network
                .deny
                .iter()
                .filter_map(|rule| match (&rule.destination, &rule.ports) {
                    (Destination::Cidr(cidr), None) => Some(*cidr),
                    _ => None,
                }),
        );
        DnsPolicy {
            allow: domains(&network.allow),
            deny: domains(&network.deny),
            blocked,
        }
    }

    /// Whether the policy allows any name at all.
    pub fn allows_any_name(&self) -> bool {
        !self.allow.is_empty()
    }

    /// Decides `name`: any case, with or without the trailing dot.
    pub fn decide(&self, name: &str) -> NameDecision {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if !is_host_name(&name) {
            return NameDecision::Refused(Refusal::InvalidName);
        }
        let denies: Vec<_> = self.deny.iter().filter(|(p, _)| p.matches(&name)).collect();
        if let Some((pattern, ports)) = denies.iter().find(|(_, ports)| ports.is_none()) {
            return NameDecision::Refused(Refusal::Denied {
                rule: rule_text(pattern, ports),
            });
        }
        let allows: Vec<_> = self.allow.iter().filter(|(p, _)| p.matches(&name)).collect();
        if allows.is_empty() {
            return NameDecision::Refused(Refusal::NotAllowed);
        }
        let rules = allows.iter().map(|(p, ports)| rule_text(p, ports)).collect();
        let mut ports: Option<Vec<Port>> = Some(Vec::new());
        for (_, rule_ports) in &allows {
            match (&mut ports, rule_ports) {
                (Some(all), Some(more)) => all.extend(more),
                _ => ports = None,
            }
        }
        if let Some(list) = &mut ports {
            list.sort();
            list.dedup();
        }
        for (pattern, deny_ports) in denies {
            let deny_ports = deny_ports.as_deref().unwrap_or_default();
            let refusal = || {
                NameDecision::Refused(Refusal::PortsDenied {
                    rule: rule_text(pattern, &Some(deny_ports.to_vec())),
                })
            };
            match &mut ports {
                None => return refusal(),
                Some(list) => {
                    list.retain(|port| !deny_ports.contains(port));
                    if list.is_empty() {
                        return refusal();
                    }
                }
            }
        }
        NameDecision::Allowed(AllowedName { ports, rules })
    }

    /// Whether an address an allowed name resolved to may be learned.
    pub fn may_learn(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        !self.blocked.iter().any(|cidr| cidr.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> NetworkRule {
        serde_json::from_str(text).unwrap()
    }

    fn policy(allow: &[&str], deny: &[&str], always_deny: &[&str]) -> DnsPolicy {
        DnsPolicy::from_network(&EffectiveNetwork {
            allow: allow.iter().map(|r| rule(r)).collect(),
            deny: deny.iter().map(|r| rule(r)).collect(),
            always_deny: always_deny.iter().map(|c| c.parse().unwrap()).collect(),
        })
    }

    fn ports(list: &[u16]) -> Option<Vec<Port>> {
        Some(
            list.iter()
                .map(|&p| Port::try_from(i64::from(p)).unwrap())
                .collect(),
        )
    }

    fn allowed(decision: NameDecision) -> AllowedName {
        match decision {
            NameDecision::Allowed(allowed) => allowed,
            NameDecision::Refused(refusal) => panic!("refused: {refusal}"),
        }
    }

    #[test]
    fn exact_and_wildcard_names() {
        let p = policy(
            &[
                r#"{"domain":"api.weather.gov","ports":[443]}"#,
                r#"{"domain":"*.noaa.gov","ports":[443,80]}"#,
                r#"{"cidr":"203.0.113.0/24"}"#,
            ],
            &[],
            &[],
        );
        let a = allowed(p.decide("API.Weather.gov."));
        assert_eq!(a.ports, ports(&[443]));
        assert_eq!(a.rules, ["domain api.weather.gov ports 443"]);
        assert_eq!(allowed(p.decide("a.b.noaa.gov")).ports, ports(&[80, 443]));
        for refused in [
            "noaa.gov",
            "evilnoaa.gov",
            "x.api.weather.gov",
            "weather.gov",
            "203.0.113.1",
        ] {
            assert_eq!(
                p.decide(refused),
                NameDecision::Refused(Refusal::NotAllowed),
                "{refused}"
            );
        }
    }

    #[test]
    fn odd_names_are_refused() {
        let p = policy(&[r#"{"domain":"*.example.com"}"#], &[], &[]);
        let long = format!("{}.example.com", "a".repeat(64));
        for name in [
            "",
            ".",
            "a..example.com",
            "_x.example.com",
            "a\\000.example.com",
            long.as_str(),
        ] {
            assert_eq!(
                p.decide(name),
                NameDecision::Refused(Refusal::InvalidName),
                "{name:?}"
            );
        }
        let random = format!("{}.example.com", "q7".repeat(31));
        assert!(matches!(p.decide(&random), NameDecision::Allowed(_)));
    }

    #[test]
    fn ports_of_several_rules_unite() {
        let p = policy(
            &[
                r#"{"domain":"*.example.com","ports":[443]}"#,
                r#"{"domain":"a.example.com","ports":[8443,443]}"#,
            ],
            &[],
            &[],
        );
        let a = allowed(p.decide("a.example.com"));
        assert_eq!(a.ports, ports(&[443, 8443]));
        assert_eq!(a.rules.len(), 2);
        let p = policy(
            &[
                r#"{"domain":"*.example.com","ports":[443]}"#,
                r#"{"domain":"a.example.com"}"#,
            ],
            &[],
            &[],
        );
        assert_eq!(allowed(p.decide("a.example.com")).ports, None);
    }

    #[test]
    fn deny_wins() {
        let p = policy(
            &[
                r#"{"domain":"*.example.com","ports":[25,443]}"#,
                r#"{"domain":"*.example.org"}"#,
            ],
            &[
                r#"{"domain":"evil.example.com"}"#,
                r#"{"domain":"mail.example.com","ports":[25]}"#,
                r#"{"domain":"smtp.example.com","ports":[25,443]}"#,
                r#"{"domain":"a.example.org","ports":[25]}"#,
            ],
            &[],
        );
        assert!(matches!(
            p.decide("evil.example.com"),
            NameDecision::Refused(Refusal::Denied { .. })
        ));
        assert_eq!(allowed(p.decide("mail.example.com")).ports, ports(&[443]));
        assert!(matches!(
            p.decide("smtp.example.com"),
            NameDecision::Refused(Refusal::PortsDenied { .. })
        ));
        assert!(matches!(
            p.decide("a.example.org"),
            NameDecision::Refused(Refusal::PortsDenied { .. })
        ));
        assert_eq!(allowed(p.decide("b.example.org")).ports, None);
    }

    #[test]
    fn blocked_addresses_are_not_learned() {
        let p = policy(
            &[r#"{"domain":"*.example.com"}"#],
            &[
                r#"{"cidr":"198.51.100.0/24"}"#,
                r#"{"cidr":"203.0.113.0/24","ports":[25]}"#,
            ],
            &["169.254.0.0/16", "fd00:ec2::254/128"],
        );
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "198.51.100.9",
        ] {
            assert!(!p.may_learn(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.113.9", "2001:db8::1"] {
            assert!(p.may_learn(ip.parse().unwrap()), "{ip}");
        }
    }
}
