//! The egress plumbing: a runsc sandbox in its own network namespace behind
//! a `SandboxNetwork` reaches the fake internet through the node namespace
//! (veth, forwarding, NAT), and removal leaves nothing behind. No
//! filtering yet. runsc and every check run inside the fake node
//! namespace, never in the caller's.

use std::time::Duration;

use skillbox_egress::netns::{Forwarding, NetnsName, NetworkConfig, SandboxNetwork, SystemRunner};
use skillbox_test_support::fake_internet::{self, netns_list, FakeInternet, NODE_ADDRESS, NODE_UPLINK};
use skillbox_test_support::fake_sandbox;
use skillbox_test_support::{must, require_sandbox_prerequisites, run_with_watchdog, Skill};

const PROBE: &str = r#"exec 2>&1
echo "resolv: $(cat /etc/resolv.conf | head -1)"
echo "route: $(tail -n +2 /proc/net/route | head -1)"
for address in 203.0.113.10 198.51.100.20; do
  printf 'GET / HTTP/1.0\r\n\r\n' | nc "$address" 8080 | tail -1
done
printf 'GET / HTTP/1.0\r\n\r\n' | nc 198.51.100.20 8081 || echo "no server: nc status $?"
timeout 10 nslookup allowed.example 198.51.100.53 | grep '^Address: 203'
"#;

#[test]
fn a_sandbox_reaches_the_fake_internet_through_its_own_namespace_and_leaves_nothing() {
    require_sandbox_prerequisites();
    let fake = FakeInternet::start("egr");
    let node = NetnsName::new(&fake.node).unwrap();
    // A fresh namespace does not forward; the node turns it on for its uplink.
    let uplink = Forwarding::enable(Box::new(SystemRunner), Some(node.clone()), NODE_UPLINK).unwrap();
    assert!(uplink.changed(), "a new namespace starts with forwarding off");
    let ip_forward = || {
        must(&[
            "ip",
            "netns",
            "exec",
            node.as_str(),
            "sysctl",
            "-n",
            "net.ipv4.ip_forward",
        ])
    };

    let name = NetnsName::new(&format!("{}-sbx", fake.node.trim_end_matches("-node"))).unwrap();
    let config = NetworkConfig {
        outer: Some(node.clone()),
        ..NetworkConfig::default()
    };
    let mut network = SandboxNetwork::create(Box::new(SystemRunner), name.clone(), &config).unwrap();
    assert_eq!(network.outer_interface(), "sbxv0");

    let skill = Skill::sh(
        "egress-probe",
        "  resources: { cpus: 0.5, memory: 128Mi, pids: 16, timeout: 30s }\n",
        PROBE,
    );
    let work = tempfile::Builder::new()
        .prefix("skillbox-egress-test.")
        .tempdir()
        .unwrap();
    let bundle = fake_sandbox::compile_on_busybox(&skill, work.path());
    let id = name.as_str().to_owned();
    let output = fake_sandbox::run_sandboxed(
        &fake,
        &network.namespace_path(),
        &network.resolv_conf(),
        &bundle,
        &id,
    );
    let text = &output.stdout;
    // Forwarding is per interface (uplink and veth); the global switch stays off.
    assert_eq!(ip_forward().trim(), "0");
    assert_eq!(output.code, 0, "{}", output.describe());
    let gateway = network.addresses().outer.to_string();
    assert!(
        text.contains(&format!("resolv: nameserver {gateway}")),
        "{}",
        output.describe()
    );
    assert!(
        text.contains(&fake_internet::http_body("203.0.113.10")),
        "{}",
        output.describe()
    );
    assert!(
        text.contains(&fake_internet::http_body("198.51.100.20")),
        "{}",
        output.describe()
    );
    assert!(text.contains("no server: nc status 1"), "{}", output.describe());
    // The server saw the node's address: the sandbox was masqueraded.
    assert!(
        fake.http_log("203.0.113.10")
            .contains(&format!("{NODE_ADDRESS} - - ")),
        "{}",
        fake.http_log("203.0.113.10")
    );
    // DNS over UDP also goes out (to the fake internet's resolver).
    assert!(text.contains("Address: 203.0.113.10"), "{}", output.describe());
    assert!(
        fake.dns_log()
            .contains(&format!("query[A] allowed.example from {NODE_ADDRESS}")),
        "{}",
        fake.dns_log()
    );

    network.remove().unwrap();
    network.remove().unwrap();
    assert!(!netns_list().contains(&id), "namespace {id} left behind");
    let links = must(&["ip", "-n", node.as_str(), "-o", "link"]);
    assert!(!links.contains("sbxv"), "veth left behind:\n{links}");
    let ruleset = must(&["ip", "netns", "exec", node.as_str(), "nft", "list", "ruleset"]);
    assert!(
        !ruleset.contains("skillbox_nat"),
        "NAT table left behind:\n{ruleset}"
    );
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap() {
        let cgroup = hierarchy.unwrap().path().join(&id);
        assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
    }
    drop(uplink);
    let forwarding = must(&[
        "ip",
        "netns",
        "exec",
        node.as_str(),
        "sysctl",
        "-n",
        "net.ipv4.conf.up0.forwarding",
    ]);
    assert_eq!(forwarding.trim(), "0", "uplink forwarding not restored");
    let (inet, node_name) = (fake.internet.clone(), fake.node.clone());
    drop(fake);
    let left = netns_list();
    assert!(
        !left.contains(&inet) && !left.contains(&node_name),
        "fake internet left behind: {left:?}"
    );
}

