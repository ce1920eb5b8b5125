//! The nftables commands of a sandbox's table (`Builder`) and the small
//! expression helpers they are made of. See `rules.rs` for the chains' order.

use ipnet::IpNet;
use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::{Destination, NetworkRule, Port};
use serde_json::{json, Value};

use super::*;

fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn net_value(net: IpNet) -> Value {
    if net.prefix_len() == net.max_prefix_len() {
        json!(net.addr().to_string())
    } else {
        json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
    }
}

fn ports_value(ports: &[Port]) -> Value {
    match ports {
        [one] => json!(one.get()),
        many => json!({"set": many.iter().map(|p| p.get()).collect::<Vec<_>>()}),
    }
}

fn truncate(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What the connection log names for each member of the `verdict` set
/// (`always-deny` or `deny`) of `family`: the policy rule or node address
/// it comes from.
fn set_ranges(
    network: &EffectiveNetwork,
    facts: &SandboxFacts,
    verdict: Verdict,
    family: Family,
) -> Vec<(IpNet, String)> {
    let named: Vec<(IpNet, String)> = match verdict {
        Verdict::AlwaysDeny => network
            .always_deny
            .iter()
            .map(|cidr| (cidr.net(), format!("cidr {cidr}")))
            .chain(
                facts
                    .node_addrs
                    .iter()
                    .map(|addr| (IpNet::from(*addr), format!("node address {addr}"))),
            )
            .collect(),
        _ => network
            .deny
            .iter()
            .filter(|rule| rule.ports.is_none())
            .filter_map(|rule| match &rule.destination {
                Destination::Cidr(cidr) => Some((cidr.net(), rule.to_string())),
                Destination::Domain(_) => None,
            })
            .collect(),
    };
    named
        .into_iter()
        .filter(|(net, _)| Family::of(net.addr()) == family)
        .map(|(net, text)| (net, truncate(format!("{verdict}: {text}"), MAX_COMMENT_LEN)))
        .collect()
}

/// Accumulates the commands of one table.
pub(super) struct Builder<'a> {
    pub(super) table: &'a str,
    pub(super) log_group: Option<u16>,
    pub(super) objects: Vec<Value>,
    /// The judging rules so far; a rule's index is its log prefix's.
    pub(super) judging: Vec<JudgingRule>,
}

