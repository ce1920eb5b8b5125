//! The verdict, in the registry's vocabulary, from the worst finding:
//!
//! | worst finding | verdict |
//! |---|---|
//! | none, INFO or LOW | SAFE |
//! | MEDIUM | SUSPICIOUS |
//! | HIGH | DANGEROUS |
//! | CRITICAL | BLOCKED |

use schemars::JsonSchema;
use serde::Serialize;

use crate::finding::{Finding, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Safe,
    Suspicious,
    Dangerous,
    Blocked,
}

impl Verdict {
    pub fn of(findings: &[Finding]) -> Verdict {
        match findings.iter().map(|f| f.severity).max() {
            None | Some(Severity::Info) | Some(Severity::Low) => Verdict::Safe,
            Some(Severity::Medium) => Verdict::Suspicious,
            Some(Severity::High) => Verdict::Dangerous,
            Some(Severity::Critical) => Verdict::Blocked,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Safe => "SAFE",
            Verdict::Suspicious => "SUSPICIOUS",
            Verdict::Dangerous => "DANGEROUS",
            Verdict::Blocked => "BLOCKED",
        }
    }
}
