//! The benchmark's two phases on one node: pods one after the other (the
//! latency figures) and many pods at once (start time and memory), each
//! pod torn down as kubelet does and checked gone before the figures count.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use skillbox_cri_tests::leftovers::{self, PodTraces};
use skillbox_cri_tests::pod::cgroup_parent;
use skillbox_cri_tests::{ContainerSpec, Handler, Node, Pod};

use crate::procs::{self, Memory};
use crate::{report, Params};

/// How long a `true` container may take to be seen exited, and a `sleep`
/// one to be seen running, before the benchmark fails.
const EXIT_LIMIT: Duration = Duration::from_secs(60);
const RUNNING_LIMIT: Duration = Duration::from_secs(180);
/// How long a removed pod's traces may take to go.
const GONE_LIMIT: Duration = Duration::from_secs(15);

/// One pod of the latency phase.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The RunPodSandbox call.
    pub run: Duration,
    /// From RunPodSandbox's start until ContainerStatus said EXITED.
    pub exit_seen: Duration,
    /// Stop/Remove of the container and the sandbox.
    pub teardown: Duration,
}

/// The many-pods phase of one handler.
#[derive(Debug, Clone)]
pub struct Crowd {
    pub pods: usize,
    /// From the first RunPodSandbox until every container ran.
    pub start_all: Duration,
    /// Each process the pods added: its kind and memory.
    pub processes: Vec<(String, Memory)>,
    /// Each pod cgroup's memory, in bytes (pods whose cgroup was not found
    /// are missing).
    pub cgroup_bytes: Vec<u64>,
    /// Stopping and removing all of them.
    pub teardown_all: Duration,
    /// What failed in the teardown or was left after it: the figures stand,
    /// the run fails.
    pub problems: Vec<String>,
}

/// Everything measured, per handler in the order given.
#[derive(Debug, Clone)]
pub struct Figures {
    pub latency: Vec<(Handler, Vec<Sample>)>,
    pub crowds: Vec<(Handler, Crowd)>,
}

/// Both phases for `handlers`.
pub fn all(node: &Arc<Node>, params: &Params, handlers: &[Handler]) -> Result<Figures, String> {
    report::section(&format!(
        "Pods one after the other: {} warm-up and {} timed rounds of {} pods",
        params.warmup,
        params.pods,
        handlers.len()
    ));
    let mut latency: Vec<(Handler, Vec<Sample>)> = handlers.iter().map(|h| (*h, Vec::new())).collect();
    for round in 0..params.warmup + params.pods {
        let timed = round >= params.warmup;
        let mut line = if timed {
            format!("round {:>3}:", round - params.warmup + 1)
        } else {
            format!("warm-up {}:", round + 1)
        };
        // Rotate the order so that no handler always runs first or last.
        for k in 0..handlers.len() {
            let index = (round + k) % handlers.len();
            let handler = handlers[index];
            let sample = one_pod(node, handler, &format!("lat-{}-{round}", handler.name()))?;
            line += &format!(
                "  {} {:.0}/{:.0} ms",
                handler.name(),
                sample.run.as_secs_f64() * 1e3,
                sample.exit_seen.as_secs_f64() * 1e3
            );
            if timed {
                latency[index].1.push(sample);
            }
        }
        println!("{line}  (RunPodSandbox / exit seen)");
    }

    report::section(&format!(
        "{} pods at once per handler ({} workers starting them, {} removing them)",
        params.mem_pods, params.parallel, params.stop_parallel
    ));
    let mut crowds = Vec::new();
    for handler in handlers {
        let crowd = crowd(node, *handler, params)?;
        let pss: u64 = crowd.processes.iter().map(|(_, memory)| memory.pss_kb).sum();
        println!(
            "{}: all {} running after {:.2} s; {} processes, PSS {} kB in all; torn down in {:.2} s, {}",
            handler.name(),
            crowd.pods,
            crowd.start_all.as_secs_f64(),
            crowd.processes.len(),
            pss,
            crowd.teardown_all.as_secs_f64(),
            if crowd.problems.is_empty() {
                "nothing left".to_owned()
            } else {
                format!("{} PROBLEMS (below)", crowd.problems.len())
            }
        );
        crowds.push((*handler, crowd));
    }
    Ok(Figures { latency, crowds })
}

/// `err` with the end of containerd's log.
fn failed(node: &Node, what: &str, err: impl std::fmt::Display) -> String {
    format!(
        "{what}: {err}\n--- containerd log (last 15 lines) ---\n{}",
        node.log_tail(15)
    )
}

/// A pod running busybox `/bin/true`, timed, torn down, checked gone.
fn one_pod(node: &Arc<Node>, handler: Handler, name: &str) -> Result<Sample, String> {
    let started = Instant::now();
    let mut pod = Pod::run(node, handler, name).map_err(|err| failed(node, name, err))?;
    let id = pod
        .start(&ContainerSpec::exec("app", &["/bin/true"]))
        .map_err(|err| failed(node, name, err))?;
    let exit = pod
        .wait_exit(&id, EXIT_LIMIT)
        .map_err(|err| failed(node, name, err))?;
    let exit_seen = started.elapsed();
    if exit.code != 0 {
        return Err(failed(node, name, format!("`true` exited {exit:?}")));
    }
    let run = pod.run_time;
    let traces = pod.traces();
    let stopping = Instant::now();
    pod.teardown().map_err(|err| failed(node, name, err))?;
    let teardown = stopping.elapsed();
    gone(node, &[traces])?;
    Ok(Sample {
        run,
        exit_seen,
        teardown,
    })
}

