//! Reading what the kernel sends an nflog listener: netlink datagrams
//! holding `NFULNL_MSG_PACKET` messages, each with the rule's prefix and
//! the first bytes of the packet (from its network header on). Pure, and
//! size-checked throughout: the packet bytes come from the sandbox.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

use crate::events::{ConnectionEvent, ConnectionVerdict, Protocol};
use crate::rules::{rule_for_prefix, JudgingRule, Verdict};

/// One packet a rule logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    /// The rule's log prefix, as sent (without the terminating NUL).
    pub prefix: String,
    /// The packet from its network header, cut at the copy range.
    pub payload: Vec<u8>,
}

/// What a connection attempt's packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSummary {
    pub destination: IpAddr,
    pub protocol: Protocol,
    /// The destination port, for TCP and UDP when the header is there.
    pub port: Option<u16>,
}

/// Length of a netlink message header.
const NLMSG_HDRLEN: usize = 16;

/// The logged packets in one datagram from the nflog socket; messages of
/// other kinds (acks, `NLMSG_DONE`) and undecodable ones are skipped. The
/// second value counts the undecodable messages.
pub fn logged_packets(datagram: &[u8]) -> (Vec<LoggedPacket>, usize) {
    let mut packets = Vec::new();
    let mut undecodable = 0;
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if length < NLMSG_HDRLEN || length > rest.len() {
            undecodable += 1;
            break;
        }
        match NetlinkMessage::<NetfilterMessage>::deserialize(&rest[..length]) {
            Ok(message) => packets.extend(packet_of(message)),
            Err(_) => undecodable += 1,
        }
        // Messages in one datagram start at 4-byte boundaries.
        let next = length.next_multiple_of(4).min(rest.len());
        rest = &rest[next..];
    }
    (packets, undecodable)
}

fn packet_of(message: NetlinkMessage<NetfilterMessage>) -> Option<LoggedPacket> {
    let NetlinkPayload::InnerMessage(NetfilterMessage {
        inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
        ..
    }) = message.payload
    else {
        return None;
    };
    let mut prefix = None;
    let mut payload = None;
    for nla in nlas {
        match nla {
            PacketNla::Prefix(text) => prefix = Some(text.to_string_lossy().into_owned()),
            PacketNla::Payload(bytes) => payload = Some(bytes),
            _ => {}
        }
    }
    Some(LoggedPacket {
        prefix: prefix?,
        payload: payload?,
    })
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn protocol(number: u8) -> Protocol {
    match number {
        TCP => Protocol::Tcp,
        UDP => Protocol::Udp,
        ICMP | ICMPV6 => Protocol::Icmp,
        _ => Protocol::Other,
    }
}

/// The destination port at the start of a TCP or UDP header, if the
/// header is there.
fn port(number: u8, l4: &[u8]) -> Option<u16> {
    match (number, l4) {
        (TCP | UDP, [_, _, high, low, ..]) => Some(u16::from_be_bytes([*high, *low])),
        _ => None,
    }
}

/// Destination, protocol and port of an IPv4 or IPv6 packet; `None` when
/// even the destination address is cut off or the version is unknown.
pub fn summarize(packet: &[u8]) -> Option<PacketSummary> {
    match packet.first()? >> 4 {
        4 => ipv4(packet),
        6 => ipv6(packet),
        _ => None,
    }
}

fn ipv4(packet: &[u8]) -> Option<PacketSummary> {
    let header = packet.get(..20)?;
    let destination = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let number = header[9];
    let header_len = usize::from(header[0] & 0x0f) * 4;
    // Only the first fragment holds the transport header.
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    let port = match (header_len >= 20, fragment_offset) {
        (true, 0) => packet.get(header_len..).and_then(|l4| port(number, l4)),
        _ => None,
    };
    Some(PacketSummary {
        destination: IpAddr::V4(destination),
        protocol: protocol(number),
        port,
    })
}

/// Extension headers skipped on the way to the transport header.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION_OPTIONS: u8 = 60;

fn ipv6(packet: &[u8]) -> Option<PacketSummary> {
    let header = packet.get(..40)?;
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&header[24..40]);
    let destination = IpAddr::V6(Ipv6Addr::from(octets));
    let mut number = header[6];
    let mut offset = 40;
    let mut first_fragment = true;
    // A packet carries each extension header at most once or twice; eight
    // steps bound the walk whatever the packet claims.
    for _ in 0..8 {
        let extension = packet.get(offset..offset + 8);
        match (number, extension) {
            (HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS, Some(ext)) => {
                number = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
            }
            (FRAGMENT, Some(ext)) => {
                number = ext[0];
                first_fragment = u16::from_be_bytes([ext[2], ext[3]]) >> 3 == 0;
                offset += 8;
            }
            (HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS | FRAGMENT, None) => {
                // Cut off inside the extension headers: the transport is unknown.
                return Some(PacketSummary {
                    destination,
                    protocol: Protocol::Other,
                    port: None,
                });
            }
            _ => break,
        }
    }
    let port = match first_fragment {
        true => packet.get(offset..).and_then(|l4| port(number, l4)),
        false => None,
    };
    Some(PacketSummary {
        destination,
        protocol: protocol(number),
        port,
    })
}

/// Whether `verdict` lets the connection through.
pub fn connection_verdict(verdict: Verdict) -> ConnectionVerdict {
    match verdict {
        Verdict::Allow | Verdict::AllowLearned => ConnectionVerdict::Allowed,
        _ => ConnectionVerdict::Denied,
    }
}

/// The connection event for `logged`, judged by one of `rules`; an
/// `allow-learned` rule is named by `learned_rule` (the allow rule whose
/// name resolved to the destination) when it knows one. `None` when the
/// prefix names no rule of `rules` or the packet has no readable
/// destination.
pub fn connection_event(
    logged: &LoggedPacket,
    rules: &[JudgingRule],
    learned_rule: impl FnOnce(IpAddr) -> Option<String>,
) -> Option<ConnectionEvent> {
    let rule = rule_for_prefix(rules, &logged.prefix)?;
    let packet = summarize(&logged.payload)?;
    let text = match rule.verdict {
        Verdict::AllowLearned => learned_rule(packet.destination),
        _ => None,
    }
    .unwrap_or_else(|| rule.describe(packet.destination).to_owned());
    Some(ConnectionEvent {
        destination: packet.destination,
        port: packet.port,
        protocol: packet.protocol,
        verdict: connection_verdict(rule.verdict),
        rule: Some(text),
    })
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
