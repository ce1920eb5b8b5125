//! `skillbox metrics-server`: the node's metrics over HTTP.
//!
//! A thread tails the node's audit log every [`TAIL_INTERVAL`] (from the
//! beginning of what the log still holds, rotations followed) and counts
//! each event into [`Metrics`]; each scrape first catches up with the log
//! and measures the shims in `/proc`, so a scrape never lags the log.
//! Counters start from what the log still holds when the server starts:
//! a restart re-reads it, which Prometheus sees as a counter reset.

mod http;
mod shims;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use skillbox_audit::metrics::{Metrics, PoolGauges};
use skillbox_audit::reader::{Cursor, Filter};

use super::{audit_log_dir, Failure};
use crate::cli::MetricsServerArgs;

/// How often the log is read between scrapes.
const TAIL_INTERVAL: Duration = Duration::from_millis(200);
/// Events counted per read of the log, so that a long backlog is read in
/// bounded memory.
const BATCH: usize = 10_000;
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 16;
/// Where the shims' processes are measured.
const PROC: &str = "/proc";

/// How long a scrape waits for the warm pool's answer.
const POOL_LIMIT: Duration = Duration::from_secs(1);

/// The metrics and how far the log has been read.
struct Tail {
    dir: PathBuf,
    pool: PathBuf,
    cursor: Cursor,
    metrics: Metrics,
}

impl Tail {
    /// Counts every event written since the last pass. A missing
    /// directory is a node where nothing has run yet, not an error.
    fn catch_up(&mut self) {
        if !self.dir.is_dir() {
            return;
        }
        loop {
            match self.cursor.read_at_most(&self.dir, &Filter::default(), BATCH) {
                Ok(pass) => {
                    for event in &pass.events {
                        self.metrics.observe(event);
                    }
                    self.metrics.malformed_lines(pass.malformed);
                    if !pass.more {
                        return;
                    }
                }
                Err(err) => {
                    self.metrics.read_error();
                    tracing::warn!(dir = %self.dir.display(), "cannot read the audit log: {err}");
                    return;
                }
            }
        }
    }

    /// The exposition text, up to date with the log and `/proc`.
    fn scrape(&mut self, proc_root: &Path) -> String {
        self.catch_up();
        let shims = shims::measure(proc_root);
        self.metrics.set_shims(shims.count, shims.resident_bytes);
        // No pool on the node is not an error: its gauges read 0.
        let pool = crate::pool::client::status(&self.pool, POOL_LIMIT)
            .ok()
            .map(|status| PoolGauges {
                ready: status.ready,
                booting: status.booting,
                running: status.running,
                ready_memory_bytes: status.ready_memory_bytes,
            });
        self.metrics.set_pool(pool.as_ref());
        self.metrics.render()
    }
}

/// Decrements the count of open connections when a handler ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn serve(args: MetricsServerArgs) -> Result<ExitCode, Failure> {
    let dir = audit_log_dir(args.log_dir, &args.node)?;
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener
        .local_addr()
        .context("the listening socket has no address")?;
    let tail = Arc::new(Mutex::new(Tail {
        dir: dir.clone(),
        pool: args.pool.clone(),
        cursor: Cursor::default(),
        metrics: Metrics::new().context("cannot set up the metrics")?,
    }));
    std::thread::Builder::new()
        .name("tail".to_owned())
        .spawn({
            let tail = Arc::clone(&tail);
            move || loop {
                tail.lock().unwrap_or_else(PoisonError::into_inner).catch_up();
                std::thread::sleep(TAIL_INTERVAL);
            }
        })
        .context("cannot start the log-tailing thread")?;
    eprintln!(
        "skillbox metrics-server: serving http://{bound}/metrics from {}",
        dir.display()
    );
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!("cannot accept a connection: {err}");
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let slot = Slot(Arc::clone(&open));
        let tail = Arc::clone(&tail);
        let spawned = std::thread::Builder::new()
            .name("scrape".to_owned())
            .spawn(move || {
                let _slot = slot;
                http::serve_connection(stream, || {
                    tail.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .scrape(Path::new(PROC))
                });
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot start a thread for a connection: {err}");
        }
    }
}
