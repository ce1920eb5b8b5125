//! The SARIF log validates against the official SARIF 2.1.0 schema (the
//! OASIS 2.1.0-rtm.5 schema, fetched by `scripts/fetch-sarif-schema.sh`),
//! and carries every finding with its rule, level and location.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use skillbox_scan::finding::{Finding, Severity, ANALYZER};
use skillbox_scan::{sarif, SecurityAudit};

fn official_schema() -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new("bash")
        .arg("scripts/fetch-sarif-schema.sh")
        .current_dir(&root)
        .status()
        .expect("run bash scripts/fetch-sarif-schema.sh");
    assert!(
        status.success(),
        "scripts/fetch-sarif-schema.sh failed: the SARIF schema is a prerequisite of this test"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let text = std::fs::read_to_string(target.join("skillbox-cache/sarif-schema/sarif-2.1.0.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Replaces every `pattern` equal to `from`; returns how many.
fn replace_patterns(value: &mut Value, from: &str, to: &str) -> usize {
    match value {
        Value::Object(map) => map
            .iter_mut()
            .map(|(key, child)| {
                if key == "pattern" && child == from {
                    *child = json!(to);
                    1
                } else {
                    replace_patterns(child, from, to)
                }
            })
            .sum(),
        Value::Array(items) => items
            .iter_mut()
            .map(|child| replace_patterns(child, from, to))
            .sum(),
        _ => 0,
    }
}

fn finding(rule_id: &'static str, severity: Severity, line: Option<u32>) -> Finding {
    Finding {
        rule_id,
        severity,
        category: "test",
        title: "a title",
        message: format!("{rule_id} happened"),
        file_path: line.map(|_| "SKILL.md".to_owned()),
        line_number: line,
        code_snippet: None,
        remediation: "fix it",
        analyzer: ANALYZER,
        metadata: json!({"subject": "x", "count": 1, "evidence": []}),
    }
}

#[test]
fn the_log_is_valid_sarif_2_1_0_with_every_finding() {
    let audit = SecurityAudit::new(
        vec![
            finding("SBX-SECRET-001", Severity::High, None),
            finding("SBX-POL-002", Severity::Medium, Some(11)),
            finding("SBX-POL-001", Severity::Low, Some(12)),
        ],
        2.5,
    );
    let log = serde_json::to_value(sarif::log(&audit, "0.1.0")).unwrap();
    let mut schema = official_schema();
    // One erratum: the schema's `language` patterns have a stray `]`, which
    // the validator's check of the schema itself refuses. Our log sets no
    // `language`; the pattern is replaced by the one intended.
    let fixed = replace_patterns(
        &mut schema,
        "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$",
        "^[a-zA-Z]{2}(-[a-zA-Z]{2})?$",
    );
    assert!(
        fixed > 0,
        "the erratum is gone: drop replace_patterns from this test"
    );
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .expect("the official schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid SARIF 2.1.0:\n{}\n{log:#}",
        errors.join("\n")
    );

    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "skillbox-runtime");
    assert_eq!(run["properties"]["verdict"], "DANGEROUS");
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        (results[0]["ruleId"].as_str(), results[0]["level"].as_str()),
        (Some("SBX-SECRET-001"), Some("error"))
    );
    assert_eq!(results[1]["level"], "warning");
    assert_eq!(
        results[1]["locations"][0]["physicalLocation"]["region"]["startLine"],
        11
    );
    assert_eq!(
        results[1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "SKILL.md"
    );
    // ruleIndex points at the rule in the driver's catalogue.
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], result["ruleId"]);
    }

    // The validator does validate: a level SARIF does not have fails.
    let mut broken = log.clone();
    broken["runs"][0]["results"][0]["level"] = json!("fatal");
    assert!(!validator.is_valid(&broken));

    // No findings is a valid log too.
    let empty = serde_json::to_value(sarif::log(&SecurityAudit::new(Vec::new(), 0.1), "0.1.0")).unwrap();
    assert!(validator.is_valid(&empty), "{empty:#}");
}
