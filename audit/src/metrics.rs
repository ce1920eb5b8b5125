//! Node metrics aggregated from the audit log, in Prometheus
//! text exposition format. Every skillbox execution on the node (the
//! containerd shim and `skillbox run`) writes its events to the node's
//! audit log; `skillbox metrics-server` tails it and feeds each event to
//! [`Metrics::observe`]. This module only counts: it reads no file, no
//! clock and no `/proc`.
//!
//! Every metric (labels in braces):
//!
//! - `skillbox_sandboxes_started_total{skill}`: `start` events;
//! - `skillbox_sandboxes_running`: executions with a `start` and no `exit`
//!   yet;
//! - `skillbox_sandboxes_failed_total{skill}`: executions that exited with
//!   a status other than 0, or were OOM-killed or timed out — each counted
//!   once however many of these it had;
//! - `skillbox_sandboxes_ended_total{skill,outcome}`: `exit` events by
//!   their `outcome` (`exited`, `oom`, `timeout`, `killed`,
//!   `sandbox_failed`; `_unknown` for an exit written without one);
//! - `skillbox_execution_duration_seconds`: histogram of the executions'
//!   wall-clock time, from `exit.wall_ms`, else the time between the
//!   `start` and `exit` events;
//! - `skillbox_oom_kills_total{skill}`: `oom` events;
//! - `skillbox_timeouts_total{skill}`: `timeout` events;
//! - `skillbox_egress_connections_total{skill,verdict}`: `connection`
//!   events, `verdict` `allowed` or `denied`;
//! - `skillbox_dns_queries_total{skill,verdict}`: `dns_query` events,
//!   `verdict` `allowed` (answered) or `refused`;
//! - `skillbox_audit_events_total{type}`: every event read, by `type`;
//! - `skillbox_audit_events_dropped_total{source}`: the sum of
//!   `events_dropped.count` (events lost before they reached the log);
//! - `skillbox_audit_log_malformed_lines_total`: complete lines of the log
//!   that are not JSON objects (skipped);
//! - `skillbox_audit_log_read_errors_total`: passes over the log that
//!   failed (the directory or a file could not be read);
//! - `skillbox_shims`, `skillbox_shim_memory_bytes`: how many
//!   `containerd-shim-skillbox-v1` processes run on the node and the sum of
//!   their resident memory, as last measured ([`Metrics::set_shims`]);
//! - `skillbox_pool_sandboxes{state}`, `skillbox_pool_ready_memory_bytes`:
//!   the warm pool's pre-booted sandboxes (`ready`, `booting`, `running`)
//!   and the memory the ready ones hold, as last asked
//!   ([`Metrics::set_pool`]; zeros when no pool answers).
//!
//! Label values are bounded: skills by name only, never execution ids,
//! and at most [`MAX_SKILLS`] distinct skills (later ones are counted as
//! `skill="_other"`; events without a skill name as `skill="_unknown"`);
//! `type` is one of the schema's types, `verdict` one of the schema's
//! verdicts, else `_other`; at most [`MAX_SOURCES`] drop sources.

use std::collections::{HashMap, HashSet, VecDeque};

/// What the warm pool holds, for [`Metrics::set_pool`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolGauges {
    pub ready: usize,
    pub booting: usize,
    pub running: usize,
    pub ready_memory_bytes: u64,
}

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Distinct `skill` label values before the rest fold into `_other`.
pub const MAX_SKILLS: usize = 1000;
/// Distinct `source` label values of dropped events.
pub const MAX_SOURCES: usize = 100;
/// Ended executions remembered (so that an `oom` after its `exit` is not
/// a second failure).
const MAX_ENDED: usize = 10_000;

/// Every `type` of the schema (`crate::event`, egress events).
const TYPES: &[&str] = &[
    "start",
    "exit",
    "oom",
    "timeout",
    "container_start",
    "clone",
    "exec",
    "process_exit",
    "file_open",
    "socket",
    "connect",
    "bind",
    "listen",
    "syscall",
    "events_dropped",
    "dns_query",
    "connection",
];

/// Seconds: a skill runs for milliseconds to its timeout (minutes).
const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

#[derive(Debug, thiserror::Error)]
#[error("registering the metric {name}")]
pub struct RegisterError {
    name: String,
    #[source]
    source: prometheus::Error,
}

/// At most `cap` distinct values; the rest are `_other`.
#[derive(Debug)]
struct BoundedLabels {
    seen: HashSet<String>,
    cap: usize,
}

impl BoundedLabels {
    fn new(cap: usize) -> Self {
        BoundedLabels {
            seen: HashSet::new(),
            cap,
        }
    }

    fn label<'a>(&mut self, value: &'a str) -> &'a str {
        if self.seen.contains(value) {
            return value;
        }
        if self.seen.len() < self.cap {
            self.seen.insert(value.to_owned());
            return value;
        }
        "_other"
    }
}

