//! `skillbox run` of a skill whose policy allows egress, on the fake
//! internet: `skillbox run` itself runs in the fake "node" namespace (as it
//! would on a node), the sandbox gets its own namespace behind the node's
//! enforcement, and after the run nothing of it is left.

use std::path::Path;
use std::time::Duration;

use skillbox_egress::netns::{Forwarding, NetnsName, SystemRunner};
use skillbox_test_support::events::connection_events;
use skillbox_test_support::fake_internet::{netns_list, FakeInternet, DNS_SERVER, NODE_ADDRESS, NODE_UPLINK};
use skillbox_test_support::pool::TestPool;
use skillbox_test_support::{
    busybox_rootfs, must, require_sandbox_prerequisites, run_with_watchdog, Cli, Output, Skill,
};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

/// Resolves through the proxy, then tries each destination; every line
/// says what happened.
const PROBE: &str = r#"exec 2>&1
fetch() { printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$1" "$2" 2>/dev/null | tail -1 | grep -q fake-internet && echo "$3: reached" || echo "$3: refused"; }
addr=$(nslookup allowed.example 2>/dev/null | awk '/^Address: 203/ {print $2}')
echo "allowed.example resolves to $addr"
fetch "$addr" 8080 "allowed name, allowed port"
fetch 203.0.113.10 8081 "allowed address, other port"
fetch 203.0.113.11 8080 "denied address inside the allowed cidr"
fetch 198.51.100.20 8080 "address no allowed name resolved to"
fetch 169.254.169.254 80 "cloud metadata"
fetch 168.63.129.16 80 "azure wireserver"
fetch 161.26.0.10 80 "ibm cloud service network"
fetch 198.18.0.2 8080 "the node's own address"
nslookup other.example >/dev/null 2>&1 && echo "other.example: resolved" || echo "other.example: not resolved"
nslookup -type=TXT k9q2x7f3.exfil.example >/dev/null 2>&1 && echo "exfil: resolved" || echo "exfil: not resolved"
"#;

const POLICY: &str = "  resources: { cpus: 0.5, memory: 128Mi, pids: 16, timeout: 60s }
  network:
    allow:
      - { domain: allowed.example, ports: [8080] }
      - { cidr: 203.0.113.0/24, ports: [8080] }
      - { cidr: 0.0.0.0/0, ports: [80] }
    deny:
      - { cidr: 203.0.113.11/32 }
";

/// What [`PROBE`] prints under [`POLICY`] when the policy held.
const PROBE_HELD: [&str; 11] = [
    "allowed.example resolves to 203.0.113.10",
    "allowed name, allowed port: reached",
    "allowed address, other port: refused",
    "denied address inside the allowed cidr: refused",
    "address no allowed name resolved to: refused",
    "cloud metadata: refused",
    "azure wireserver: refused",
    "ibm cloud service network: refused",
    "the node's own address: refused",
    "other.example: not resolved",
    "exfil: not resolved",
];

/// Servers where [`POLICY`] must not let the skill in: without the
/// always-denied ranges and the node rules, `0.0.0.0/0` port 80 would
/// reach the metadata service and the node's address would answer; cloud
/// platform endpoints on public addresses (Azure's WireServer, IBM Cloud's
/// service network) are closed by the built-in list too.
fn serve_what_the_probe_must_not_reach(fake: &mut FakeInternet) {
    fake.serve_http_in_internet("169.254.169.254", 80);
    fake.serve_http_in_internet("168.63.129.16", 80);
    fake.serve_http_in_internet("161.26.0.10", 80);
    fake.serve_http_on_node(NODE_ADDRESS, 8080);
}

#[test]
fn skillbox_run_gives_a_skill_exactly_the_egress_its_policy_declares() {
    require_sandbox_prerequisites();
    let mut fake = FakeInternet::start("run");
    let node = NetnsName::new(&fake.node).unwrap();
    // The node forwards from its uplink (sandboxes get their own veth's).
    let uplink = Forwarding::enable(Box::new(SystemRunner), Some(node.clone()), NODE_UPLINK).unwrap();
    serve_what_the_probe_must_not_reach(&mut fake);
    let skill = Skill::sh("egress-run", POLICY, PROBE);
    let work = tempfile::tempdir().unwrap();
    let (report, events) = (work.path().join("report.json"), work.path().join("egress.jsonl"));
    let mut command = fake.node_command(SKILLBOX.path());
    command
        .arg("run")
        .arg("--base-rootfs")
        .arg(busybox_rootfs())
        .args(["--dns-upstream", DNS_SERVER])
        .arg("--egress-log")
        .arg(&events)
        .arg("--report")
        .arg(&report)
        .arg(skill.path());
    let output = run_with_watchdog(command, Duration::from_secs(90));
    assert_eq!(output.code, 0, "{}", output.describe());
    let text = &output.stdout;
    for line in PROBE_HELD {
        assert!(text.contains(line), "missing {line:?}:\n{}", output.describe());
    }

    let asked = fake.dns_log();
    assert!(
        asked.contains(&format!("query[A] allowed.example from {NODE_ADDRESS}")),
        "{asked}"
    );
    assert!(
        !asked.contains("other.example") && !asked.contains("k9q2x7f3"),
        "a refused name reached upstream:\n{asked}"
    );
    let logged = std::fs::read_to_string(&events).unwrap();
    assert!(
        logged.contains("\"allowed.example") && logged.contains("k9q2x7f3") && logged.contains("\"refused\""),
        "{logged}"
    );
    // Each connection attempt is a `connection` event naming the rule that
    // decided. allowed.example's address is in the allowed CIDR too, whose
    // rule comes first in the table, so that rule names the connection.
    let connections = connection_events(&logged);
    for (expected, times) in [
        (
            "203.0.113.10 8080 tcp allowed allow: cidr 203.0.113.0/24 ports 8080",
            Some(1),
        ),
        ("203.0.113.10 8081 tcp denied default-deny", Some(1)),
        (
            "203.0.113.11 8080 tcp denied deny: cidr 203.0.113.11/32 (all ports)",
            Some(1),
        ),
        ("198.51.100.20 8080 tcp denied default-deny", Some(1)),
        (
            "169.254.169.254 80 tcp denied always-deny: cidr 169.254.0.0/16",
            Some(1),
        ),
        (
            "168.63.129.16 80 tcp denied always-deny: cidr 168.63.129.16/32",
            Some(1),
        ),
        (
            "161.26.0.10 80 tcp denied always-deny: cidr 161.26.0.0/16",
            Some(1),
        ),
        // Dropped, not refused: one event per SYN the client sends.
        ("198.18.0.2 8080 tcp denied node: the node is unreachable", None),
    ] {
        let seen = connections.iter().filter(|c| *c == expected).count();
        match times {
            Some(times) => assert_eq!(seen, times, "{expected:?} in:\n{logged}"),
            None => assert!(seen >= 1, "{expected:?} missing:\n{logged}"),
        }
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["egress_log"], events.display().to_string());
    let execution = report["execution_id"].as_str().unwrap();
    for line in logged.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["execution_id"], execution, "{line}");
        assert_eq!(event["skill"]["name"], "egress-run", "{line}");
    }

    // Nothing of the sandbox's network is left in the node.
    let short = &execution[execution.len() - 16..];
    assert!(
        !netns_list().iter().any(|name| name.contains(short)),
        "namespace left behind: {:?}",
        netns_list()
    );
    assert_node_clean(&fake);
    drop(uplink);
}

