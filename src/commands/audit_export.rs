//! `skillbox audit export`: the registry exporter. Lifecycle and
//! policy-violation events (`skillbox_audit::registry`) go from the JSON
//! Lines log into the registry's PostgreSQL `audit_log` table.
//!
//! The log is the exporter's buffer: it reads at most `--batch` events past
//! its cursor, inserts their rows in one transaction, and only then moves
//! and saves the cursor. While the database is away it retries the same
//! batch with exponential backoff (0.1 s doubling to 5 s); events keep
//! accumulating in the log meanwhile and are replayed when it is back.
//! Each row's `request_id` is a digest of its event's line, and a row is
//! inserted only if none with that id exists: a batch retried after a
//! commit whose answer was lost inserts nothing twice.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use postgres::{Client, NoTls};
use skillbox_audit::reader::{Cursor, Filter};
use skillbox_audit::registry::{row, Row, TARGET_TYPE};

use super::{audit_log_dir, Failure};
use crate::cli::ExportArgs;

/// How often `--follow` looks for new events when the log is quiet.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const USER_AGENT: &str = concat!("skillbox/", env!("CARGO_PKG_VERSION"));

const INSERT: &str = "INSERT INTO audit_log \
    (action, target_type, target_id, request_id, user_agent, detail_json, created_at) \
    SELECT $1::varchar, $2::varchar, $3::bigint, $4::varchar, $5::varchar, $6::text::jsonb, $7::text::timestamptz \
    WHERE NOT EXISTS (SELECT 1 FROM audit_log WHERE request_id = $4::varchar)";

/// Inserts `rows` in one transaction; returns how many were new.
fn insert(client: &mut Client, rows: &[Row]) -> Result<u64, postgres::Error> {
    let mut transaction = client.transaction()?;
    let statement = transaction.prepare(INSERT)?;
    let mut inserted = 0;
    for row in rows {
        inserted += transaction.execute(
            &statement,
            &[
                &row.action,
                &TARGET_TYPE,
                &row.target_id,
                &row.request_id,
                &USER_AGENT,
                &row.detail.to_string(),
                &row.created_at,
            ],
        )?;
    }
    transaction.commit()?;
    Ok(inserted)
}

/// The database connection, made again after any failure.
struct Registry {
    database: String,
    client: Option<Client>,
}

impl Registry {
    fn insert(&mut self, rows: &[Row]) -> Result<u64, postgres::Error> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(Client::connect(&self.database, NoTls)?),
        };
        let result = insert(client, rows);
        if result.is_err() {
            // Whatever state the session is in, start over.
            self.client = None;
        }
        result
    }

    /// Inserts `rows`, retrying with backoff; gives up after `give_up`
    /// (`None`: never).
    fn insert_retrying(&mut self, rows: &[Row], give_up: Option<Duration>) -> anyhow::Result<u64> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.insert(rows) {
                Ok(inserted) => return Ok(inserted),
                Err(err) => {
                    if give_up.is_some_and(|limit| started.elapsed() >= limit) {
                        return Err(err).context("the registry database stayed unreachable; the events stay in the audit log for the next export");
                    }
                    eprintln!(
                        "skillbox audit export: {:#}; retrying in {backoff:?}",
                        anyhow::Error::from(err)
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

pub fn export(args: ExportArgs) -> Result<ExitCode, Failure> {
    let dir = audit_log_dir(args.log_dir.clone(), &args.node)?;
    let mut cursor = Cursor::load(&args.cursor).map_err(anyhow::Error::msg)?;
    let mut registry = Registry {
        database: args.database.clone(),
        client: None,
    };
    let give_up = (!args.follow).then(|| Duration::from_secs(args.give_up_after));
    let (mut inserted, mut seen) = (0u64, 0usize);
    loop {
        let mut next = cursor.clone();
        let pass = match dir.is_dir() {
            true => next
                .read_at_most(&dir, &Filter::default(), args.batch as usize)
                .with_context(|| format!("{}: cannot read the audit log", dir.display()))?,
            false if args.follow => Default::default(),
            false => return Err(anyhow::anyhow!("{}: no audit log here", dir.display()).into()),
        };
        let rows: Vec<Row> = pass
            .events
            .iter()
            .zip(&pass.lines)
            .filter_map(|(event, line)| row(event, line))
            .collect();
        if !rows.is_empty() {
            inserted += registry.insert_retrying(&rows, give_up)?;
            seen += rows.len();
        }
        cursor = next;
        save(&cursor, &args.cursor)?;
        if !pass.more {
            if !args.follow {
                eprintln!("skillbox audit export: {seen} row(s) for the registry, {inserted} new");
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(FOLLOW_INTERVAL);
        }
    }
}

fn save(cursor: &Cursor, path: &Path) -> anyhow::Result<()> {
    cursor
        .save(path)
        .with_context(|| format!("{}: cannot save the export cursor", path.display()))
}
