//! The scan as a SARIF 2.1.0 log, so code-scanning tools show its
//! findings: one run of the `skillbox-runtime` tool whose rules are the
//! catalogue, one result per finding (the registry's severity as a SARIF
//! level and in the result's properties, with the verdict on the run).

use std::collections::BTreeMap;

use serde_json::json;
use serde_sarif::sarif::{
    ArtifactLocation, Location, Message, MultiformatMessageString, PhysicalLocation, PropertyBag, Region,
    ReportingConfiguration, ReportingDescriptor, Result as SarifResult, ResultLevel, Run, Sarif, Tool,
    ToolComponent,
};

use crate::finding::{Severity, ANALYZER};
use crate::report::SecurityAudit;
use crate::rules::ALL;

/// The schema a SARIF 2.1.0 log names.
pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn level(severity: Severity) -> ResultLevel {
    match severity {
        Severity::Info => ResultLevel::Note,
        Severity::Low | Severity::Medium => ResultLevel::Warning,
        Severity::High | Severity::Critical => ResultLevel::Error,
    }
}

fn properties(values: BTreeMap<String, serde_json::Value>) -> PropertyBag {
    PropertyBag::builder().additional_properties(values).build()
}

/// The log of one scan.
pub fn log(audit: &SecurityAudit, tool_version: &str) -> Sarif {
    let rules: Vec<ReportingDescriptor> = ALL
        .iter()
        .map(|rule| {
            ReportingDescriptor::builder()
                .id(rule.id)
                .name(rule.title)
                .short_description(MultiformatMessageString::builder().text(rule.title).build())
                .help(MultiformatMessageString::builder().text(rule.remediation).build())
                .default_configuration(
                    ReportingConfiguration::builder()
                        .level(json!(level(rule.severity).to_string()))
                        .build(),
                )
                .properties(properties(BTreeMap::from([
                    ("severity".to_owned(), json!(rule.severity.as_str())),
                    ("category".to_owned(), json!(rule.category)),
                ])))
                .build()
        })
        .collect();
    let results: Vec<SarifResult> = audit
        .findings
        .iter()
        .map(|finding| {
            let index = ALL
                .iter()
                .position(|rule| rule.id == finding.rule_id)
                .unwrap_or(0);
            let locations = finding.file_path.as_ref().map(|file| {
                let region = finding
                    .line_number
                    .map(|line| Region::builder().start_line(i64::from(line)).build());
                let physical = PhysicalLocation::builder()
                    .artifact_location(ArtifactLocation::builder().uri(file.clone()).build());
                let physical = match region {
                    Some(region) => physical.region(region).build(),
                    None => physical.build(),
                };
                vec![Location::builder().physical_location(physical).build()]
            });
            let result = SarifResult::builder()
                .rule_id(finding.rule_id)
                .rule_index(index as i64)
                .level(level(finding.severity))
                .message(Message::builder().text(finding.message.clone()).build())
                .properties(properties(BTreeMap::from([
                    ("severity".to_owned(), json!(finding.severity.as_str())),
                    ("category".to_owned(), json!(finding.category)),
                    ("evidence".to_owned(), finding.metadata.clone()),
                ])));
            match locations {
                Some(locations) => result.locations(locations).build(),
                None => result.build(),
            }
        })
        .collect();
    let driver = ToolComponent::builder()
        .name(ANALYZER)
        .version(tool_version)
        .rules(rules)
        .build();
    let run = Run::builder()
        .tool(Tool::builder().driver(driver).build())
        .results(results)
        .properties(properties(BTreeMap::from([
            ("verdict".to_owned(), json!(audit.verdict.as_str())),
            (
                "scanDurationSeconds".to_owned(),
                json!(audit.scan_duration_seconds),
            ),
        ])))
        .build();
    Sarif::builder()
        .schema(SCHEMA)
        .version(json!("2.1.0"))
        .runs(vec![run])
        .build()
}