// ---------------------------------------------------------------------------
// More egress cases. Each runs `skillbox run` in the fake node, as
// above, and checks afterwards that nothing of the sandbox is left.

/// `fetch ADDRESS PORT` prints `reached` when the fake internet's HTTP
/// server answered, else `refused`; `resolve NAME` prints the first
/// address of NAME's answer (through the proxy), or nothing.
const SHELL_HELPERS: &str = r#"exec 2>&1
fetch() { printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$1" "$2" 2>/dev/null | tail -1 | grep -q fake-internet && echo reached || echo refused; }
resolve() { nslookup "$1" 2>/dev/null | awk '/^Name:/ {n=1} n && /^Address: / {print $2; exit}'; }
"#;

/// A fake internet whose node forwards from its uplink, as in the first test.
fn node_with_forwarding(fake: &FakeInternet) -> Forwarding {
    let node = NetnsName::new(&fake.node).unwrap();
    Forwarding::enable(Box::new(SystemRunner), Some(node), NODE_UPLINK).unwrap()
}

/// What one `skillbox run` left: its output, report and egress events.
struct Run {
    output: Output,
    report: serde_json::Value,
    events: String,
}

/// The `skillbox run` command for `skill` in the fake node.
fn run_command(fake: &FakeInternet, skill: &Skill, work: &Path) -> std::process::Command {
    let mut command = fake.node_command(SKILLBOX.path());
    command
        .arg("run")
        .arg("--base-rootfs")
        .arg(busybox_rootfs())
        .args(["--dns-upstream", DNS_SERVER])
        .arg("--egress-log")
        .arg(work.join("egress.jsonl"))
        .arg("--report")
        .arg(work.join("report.json"))
        .arg(skill.path());
    command
}

/// Runs `command` (from [`run_command`] with `work`) and collects the
/// results, failing the test unless the skill exited 0.
fn finish_run(command: std::process::Command, work: &Path) -> Run {
    let output = run_with_watchdog(command, Duration::from_secs(90));
    assert_eq!(output.code, 0, "{}", output.describe());
    let report = std::fs::read_to_string(work.join("report.json"))
        .unwrap_or_else(|err| panic!("no report ({err}):\n{}", output.describe()));
    Run {
        report: serde_json::from_str(&report).unwrap(),
        events: std::fs::read_to_string(work.join("egress.jsonl")).unwrap_or_default(),
        output,
    }
}

impl Run {
    /// Fails unless the skill printed every one of `lines`.
    fn expect_lines(&self, lines: &[&str]) {
        for line in lines {
            assert!(
                self.output.stdout.lines().any(|printed| printed == *line),
                "missing {line:?}:\n{}",
                self.output.describe()
            );
        }
    }

    fn execution_id(&self) -> &str {
        self.report["execution_id"].as_str().unwrap()
    }
}

/// Fails if a `skillbox-*` nftables table or a veth `sbxv*` is left in the
/// fake node (its namespace is one test's alone).
fn assert_node_clean(fake: &FakeInternet) {
    let ruleset = must(&["ip", "netns", "exec", &fake.node, "nft", "list", "ruleset"]);
    assert!(
        !ruleset.contains("skillbox-") && !ruleset.contains("skillbox_nat"),
        "nftables left behind:\n{ruleset}"
    );
    let links = must(&["ip", "-n", &fake.node, "-o", "link"]);
    assert!(!links.contains("sbxv"), "veth left behind:\n{links}");
}

/// Fails if anything of the sandbox networks of `runs` is left: their
/// namespaces, a veth `sbxv*` or a `skillbox-*` nftables table in the node.
fn assert_nothing_left(fake: &FakeInternet, runs: &[&Run]) {
    let namespaces = netns_list();
    for run in runs {
        let execution = run.execution_id();
        let short = &execution[execution.len() - 16..];
        assert!(
            !namespaces.iter().any(|name| name.contains(short)),
            "namespace of {execution} left behind: {namespaces:?}"
        );
    }
    assert_node_clean(fake);
}

/// A skill that, for about 12 s, resolves `own` through its proxy and
/// fetches from its address, then fetches from `foreign` (an address it
/// never resolves), once a second; each line is `<epoch s> own|foreign
/// <address> reached|refused`.
fn learner_script(own: &str, foreign: &str) -> String {
    format!(
        r#"{SHELL_HELPERS}end=$(( $(date +%s) + 12 ))
while [ "$(date +%s)" -lt "$end" ]; do
  addr=$(resolve {own})
  echo "$(date +%s) own $addr $(fetch "$addr" 8080)"
  echo "$(date +%s) foreign {foreign} $(fetch {foreign} 8080)"
  sleep 1
done
"#
    )
}

/// The `(epoch s, address, verdict)` of each `own`/`foreign` line.
fn attempts<'a>(text: &'a str, kind: &str) -> Vec<(u64, &'a str, &'a str)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [time, k, addr, verdict] if k == kind => Some((time.parse().ok()?, addr, verdict)),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn skillbox_run_an_address_another_sandbox_resolved_stays_closed() {
    require_sandbox_prerequisites();
    let fake = FakeInternet::start("learn");
    let _uplink = node_with_forwarding(&fake);
    let policy = |name: &str| {
        format!(
            "  resources: {{ cpus: 0.5, memory: 128Mi, pids: 16, timeout: 60s }}
  network:
    allow:
      - {{ domain: {name}, ports: [8080] }}
"
        )
    };
    // A learns 203.0.113.10 (allowed.example) and B 198.51.100.20
    // (other.example), at the same time in the same node; each tries the
    // other's address without resolving its name.
    let a = Skill::sh(
        "egress-learner-a",
        &policy("allowed.example"),
        &learner_script("allowed.example", "198.51.100.20"),
    );
    let b = Skill::sh(
        "egress-learner-b",
        &policy("other.example"),
        &learner_script("other.example", "203.0.113.10"),
    );
    let (work_a, work_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (command_a, command_b) = (
        run_command(&fake, &a, work_a.path()),
        run_command(&fake, &b, work_b.path()),
    );
    let started = std::time::Instant::now();
    let (path_a, path_b) = (work_a.path().to_owned(), work_b.path().to_owned());
    let thread_a = std::thread::spawn(move || finish_run(command_a, &path_a));
    let thread_b = std::thread::spawn(move || finish_run(command_b, &path_b));
    let (run_a, run_b) = (thread_a.join().unwrap(), thread_b.join().unwrap());
    eprintln!("both runs took {:?}", started.elapsed());

    for (run, own_address, other) in [
        (&run_a, "203.0.113.10", &run_b),
        (&run_b, "198.51.100.20", &run_a),
    ] {
        let text = &run.output.stdout;
        let own = attempts(text, "own");
        let foreign = attempts(text, "foreign");
        assert!(
            own.len() >= 3 && foreign.len() >= 3,
            "too few attempts:\n{}",
            run.output.describe()
        );
        assert!(
            own.iter()
                .all(|&(_, addr, verdict)| addr == own_address && verdict == "reached"),
            "its own allowed name's address was not reached every time:\n{}",
            run.output.describe()
        );
        assert!(
            foreign.iter().all(|&(_, _, verdict)| verdict == "refused"),
            "reached an address only the other sandbox resolved:\n{}\nthe other:\n{}",
            run.output.describe(),
            other.output.describe()
        );
        // The attempts happened while the other sandbox had that address
        // in its table (it re-resolves every second; entries last 10 s).
        let (first, last) = (
            attempts(&other.output.stdout, "own").first().unwrap().0,
            attempts(&other.output.stdout, "own").last().unwrap().0,
        );
        assert!(
            foreign.iter().any(|&(time, _, _)| first <= time && time <= last),
            "the runs did not overlap:\n{}\nthe other:\n{}",
            run.output.describe(),
            other.output.describe()
        );
    }
    let asked = fake.dns_log();
    assert!(
        asked.contains("query[A] allowed.example") && asked.contains("query[A] other.example"),
        "{asked}"
    );
    assert_nothing_left(&fake, &[&run_a, &run_b]);
}

/// The `printf` argument for one DNS-over-TCP query (length prefix, id
/// 0x1234, recursion desired, one A question) for `<label>.example`.
fn tcp_dns_query(label: &str) -> String {
    assert!(label.len() < 64 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for part in [label, "example"] {
        message.push(part.len() as u8);
        message.extend_from_slice(part.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend(message);
    framed
        .iter()
        .map(|&byte| {
            if byte.is_ascii_alphanumeric() || byte == b'-' {
                (byte as char).to_string()
            } else {
                format!("\\{byte:03o}")
            }
        })
        .collect()
}

/// The UDP port of the listener that must hear nothing from the sandbox.
const UDP_PORT: u16 = 5353;

#[test]
fn skillbox_run_dns_goes_only_to_the_proxy_and_no_udp_leaves() {
    require_sandbox_prerequisites();
    let mut fake = FakeInternet::start("udp");
    let _uplink = node_with_forwarding(&fake);
    fake.start_udp_listener(DNS_SERVER, UDP_PORT);
    // Every TCP destination allowed, so only the DNS and UDP rules can
    // stop what follows.
    let policy = "  resources: { cpus: 0.5, memory: 128Mi, pids: 16, timeout: 60s }
  network:
    allow:
      - { cidr: 0.0.0.0/0 }
";
    let script = format!(
        r#"{SHELL_HELPERS}echo "tcp to an allowed address: $(fetch 203.0.113.10 8080)"
nslookup allowed.example {DNS_SERVER} >/dev/null 2>&1 && echo "dns to another resolver: answered" || echo "dns to another resolver: failed"
printf '{query}' | nc -w 3 {DNS_SERVER} 53 | wc -c | sed 's/^ */dns over tcp to another resolver: bytes /'
nslookup -port={UDP_PORT} sandbox-nslookup.example {DNS_SERVER} >/dev/null 2>&1; echo "udp to port {UDP_PORT}: sent"
timeout 5 tftp -g -r sandbox-tftp -l /tmp/tftp {DNS_SERVER} {UDP_PORT} >/dev/null 2>&1; echo "tftp to port {UDP_PORT}: sent"
"#,
        query = tcp_dns_query("sandbox-tcp"),
    );
    let skill = Skill::sh("egress-udp", policy, &script);
    let work = tempfile::tempdir().unwrap();
    let run = finish_run(run_command(&fake, &skill, work.path()), work.path());
    run.expect_lines(&[
        "tcp to an allowed address: reached",
        "dns to another resolver: failed",
        "dns over tcp to another resolver: bytes 0",
    ]);

    // The same probes from the node itself do arrive: the probes work, and
    // only the sandbox's table stopped them.
    let busybox = busybox_rootfs().join("bin/busybox");
    let busybox = busybox.to_str().unwrap();
    let control = format!(
        "{busybox} nslookup cdn.example {DNS_SERVER} >/dev/null 2>&1
printf '{query}' | {busybox} nc -w 3 {DNS_SERVER} 53 >/dev/null
{busybox} nslookup -port={UDP_PORT} node-nslookup.example {DNS_SERVER} >/dev/null 2>&1
{busybox} timeout 5 {busybox} tftp -g -r node-tftp -l /dev/null {DNS_SERVER} {UDP_PORT} >/dev/null 2>&1
true",
        query = tcp_dns_query("node-tcp"),
    );
    let mut command = fake.node_command(busybox);
    command.args(["sh", "-c", &control]);
    let controlled = run_with_watchdog(command, Duration::from_secs(30));
    assert_eq!(controlled.code, 0, "{}", controlled.describe());

    let asked = fake.dns_log();
    for heard in ["query[A] cdn.example from", "query[A] node-tcp.example from"] {
        assert!(asked.contains(heard), "control {heard:?} missing:\n{asked}");
    }
    for not_heard in ["allowed.example", "sandbox-tcp"] {
        assert!(
            !asked.contains(not_heard),
            "the sandbox's direct query for {not_heard} reached the resolver:\n{asked}"
        );
    }
    let datagrams = fake.udp_log(DNS_SERVER, UDP_PORT);
    for heard in ["node-nslookup", "node-tftp"] {
        assert!(
            datagrams.contains(heard),
            "control {heard:?} missing:\n{datagrams}"
        );
    }
    assert!(
        !datagrams.contains("sandbox-"),
        "a datagram from the sandbox arrived:\n{datagrams}"
    );
    assert_nothing_left(&fake, &[&run]);
}

#[test]
fn skillbox_run_a_learned_address_closes_after_ttl_and_grace() {
    require_sandbox_prerequisites();
    // dnsmasq answers with a TTL of 2 s; skillbox adds a grace of 1 s.
    let fake = FakeInternet::start_with_dns_ttl("ttl", Some(2));
    let _uplink = node_with_forwarding(&fake);
    let policy = "  resources: { cpus: 0.5, memory: 128Mi, pids: 16, timeout: 60s }
  network:
    allow:
      - { domain: allowed.example, ports: [8080] }
";
    let script = format!(
        r#"{SHELL_HELPERS}addr=$(resolve allowed.example)
echo "resolved: $addr"
echo "right after resolving: $(fetch "$addr" 8080)"
sleep 6
echo "after ttl and grace: $(fetch "$addr" 8080)"
addr=$(resolve allowed.example)
echo "after resolving again: $(fetch "$addr" 8080)"
"#
    );
    let skill = Skill::sh("egress-ttl", policy, &script);
    let work = tempfile::tempdir().unwrap();
    let mut command = run_command(&fake, &skill, work.path());
    command.env("SKILLBOX_EGRESS_TTL_GRACE", "1");
    let run = finish_run(command, work.path());
    run.expect_lines(&[
        "resolved: 203.0.113.10",
        "right after resolving: reached",
        "after ttl and grace: refused",
        "after resolving again: reached",
    ]);
    assert!(
        run.events.contains("\"ttl\":2"),
        "the answer's TTL was not 2 s:\n{}",
        run.events
    );
    assert_nothing_left(&fake, &[&run]);
}

#[test]
fn skillbox_run_ipv6_to_an_unlisted_destination_is_blocked() {
    require_sandbox_prerequisites();
    let fake = FakeInternet::start("ipv6");
    let _uplink = node_with_forwarding(&fake);
    // The node itself reaches the IPv6 server: the path exists.
    assert!(fake.node_can_connect("2001:db8::10".parse().unwrap(), 8080));
    let policy = "  resources: { cpus: 0.5, memory: 128Mi, pids: 16, timeout: 60s }
  network:
    allow:
      - { domain: allowed.example, ports: [8080] }
";
    let script = format!(
        r#"{SHELL_HELPERS}echo "ipv4, allowed name: $(fetch "$(resolve allowed.example)" 8080)"
echo "ipv6, unlisted: $(fetch 2001:db8::10 8080)"
echo "--- ipv6 inside the sandbox"
ip -6 addr; ip -6 route
"#
    );
    let skill = Skill::sh("egress-ipv6", policy, &script);
    let work = tempfile::tempdir().unwrap();
    let run = finish_run(run_command(&fake, &skill, work.path()), work.path());
    run.expect_lines(&["ipv4, allowed name: reached", "ipv6, unlisted: refused"]);
    let served = fake.http_log("2001:db8::10");
    assert!(
        !served.contains("GET"),
        "the IPv6 server got a request:\n{served}"
    );
    assert_nothing_left(&fake, &[&run]);
}

/// Where a `skillbox run` is SIGKILLed in [`a_sigkilled_run_leaves_nothing_once_gc_or_the_next_run_collects`].
#[derive(Debug, Clone, Copy)]
enum KillStage {
    /// Everything is prepared (network, firewall, cgroup, audit socket)
    /// and runsc is being started: a stand-in runsc that never returns.
    BeforeRunsc,
    /// The skill runs in a real sandbox, with egress and audit.
    SkillRunning,
}

/// What a killed run with execution id `id` may leave; empty once clean.
fn left_by(fake: &FakeInternet, state: &Path, id: &str) -> Vec<String> {
    let short = &id[id.len() - 16..];
    let mut left: Vec<String> = netns_list()
        .into_iter()
        .filter(|name| name.contains(short))
        .map(|name| format!("network namespace {name}"))
        .collect();
    // The node namespace is this test's alone: any table of ours is the run's.
    let ruleset = must(&["ip", "netns", "exec", &fake.node, "nft", "list", "ruleset"]);
    if ruleset.contains("skillbox-") || ruleset.contains("skillbox_nat") {
        left.push(format!("nftables:\n{ruleset}"));
    }
    let links = must(&["ip", "-n", &fake.node, "-o", "link"]);
    if links.contains("sbxv") {
        left.push(format!("veth:\n{links}"));
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(Result::ok)
    {
        for cgroup in [
            hierarchy.path().join("skillbox").join(id),
            hierarchy.path().join(id),
        ] {
            if cgroup.exists() {
                left.push(format!("cgroup {}", cgroup.display()));
            }
        }
    }
    let audit_files: Vec<String> = std::fs::read_dir("/run/skillbox/audit")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(short))
                .collect()
        })
        .unwrap_or_default();
    left.extend(audit_files.into_iter().map(|name| format!("audit file {name}")));
    let dirs: Vec<String> = std::fs::read_dir(state)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    left.extend(dirs.into_iter().map(|dir| format!("execution directory {dir}")));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    left.extend(
        mounts
            .lines()
            .filter(|line| line.contains(&state.display().to_string()))
            .map(|line| format!("mount {line}")),
    );
    let processes =
        skillbox_test_support::sandbox::processes_mentioning(&state.display().to_string(), Some(id));
    left.extend(processes.into_iter().map(|process| format!("process {process}")));
    left
}

/// The execution id of the one run recorded under `state`.
fn recorded_execution(state: &Path) -> String {
    let dir = std::fs::read_dir(state)
        .unwrap()
        .filter_map(Result::ok)
        .next()
        .expect("the run made its execution directory");
    let record = std::fs::read_to_string(dir.path().join("skillbox-sandbox.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    record["id"].as_str().unwrap().to_owned()
}

/// Starts `skillbox run` of a long skill with egress and audit, SIGKILLs
/// it at `stage`, and returns its execution id.
fn kill_run_at(fake: &FakeInternet, state: &Path, work: &Path, stage: KillStage) -> String {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let policy = "  resources: { timeout: 60s }
  network:
    allow:
      - { domain: allowed.example, ports: [8080] }
  audit: { syscalls: security }
";
    let skill = Skill::sh("killed-run", policy, "echo started\nsleep 60\n");
    let mut command = run_command(fake, &skill, work);
    command.env("SKILLBOX_STATE_DIR", state);
    let marker = work.join("runsc-started");
    if let KillStage::BeforeRunsc = stage {
        let stand_in = work.join("runsc");
        std::fs::write(
            &stand_in,
            "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'runsc version 0.0~20221219.0'; exit 0; }\n\
             touch \"$SKILLBOX_TEST_MARKER\"\nwhile :; do sleep 0.2; done\n",
        )
        .unwrap();
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
        command
            .env("SKILLBOX_RUNSC", &stand_in)
            .env("SKILLBOX_TEST_MARKER", &marker);
    }
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    match stage {
        KillStage::BeforeRunsc => {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !marker.exists() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the stand-in runsc never started"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        KillStage::SkillRunning => {
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line, "started\n", "the skill did not start");
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    recorded_execution(state)
}

#[test]
fn a_sigkilled_run_leaves_nothing_once_gc_or_the_next_run_collects() {
    require_sandbox_prerequisites();
    let fake = FakeInternet::start("kill9");
    let _uplink = node_with_forwarding(&fake);
    for stage in [KillStage::BeforeRunsc, KillStage::SkillRunning] {
        let work = tempfile::tempdir().unwrap();
        let state = work.path().join("state");
        let id = kill_run_at(&fake, &state, work.path(), stage);
        // What a killed run leaves is real: the collectors have work.
        let left = left_by(&fake, &state, &id);
        assert!(
            left.iter().any(|thing| thing.starts_with("network namespace"))
                && left.iter().any(|thing| thing.starts_with("cgroup"))
                && left.iter().any(|thing| thing.starts_with("audit file")),
            "{stage:?}: a killed run should leave its sandbox: {left:#?}"
        );
        let next_skill = Skill::sh("after-kill", "", "true\n");
        let collector = match stage {
            KillStage::BeforeRunsc => {
                let mut gc = fake.node_command(SKILLBOX.path());
                gc.arg("gc").env("SKILLBOX_STATE_DIR", &state);
                gc
            }
            // The next run collects before it starts.
            KillStage::SkillRunning => {
                let mut next = fake.node_command(SKILLBOX.path());
                next.arg("run")
                    .arg("--base-rootfs")
                    .arg(busybox_rootfs())
                    .arg(next_skill.path())
                    .env("SKILLBOX_STATE_DIR", &state);
                next
            }
        };
        let output = run_with_watchdog(collector, Duration::from_secs(60));
        assert_eq!(output.code, 0, "{stage:?}: {}", output.describe());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = left_by(&fake, &state, &id);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{stage:?}: left after collection: {left:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn skillbox_run_through_the_pool_gets_the_same_egress_and_leaves_nothing() {
    require_sandbox_prerequisites();
    let mut fake = FakeInternet::start("pool");
    let uplink = node_with_forwarding(&fake);
    serve_what_the_probe_must_not_reach(&mut fake);
    let skill = Skill::sh("egress-pooled", POLICY, PROBE);
    let work = tempfile::tempdir().unwrap();
    // The pool and its runs share one node config: upstream and audit log
    // come from it (a run that overrides them is not served by the pool).
    let node_config = work.path().join("node.toml");
    let audit_dir = work.path().join("audit");
    std::fs::write(
        &node_config,
        format!(
            "[egress]\ndns_upstreams = [\"{DNS_SERVER}\"]\n[audit]\nlog_dir = \"{}\"\n",
            audit_dir.display()
        ),
    )
    .unwrap();
    let pool = TestPool::start_with(
        SKILLBOX,
        fake.node_command(SKILLBOX.path()),
        &[
            "--warm".as_ref(),
            skill.path().as_os_str(),
            "--base-rootfs".as_ref(),
            busybox_rootfs().as_os_str(),
            "--node-config".as_ref(),
            node_config.as_os_str(),
        ],
    );
    pool.wait_ready(2);
    let report_path = work.path().join("report.json");
    let mut command = fake.node_command(SKILLBOX.path());
    command
        .arg("run")
        .arg("--base-rootfs")
        .arg(busybox_rootfs())
        .arg("--node-config")
        .arg(&node_config)
        .arg("--pool")
        .arg(pool.socket())
        .arg("--report")
        .arg(&report_path)
        .arg(skill.path())
        .env("SKILLBOX_STATE_DIR", pool.state_dir());
    let output = run_with_watchdog(command, Duration::from_secs(90));
    assert_eq!(output.code, 0, "{}\n{}", output.describe(), pool.log());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["pooled"], true, "{}\n{}", output.describe(), pool.log());
    for line in PROBE_HELD {
        assert!(
            output.stdout.contains(line),
            "missing {line:?}:\n{}",
            output.describe()
        );
    }
    let logged = std::fs::read_to_string(report["audit_log"].as_str().unwrap()).unwrap();
    let connections = connection_events(&logged);
    assert!(
        connections
            .contains(&"203.0.113.10 8080 tcp allowed allow: cidr 203.0.113.0/24 ports 8080".to_owned()),
        "{logged}"
    );
    // The ready sandboxes' networks wait in the node until the pool stops.
    pool.wait_ready(2);
    let ready: Vec<String> = std::fs::read_dir(pool.state_dir())
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let id = name.split('.').next()?.to_owned();
            id.starts_with("egress-pooled-")
                .then(|| id[id.len() - 16..].to_owned())
        })
        .collect();
    assert_eq!(ready.len(), 2, "{ready:?}");
    assert!(netns_list().iter().any(|name| name.contains(&ready[0])));
    pool.stop();
    assert_node_clean(&fake);
    assert!(
        !netns_list()
            .iter()
            .any(|name| ready.iter().any(|id| name.contains(id))),
        "namespaces left: {:?}",
        netns_list()
    );
    drop(uplink);
}
