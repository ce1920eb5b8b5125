//! Sandbox cgroup figures in the shape containerd's `Stats` call returns:
//! `io.containerd.cgroups.v1.Metrics` (what `ctr task metrics` and
//! cAdvisor read), packed in an `Any`.

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};

use skillbox_sandbox::cgroup::CgroupStats;

/// The type URL containerd's typeurl registry knows cgroup v1 metrics by.
pub const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

pub fn metrics(stats: &CgroupStats) -> Metrics {
    Metrics {
        pids: MessageField::some(PidsStat {
            current: stats.pids,
            limit: stats.pids_limit,
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage: MessageField::some(CPUUsage {
                total: stats.cpu_usage.as_nanos() as u64,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStat {
            usage: MessageField::some(MemoryEntry {
                usage: stats.memory_usage_bytes,
                max: stats.memory_peak_bytes,
                limit: stats.memory_limit_bytes,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn metrics_any(stats: &CgroupStats) -> Any {
    Any {
        type_url: METRICS_TYPE_URL.to_owned(),
        value: metrics(stats).write_to_bytes().expect("metrics encode"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn figures_land_in_the_cgroup_v1_fields() {
        let stats = CgroupStats {
            cpu_usage: Duration::from_millis(1500),
            memory_usage_bytes: 10,
            memory_peak_bytes: 20,
            memory_limit_bytes: 30,
            pids: 40,
            pids_limit: 50,
            ..Default::default()
        };
        let any = metrics_any(&stats);
        assert_eq!(any.type_url, METRICS_TYPE_URL);
        let back = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.cpu.usage.total, 1_500_000_000);
        assert_eq!(
            (
                back.memory.usage.usage,
                back.memory.usage.max,
                back.memory.usage.limit
            ),
            (10, 20, 30)
        );
        assert_eq!((back.pids.current, back.pids.limit), (40, 50));
    }
}
