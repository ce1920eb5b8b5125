//! Times `EgressSession::start` (namespace, veth pair, addresses, route,
//! forwarding, NAT table, the policy's nftables table, the DNS proxy's
//! sockets and runtime) and its drop (all of it removed), in-process, with
//! the outer namespace given: the network setup `skillbox run` adds to a
//! sandbox's start, without runsc.
//!
//! Usage: skillbox-bench-egress-session <bundle> <outer-netns> <upstream ip:port> <events-file> [iterations]
//! Prints `start median_us=<..> p99_us=<..> n=<..>` and the same for `drop`.

use std::path::PathBuf;
use std::time::Instant;

use skillbox_egress::netns::NetnsName;
use skillbox_egress::session::EgressSession;
use skillbox_test_support::session::session_config;

fn report(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    // Nearest rank, like bench/egress.sh.
    let rank = |q: f64| ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
    println!(
        "{name} median_us={:.1} p99_us={:.1} n={}",
        samples[rank(0.5)],
        samples[rank(0.99)],
        samples.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!(
            "usage: {} <bundle> <outer-netns> <upstream ip:port> <events-file> [iterations]",
            args[0]
        );
        std::process::exit(2);
    }
    let bundle = PathBuf::from(&args[1]);
    let outer = NetnsName::new(&args[2]).expect("outer namespace name");
    let upstream = args[3].parse().expect("upstream is ip:port");
    let events = PathBuf::from(&args[4]);
    let iterations: usize = args
        .get(5)
        .map_or(30, |n| n.parse().expect("iterations is a number"));
    let annotations = policy_compiler::bundle::read_annotations(&bundle).expect("a compiled bundle");
    let (mut start, mut drop) = (Vec::new(), Vec::new());
    // One warm-up round, not counted.
    for i in 0..=iterations {
        let id = format!("ebench-{}-{i}", std::process::id());
        let name = NetnsName::new(&id).expect("namespace name");
        let config = session_config(&id, &annotations, &outer, upstream, &events);
        let began = Instant::now();
        let session = EgressSession::start(&id, name, &annotations.policy.network, &config)
            .expect("EgressSession::start");
        let started = began.elapsed();
        let began = Instant::now();
        std::mem::drop(session);
        let dropped = began.elapsed();
        if i > 0 {
            start.push(started.as_secs_f64() * 1e6);
            drop.push(dropped.as_secs_f64() * 1e6);
        }
    }
    report("start", start);
    report("drop", drop);
}
