//! The effective policy: the skill's policy (or the one derived from its
//! coarse permissions, or the defaults) held within the node ceiling.
//!
//! This is what the sandbox enforces; it is serialized into the bundle's
//! annotations so that the shim enforces exactly what was compiled.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::env_pass::{refusing_pattern, RefusedEnv};
use crate::error::{CeilingExceeded, DomainNotAllowed, EnvNotPassable, Error, Result};
use crate::manifest::{
    AuditLevel, EnvName, Frontmatter, Permission, PidCount, PolicyVersion, SecurityPolicy, WritableSpec,
};
use crate::network::{Cidr, Destination, NetworkRule};
use crate::node_config::{CeilingMode, NodeConfig};
use crate::quantity::{ByteSize, Cpus, Timeout};
use crate::scratch_path::ScratchPath;

/// Path of the scratch directory a coarse `write` permission grants.
pub const COARSE_WRITE_DIR: &str = "/workspace";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectivePolicy {
    /// Command run in `/skill`; empty when the skill declares none.
    pub entrypoint: Vec<String>,
    pub network: EffectiveNetwork,
    pub writable: Vec<WritableDir>,
    pub resources: Resources,
    pub env_pass: Vec<EnvName>,
    pub audit: AuditLevel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectiveNetwork {
    pub allow: Vec<NetworkRule>,
    pub deny: Vec<NetworkRule>,
    /// Node-wide ranges that win over every allow.
    pub always_deny: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritableDir {
    pub path: ScratchPath,
    pub size: ByteSize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpus: Cpus,
    pub memory: ByteSize,
    pub pids: PidCount,
    pub timeout: Timeout,
}

/// The effective policy plus what was lowered or ignored to get there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub policy: EffectivePolicy,
    pub warnings: Vec<String>,
    /// Names in `env.pass` the node refused (in `clamp` mode): left out of
    /// `policy.env_pass`.
    pub env_refused: Vec<RefusedEnv>,
}

impl EffectivePolicy {
    /// Whether the policy lets the skill reach anything over the network.
    pub fn has_egress(&self) -> bool {
        !self.network.allow.is_empty()
    }

    /// This policy, held within `other` too: what both allow and no more.
    /// Limits are the lower of the two; allow rules, writable directories
    /// and passed variables are those both list (a directory's size the
    /// smaller); deny rules and always-denied ranges those either lists;
    /// the audit level the higher. The entrypoint stays this policy's.
    pub fn tightened_by(&self, other: &EffectivePolicy) -> EffectivePolicy {
        let union = |mine: &[Cidr], theirs: &[Cidr]| {
            let mut all = mine.to_vec();
            all.extend(theirs.iter().filter(|cidr| !mine.contains(cidr)).cloned());
            all
        };
        let mut deny = self.network.deny.clone();
        deny.extend(
            other
                .network
                .deny
                .iter()
                .filter(|rule| !self.network.deny.contains(rule))
                .cloned(),
        );
        EffectivePolicy {
            entrypoint: self.entrypoint.clone(),
            network: EffectiveNetwork {
                allow: self
                    .network
                    .allow
                    .iter()
                    .filter(|rule| other.network.allow.contains(rule))
                    .cloned()
                    .collect(),
                deny,
                always_deny: union(&self.network.always_deny, &other.network.always_deny),
            },
            writable: self
                .writable
                .iter()
                .filter_map(|dir| {
                    let theirs = other.writable.iter().find(|o| o.path == dir.path)?;
                    Some(WritableDir {
                        path: dir.path.clone(),
                        size: dir.size.min(theirs.size),
                    })
                })
                .collect(),
            resources: Resources {
                cpus: self.resources.cpus.min(other.resources.cpus),
                memory: self.resources.memory.min(other.resources.memory),
                pids: self.resources.pids.min(other.resources.pids),
                timeout: self.resources.timeout.min(other.resources.timeout),
            },
            env_pass: self
                .env_pass
                .iter()
                .filter(|name| other.env_pass.contains(name))
                .cloned()
                .collect(),
            audit: self.audit.max(other.audit),
        }
    }
}

/// Holds values within the ceiling, rejecting or clamping per the node's mode.
struct CeilingCheck<'a> {
    skill_md: &'a Path,
    config: &'a NodeConfig,
    config_name: &'a str,
    warnings: Vec<String>,
}

