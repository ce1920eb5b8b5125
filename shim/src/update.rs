//! The `Update` call: new cgroup limits for a running sandbox, checked
//! against the node ceiling so that containerd (or a pod spec) can never
//! raise a sandbox above what the administrator allows.

use policy_compiler::node_config::NodeConfig;
use policy_compiler::oci::CPU_PERIOD_US;
use runsc_config::HostTaskBudget;

use skillbox_sandbox::cgroup::LimitUpdate;

/// Turns the `LinuxResources` JSON containerd sends into a `LimitUpdate`,
/// refusing anything above the ceiling of `node` (named `config` in messages).
pub fn limits_within_ceiling(
    resources_json: &[u8],
    node: &NodeConfig,
    config: &str,
) -> Result<LimitUpdate, String> {
    let resources: serde_json::Value = serde_json::from_slice(resources_json)
        .map_err(|err| format!("resources are not LinuxResources JSON: {err}"))?;
    let ceiling = &node.ceiling;
    let over = |what: &str, asked: String, limit: String, field: &str| {
        format!("{what} {asked} is above the node ceiling {limit} (ceiling.{field} in {config})")
    };

    let memory_bytes = resources["memory"]["limit"].as_i64().filter(|bytes| *bytes > 0);
    if let Some(bytes) = memory_bytes {
        if bytes as u64 > ceiling.memory.bytes() {
            return Err(over(
                "memory limit",
                bytes.to_string(),
                ceiling.memory.to_string(),
                "memory",
            ));
        }
    }

    let quota = resources["cpu"]["quota"].as_i64().filter(|quota| *quota > 0);
    let period = resources["cpu"]["period"]
        .as_u64()
        .filter(|period| *period > 0)
        .unwrap_or(CPU_PERIOD_US);
    if let Some(quota) = quota {
        let millicores = quota as u64 * 1_000 / period;
        if millicores > ceiling.cpus.millis() {
            return Err(over(
                "CPU quota",
                format!("{millicores}m"),
                ceiling.cpus.to_string(),
                "cpus",
            ));
        }
    }

    // The ceiling is on the skill's processes; the cgroup also holds
    // gVisor's own threads (see HostTaskBudget).
    let pids = resources["pids"]["limit"].as_i64().filter(|limit| *limit > 0);
    if let Some(limit) = pids {
        let most = HostTaskBudget::for_platform(node.runsc.platform()).cgroup_pids_limit(ceiling.pids.get());
        if limit > most {
            return Err(over(
                "pids limit",
                limit.to_string(),
                most.to_string(),
                "pids (with gVisor's threads)",
            ));
        }
    }

    Ok(LimitUpdate {
        memory_bytes,
        cpu: quota.map(|quota| (quota, period)),
        pids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_inside_the_ceiling_pass() {
        let json =
            br#"{"memory":{"limit":67108864},"cpu":{"quota":50000,"period":100000},"pids":{"limit":600}}"#;
        let update = limits_within_ceiling(json, &NodeConfig::default(), "n.toml").unwrap();
        assert_eq!(
            update,
            LimitUpdate {
                memory_bytes: Some(64 << 20),
                cpu: Some((50_000, 100_000)),
                pids: Some(600),
            }
        );
        assert_eq!(
            limits_within_ceiling(b"{}", &NodeConfig::default(), "n.toml").unwrap(),
            LimitUpdate::default()
        );
    }

    #[test]
    fn limits_above_the_ceiling_are_refused() {
        let node = NodeConfig::default();
        let err = limits_within_ceiling(br#"{"memory":{"limit":8589934592}}"#, &node, "n.toml").unwrap_err();
        assert_eq!(
            err,
            "memory limit 8589934592 is above the node ceiling 2Gi (ceiling.memory in n.toml)"
        );
        let err = limits_within_ceiling(br#"{"cpu":{"quota":400000,"period":100000}}"#, &node, "n.toml")
            .unwrap_err();
        assert_eq!(
            err,
            "CPU quota 4000m is above the node ceiling 2 (ceiling.cpus in n.toml)"
        );
        assert!(limits_within_ceiling(br#"{"pids":{"limit":1000000}}"#, &node, "n.toml").is_err());
        assert!(limits_within_ceiling(b"not json", &node, "n.toml").is_err());
    }
}
