//! Adding learned elements to a set, and removing tables, over a netfilter
//! netlink socket, in the socket's network namespace, without starting
//! `nft` (a process per DNS answer cost ~5 ms, and more while the CPU is
//! busy; an `nft` run that changed something also waits ~10 ms on exit,
//! see below).
//!
//! One learn is one nfnetlink batch, applied atomically like an `nft -f`
//! batch: `NFT_MSG_NEWSETELEM`, `NFT_MSG_DELSETELEM`, `NFT_MSG_NEWSETELEM`
//! of the same keys, each element with `NFTA_SET_ELEM_TIMEOUT`; the delete
//! and second add give an element already present the new timeout. Each
//! message asks for an acknowledgement, and [`SetSocket::add`] returns only
//! when the kernel has answered every one, so the elements are in the set
//! (or the error is known) before the DNS answer leaves. The message
//! layout is in `docs/nftables-facts.md`; [`encode`] is pure and
//! golden-tested.
//!
//! A removal ([`encode_removal`]) is one batch too: for each table
//! `NFT_MSG_NEWTABLE` then `NFT_MSG_DELTABLE` (what `nft` does for `table
//! x {}; delete table x`): a table already gone is created and deleted, so
//! removal is idempotent without a failed message aborting the batch.
//!
//! **Closing.** Releasing a netfilter netlink socket waits for nf_tables'
//! pending transaction cleanup (an RCU grace period after every commit,
//! ~10-20 ms here): a [`SetSocket`] is closed on a thread of its own when
//! dropped, so no caller waits for it.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};
use nix::sys::time::TimeVal;

use crate::rules::{ElementKey, LearnedElements, FAMILY};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const AF_UNSPEC: u8 = 0;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;

/// How long to wait for the kernel's answers before giving up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The bytes of `key` as nftables stores it: an address in network order;
/// in a concatenation each field padded to 4 bytes (a port, 2 bytes in
/// network order, then 2 zero bytes).
pub fn key_bytes(key: &ElementKey) -> Vec<u8> {
    fn addr(addr: &IpAddr) -> Vec<u8> {
        match addr {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }
    }
    match key {
        ElementKey::Addr(ip) => addr(ip),
        ElementKey::AddrPort(ip, port) => {
            let mut bytes = addr(ip);
            bytes.extend(port.get().to_be_bytes());
            bytes.extend([0, 0]);
            bytes
        }
    }
}

/// Builds netlink messages in one buffer.
struct Writer(Vec<u8>);

impl Writer {
    /// Starts a message with its `nfgenmsg` header; returns where it began.
    fn begin_message(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.0.len();
        self.0.extend(0u32.to_ne_bytes()); // length, set by end_message
        self.0.extend(kind.to_ne_bytes());
        self.0.extend(flags.to_ne_bytes());
        self.0.extend(seq.to_ne_bytes());
        self.0.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
        self.0.extend([family, 0]); // family, NFNETLINK_V0
        self.0.extend(res_id.to_be_bytes());
        start
    }

