//! Inbound forwarding on a pod's network: the session's outer namespace
//! stands in for a pod's CNI namespace (pod IP on `eth0`, a host namespace
//! on the other end, `test_support::pod`). A server in the sandbox's
//! namespace (a plain process: runsc `--network=host` uses that same
//! kernel stack) answers the host at the pod IP, TCP and UDP, and the outer
//! namespace's own clients at 127.0.0.1; the sandbox still originates
//! nothing it is not allowed, not even from the port a client reached it
//! on. Then nothing of the session remains, after a drop and after a
//! crash's `SessionRecord::remove`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::node_config::NodeConfig;
use serde_json::json;
use skillbox_egress::netns::NetnsName;
use skillbox_egress::session::{EgressError, EgressSession, Inbound, SessionConfig};
use skillbox_test_support::events::connection_events;
use skillbox_test_support::fake_internet::netns_list;
use skillbox_test_support::pod::{request, serve, wait_until, PodNetwork, HOST_IP, POD_IP};
use skillbox_test_support::session::plain_session_config;
use skillbox_test_support::topology::Netns;
use skillbox_test_support::{must, require};

fn network(allow: serde_json::Value) -> EffectiveNetwork {
    serde_json::from_value(json!({
        "allow": allow,
        "deny": [],
        "always_deny": NodeConfig::default().ceiling.always_deny,
    }))
    .unwrap()
}

fn sandbox_name() -> NetnsName {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    NetnsName::new(&format!("skillbox-test-inb-{}-{n}", std::process::id())).unwrap()
}

/// The sandbox's gateway (the veth's outer address), from its resolv.conf.
fn gateway(session: &EgressSession) -> String {
    let conf = session.resolv_conf();
    conf.lines()
        .find_map(|line| line.strip_prefix("nameserver "))
        .unwrap()
        .to_owned()
}

/// `net.ipv4.conf.<interface>.route_localnet` in `ns`, `None` when there
/// is no such interface.
fn route_localnet(ns: &Netns, interface: &str) -> Option<String> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/route_localnet");
    let out = ns.exec(&["sh", "-c", &format!("cat {path} 2>/dev/null || echo none")]);
    Some(out.trim().to_owned()).filter(|value| value != "none")
}

/// The rcode of the answer to a query for `name` sent to `server`:53 over
/// UDP from the namespace at `netns`.
fn dns_rcode(netns: &Path, server: &str, name: &str) -> String {
    let script = r#"
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
for label in sys.argv[2].split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (sys.argv[1], 53))
try:
    print(s.recv(512)[3] & 0x0f)
except socket.timeout:
    print("timeout")
"#;
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "python3", "-c", script, server, name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Nothing of the session whose veth was `interface` is left: no table
/// in the outer namespace, no veth (nor its sysctls), no namespace; and
/// the outer namespace's own sysctls are as they were.
fn assert_nothing_left(pod: &Netns, name: &NetnsName, interface: &str) {
    assert!(
        !netns_list().contains(&name.to_string()),
        "namespace {name} left behind"
    );
    let ruleset = pod.exec(&["nft", "list", "ruleset"]);
    assert_eq!(ruleset.trim(), "", "tables left behind");
    let links = must(&["ip", "-n", &pod.0, "-o", "link"]);
    assert!(!links.contains(interface), "veth left behind:\n{links}");
    assert_eq!(route_localnet(pod, interface), None);
    for interface in ["all", "default", "lo", "eth0"] {
        assert_eq!(
            route_localnet(pod, interface).as_deref(),
            Some("0"),
            "{interface}"
        );
    }
}

