//! `skillbox scan --runtime <skill-dir>`: runs each case (the default one,
//! then those of the cases file) in a fresh sandbox under its effective
//! policy with every system call audited, on the **observing network**
//! (every name answered from a sinkhole, every TCP connection accepted and
//! recorded, everything else dropped: nothing leaves the machine, whatever
//! the policy allows, and a counter proves it per case), then reports what
//! it tried: `skillbox-scan`'s findings, the verdict, and the registry's
//! `security_audit` record. `--learn` also prints the least policy that
//! allows what the cases did.
//!
//! Exit status: 0 when the verdict is better than `--fail-on`, 1 when it is
//! that or worse, 2 when the scan itself could not run.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use policy_compiler::manifest::AuditLevel;
use policy_compiler::{CompileOptions, SkillPackage};
use serde_json::Value;
use skillbox_scan::cases::Case;
use skillbox_scan::rules::SkillText;
use skillbox_scan::{analyse, CaseEvidence, LearnCase, Observed, SecurityAudit, Severity, Verdict};

use super::run::{execute, Plan};
use super::{
    base_rootfs_dir, emit, invoking_env, load_node, load_skill, resolve_platform, runsc_binary, Failure,
};
use crate::cli::{EgressArgs, FailOn, ScanArgs, ScanFormat};
use crate::runtime::execution::Interrupts;

/// The cases file read from the skill's root when `--cases` is not given.
const DEFAULT_CASES_FILE: &str = "scan.yaml";

/// The scan could not run (bad skill, sandbox failure).
const EXIT_SCAN_FAILED: u8 = 2;

pub fn scan(args: ScanArgs) -> Result<ExitCode, Failure> {
    scan_and_report(args).map_err(|error| Failure {
        error,
        exit_code: ExitCode::from(EXIT_SCAN_FAILED),
    })
}

fn scan_and_report(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let interrupts = Interrupts::install()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("skillbox scan --runtime needs root: it starts runsc and creates the sandbox's cgroup");
    }
    super::gc::collect_quietly(&args.runtime.state.state_dir);
    let package = load_skill(&args.skill_dir)?;
    let mut node = load_node(&args.node)?;
    let runsc = runsc_binary(&args.runtime, &node.config);
    resolve_platform(&mut node, &runsc);
    let base_rootfs = base_rootfs_dir(&args.base_rootfs)?;
    // Judged against the policy as the skill declares it, on this node.
    let (policy, _) = policy_compiler::effective_policy(
        &package,
        &CompileOptions {
            node: &node.config,
            node_config_name: &node.name,
            base_rootfs: &base_rootfs,
            extra_args: &[],
            env: &invoking_env(),
            cgroups_path: None,
        },
    )?;
    let skill_md = std::fs::read_to_string(package.dir.join("SKILL.md")).context("cannot read SKILL.md")?;
    let permissions: Vec<String> = package
        .manifest
        .permissions
        .iter()
        .flatten()
        .filter_map(|p| serde_json::to_value(p).ok()?.as_str().map(str::to_owned))
        .collect();
    // Run with every system call audited.
    if package.manifest.security_policy.is_none() {
        node.config.audit.min_syscalls = AuditLevel::All;
    }
    let cases = load_cases(&args.cases, &package.dir)?;
    // Every case runs the skill as loaded once, here.
    let scanned = for_scan(package);

    let work = tempfile::Builder::new()
        .prefix("skillbox-scan.")
        .tempdir()
        .context("cannot create the scan's working directory")?;
    let mut runs = Vec::new();
    for (case, inputs) in &cases {
        let audit_log = work.path().join(format!("{}.jsonl", case.name));
        let egress = EgressArgs {
            dns_upstreams: Vec::new(),
            audit_log: Some(audit_log.clone()),
            ttl_grace_secs: None,
        };
        let file = |name: String| {
            File::create(work.path().join(&name)).with_context(|| format!("cannot create {name}"))
        };
        let stdin_path = work.path().join(format!("{}.stdin", case.name));
        std::fs::write(&stdin_path, case.stdin.as_deref().unwrap_or_default())
            .with_context(|| format!("cannot write {}", stdin_path.display()))?;
        let stdin =
            File::open(&stdin_path).with_context(|| format!("cannot open {}", stdin_path.display()))?;
        let done = execute(
            Plan {
                package: scanned.clone(),
                node: &node,
                base_rootfs: &base_rootfs,
                args: &case.args,
                inputs,
                output: None,
                egress: &egress,
                runtime: &args.runtime,
                stdio: Some([
                    stdin.into(),
                    file(format!("{}.stdout", case.name))?.into(),
                    file(format!("{}.stderr", case.name))?.into(),
                ]),
                observe: true,
                preboot: None,
            },
            &interrupts,
        )
        .with_context(|| format!("case {}", case.name))?;
        let observed = Observed {
            exit_status: done.ended.status,
            wall_ms: done.waited.wall.as_millis() as u64,
            cpu_ms: done.ended.stats.cpu_usage.as_millis() as u64,
            memory_peak_bytes: done.ended.stats.memory_peak_bytes,
        };
        match done.packets_left {
            Some(0) => {}
            Some(left) => bail!(
                "case {}: {left} packets from the sandbox left the node's namespace; the observing network failed",
                case.name
            ),
            None => bail!("case {}: the sandbox ran without the observing network", case.name),
        }
        let events = read_events(&audit_log)?;
        eprintln!(
            "skillbox: scan: case {}: exit {}, {} network events recorded, 0 packets left the node",
            case.name,
            observed.exit_status,
            events.iter().filter(|event| is_network_event(event)).count()
        );
        runs.push(CaseRun {
            case,
            events,
            observed,
            scratch_used: done.scratch_used,
        });
    }
    let evidence: Vec<CaseEvidence> = runs
        .iter()
        .map(|run| CaseEvidence {
            case: &run.case.name,
            expected_exit: run.case.expect_exit,
            events: &run.events,
            observed: run.observed.clone(),
            network_observed: true,
        })
        .collect();
    let findings = analyse(
        &evidence,
        &policy,
        SkillText {
            skill_md: &skill_md,
            permissions: &permissions,
        },
    );
    let audit = SecurityAudit::new(findings, started.elapsed().as_secs_f64());
    let report = match args.format {
        ScanFormat::Json => serde_json::to_string_pretty(&audit).expect("the record serializes") + "\n",
        ScanFormat::Text => render_text(&audit),
        ScanFormat::Sarif => {
            let log = skillbox_scan::sarif::log(&audit, env!("CARGO_PKG_VERSION"));
            serde_json::to_string_pretty(&log).expect("the log serializes") + "\n"
        }
    };
    match (&args.output, args.learn) {
        (Some(path), _) => {
            std::fs::write(path, report).with_context(|| format!("{}: cannot write", path.display()))?
        }
        (None, false) => emit(&report)?,
        (None, true) => eprint!("{report}"),
    }
    if args.learn {
        let cases: Vec<LearnCase> = runs
            .iter()
            .map(|run| LearnCase {
                events: &run.events,
                observed: run.observed.clone(),
                scratch_used: &run.scratch_used,
            })
            .collect();
        let learned = skillbox_scan::learn(&cases, &policy);
        for note in &learned.notes {
            eprintln!("skillbox: learn: {note}");
        }
        emit(&learned.yaml)?;
    }
    let worst_allowed = match args.fail_on {
        FailOn::Suspicious => Verdict::Suspicious,
        FailOn::Dangerous => Verdict::Dangerous,
        FailOn::Blocked => Verdict::Blocked,
    };
    Ok(if audit.verdict >= worst_allowed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What one case did, for the findings and for `--learn`.
struct CaseRun<'a> {
    case: &'a Case,
    events: Vec<Value>,
    observed: Observed,
    /// Bytes in use in each writable directory at the end.
    scratch_used: std::collections::BTreeMap<String, u64>,
}

