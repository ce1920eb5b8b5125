//! `skillbox policy explain`: the effective policy, for people or machines.

use std::fmt::Write;
use std::process::ExitCode;

use policy_compiler::compile::runsc_flags;
use policy_compiler::effective::EffectivePolicy;
use policy_compiler::env_pass::RefusedEnv;
use policy_compiler::oci::CgroupLimits;
use serde::Serialize;

use super::{default_runsc_binary, emit, load_node, load_skill, pretty_json, resolve_platform, Failure};
use crate::cli::{ExplainArgs, Format};

#[derive(Serialize)]
struct Explanation<'a> {
    skill: &'a str,
    version: Option<&'a str>,
    digest: &'a str,
    policy: &'a EffectivePolicy,
    /// `env.pass` names the node refuses to pass (clamp mode; reject mode
    /// refuses the skill instead).
    env_refused: &'a [RefusedEnv],
    warnings: &'a [String],
}

pub fn explain(args: ExplainArgs) -> Result<ExitCode, Failure> {
    let package = load_skill(&args.skill_dir)?;
    let mut node = load_node(&args.node)?;
    let runsc = default_runsc_binary(&node.config);
    resolve_platform(&mut node, &runsc);
    let resolution = policy_compiler::effective::resolve(
        &package.manifest,
        &package.dir.join(policy_compiler::package::SKILL_MD),
        &node.config,
        &node.name,
    )?;
    let explanation = Explanation {
        skill: package.manifest.name.as_str(),
        version: package.manifest.version.as_deref(),
        digest: &package.digest,
        policy: &resolution.policy,
        env_refused: &resolution.env_refused,
        warnings: &resolution.warnings,
    };
    emit(&match args.format {
        Format::Json => pretty_json(&explanation),
        Format::Text => render_text(&explanation, &node.config),
    })?;
    Ok(ExitCode::SUCCESS)
}

fn render_text(e: &Explanation<'_>, node: &policy_compiler::NodeConfig) -> String {
    let p = e.policy;
    let r = &p.resources;
    let limits = CgroupLimits::for_policy(p, runsc_flags(node, p).platform);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "skill      {} {}",
        e.skill,
        e.version.unwrap_or("(no version)")
    );
    let _ = writeln!(out, "digest     {}", e.digest);
    let entry = if p.entrypoint.is_empty() {
        "(none: pass a command after --)".to_owned()
    } else {
        p.entrypoint.join(" ")
    };
    let _ = writeln!(out, "entrypoint {entry}  (in /skill)");
    let _ = writeln!(out, "\nfilesystem");
    let _ = writeln!(out, "  /          read-only");
    let _ = writeln!(out, "  /skill     read-only (the skill's code)");
    for dir in &p.writable {
        let _ = writeln!(out, "  {:<10} writable, at most {}", dir.path.as_str(), dir.size);
    }
    let _ = writeln!(out, "\nnetwork");
    if p.network.allow.is_empty() {
        let _ = writeln!(out, "  none: no network stack at all");
    } else {
        for rule in &p.network.allow {
            let _ = writeln!(out, "  allow {rule}");
        }
        for rule in &p.network.deny {
            let _ = writeln!(out, "  deny  {rule}");
        }
        let denied: Vec<String> = p.network.always_deny.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  always denied: {}", denied.join(", "));
        let _ = writeln!(
            out,
            "  enforced: own network namespace, default-deny nftables table, a DNS proxy answering only allowed names"
        );
    }
    let _ = writeln!(out, "\nresources");
    let _ = writeln!(out, "  cpus       {}", r.cpus);
    let _ = writeln!(
        out,
        "  memory     {} (OOM ends the run with status 137)",
        r.memory
    );
    let _ = writeln!(
        out,
        "  pids       {} for the skill (sandbox cgroup limit {} incl. gVisor's own threads)",
        r.pids, limits.pids
    );
    let _ = writeln!(out, "  timeout    {}", r.timeout);
    let _ = writeln!(
        out,
        "\nprocess    uid 65534, gid 65534, no capabilities, no new privileges"
    );
    let env: Vec<&str> = p.env_pass.iter().map(|n| n.as_str()).collect();
    let _ = writeln!(
        out,
        "env        PATH, HOME{}",
        if env.is_empty() {
            String::new()
        } else {
            format!(", {} (from the caller)", env.join(", "))
        }
    );
    if !e.env_refused.is_empty() {
        let refused: Vec<String> = e.env_refused.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "           refused by the node: {} (ceiling.env_pass_deny)",
            refused.join(", ")
        );
    }
    let audit = serde_json::to_value(p.audit).expect("audit level serializes");
    let _ = writeln!(out, "audit      {}", audit.as_str().unwrap_or_default());
    for warning in e.warnings {
        let _ = writeln!(out, "\nwarning: {warning}");
    }
    out
}
