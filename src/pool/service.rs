//! `skillbox pool serve`: keeps pre-booted sandboxes of the skills it was
//! asked to run, hands each to exactly one `skillbox run`, and boots its
//! replacement in the background.
//!
//! What is kept warm is keyed by skill folder, base root filesystem and
//! whether the run hands in inputs or takes out outputs (those change the
//! sandbox's mounts). A run the pool cannot serve (nothing ready, another
//! node config or runsc, its own egress settings) is answered `Cold` and
//! runs without the pool. At most `capacity` sandboxes are ready or
//! booting, at most `per_skill` of one key; the least recently used keys
//! are dropped first. On SIGTERM or SIGINT the pool stops listening,
//! interrupts what runs, removes every sandbox and its socket, and exits.

use std::collections::BTreeMap;
use std::io::{self, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use policy_compiler::compile::process_of;
use policy_compiler::CompileOptions;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::warm::WarmSandbox;
use super::wire::{self, ClientMessage, Reply, Request, RunRequest, SkillStatus, Status};
use crate::cli::{EgressArgs, RuntimeArgs, StateArgs};
use crate::commands::run::{Plan, Preboot, RunSummary};
use crate::commands::{base_rootfs_dir, load_skill, Node};
use crate::runtime::execution::{Interrupter, Interrupts};

/// How long a client may take to send its request.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// How long shutdown waits for interrupted executions to be torn down.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

/// What the pool serves and how much it keeps.
pub struct PoolSettings {
    pub socket: PathBuf,
    pub capacity: usize,
    pub per_skill: usize,
    pub node: Node,
    /// The node config as given (`None`: the default), which runs must match.
    pub node_config: Option<PathBuf>,
    pub runsc: PathBuf,
    pub state_dir: PathBuf,
    /// Kept warm from the start.
    pub warm: Vec<WarmKey>,
}

/// What makes two runs' sandboxes interchangeable before they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmKey {
    pub skill_dir: PathBuf,
    pub base_rootfs: PathBuf,
    pub inputs: bool,
    pub output: bool,
}

impl WarmKey {
    /// The key of `skill_dir` (resolved, so that every path to one folder
    /// is one key) on `base_rootfs`, with or without inputs and output.
    pub fn new(skill_dir: &Path, base_rootfs: &Path, inputs: bool, output: bool) -> anyhow::Result<WarmKey> {
        Ok(WarmKey {
            skill_dir: skill_dir
                .canonicalize()
                .with_context(|| format!("{}: cannot resolve", skill_dir.display()))?,
            base_rootfs: base_rootfs_dir(base_rootfs)?,
            inputs,
            output,
        })
    }

    fn of(request: &RunRequest) -> anyhow::Result<WarmKey> {
        WarmKey::new(
            &request.skill_dir,
            &request.base_rootfs,
            !request.inputs.is_empty(),
            request.output.is_some(),
        )
    }
}

/// One key's sandboxes.
struct Kept {
    key: WarmKey,
    ready: Vec<WarmSandbox>,
    booting: usize,
    /// Why its last boot failed; cleared when a run asks for it again.
    failure: Option<String>,
}

#[derive(Default)]
struct State {
    /// Most recently used first.
    kept: Vec<Kept>,
    running: BTreeMap<String, Interrupter>,
    served: u64,
    declined: u64,
    stopping: bool,
}

impl State {
    fn held(&self) -> usize {
        self.kept.iter().map(|kept| kept.ready.len() + kept.booting).sum()
    }

    fn kept_mut(&mut self, key: &WarmKey) -> Option<&mut Kept> {
        self.kept.iter_mut().find(|kept| kept.key == *key)
    }
}

