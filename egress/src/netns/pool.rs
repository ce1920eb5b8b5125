//! The addresses of veth pairs.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::NetnsError;

/// The addresses of one veth pair: a /30 whose first host is the outer end
/// (the sandbox's gateway and DNS server) and whose second is the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddresses {
    pub net: Ipv4Net,
    pub outer: Ipv4Addr,
    pub inner: Ipv4Addr,
}

/// The IPv4 range veth pairs are numbered from, one /30 per slot.
///
/// The default, 198.19.0.0/16 (the upper half of RFC 2544's benchmarking
/// block 198.18.0.0/15), is not globally routed and is in none of the
/// always-denied ranges (link-local, CGNAT, RFC 1918, loopback, multicast):
/// those lists are about *destinations*, and the one destination in the
/// pool a sandbox needs is its own gateway (the DNS proxy), which must not
/// be denied by them. It also leaves 10/8, 172.16/12 and 192.168/16 to
/// cluster networks. The filter must still deny the pool as a forwarded
/// destination so that sandboxes cannot reach one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool(Ipv4Net);

impl Default for AddressPool {
    fn default() -> Self {
        AddressPool(Ipv4Net::new(Ipv4Addr::new(198, 19, 0, 0), 16).expect("valid prefix"))
    }
}

impl AddressPool {
    pub fn new(net: Ipv4Net) -> Result<Self, NetnsError> {
        if net.prefix_len() > 30 {
            return Err(NetnsError::InvalidPool(net));
        }
        Ok(AddressPool(net.trunc()))
    }

    pub fn net(&self) -> Ipv4Net {
        self.0
    }

    /// How many /30s the pool holds.
    pub fn slots(&self) -> u32 {
        1 << (30 - self.0.prefix_len())
    }

    /// The addresses of slot `slot`, if the pool has it.
    pub fn slot(&self, slot: u32) -> Option<LinkAddresses> {
        if slot >= self.slots() {
            return None;
        }
        let base = u32::from(self.0.network()) + slot * 4;
        Some(LinkAddresses {
            net: Ipv4Net::new(Ipv4Addr::from(base), 30).expect("valid prefix"),
            outer: Ipv4Addr::from(base + 1),
            inner: Ipv4Addr::from(base + 2),
        })
    }
}
