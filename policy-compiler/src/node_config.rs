//! The node configuration (TOML) an administrator sets, shared by the CLI and
//! the shim: the ceiling every skill policy is held within, the defaults for
//! fields a skill leaves out, and how runsc is invoked.
//!
//! Every table is `deny_unknown_fields` with documented defaults, so a
//! missing file gives the safe defaults and a typo is an error naming the
//! file and the field.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use runsc_config::{Platform, PlatformChoice, RunscVersion};
use serde::{Deserialize, Serialize};

use crate::env_pass::{builtin_deny, EnvPattern};
use crate::error::{Error, Result};
use crate::manifest::{AuditLevel, PidCount};
use crate::network::Cidr;
use crate::quantity::{ByteSize, Cpus, Timeout};

/// Whether `path` is absolute, normalised (no `.`, `..`, `//`, trailing
/// `/`) and not `/` itself: a directory prefix that means what it says.
fn is_normal_directory(path: &Path) -> bool {
    use std::path::Component;
    let bytes = path.as_os_str().as_encoded_bytes();
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !bytes.ends_with(b"/")
        && !bytes.windows(2).any(|w| w == b"//")
        && path != Path::new("/")
}

/// Where the node config lives unless told otherwise.
pub const DEFAULT_NODE_CONFIG: &str = "/etc/skillbox/config.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub ceiling: Ceiling,
    pub defaults: Defaults,
    pub runsc: RunscSettings,
    pub egress: EgressSettings,
    pub audit: AuditSettings,
    pub cri: CriSettings,
}

/// What to do with a skill that asks for more than the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CeilingMode {
    /// Refuse the skill, naming the field, the value and the ceiling (default).
    #[default]
    Reject,
    /// Lower the value to the ceiling and report a warning.
    Clamp,
}

/// Upper bounds for every skill on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ceiling {
    /// Default `reject`.
    pub mode: CeilingMode,
    /// Default 2 CPUs.
    pub cpus: Cpus,
    /// Default 2Gi.
    pub memory: ByteSize,
    /// Default 256 processes.
    pub pids: PidCount,
    /// Default 10m.
    pub timeout: Timeout,
    /// Largest size of one writable directory. Default 1Gi.
    pub writable_size: ByteSize,
    /// Ranges no skill may reach, whatever it allows. Default:
    /// `BUILTIN_ALWAYS_DENY`; setting it replaces that list.
    pub always_deny: Vec<Cidr>,
    /// When set, the only domain suffixes a skill may allow. Default: unset.
    pub allowed_domain_suffixes: Option<Vec<String>>,
    /// Host directories (hostPath volumes) the containerd shim lets a
    /// container bind-mount, always read-only, besides what it allows
    /// anyway (see `CriSettings`)
    /// from, besides its own bundle directory: a bind mount whose source
    /// is elsewhere is refused. Absolute paths; a source matches when it is
    /// the directory itself or below it (whole path components). Default:
    /// none.
    pub bind_mount_sources: Vec<PathBuf>,
    /// Variable names no skill may receive through `env.pass`, as patterns
    /// (`*` is any run of characters; case is ignored). Default:
    /// `BUILTIN_ENV_PASS_DENY`, names that look like secrets; setting it
    /// replaces that list.
    pub env_pass_deny: Vec<EnvPattern>,
    /// Names that pass even though `env_pass_deny` matches them. Default: none.
    pub env_pass_allow: Vec<EnvPattern>,
}

/// Values used where a skill's policy is silent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    /// Default 0.5 CPUs.
    pub cpus: Cpus,
    /// Default 256Mi.
    pub memory: ByteSize,
    /// Default 64 processes.
    pub pids: PidCount,
    /// Default 30s.
    pub timeout: Timeout,
    /// Size of `/tmp` and of writable directories declared without a size. Default 64Mi.
    pub scratch_size: ByteSize,
}