/// A pod running busybox `sleep 3600`, once its container runs.
fn sleeper(node: &Arc<Node>, handler: Handler, index: usize) -> Result<Pod, String> {
    let name = format!("mem-{}-{index}", handler.name());
    let mut pod = Pod::run(node, handler, &name).map_err(|err| failed(node, &name, err))?;
    let id = pod
        .start(&ContainerSpec::exec("app", &["/bin/sleep", "3600"]))
        .map_err(|err| failed(node, &name, err))?;
    pod.wait_running(&id, RUNNING_LIMIT)
        .map_err(|err| failed(node, &name, err))?;
    Ok(pod)
}

/// `params.mem_pods` sleeping pods at once under `handler`: started,
/// measured, torn down and checked gone.
fn crowd(node: &Arc<Node>, handler: Handler, params: &Params) -> Result<Crowd, String> {
    let started = Instant::now();
    let results = in_parallel((0..params.mem_pods).collect(), params.parallel, |index| {
        sleeper(node, handler, index)
    });
    let start_all = started.elapsed();
    let mut pods = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for result in results {
        match result {
            Ok(pod) => pods.push(pod),
            Err(err) => errors.push(err),
        }
    }
    if let Some(first) = errors.first() {
        // The pods that started are removed as they drop.
        return Err(format!(
            "{} of {} {} pods did not start; the first: {first}",
            errors.len(),
            params.mem_pods,
            handler.name()
        ));
    }
    std::thread::sleep(params.settle);
    let table = procs::table();
    let exclude = [node.containerd().pid() as i32, std::process::id() as i32];
    let measured: Vec<(String, Memory)> = procs::naming_and_descendants(&table, node.dir(), &exclude)
        .into_iter()
        .filter_map(|process| Some((process.kind(), procs::memory(process.pid)?)))
        .collect();
    let cgroup_bytes = pods
        .iter()
        .filter_map(|pod| procs::cgroup_memory(&cgroup_parent(&pod.uid)))
        .collect();
    let traces: Vec<PodTraces> = pods.iter().map(Pod::traces).collect();
    let stopping = Instant::now();
    let teardowns = in_parallel(pods, params.stop_parallel, Pod::teardown);
    let teardown_all = stopping.elapsed();
    let mut problems: Vec<String> = teardowns
        .into_iter()
        .filter_map(Result::err)
        .map(|err| format!("{} teardown: {err}", handler.name()))
        .collect();
    if let Err(err) = gone(node, &traces) {
        problems.push(format!("{}: {err}", handler.name()));
    }
    Ok(Crowd {
        pods: params.mem_pods,
        start_all,
        processes: measured,
        cgroup_bytes,
        teardown_all,
        problems,
    })
}

/// Runs `work` on every item with `workers` threads; the results in the
/// items' order.
fn in_parallel<T: Send, R: Send>(items: Vec<T>, workers: usize, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    let count = items.len();
    let queue = Mutex::new(items.into_iter().enumerate().collect::<VecDeque<_>>());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, count.max(1)) {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
                let Some((index, item)) = next else {
                    break;
                };
                let result = work(item);
                results.lock().unwrap_or_else(PoisonError::into_inner)[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .map(|result| result.expect("every item was worked on"))
        .collect()
}

/// Waits for every trace of `pods` to be gone (runtime state, the
/// `runc-runsc` handler's included, processes, cgroups, network namespace,
/// CNI results, nftables tables, mounts).
fn gone(node: &Node, pods: &[PodTraces]) -> Result<(), String> {
    let runc_runsc_state = node.runc_runsc_root().join("k8s.io");
    let mut left = Vec::new();
    for pod in pods {
        left.extend(leftovers::wait_gone(pod, node.netns(), GONE_LIMIT));
        for entry in std::fs::read_dir(&runc_runsc_state)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if std::iter::once(&pod.sandbox_id)
                .chain(&pod.container_ids)
                .any(|id| name.contains(id.as_str()))
            {
                left.push(format!("state {}", entry.path().display()));
            }
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("left behind by removed pods:\n  {}", left.join("\n  ")))
    }
}

/// What is left once the node has stopped: processes naming its
/// directory, the directory, its network namespace.
pub fn node_leftovers(dir: &Path, netns: &str) -> Vec<String> {
    let mut left: Vec<String> = procs::naming_and_descendants(&procs::table(), dir, &[])
        .iter()
        .map(|process| format!("process {}: {}", process.pid, process.argv.join(" ")))
        .collect();
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    let netns_path = Path::new("/run/netns").join(netns);
    if netns_path.exists() {
        left.push(format!("network namespace {}", netns_path.display()));
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_work_keeps_the_items_order() {
        let squares = in_parallel((0..20).collect(), 4, |n: u64| n * n);
        assert_eq!(squares, (0..20).map(|n| n * n).collect::<Vec<_>>());
        assert_eq!(in_parallel(Vec::<u8>::new(), 4, |n| n), Vec::<u8>::new());
        assert_eq!(in_parallel(vec![1, 2], 50, |n| n + 1), [2, 3]);
    }
}
