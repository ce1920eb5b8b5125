//! A pod's network for the egress crate's inbound tests: a "host"
//! namespace (the node's side of the pod's veth, [`HOST_IP`]) and a "pod"
//! namespace standing in for a CNI network namespace (`eth0`, the pod IP
//! [`POD_IP`], default route to the host, forwarding off as CNI leaves it:
//! the session turns it on). Addresses
//! are from 198.18.0.0/15: not in the built-in always-deny list, so an
//! allow rule can name the host, and not this machine's uplink. Both
//! namespaces are deleted on drop. Plus TCP and UDP servers and clients
//! (python3) that run in any namespace by path.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::topology::{Killed, Netns};

/// The host's end of the pod's veth.
pub const HOST_IP: &str = "198.18.77.1";
/// The pod IP, on the pod namespace's `eth0`.
pub const POD_IP: &str = "198.18.77.2";

/// The host and pod namespaces, joined by a veth pair.
pub struct PodNetwork {
    pub host: Netns,
    pub pod: Netns,
}

impl PodNetwork {
    pub fn start() -> PodNetwork {
        for (program, package) in [("ip", "iproute2"), ("nft", "nftables"), ("python3", "python3")] {
            crate::require(program, package);
        }
        let host = Netns::new("host");
        let pod = Netns::new("pod");
        host.exec(&[
            "ip", "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", &pod.0,
        ]);
        for (ns, cmds) in [
            (
                &host,
                vec![
                    &*format!("ip addr add {HOST_IP}/24 dev pod0"),
                    "ip link set pod0 up",
                ],
            ),
            (
                &pod,
                vec![
                    &*format!("ip addr add {POD_IP}/24 dev eth0"),
                    "ip link set eth0 up",
                    &*format!("ip route add default via {HOST_IP}"),
                ],
            ),
        ] {
            for cmd in cmds {
                ns.exec(&cmd.split(' ').collect::<Vec<_>>());
            }
        }
        PodNetwork { host, pod }
    }

    /// `/var/run/netns/<name>` of a namespace.
    pub fn path(ns: &Netns) -> std::path::PathBuf {
        Path::new("/var/run/netns").join(&ns.0)
    }
}

/// Serves TCP and UDP on `port` (all addresses) in the namespace at
/// `netns`: each TCP connection and each datagram is answered
/// `<tag> <proto> from <peer address>` (a datagram to its sender). Waits
/// until both listen; the servers are killed on drop.
pub fn serve(netns: &Path, port: u16, tag: &str) -> Killed {
    let script = format!(
        r#"
import socket, threading, sys
def tcp():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", {port}))
    s.listen()
    ready.set()
    while True:
        c, peer = s.accept()
        c.sendall(b"{tag} tcp from " + peer[0].encode())
        c.close()
ready = threading.Event()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("0.0.0.0", {port}))
threading.Thread(target=tcp, daemon=True).start()
ready.wait()
print("listening", flush=True)
while True:
    data, peer = u.recvfrom(512)
    u.sendto(b"{tag} udp from " + peer[0].encode(), peer)
"#
    );
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "python3", "-u", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut stdout = child.stdout.take().expect("piped");
    let killed = Killed(child);
    let mut line = [0u8; 10];
    std::io::Read::read_exact(&mut stdout, &mut line).expect("the server says it listens");
    assert_eq!(&line, b"listening\n");
    killed
}

const CLIENT: &str = r#"
import socket, sys
addr, port, proto, source = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(2)
try:
    if source:
        s.bind(("0.0.0.0", source))
    if proto == "tcp":
        s.connect((addr, port))
        print(s.recv(200).decode() or "connected")
    else:
        s.sendto(b"ping", (addr, port))
        print(s.recv(200).decode())
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error", e.errno)
"#;

/// What a `proto` ("tcp" or "udp") client in the namespace at `netns`
/// gets from `addr`:`port`: the server's answer (`connected` for a TCP
/// server that says nothing), `refused`, `timeout` (2 s) or `error <errno>`.
/// `source`: the client's own port (0: any).
pub fn request(netns: &Path, proto: &str, addr: &str, port: u16, source: u16) -> String {
    let output = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "python3", "-c", CLIENT, addr, &port.to_string(), proto])
        .arg(source.to_string())
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Waits until `ready` holds, at most `within`.
pub fn wait_until(within: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !ready() {
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
    true
}