/// `value` if it is one of `known`, else `_other`.
fn known<'a>(value: &'a Value, known: &[&str]) -> &'a str {
    value
        .as_str()
        .filter(|value| known.contains(value))
        .unwrap_or("_other")
}

/// What is known of one execution.
#[derive(Debug, Default)]
struct Execution {
    started_at: Option<OffsetDateTime>,
    running: bool,
    failed: bool,
}

/// The node's metrics and the little state they need.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: IntCounterVec,
    running: IntGauge,
    failed: IntCounterVec,
    duration: Histogram,
    oom_kills: IntCounterVec,
    timeouts: IntCounterVec,
    outcomes: IntCounterVec,
    connections: IntCounterVec,
    dns_queries: IntCounterVec,
    events: IntCounterVec,
    dropped: IntCounterVec,
    malformed: IntCounter,
    read_errors: IntCounter,
    shims: IntGauge,
    shim_memory: IntGauge,
    pool_sandboxes: IntGaugeVec,
    pool_memory: IntGauge,
    skills: BoundedLabels,
    sources: BoundedLabels,
    executions: HashMap<String, Execution>,
    /// Executions no longer running, oldest first, forgotten past `MAX_ENDED`.
    ended: VecDeque<String>,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &str,
    metric: Result<M, prometheus::Error>,
) -> Result<M, RegisterError> {
    let error = |source| RegisterError {
        name: name.to_owned(),
        source,
    };
    let metric = metric.map_err(error)?;
    registry.register(Box::new(metric.clone())).map_err(error)?;
    Ok(metric)
}

impl Metrics {
    pub fn new() -> Result<Self, RegisterError> {
        let registry = Registry::new();
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, name, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let counter = |name: &str, help: &str| register(&registry, name, IntCounter::new(name, help));
        let gauge = |name: &str, help: &str| register(&registry, name, IntGauge::new(name, help));
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, name, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let duration = "skillbox_execution_duration_seconds";
        Ok(Metrics {
            started: counters(
                "skillbox_sandboxes_started_total",
                "Sandboxes started.",
                &["skill"],
            )?,
            running: gauge(
                "skillbox_sandboxes_running",
                "Sandboxes started and not yet ended.",
            )?,
            failed: counters(
                "skillbox_sandboxes_failed_total",
                "Executions that exited non-zero, were OOM-killed or timed out.",
                &["skill"],
            )?,
            duration: register(
                &registry,
                duration,
                Histogram::with_opts(
                    HistogramOpts::new(duration, "Wall-clock time of executions.")
                        .buckets(DURATION_BUCKETS.to_vec()),
                ),
            )?,
            oom_kills: counters("skillbox_oom_kills_total", "Sandboxes OOM-killed.", &["skill"])?,
            timeouts: counters(
                "skillbox_timeouts_total",
                "Executions ended by their timeout.",
                &["skill"],
            )?,
            outcomes: counters(
                "skillbox_sandboxes_ended_total",
                "Executions ended, by how they ended.",
                &["skill", "outcome"],
            )?,
            connections: counters(
                "skillbox_egress_connections_total",
                "New egress connections judged by the sandbox's firewall.",
                &["skill", "verdict"],
            )?,
            dns_queries: counters(
                "skillbox_dns_queries_total",
                "DNS queries the egress proxy answered (allowed) or refused.",
                &["skill", "verdict"],
            )?,
            events: counters(
                "skillbox_audit_events_total",
                "Audit events read from the log.",
                &["type"],
            )?,
            dropped: counters(
                "skillbox_audit_events_dropped_total",
                "Audit events lost before they reached the log.",
                &["source"],
            )?,
            malformed: counter(
                "skillbox_audit_log_malformed_lines_total",
                "Lines of the audit log that are not JSON objects.",
            )?,
            read_errors: counter(
                "skillbox_audit_log_read_errors_total",
                "Failed passes over the audit log.",
            )?,
            shims: gauge(
                "skillbox_shims",
                "containerd-shim-skillbox-v1 processes on the node.",
            )?,
            shim_memory: gauge(
                "skillbox_shim_memory_bytes",
                "Resident memory of the node's containerd-shim-skillbox-v1 processes.",
            )?,
            pool_sandboxes: gauge_vec(
                "skillbox_pool_sandboxes",
                "The warm pool's pre-booted sandboxes, by state (ready, booting, running).",
                &["state"],
            )?,
            pool_memory: gauge(
                "skillbox_pool_ready_memory_bytes",
                "Memory held by the warm pool's ready sandboxes (their cgroups, and the PSS of their runsc run processes).",
            )?,
            registry,
            skills: BoundedLabels::new(MAX_SKILLS),
            sources: BoundedLabels::new(MAX_SOURCES),
            executions: HashMap::new(),
            ended: VecDeque::new(),
        })
    }

