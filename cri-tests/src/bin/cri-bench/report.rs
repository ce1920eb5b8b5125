//! What the benchmark prints, in the layout of `bench/shim.sh`: a header
//! per section, then one line per handler and the ratio of ours to the
//! baseline, then the raw samples.

use std::io::IsTerminal;
use std::process::Command;
use std::time::Duration;

use skillbox_cri_tests::containerd::{profile_dir, skillbox_shim};
use skillbox_cri_tests::runsc_as_runc::RUNSC_FLAGS;
use skillbox_cri_tests::{Handler, Node};

use crate::measure::{Crowd, Figures, Sample};
use crate::procs;
use crate::stats::{summarize, Summary};
use crate::Params;

/// A section header, as `scripts/common.sh`'s `section` prints it.
pub fn section(title: &str) {
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m==== {title} ====\x1b[0m");
    } else {
        println!("\n==== {title} ====");
    }
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_else(|err| format!("({program}: {err})"))
}

fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

/// The machine and the versions measured.
pub fn host(node: &Node) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "host: {cores} cores, kernel {}, load {}",
        first_line("uname", &["-r"]),
        load.join(" ")
    );
    println!("runsc: {}", first_line("runsc", &["--version"]));
    println!("runc: {}", first_line("runc", &["--version"]));
    println!(
        "containerd: {} (node in {}, netns {})",
        node.version,
        node.dir().display(),
        node.netns().name()
    );
    let shim = skillbox_shim();
    println!(
        "skillbox:   handler skillbox = {} ({} bytes)",
        shim.display(),
        size(&shim)
    );
    let wrapper = profile_dir().join("runsc-as-runc");
    println!(
        "runc-runsc: handler runc-runsc = io.containerd.runc.v2, BinaryName {} (runsc {} <runc's arguments>; \
         each container in its own sandbox), Root {}",
        wrapper.display(),
        RUNSC_FLAGS.join(" "),
        node.runc_runsc_root().display()
    );
    println!("runc:       handler runc = io.containerd.runc.v2 with runc");
}

/// How a handler is named in the tables.
fn label(handler: Handler) -> &'static str {
    match handler {
        Handler::Skillbox => "ours: skillbox (containerd-shim-skillbox-v1)",
        Handler::RuncRunsc => "baseline: runc-runsc (runc shim + runsc)",
        Handler::Runc => "reference: runc (runc shim + runc)",
    }
}

fn ms(value: f64) -> String {
    format!("{value:8.1} ms")
}

fn ratio(ours: f64, baseline: f64) -> String {
    format!("{:8.3} x ", ours / baseline)
}

/// One table of mean/p50/p95 for the samples `pick` takes.
fn latency_table(title: &str, figures: &Figures, pick: fn(&Sample) -> Duration) {
    println!("{title:<50} {:>11} {:>11} {:>11}", "mean", "p50", "p95");
    let mut summaries: Vec<(Handler, Summary)> = Vec::new();
    for (handler, samples) in &figures.latency {
        let durations: Vec<Duration> = samples.iter().map(pick).collect();
        if let Some(summary) = summarize(&durations) {
            println!(
                "{:<50} {} {} {}",
                label(*handler),
                ms(summary.mean),
                ms(summary.p50),
                ms(summary.p95)
            );
            summaries.push((*handler, summary));
        }
    }
    let find = |wanted: Handler| summaries.iter().find(|(h, _)| *h == wanted).map(|(_, s)| *s);
    if let (Some(ours), Some(base)) = (find(Handler::Skillbox), find(Handler::RuncRunsc)) {
        println!(
            "{:<50} {} {} {}",
            "ratio skillbox / runc-runsc",
            ratio(ours.mean, base.mean),
            ratio(ours.p50, base.p50),
            ratio(ours.p95, base.p95)
        );
    }
}

fn mib(kb: f64) -> String {
    format!("{:7.2} MiB", kb / 1024.0)
}