/// How runsc is invoked on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunscSettings {
    /// Default `runsc` (looked up in PATH).
    pub binary: PathBuf,
    /// Default `auto`: systrap where the runsc has it, else ptrace, as
    /// [`RunscSettings::resolve_platform`] is told by the runtime that runs
    /// it. `kvm` only when set (it hung on this project's CI machines).
    pub platform: PlatformChoice,
    /// What `auto` resolved to for the runsc in use; ptrace until resolved.
    #[serde(skip)]
    pub resolved_platform: Option<Platform>,
}

impl RunscSettings {
    /// The platform sandboxes run on.
    pub fn platform(&self) -> Platform {
        self.platform
            .fixed()
            .or(self.resolved_platform)
            .unwrap_or(Platform::Ptrace)
    }

    /// Resolves `auto` for a runsc of `version` (a fixed choice stays).
    pub fn resolve_platform(&mut self, version: &RunscVersion) {
        self.resolved_platform = Some(version.default_platform());
    }
}

/// How egress is run for skills whose policy allows some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressSettings {
    /// Resolvers the DNS proxy forwards allowed names to. Empty (the
    /// default): the nameservers of the node's `/etc/resolv.conf`.
    pub dns_upstreams: Vec<DnsUpstream>,
    /// Added to each DNS record's TTL before an address learned from it
    /// leaves the sandbox's allowed set. Default 10s.
    pub ttl_grace: Timeout,
}

impl Default for EgressSettings {
    fn default() -> Self {
        EgressSettings {
            dns_upstreams: Vec::new(),
            ttl_grace: Timeout::from_secs(10),
        }
    }
}

/// Where kubelet and containerd's CRI plugin keep the files they bind into a
/// pod's containers (`/etc/hosts`, `/etc/resolv.conf`, `/dev/shm`,
/// `/dev/termination-log`, emptyDir and projected volumes). The shim lets a
/// container mount them only from its own pod's directories:
/// `<kubelet_root>/pods/<pod uid>/`,
/// `<containerd_root>/io.containerd.grpc.v1.cri/{sandboxes/<pod sandbox id>,containers/<container id>}/`
/// and `<containerd_state>/io.containerd.grpc.v1.cri/sandboxes/<pod sandbox id>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriSettings {
    /// kubelet's `--root-dir`. Default `/var/lib/kubelet`.
    pub kubelet_root: PathBuf,
    /// containerd's `root`. Default `/var/lib/containerd`.
    pub containerd_root: PathBuf,
    /// containerd's `state`. Default `/run/containerd`.
    pub containerd_state: PathBuf,
    /// The memory a pod's sandbox (pause) container adds to the pod's
    /// cgroup for gVisor's own kernel and gofers, on top of the sum of its
    /// containers' limits. Default 64Mi.
    pub sandbox_memory: ByteSize,
    /// The CPUs it adds likewise. Default 0.25.
    pub sandbox_cpus: Cpus,
}

impl Default for CriSettings {
    fn default() -> Self {
        CriSettings {
            kubelet_root: PathBuf::from("/var/lib/kubelet"),
            containerd_root: PathBuf::from("/var/lib/containerd"),
            containerd_state: PathBuf::from("/run/containerd"),
            sandbox_memory: ByteSize::mebibytes(64),
            sandbox_cpus: Cpus::from_millis(250),
        }
    }
}

/// The audit trail: every execution's events (lifecycle, syscalls, egress)
/// as JSON Lines, one file per execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// `<log_dir>/<execution id>.jsonl` (skillbox run),
    /// `<log_dir>/<containerd namespace>/<container id>.jsonl` (the shim).
    pub log_dir: PathBuf,
    /// A file is rotated (`.1`, `.2`, …) once it holds this much.
    pub max_file_size: ByteSize,
    /// Rotated files kept per execution.
    pub keep_files: u32,
    /// The least a skill's `audit.syscalls` gets: a skill may ask for
    /// more, never less, and a bundle's policy annotation is raised to it
    /// as well. Default `security`.
    pub min_syscalls: AuditLevel,
    /// Routine events (`syscall`, `file_open`) an execution records in
    /// full; past it, only the first of each kind is recorded and repeats
    /// are counted as `events_dropped` (source `budget`). Default 100000.
    pub event_budget: u64,
}