    fn end_message(&mut self, start: usize) {
        let len = u32::try_from(self.0.len() - start).expect("a message under 4 GiB");
        self.0[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn begin_attr(&mut self, kind: u16) -> usize {
        let start = self.0.len();
        self.0.extend(0u16.to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
        start
    }

    /// Sets the attribute's length (without padding), then pads to 4.
    fn end_attr(&mut self, start: usize) {
        let len = u16::try_from(self.0.len() - start).expect("an attribute under 64 KiB");
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let start = self.begin_attr(kind);
        self.0.extend(payload);
        self.end_attr(start);
    }

    /// A NUL-terminated string attribute.
    fn attr_str(&mut self, kind: u16, text: &str) {
        let start = self.begin_attr(kind);
        self.0.extend(text.as_bytes());
        self.0.push(0);
        self.end_attr(start);
    }

    /// One `NFT_MSG_*SETELEM` message for every key of `elements`.
    fn set_elements(&mut self, kind: u16, flags: u16, seq: u32, elements: &LearnedElements, timeout: bool) {
        let message = self.begin_message(
            NFNL_SUBSYS_NFTABLES << 8 | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            NFPROTO_INET,
            0,
        );
        self.attr_str(NFTA_SET_ELEM_LIST_TABLE, &elements.table);
        self.attr_str(NFTA_SET_ELEM_LIST_SET, &elements.set);
        let list = self.begin_attr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
        for key in &elements.keys {
            let element = self.begin_attr(NFTA_LIST_ELEM | NLA_F_NESTED);
            let data = self.begin_attr(NFTA_SET_ELEM_KEY | NLA_F_NESTED);
            self.attr(NFTA_DATA_VALUE, &key_bytes(key));
            self.end_attr(data);
            if timeout {
                let millis = elements.timeout_secs.saturating_mul(1000);
                self.attr(NFTA_SET_ELEM_TIMEOUT, &millis.to_be_bytes());
            }
            self.end_attr(element);
        }
        self.end_attr(list);
        self.end_message(message);
    }

    /// A batch's begin or end message (`NFNL_MSG_BATCH_*`).
    fn batch_mark(&mut self, kind: u16, seq: u32) {
        let start = self.begin_message(kind, NLM_F_REQUEST, seq, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
        self.end_message(start);
    }

    /// One `NFT_MSG_*TABLE` message naming `table`.
    fn table(&mut self, kind: u16, flags: u16, seq: u32, table: &TableRef) {
        let message = self.begin_message(
            NFNL_SUBSYS_NFTABLES << 8 | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            table.family.proto(),
            0,
        );
        self.attr_str(NFTA_TABLE_NAME, &table.name);
        self.end_message(message);
    }
}

/// An nftables address family this crate makes tables in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFamily {
    /// `inet`: the sandbox's filter table.
    Inet,
    /// `ip`: the sandbox's NAT table.
    Ip,
}

impl TableFamily {
    fn proto(self) -> u8 {
        match self {
            TableFamily::Inet => NFPROTO_INET,
            TableFamily::Ip => NFPROTO_IPV4,
        }
    }
}

/// A table by family and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub family: TableFamily,
    pub name: String,
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let family = match self.family {
            TableFamily::Inet => "inet",
            TableFamily::Ip => "ip",
        };
        write!(f, "{family} {}", self.name)
    }
}

/// The batch that adds `elements` (with their timeout, refreshed when
/// present), its messages numbered from `seq`; and the sequence numbers
/// that the kernel acknowledges.
pub fn encode(elements: &LearnedElements, seq: u32) -> (Vec<u8>, [u32; 3]) {
    debug_assert_eq!(FAMILY, "inet", "the messages name NFPROTO_INET");
    let mut writer = Writer(Vec::with_capacity(256));
    writer.batch_mark(NFNL_MSG_BATCH_BEGIN, seq);
    let acked = [seq + 1, seq + 2, seq + 3];
    writer.set_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, acked[0], elements, true);
    writer.set_elements(NFT_MSG_DELSETELEM, 0, acked[1], elements, false);
    writer.set_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, acked[2], elements, true);
    writer.batch_mark(NFNL_MSG_BATCH_END, seq + 4);
    (writer.0, acked)
}

/// The batch that removes `tables` (those already gone too), its messages
/// numbered from `seq`; and the sequence numbers the kernel acknowledges.
pub fn encode_removal(tables: &[TableRef], seq: u32) -> (Vec<u8>, Vec<u32>) {
    let mut writer = Writer(Vec::with_capacity(64 * (tables.len() + 1)));
    writer.batch_mark(NFNL_MSG_BATCH_BEGIN, seq);
    let mut acked = Vec::with_capacity(2 * tables.len());
    for (table, at) in tables.iter().zip((seq + 1..).step_by(2)) {
        writer.table(NFT_MSG_NEWTABLE, NLM_F_CREATE, at, table);
        writer.table(NFT_MSG_DELTABLE, 0, at + 1, table);
        acked.extend([at, at + 1]);
    }
    let end = seq + 1 + 2 * u32::try_from(tables.len()).expect("a few tables");
    writer.batch_mark(NFNL_MSG_BATCH_END, end);
    (writer.0, acked)
}

