//! One finding, as the registry stores it (`findings` JSONB of
//! `security_audit`: camelCase keys).

use schemars::JsonSchema;
use serde::Serialize;

/// How bad a finding is, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// The name the registry shows as a finding's analyzer.
pub const ANALYZER: &str = "skillbox-runtime";

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub rule_id: &'static str,
    pub severity: Severity,
    pub category: &'static str,
    pub title: &'static str,
    pub message: String,
    /// The file the finding concerns: `SKILL.md` for policy findings.
    pub file_path: Option<String>,
    pub line_number: Option<u32>,
    pub code_snippet: Option<String>,
    pub remediation: &'static str,
    pub analyzer: &'static str,
    /// The evidence: the case and the audit events behind the finding.
    pub metadata: serde_json::Value,
}