/// Where events go unless the node config says otherwise.
pub const DEFAULT_AUDIT_LOG_DIR: &str = "/var/log/skillbox/audit";

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            log_dir: PathBuf::from(DEFAULT_AUDIT_LOG_DIR),
            max_file_size: ByteSize::mebibytes(64),
            keep_files: 4,
            min_syscalls: AuditLevel::Security,
            event_budget: 100_000,
        }
    }
}

/// A DNS resolver: `IP` (port 53) or `IP:PORT` (`[v6]:PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsUpstream(pub SocketAddr);

impl FromStr for DnsUpstream {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        text.parse::<SocketAddr>()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map(DnsUpstream)
            .map_err(|_| format!("{text:?}: expected IP or IP:PORT ([IPv6]:PORT)"))
    }
}

impl TryFrom<String> for DnsUpstream {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        text.parse()
    }
}

impl From<DnsUpstream> for String {
    fn from(upstream: DnsUpstream) -> String {
        upstream.0.to_string()
    }
}

/// One range of the built-in always-deny list and why it is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinDeny {
    pub cidr: &'static str,
    /// What lives there that a skill must not reach; the table in
    /// docs/node-config.md says the same, and a test keeps them in step.
    pub reason: &'static str,
}

/// Built-in always-denied ranges: "this network", loopback, link-local,
/// private, carrier-grade NAT and unique-local ranges (where node,
/// cluster-internal and most cloud platform addresses live), multicast, and
/// the cloud platform endpoints outside those ranges; v4 and v6. Endpoints
/// inside a broader range are listed again on their own where an
/// administrator might open that range (CGNAT for an overlay network,
/// unique-local for a v6 cluster): a copy of this list with the range left
/// out keeps them, and the connection log names them.
pub const BUILTIN_ALWAYS_DENY: &[BuiltinDeny] = &[
    BuiltinDeny {
        cidr: "0.0.0.0/8",
        reason: "\"this network\" (RFC 1122); Linux treats 0.0.0.0 as the local host",
    },
    BuiltinDeny {
        cidr: "10.0.0.0/8",
        reason: "private (RFC 1918): nodes, pods, VPC subnets and their resolvers (AWS VPC base+2)",
    },
    BuiltinDeny {
        cidr: "100.64.0.0/10",
        reason: "shared address space (RFC 6598, CGNAT): Alibaba Cloud metadata and DNS, overlay networks",
    },
    BuiltinDeny {
        cidr: "100.100.100.200/32",
        reason: "Alibaba Cloud ECS instance metadata, named on its own inside 100.64.0.0/10",
    },
    BuiltinDeny {
        cidr: "127.0.0.0/8",
        reason: "loopback (RFC 1122)",
    },
    BuiltinDeny {
        cidr: "161.26.0.0/16",
        reason: "IBM Cloud service network: its DNS resolvers, NTP and infrastructure services, reachable only from IBM Cloud",
    },
    BuiltinDeny {
        cidr: "168.63.129.16/32",
        reason: "Azure WireServer: platform DNS, DHCP, health probes, and the VM agent's configuration and extension settings",
    },
    BuiltinDeny {
        cidr: "169.254.0.0/16",
        reason: "link-local (RFC 3927): instance metadata at 169.254.169.254 (AWS, GCP, Azure, Oracle, DigitalOcean, Hetzner, OpenStack…), AWS DNS .253 and NTP .123, ECS task metadata 169.254.170.2, Tencent Cloud metadata 169.254.0.23",
    },
    BuiltinDeny {
        cidr: "172.16.0.0/12",
        reason: "private (RFC 1918): nodes, pods, container bridges",
    },
    BuiltinDeny {
        cidr: "192.168.0.0/16",
        reason: "private (RFC 1918)",
    },
    BuiltinDeny {
        cidr: "224.0.0.0/4",
        reason: "multicast (RFC 5771)",
    },
    BuiltinDeny {
        cidr: "::/128",
        reason: "the unspecified address (RFC 4291)",
    },
    BuiltinDeny {
        cidr: "::1/128",
        reason: "loopback (RFC 4291)",
    },
    BuiltinDeny {
        cidr: "fc00::/7",
        reason: "unique local (RFC 4193): v6 clusters, AWS's fd00:ec2:: endpoints, GCP's and Oracle's v6 metadata",
    },
    BuiltinDeny {
        cidr: "fd00:ec2::123/128",
        reason: "AWS Time Sync over IPv6, named on its own inside fc00::/7",
    },
    BuiltinDeny {
        cidr: "fd00:ec2::253/128",
        reason: "AWS DNS (Route 53 Resolver) over IPv6, named on its own inside fc00::/7",
    },
    BuiltinDeny {
        cidr: "fd00:ec2::254/128",
        reason: "AWS instance metadata (IMDS) over IPv6, named on its own inside fc00::/7",
    },
    BuiltinDeny {
        cidr: "fe80::/10",
        reason: "link-local (RFC 4291): OpenStack metadata at fe80::a9fe:a9fe",
    },
    BuiltinDeny {
        cidr: "ff00::/8",
        reason: "multicast (RFC 4291)",
    },
];