#[test]
fn a_deny_all_sandbox_is_reached_at_the_pod_ip_and_localhost_and_reaches_nothing() {
    let PodNetwork { host, pod } = PodNetwork::start();
    let (host_path, pod_path) = (PodNetwork::path(&host), PodNetwork::path(&pod));
    let outer = NetnsName::new(&pod.0).unwrap();
    let work = tempfile::tempdir().unwrap();
    let events = work.path().join("egress.jsonl");
    let name = sandbox_name();
    let id = name.as_str().to_owned();
    // No allow rule: no upstream resolver either.
    let config = plain_session_config(&id, &outer, Vec::new(), &events);
    let session = EgressSession::start_with_inbound(
        &id,
        name.clone(),
        &network(json!([])),
        &config,
        Inbound::AddressesAndLocalhost,
    )
    .unwrap();
    let record = session.record();
    let interface = record.interface.clone();
    let sandbox = session.namespace_path();
    let gateway = gateway(&session);
    let sandbox_server = serve(&sandbox, 8080, "sandbox");
    let host_server = serve(&host_path, 8081, "host");
    let pod_server = serve(&pod_path, 9090, "pod");

    // In: the pod IP from the host, TCP and UDP, with the client's address.
    for proto in ["tcp", "udp"] {
        assert_eq!(
            request(&host_path, proto, POD_IP, 8080, 0),
            format!("sandbox {proto} from {HOST_IP}")
        );
    }
    // In: 127.0.0.1 from the outer namespace (port-forward), seen as the gateway.
    for proto in ["tcp", "udp"] {
        assert_eq!(
            request(&pod_path, proto, "127.0.0.1", 8080, 0),
            format!("sandbox {proto} from {gateway}")
        );
    }
    // Only the veth routes 127.0.0.0/8; the pod's own settings are untouched.
    assert_eq!(route_localnet(&pod, &interface).as_deref(), Some("1"));
    for other in ["all", "default", "lo", "eth0"] {
        assert_eq!(route_localnet(&pod, other).as_deref(), Some("0"), "{other}");
    }

    // Out: nothing, not even from the port a client reached the sandbox on
    // (its replies are conntrack's `established`; these are new).
    drop(sandbox_server);
    assert_eq!(request(&sandbox, "tcp", HOST_IP, 8081, 0), "refused");
    assert_eq!(request(&sandbox, "tcp", HOST_IP, 8081, 8080), "refused");
    assert_eq!(request(&sandbox, "udp", HOST_IP, 8081, 8080), "timeout");
    assert_eq!(request(&sandbox, "udp", HOST_IP, 8081, 0), "timeout");
    // Not the outer namespace: neither its addresses nor its loopback,
    // even with the sandbox's own local routes gone.
    assert_eq!(request(&sandbox, "tcp", &gateway, 9090, 0), "timeout");
    assert_eq!(request(&sandbox, "tcp", POD_IP, 9090, 0), "timeout");
    let sbx = ["ip", "netns", "exec", name.as_str()];
    for cmd in [
        "ip route del local 127.0.0.0/8 dev lo table local",
        "ip route del local 127.0.0.1 dev lo table local",
        "sysctl -qw net.ipv4.conf.all.route_localnet=1",
    ] {
        must(&[&sbx[..], &cmd.split(' ').collect::<Vec<_>>()[..]].concat());
    }
    must(
        &[
            &sbx[..],
            &[
                "ip",
                "route",
                "add",
                "127.0.0.1/32",
                "via",
                &gateway,
                "dev",
                "eth0",
            ][..],
        ]
        .concat(),
    );
    assert_eq!(request(&sandbox, "tcp", "127.0.0.1", 9090, 0), "timeout");
    // DNS: every name refused (5), no upstream needed.
    assert_eq!(dns_rcode(&sandbox, &gateway, "example.org"), "5");

    // The refusals are logged (read before the simulated crash below).
    let logged = || connection_events(&std::fs::read_to_string(&events).unwrap_or_default());
    let expected = [
        format!("{HOST_IP} 8081 tcp denied default-deny"),
        format!("{HOST_IP} 8081 udp denied not-tcp"),
    ];
    assert!(
        wait_until(Duration::from_secs(5), || expected
            .iter()
            .all(|e| logged().contains(e))),
        "{:?}",
        logged()
    );
    assert!(
        !logged().iter().any(|event| event.contains(" allowed ")),
        "{:?}",
        logged()
    );

    // A crash: no drop, only what the record names is removed.
    std::mem::forget(session);
    drop((host_server, pod_server));
    record.remove().unwrap();
    assert_nothing_left(&pod, &name, &interface);
    assert_eq!(request(&host_path, "tcp", POD_IP, 8080, 0), "refused");
}

