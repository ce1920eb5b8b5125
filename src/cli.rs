//! Command-line interface.
//!
//! Exit codes: `compile`, `image build`, `image build-node`, `policy`,
//! `probe`: 0 success, 1 invalid input or failure, 2 usage error. `run`: the skill's own status; 124 when the
//! timeout fired; 137 when the skill was killed (out of memory is reported
//! on stderr); 125 when skillbox itself failed before or around the run;
//! 128+N when skillbox was interrupted by signal N (SIGINT 130, SIGTERM 143).
//! `gc`: 0 when nothing is left, 1 when something could not be removed.
//! `audit --follow` and `metrics-server` run until stopped; they exit 1 when
//! they cannot start (an unreadable node config, an address in use).
//! `node install`/`uninstall`/`wait-daemonset`: 0 done, 1 refused or
//! failed; `node status`: 0 installed, unchanged and seen by containerd, 1
//! otherwise. `scan --runtime`: 0 when the verdict is better than
//! `--fail-on`, 1 when it is that or worse, 2 when the scan could not run.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "skillbox",
    version,
    about = "Run AI-agent skills in gVisor sandboxes under their security policy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile a skill folder into an OCI runtime bundle for runsc.
    Compile(CompileArgs),
    /// Compile a skill into a temporary bundle and run it in gVisor.
    Run(RunArgs),
    /// Run a skill in gVisor before publishing it and report what it tried
    /// against its policy: findings, the verdict, the registry's record.
    Scan(ScanArgs),
    /// Build OCI images of skills.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Inspect policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Report the installed runsc version and which network modes work here.
    Probe(ProbeArgs),
    /// Remove what killed `skillbox run`s left behind (network namespaces,
    /// nftables tables, cgroups, runsc state), from their teardown records.
    Gc(GcArgs),
    /// Print audit events (JSON Lines) from the node's audit log, filtered;
    /// with --follow, keep printing new ones.
    Audit(AuditArgs),
    /// Serve the node's metrics (Prometheus text format) at
    /// `http://ADDR/metrics`, counted from the audit log of every skillbox
    /// execution on the node.
    MetricsServer(MetricsServerArgs),
    /// Keep pre-booted sandboxes ready for `skillbox run` (a local service
    /// on a unix socket), or ask one what it holds.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Install skillbox onto a Kubernetes node (its `/` mounted at
    /// --host-root), uninstall it, or report what is installed.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Serve pre-booted sandboxes on a unix socket until SIGTERM or SIGINT,
    /// then remove every one of them.
    Serve(PoolServeArgs),
    /// Print what a pool holds (JSON): ready, booting and running
    /// sandboxes, the memory of the ready ones, the skills kept warm.
    Status(PoolStatusArgs),
}

