//! The NAT table of one sandbox network, `ip skillbox_nat_<slot>` in the
//! outer namespace, in nft's text syntax. Pure, like the rest of `rules`.
//!
//! - chain `postrouting` (srcnat): the sandbox's own connections leaving by
//!   another interface are masqueraded; with localhost inbound, so are
//!   connections from 127.0.0.0/8 leaving by the sandbox's veth (the
//!   sandbox would answer 127.0.0.1 to itself).
//! - chain `prerouting` (dstnat), with inbound open: first the sockets the
//!   outer namespace serves itself (the DNS proxy's) `return` untouched;
//!   then TCP and UDP to any address of the outer namespace (`fib daddr
//!   type local`) that did not come from the sandbox's veth are DNAT'ed to
//!   the sandbox's address, same port. Packets from the veth are never
//!   DNAT'ed, so no connection the sandbox starts gets `ct status dnat`.
//! - chain `output` (priority -100, dstnat), with localhost inbound: the
//!   outer namespace's own TCP and UDP to 127.0.0.1 are DNAT'ed to the
//!   sandbox. Routing a 127.0.0.1 source out of the veth, and its replies
//!   back in, takes `route_localnet` on that veth (measured: neither
//!   `lo`'s alone nor the masquerade alone is enough; see `docs/egress.md`).
//!
//! - with an observing recorder (a scan), in `prerouting` after the kept
//!   sockets: every TCP connection arriving from the sandbox's veth is
//!   DNAT'ed to the recorder, whatever its destination.
//!
//! NAT rules see only a connection's first packet: replies, and the DNS
//! proxy's own upstream queries, are never DNAT'ed.

use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::Inbound;

/// What a sandbox network's NAT table is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatFacts {
    /// The table's name (`skillbox_nat_<slot>`).
    pub table: String,
    /// The outer end of the sandbox's veth.
    pub veth: String,
    /// The sandbox's address.
    pub inner: Ipv4Addr,
    /// Which connections from outside are DNAT'ed to the sandbox.
    pub inbound: Inbound,
    /// Sockets (TCP and UDP) the outer namespace serves itself, never
    /// DNAT'ed: the DNS proxy's.
    pub keep_local: Vec<SocketAddrV4>,
    /// A scan's observing recorder: every other TCP connection from the
    /// sandbox is DNAT'ed to it.
    pub recorder: Option<SocketAddrV4>,
}

/// The script that (re)creates the table: declaring and deleting first
/// replaces a table a crashed run left, in the same transaction.
pub fn nat_script(facts: &NatFacts) -> String {
    let NatFacts {
        table,
        veth,
        inner,
        inbound,
        keep_local,
        recorder,
    } = facts;
    let mut script = format!(
        "table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n  \
         chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ip saddr {inner} oifname != \"{veth}\" masquerade\n"
    );
    if inbound.localhost() {
        let _ = writeln!(script, "    oifname \"{veth}\" ip saddr 127.0.0.0/8 masquerade");
    }
    script.push_str("  }\n");
    if inbound.is_open() || recorder.is_some() {
        script
            .push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n");
        for socket in keep_local {
            let _ = writeln!(
                script,
                "    ip daddr {} meta l4proto {{ tcp, udp }} th dport {} return",
                socket.ip(),
                socket.port()
            );
        }
        if let Some(recorder) = recorder {
            let _ = writeln!(
                script,
                "    iifname \"{veth}\" meta l4proto tcp dnat to {recorder}"
            );
        }
        if inbound.is_open() {
            let _ = writeln!(
                script,
                "    iifname != \"{veth}\" fib daddr type local meta l4proto {{ tcp, udp }} dnat to {inner}"
            );
        }
        script.push_str("  }\n");
    }
    if inbound.localhost() {
        // `dstnat` names -100 only in the prerouting hook.
        let _ = writeln!(
            script,
            "  chain output {{\n    type nat hook output priority -100; policy accept;\n    \
             ip daddr 127.0.0.1 meta l4proto {{ tcp, udp }} dnat to {inner}\n  }}"
        );
    }
    script.push_str("}\n");
    script
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn facts(inbound: Inbound) -> NatFacts {
        NatFacts {
            table: "skillbox_nat_3".into(),
            veth: "sbxv3".into(),
            inner: Ipv4Addr::new(198, 19, 0, 14),
            inbound,
            keep_local: vec!["198.19.0.13:53".parse().unwrap()],
            recorder: None,
        }
    }

    #[test]
    fn a_closed_sandbox_is_only_masqueraded() {
        assert_eq!(
            nat_script(&facts(Inbound::Closed)),
            "table ip skillbox_nat_3 {}\ndelete table ip skillbox_nat_3\ntable ip skillbox_nat_3 {\n  \
             chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    \
             ip saddr 198.19.0.14 oifname != \"sbxv3\" masquerade\n  }\n}\n"
        );
    }

    #[test]
    fn inbound_tables_match_golden_files() {
        for (inbound, name) in [
            (Inbound::Addresses, "nat.inbound.nft"),
            (Inbound::AddressesAndLocalhost, "nat.inbound-localhost.nft"),
        ] {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(name);
            let text = nat_script(&facts(inbound));
            if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0") {
                std::fs::write(&path, &text).unwrap();
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
            assert_eq!(text, expected, "{} differs", path.display());
        }
    }

    #[test]
    fn the_dns_proxy_is_kept_before_anything_is_dnated() {
        let script = nat_script(&facts(Inbound::Addresses));
        let keep = script.find("th dport 53 return").unwrap();
        let dnat = script.find("dnat to").unwrap();
        assert!(keep < dnat, "{script}");
        assert!(!script.contains("127.0.0"), "{script}");
        assert!(script.contains("iifname != \"sbxv3\""), "{script}");
    }

    #[test]
    fn an_observing_sandbox_has_all_its_tcp_sent_to_the_recorder_after_the_proxy() {
        let mut observing = facts(Inbound::Closed);
        observing.recorder = Some("198.19.0.13:40000".parse().unwrap());
        let script = nat_script(&observing);
        let redirect = script
            .find("iifname \"sbxv3\" meta l4proto tcp dnat to 198.19.0.13:40000")
            .unwrap_or_else(|| panic!("{script}"));
        assert!(script.find("th dport 53 return").unwrap() < redirect, "{script}");
        assert!(
            !script.contains("fib daddr type local"),
            "nothing comes in: {script}"
        );
    }
}
