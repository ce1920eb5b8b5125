use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use super::*;

/// Records every command; fails those whose argv contains `fail_on` with
/// the given stderr.
#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<(String, String)>>>,
}

impl Recorder {
    fn fail(&self, argv_contains: &str, stderr: &str) {
        self.failures
            .lock()
            .unwrap()
            .push((argv_contains.to_owned(), stderr.to_owned()));
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Recorder {
    /// Logs `entry`; fails it if it contains a registered needle.
    fn record(&self, argv: &[String], entry: String) -> Result<String, NetnsError> {
        self.log.lock().unwrap().push(entry.clone());
        let failures = self.failures.lock().unwrap();
        if let Some((_, stderr)) = failures
            .iter()
            .find(|(needle, _)| entry.contains(needle.as_str()))
        {
            return Err(NetnsError::Run(RunError::Failed {
                argv: argv.to_vec(),
                netns: None,
                status: ExitStatus::from_raw(2 << 8),
                stdout: String::new(),
                stderr: stderr.clone(),
            }));
        }
        Ok(String::new())
    }
}

fn in_netns(netns: Option<&NetnsName>) -> String {
    netns.map(|ns| format!("[{ns}] ")).unwrap_or_default()
}

impl CommandRunner for Recorder {
    fn run(
        &self,
        netns: Option<&NetnsName>,
        argv: &[String],
        stdin: Option<&str>,
    ) -> Result<String, NetnsError> {
        let line = format!("{}{}", in_netns(netns), argv.join(" "));
        let entry = match stdin {
            Some(text) => format!("{line} <<{}", text.replace('\n', "⏎")),
            None => line,
        };
        self.record(argv, entry)
    }

    fn read_sysctl(&self, netns: Option<&NetnsName>, key: &str) -> Result<String, NetnsError> {
        self.record(&[], format!("{}read /proc/sys/{key}", in_netns(netns)))
    }

    fn write_sysctl(&self, netns: Option<&NetnsName>, key: &str, value: &str) -> Result<(), NetnsError> {
        self.record(&[], format!("{}write /proc/sys/{key} {value}", in_netns(netns)))
            .map(drop)
    }
}

fn config() -> NetworkConfig {
    NetworkConfig {
        outer: Some(NetnsName::new("node").unwrap()),
        ..NetworkConfig::default()
    }
}

#[test]
fn pool_slots_are_disjoint_30s_with_the_gateway_first() {
    let pool = AddressPool::default();
    assert_eq!(pool.slots(), 16384);
    let slot = pool.slot(1).unwrap();
    assert_eq!(slot.net.to_string(), "198.19.0.4/30");
    assert_eq!(slot.outer, Ipv4Addr::new(198, 19, 0, 5));
    assert_eq!(slot.inner, Ipv4Addr::new(198, 19, 0, 6));
    assert_eq!(pool.slot(16383).unwrap().net.to_string(), "198.19.255.252/30");
    assert_eq!(pool.slot(16384), None);
    assert!(AddressPool::new("10.0.0.0/31".parse().unwrap()).is_err());
}

#[test]
fn names_are_checked() {
    assert!(NetnsName::new("sbx-t-net.1_a").is_ok());
    for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
        assert!(NetnsName::new(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn create_then_remove_runs_exactly_these_commands() {
    let recorder = Recorder::default();
    let mut network = SandboxNetwork::create(
        Box::new(recorder.clone()),
        NetnsName::new("sb1").unwrap(),
        &config(),
    )
    .unwrap();
    assert_eq!(network.outer_interface(), "sbxv0");
    assert_eq!(network.namespace_path(), PathBuf::from("/var/run/netns/sb1"));
    assert_eq!(network.resolv_conf(), "nameserver 198.19.0.1\noptions ndots:1\n");
    network.remove().unwrap();
    network.remove().unwrap();
    drop(network);
    let nft = "table ip skillbox_nat_0 {}⏎delete table ip skillbox_nat_0⏎";
    assert_eq!(
        recorder.log(),
        [
            "ip netns add sb1".to_owned(),
            "ip -n node -batch - <<link add sbxv0 type veth peer name eth0 netns sb1⏎\
             addr add 198.19.0.1/30 dev sbxv0⏎link set sbxv0 up⏎"
                .to_owned(),
            "[node] write /proc/sys/net/ipv4/conf/sbxv0/forwarding 1".to_owned(),
            "ip -n sb1 -batch - <<link set lo up⏎addr add 198.19.0.2/30 dev eth0⏎link set eth0 up⏎\
             route add default via 198.19.0.1⏎"
                .to_owned(),
            format!(
                "[node] nft -f - <<{nft}table ip skillbox_nat_0 {{⏎  chain postrouting {{⏎    \
                 type nat hook postrouting priority srcnat; policy accept;⏎    \
                 ip saddr 198.19.0.2 oifname != \"sbxv0\" masquerade⏎  }}⏎}}⏎"
            ),
            format!("[node] nft -f - <<{nft}"),
            "ip -n node link del sbxv0".to_owned(),
            "ip netns del sb1".to_owned(),
        ]
    );
}

#[test]
fn a_taken_slot_is_skipped() {
    let recorder = Recorder::default();
    recorder.fail(
        "link add sbxv0 ",
        "RTNETLINK answers: File exists\nCommand failed -:1\n",
    );
    let network = SandboxNetwork::create(
        Box::new(recorder.clone()),
        NetnsName::new("sb2").unwrap(),
        &config(),
    )
    .unwrap();
    assert_eq!(network.outer_interface(), "sbxv1");
    assert_eq!(network.addresses().inner, Ipv4Addr::new(198, 19, 0, 6));
    assert!(recorder.log()[2].contains("addr add 198.19.0.5/30 dev sbxv1"));
    // The taken slot's veth is another sandbox's: never deleted.
    drop(network);
    assert!(!recorder.log().iter().any(|line| line.contains("link del sbxv0")));
}

#[test]
fn a_failure_after_link_add_still_removes_the_link() {
    let recorder = Recorder::default();
    recorder.fail(
        "link add sbxv0 ",
        "Error: ipv4: Address already assigned.\nCommand failed -:2\n",
    );
    let error = SandboxNetwork::create(
        Box::new(recorder.clone()),
        NetnsName::new("sb6").unwrap(),
        &config(),
    )
    .unwrap_err();
    assert!(matches!(error, NetnsError::SetUpLink { .. }), "{error}");
    let log = recorder.log();
    assert_eq!(
        log[log.len() - 2..],
        [
            "ip -n node link del sbxv0".to_owned(),
            "ip netns del sb6".to_owned()
        ]
    );
}

#[test]
fn a_failed_create_removes_what_it_made() {
    let recorder = Recorder::default();
    recorder.fail("route add default", "Error: Nexthop has invalid gateway.\n");
    let error = SandboxNetwork::create(
        Box::new(recorder.clone()),
        NetnsName::new("sb3").unwrap(),
        &config(),
    )
    .unwrap_err();
    assert!(matches!(error, NetnsError::SetUpLink { .. }), "{error}");
    let log = recorder.log();
    assert!(!log.iter().any(|line| line.contains("nft")), "{log:?}");
    assert_eq!(
        log[log.len() - 2..],
        [
            "ip -n node link del sbxv0".to_owned(),
            "ip netns del sb3".to_owned()
        ]
    );
}

#[test]
fn removal_tolerates_what_is_already_gone_and_reports_the_rest() {
    let recorder = Recorder::default();
    let mut network = SandboxNetwork::create(
        Box::new(recorder.clone()),
        NetnsName::new("sb4").unwrap(),
        &NetworkConfig {
            masquerade: false,
            ..config()
        },
    )
    .unwrap();
    recorder.fail("link del", "Cannot find device \"sbxv0\"\n");
    recorder.fail(
        "netns del",
        "Cannot remove namespace file: Device or resource busy\n",
    );
    let error = network.remove().unwrap_err();
    assert!(error.to_string().contains("sb4"), "{error}");
    assert!(!network.removed);
}

#[test]
fn interface_prefixes_leave_room_for_the_slot() {
    let error = SandboxNetwork::create(
        Box::new(Recorder::default()),
        NetnsName::new("sb5").unwrap(),
        &NetworkConfig {
            interface_prefix: "much-too-long".to_owned(),
            ..config()
        },
    )
    .unwrap_err();
    assert!(matches!(error, NetnsError::InvalidPrefix(_)));
}

#[test]
fn forwarding_is_restored_only_when_it_was_changed() {
    let recorder = Recorder::default();
    // The recorder answers "" to `sysctl -n`: neither "0" nor changed.
    let guard = Forwarding::enable(Box::new(recorder.clone()), None, "up0").unwrap();
    assert!(!guard.changed());
    drop(guard);
    assert_eq!(recorder.log(), ["read /proc/sys/net/ipv4/conf/up0/forwarding"]);
}
