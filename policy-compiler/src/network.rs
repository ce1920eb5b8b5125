//! Egress rule building blocks: domain patterns, CIDRs and port sets, each a
//! validated newtype so that code downstream never handles raw strings.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// An exact DNS name (`api.example.com`) or a wildcard (`*.example.com`) that
/// matches any name strictly below a suffix of at least two labels that is
/// not itself a public suffix (see [`public_suffix_section`]).
/// Stored lower-case, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainPattern {
    wildcard: bool,
    /// The exact name, or the suffix after `*.`.
    name: String,
}

/// An IPv4 or IPv6 network with no host bits set. A bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr(IpNet);

/// A TCP/UDP port, 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u16")]
pub struct Port(u16);

/// Where a rule points: a domain pattern or a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    Domain(DomainPattern),
    Cidr(Cidr),
}

/// One allow or deny rule. `ports: None` means every port; a list is sorted
/// and free of duplicates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct NetworkRule {
    #[serde(flatten)]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<Port>>,
}

/// A rule as written: exactly one of `domain` or `cidr`, optional ports.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "NetworkRule")]
pub struct RawRule {
    /// An exact name or `*.suffix` wildcard.
    #[serde(default)]
    pub domain: Option<DomainPattern>,
    /// An IPv4/IPv6 network or address.
    #[serde(default)]
    pub cidr: Option<Cidr>,
    /// Ports the rule covers; omitted means every port.
    #[serde(default)]
    pub ports: Option<Vec<Port>>,
}

impl TryFrom<RawRule> for NetworkRule {
    type Error = String;
    fn try_from(raw: RawRule) -> Result<Self, Self::Error> {
        let destination = match (raw.domain, raw.cidr) {
            (Some(domain), None) => Destination::Domain(domain),
            (None, Some(cidr)) => Destination::Cidr(cidr),
            _ => return Err("expected exactly one of `domain` or `cidr` in a rule".to_owned()),
        };
        let ports = match raw.ports {
            Some(ports) if ports.is_empty() => {
                return Err(
                    "`ports` is empty: list at least one port, or omit `ports` for every port".to_owned(),
                )
            }
            Some(mut ports) => {
                ports.sort();
                ports.dedup();
                Some(ports)
            }
            None => None,
        };
        Ok(NetworkRule { destination, ports })
    }
}

/// Whether `name` is a host name as policies write them: lower-case,
/// dot-separated labels of 1-63 letters, digits or inner hyphens, at most
/// 253 characters, no trailing dot.
pub fn is_host_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(valid_label)
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// The section of the Public Suffix List that lists `name` (lower case, no
/// trailing dot) as a public suffix, if it does: `ICANN` (`co.uk`, `gov.uk`)
/// or `private` (`github.io`, `s3.amazonaws.com`). Names below a public
/// suffix are registered by unrelated parties, so a wildcard over one
/// (`*.co.uk`, `*.github.io`) would cover all of them. Both sections count:
/// a private suffix hands its subdomains to strangers just as a registry
/// does. The list is compiled into the `psl` crate (its version is the
/// list's); nothing is fetched at run time. TLDs the list does not know
/// (`*.example`) are left to the two-label rule.
pub fn public_suffix_section(name: &str) -> Option<&'static str> {
    let suffix = psl::suffix(name.as_bytes())?;
    if !suffix.is_known() || suffix.as_bytes() != name.as_bytes() {
        return None;
    }
    Some(match suffix.typ() {
        Some(psl::Type::Private) => "private",
        _ => "ICANN",
    })
}

impl DomainPattern {
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The exact name, or the suffix a wildcard covers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `name` (lower-case, no trailing dot) is covered by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        if self.wildcard {
            name.len() > self.name.len()
                && name.ends_with(&self.name)
                && name.as_bytes()[name.len() - self.name.len() - 1] == b'.'
        } else {
            name == self.name
        }
    }

    /// Whether every name this pattern matches lies at or below `suffix`.
    pub fn is_within_suffix(&self, suffix: &str) -> bool {
        self.name == suffix || self.name.ends_with(&format!(".{suffix}"))
    }
}

