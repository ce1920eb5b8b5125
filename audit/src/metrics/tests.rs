use serde_json::{json, Value};

use super::*;

/// An event of `execution` (skill `skill`) at second `second`.
fn event(execution: &str, skill: &str, second: u32, kind: &str, fields: Value) -> Value {
    let mut event = json!({
        "timestamp": format!("2026-11-25T10:00:{second:02}Z"),
        "execution_id": execution,
        "skill": {"name": skill, "version": null, "digest": null},
        "container_id": execution,
        "type": kind,
    });
    event
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    event
}

fn start(execution: &str, skill: &str, second: u32) -> Value {
    event(
        execution,
        skill,
        second,
        "start",
        json!({"runtime": "shim", "audit_level": "security"}),
    )
}

fn exit(execution: &str, skill: &str, second: u32, status: i32, wall_ms: Option<u64>) -> Value {
    event(
        execution,
        skill,
        second,
        "exit",
        json!({"status": status, "wall_ms": wall_ms}),
    )
}

/// The value of one sample (`name` or `name{labels}`, as rendered), or
/// `None` when it is not there.
fn sample(metrics: &Metrics, series: &str) -> Option<f64> {
    metrics.render().lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

fn assert_samples(metrics: &Metrics, expected: &[(&str, Option<f64>)]) {
    for (series, value) in expected {
        assert_eq!(sample(metrics, series), *value, "{series}");
    }
}

fn observe_all(metrics: &mut Metrics, events: &[Value]) {
    for event in events {
        metrics.observe(event);
    }
}

#[test]
fn lifecycle_events_count_starts_running_failures_and_durations() {
    let mut metrics = Metrics::new().unwrap();
    assert_eq!(sample(&metrics, "skillbox_sandboxes_running"), Some(0.0));
    observe_all(
        &mut metrics,
        &[
            start("e1", "weather", 0),
            start("e2", "weather", 1),
            start("e3", "shell", 2),
        ],
    );
    assert_samples(
        &metrics,
        &[
            ("skillbox_sandboxes_running", Some(3.0)),
            ("skillbox_sandboxes_started_total{skill=\"weather\"}", Some(2.0)),
        ],
    );
    observe_all(
        &mut metrics,
        &[
            // wall_ms (1.5 s) wins over the timestamps (3 s).
            exit("e1", "weather", 3, 0, Some(1500)),
            // OOM-killed: one failure, not two.
            event("e2", "weather", 4, "oom", json!({})),
            exit("e2", "weather", 5, 137, None),
            // A second oom after the exit is still the same failed execution.
            event("e2", "weather", 6, "oom", json!({})),
            event("e3", "shell", 7, "timeout", json!({"limit_ms": 5000})),
            event(
                "e3",
                "shell",
                7,
                "exit",
                json!({"status": 124, "wall_ms": 5000, "outcome": "timeout"}),
            ),
        ],
    );
    assert_samples(
        &metrics,
        &[
            ("skillbox_sandboxes_running", Some(0.0)),
            ("skillbox_sandboxes_failed_total{skill=\"weather\"}", Some(1.0)),
            ("skillbox_sandboxes_failed_total{skill=\"shell\"}", Some(1.0)),
            ("skillbox_oom_kills_total{skill=\"weather\"}", Some(2.0)),
            ("skillbox_timeouts_total{skill=\"shell\"}", Some(1.0)),
            (
                "skillbox_sandboxes_ended_total{outcome=\"timeout\",skill=\"shell\"}",
                Some(1.0),
            ),
            (
                "skillbox_sandboxes_ended_total{outcome=\"_unknown\",skill=\"weather\"}",
                Some(2.0),
            ),
        ],
    );
    // 1.5 s and 5 s from wall_ms, 4 s (second 1 to second 5) from the timestamps.
    assert_samples(
        &metrics,
        &[
            ("skillbox_execution_duration_seconds_count", Some(3.0)),
            ("skillbox_execution_duration_seconds_sum", Some(10.5)),
            (
                "skillbox_execution_duration_seconds_bucket{le=\"2.5\"}",
                Some(1.0),
            ),
            ("skillbox_execution_duration_seconds_bucket{le=\"5\"}", Some(3.0)),
        ],
    );
}

#[test]
fn a_repeated_start_or_an_exit_without_start_does_not_skew_running() {
    let mut metrics = Metrics::new().unwrap();
    observe_all(
        &mut metrics,
        &[
            start("e1", "weather", 0),
            start("e1", "weather", 0),
            exit("e0", "weather", 1, 0, None),
        ],
    );
    assert_samples(
        &metrics,
        &[
            ("skillbox_sandboxes_running", Some(1.0)),
            ("skillbox_sandboxes_started_total{skill=\"weather\"}", Some(1.0)),
        ],
    );
    // No start, no wall_ms: no duration to observe.
    assert_eq!(
        sample(&metrics, "skillbox_execution_duration_seconds_count"),
        Some(0.0)
    );
    metrics.observe(&exit("e1", "weather", 2, 0, None));
    metrics.observe(&exit("e1", "weather", 3, 0, None));
    assert_samples(
        &metrics,
        &[
            ("skillbox_sandboxes_running", Some(0.0)),
            ("skillbox_sandboxes_failed_total{skill=\"weather\"}", None),
        ],
    );
}

#[test]
fn egress_and_dns_verdicts_are_counted_by_skill() {
    let mut metrics = Metrics::new().unwrap();
    let connection = |verdict: &str| {
        event(
            "e1",
            "weather",
            0,
            "connection",
            json!({"destination": "203.0.113.7", "port": 443, "protocol": "tcp", "verdict": verdict, "rule": "default-deny"}),
        )
    };
    let query = |verdict: &str| {
        event(
            "e1",
            "weather",
            0,
            "dns_query",
            json!({"name": "example.com", "qtype": "A", "verdict": verdict}),
        )
    };
    observe_all(
        &mut metrics,
        &[
            connection("allowed"),
            connection("denied"),
            connection("denied"),
            connection("maybe"),
            query("allowed"),
            query("refused"),
        ],
    );
    for (series, value) in [
        (
            "skillbox_egress_connections_total{skill=\"weather\",verdict=\"allowed\"}",
            1.0,
        ),
        (
            "skillbox_egress_connections_total{skill=\"weather\",verdict=\"denied\"}",
            2.0,
        ),
        (
            "skillbox_egress_connections_total{skill=\"weather\",verdict=\"_other\"}",
            1.0,
        ),
        (
            "skillbox_dns_queries_total{skill=\"weather\",verdict=\"allowed\"}",
            1.0,
        ),
        (
            "skillbox_dns_queries_total{skill=\"weather\",verdict=\"refused\"}",
            1.0,
        ),
        ("skillbox_audit_events_total{type=\"connection\"}", 4.0),
        ("skillbox_audit_events_total{type=\"dns_query\"}", 2.0),
    ] {
        assert_eq!(sample(&metrics, series), Some(value), "{series}");
    }
}

#[test]
fn event_types_and_drop_sources_are_bounded_and_drops_summed() {
    let mut metrics = Metrics::new().unwrap();
    let dropped = |count: u64, source: &str| {
        event(
            "e1",
            "s",
            0,
            "events_dropped",
            json!({"count": count, "source": source}),
        )
    };
    metrics.observe(&dropped(3, "sentry"));
    metrics.observe(&dropped(4, "sentry"));
    metrics.observe(&dropped(1, "jsonl"));
    metrics.observe(&event("e1", "s", 0, "made_up", json!({})));
    metrics.observe(&json!({"no": "envelope"}));
    for source in 0..MAX_SOURCES {
        metrics.observe(&dropped(1, &format!("source-{source}")));
    }
    assert_samples(
        &metrics,
        &[
            (
                "skillbox_audit_events_dropped_total{source=\"sentry\"}",
                Some(7.0),
            ),
            ("skillbox_audit_events_dropped_total{source=\"jsonl\"}", Some(1.0)),
        ],
    );
    // Two sources were there first: the last two of the loop are folded.
    assert_samples(
        &metrics,
        &[
            (
                "skillbox_audit_events_dropped_total{source=\"_other\"}",
                Some(2.0),
            ),
            (
                "skillbox_audit_events_total{type=\"events_dropped\"}",
                Some(3.0 + MAX_SOURCES as f64),
            ),
            ("skillbox_audit_events_total{type=\"_other\"}", Some(2.0)),
        ],
    );
}

#[test]
fn skills_past_the_cap_fold_into_other_and_execution_ids_are_never_labels() {
    let mut metrics = Metrics::new().unwrap();
    for n in 0..MAX_SKILLS + 5 {
        metrics.observe(&start(&format!("exec-{n}"), &format!("skill-{n}"), 0));
    }
    metrics.observe(&start("exec-x", "skill-0", 0));
    let mut nameless = event("exec-y", "", 0, "oom", json!({}));
    nameless.as_object_mut().unwrap().remove("skill");
    metrics.observe(&nameless);
    assert_samples(
        &metrics,
        &[
            ("skillbox_sandboxes_started_total{skill=\"skill-0\"}", Some(2.0)),
            ("skillbox_sandboxes_started_total{skill=\"_other\"}", Some(5.0)),
            ("skillbox_oom_kills_total{skill=\"_unknown\"}", Some(1.0)),
        ],
    );
    let text = metrics.render();
    assert!(!text.contains("exec-"), "an execution id became a label");
    let series = text.lines().filter(|line| !line.starts_with('#')).count();
    assert!(series < MAX_SKILLS + 100, "{series} series");
}

#[test]
fn shims_malformed_lines_and_read_errors_are_reported_as_set() {
    let metrics = Metrics::new().unwrap();
    metrics.set_shims(2, 48 << 20);
    metrics.malformed_lines(3);
    metrics.read_error();
    let text = metrics.render();
    assert!(text.contains("# TYPE skillbox_shim_memory_bytes gauge"), "{text}");
    assert_samples(
        &metrics,
        &[
            ("skillbox_shims", Some(2.0)),
            ("skillbox_shim_memory_bytes", Some((48 << 20) as f64)),
            ("skillbox_audit_log_malformed_lines_total", Some(3.0)),
            ("skillbox_audit_log_read_errors_total", Some(1.0)),
        ],
    );
    metrics.set_shims(0, 0);
    assert_eq!(sample(&metrics, "skillbox_shims"), Some(0.0));
}