impl CeilingCheck<'_> {
    fn cap<T: PartialOrd + ToString>(
        &mut self,
        field: &str,
        asked: T,
        ceiling: T,
        ceiling_field: &str,
    ) -> Result<T> {
        if asked <= ceiling {
            return Ok(asked);
        }
        match self.config.ceiling.mode {
            CeilingMode::Reject => Err(Error::CeilingExceeded(Box::new(CeilingExceeded {
                file: self.skill_md.to_owned(),
                field: field.to_owned(),
                asked: asked.to_string(),
                ceiling: ceiling.to_string(),
                ceiling_field: format!("ceiling.{ceiling_field}"),
                config: self.config_name.to_owned(),
            }))),
            CeilingMode::Clamp => {
                self.warnings.push(format!(
                    "{field}: lowered from {} to the node ceiling {}",
                    asked.to_string(),
                    ceiling.to_string()
                ));
                Ok(ceiling)
            }
        }
    }

    /// Raises an audit level below the node's `[audit] min_syscalls` to it:
    /// a skill cannot audit itself less than the node asks.
    fn audit_level(&mut self, field: &str, asked: AuditLevel) -> AuditLevel {
        let minimum = self.config.audit.min_syscalls;
        if asked >= minimum {
            return asked;
        }
        self.warnings.push(format!(
            "{field}: raised from {} to the node minimum {} (audit.min_syscalls in {})",
            asked.as_str(),
            minimum.as_str(),
            self.config_name
        ));
        minimum
    }

    /// Drops (clamp) or refuses (reject) allow rules outside the admin's suffixes.
    fn domain_allowed(&mut self, field: &str, rule: &NetworkRule) -> Result<bool> {
        let (Destination::Domain(domain), Some(suffixes)) =
            (&rule.destination, &self.config.ceiling.allowed_domain_suffixes)
        else {
            return Ok(true);
        };
        if suffixes.iter().any(|suffix| domain.is_within_suffix(suffix)) {
            return Ok(true);
        }
        let allowed = suffixes.join(", ");
        match self.config.ceiling.mode {
            CeilingMode::Reject => Err(Error::DomainNotAllowed(Box::new(DomainNotAllowed {
                file: self.skill_md.to_owned(),
                field: field.to_owned(),
                domain: domain.to_string(),
                allowed,
                config: self.config_name.to_owned(),
            }))),
            CeilingMode::Clamp => {
                self.warnings.push(format!(
                    "{field}: {domain} is outside the node's allowed domains ({allowed}); rule dropped"
                ));
                Ok(false)
            }
        }
    }
}

impl CeilingCheck<'_> {
    /// The names of `pass` the node lets through; refused ones fail the
    /// skill (reject) or are dropped with a warning and returned (clamp).
    fn passable_env(&mut self, pass: &[EnvName]) -> Result<(Vec<EnvName>, Vec<RefusedEnv>)> {
        let (mut passed, mut refused) = (Vec::new(), Vec::new());
        for (index, name) in pass.iter().enumerate() {
            let field = format!("security_policy.env.pass[{index}]");
            let Some(pattern) = refusing_pattern(&self.config.ceiling, name.as_str()) else {
                passed.push(name.clone());
                continue;
            };
            match self.config.ceiling.mode {
                CeilingMode::Reject => {
                    return Err(Error::EnvNotPassable(Box::new(EnvNotPassable {
                        file: self.skill_md.to_owned(),
                        field,
                        name: name.as_str().to_owned(),
                        pattern: pattern.to_string(),
                        config: self.config_name.to_owned(),
                    })))
                }
                CeilingMode::Clamp => {
                    self.warnings.push(format!(
                        "{field}: {} matches {pattern} in ceiling.env_pass_deny; not passed",
                        name.as_str()
                    ));
                    refused.push(RefusedEnv::new(name.as_str(), pattern));
                }
            }
        }
        Ok((passed, refused))
    }
}