impl FromStr for DomainPattern {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if name.contains('*') {
            return Err(format!(
                "invalid domain {text:?}: a wildcard is only allowed as a whole leading label, as in *.example.com"
            ));
        }
        if !is_host_name(name) {
            return Err(format!(
                "invalid domain {text:?}: expected dot-separated labels of 1-63 letters, digits or inner hyphens, without a trailing dot"
            ));
        }
        if wildcard && name.split('.').count() < 2 {
            return Err(format!(
                "invalid domain {text:?}: a wildcard needs a suffix of at least two labels, as in *.example.com"
            ));
        }
        if let Some(section) = public_suffix_section(name).filter(|_| wildcard) {
            return Err(format!(
                "invalid domain {text:?}: {name} is a public suffix ({section} section of the Public Suffix List), so the wildcard would match names anyone can register; expected a wildcard below a registered domain, as in *.example.{name}, or exact names"
            ));
        }
        Ok(DomainPattern {
            wildcard,
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

impl Cidr {
    pub fn net(&self) -> IpNet {
        self.0
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr)
    }

    /// Whether the two networks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.0.contains(&other.0.network()) || other.0.contains(&self.0.network())
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match text.parse::<IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => {
                    return Err(format!(
                        "invalid CIDR {text:?}: expected an IPv4 or IPv6 network such as 203.0.113.0/24 or 2001:db8::/32"
                    ))
                }
            },
        };
        if net.trunc() != net {
            return Err(format!(
                "invalid CIDR {text:?}: host bits are set; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(Cidr(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Port {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for Port {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        match u16::try_from(value) {
            Ok(port) if port != 0 => Ok(Port(port)),
            _ => Err(format!("invalid port {value}: expected 1-65535")),
        }
    }
}

impl From<Port> for u16 {
    fn from(port: Port) -> u16 {
        port.0
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Domain(domain) => write!(f, "domain {domain}"),
            Destination::Cidr(cidr) => write!(f, "cidr {cidr}"),
        }
    }
}

impl fmt::Display for NetworkRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        match &self.ports {
            None => write!(f, " (all ports)"),
            Some(ports) => {
                let list: Vec<String> = ports.iter().map(|p| p.0.to_string()).collect();
                write!(f, " ports {}", list.join(","))
            }
        }
    }
}

/// `String` conversions shared by the string-backed newtypes for serde.
macro_rules! string_newtype {
    ($ty:ident, $description:literal) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                text.parse()
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.to_string()
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "description": $description })
            }
        }
    };
}

string_newtype!(
    DomainPattern,
    "An exact DNS name, or *. followed by a suffix of at least two labels that is not itself a public suffix (Public Suffix List, ICANN and private sections)."
);
string_newtype!(
    Cidr,
    "An IPv4 or IPv6 network (203.0.113.0/24, 2001:db8::/32) or a single address."
);

impl JsonSchema for NetworkRule {
    fn schema_name() -> Cow<'static, str> {
        "NetworkRule".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        RawRule::json_schema(generator)
    }
}

impl JsonSchema for Port {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 1, "maximum": 65535 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_patterns() {
        let exact: DomainPattern = "API.Example.com".parse().unwrap();
        assert_eq!(exact.to_string(), "api.example.com");
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));

        let wild: DomainPattern = "*.noaa.gov".parse().unwrap();
        assert!(wild.matches("www.noaa.gov"));
        assert!(wild.matches("a.b.noaa.gov"));
        assert!(!wild.matches("noaa.gov"));
        assert!(!wild.matches("evilnoaa.gov"));
        assert!(wild.is_within_suffix("gov"));
        assert!(!wild.is_within_suffix("v"));

        for bad in [
            "*", "*.com", "*foo.com", "a.*.com", "-a.com", "a..com", "a.com.", "",
        ] {
            assert!(bad.parse::<DomainPattern>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn wildcards_over_a_public_suffix_are_refused() {
        for ok in [
            "*.example.com",
            "*.example.co.uk",
            "*.noaa.gov",
            "*.example.gov.uk",
            "*.octocat.github.io",
            "*.wild.example",
            // Exact names are one name each, public suffix or not.
            "co.uk",
            "github.io",
        ] {
            assert!(ok.parse::<DomainPattern>().is_ok(), "{ok} refused");
        }
        for (bad, section) in [
            ("*.co.uk", "ICANN"),
            ("*.com.au", "ICANN"),
            ("*.co.jp", "ICANN"),
            ("*.gov.uk", "ICANN"),
            ("*.Ltd.UK", "ICANN"),
            ("*.github.io", "private"),
            ("*.s3.amazonaws.com", "private"),
            ("*.service.gov.uk", "private"),
            ("*.blogspot.com", "private"),
        ] {
            let err = bad.parse::<DomainPattern>().unwrap_err();
            let suffix = bad.strip_prefix("*.").unwrap().to_ascii_lowercase();
            assert_eq!(
                err,
                format!(
                    "invalid domain {bad:?}: {suffix} is a public suffix ({section} section of the Public Suffix List), so the wildcard would match names anyone can register; expected a wildcard below a registered domain, as in *.example.{suffix}, or exact names"
                )
            );
        }
        // One label stays the two-label rule's.
        let err = "*.com".parse::<DomainPattern>().unwrap_err();
        assert!(err.contains("at least two labels"), "{err}");
    }

    #[test]
    fn cidrs() {
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            "2001:db8::1".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::1/128"
        );
        let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        let a: Cidr = "10.0.0.0/8".parse().unwrap();
        let b: Cidr = "10.1.0.0/16".parse().unwrap();
        let c: Cidr = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
    }

    #[test]
    fn ports() {
        assert!(Port::try_from(0).is_err());
        assert!(Port::try_from(65536).is_err());
        assert_eq!(Port::try_from(443).unwrap().get(), 443);
    }
}