#[derive(Debug, Args)]
pub struct PoolServeArgs {
    /// The socket to serve on (created mode 0600).
    #[arg(long, value_name = "PATH", default_value = crate::pool::wire::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Sandboxes ready or booting at most.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub capacity: u16,
    /// Sandboxes ready or booting per skill at most.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub per_skill: u16,
    /// A skill folder to keep warm from the start (repeatable; needs
    /// --base-rootfs). Others are kept warm once a run asks for them.
    #[arg(long = "warm", value_name = "SKILL_DIR")]
    pub warm: Vec<PathBuf>,
    /// The base root filesystem of the --warm skills.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_BASE_ROOTFS")]
    pub base_rootfs: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct PoolStatusArgs {
    /// The pool's socket.
    #[arg(long, value_name = "PATH", default_value = crate::pool::wire::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Copy the binaries, write the node config and register the `skillbox`
    /// runtime as a containerd drop-in; restart containerd when one of its
    /// configs changed (or it does not see the handler) and wait until its
    /// CRI knows the handler; label the node (--node-name).
    Install(NodeInstallArgs),
    /// Remove the node label, restore byte for byte what install changed,
    /// restart containerd when its config changed and wait until its CRI has
    /// forgotten the handler. Refused while `skillbox` pods run (--force).
    Uninstall(NodeUninstallArgs),
    /// Report the installed binaries and their versions, the drop-in and
    /// import, and whether containerd's CRI sees the handler; exit 1 when
    /// not installed, when a file changed since install or when containerd
    /// does not see the handler.
    Status(NodeStatusArgs),
    /// Wait until every pod of a DaemonSet is ready (the chart's uninstall
    /// hook waits so for `node uninstall` to have run on every node).
    WaitDaemonset(WaitDaemonsetArgs),
}

#[derive(Debug, Args)]
pub struct HostRootArgs {
    /// Where the host's `/` is mounted.
    #[arg(long, value_name = "DIR")]
    pub host_root: PathBuf,
}

/// How the installer reaches and restarts the host's containerd.
#[derive(Debug, Args)]
pub struct ContainerdArgs {
    /// Write or restore the files only: neither ask nor restart containerd
    /// (image builds, fake host roots).
    #[arg(long)]
    pub no_reload: bool,
    /// containerd's socket, as the host sees it (resolved under
    /// --host-root).
    #[arg(long, value_name = "PATH", default_value = "/run/containerd/containerd.sock")]
    pub cri_socket: PathBuf,
    /// The systemd unit restarted (`systemctl restart`, through nsenter
    /// into the host's PID 1 namespaces when --host-root is not `/`).
    #[arg(long, value_name = "UNIT", default_value = "containerd")]
    pub containerd_unit: String,
    /// A shell command restarting containerd instead of systemd's, for
    /// hosts that run it otherwise.
    #[arg(long, value_name = "COMMAND", conflicts_with = "containerd_unit")]
    pub restart_command: Option<String>,
    /// Seconds containerd may take to answer again after its restart.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub reload_timeout: u64,
}

/// The Kubernetes node this host is.
#[derive(Debug, Args)]
pub struct NodeNameArgs {
    /// The node to label `skillbox.dev/runtime=ready` (through the
    /// Kubernetes API: in-cluster service account, or KUBECONFIG). Without
    /// it no label is touched.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct NodeInstallArgs {
    #[command(flatten)]
    pub root: HostRootArgs,
    /// The shim. Default: `containerd-shim-skillbox-v1` beside this program.
    #[arg(long, value_name = "PATH")]
    pub shim: Option<PathBuf>,
    /// The skillbox CLI. Default: this program.
    #[arg(long, value_name = "PATH")]
    pub cli: Option<PathBuf>,
    /// runsc. Default: `runsc` from PATH.
    #[arg(long, value_name = "PATH")]
    pub runsc: Option<PathBuf>,
    /// The node config to install (validated). Default: the built-in
    /// defaults (an empty config).
    #[arg(long, value_name = "FILE")]
    pub node_config: Option<PathBuf>,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
    #[command(flatten)]
    pub node: NodeNameArgs,
}

#[derive(Debug, Args)]
pub struct NodeUninstallArgs {
    #[command(flatten)]
    pub root: HostRootArgs,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
    #[command(flatten)]
    pub node: NodeNameArgs,
    /// Uninstall even while pods run under the `skillbox` handler (they
    /// keep running; containerd can no longer start new ones).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct WaitDaemonsetArgs {
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: String,
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Seconds to wait at most.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct NodeStatusArgs {
    #[command(flatten)]
    pub root: HostRootArgs,
    /// containerd's socket, as the host sees it; asked when it exists.
    #[arg(long, value_name = "PATH", default_value = "/run/containerd/containerd.sock")]
    pub cri_socket: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Node config (TOML) holding the administrator ceiling and defaults.
    /// Default: /etc/skillbox/config.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub node_config: Option<PathBuf>,
}

/// Where runsc is and where executions keep their state.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// The runsc binary. Default: `[runsc] binary` from the node config (`runsc`).
    #[arg(long, value_name = "PATH", env = "SKILLBOX_RUNSC")]
    pub runsc: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Where `skillbox run` keeps each execution: its bundle, runsc state and
/// teardown record.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Directory for executions' bundles, runsc state and teardown records.
    #[arg(
        long,
        value_name = "DIR",
        env = "SKILLBOX_STATE_DIR",
        default_value = "/run/skillbox"
    )]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The skill folder (holding SKILL.md).
    pub skill_dir: PathBuf,
    /// Root filesystem mounted read-only as the sandbox's `/`.
    #[arg(long, value_name = "DIR")]
    pub base_rootfs: PathBuf,
    /// Output bundle directory (must be absent or empty).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Name the skill's copy by its absolute path in config.json, as
    /// `ctr run --config` needs (containerd copies config.json alone into a
    /// bundle of its own). Without it the bundle is relocatable.
    #[arg(long)]
    pub absolute_paths: bool,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Arguments appended to the skill's entrypoint.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a skill's OCI image (the skill at /skill on a base) into an
    /// OCI image layout tar that `ctr images import` takes. Deterministic:
    /// the same skill and base give the same bytes and manifest digest.
    Build(ImageBuildArgs),
    /// Build the node image the Helm chart runs from a prepared root
    /// filesystem directory holding /opt/skillbox/bin/{skillbox,
    /// containerd-shim-skillbox-v1,runsc} and nsenter, with the libraries
    /// they need (`scripts/build-node-image.sh` prepares it). One layer,
    /// deterministic, PATH=/opt/skillbox/bin:…, no entrypoint.
    BuildNode(ImageBuildNodeArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildNodeArgs {
    /// The root filesystem directory that becomes the image's `/`.
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
    /// The image tar to write (replaced if it exists).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// The image name, `HOST/PATH:TAG`. Default:
    /// `localhost/skillbox/node:<this skillbox's version>`, the chart's
    /// default image.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// The skill folder (holding SKILL.md).
    pub skill_dir: PathBuf,
    /// The base: a root filesystem directory (one layer), or an OCI image
    /// archive (its layers are kept as they are).
    #[arg(long, value_name = "DIR|ARCHIVE")]
    pub base: PathBuf,
    /// The image tar to write (replaced if it exists).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// The image name, `HOST/PATH:TAG`. Default:
    /// `localhost/skillbox/<skill name>:<version, else latest>`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Scan by running the skill (the only kind of scan skillbox does;
    /// static scanners run in the registry).
    #[arg(long = "runtime", required = true)]
    pub runtime_scan: bool,
    /// The skill folder (holding SKILL.md).
    pub skill_dir: PathBuf,
    /// Root filesystem mounted read-only as the sandbox's `/`.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_BASE_ROOTFS")]
    pub base_rootfs: PathBuf,
    /// Cases to run after the default one (YAML; its JSON Schema is
    /// schema/scan-cases.schema.json). Default: `scan.yaml` at the skill's
    /// root, if there is one.
    #[arg(long, value_name = "FILE")]
    pub cases: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ScanFormat,
    /// Exit 1 when the verdict is this or worse.
    #[arg(long, value_enum, default_value = "dangerous")]
    pub fail_on: FailOn,
    /// Write the report here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the least `security_policy` that allows what the cases did on
    /// standard output; the report then goes to `-o FILE`, else to
    /// standard error.
    #[arg(long)]
    pub learn: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScanFormat {
    /// For people: the verdict and counts, then findings by severity.
    Text,
    /// The registry's `security_audit` record.
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

/// The verdicts, as `--fail-on` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum FailOn {
    Suspicious,
    Dangerous,
    Blocked,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The skill folder (holding SKILL.md).
    pub skill_dir: PathBuf,
    /// Root filesystem mounted read-only as the sandbox's `/`.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_BASE_ROOTFS")]
    pub base_rootfs: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Write a JSON report of the execution (outcome, CPU time, memory peak).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// A file or directory handed to the skill, copied and mounted
    /// read-only at `/workspace/in/<its name>` (repeatable). Regular files
    /// and directories only.
    #[arg(long = "input", value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
    /// After the skill ends, copy what it wrote to `/workspace/out` (which
    /// its policy must declare in `filesystem.writable`, with a size) into
    /// DIR (new or empty): regular files and directories only, all or
    /// nothing.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub egress: EgressArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Arguments appended to the skill's entrypoint.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Whether `skillbox run` asks the warm pool for a pre-booted sandbox.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// The pool's socket (`skillbox pool serve`). A run uses the pool when
    /// the socket is there and the pool has a sandbox ready for it, else
    /// runs cold.
    #[arg(long = "pool", value_name = "SOCKET", env = "SKILLBOX_POOL", default_value = crate::pool::wire::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Run cold even when a pool is there.
    #[arg(long)]
    pub no_pool: bool,
}

impl PoolArgs {
    pub fn socket(&self) -> Option<PathBuf> {
        (!self.no_pool).then(|| self.socket.clone())
    }
}

/// Where a skill whose policy allows egress resolves names and logs; each
/// overrides the node config's `[egress]`.
#[derive(Debug, Args)]
pub struct EgressArgs {
    /// Resolver the DNS proxy forwards allowed names to (`IP` or `IP:PORT`;
    /// repeatable). Default: `[egress] dns_upstreams`, else the nameservers
    /// of /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    pub dns_upstreams: Vec<String>,
    /// The execution's audit log (JSON Lines: lifecycle, syscall and egress
    /// events). Default: `<[audit] log_dir>/<execution id>.jsonl`
    /// (/var/log/skillbox/audit). `--egress-log` is an older name.
    #[arg(long = "audit-log", alias = "egress-log", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Seconds added to each DNS record's TTL before an address the proxy
    /// learned expires from the sandbox's table (`[egress] ttl_grace`,
    /// default 10 s). For tests; hidden.
    #[arg(
        long = "egress-ttl-grace",
        value_name = "SECONDS",
        env = "SKILLBOX_EGRESS_TTL_GRACE",
        hide = true
    )]
    pub ttl_grace_secs: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the effective policy of a skill on this node.
    Explain(ExplainArgs),
    /// Print the JSON Schema of `security_policy`.
    Schema,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    pub skill_dir: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    #[command(flatten)]
    pub node: NodeArgs,
    /// The audit log directory. Default: `[audit] log_dir` of the node
    /// config (/var/log/skillbox/audit).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Only events of this skill (its name).
    #[arg(long, value_name = "NAME")]
    pub skill: Option<String>,
    /// Only events of this execution id.
    #[arg(long = "execution", value_name = "ID")]
    pub execution_id: Option<String>,
    /// Only events of this type (`exec`, `file_open`, `connection`,
    /// `dns_query`, `exit`, …); repeatable.
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Only events with this verdict.
    #[arg(long, value_parser = ["allowed", "denied", "refused"])]
    pub verdict: Option<String>,
    /// Keep printing events as they are written (Ctrl-C to stop).
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Copy lifecycle and policy-violation events from the audit log into
    /// the registry's PostgreSQL `audit_log` table, from where the cursor
    /// file says the last run stopped. Rows are committed in batches and
    /// retried with backoff while the database is away; the log is the
    /// buffer, so nothing is lost and no row is inserted twice.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The audit log directory. Default: `[audit] log_dir`.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// libpq-style connection string or URL of the registry's database
    /// (`host=/run/postgresql dbname=registry user=skillbox`,
    /// `postgresql://skillbox@db/registry`).
    #[arg(long, value_name = "CONNINFO", env = "SKILLBOX_REGISTRY_DATABASE")]
    pub database: String,
    /// Where the exporter records how far it got (created if missing).
    #[arg(long, value_name = "FILE")]
    pub cursor: PathBuf,
    /// Rows per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Keep exporting new events as they are written (Ctrl-C to stop).
    /// Without it, export what is there and exit (failing if the database
    /// stays unreachable for --give-up-after).
    #[arg(long, short)]
    pub follow: bool,
    /// Without --follow: seconds of failed attempts before giving up.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub give_up_after: u64,
}

#[derive(Debug, Args)]
pub struct MetricsServerArgs {
    /// Address to listen on (`127.0.0.1:9464`, `[::]:9464`; port 0 picks a
    /// free port). The bound address is printed on stderr.
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub node: NodeArgs,
    /// The audit log directory. Default: `[audit] log_dir`.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// The warm pool's socket, asked at each scrape for what it holds.
    #[arg(long = "pool", value_name = "SOCKET", default_value = crate::pool::wire::DEFAULT_SOCKET)]
    pub pool: PathBuf,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// A root filesystem with /bin/true, used to try each network mode.
    /// Without it only the version is reported.
    #[arg(long, value_name = "DIR")]
    pub base_rootfs: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}
