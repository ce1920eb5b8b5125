//! Network egress for a sandbox whose policy allows some: the
//! sandbox gets its own network namespace joined to the outer one by a veth
//! pair; nftables on the outer side's forward path enforces the policy; a
//! DNS proxy on the outer side answers only allowed names and teaches the
//! nftables sets the addresses they resolved to.
//!
//! - `rules`: the policy as nftables rules and sets (pure, `nft -j` JSON);
//! - `nft`: applying and removing a sandbox's table with `nft`;
//! - `dns`: the DNS proxy;
//! - `netns`: the sandbox's namespace, veth pair, addresses, routes, NAT;
//! - `events`: the JSON Lines records of queries and connection verdicts;
//! - `nflog`: the connection log, reading what the table's rules log;
//! - `command`: starting programs, working inside another namespace;
//! - `session`: all of the above for one sandbox, removed on drop;
//! - `spec`: the sandbox's OCI spec pointed at its session;
//! - `observe`: the observing network of scans (sinkhole, recorder).

pub mod command;
pub mod dns;
pub mod events;
pub mod netns;
pub mod nflog;
pub mod nft;
pub mod observe;
pub mod rules;
pub mod session;
pub mod spec;
