//! The DNS proxy against a real upstream: dnsmasq on a loopback address of
//! its own, logging every query it receives, so the tests can prove that
//! unlisted names never reach upstream.

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::Port;
use skillbox_egress::dns::{AddressLearner, DnsPolicy, DnsProxy, DnsProxyConfig};
use skillbox_egress::events::{EgressEvent, EventError, EventSink};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// dnsmasq serving fixed records on 127.0.0.<x>; killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start() -> Dnsmasq {
        assert!(
            std::path::Path::new("/usr/sbin/dnsmasq").exists(),
            "dnsmasq is missing: run scripts/setup.sh (Debian package dnsmasq-base)"
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dnsmasq.log");
        // A loopback address unlikely to be shared, and a port the OS picks.
        let host = format!(
            "127.0.{}.{}",
            100 + std::process::id() % 100,
            2 + rand_byte() % 250
        );
        let probe = StdUdpSocket::bind((host.as_str(), 0)).unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let child = Command::new("/usr/sbin/dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--user=root",
                "--pid-file=",
                "--local-ttl=45",
                &format!("--listen-address={}", addr.ip()),
                &format!("--port={}", addr.port()),
                "--log-queries",
                &format!("--log-facility={}", log.display()),
                "--host-record=allowed.example,198.51.100.10,2001:db8::10,300",
                "--address=/wild.example/198.51.100.40",
                "--cname=www.chain.example,a.cdn.example",
                "--cname=a.cdn.example,b.cdn.example",
                "--host-record=b.cdn.example,198.51.100.30,120",
                "--host-record=meta.example,169.254.169.254,60",
                "--host-record=secret.example,198.51.100.66,60",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        let dnsmasq = Dnsmasq {
            child,
            addr,
            log,
            _dir: dir,
        };
        dnsmasq.wait_ready();
        dnsmasq
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log_text().contains("started") {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it shows a query for `marker`.
    fn log_after(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.log_text();
            if text.contains(marker) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq never logged {marker}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_byte() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(0u8) % 256) as u32
}

/// An address, its ports (`None`: all), how long.
type Learned = (IpAddr, Option<Vec<u16>>, Duration);

#[derive(Default)]
struct Recorder {
    learned: Mutex<Vec<Learned>>,
    events: Mutex<Vec<EgressEvent>>,
}

impl AddressLearner for Recorder {
    fn learn(&self, ip: IpAddr, ports: Option<&[Port]>, ttl: Duration) {
        let ports = ports.map(|p| p.iter().map(|p| p.get()).collect());
        self.learned.lock().unwrap().push((ip, ports, ttl));
    }
}

impl EventSink for Recorder {
    fn record(&self, event: &EgressEvent) -> Result<(), EventError> {
        self.events.lock().unwrap().push(event.clone());
        Ok(())
    }
}

struct Setup {
    dnsmasq: Dnsmasq,
    proxy: DnsProxy,
    recorder: Arc<Recorder>,
}

async fn setup() -> Setup {
    let dnsmasq = Dnsmasq::start();
    let network: EffectiveNetwork = serde_json::from_value(serde_json::json!({
        "allow": [
            {"domain": "allowed.example", "ports": [443]},
            {"domain": "*.wild.example", "ports": [80, 443]},
            {"domain": "www.chain.example"},
            {"domain": "meta.example"},
            {"domain": "marker.allowed.example"},
        ],
        "deny": [{"domain": "secret.example"}],
        "always_deny": ["169.254.0.0/16"],
    }))
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut config = DnsProxyConfig::new(vec![dnsmasq.addr]);
    config.ttl_grace = Duration::from_secs(5);
    let proxy = DnsProxy::bind(
        SocketAddr::new(dnsmasq.addr.ip(), 0),
        config,
        DnsPolicy::from_network(&network),
        recorder.clone(),
        recorder.clone(),
    )
    .await
    .unwrap();
    Setup {
        dnsmasq,
        proxy,
        recorder,
    }
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(0x4242)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), qtype));
    message.to_vec().unwrap()
}

async fn ask_raw(proxy: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((proxy.ip(), 0)).await.unwrap();
    socket.send_to(bytes, proxy).await.unwrap();
    let mut buffer = vec![0; 4096];
    let len = tokio::time::timeout(wait, socket.recv(&mut buffer))
        .await
        .ok()?
        .unwrap();
    Some(buffer[..len].to_vec())
}