impl Default for Ceiling {
    fn default() -> Self {
        Ceiling {
            mode: CeilingMode::Reject,
            cpus: Cpus::from_millis(2_000),
            memory: ByteSize::mebibytes(2048),
            pids: PidCount::new(256),
            timeout: Timeout::from_secs(600),
            writable_size: ByteSize::mebibytes(1024),
            always_deny: BUILTIN_ALWAYS_DENY
                .iter()
                .map(|range| range.cidr.parse().expect("built-in ranges are valid"))
                .collect(),
            allowed_domain_suffixes: None,
            bind_mount_sources: Vec::new(),
            env_pass_deny: builtin_deny(),
            env_pass_allow: Vec::new(),
        }
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            cpus: Cpus::from_millis(500),
            memory: ByteSize::mebibytes(256),
            pids: PidCount::new(64),
            timeout: Timeout::from_secs(30),
            scratch_size: ByteSize::mebibytes(64),
        }
    }
}

impl Default for RunscSettings {
    fn default() -> Self {
        RunscSettings {
            binary: PathBuf::from("runsc"),
            platform: PlatformChoice::Auto,
            resolved_platform: None,
        }
    }
}

fn field_error(file: &Path, field: &str, message: String) -> Error {
    Error::InvalidField {
        file: file.to_owned(),
        field: field.to_owned(),
        message,
    }
}