#[test]
fn the_fake_internet_serves_its_addresses_and_names_and_nothing_else() {
    require_sandbox_prerequisites();
    let fake = FakeInternet::start("fin");
    for address in fake_internet::HTTP_SERVERS {
        assert!(
            fake.node_can_connect(address.parse().unwrap(), fake_internet::HTTP_PORT),
            "no HTTP server on {address}"
        );
    }
    assert!(!fake.node_can_connect("198.51.100.20".parse().unwrap(), 8081));
    for (name, address) in fake_internet::DNS_RECORDS {
        let mut lookup = fake.node_command("busybox");
        lookup.args(["nslookup", name, fake_internet::DNS_SERVER]);
        let output = run_with_watchdog(lookup, Duration::from_secs(20));
        assert!(
            output.stdout.contains(&format!("Address: {address}")),
            "{name}: {}",
            output.describe()
        );
    }
    let mut lookup = fake.node_command("busybox");
    lookup.args(["nslookup", "unlisted.example", fake_internet::DNS_SERVER]);
    let output = run_with_watchdog(lookup, Duration::from_secs(20));
    assert!(!output.stdout.contains("Name:"), "{}", output.describe());
    assert!(
        fake.dns_log().contains("config unlisted.example is NXDOMAIN"),
        "{}",
        fake.dns_log()
    );
    // The node's only way out is the internet namespace, which routes nowhere.
    let routes = must(&["ip", "-n", &fake.internet, "route"]);
    assert!(!routes.contains("default"), "{routes}");
}

#[test]
fn concurrent_sandbox_networks_in_one_node_get_distinct_slots_and_all_go_away() {
    require_sandbox_prerequisites();
    let fake = FakeInternet::start("par");
    let node = NetnsName::new(&fake.node).unwrap();
    let _uplink = Forwarding::enable(Box::new(SystemRunner), Some(node.clone()), NODE_UPLINK).unwrap();
    let config = NetworkConfig {
        outer: Some(node.clone()),
        ..NetworkConfig::default()
    };
    let base = fake.node.trim_end_matches("-node").to_owned();
    let networks: Vec<SandboxNetwork> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|index| {
                let (config, name) = (&config, NetnsName::new(&format!("{base}-s{index}")).unwrap());
                scope.spawn(move || SandboxNetwork::create(Box::new(SystemRunner), name, config).unwrap())
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let mut interfaces: Vec<&str> = networks.iter().map(|network| network.outer_interface()).collect();
    interfaces.sort();
    assert_eq!(interfaces, ["sbxv0", "sbxv1", "sbxv2", "sbxv3"]);
    let mut inner: Vec<_> = networks.iter().map(|network| network.addresses().inner).collect();
    inner.dedup();
    assert_eq!(inner.len(), 4);
    // Each sandbox namespace reaches the fake internet on its own.
    for network in &networks {
        assert!(
            fake_internet::can_connect_from(&network.namespace_path(), "203.0.113.11".parse().unwrap(), 8080),
            "{} cannot reach the fake internet",
            network.namespace()
        );
    }
    let names: Vec<String> = networks
        .iter()
        .map(|network| network.namespace().to_string())
        .collect();
    drop(networks);
    let left = netns_list();
    assert!(names.iter().all(|name| !left.contains(name)), "{left:?}");
    let links = must(&["ip", "-n", node.as_str(), "-o", "link"]);
    assert!(!links.contains("sbxv"), "{links}");
}