async fn ask(proxy: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let bytes = ask_raw(proxy, &query(name, qtype), Duration::from_secs(5))
        .await
        .expect("no answer");
    let answer = Message::from_vec(&bytes).unwrap();
    assert_eq!(answer.id(), 0x4242);
    answer
}

/// How long to wait to conclude that no answer comes.
const QUIET: Duration = Duration::from_millis(500);

fn addresses(answer: &Message) -> Vec<String> {
    answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(aaaa) => Some(aaaa.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_names_are_answered_and_learned() {
    let s = setup().await;
    let proxy = s.proxy.local_addr();

    let answer = ask(proxy, "Allowed.Example.", RecordType::A).await;
    assert_eq!(answer.response_code(), ResponseCode::NoError);
    assert_eq!(addresses(&answer), ["198.51.100.10"]);
    assert_eq!(answer.answers()[0].ttl(), 300);
    let answer = ask(proxy, "allowed.example.", RecordType::AAAA).await;
    assert_eq!(addresses(&answer), ["2001:db8::10"]);

    let answer = ask(proxy, "x.y.wild.example.", RecordType::A).await;
    assert_eq!(addresses(&answer), ["198.51.100.40"]);

    let answer = ask(proxy, "www.chain.example.", RecordType::A).await;
    let kinds: Vec<String> = answer
        .answers()
        .iter()
        .map(|r| r.record_type().to_string())
        .collect();
    assert_eq!(kinds, ["CNAME", "CNAME", "A"]);
    assert_eq!(addresses(&answer), ["198.51.100.30"]);

    let learned = s.recorder.learned.lock().unwrap().clone();
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    assert_eq!(
        learned,
        [
            (ip("198.51.100.10"), Some(vec![443]), Duration::from_secs(305)),
            (ip("2001:db8::10"), Some(vec![443]), Duration::from_secs(305)),
            (ip("198.51.100.40"), Some(vec![80, 443]), Duration::from_secs(50)),
            (ip("198.51.100.30"), None, Duration::from_secs(125)),
        ]
    );
    let log = s.dnsmasq.log_after("query[A] www.chain.example");
    assert!(log.contains("query[A] allowed.example"), "{log}");
    assert!(log.contains("query[A] x.y.wild.example"), "{log}");
}

/// The name of every query dnsmasq logged, as it arrived.
fn logged_names(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|line| line.split_once("query[")?.1.split_whitespace().nth(1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_only_the_policys_spelling() {
    let s = setup().await;
    let proxy = s.proxy.local_addr();
    // Name::from_ascii keeps the letter case (from_str would lower it).
    let spelled = |text: &str| Name::from_ascii(text).unwrap();
    let cases = [
        ("ALLowED.EXaMplE.", RecordType::A, "198.51.100.10"),
        ("aLLOWED.examplE.", RecordType::AAAA, "2001:db8::10"),
        ("X.y.WILD.example.", RecordType::A, "198.51.100.40"),
        ("WWW.Chain.Example.", RecordType::A, "198.51.100.30"),
    ];
    for (name, qtype, address) in cases {
        let mut message = Message::new();
        message
            .set_id(0x4242)
            .set_recursion_desired(true)
            .add_query(Query::query(spelled(name), qtype));
        let bytes = ask_raw(proxy, &message.to_vec().unwrap(), Duration::from_secs(5))
            .await
            .expect("no answer");
        let answer = Message::from_vec(&bytes).unwrap();
        assert_eq!(answer.response_code(), ResponseCode::NoError, "{name}");
        assert_eq!(addresses(&answer), [address], "{name}");
        // The client gets its question back as it asked it, and so are
        // the records owned by that name.
        assert_eq!(answer.queries()[0].name().to_ascii(), name);
        assert_eq!(answer.answers()[0].name().to_ascii(), name);
    }
    // A marker query shows the log is up to date.
    ask(proxy, "marker.allowed.example.", RecordType::A).await;
    let log = s.dnsmasq.log_after("marker.allowed.example");
    assert_eq!(
        logged_names(&log),
        [
            "allowed.example",
            "allowed.example",
            "x.y.wild.example",
            "www.chain.example",
            "marker.allowed.example"
        ],
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_names_never_reach_upstream() {
    let s = setup().await;
    let proxy = s.proxy.local_addr();
    let tunnel = format!("{}.exfil.example.", "d4t4".repeat(15));
    let cases = [
        ("unlisted.example.", RecordType::A),
        ("unlisted.example.", RecordType::TXT),
        ("wild.example.", RecordType::A),
        ("evilallowed.example.", RecordType::A),
        ("secret.example.", RecordType::A),
        (tunnel.as_str(), RecordType::A),
        (tunnel.as_str(), RecordType::TXT),
    ];
    for (name, qtype) in cases {
        let answer = ask(proxy, name, qtype).await;
        assert_eq!(answer.response_code(), ResponseCode::Refused, "{name} {qtype}");
        assert!(answer.answers().is_empty());
    }
    // Allowed name, type not served: empty, not forwarded either.
    let answer = ask(proxy, "allowed.example.", RecordType::TXT).await;
    assert_eq!(answer.response_code(), ResponseCode::NoError);
    assert!(answer.answers().is_empty());

    // A marker query shows the log is up to date, then nothing else is in it.
    ask(proxy, "marker.allowed.example.", RecordType::A).await;
    let log = s.dnsmasq.log_after("marker.allowed.example");
    let queries: Vec<&str> = log.lines().filter(|l| l.contains("query[")).collect();
    assert_eq!(queries.len(), 1, "{log}");
    for needle in ["unlisted", "exfil", "d4t4", "secret", "evil", "TXT"] {
        assert!(!log.contains(needle), "{needle} reached upstream:\n{log}");
    }
    assert!(s.recorder.learned.lock().unwrap().is_empty());

    let events = s.recorder.events.lock().unwrap();
    assert_eq!(events.len(), cases.len() + 2);
    let EgressEvent::DnsQuery(first) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (first.name.as_str(), first.qtype.as_str(), first.rcode.as_str()),
        ("unlisted.example", "A", "REFUSED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_addresses_are_withheld() {
    let s = setup().await;
    let answer = ask(s.proxy.local_addr(), "meta.example.", RecordType::A).await;
    assert_eq!(answer.response_code(), ResponseCode::NoError);
    assert!(addresses(&answer).is_empty());
    assert!(s.recorder.learned.lock().unwrap().is_empty());
    let events = s.recorder.events.lock().unwrap();
    let EgressEvent::DnsQuery(event) = &events[0] else {
        panic!("{events:?}")
    };
    assert!(
        event.reason.as_deref().unwrap().contains("169.254.169.254"),
        "{event:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_do_not_stop_the_proxy() {
    let s = setup().await;
    let proxy = s.proxy.local_addr();
    let garbage = [
        0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0xc0, 0x0c,
    ];
    let formerr =
        Message::from_vec(&ask_raw(proxy, &garbage, Duration::from_secs(5)).await.unwrap()).unwrap();
    assert_eq!(
        (formerr.id(), formerr.response_code()),
        (0xabcd, ResponseCode::FormErr)
    );
    // Runts, responses and oversized packets get no answer at all.
    assert!(ask_raw(proxy, b"hi", QUIET).await.is_none());
    let mut response = query("allowed.example.", RecordType::A);
    response[2] |= 0x80;
    assert!(ask_raw(proxy, &response, QUIET).await.is_none());
    assert!(ask_raw(proxy, &[0u8; 5000], QUIET).await.is_none());
    // Still serving.
    let answer = ask(proxy, "allowed.example.", RecordType::A).await;
    assert_eq!(addresses(&answer), ["198.51.100.10"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_queries_are_served() {
    let s = setup().await;
    let mut stream = TcpStream::connect(s.proxy.local_addr()).await.unwrap();
    for (name, code) in [
        ("allowed.example.", ResponseCode::NoError),
        ("unlisted.example.", ResponseCode::Refused),
    ] {
        let bytes = query(name, RecordType::A);
        stream.write_u16(bytes.len() as u16).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut answer = vec![0; usize::from(len)];
        stream.read_exact(&mut answer).await.unwrap();
        let answer = Message::from_vec(&answer).unwrap();
        assert_eq!(answer.response_code(), code, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_means_servfail() {
    // A bound socket that never answers.
    let silent = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let network: EffectiveNetwork = serde_json::from_value(
        serde_json::json!({"allow": [{"domain": "allowed.example"}], "deny": [], "always_deny": []}),
    )
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut config = DnsProxyConfig::new(vec![silent.local_addr().unwrap()]);
    config.upstream_timeout = Duration::from_millis(200);
    let proxy = DnsProxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        config,
        DnsPolicy::from_network(&network),
        recorder.clone(),
        recorder.clone(),
    )
    .await
    .unwrap();
    let answer = ask(proxy.local_addr(), "allowed.example.", RecordType::A).await;
    assert_eq!(answer.response_code(), ResponseCode::ServFail);
    assert!(recorder.learned.lock().unwrap().is_empty());
}