pub struct Pool {
    settings: PoolSettings,
    launcher_dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the booter (something to boot) and shutdown (something ended).
    changed: Condvar,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    fn new(settings: PoolSettings, launcher_dir: PathBuf) -> Pool {
        let mut state = State::default();
        for key in &settings.warm {
            state.kept.push(Kept {
                key: key.clone(),
                ready: Vec::new(),
                booting: 0,
                failure: None,
            });
        }
        Pool {
            settings,
            launcher_dir,
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    /// How many keys are kept: enough for each to hold `per_skill`.
    fn max_keys(&self) -> usize {
        (self.settings.capacity / self.settings.per_skill.max(1)).max(1)
    }

    /// The next key short of sandboxes, counted as booting; `None` once
    /// the pool stops.
    fn next_to_boot(&self) -> Option<WarmKey> {
        let mut state = lock(&self.state);
        loop {
            if state.stopping {
                return None;
            }
            let room = state.held() < self.settings.capacity;
            let per_skill = self.settings.per_skill;
            let short = state
                .kept
                .iter_mut()
                .find(|kept| kept.failure.is_none() && kept.ready.len() + kept.booting < per_skill);
            if let (true, Some(kept)) = (room, short) {
                kept.booting += 1;
                return Some(kept.key.clone());
            }
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn boot_loop(&self) {
        while let Some(key) = self.next_to_boot() {
            let booted = self.boot(&key);
            let mut discard = None;
            {
                let mut state = lock(&self.state);
                let stopping = state.stopping;
                match state.kept_mut(&key) {
                    Some(kept) => {
                        kept.booting -= 1;
                        match booted {
                            Ok(warm) if !stopping => kept.ready.push(warm),
                            Ok(warm) => discard = Some(warm),
                            Err(err) => {
                                tracing::warn!(skill = %key.skill_dir.display(), "cannot boot a sandbox: {err:#}");
                                kept.failure = Some(format!("{err:#}"));
                            }
                        }
                    }
                    None => discard = booted.ok(),
                }
            }
            self.changed.notify_all();
            // Torn down outside the lock.
            drop(discard);
        }
    }

    fn boot(&self, key: &WarmKey) -> anyhow::Result<WarmSandbox> {
        let package = load_skill(&key.skill_dir)?;
        let egress = EgressArgs {
            dns_upstreams: Vec::new(),
            audit_log: None,
            ttl_grace_secs: None,
        };
        let runtime = RuntimeArgs {
            runsc: Some(self.settings.runsc.clone()),
            state: StateArgs {
                state_dir: self.settings.state_dir.clone(),
            },
        };
        WarmSandbox::boot(Plan {
            package,
            node: &self.settings.node,
            base_rootfs: &key.base_rootfs,
            args: &[],
            inputs: &[],
            output: None,
            egress: &egress,
            runtime: &runtime,
            stdio: None,
            observe: false,
            preboot: Some(Preboot {
                launcher_dir: &self.launcher_dir,
                inputs: key.inputs,
                output: key.output,
            }),
        })
    }

    /// Why this pool cannot serve `request`, if it cannot.
    fn declines(&self, request: &RunRequest) -> Option<String> {
        let settings = &self.settings;
        if request.node_config != settings.node_config {
            return Some(format!(
                "the run's node config differs from the pool's ({})",
                settings.node.name
            ));
        }
        if request.runsc != settings.runsc {
            return Some(format!(
                "the run uses runsc {}, the pool {}",
                request.runsc.display(),
                settings.runsc.display()
            ));
        }
        if request.state_dir != settings.state_dir {
            return Some(format!(
                "the run keeps its state in {}, the pool in {}",
                request.state_dir.display(),
                settings.state_dir.display()
            ));
        }
        if request.egress_overridden {
            return Some("the run sets its own egress settings or audit log".to_owned());
        }
        None
    }

    /// A ready sandbox of `key`, or why there is none. Marks `key` as
    /// wanted, most recently, so that the booter keeps it warm.
    fn take(&self, key: &WarmKey) -> Result<WarmSandbox, String> {
        let mut evicted = Vec::new();
        let taken = {
            let mut state = lock(&self.state);
            let position = state.kept.iter().position(|kept| kept.key == *key);
            let mut kept = match position {
                Some(index) => state.kept.remove(index),
                None => Kept {
                    key: key.clone(),
                    ready: Vec::new(),
                    booting: 0,
                    failure: None,
                },
            };
            let failure = kept.failure.take();
            let taken = kept.ready.pop();
            state.kept.insert(0, kept);
            while state.kept.len() > self.max_keys() {
                let dropped = state.kept.pop().expect("more than one key");
                evicted.extend(dropped.ready);
            }
            match taken {
                Some(warm) => Ok(warm),
                None => Err(match failure {
                    Some(failure) => {
                        format!("the pool's last boot of this skill failed ({failure}); it tries again")
                    }
                    None => "no pre-booted sandbox of this skill is ready yet; the pool boots one".to_owned(),
                }),
            }
        };
        self.changed.notify_all();
        drop(evicted);
        taken
    }

    /// Drops every ready sandbox of `key` (its skill changed).
    fn discard(&self, key: &WarmKey) {
        let stale = lock(&self.state)
            .kept_mut(key)
            .map(|kept| std::mem::take(&mut kept.ready))
            .unwrap_or_default();
        self.changed.notify_all();
        drop(stale);
    }

    pub fn status(&self) -> Status {
        let state = lock(&self.state);
        let mut status = Status {
            running: state.running.len(),
            served: state.served,
            declined: state.declined,
            capacity: self.settings.capacity,
            ..Status::default()
        };
        for kept in &state.kept {
            status.ready += kept.ready.len();
            status.booting += kept.booting;
            status.ready_memory_bytes += kept.ready.iter().map(WarmSandbox::memory_bytes).sum::<u64>();
            status.skills.push(SkillStatus {
                skill_dir: kept.key.skill_dir.clone(),
                base_rootfs: kept.key.base_rootfs.clone(),
                inputs: kept.key.inputs,
                output: kept.key.output,
                ready: kept.ready.len(),
                booting: kept.booting,
                failure: kept.failure.clone(),
            });
        }
        status
    }

    fn serve_connection(&self, stream: UnixStream) -> io::Result<()> {
        // A client that connects and says nothing does not hold a thread.
        stream.set_read_timeout(Some(REQUEST_LIMIT))?;
        let line = wire::read_line(&mut BufReader::new(&stream))?;
        stream.set_read_timeout(None)?;
        match wire::parse::<Request>(&line, "request")? {
            Request::Status => wire::send(&stream, &Reply::Status(self.status())),
            Request::Run(request) => self.serve_run(stream, *request),
        }
    }

    fn decline(&self, stream: &UnixStream, reason: String) -> io::Result<()> {
        tracing::debug!(%reason, "run declined");
        lock(&self.state).declined += 1;
        wire::send(stream, &Reply::Cold { reason })
    }

    fn serve_run(&self, stream: UnixStream, request: RunRequest) -> io::Result<()> {
        if let Some(reason) = self.declines(&request) {
            return self.decline(&stream, reason);
        }
        // What a cold run reports better (a bad folder or policy) is left to it.
        let key = match WarmKey::of(&request) {
            Ok(key) => key,
            Err(err) => return self.decline(&stream, format!("{err:#}")),
        };
        let warm = match self.take(&key) {
            Ok(warm) => warm,
            Err(reason) => return self.decline(&stream, reason),
        };
        let package = match load_skill(&key.skill_dir) {
            Ok(package) => package,
            Err(err) => return self.decline(&stream, err.to_string()),
        };
        if package.digest != warm.skill_digest {
            // Answered first: the run need not wait for the stale ones' teardown.
            let replied = self.decline(
                &stream,
                "the skill changed since its sandboxes were booted".to_owned(),
            );
            drop(warm);
            self.discard(&key);
            return replied;
        }
        let options = CompileOptions {
            node: &self.settings.node.config,
            node_config_name: &self.settings.node.name,
            base_rootfs: &key.base_rootfs,
            extra_args: &request.args,
            env: &request.env,
            cgroups_path: None,
        };
        let (args, env, warnings) = match process_of(&package, &options) {
            Ok(process) => process,
            Err(err) => return self.decline(&stream, err.to_string()),
        };
        let handed = match warm.hand_out(&args, &env, &request.inputs) {
            Ok(handed) => handed,
            Err(err) => {
                return wire::send(
                    &stream,
                    &Reply::Failed {
                        error: format!("{err:#}"),
                    },
                )
            }
        };
        let execution_id = handed.running.execution_id().to_owned();
        let fds = handed.stdio.each_ref().map(AsRawFd::as_raw_fd);
        let started = Reply::Started {
            execution_id: execution_id.clone(),
            warnings,
        };
        // On failure the running sandbox is dropped: killed and torn down.
        wire::send_with_fds(&stream, &started, &fds)?;
        drop(handed.stdio);
        let interrupts = Interrupts::by_hand();
        let interrupter = interrupts.waker();
        // Before the execution is listed as running: a failure here returns
        // with nothing listed for shutdown to wait on.
        forward_interrupts(&stream, interrupter.clone())?;
        {
            let mut state = lock(&self.state);
            state.served += 1;
            state.running.insert(execution_id.clone(), interrupter);
        }
        let finished = handed
            .running
            .wait_and_finish(&interrupts, request.output.as_deref());
        let replied = match finished {
            Ok(executed) => wire::send(&stream, &Reply::Finished(Box::new(RunSummary::of(&executed)))),
            Err(err) => wire::send(
                &stream,
                &Reply::Failed {
                    error: format!("{err:#}"),
                },
            ),
        };
        // After the reply: shutdown waits for this, and then the process ends.
        lock(&self.state).running.remove(&execution_id);
        self.changed.notify_all();
        replied
    }

    /// Removes every sandbox: the ready ones now, the running ones once
    /// their executions (interrupted) have ended.
    fn shut_down(&self) {
        let ready: Vec<WarmSandbox> = {
            let mut state = lock(&self.state);
            state.stopping = true;
            for interrupter in state.running.values() {
                interrupter.interrupt(SIGTERM);
            }
            state
                .kept
                .iter_mut()
                .flat_map(|kept| std::mem::take(&mut kept.ready))
                .collect()
        };
        self.changed.notify_all();
        drop(ready);
        let state = lock(&self.state);
        let (_state, waited) = self
            .changed
            .wait_timeout_while(state, SHUTDOWN_LIMIT, |state| {
                !state.running.is_empty() || state.kept.iter().any(|kept| kept.booting > 0)
            })
            .unwrap_or_else(PoisonError::into_inner);
        if waited.timed_out() {
            tracing::warn!(
                "executions still running after {} s; `skillbox gc` removes what they leave",
                SHUTDOWN_LIMIT.as_secs()
            );
        }
    }
}

/// Reads the client's messages while its execution runs: an `Interrupt`
/// kills the sandbox as that signal would; a client gone (end of stream)
/// kills it too.
fn forward_interrupts(stream: &UnixStream, interrupter: Interrupter) -> io::Result<()> {
    let stream = stream.try_clone()?;
    std::thread::Builder::new()
        .name("client".to_owned())
        .spawn(move || {
            let mut reader = BufReader::new(&stream);
            loop {
                match wire::read_line(&mut reader)
                    .and_then(|line| wire::parse::<ClientMessage>(&line, "message"))
                {
                    Ok(ClientMessage::Interrupt { signal }) => interrupter.interrupt(signal),
                    Err(_) => {
                        interrupter.interrupt(nix::sys::signal::SIGKILL as i32);
                        return;
                    }
                }
            }
        })
        .map(drop)
}

/// The static launcher written where sandboxes bind it from: a directory
/// of this process's own, so that pools never share one.
fn install_launcher(state_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = state_dir.join(format!("pool-launcher-{}", std::process::id()));
    let binary = dir.join("skillbox-launch");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    std::fs::write(&binary, skillbox_launcher::LAUNCHER)
        .with_context(|| format!("{}: cannot write", binary.display()))?;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("{}: cannot make executable", binary.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("{}: cannot set its mode", dir.display()))?;
    Ok(dir)
}

/// Launcher directories of pools that are gone.
fn remove_stale_launchers(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pool-launcher-")
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Binds the socket, refusing to replace one a live pool answers on.
fn listen(socket: &Path) -> anyhow::Result<UnixListener> {
    if UnixStream::connect(socket).is_ok() {
        anyhow::bail!("{}: another pool is serving on it", socket.display());
    }
    let _ = std::fs::remove_file(socket);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("{}: cannot listen", socket.display()))?;
    // Runs hand the pool their environment: root only.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("{}: cannot set its mode", socket.display()))?;
    Ok(listener)
}

/// Serves until SIGTERM or SIGINT, then empties the pool.
pub fn serve(settings: PoolSettings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("{}: cannot create", settings.state_dir.display()))?;
    remove_stale_launchers(&settings.state_dir);
    // Caught before the socket exists: whoever sees the socket may stop the
    // pool at once, and a signal must not end it without its cleanup. The
    // thread that takes them starts once the socket exists, so that it can
    // always wake the accept below through it.
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot catch signals")?;
    let listener = listen(&settings.socket)?;
    let socket = settings.socket.clone();
    let launcher_dir = install_launcher(&settings.state_dir)?;
    let pool = Arc::new(Pool::new(settings, launcher_dir.clone()));
    let booter = std::thread::Builder::new()
        .name("booter".to_owned())
        .spawn({
            let pool = Arc::clone(&pool);
            move || pool.boot_loop()
        })
        .context("cannot start the booting thread")?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::spawn({
        let (stop, socket) = (Arc::clone(&stop), socket.clone());
        move || {
            if signals.forever().next().is_some() {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                // Wakes the accept below.
                let _ = UnixStream::connect(&socket);
            }
        }
    });
    eprintln!("skillbox pool: serving on {}", socket.display());
    for stream in listener.incoming() {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!("cannot accept a connection: {err}");
                continue;
            }
        };
        let pool = Arc::clone(&pool);
        let spawned = std::thread::Builder::new()
            .name("connection".to_owned())
            .spawn(move || {
                if let Err(err) = pool.serve_connection(stream) {
                    tracing::debug!("connection ended: {err}");
                }
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot start a thread for a connection: {err}");
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    pool.shut_down();
    let _ = booter.join();
    let _ = std::fs::remove_dir_all(&launcher_dir);
    eprintln!("skillbox pool: stopped; every sandbox removed");
    Ok(())
}