/// The package as a scan runs it: every system call audited. (For a skill
/// without `security_policy` the node's audit floor is raised instead.)
fn for_scan(mut package: SkillPackage) -> SkillPackage {
    if let Some(policy) = package.manifest.security_policy.as_mut() {
        policy.audit.syscalls = AuditLevel::All;
    }
    package
}

/// Events of the observing network: lookups and connections.
fn is_network_event(event: &Value) -> bool {
    matches!(
        event["type"].as_str(),
        Some("dns_query" | "connection" | "observed_connection")
    )
}

/// The default case, then those of `--cases FILE` or `scan.yaml`, each
/// with its inputs resolved against the file's directory.
fn load_cases(given: &Option<PathBuf>, skill_dir: &Path) -> anyhow::Result<Vec<(Case, Vec<PathBuf>)>> {
    let mut cases = vec![(Case::default_case(), Vec::new())];
    let file = match given {
        Some(file) => file.clone(),
        None => {
            let default = skill_dir.join(DEFAULT_CASES_FILE);
            if !default.is_file() {
                return Ok(cases);
            }
            default
        }
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("{}: cannot read", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    for case in skillbox_scan::cases::parse(&file, &text).map_err(anyhow::Error::msg)? {
        let inputs = case
            .inputs
            .iter()
            .map(|input| base.join(input))
            .collect::<Vec<_>>();
        if let Some(missing) = inputs.iter().find(|input| !input.exists()) {
            bail!(
                "{}: case {}: input {} does not exist",
                file.display(),
                case.name,
                missing.display()
            );
        }
        cases.push((case, inputs));
    }
    Ok(cases)
}

fn read_events(log: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("{}: cannot read the case's audit log", log.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// The text form: the verdict and counts first, then findings by severity.
fn render_text(audit: &SecurityAudit) -> String {
    let mut out = format!("verdict: {}\n", audit.verdict.as_str());
    let severities = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];
    let counts: Vec<String> = severities
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                audit.findings.iter().filter(|f| f.severity == *s).count(),
                s.as_str()
            )
        })
        .collect();
    let _ = writeln!(out, "findings: {} ({})", audit.findings_count, counts.join(", "));
    for severity in severities {
        let group: Vec<_> = audit.findings.iter().filter(|f| f.severity == severity).collect();
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}", severity.as_str());
        for finding in group {
            let place = match (&finding.file_path, finding.line_number) {
                (Some(file), Some(line)) => format!(" ({file}:{line})"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {} {}: {}{place}",
                finding.rule_id, finding.title, finding.message
            );
        }
    }
    out
}