impl NodeConfig {
    /// Parses a node config; `origin` names the file in errors.
    pub fn from_toml(origin: &Path, text: &str) -> Result<NodeConfig> {
        let deserializer = toml::Deserializer::new(text);
        let config: NodeConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let message = err.inner().message().to_owned();
            field_error(origin, &err.path().to_string(), message)
        })?;
        config.check_defaults_within_ceiling(origin)?;
        config.check_bind_mount_sources(origin)?;
        Ok(config)
    }

    /// Loads `path`; a missing file at the default location gives the
    /// defaults, a missing file named explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<NodeConfig> {
        let (path, explicit) = match path {
            Some(path) => (path, true),
            None => (Path::new(DEFAULT_NODE_CONFIG), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => NodeConfig::from_toml(path, &text),
            Err(err) if !explicit && err.kind() == std::io::ErrorKind::NotFound => Ok(NodeConfig::default()),
            Err(source) => Err(Error::ReadNodeConfig {
                config: path.to_owned(),
                source,
            }),
        }
    }

    /// Each bind mount source must be absolute and normalised, so that
    /// prefix matching by path components means what it says.
    fn check_bind_mount_sources(&self, origin: &Path) -> Result<()> {
        let listed = self
            .ceiling
            .bind_mount_sources
            .iter()
            .enumerate()
            .map(|(index, source)| (format!("ceiling.bind_mount_sources[{index}]"), source));
        let cri = [
            ("cri.kubelet_root".to_owned(), &self.cri.kubelet_root),
            ("cri.containerd_root".to_owned(), &self.cri.containerd_root),
            ("cri.containerd_state".to_owned(), &self.cri.containerd_state),
        ];
        for (field, source) in listed.chain(cri) {
            if !is_normal_directory(source) {
                return Err(field_error(
                    origin,
                    &field,
                    format!(
                        "{:?} is not an absolute, normalised directory other than / (no `.`, `..`, `//` or trailing `/`)",
                        source.display().to_string()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_defaults_within_ceiling(&self, origin: &Path) -> Result<()> {
        let (d, c) = (&self.defaults, &self.ceiling);
        let over = |field: &str, default: String, ceiling: String| {
            Err(field_error(
                origin,
                &format!("defaults.{field}"),
                format!("default {default} is above ceiling.{field} {ceiling}"),
            ))
        };
        if d.cpus > c.cpus {
            return over("cpus", d.cpus.to_string(), c.cpus.to_string());
        }
        if d.memory > c.memory {
            return over("memory", d.memory.to_string(), c.memory.to_string());
        }
        if d.pids > c.pids {
            return over("pids", d.pids.to_string(), c.pids.to_string());
        }
        if d.timeout > c.timeout {
            return over("timeout", d.timeout.to_string(), c.timeout.to_string());
        }
        if d.scratch_size > c.writable_size {
            return Err(field_error(
                origin,
                "defaults.scratch_size",
                format!(
                    "default {} is above ceiling.writable_size {}",
                    d.scratch_size, c.writable_size
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config = NodeConfig::from_toml(Path::new("n.toml"), "").unwrap();
        assert_eq!(config, NodeConfig::default());
    }

    #[test]
    fn unknown_field_names_file_and_field() {
        let err = NodeConfig::from_toml(Path::new("n.toml"), "[ceiling]\nmemroy = \"1Gi\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("n.toml: ceiling.memroy: unknown field `memroy`"),
            "{err}"
        );
    }

    #[test]
    fn bind_mount_sources_must_be_absolute_and_normalised() {
        let config = NodeConfig::from_toml(
            Path::new("n.toml"),
            "[ceiling]\nbind_mount_sources = [\"/srv/skills\"]\n",
        )
        .unwrap();
        assert_eq!(config.ceiling.bind_mount_sources, [PathBuf::from("/srv/skills")]);
        for bad in ["srv", "/srv/../etc", "/srv/", "/", "/srv//x"] {
            let err = NodeConfig::from_toml(
                Path::new("n.toml"),
                &format!("[ceiling]\nbind_mount_sources = [\"/ok\", \"{bad}\"]\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("n.toml: ceiling.bind_mount_sources[1]: "),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn egress_settings_parse_upstreams_and_name_a_bad_one() {
        let config = NodeConfig::from_toml(
            Path::new("n.toml"),
            "[egress]\ndns_upstreams = [\"192.0.2.53\", \"[2001:db8::53]:5353\"]\nttl_grace = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(
            config.egress.dns_upstreams,
            [
                DnsUpstream("192.0.2.53:53".parse().unwrap()),
                DnsUpstream("[2001:db8::53]:5353".parse().unwrap())
            ]
        );
        assert_eq!(config.egress.ttl_grace, Timeout::from_secs(2));
        assert_eq!(config.audit.log_dir, PathBuf::from(DEFAULT_AUDIT_LOG_DIR));
        let err = NodeConfig::from_toml(
            Path::new("n.toml"),
            "[egress]\ndns_upstreams = [\"dns.example\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("n.toml: egress.dns_upstreams"), "{err}");
        assert!(err.contains("expected IP or IP:PORT"), "{err}");
    }

    /// Every platform endpoint a skill with `0.0.0.0/0` (or `::/0`) allowed
    /// could otherwise reach, and the cloud that serves it.
    const CLOUD_ENDPOINTS: &[(&str, &str)] = &[
        (
            "169.254.169.254",
            "instance metadata: AWS, GCP, Azure, Oracle, DigitalOcean, Hetzner, OpenStack",
        ),
        ("169.254.169.253", "AWS DNS"),
        ("169.254.169.123", "AWS Time Sync"),
        ("169.254.170.2", "AWS ECS task metadata"),
        ("169.254.170.23", "AWS EKS Pod Identity"),
        ("169.254.0.23", "Tencent Cloud metadata"),
        ("168.63.129.16", "Azure WireServer and platform DNS"),
        ("100.100.100.200", "Alibaba Cloud metadata"),
        ("100.100.2.136", "Alibaba Cloud DNS"),
        ("161.26.0.10", "IBM Cloud DNS"),
        ("161.26.0.11", "IBM Cloud DNS"),
        ("fd00:ec2::254", "AWS metadata over IPv6"),
        ("fd00:ec2::253", "AWS DNS over IPv6"),
        ("fd00:ec2::123", "AWS Time Sync over IPv6"),
        ("fd00:ec2::23", "AWS EKS Pod Identity over IPv6"),
        ("fd20:ce::254", "GCP metadata over IPv6"),
        ("fd00:c1::a9fe:a9fe", "Oracle Cloud metadata over IPv6"),
        ("fe80::a9fe:a9fe", "OpenStack metadata over IPv6"),
    ];

    #[test]
    fn the_builtin_list_denies_every_cloud_platform_endpoint() {
        let always_deny = NodeConfig::default().ceiling.always_deny;
        for (address, what) in CLOUD_ENDPOINTS {
            let ip: IpAddr = address.parse().unwrap();
            assert!(
                always_deny.iter().any(|cidr| cidr.contains(ip)),
                "{address} ({what}) is not in the built-in always-deny list"
            );
        }
    }

    #[test]
    fn each_builtin_range_has_a_reason_and_a_row_in_the_docs() {
        let doc = include_str!("../../docs/node-config.md");
        for range in BUILTIN_ALWAYS_DENY {
            assert!(!range.reason.is_empty(), "{}", range.cidr);
            assert!(
                doc.contains(&format!("| `{}` |", range.cidr)),
                "docs/node-config.md has no table row for {}",
                range.cidr
            );
            assert!(
                doc.contains(&format!("\"{}\"", range.cidr)),
                "docs/node-config.md's always_deny example lacks {}",
                range.cidr
            );
        }
    }

    #[test]
    fn env_pass_lists_parse_and_name_a_bad_pattern() {
        let config = NodeConfig::from_toml(
            Path::new("n.toml"),
            "[ceiling]\nenv_pass_deny = [\"*\"]\nenv_pass_allow = [\"LANG\", \"MYCORP_*\"]\n",
        )
        .unwrap();
        assert_eq!(config.ceiling.env_pass_deny.len(), 1);
        assert_eq!(config.ceiling.env_pass_allow[1].as_str(), "MYCORP_*");
        let err = NodeConfig::from_toml(Path::new("n.toml"), "[ceiling]\nenv_pass_allow = [\"GH-*\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("n.toml: ceiling.env_pass_allow"), "{err}");
        assert!(err.contains("invalid variable name pattern \"GH-*\""), "{err}");
    }

    #[test]
    fn defaults_must_fit_the_ceiling() {
        let err = NodeConfig::from_toml(Path::new("n.toml"), "[ceiling]\nmemory = \"128Mi\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "n.toml: defaults.memory: default 256Mi is above ceiling.memory 128Mi"
        );
    }
}