/// Per pod: host PSS, host RSS (kB), cgroup memory (kB), processes.
fn per_pod(crowd: &Crowd) -> (f64, f64, Option<f64>, f64) {
    let pods = crowd.pods as f64;
    let pss: u64 = crowd.processes.iter().map(|(_, memory)| memory.pss_kb).sum();
    let rss: u64 = crowd.processes.iter().map(|(_, memory)| memory.rss_kb).sum();
    let cgroup = (crowd.cgroup_bytes.len() == crowd.pods)
        .then(|| crowd.cgroup_bytes.iter().sum::<u64>() as f64 / 1024.0 / pods);
    (
        pss as f64 / pods,
        rss as f64 / pods,
        cgroup,
        crowd.processes.len() as f64 / pods,
    )
}

/// Every table, then the samples.
pub fn results(params: &Params, figures: &Figures) {
    section("Results");
    latency_table(
        &format!("RunPodSandbox ({} pods per handler)", params.pods),
        figures,
        |sample| sample.run,
    );
    println!();
    latency_table("pod start to exit seen (busybox `true`)", figures, |sample| {
        sample.exit_seen
    });
    println!();
    latency_table("teardown (Stop/Remove container, sandbox)", figures, |sample| {
        sample.teardown
    });

    println!();
    println!(
        "{:<50} {:>9} {:>11} {:>11} {:>11} {:>9}",
        format!("{} pods at once, per pod", params.mem_pods),
        "start all",
        "host PSS",
        "host RSS",
        "cgroup",
        "processes"
    );
    let mut rows = Vec::new();
    for (handler, crowd) in &figures.crowds {
        let (pss, rss, cgroup, processes) = per_pod(crowd);
        println!(
            "{:<50} {:>7.2} s {} {} {} {:>9.1}",
            label(*handler),
            crowd.start_all.as_secs_f64(),
            mib(pss),
            mib(rss),
            cgroup.map_or_else(|| format!("{:>11}", "n/a"), mib),
            processes
        );
        rows.push((*handler, crowd.start_all.as_secs_f64(), pss, rss, cgroup));
    }
    let find = |wanted: Handler| rows.iter().find(|row| row.0 == wanted).copied();
    if let (Some(ours), Some(base)) = (find(Handler::Skillbox), find(Handler::RuncRunsc)) {
        let cgroup = match (ours.4, base.4) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => format!("{:>11}", "n/a"),
        };
        println!(
            "{:<50} {:>7.3} x {} {} {}",
            "ratio skillbox / runc-runsc",
            ours.1 / base.1,
            ratio(ours.2, base.2),
            ratio(ours.3, base.3),
            cgroup
        );
    }
    println!("\nhost memory per pod by process (count per pod, PSS / RSS per pod):");
    for (handler, crowd) in &figures.crowds {
        let pods = crowd.pods as f64;
        let kinds: Vec<String> = procs::by_kind(&crowd.processes)
            .iter()
            .map(|(kind, (count, memory))| {
                format!(
                    "{kind} {:.1} × {:.2} / {:.2} MiB",
                    *count as f64 / pods,
                    memory.pss_kb as f64 / 1024.0 / pods,
                    memory.rss_kb as f64 / 1024.0 / pods
                )
            })
            .collect();
        println!("  {}: {}", handler.name(), kinds.join("; "));
    }

    println!();
    for (handler, samples) in &figures.latency {
        let mut run: Vec<f64> = samples.iter().map(|s| s.run.as_secs_f64() * 1e3).collect();
        let mut seen: Vec<f64> = samples.iter().map(|s| s.exit_seen.as_secs_f64() * 1e3).collect();
        run.sort_by(f64::total_cmp);
        seen.sort_by(f64::total_cmp);
        let show = |values: &[f64]| {
            values
                .iter()
                .map(|value| format!("{value:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{:<11} RunPodSandbox samples (ms): {}",
            handler.name(),
            show(&run)
        );
        println!(
            "{:<11} exit-seen samples (ms):     {}",
            handler.name(),
            show(&seen)
        );
    }
}
