//! The observing network of `skillbox scan --runtime`: instead of enforcing
//! the skill's policy, its sandbox's egress session lets the skill try
//! everything and records it, while nothing leaves the node.
//!
//! - `sinkhole`: the DNS proxy answers every A query with an address of its
//!   own from a range routed nowhere (AAAA and other types get an empty
//!   answer), recording the declared policy's verdict on the name;
//! - `recorder`: the NAT table redirects every TCP connection from the
//!   sandbox (except DNS to the proxy) to the recorder, which records the
//!   original destination, the sinkhole name behind it, and the TLS server
//!   name or HTTP method, `Host` and path of its first bytes, then closes;
//! - `judge`: what the declared policy would have done with each;
//! - everything else (UDP, ICMP) meets the sandbox's table built with no
//!   allow rule, which logs it as a `connection` event and drops it;
//! - a counter in the outer namespace's postrouting hook counts the packets
//!   from the sandbox's veth that left by any interface: the proof that
//!   nothing left (`EgressSession::packets_left`).

pub mod first_bytes;
pub mod judge;
pub mod recorder;
pub mod sinkhole;
