//! The registry's `security_audit` record of one scan: its columns as
//! snake_case keys, the findings as the registry's camelCase objects.

use schemars::JsonSchema;
use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::verdict::Verdict;

/// The scanner type the registry reserves for scanners of its own kind.
pub const SCANNER_TYPE: &str = "CUSTOM";

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(title = "security_audit")]
pub struct SecurityAudit {
    pub scanner_type: &'static str,
    pub verdict: Verdict,
    pub is_safe: bool,
    /// `null` when there are no findings.
    pub max_severity: Option<Severity>,
    pub findings_count: usize,
    pub findings: Vec<Finding>,
    pub scan_duration_seconds: f64,
}

impl SecurityAudit {
    pub fn new(findings: Vec<Finding>, scan_duration_seconds: f64) -> SecurityAudit {
        let verdict = Verdict::of(&findings);
        SecurityAudit {
            scanner_type: SCANNER_TYPE,
            verdict,
            is_safe: verdict == Verdict::Safe,
            max_severity: findings.iter().map(|f| f.severity).max(),
            findings_count: findings.len(),
            findings,
            scan_duration_seconds,
        }
    }
}

/// The JSON Schema of the record (`schema/scan-record.schema.json`).
pub fn schema() -> String {
    let schema = schemars::schema_for!(SecurityAudit);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}
