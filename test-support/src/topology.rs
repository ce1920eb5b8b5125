//! Throwaway network namespaces for the egress crate's nftables and NFLOG
//! tests (`skillbox-test-rules-…`, deleted on drop, failed test or not), a
//! forwarding topology with a small internet of its own, and a TCP client.
//! Needs root, `nft`, `ip` and python3; a missing program fails the test,
//! naming it. Lighter than the [`crate::fake_internet`]: no DNS, and the
//! sandbox side is a plain namespace rather than runsc.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use skillbox_egress::nft::{Namespace, Nft};

use crate::{must, require};

/// A throwaway network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(role: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "skillbox-test-rules-{role}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        must(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn exec(&self, argv: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(argv);
        must(&full)
    }

    pub fn nft(&self) -> Nft {
        Nft::new(Namespace::Named(self.0.clone()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed and reaped on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SERVER: &str = r#"
import socket, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen()
    while True:
        c, _ = s.accept()
        c.sendall(b"hi")
        c.close()
for port in (80, 8080):
    threading.Thread(target=serve, args=(port,)).start()
"#;

const CLIENT: &str = r#"
import socket, sys
s = socket.socket()
s.settimeout(1.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error", e.errno)
"#;

pub fn connect(ns: &Netns, addr: &str, port: u16) -> String {
    ns.exec(&["python3", "-c", CLIENT, addr, &port.to_string()])
        .trim()
        .to_owned()
}

/// The sandbox's namespace (10.200.0.2) → veth `sbx-out` → the node's
/// namespace (10.200.0.1, forwards; where tables go) → veth → a fake
/// internet (198.18.0.2) serving TCP 80 and 8080 on 203.0.113.10,
/// 203.0.113.13 and 198.51.100.20. Dropping it kills the server and
/// deletes the namespaces.
pub struct Topology {
    pub sbx: Netns,
    pub node: Netns,
    pub net: Netns,
    _server: Killed,
}

/// The outer end of the sandbox's veth, in `node`.
pub const SANDBOX_VETH: &str = "sbx-out";

impl Topology {
    /// Builds it, and waits until the sandbox reaches the server.
    pub fn start() -> Topology {
        for (program, package) in [("ip", "iproute2"), ("nft", "nftables"), ("python3", "python3")] {
            require(program, package);
        }
        let sbx = Netns::new("sbx");
        let node = Netns::new("node");
        let net = Netns::new("net");
        node.exec(&[
            "ip", "link", "add", "sbx-out", "type", "veth", "peer", "name", "sbx-in", "netns", &sbx.0,
        ]);
        node.exec(&[
            "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", &net.0,
        ]);
        for (ns, cmds) in [
            (
                &sbx,
                vec![
                    "ip addr add 10.200.0.2/24 dev sbx-in",
                    "ip link set sbx-in up",
                    "ip route add default via 10.200.0.1",
                ],
            ),
            (
                &node,
                vec![
                    "ip addr add 10.200.0.1/24 dev sbx-out",
                    "ip link set sbx-out up",
                    "ip addr add 198.18.0.1/24 dev up0",
                    "ip link set up0 up",
                    "ip route add default via 198.18.0.2",
                    "sysctl -qw net.ipv4.ip_forward=1",
                ],
            ),
            (
                &net,
                vec![
                    "ip addr add 198.18.0.2/24 dev up1",
                    "ip link set up1 up",
                    "ip route add 10.200.0.0/24 via 198.18.0.1",
                    "ip addr add 203.0.113.10/32 dev lo",
                    "ip addr add 203.0.113.13/32 dev lo",
                    "ip addr add 198.51.100.20/32 dev lo",
                ],
            ),
        ] {
            for cmd in cmds {
                ns.exec(&cmd.split(' ').collect::<Vec<_>>());
            }
        }
        let server = Killed(
            Command::new("ip")
                .args(["netns", "exec", &net.0, "python3", "-c", SERVER])
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while connect(&net, "203.0.113.10", 8080) != "connected" {
            assert!(Instant::now() < deadline, "the test server did not start");
            sleep(Duration::from_millis(100));
        }
        let topology = Topology {
            sbx,
            node,
            net,
            _server: server,
        };
        // Without a table the sandbox reaches everything: the setup works.
        assert_eq!(connect(&topology.sbx, "203.0.113.10", 8080), "connected");
        topology
    }
}
