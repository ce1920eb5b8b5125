//! One module per subcommand; this one dispatches and holds what they share.

mod audit;
mod audit_export;
mod compile;
mod explain;
mod gc;
mod image;
mod metrics_server;
mod node;
mod pool;
mod probe;
pub(crate) mod run;
mod scan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use policy_compiler::node_config::DEFAULT_NODE_CONFIG;
use policy_compiler::{NodeConfig, SkillPackage};
use skillbox_sandbox::runsc_version;

use crate::cli::{AuditArgs, AuditCommand, Cli, Command, ImageCommand, NodeArgs, PolicyCommand, RuntimeArgs};

/// An error and the exit code it maps to.
pub struct Failure {
    pub error: anyhow::Error,
    pub exit_code: ExitCode,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            error: error.into(),
            exit_code: ExitCode::from(1),
        }
    }
}

pub fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Compile(args) => compile::compile(args),
        Command::Run(args) => run::run(args),
        Command::Scan(args) => scan::scan(args),
        Command::Image(ImageCommand::Build(args)) => image::build(args),
        Command::Image(ImageCommand::BuildNode(args)) => image::build_node(args),
        Command::Policy(PolicyCommand::Explain(args)) => explain::explain(args),
        Command::Policy(PolicyCommand::Schema) => {
            emit(&policy_compiler::schema::security_policy_schema())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe(args) => probe::probe(args),
        Command::Gc(args) => Ok(gc::gc(args)?),
        Command::Audit(AuditArgs {
            command: Some(AuditCommand::Export(args)),
            ..
        }) => audit_export::export(args),
        Command::Audit(args) => audit::audit(args),
        Command::MetricsServer(args) => metrics_server::serve(args),
        Command::Pool(command) => pool::pool(command),
        Command::Node(command) => node::node(command),
    }
}

/// The node config and how messages name it.
pub struct Node {
    pub config: NodeConfig,
    pub name: String,
}

pub fn load_node(args: &NodeArgs) -> Result<Node, policy_compiler::Error> {
    let config = NodeConfig::load(args.node_config.as_deref())?;
    let name = match &args.node_config {
        Some(path) => path.display().to_string(),
        None if Path::new(DEFAULT_NODE_CONFIG).exists() => DEFAULT_NODE_CONFIG.to_owned(),
        None => "the built-in node defaults".to_owned(),
    };
    Ok(Node { config, name })
}

/// The audit log directory: the command line's, else the node config's
/// `[audit] log_dir`.
pub fn audit_log_dir(given: Option<PathBuf>, node: &NodeArgs) -> Result<PathBuf, policy_compiler::Error> {
    match given {
        Some(dir) => Ok(dir),
        None => Ok(load_node(node)?.config.audit.log_dir),
    }
}

/// The runsc binary: the command line's, else the node config's.
pub fn runsc_binary(runtime: &RuntimeArgs, node: &NodeConfig) -> PathBuf {
    runtime.runsc.clone().unwrap_or_else(|| node.runsc.binary.clone())
}

/// The runsc binary of a command without `--runsc`: `SKILLBOX_RUNSC`, else
/// the node config's.
pub fn default_runsc_binary(node: &NodeConfig) -> PathBuf {
    std::env::var_os("SKILLBOX_RUNSC")
        .map(PathBuf::from)
        .unwrap_or_else(|| node.runsc.binary.clone())
}

/// Resolves `[runsc] platform = "auto"` for `runsc` (see
/// `runsc_version::resolve_platform`), warning when runsc cannot say.
pub fn resolve_platform(node: &mut Node, runsc: &Path) {
    if let Err(err) = runsc_version::resolve_platform(&mut node.config.runsc, runsc) {
        eprintln!(
            "skillbox: warning: {err}; [runsc] platform \"auto\" falls back to ptrace (set it in the node config where runsc is not installed)"
        );
    }
}

pub fn load_skill(dir: &Path) -> Result<SkillPackage, policy_compiler::Error> {
    policy_compiler::load(dir)
}

/// The invoking environment as a sorted map (only `env.pass` names are used).
pub fn invoking_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// `path` made absolute against the current directory, as OCI specs need.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}: cannot resolve path", path.display()))
}

/// Writes command output to stdout. A reader that went away (`| head`) is
/// not an error: there is nobody left to tell.
pub fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err),
        _ => Ok(()),
    }
}

/// Pretty JSON with a trailing newline.
pub fn pretty_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("command output serializes") + "\n"
}

/// The `--base-rootfs` directory as an absolute path, checked to exist.
pub fn base_rootfs_dir(path: &Path) -> anyhow::Result<PathBuf> {
    let dir = absolute(path)?;
    anyhow::ensure!(dir.is_dir(), "--base-rootfs {}: not a directory", dir.display());
    Ok(dir)
}

pub fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}
