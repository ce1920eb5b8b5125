//! Reading egress event logs (JSON Lines) in tests.

/// Each `connection` event of an egress log as `destination port
/// protocol verdict rule`.
pub fn connection_events(log: &str) -> Vec<String> {
    log.lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["type"] == "connection")
        .map(|event| {
            let text = |key: &str| match &event[key] {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            ["destination", "port", "protocol", "verdict", "rule"]
                .map(text)
                .join(" ")
        })
        .collect()
}