impl Builder<'_> {
    fn add(&mut self, kind: &str, mut body: Value) {
        body["family"] = json!(FAMILY);
        body["table"] = json!(self.table);
        self.objects.push(json!({"add": {kind: body}}));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Value>, comment: Option<String>) {
        let mut body = json!({"chain": chain, "expr": expr});
        if let Some(comment) = comment {
            body["comment"] = json!(truncate(comment, MAX_COMMENT_LEN));
        }
        self.add("rule", body);
    }

    /// A judging rule: `matches`, a counter, a log when configured, then
    /// `verdict`; the comment names the verdict and `detail`.
    fn judged(&mut self, chain: &str, expr: Vec<Value>, verdict: Verdict, detail: &str, action: Value) {
        self.judged_over(chain, expr, verdict, detail, action, Vec::new());
    }

    /// [`Builder::judged`] for a rule matching a set of `ranges`, each
    /// named for the connection log.
    fn judged_over(
        &mut self,
        chain: &str,
        mut expr: Vec<Value>,
        verdict: Verdict,
        detail: &str,
        action: Value,
        ranges: Vec<(IpNet, String)>,
    ) {
        expr.push(json!({"counter": {"packets": 0, "bytes": 0}}));
        if let Some(group) = self.log_group {
            let prefix = log_prefix(verdict, self.judging.len());
            expr.push(json!({"log": {"prefix": prefix, "group": group}}));
        }
        expr.push(action);
        let comment = if detail.is_empty() {
            verdict.to_string()
        } else {
            truncate(format!("{verdict}: {detail}"), MAX_COMMENT_LEN)
        };
        self.judging.push(JudgingRule {
            verdict,
            text: comment.clone(),
            ranges,
        });
        self.rule(chain, expr, Some(comment));
    }

    pub(super) fn header(&mut self) {
        let table = json!({"family": FAMILY, "name": self.table});
        self.objects.push(json!({"add": {"table": table}}));
        self.objects.push(json!({"delete": {"table": table}}));
        self.objects.push(json!({"add": {"table": table}}));
    }

    pub(super) fn sets(&mut self, network: &EffectiveNetwork, facts: &SandboxFacts) {
        let always: Vec<IpNet> = network
            .always_deny
            .iter()
            .map(|cidr| cidr.net())
            .chain(facts.node_addrs.iter().map(|addr| IpNet::from(*addr)))
            .collect();
        let deny: Vec<IpNet> = network
            .deny
            .iter()
            .filter_map(|rule| match (&rule.destination, &rule.ports) {
                (Destination::Cidr(cidr), None) => Some(cidr.net()),
                _ => None,
            })
            .collect();
        for family in FAMILIES {
            for (name, nets) in [(family.always_deny_set(), &always), (family.deny_set(), &deny)] {
                self.interval_set(&name, family, nets);
            }
            self.add(
                "set",
                json!({"name": family.allowed_set(), "type": [family.addr_type(), "inet_service"], "flags": ["timeout"]}),
            );
            self.add(
                "set",
                json!({"name": family.allowed_any_set(), "type": family.addr_type(), "flags": ["timeout"]}),
            );
        }
    }

    /// An interval set of the `family` members of `nets`, merged (nft
    /// refuses overlapping intervals).
    fn interval_set(&mut self, name: &str, family: Family, nets: &[IpNet]) {
        let ours: Vec<IpNet> = nets
            .iter()
            .copied()
            .filter(|net| Family::of(net.addr()) == family)
            .collect();
        self.add(
            "set",
            json!({"name": name, "type": family.addr_type(), "flags": ["interval"]}),
        );
        let merged = IpNet::aggregate(&ours);
        if !merged.is_empty() {
            let elem: Vec<Value> = merged.into_iter().map(net_value).collect();
            self.add("element", json!({"name": name, "elem": elem}));
        }
    }

    pub(super) fn forward(&mut self, network: &EffectiveNetwork, facts: &SandboxFacts, enabled: &[Family]) {
        self.add("chain", json!({"name": REFUSE_CHAIN}));
        self.rule(
            REFUSE_CHAIN,
            vec![
                matches("==", meta("l4proto"), json!("tcp")),
                json!({"reject": {"type": "tcp reset"}}),
            ],
            None,
        );
        self.rule(
            REFUSE_CHAIN,
            vec![json!({"reject": {"type": "icmpx", "expr": "admin-prohibited"}})],
            None,
        );
        let refuse = json!({"goto": {"target": REFUSE_CHAIN}});
        let drop = json!({"drop": null});
        let accept = json!({"accept": null});
        let c = FORWARD_CHAIN;
        self.add(
            "chain",
            json!({"name": c, "type": "filter", "hook": "forward", "prio": PRIORITY, "policy": "accept"}),
        );
        let veth = json!(facts.outer_veth);
        let established = || {
            matches(
                "in",
                json!({"ct": {"key": "state"}}),
                json!(["established", "related"]),
            )
        };
        self.rule(
            c,
            vec![
                matches("==", meta("oifname"), veth.clone()),
                established(),
                accept.clone(),
            ],
            Some("replies to the sandbox".into()),
        );
        if facts.inbound.is_open() {
            self.rule(
                c,
                vec![
                    matches("==", meta("oifname"), veth.clone()),
                    matches("in", json!({"ct": {"key": "state"}}), json!("new")),
                    matches("in", json!({"ct": {"key": "status"}}), json!("dnat")),
                    json!({"counter": {"packets": 0, "bytes": 0}}),
                    accept.clone(),
                ],
                Some("inbound: forwarded to the sandbox".into()),
            );
        }
        self.judged(
            c,
            vec![matches("==", meta("oifname"), veth.clone())],
            Verdict::Inbound,
            "new connections into the sandbox",
            drop.clone(),
        );
        self.rule(
            c,
            vec![matches("!=", meta("iifname"), veth), accept.clone()],
            Some("not from this sandbox".into()),
        );
        self.rule(c, vec![established(), accept.clone()], None);
        self.rule(
            c,
            vec![
                matches("in", json!({"ct": {"key": "state"}}), json!("invalid")),
                json!({"counter": {"packets": 0, "bytes": 0}}),
                drop.clone(),
            ],
            Some("invalid".into()),
        );
        for family in FAMILIES {
            let sources: Vec<Value> = facts
                .sandbox_addrs
                .iter()
                .filter(|addr| Family::of(**addr) == family)
                .map(|addr| json!(addr.to_string()))
                .collect();
            if enabled.contains(&family) {
                let saddr = payload(family.payload(), "saddr");
                self.judged(
                    c,
                    vec![matches("!=", saddr, json!({"set": sources}))],
                    Verdict::Spoofed,
                    family.payload(),
                    drop.clone(),
                );
            } else {
                let nfproto = if family == Family::V4 { "ipv4" } else { "ipv6" };
                self.judged(
                    c,
                    vec![matches("==", meta("nfproto"), json!(nfproto))],
                    Verdict::FamilyOff,
                    nfproto,
                    refuse.clone(),
                );
            }
        }
        for &family in enabled {
            let daddr = payload(family.payload(), "daddr");
            for (set, verdict) in [
                (family.always_deny_set(), Verdict::AlwaysDeny),
                (family.deny_set(), Verdict::Deny),
            ] {
                let ranges = set_ranges(network, facts, verdict, family);
                self.judged_over(
                    c,
                    vec![matches("==", daddr.clone(), json!(format!("@{set}")))],
                    verdict,
                    &set,
                    refuse.clone(),
                    ranges,
                );
            }
        }
        for rule in &network.deny {
            let (Destination::Cidr(cidr), Some(ports)) = (&rule.destination, &rule.ports) else {
                continue;
            };
            let family = Family::of(cidr.net().addr());
            if !enabled.contains(&family) {
                continue;
            }
            let expr = vec![
                matches("==", payload(family.payload(), "daddr"), net_value(cidr.net())),
                matches("==", meta("l4proto"), json!({"set": ["tcp", "udp"]})),
                matches("==", payload("th", "dport"), ports_value(ports)),
            ];
            self.judged(c, expr, Verdict::Deny, &rule.to_string(), refuse.clone());
        }
        self.judged(
            c,
            vec![
                matches("==", meta("l4proto"), json!({"set": ["tcp", "udp"]})),
                matches("==", payload("th", "dport"), json!(53)),
            ],
            Verdict::DnsBypass,
            "DNS only through the proxy",
            refuse.clone(),
        );
        self.judged(
            c,
            vec![matches("!=", meta("l4proto"), json!("tcp"))],
            Verdict::NotTcp,
            "",
            refuse.clone(),
        );
        for rule in &network.allow {
            self.allow_cidr(rule, enabled, accept.clone());
        }
        for &family in enabled {
            let daddr = payload(family.payload(), "daddr");
            let dport = payload("tcp", "dport");
            let set = family.allowed_set();
            self.judged(
                c,
                vec![matches(
                    "==",
                    json!({"concat": [daddr.clone(), dport]}),
                    json!(format!("@{set}")),
                )],
                Verdict::AllowLearned,
                &set,
                accept.clone(),
            );
            let set = family.allowed_any_set();
            self.judged(
                c,
                vec![
                    matches("==", daddr, json!(format!("@{set}"))),
                    matches("==", meta("l4proto"), json!("tcp")),
                ],
                Verdict::AllowLearned,
                &set,
                accept.clone(),
            );
        }
        self.judged(c, Vec::new(), Verdict::DefaultDeny, "", refuse);
    }

    fn allow_cidr(&mut self, rule: &NetworkRule, enabled: &[Family], accept: Value) {
        let Destination::Cidr(cidr) = &rule.destination else {
            return;
        };
        let family = Family::of(cidr.net().addr());
        if !enabled.contains(&family) {
            return;
        }
        let mut expr = vec![matches(
            "==",
            payload(family.payload(), "daddr"),
            net_value(cidr.net()),
        )];
        expr.push(match &rule.ports {
            Some(ports) => matches("==", payload("tcp", "dport"), ports_value(ports)),
            None => matches("==", meta("l4proto"), json!("tcp")),
        });
        self.judged(FORWARD_CHAIN, expr, Verdict::Allow, &rule.to_string(), accept);
    }

    pub(super) fn input(&mut self, facts: &SandboxFacts, enabled: &[Family]) {
        let c = INPUT_CHAIN;
        self.add(
            "chain",
            json!({"name": c, "type": "filter", "hook": "input", "prio": PRIORITY, "policy": "accept"}),
        );
        let from_veth = || matches("==", meta("iifname"), json!(facts.outer_veth));
        for proxy in &facts.dns_proxy {
            self.accept_local(from_veth(), *proxy, &["tcp", "udp"], format!("dns proxy {proxy}"));
        }
        if let Some(recorder) = facts.recorder {
            self.accept_local(
                from_veth(),
                recorder,
                &["tcp"],
                format!("observing recorder {recorder}"),
            );
        }
        if enabled.contains(&Family::V6) {
            self.rule(
                c,
                vec![
                    from_veth(),
                    matches(
                        "==",
                        payload("icmpv6", "type"),
                        json!({"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]}),
                    ),
                    json!({"accept": null}),
                ],
                Some("ipv6 neighbour discovery".into()),
            );
        }
        if facts.inbound.localhost() {
            self.rule(
                c,
                vec![
                    from_veth(),
                    matches("==", json!({"ct": {"key": "direction"}}), json!("reply")),
                    matches("in", json!({"ct": {"key": "status"}}), json!("dnat")),
                    json!({"counter": {"packets": 0, "bytes": 0}}),
                    json!({"accept": null}),
                ],
                Some("inbound: replies to the outer namespace's own connections".into()),
            );
        }
        self.judged(
            c,
            vec![from_veth()],
            Verdict::Node,
            "the node is unreachable",
            json!({"drop": null}),
        );
    }

    /// Accepts, in the input chain, what comes `from` the sandbox to a
    /// socket the outer namespace serves itself over `protocols`.
    fn accept_local(&mut self, from: Value, socket: SocketAddr, protocols: &[&str], comment: String) {
        let family = Family::of(socket.ip());
        self.rule(
            INPUT_CHAIN,
            vec![
                from,
                matches(
                    "==",
                    payload(family.payload(), "daddr"),
                    json!(socket.ip().to_string()),
                ),
                matches("==", meta("l4proto"), json!({"set": protocols})),
                matches("==", payload("th", "dport"), json!(socket.port())),
                json!({"accept": null}),
            ],
            Some(comment),
        );
    }

    /// Counts the sandbox's packets that leave the outer namespace.
    pub(super) fn left(&mut self, facts: &SandboxFacts, comment: &str) {
        self.add(
            "chain",
            json!({"name": LEFT_CHAIN, "type": "filter", "hook": "postrouting", "prio": PRIORITY, "policy": "accept"}),
        );
        self.rule(
            LEFT_CHAIN,
            vec![
                matches("==", meta("iifname"), json!(facts.outer_veth)),
                // The outer namespace's own packets on the veth (IPv6
                // multicast reports) come and go by it.
                matches("!=", meta("oifname"), json!(facts.outer_veth)),
                json!({"counter": {"packets": 0, "bytes": 0}}),
            ],
            Some(comment.to_owned()),
        );
    }
}