/// The policy a skill without `security_policy` gets from its coarse permissions.
fn from_permissions(permissions: &[Permission], warnings: &mut Vec<String>) -> SecurityPolicy {
    let mut policy = SecurityPolicy {
        version: PolicyVersion,
        entrypoint: None,
        network: Default::default(),
        filesystem: Default::default(),
        resources: Default::default(),
        env: Default::default(),
        audit: Default::default(),
    };
    if permissions.contains(&Permission::Write) {
        policy.filesystem.writable.push(WritableSpec {
            path: COARSE_WRITE_DIR
                .parse()
                .expect("the coarse write dir is a valid scratch path"),
            size: None,
        });
    }
    for (permission, what) in [
        (
            Permission::Network,
            "network destinations (security_policy.network.allow)",
        ),
        (Permission::Env, "variables (security_policy.env.pass)"),
    ] {
        if permissions.contains(&permission) {
            warnings.push(format!(
                "permissions: {permission:?} grants nothing by itself; declare the {what} the skill needs"
            ));
        }
    }
    policy
}

/// Resolves the effective policy of the skill whose metadata `manifest` was
/// read from `skill_md`, on a node whose config file is named `config_name`.
pub fn resolve(
    manifest: &Frontmatter,
    skill_md: &Path,
    config: &NodeConfig,
    config_name: &str,
) -> Result<Resolution> {
    let mut check = CeilingCheck {
        skill_md,
        config,
        config_name,
        warnings: Vec::new(),
    };
    let policy = match (&manifest.security_policy, &manifest.permissions) {
        (Some(policy), _) => policy.clone(),
        (None, Some(permissions)) => from_permissions(permissions, &mut check.warnings),
        (None, None) => from_permissions(&[], &mut check.warnings),
    };
    let defaults = &config.defaults;
    let ceiling = &config.ceiling;
    let res = &policy.resources;
    let resources = Resources {
        cpus: check.cap(
            "security_policy.resources.cpus",
            res.cpus.unwrap_or(defaults.cpus),
            ceiling.cpus,
            "cpus",
        )?,
        memory: check.cap(
            "security_policy.resources.memory",
            res.memory.unwrap_or(defaults.memory),
            ceiling.memory,
            "memory",
        )?,
        pids: check.cap(
            "security_policy.resources.pids",
            res.pids.unwrap_or(defaults.pids),
            ceiling.pids,
            "pids",
        )?,
        timeout: check.cap(
            "security_policy.resources.timeout",
            res.timeout.unwrap_or(defaults.timeout),
            ceiling.timeout,
            "timeout",
        )?,
    };

    let mut writable = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let declared = &policy.filesystem.writable;
    if manifest.security_policy.is_none() || declared.is_empty() {
        // /tmp is always there unless the skill declares its own scratch list.
        writable.push(WritableDir {
            path: "/tmp".parse().expect("/tmp is a valid scratch path"),
            size: defaults.scratch_size,
        });
    }
    for (index, dir) in declared.iter().enumerate() {
        let field = format!("security_policy.filesystem.writable[{index}]");
        let path = dir.path.as_str();
        if let Some(other) = seen.iter().find(|other| {
            path == **other
                || path.starts_with(&format!("{other}/"))
                || other.starts_with(&format!("{path}/"))
        }) {
            return Err(Error::InvalidField {
                file: skill_md.to_owned(),
                field: format!("{field}.path"),
                message: format!("{path} overlaps the writable directory {other}; list each directory once"),
            });
        }
        seen.insert(path);
        let size = check.cap(
            &format!("{field}.size"),
            dir.size.unwrap_or(defaults.scratch_size),
            ceiling.writable_size,
            "writable_size",
        )?;
        writable.push(WritableDir {
            path: dir.path.clone(),
            size,
        });
    }
    let mut allow = Vec::new();
    for (index, rule) in policy.network.allow.iter().enumerate() {
        if check.domain_allowed(&format!("security_policy.network.allow[{index}].domain"), rule)? {
            if let Destination::Cidr(cidr) = &rule.destination {
                for denied in ceiling.always_deny.iter().filter(|denied| denied.overlaps(cidr)) {
                    check.warnings.push(format!(
                        "security_policy.network.allow[{index}]: {cidr} overlaps the node's always-denied {denied}, which stays denied"
                    ));
                }
            }
            allow.push(rule.clone());
        }
    }
    let (env_pass, env_refused) = check.passable_env(&policy.env.pass)?;

    let policy = EffectivePolicy {
        entrypoint: policy.entrypoint.map(|e| e.0).unwrap_or_default(),
        network: EffectiveNetwork {
            allow,
            deny: policy.network.deny.clone(),
            always_deny: ceiling.always_deny.clone(),
        },
        writable,
        resources,
        env_pass,
        audit: check.audit_level("security_policy.audit.syscalls", policy.audit.syscalls),
    };
    Ok(Resolution {
        policy,
        warnings: check.warnings,
        env_refused,
    })
}