#[test]
fn an_allow_session_with_inbound_originates_only_what_it_allows() {
    let PodNetwork { host, pod } = PodNetwork::start();
    let (host_path, pod_path) = (PodNetwork::path(&host), PodNetwork::path(&pod));
    let outer = NetnsName::new(&pod.0).unwrap();
    let work = tempfile::tempdir().unwrap();
    let events = work.path().join("egress.jsonl");
    let name = sandbox_name();
    let id = name.as_str().to_owned();
    let policy = network(json!([{"cidr": format!("{HOST_IP}/32"), "ports": [8081]}]));
    let config = plain_session_config(&id, &outer, Vec::new(), &events);
    let session =
        EgressSession::start_with_inbound(&id, name.clone(), &policy, &config, Inbound::Addresses).unwrap();
    let interface = session.record().interface;
    let sandbox = session.namespace_path();
    let servers = [
        serve(&sandbox, 8080, "sandbox"),
        serve(&host_path, 8081, "host"),
        serve(&host_path, 8082, "host"),
    ];

    assert_eq!(
        request(&host_path, "tcp", POD_IP, 8080, 0),
        format!("sandbox tcp from {HOST_IP}")
    );
    assert_eq!(
        request(&host_path, "udp", POD_IP, 8080, 0),
        format!("sandbox udp from {HOST_IP}")
    );
    // Addresses only: the outer namespace's loopback stays its own.
    assert_eq!(request(&pod_path, "tcp", "127.0.0.1", 8080, 0), "refused");
    assert_eq!(route_localnet(&pod, &interface).as_deref(), Some("0"));
    // Out: the allowed port (masqueraded as the pod IP), nothing else.
    assert_eq!(
        request(&sandbox, "tcp", HOST_IP, 8081, 0),
        format!("host tcp from {POD_IP}")
    );
    assert_eq!(request(&sandbox, "tcp", HOST_IP, 8082, 0), "refused");
    assert_eq!(request(&sandbox, "udp", HOST_IP, 8081, 0), "timeout");
    // From the port the host reached the sandbox on: judged the same.
    let [sandbox_server, host_servers @ ..] = servers;
    drop(sandbox_server);
    assert_eq!(
        request(&sandbox, "tcp", HOST_IP, 8081, 8080),
        format!("host tcp from {POD_IP}")
    );
    assert_eq!(request(&sandbox, "tcp", HOST_IP, 8082, 8080), "refused");

    drop(host_servers);
    drop(session);
    let logged = connection_events(&std::fs::read_to_string(&events).unwrap());
    for expected in [
        format!("{HOST_IP} 8081 tcp allowed allow: cidr {HOST_IP}/32 ports 8081"),
        format!("{HOST_IP} 8082 tcp denied default-deny"),
        format!("{HOST_IP} 8081 udp denied not-tcp"),
    ] {
        assert!(logged.contains(&expected), "{expected:?} not in {logged:?}");
    }
    // Inbound connections are counted, not logged as the sandbox's.
    assert!(!logged.iter().any(|event| event.contains(" 8080 ")), "{logged:?}");
    assert_nothing_left(&pod, &name, &interface);
}

#[test]
fn inbound_is_refused_in_the_callers_own_namespace() {
    require("ip", "iproute2");
    let all = PathBuf::from("/proc/sys/net/ipv4/conf/all/route_localnet");
    let before = std::fs::read_to_string(&all).unwrap();
    let links_before = must(&["ip", "-o", "link"]);
    let work = tempfile::tempdir().unwrap();
    for inbound in [Inbound::Addresses, Inbound::AddressesAndLocalhost] {
        let name = sandbox_name();
        let id = name.as_str().to_owned();
        let placeholder = NetnsName::new("unused").unwrap();
        let config = SessionConfig {
            outer: None,
            ..plain_session_config(&id, &placeholder, Vec::new(), &work.path().join("e.jsonl"))
        };
        let err = EgressSession::start_with_inbound(&id, name.clone(), &network(json!([])), &config, inbound)
            .err()
            .expect("refused");
        assert!(matches!(err, EgressError::InboundInOwnNamespace { .. }), "{err}");
        // Refused before anything was made or changed.
        assert!(!netns_list().contains(&id));
        assert_eq!(must(&["ip", "-o", "link"]), links_before);
        assert_eq!(std::fs::read_to_string(&all).unwrap(), before);
    }
}
