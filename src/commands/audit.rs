//! `skillbox audit`: the node's audit log, filtered, in time order; with
//! `--follow`, new events as they are written (rotations included).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use skillbox_audit::reader::{Cursor, Filter};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{audit_log_dir, emit, Failure};
use crate::cli::AuditArgs;

/// How often `--follow` looks for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

fn when(event: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(event["timestamp"].as_str()?, &Rfc3339).ok()
}

/// One JSON line per event, in time order (file order among equals).
fn print(mut events: Vec<Value>) -> std::io::Result<()> {
    events.sort_by_key(when);
    let mut text = String::new();
    for event in events {
        text.push_str(&event.to_string());
        text.push('\n');
    }
    emit(&text)
}

pub fn audit(args: AuditArgs) -> Result<ExitCode, Failure> {
    let dir = audit_log_dir(args.log_dir, &args.node)?;
    let filter = Filter {
        skill: args.skill,
        execution_id: args.execution_id,
        types: args.types,
        verdict: args.verdict,
    };
    let mut cursor = Cursor::default();
    if !args.follow && !dir.is_dir() {
        return Err(anyhow::anyhow!(
            "{}: no audit log here (nothing has run on this node yet, or give --log-dir)",
            dir.display()
        )
        .into());
    }
    loop {
        if dir.is_dir() {
            let pass = cursor
                .read_new(&dir, &filter)
                .with_context(|| format!("{}: cannot read the audit log", dir.display()))?;
            if pass.malformed > 0 {
                eprintln!(
                    "skillbox audit: skipped {} line(s) that are not JSON events",
                    pass.malformed
                );
            }
            print(pass.events)?;
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}
