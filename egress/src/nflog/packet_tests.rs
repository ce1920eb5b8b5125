use std::ffi::CString;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::*;

/// An IPv4 header (20 bytes, no options) to `destination` with `protocol`,
/// followed by `l4`.
fn ipv4_packet(destination: [u8; 4], protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0, 198, 19, 0, 2];
    packet.extend_from_slice(&destination);
    packet.extend_from_slice(l4);
    packet
}

fn ipv6_packet(destination: Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0, 0, 0, next, 64];
    packet.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(rest);
    packet
}

/// The start of a TCP or UDP header from port 40000 to `port`.
fn ports(port: u16) -> Vec<u8> {
    let mut l4 = 40000u16.to_be_bytes().to_vec();
    l4.extend_from_slice(&port.to_be_bytes());
    l4.extend_from_slice(&[0; 16]);
    l4
}

#[test]
fn ipv4_tcp_udp_icmp_and_other() {
    let tcp = summarize(&ipv4_packet([203, 0, 113, 10], 6, &ports(8080))).unwrap();
    assert_eq!(
        tcp,
        PacketSummary {
            destination: "203.0.113.10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: Some(8080)
        }
    );
    let udp = summarize(&ipv4_packet([198, 51, 100, 53], 17, &ports(53))).unwrap();
    assert_eq!((udp.protocol, udp.port), (Protocol::Udp, Some(53)));
    let icmp = summarize(&ipv4_packet([198, 51, 100, 53], 1, &[8, 0, 0, 0])).unwrap();
    assert_eq!((icmp.protocol, icmp.port), (Protocol::Icmp, None));
    let gre = summarize(&ipv4_packet([198, 51, 100, 53], 47, &[0; 8])).unwrap();
    assert_eq!((gre.protocol, gre.port), (Protocol::Other, None));
}

#[test]
fn ipv4_options_and_later_fragments() {
    // IHL 6: four bytes of options before the TCP header.
    let mut packet = ipv4_packet([203, 0, 113, 10], 6, &[1, 1, 1, 1]);
    packet[0] = 0x46;
    packet.extend_from_slice(&ports(443));
    assert_eq!(summarize(&packet).unwrap().port, Some(443));
    // A later fragment's payload is not a TCP header.
    let mut fragment = ipv4_packet([203, 0, 113, 10], 6, &ports(443));
    fragment[6] = 0x00;
    fragment[7] = 0x10;
    assert_eq!(summarize(&fragment).unwrap().port, None);
    // An IHL below 5 is malformed: the address is read, no port.
    let mut short_ihl = ipv4_packet([203, 0, 113, 10], 6, &ports(443));
    short_ihl[0] = 0x42;
    let summary = summarize(&short_ihl).unwrap();
    assert_eq!(
        (summary.destination, summary.port),
        ("203.0.113.10".parse().unwrap(), None)
    );
}

#[test]
fn ipv6_with_and_without_extension_headers() {
    let destination: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let tcp = summarize(&ipv6_packet(destination, 6, &ports(8080))).unwrap();
    assert_eq!(
        tcp,
        PacketSummary {
            destination: IpAddr::V6(destination),
            protocol: Protocol::Tcp,
            port: Some(8080)
        }
    );
    // Hop-by-hop (8 bytes) then UDP.
    let mut rest = vec![17, 0, 0, 0, 0, 0, 0, 0];
    rest.extend_from_slice(&ports(5353));
    let udp = summarize(&ipv6_packet(destination, 0, &rest)).unwrap();
    assert_eq!((udp.protocol, udp.port), (Protocol::Udp, Some(5353)));
    // A first fragment has the port, a later one does not.
    let mut first = vec![6, 0, 0, 0, 0, 0, 0, 1];
    first.extend_from_slice(&ports(443));
    assert_eq!(
        summarize(&ipv6_packet(destination, 44, &first)).unwrap().port,
        Some(443)
    );
    let mut later = vec![6, 0, 0, 0x08, 0, 0, 0, 1];
    later.extend_from_slice(&ports(443));
    assert_eq!(
        summarize(&ipv6_packet(destination, 44, &later)).unwrap().port,
        None
    );
    let icmp = summarize(&ipv6_packet(destination, 58, &[128, 0, 0, 0])).unwrap();
    assert_eq!(icmp.protocol, Protocol::Icmp);
    // Cut inside an extension header: the destination, nothing more.
    let cut = summarize(&ipv6_packet(destination, 60, &[6, 0, 0])).unwrap();
    assert_eq!((cut.protocol, cut.port), (Protocol::Other, None));
    // A loop of extension headers ends.
    let looping: Vec<u8> = [0u8, 0, 0, 0, 0, 0, 0, 0].repeat(20);
    assert!(summarize(&ipv6_packet(destination, 0, &looping)).is_some());
}

#[test]
fn truncated_packets_never_panic() {
    let packets = [
        ipv4_packet([203, 0, 113, 10], 6, &ports(8080)),
        ipv6_packet("2001:db8::10".parse().unwrap(), 6, &ports(8080)),
        ipv6_packet(
            "2001:db8::10".parse().unwrap(),
            0,
            &[17, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53],
        ),
    ];
    for packet in packets {
        for len in 0..packet.len() {
            let summary = summarize(&packet[..len]);
            let header = if packet[0] >> 4 == 4 { 20 } else { 40 };
            assert_eq!(summary.is_some(), len >= header, "{len}");
            if len < header + 4 {
                assert_eq!(summary.and_then(|s| s.port), None, "{len}");
            }
        }
    }
    assert_eq!(summarize(&[]), None);
    assert_eq!(summarize(&[0x50; 60]), None, "version 5");
}

