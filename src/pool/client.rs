//! `skillbox run`'s side of the pool: ask for a pre-booted sandbox, and
//! when one is handed out, relay its stdio and wait for how it ended.

use std::io::{self, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::wire::{self, ClientMessage, Reply, Request, RunRequest, Status};
use crate::cli::RunArgs;
use crate::commands::run::RunSummary;
use crate::commands::{absolute, invoking_env, print_warnings};
use crate::runtime::execution::{Interrupts, Wake};
use crate::runtime::stdio::relay_handed_out;

/// How long the pool may take to answer whether it serves a run (it
/// copies the run's inputs first).
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// Runs `args` in a pre-booted sandbox of the pool at `socket`; `None`
/// when there is no pool there or it does not serve this run (the caller
/// then runs it cold). Errors are the run's own, as a cold run reports them.
pub fn run(
    socket: &Path,
    args: &RunArgs,
    runsc: &Path,
    interrupts: &Interrupts,
) -> anyhow::Result<Option<RunSummary>> {
    let stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(err) => {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::debug!(socket = %socket.display(), "no pool: {err}");
            }
            return Ok(None);
        }
    };
    let request = RunRequest {
        skill_dir: absolute(&args.skill_dir)?,
        base_rootfs: absolute(&args.base_rootfs)?,
        node_config: args.node.node_config.as_deref().map(absolute).transpose()?,
        runsc: runsc.to_owned(),
        state_dir: absolute(&args.runtime.state.state_dir)?,
        egress_overridden: !args.egress.dns_upstreams.is_empty()
            || args.egress.audit_log.is_some()
            || args.egress.ttl_grace_secs.is_some(),
        args: args.args.clone(),
        env: invoking_env(),
        inputs: args
            .inputs
            .iter()
            .map(|path| absolute(path))
            .collect::<Result<_, _>>()?,
        output: args.output.as_deref().map(absolute).transpose()?,
    };
    let answer = stream
        .set_read_timeout(Some(ANSWER_LIMIT))
        .and_then(|()| wire::send(&stream, &Request::Run(Box::new(request))))
        .and_then(|()| wire::receive_with_fds(&stream));
    let (line, fds, rest) = match answer {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!(
                "skillbox: warning: the pool at {} did not answer ({err}); running without it",
                socket.display()
            );
            return Ok(None);
        }
    };
    let warnings = match wire::parse::<Reply>(&line, "pool reply")? {
        Reply::Cold { reason } => {
            tracing::info!(%reason, "the pool does not serve this run");
            return Ok(None);
        }
        Reply::Failed { error } => bail!("{error}"),
        Reply::Started { warnings, .. } => warnings,
        other => bail!("the pool answered {other:?} to a run"),
    };
    print_warnings(&warnings);
    let [stdin, stdout, stderr]: [_; 3] = fds
        .try_into()
        .map_err(|fds: Vec<_>| anyhow::anyhow!("the pool handed out {} descriptors, not 3", fds.len()))?;
    let relays = relay_handed_out(stdin, stdout, stderr).context("cannot relay the skill's stdio")?;
    stream.set_read_timeout(None)?;
    let ended = wait_for_end(&stream, rest, interrupts);
    relays.finish();
    ended.map(Some)
}

/// Reads the pool's last reply while forwarding the signals that reach
/// `skillbox run` to it.
fn wait_for_end(stream: &UnixStream, rest: Vec<u8>, interrupts: &Interrupts) -> anyhow::Result<RunSummary> {
    let (sender, ended) = mpsc::channel();
    let waker = interrupts.waker();
    let reading = stream.try_clone()?;
    std::thread::spawn(move || {
        let mut reader = BufReader::new(io::Cursor::new(rest).chain(&reading));
        let reply = wire::read_line(&mut reader)
            .context("the pool ended before the execution did (see its log)")
            .and_then(|line| Ok(wire::parse::<Reply>(&line, "pool reply")?));
        let _ = sender.send(reply);
        waker.done();
    });
    while let Wake::Signal(signal) = interrupts.next() {
        let _ = wire::send(stream, &ClientMessage::Interrupt { signal });
    }
    match ended.recv().context("the pool's reply was lost")?? {
        Reply::Finished(summary) => Ok(*summary),
        Reply::Failed { error } => bail!("{error}"),
        other => bail!("the pool answered {other:?} at the end of a run"),
    }
}

/// What the pool at `socket` holds; it must answer within `limit`.
pub fn status(socket: &Path, limit: Duration) -> anyhow::Result<Status> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("{}: no pool answers there", socket.display()))?;
    stream.set_read_timeout(Some(limit))?;
    wire::send(&stream, &Request::Status).context("cannot ask the pool")?;
    let line = wire::read_line(&mut BufReader::new(&stream)).context("the pool did not answer")?;
    match wire::parse::<Reply>(&line, "pool reply")? {
        Reply::Status(status) => Ok(status),
        other => bail!("the pool answered {other:?} to a status request"),
    }
}
