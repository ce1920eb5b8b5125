//! The sinkhole: every name a scanned skill looks up gets an address of its
//! own from a range that is routed nowhere, so a connection to that address
//! says which name the skill meant.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use ipnet::Ipv4Net;

/// 198.18.128.0/17: the upper half of the lower /16 of RFC 2544's
/// benchmarking block, which is not globally routed; the sandboxes' veth
/// pairs use 198.19.0.0/16.
pub const SINKHOLE_RANGE: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(198, 18, 128, 0), 17) {
    Ok(net) => net,
    Err(_) => panic!("a valid prefix"),
};

/// Names and the addresses handed out for them, first come first served.
#[derive(Debug)]
pub struct Sinkhole {
    net: Ipv4Net,
    handed_out: Mutex<HandedOut>,
}

#[derive(Debug, Default)]
struct HandedOut {
    by_name: BTreeMap<String, Ipv4Addr>,
    by_address: BTreeMap<Ipv4Addr, String>,
}

impl Default for Sinkhole {
    fn default() -> Self {
        Sinkhole::new(SINKHOLE_RANGE)
    }
}

impl Sinkhole {
    pub fn new(net: Ipv4Net) -> Self {
        Sinkhole {
            net,
            handed_out: Mutex::default(),
        }
    }

    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// The address of `name` (lower case, no trailing dot): the one it got
    /// before, else the next free one; `None` once the range is used up.
    pub fn address_for(&self, name: &str) -> Option<Ipv4Addr> {
        let mut handed_out = self.handed_out.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(address) = handed_out.by_name.get(name) {
            return Some(*address);
        }
        // Host addresses only: skip the network and broadcast addresses.
        let next = u32::from(self.net.network()) + 1 + handed_out.by_name.len() as u32;
        let address = Ipv4Addr::from(next);
        if address >= self.net.broadcast() {
            return None;
        }
        handed_out.by_name.insert(name.to_owned(), address);
        handed_out.by_address.insert(address, name.to_owned());
        Some(address)
    }

    /// The name `address` was handed out for.
    pub fn name_of(&self, address: IpAddr) -> Option<String> {
        let IpAddr::V4(v4) = address else {
            return None;
        };
        let handed_out = self.handed_out.lock().unwrap_or_else(|e| e.into_inner());
        handed_out.by_address.get(&v4).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_keeps_its_own_address() {
        let sinkhole = Sinkhole::default();
        let a = sinkhole.address_for("a.example").unwrap();
        let b = sinkhole.address_for("b.example").unwrap();
        assert_eq!(a, Ipv4Addr::new(198, 18, 128, 1));
        assert_eq!(b, Ipv4Addr::new(198, 18, 128, 2));
        assert_eq!(sinkhole.address_for("a.example"), Some(a));
        assert_eq!(sinkhole.name_of(IpAddr::V4(b)).as_deref(), Some("b.example"));
        assert_eq!(sinkhole.name_of("198.18.128.9".parse().unwrap()), None);
    }

    #[test]
    fn a_used_up_range_hands_out_nothing() {
        let sinkhole = Sinkhole::new("192.0.2.0/30".parse().unwrap());
        assert!(sinkhole.address_for("one").is_some());
        assert!(sinkhole.address_for("two").is_some());
        assert_eq!(sinkhole.address_for("three"), None);
    }
}
