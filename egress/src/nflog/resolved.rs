//! Which allow rule let a learned address in. The table's learned sets
//! only know addresses; the DNS proxy's `dns_query` events know which
//! allow rules matched the name that resolved to them. [`ResolvedRules`]
//! sits between the proxy and its event sink, remembers the rules of each
//! answered address, and names them for `allow-learned` connections.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::events::{DnsVerdict, EgressEvent, EventError, EventSink};

/// Addresses remembered; the oldest is forgotten first (its connections
/// are then named by the learned set instead).
pub const MAX_ADDRESSES: usize = 4096;

/// An [`EventSink`] that forwards every event and remembers, per answered
/// address, the allow rules of the names that resolved to it.
pub struct ResolvedRules {
    sink: Arc<dyn EventSink>,
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    rules: HashMap<IpAddr, BTreeSet<String>>,
    order: VecDeque<IpAddr>,
}

impl ResolvedRules {
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        ResolvedRules {
            sink,
            known: Mutex::new(Known::default()),
        }
    }

    /// `allow: <rule>[; <rule>…]` for the allow rules whose names resolved
    /// to `ip`, if any did.
    pub fn rule_for(&self, ip: IpAddr) -> Option<String> {
        let known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let rules = known.rules.get(&ip)?;
        Some(format!(
            "allow: {}",
            rules.iter().map(String::as_str).collect::<Vec<_>>().join("; ")
        ))
    }

    fn remember(&self, ip: IpAddr, rules: &str) {
        let mut known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !known.rules.contains_key(&ip) {
            if known.order.len() >= MAX_ADDRESSES {
                if let Some(oldest) = known.order.pop_front() {
                    known.rules.remove(&oldest);
                }
            }
            known.order.push_back(ip);
        }
        let entry = known.rules.entry(ip).or_default();
        entry.extend(rules.split("; ").map(str::to_owned));
    }
}

impl EventSink for ResolvedRules {
    fn record(&self, event: &EgressEvent) -> Result<(), EventError> {
        if let EgressEvent::DnsQuery(query) = event {
            if let (DnsVerdict::Allowed, Some(rules)) = (query.verdict, &query.rule) {
                query
                    .answers
                    .iter()
                    .filter(|answer| matches!(answer.record_type.as_str(), "A" | "AAAA"))
                    .filter_map(|answer| answer.data.parse::<IpAddr>().ok())
                    .for_each(|ip| self.remember(ip, rules));
            }
        }
        self.sink.record(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ConnectionEvent, ConnectionVerdict, DnsAnswer, DnsQueryEvent, Protocol};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<EgressEvent>>);

    impl EventSink for Recorded {
        fn record(&self, event: &EgressEvent) -> Result<(), EventError> {
            self.0.lock().unwrap().push(event.clone());
            Ok(())
        }
    }

    fn answered(
        name: &str,
        verdict: DnsVerdict,
        rule: Option<&str>,
        answers: &[(&str, &str)],
    ) -> EgressEvent {
        EgressEvent::DnsQuery(DnsQueryEvent {
            name: name.into(),
            qtype: "A".into(),
            verdict,
            rcode: "NOERROR".into(),
            rule: rule.map(str::to_owned),
            reason: None,
            answers: answers
                .iter()
                .map(|(kind, data)| DnsAnswer {
                    name: name.into(),
                    record_type: (*kind).into(),
                    data: (*data).into(),
                    ttl: 60,
                })
                .collect(),
            sinkhole: false,
        })
    }

    #[test]
    fn remembers_the_rules_of_answered_addresses_and_forwards_everything() {
        let recorded = Arc::new(Recorded::default());
        let resolved = ResolvedRules::new(recorded.clone());
        let events = [
            answered(
                "a.example",
                DnsVerdict::Allowed,
                Some("domain a.example ports 8080"),
                &[("CNAME", "cdn.example"), ("A", "203.0.113.10")],
            ),
            answered(
                "b.example",
                DnsVerdict::Allowed,
                Some("domain *.example ports 443; domain b.example ports 8080"),
                &[("A", "203.0.113.10"), ("AAAA", "2001:db8::10")],
            ),
            answered("c.example", DnsVerdict::Refused, None, &[("A", "198.51.100.1")]),
            EgressEvent::Connection(ConnectionEvent {
                destination: "203.0.113.10".parse().unwrap(),
                port: Some(8080),
                protocol: Protocol::Tcp,
                verdict: ConnectionVerdict::Allowed,
                rule: None,
            }),
        ];
        for event in &events {
            resolved.record(event).unwrap();
        }
        assert_eq!(*recorded.0.lock().unwrap(), events);
        assert_eq!(
            resolved.rule_for("203.0.113.10".parse().unwrap()).as_deref(),
            Some(
                "allow: domain *.example ports 443; domain a.example ports 8080; domain b.example ports 8080"
            )
        );
        assert_eq!(
            resolved.rule_for("2001:db8::10".parse().unwrap()).as_deref(),
            Some("allow: domain *.example ports 443; domain b.example ports 8080")
        );
        assert_eq!(resolved.rule_for("198.51.100.1".parse().unwrap()), None);
    }

    #[test]
    fn forgets_the_oldest_address_beyond_the_limit() {
        let resolved = ResolvedRules::new(Arc::new(Recorded::default()));
        for n in 0..=MAX_ADDRESSES as u32 {
            resolved.remember(
                std::net::Ipv4Addr::from(0x0a00_0000 + n).into(),
                "domain x.example",
            );
        }
        assert_eq!(resolved.rule_for("10.0.0.0".parse().unwrap()), None);
        assert!(resolved.rule_for("10.0.0.1".parse().unwrap()).is_some());
        assert_eq!(resolved.known.lock().unwrap().rules.len(), MAX_ADDRESSES);
    }
}
