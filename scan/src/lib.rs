//! The analysis half of `skillbox scan --runtime`: given what a skill did
//! in its sandboxes (the audit events of each case, its resource peaks)
//! and the policy it ran under, the findings — each with a stable rule id,
//! a severity and its evidence — the verdict they add up to, and the
//! registry's `security_audit` record. Deterministic: the same events give
//! the same findings in the same order.

pub mod cases;
pub mod finding;
pub mod learn;
pub mod report;
pub mod rules;
pub mod sarif;
pub mod verdict;

pub use finding::{Finding, Severity};
pub use learn::{learn, LearnCase, Learned};
pub use report::SecurityAudit;
pub use rules::{analyse, CaseEvidence, Observed};
pub use verdict::Verdict;
