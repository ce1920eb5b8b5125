//! A fake internet for network tests, made of two network namespaces:
//!
//! - **internet** (`<prefix>-inet`): documentation addresses on its `lo`
//!   ([`HTTP_SERVERS`], [`DNS_SERVER`]), a `python3 -m http.server` on each
//!   HTTP address and a dnsmasq answering [`DNS_RECORDS`] (other names under
//!   `example.` get NXDOMAIN, nothing is forwarded) and logging every query.
//!   It has no route anywhere but its connected link to the node.
//! - **node** (`<prefix>-node`): plays the host that runs sandboxes (the
//!   outer namespace of a sandbox network). Its only link, [`NODE_UPLINK`]
//!   198.18.0.2/30 (2001:db8:ff::2/64), leads into the internet namespace,
//!   which is also its default route.
//!
//! The CI machines' own uplink is 192.0.2.0/24, so that block is not used
//! by any test. Nothing here touches the caller's network namespace.
//! Dropping a [`FakeInternet`] stops its servers and deletes both
//! namespaces, also when a test panics.
//!
//! Needs tempfile, python3, dnsmasq and iproute2; the CLI's and the shim's
//! tests use it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::must;

/// The node's interface into the internet namespace.
pub const NODE_UPLINK: &str = "up0";
/// The node's address on its uplink (what masqueraded traffic comes from).
pub const NODE_ADDRESS: &str = "198.18.0.2";
/// Port of every HTTP server.
pub const HTTP_PORT: u16 = 8080;
/// Addresses with an HTTP server; each serves `/` as `fake-internet <address>`.
pub const HTTP_SERVERS: [&str; 4] = ["203.0.113.10", "203.0.113.11", "198.51.100.20", "2001:db8::10"];
/// dnsmasq's address (port 53, UDP and TCP).
pub const DNS_SERVER: &str = "198.51.100.53";
/// The names dnsmasq answers.
pub const DNS_RECORDS: [(&str, &str); 3] = [
    ("allowed.example", "203.0.113.10"),
    ("other.example", "198.51.100.20"),
    ("cdn.example", "203.0.113.10"),
];

/// A static HTTP server: `python3 -c SERVE_HTTP <address> <port> <root>`;
/// prints `Serving HTTP` when it listens, then one line per request.
const SERVE_HTTP: &str = "import functools, http.server, socket, socketserver, sys
address, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    address_family = socket.AF_INET6 if ':' in address else socket.AF_INET
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = Server((address, port), handler)
print('Serving HTTP on', address, 'port', port, flush=True)
server.serve_forever()
";

/// The body an HTTP server of the fake internet answers `/` with.
pub fn http_body(address: &str) -> String {
    format!("fake-internet {address}\n")
}