/// The policy of a container that brings none (not compiled by skillbox):
/// the node's `[defaults]`, no network, a writable `/tmp` of the default
/// scratch size, no entrypoint, no variables passed.
pub fn node_default(config: &NodeConfig) -> EffectivePolicy {
    let defaults = &config.defaults;
    EffectivePolicy {
        entrypoint: Vec::new(),
        network: EffectiveNetwork {
            allow: Vec::new(),
            deny: Vec::new(),
            always_deny: config.ceiling.always_deny.clone(),
        },
        writable: vec![WritableDir {
            path: "/tmp".parse().expect("/tmp is a valid scratch path"),
            size: defaults.scratch_size,
        }],
        resources: Resources {
            cpus: defaults.cpus,
            memory: defaults.memory,
            pids: defaults.pids,
            timeout: defaults.timeout,
        },
        env_pass: Vec::new(),
        audit: AuditLevel::default().max(config.audit.min_syscalls),
    }
}

/// Holds an already resolved policy (read back from a bundle, where anyone
/// could have written it) within this node's ceiling again, and raises its
/// audit level to the node's minimum (a bundle cannot lower it). Errors and
/// warnings name `file` and the field as `{field_prefix}.resources.memory`.
pub fn within_ceiling(
    policy: &EffectivePolicy,
    file: &Path,
    field_prefix: &str,
    config: &NodeConfig,
    config_name: &str,
) -> Result<Resolution> {
    let mut check = CeilingCheck {
        skill_md: file,
        config,
        config_name,
        warnings: Vec::new(),
    };
    let ceiling = &config.ceiling;
    let (res, field) = (&policy.resources, |name: &str| format!("{field_prefix}.{name}"));
    let resources = Resources {
        cpus: check.cap(&field("resources.cpus"), res.cpus, ceiling.cpus, "cpus")?,
        memory: check.cap(&field("resources.memory"), res.memory, ceiling.memory, "memory")?,
        pids: check.cap(&field("resources.pids"), res.pids, ceiling.pids, "pids")?,
        timeout: check.cap(
            &field("resources.timeout"),
            res.timeout,
            ceiling.timeout,
            "timeout",
        )?,
    };
    let mut writable = Vec::new();
    for (index, dir) in policy.writable.iter().enumerate() {
        writable.push(WritableDir {
            path: dir.path.clone(),
            size: check.cap(
                &field(&format!("writable[{index}].size")),
                dir.size,
                ceiling.writable_size,
                "writable_size",
            )?,
        });
    }
    let audit = check.audit_level(&field("audit"), policy.audit);
    Ok(Resolution {
        policy: EffectivePolicy {
            resources,
            writable,
            audit,
            ..policy.clone()
        },
        warnings: check.warnings,
        env_refused: Vec::new(),
    })
}

#[cfg(test)]
#[path = "effective_tests.rs"]
mod tests;