    /// Counts one audit event (a JSON object in the schema's envelope).
    pub fn observe(&mut self, event: &Value) {
        let kind = known(&event["type"], TYPES);
        self.events.with_label_values(&[kind]).inc();
        let skill = match event["skill"]["name"].as_str() {
            Some(name) => self.skills.label(name),
            None => "_unknown",
        };
        let execution = event["execution_id"].as_str().unwrap_or_default();
        let at = event["timestamp"]
            .as_str()
            .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok());
        match kind {
            "start" => {
                let state = self.executions.entry(execution.to_owned()).or_default();
                if !state.running {
                    state.running = true;
                    state.started_at = at;
                    self.started.with_label_values(&[skill]).inc();
                    self.running.inc();
                }
            }
            "exit" => {
                let state = self.executions.entry(execution.to_owned()).or_default();
                if state.running {
                    state.running = false;
                    self.running.dec();
                }
                let seconds = match (event["wall_ms"].as_u64(), state.started_at, at) {
                    (Some(ms), _, _) => Some(ms as f64 / 1000.0),
                    (None, Some(start), Some(end)) if end >= start => Some((end - start).as_seconds_f64()),
                    _ => None,
                };
                if let Some(seconds) = seconds {
                    self.duration.observe(seconds);
                }
                let outcomes = crate::Outcome::ALL.map(crate::Outcome::as_str);
                let outcome = match &event["outcome"] {
                    Value::Null => "_unknown",
                    given => known(given, &outcomes),
                };
                self.outcomes.with_label_values(&[skill, outcome]).inc();
                if event["status"].as_i64().is_some_and(|status| status != 0) {
                    self.fail(execution, skill);
                }
                self.forget_later(execution);
            }
            "oom" => {
                self.oom_kills.with_label_values(&[skill]).inc();
                self.fail(execution, skill);
            }
            "timeout" => {
                self.timeouts.with_label_values(&[skill]).inc();
                self.fail(execution, skill);
            }
            "connection" => {
                let verdict = known(&event["verdict"], &["allowed", "denied"]);
                self.connections.with_label_values(&[skill, verdict]).inc();
            }
            "dns_query" => {
                let verdict = known(&event["verdict"], &["allowed", "refused"]);
                self.dns_queries.with_label_values(&[skill, verdict]).inc();
            }
            "events_dropped" => {
                let source = self.sources.label(event["source"].as_str().unwrap_or("_unknown"));
                let count = event["count"].as_u64().unwrap_or(0);
                self.dropped.with_label_values(&[source]).inc_by(count);
            }
            _ => {}
        }
    }

    /// Counts the execution as failed, once.
    fn fail(&mut self, execution: &str, skill: &str) {
        let state = self.executions.entry(execution.to_owned()).or_default();
        if !state.failed {
            state.failed = true;
            self.failed.with_label_values(&[skill]).inc();
        }
        if !state.running {
            self.forget_later(execution);
        }
    }

    /// Queues an execution that is not running to be forgotten once
    /// `MAX_ENDED` newer ones have ended.
    fn forget_later(&mut self, execution: &str) {
        self.ended.push_back(execution.to_owned());
        while self.ended.len() > MAX_ENDED {
            let Some(oldest) = self.ended.pop_front() else {
                break;
            };
            if self.executions.get(&oldest).is_some_and(|state| !state.running) {
                self.executions.remove(&oldest);
            }
        }
    }

    /// Counts lines of the log that were not events.
    pub fn malformed_lines(&self, count: usize) {
        self.malformed.inc_by(count as u64);
    }

    /// Counts a pass over the log that failed.
    pub fn read_error(&self) {
        self.read_errors.inc();
    }

    /// The shims on the node, as just measured.
    pub fn set_shims(&self, count: usize, resident_bytes: u64) {
        self.shims.set(i64::try_from(count).unwrap_or(i64::MAX));
        self.shim_memory
            .set(i64::try_from(resident_bytes).unwrap_or(i64::MAX));
    }

    /// The warm pool, as it just answered (`None`: no pool answered).
    pub fn set_pool(&self, pool: Option<&PoolGauges>) {
        let pool = pool.cloned().unwrap_or_default();
        for (state, count) in [
            ("ready", pool.ready),
            ("booting", pool.booting),
            ("running", pool.running),
        ] {
            self.pool_sandboxes
                .with_label_values(&[state])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.pool_memory
            .set(i64::try_from(pool.ready_memory_bytes).unwrap_or(i64::MAX));
    }

    /// Every metric in Prometheus text exposition format 0.0.4
    /// ([`TEXT_FORMAT`] is its `Content-Type`).
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("the text encoder only fails on invalid metric families, and ours are checked at registration")
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const TEXT_FORMAT: &str = prometheus::TEXT_FORMAT;

#[cfg(test)]
mod tests;
