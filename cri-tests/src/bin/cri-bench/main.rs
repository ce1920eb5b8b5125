//! `cri-bench`: skillbox under Kubernetes' CRI, against containerd's runc
//! shim driving runsc (handler `runc-runsc`, one gVisor sandbox per
//! container: [`skillbox_cri_tests::runsc_as_runc`]) measured in the same
//! run, with plain `runc` as a second reference. One private containerd
//! (the CRI suite's node, `Node::start_with`) serves all three handlers.
//!
//! 1. RunPodSandbox latency and 2. a pod's start to exit seen
//!    (RunPodSandbox, CreateContainer and StartContainer of a busybox
//!    `/bin/true`, until ContainerStatus says EXITED), from the same pods:
//!    `--pods` per handler one after the other, the handlers' order rotated
//!    each round, after `--warmup` rounds; each pod torn down as kubelet
//!    does and checked gone before the next.
//! 2. `--mem-pods` pods at once per handler (each a busybox `sleep`),
//!    started by `--parallel` workers: how long until all run, then the
//!    host memory they add (PSS and RSS of every process they brought,
//!    [`procs`]) and their pod cgroups' memory, per pod; then all torn
//!    down and checked gone.
//!
//! `bench/cri.sh` builds and runs it as root. Exit status 0 when every
//! figure was measured and nothing was left behind, 1 otherwise, 2 for bad
//! arguments; a missing prerequisite panics naming its Debian package.

mod measure;
mod procs;
mod report;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use skillbox_cri_tests::containerd::profile_dir;
use skillbox_cri_tests::{Handler, Node, NodeOptions};

/// The handlers measured, ours first, then the baseline, then the reference.
const HANDLERS: [Handler; 3] = [Handler::Skillbox, Handler::RuncRunsc, Handler::Runc];

/// The benchmark's parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// Pods per handler for the latency figures.
    pub pods: usize,
    /// Untimed rounds before them.
    pub warmup: usize,
    /// Pods at once for the memory figure.
    pub mem_pods: usize,
    /// Workers starting them.
    pub parallel: usize,
    /// Workers removing them.
    pub stop_parallel: usize,
    /// How long the pods run before their memory is read.
    pub settle: Duration,
}

const USAGE: &str = "usage: cri-bench [--pods N (20)] [--warmup N (2)] [--mem-pods N (50)] \
                     [--parallel N (= --mem-pods)] [--stop-parallel N (= --parallel)] [--settle-ms N (3000)]";

fn parse_args(args: &[String]) -> Result<Params, String> {
    let mut params = Params {
        pods: 20,
        warmup: 2,
        mem_pods: 50,
        parallel: 0,
        stop_parallel: 0,
        settle: Duration::from_millis(3000),
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .map_err(|err| format!("{flag}: {err}"))?;
        match flag.as_str() {
            "--pods" => params.pods = value,
            "--warmup" => params.warmup = value,
            "--mem-pods" => params.mem_pods = value,
            "--parallel" => params.parallel = value,
            "--stop-parallel" => params.stop_parallel = value,
            "--settle-ms" => params.settle = Duration::from_millis(value as u64),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if params.pods == 0 || params.mem_pods == 0 {
        return Err("--pods and --mem-pods must be at least 1".to_owned());
    }
    if params.parallel == 0 {
        params.parallel = params.mem_pods;
    }
    if params.stop_parallel == 0 {
        params.stop_parallel = params.parallel;
    }
    Ok(params)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let params = match parse_args(&args) {
        Ok(params) => params,
        Err(err) => {
            eprintln!("cri-bench: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cri-bench: run this as root: containerd, runc and runsc need it");
        return ExitCode::FAILURE;
    }
    let wrapper = profile_dir().join("runsc-as-runc");
    if !wrapper.is_file() {
        eprintln!(
            "cri-bench: {} is missing: build it with `cargo build --release -p skillbox-shim -p skillbox-cri-tests`",
            wrapper.display()
        );
        return ExitCode::FAILURE;
    }
    match run(&params, wrapper) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cri-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(params: &Params, wrapper: PathBuf) -> Result<(), String> {
    report::section("Setup");
    let node = Arc::new(Node::start_with(&NodeOptions {
        runc_runsc: Some(wrapper),
        ..NodeOptions::default()
    }));
    report::host(&node);
    let dir = node.dir().to_owned();
    let netns = node.netns().name().to_owned();
    let result = measure::all(&node, params, &HANDLERS);
    let mut problems: Vec<String> = match &result {
        Ok(figures) => figures
            .crowds
            .iter()
            .flat_map(|(_, crowd)| crowd.problems.clone())
            .collect(),
        Err(err) => vec![err.clone()],
    };
    if !problems.is_empty() {
        // containerd's log (the shims' logs with it) goes with the node.
        let kept = std::env::temp_dir().join(format!("cri-bench-containerd-{}.log", std::process::id()));
        match std::fs::write(&kept, node.log()) {
            Ok(()) => problems.push(format!("containerd's log is kept in {}", kept.display())),
            Err(err) => problems.push(format!("keeping containerd's log in {}: {err}", kept.display())),
        }
    }
    // Every pod is gone by now, measured or not: the node is the last owner.
    match Arc::try_unwrap(node) {
        Ok(node) => drop(node),
        Err(_) => return Err("a pod still holds the node".to_owned()),
    }
    let left = measure::node_leftovers(&dir, &netns);
    if let Ok(figures) = &result {
        report::results(params, figures);
    }
    if left.is_empty() {
        println!(
            "\nnothing left behind: no process names {}, it and netns {netns} are gone",
            dir.display()
        );
    } else {
        problems.push(format!(
            "left behind after the node stopped:\n  {}",
            left.join("\n  ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn defaults_and_flags() {
        let params = parse_args(&[]).unwrap();
        assert_eq!(
            (params.pods, params.warmup, params.mem_pods, params.parallel),
            (20, 2, 50, 50)
        );
        let params = parse_args(&strings(&[
            "--pods",
            "5",
            "--mem-pods",
            "10",
            "--settle-ms",
            "500",
        ]))
        .unwrap();
        assert_eq!((params.pods, params.mem_pods, params.parallel), (5, 10, 10));
        assert_eq!(params.settle, Duration::from_millis(500));
        let params = parse_args(&strings(&["--parallel", "4"])).unwrap();
        assert_eq!((params.parallel, params.stop_parallel), (4, 4));
        assert_eq!(
            parse_args(&strings(&["--stop-parallel", "1"]))
                .unwrap()
                .stop_parallel,
            1
        );
        assert!(parse_args(&strings(&["--pods"])).is_err());
        assert!(parse_args(&strings(&["--pods", "x"])).is_err());
        assert!(parse_args(&strings(&["--pods", "0"])).is_err());
        assert!(parse_args(&strings(&["--nope", "1"])).is_err());
    }
}