#[test]
fn garbage_never_panics() {
    // A fixed pseudo-random sequence (xorshift), so failures repeat.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5000 {
        let len = (next() % 200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = summarize(&bytes);
        let _ = logged_packets(&bytes);
    }
}

/// A datagram as the kernel sends it: one NFULNL_MSG_PACKET per packet.
fn datagram(packets: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (prefix, payload) in packets {
        let nlas = vec![
            PacketNla::IfIndexInDev(7),
            PacketNla::Prefix(CString::new(*prefix).unwrap()),
            PacketNla::Payload(payload.clone()),
        ];
        let mut message = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0x4000),
                ULogMessage::Packet(nlas),
            )),
        );
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        out.extend(bytes);
    }
    out
}

#[test]
fn datagrams_yield_each_logged_packet() {
    let first = ipv4_packet([203, 0, 113, 10], 6, &ports(8080));
    let second = ipv4_packet([203, 0, 113, 11], 6, &ports(8080));
    let bytes = datagram(&[("allow #3", first.clone()), ("deny #1", second.clone())]);
    let (packets, undecodable) = logged_packets(&bytes);
    assert_eq!(undecodable, 0);
    assert_eq!(
        packets,
        [
            LoggedPacket {
                prefix: "allow #3".into(),
                payload: first
            },
            LoggedPacket {
                prefix: "deny #1".into(),
                payload: second
            },
        ]
    );
    // Every truncation yields no more than the whole, and never panics.
    for len in 0..bytes.len() {
        let (packets, _) = logged_packets(&bytes[..len]);
        assert!(packets.len() <= 2);
    }
    // A length field pointing past the end stops the walk.
    let mut lying = bytes.clone();
    lying[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
    assert_eq!(logged_packets(&lying), (Vec::new(), 1));
}

fn rules() -> Vec<JudgingRule> {
    let rule = |verdict, text: &str| JudgingRule {
        verdict,
        text: text.to_owned(),
        ranges: Vec::new(),
    };
    let mut deny = rule(Verdict::Deny, "deny: deny_v4");
    deny.ranges = vec![(
        "203.0.113.11/32".parse().unwrap(),
        "deny: cidr 203.0.113.11/32 (all ports)".into(),
    )];
    vec![
        deny,
        rule(Verdict::Allow, "allow: cidr 203.0.113.0/24 ports 8080"),
        rule(Verdict::AllowLearned, "allow-learned: allowed_v4"),
        rule(Verdict::DefaultDeny, "default-deny"),
    ]
}

#[test]
fn events_name_verdict_and_rule() {
    let logged = |prefix: &str, destination, port| LoggedPacket {
        prefix: prefix.into(),
        payload: ipv4_packet(destination, 6, &ports(port)),
    };
    let no_name = |_| None;
    let event = connection_event(&logged("deny #0", [203, 0, 113, 11], 8080), &rules(), no_name).unwrap();
    assert_eq!(
        event,
        ConnectionEvent {
            destination: "203.0.113.11".parse().unwrap(),
            port: Some(8080),
            protocol: Protocol::Tcp,
            verdict: ConnectionVerdict::Denied,
            rule: Some("deny: cidr 203.0.113.11/32 (all ports)".into()),
        }
    );
    let allowed = connection_event(&logged("allow #1", [203, 0, 113, 10], 8080), &rules(), no_name).unwrap();
    assert_eq!(allowed.verdict, ConnectionVerdict::Allowed);
    assert_eq!(
        allowed.rule.as_deref(),
        Some("allow: cidr 203.0.113.0/24 ports 8080")
    );
    let learned = connection_event(
        &logged("allow-learned #2", [198, 51, 100, 20], 443),
        &rules(),
        |ip| Some(format!("allow: domain for {ip}")),
    )
    .unwrap();
    assert_eq!(learned.verdict, ConnectionVerdict::Allowed);
    assert_eq!(learned.rule.as_deref(), Some("allow: domain for 198.51.100.20"));
    let unknown = connection_event(
        &logged("allow-learned #2", [198, 51, 100, 20], 443),
        &rules(),
        no_name,
    )
    .unwrap();
    assert_eq!(unknown.rule.as_deref(), Some("allow-learned: allowed_v4"));
    let default =
        connection_event(&logged("default-deny #3", [192, 0, 2, 1], 22), &rules(), no_name).unwrap();
    assert_eq!(
        (default.verdict, default.rule.as_deref()),
        (ConnectionVerdict::Denied, Some("default-deny"))
    );
    // A prefix naming no rule, or a verdict that disagrees, gives nothing.
    for prefix in ["deny #9", "allow #0", "skillbox-x deny ", ""] {
        assert_eq!(
            connection_event(&logged(prefix, [203, 0, 113, 11], 80), &rules(), no_name),
            None,
            "{prefix}"
        );
    }
    let cut = LoggedPacket {
        prefix: "deny #0".into(),
        payload: vec![0x45, 0, 0],
    };
    assert_eq!(connection_event(&cut, &rules(), no_name), None);
}