/// The names in `ip netns list`.
pub fn netns_list() -> Vec<String> {
    must(&["ip", "netns", "list"])
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// A unique name prefix for this test: `sbx-t-<tag>-<pid>-<n>`.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "sbx-t-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct FakeInternet {
    pub internet: String,
    pub node: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl FakeInternet {
    /// Builds both namespaces and starts the servers; panics (after
    /// removing what it made) if any step fails.
    pub fn start(tag: &str) -> FakeInternet {
        FakeInternet::start_with_dns_ttl(tag, None)
    }

    /// As [`FakeInternet::start`], with dnsmasq answering [`DNS_RECORDS`]
    /// with a TTL of `ttl` seconds (`--local-ttl`; dnsmasq's own default
    /// is 0).
    pub fn start_with_dns_ttl(tag: &str, ttl: Option<u32>) -> FakeInternet {
        let prefix = unique_prefix(tag);
        let mut fake = FakeInternet {
            internet: format!("{prefix}-inet"),
            node: format!("{prefix}-node"),
            dir: tempfile::Builder::new()
                .prefix("skillbox-fake-internet.")
                .tempdir()
                .unwrap(),
            children: Vec::new(),
        };
        // `fake` is dropped (and cleans up) if a step panics.
        fake.build_namespaces();
        for address in HTTP_SERVERS {
            fake.start_http_server(address);
        }
        fake.start_dnsmasq(ttl);
        fake
    }

    fn build_namespaces(&mut self) {
        let (inet, node) = (self.internet.as_str(), self.node.as_str());
        must(&["ip", "netns", "add", inet]);
        must(&["ip", "netns", "add", node]);
        for ns in [inet, node] {
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for address in HTTP_SERVERS.iter().chain([&DNS_SERVER]) {
            let cidr = if address.contains(':') {
                format!("{address}/128")
            } else {
                format!("{address}/32")
            };
            must(&["ip", "-n", inet, "addr", "add", &cidr, "dev", "lo"]);
        }
        must(&[
            "ip",
            "-n",
            node,
            "link",
            "add",
            NODE_UPLINK,
            "type",
            "veth",
            "peer",
            "name",
            "inet0",
            "netns",
            inet,
        ]);
        must(&["ip", "-n", inet, "addr", "add", "198.18.0.1/30", "dev", "inet0"]);
        must(&[
            "ip",
            "-n",
            inet,
            "addr",
            "add",
            "2001:db8:ff::1/64",
            "dev",
            "inet0",
            "nodad",
        ]);
        must(&["ip", "-n", inet, "link", "set", "inet0", "up"]);
        must(&[
            "ip",
            "-n",
            node,
            "addr",
            "add",
            &format!("{NODE_ADDRESS}/30"),
            "dev",
            NODE_UPLINK,
        ]);
        must(&[
            "ip",
            "-n",
            node,
            "addr",
            "add",
            "2001:db8:ff::2/64",
            "dev",
            NODE_UPLINK,
            "nodad",
        ]);
        must(&["ip", "-n", node, "link", "set", NODE_UPLINK, "up"]);
        must(&["ip", "-n", node, "route", "add", "default", "via", "198.18.0.1"]);
        must(&[
            "ip",
            "-n",
            node,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:ff::1",
        ]);
    }

    /// `nsenter --net=<namespace>` before `program`: unlike `ip netns exec`
    /// it keeps the caller's `/sys`, which runsc needs for cgroups.
    pub fn in_namespace(namespace: &str, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/var/run/netns/{namespace}"))
            .arg("--")
            .arg(program);
        command
    }

    /// A command that runs `program` in the node namespace.
    pub fn node_command(&self, program: &str) -> Command {
        Self::in_namespace(&self.node, program)
    }

    /// A command that runs `program` in the internet namespace.
    pub fn internet_command(&self, program: &str) -> Command {
        Self::in_namespace(&self.internet, program)
    }

    pub fn node_path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.node)
    }

    fn spawn(&mut self, mut command: Command, log: &Path) -> &Child {
        let file = std::fs::File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
        self.children.push(child);
        self.children.last().unwrap()
    }

    /// The log of the HTTP server on `address` (one line per request,
    /// naming the client's address).
    pub fn http_log(&self, address: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("http-{address}.log"))).unwrap_or_default()
    }

    fn start_http_server(&mut self, address: &str) {
        let command = self.internet_command("python3");
        self.serve_http(command, address, HTTP_PORT);
    }

    /// Starts an HTTP server on `address`:`port` from `python3` (a command
    /// entering the namespace that owns `address`); its log is
    /// [`FakeInternet::http_log`]`(address)`.
    fn serve_http(&mut self, mut python3: Command, address: &str, port: u16) {
        let root = self.dir.path().join(format!("www-{address}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), http_body(address)).unwrap();
        let log = self.dir.path().join(format!("http-{address}.log"));
        // Not `python3 -m http.server`: its HTTPServer looks up the bound
        // address's name, which hangs for seconds where a default route
        // leads nowhere (the node namespace).
        python3
            .args(["-u", "-c", SERVE_HTTP, address, &port.to_string()])
            .arg(&root);
        self.spawn(python3, &log);
        wait_for(&format!("HTTP server on {address}"), || {
            self.http_log(address).contains("Serving HTTP")
        });
    }

    /// Adds `address` to the internet namespace and serves HTTP on it at
    /// `port` (say, a cloud metadata service on 169.254.169.254:80).
    pub fn serve_http_in_internet(&mut self, address: &str, port: u16) {
        must(&[
            "ip",
            "-n",
            &self.internet,
            "addr",
            "add",
            &format!("{address}/32"),
            "dev",
            "lo",
        ]);
        let command = self.internet_command("python3");
        self.serve_http(command, address, port);
    }

    /// Serves HTTP on the node's own `address` at `port`.
    pub fn serve_http_on_node(&mut self, address: &str, port: u16) {
        let command = self.node_command("python3");
        self.serve_http(command, address, port);
    }

    /// dnsmasq's query log.
    pub fn dns_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    fn start_dnsmasq(&mut self, ttl: Option<u32>) {
        let log = self.dir.path().join("dnsmasq.log");
        let mut command = self.internet_command("dnsmasq");
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--bind-interfaces",
            "--listen-address",
            DNS_SERVER,
            "--local=/example/",
            "--log-queries",
        ]);
        command.arg(format!("--log-facility={}", log.display()));
        command.arg(format!(
            "--pid-file={}",
            self.dir.path().join("dnsmasq.pid").display()
        ));
        for (name, address) in DNS_RECORDS {
            command.arg(format!("--host-record={name},{address}"));
        }
        if let Some(ttl) = ttl {
            command.arg(format!("--local-ttl={ttl}"));
        }
        let stderr = self.dir.path().join("dnsmasq.stderr");
        self.spawn(command, &stderr);
        wait_for("dnsmasq", || self.dns_log().contains("started"));
    }

    /// Starts a UDP listener on `address`:`port` in the internet namespace
    /// (the address must be one of its own) that logs every datagram as
    /// `<source address> <payload as a Python bytes literal>`; see
    /// [`FakeInternet::udp_log`].
    pub fn start_udp_listener(&mut self, address: &str, port: u16) {
        let log = self.dir.path().join(format!("udp-{address}-{port}.log"));
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('{address}',{port}))\nprint('listening',flush=True)\n\
             while True:\n    data,peer=s.recvfrom(65535)\n    print(peer[0],data,flush=True)\n"
        );
        let mut command = self.internet_command("python3");
        command.args(["-u", "-c", &script]);
        self.spawn(command, &log);
        wait_for(&format!("UDP listener on {address}:{port}"), || {
            self.udp_log(address, port).contains("listening")
        });
    }

    /// The log of the UDP listener on `address`:`port`.
    pub fn udp_log(&self, address: &str, port: u16) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("udp-{address}-{port}.log"))).unwrap_or_default()
    }

    /// Whether `address`:`port` accepts a TCP connection from the node.
    pub fn node_can_connect(&self, address: IpAddr, port: u16) -> bool {
        can_connect_from(&self.node_path(), address, port)
    }
}

/// Whether `address`:`port` accepts a TCP connection (2 s timeout) from
/// the network namespace at `netns`.
pub fn can_connect_from(netns: &Path, address: IpAddr, port: u16) -> bool {
    let family = if address.is_ipv6() { "AF_INET6" } else { "AF_INET" };
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.{family})\ns.settimeout(2)\n\
         sys.exit(s.connect_ex(('{address}',{port})))"
    );
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "python3", "-c", &script])
        .status()
        .is_ok_and(|status| status.success())
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.node, &self.internet] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} did not start in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