/// The errors (`NLMSG_ERROR` with a non-zero code) and acknowledgements
/// (code 0) in `buf`, as `(seq, code)`.
fn answers(buf: &[u8]) -> Vec<(u32, i32)> {
    let mut found = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let word = |at: usize| u32::from_ne_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
        let len = word(0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
            let code = i32::from_ne_bytes(rest[16..20].try_into().expect("4 bytes"));
            found.push((word(8), code));
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    found
}

/// A netfilter netlink socket in the namespace it was opened in.
#[derive(Debug)]
pub struct SetSocket {
    /// `None` only once dropped.
    fd: Option<OwnedFd>,
    seq: u32,
}

impl SetSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> std::io::Result<SetSocket> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        let timeout = TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
        socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &timeout)?;
        Ok(SetSocket { fd: Some(fd), seq: 0 })
    }

    /// Adds `elements` in one batch and waits for the kernel's answer to
    /// each message. A refused message comes back as its errno.
    pub fn add(&mut self, elements: &LearnedElements) -> std::io::Result<()> {
        // Five messages per batch.
        let seq = self.next_seq(5);
        let (batch, acked) = encode(elements, seq);
        self.talk(&batch, seq, &acked)
    }

    /// Removes `tables` (and their contents) in one batch; a table already
    /// gone counts as removed.
    pub fn remove_tables(&mut self, tables: &[TableRef]) -> std::io::Result<()> {
        let count = 2 * u32::try_from(tables.len()).expect("a few tables") + 2;
        let seq = self.next_seq(count);
        let (batch, acked) = encode_removal(tables, seq);
        self.talk(&batch, seq, &acked)
    }

    /// The first sequence number of a batch of `count` messages; 0 is
    /// never used.
    fn next_seq(&mut self, count: u32) -> u32 {
        self.seq = match self.seq.checked_add(count) {
            Some(next) if next.checked_add(count).is_some() => next,
            _ => 1,
        };
        self.seq
    }

    /// Sends `batch` (begun with `seq`) and waits for the answers to the
    /// `acked` messages; returns the first refusal as its errno.
    fn talk(&mut self, batch: &[u8], seq: u32, acked: &[u32]) -> std::io::Result<()> {
        let fd = self.fd.as_ref().expect("open until dropped").as_raw_fd();
        let sent = socket::send(fd, batch, MsgFlags::empty())?;
        if sent != batch.len() {
            return Err(std::io::Error::other("the netlink batch was sent in part"));
        }
        // Every acknowledged message gets one answer; a failed commit also
        // answers the batch's first message (`seq`), before the others.
        let mut pending = acked.to_vec();
        let mut first_error = None;
        let mut buf = [0u8; 8192];
        while !pending.is_empty() {
            let len = socket::recv(fd, &mut buf, MsgFlags::empty())?;
            for (answered, code) in answers(&buf[..len]) {
                if answered != seq && !acked.contains(&answered) {
                    continue; // a late answer to an earlier batch
                }
                pending.retain(|&waiting| waiting != answered);
                if code != 0 && first_error.is_none() {
                    first_error = Some(std::io::Error::from_raw_os_error(-code));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for SetSocket {
    /// Closes the socket on a thread of its own (see the module's
    /// "Closing"); on the caller's if no thread can be started.
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            let _ = std::thread::Builder::new()
                .name("nft-close".into())
                .spawn(move || drop(fd));
        }
    }
}

#[cfg(test)]
mod tests {
    use policy_compiler::network::Port;

    use super::*;

    fn elements(keys: Vec<ElementKey>) -> LearnedElements {
        LearnedElements {
            table: "skillbox-t".into(),
            set: "allowed_v4".into(),
            keys,
            timeout_secs: 65,
        }
    }

    #[test]
    fn keys_are_addresses_and_padded_ports_in_network_order() {
        let port = Port::try_from(443).unwrap();
        let v4 = "198.51.100.7".parse().unwrap();
        assert_eq!(key_bytes(&ElementKey::Addr(v4)), [198, 51, 100, 7]);
        assert_eq!(
            key_bytes(&ElementKey::AddrPort(v4, port)),
            [198, 51, 100, 7, 1, 187, 0, 0]
        );
        let v6 = "2001:db8::7".parse().unwrap();
        let bytes = key_bytes(&ElementKey::AddrPort(v6, port));
        assert_eq!(bytes.len(), 20);
        assert_eq!(bytes[..2], [0x20, 0x01]);
        assert_eq!(bytes[16..], [1, 187, 0, 0]);
    }

    #[test]
    fn a_learn_is_one_batch_of_add_delete_add() {
        let port = Port::try_from(443).unwrap();
        let addr = "198.51.100.7".parse().unwrap();
        let (batch, acked) = encode(&elements(vec![ElementKey::AddrPort(addr, port)]), 100);
        assert_eq!(acked, [101, 102, 103]);
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        // Batch begin: 20 bytes, type 0x10, NLM_F_REQUEST, seq 100, res_id 10.
        assert_eq!(
            hex(&batch[..20]),
            ["14000000", "1000", "0100", "64000000", "00000000", "0000000a"].concat()
        );
        // The add: header, nfgenmsg (inet), table, set, then the element
        // list: one element holding its key (8 bytes) and timeout (65 s).
        let add = &batch[20..];
        let len = u32::from_ne_bytes(add[..4].try_into().unwrap()) as usize;
        let expected = [
            "58000000",                       // length 88
            "0c0a",                           // NFNL_SUBSYS_NFTABLES << 8 | NEWSETELEM
            "0504",                           // REQUEST | ACK | CREATE
            "65000000",                       // seq 101
            "00000000",                       // port id
            "01000000",                       // inet, v0, res_id 0
            "0f000100736b696c6c626f782d7400", // table "skillbox-t\0"
            "00",                             // padding
            "0f000200616c6c6f7765645f763400", // set "allowed_v4\0"
            "00",
            "24000380",         // ELEMENTS, nested
            "20000180",         // LIST_ELEM, nested
            "10000180",         // KEY, nested
            "0c000100c6336407", // DATA_VALUE: 198.51.100.7
            "01bb0000",         // . 443, padded
            "0c000400",         // TIMEOUT
            "000000000000fde8", // 65000 ms, big-endian
        ]
        .concat();
        assert_eq!(hex(&add[..len]), expected);
        // The delete carries the key without a timeout; the second add
        // equals the first but for its sequence number.
        let del = &add[len..];
        let del_len = u32::from_ne_bytes(del[..4].try_into().unwrap()) as usize;
        assert_eq!(del_len, len - 12);
        assert_eq!(u16::from_ne_bytes([del[4], del[5]]), 0x0a0e);
        let again = &del[del_len..];
        assert_eq!(again[..8], add[..8]);
        assert_eq!(again[12..len], add[12..len]);
        // Batch end: type 0x11.
        assert_eq!(
            hex(&again[len..]),
            ["14000000", "1100", "0100", "68000000", "00000000", "0000000a"].concat()
        );
    }

    #[test]
    fn a_removal_creates_then_deletes_each_table_in_one_batch() {
        let tables = [
            TableRef {
                family: TableFamily::Inet,
                name: "skillbox-t".into(),
            },
            TableRef {
                family: TableFamily::Ip,
                name: "nat_0".into(),
            },
        ];
        let (batch, acked) = encode_removal(&tables, 10);
        assert_eq!(acked, [11, 12, 13, 14]);
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut messages = Vec::new();
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            messages.push(hex(&rest[4..len]));
            rest = &rest[len..];
        }
        // Type, flags, seq, port id, nfgenmsg (family, version, res_id),
        // then the NUL-terminated name, padded to 4.
        let expected = [
            ["1000", "0100", "0a000000", "00000000", "0000000a"].concat(),
            [
                "000a",
                "0504",
                "0b000000",
                "00000000",
                "01000000",
                "0f000100",
                "736b696c6c626f782d7400",
                "00",
            ]
            .concat(),
            [
                "020a",
                "0500",
                "0c000000",
                "00000000",
                "01000000",
                "0f000100",
                "736b696c6c626f782d7400",
                "00",
            ]
            .concat(),
            [
                "000a",
                "0504",
                "0d000000",
                "00000000",
                "02000000",
                "0a000100",
                "6e61745f3000",
                "0000",
            ]
            .concat(),
            [
                "020a",
                "0500",
                "0e000000",
                "00000000",
                "02000000",
                "0a000100",
                "6e61745f3000",
                "0000",
            ]
            .concat(),
            ["1100", "0100", "0f000000", "00000000", "0000000a"].concat(),
        ];
        assert_eq!(messages, expected);
    }

    #[test]
    fn answers_are_read_as_seq_and_code() {
        let mut buf = Vec::new();
        for (seq, code) in [(7u32, 0i32), (8, -2)] {
            buf.extend(36u32.to_ne_bytes());
            buf.extend(NLMSG_ERROR.to_ne_bytes());
            buf.extend(0u16.to_ne_bytes());
            buf.extend(seq.to_ne_bytes());
            buf.extend(0u32.to_ne_bytes());
            buf.extend(code.to_ne_bytes());
            buf.extend([0u8; 16]); // the request's header
        }
        assert_eq!(answers(&buf), [(7, 0), (8, -2)]);
        assert_eq!(answers(&buf[..50]), [(7, 0)], "a cut message is not read");
    }
}
