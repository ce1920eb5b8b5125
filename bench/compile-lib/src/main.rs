//! Times the policy compiler in-process on one skill:
//!
//! - `load`: read the folder, check the package rules, parse the frontmatter, digest;
//! - `policy+spec`: effective policy + OCI spec + JSON rendering, all in memory;
//! - `compile`: load + a full compile into a fresh bundle directory (what
//!   `skillbox compile` does, minus process start-up and argument parsing).
//!
//! Usage: skillbox-bench-compile <skill-dir> <base-rootfs> <scratch-dir> [iterations]
//! Prints one line per measurement: `<name> median_us=<..> p90_us=<..> n=<..>`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use policy_compiler::compile::{render_config, runsc_flags};
use policy_compiler::{compile, effective_policy, load, CompileOptions, NodeConfig};

fn report(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name} median_us={:.1} p90_us={:.1} n={}",
        at(0.5),
        at(0.9),
        samples.len()
    );
}

fn time<T>(samples: &mut Vec<f64>, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let value = f();
    samples.push(start.elapsed().as_secs_f64() * 1e6);
    value
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: {} <skill-dir> <base-rootfs> <scratch-dir> [iterations]",
            args[0]
        );
        std::process::exit(2);
    }
    let skill = PathBuf::from(&args[1]);
    let rootfs = std::fs::canonicalize(&args[2]).expect("base rootfs exists");
    let scratch = PathBuf::from(&args[3]);
    let iterations: usize = args
        .get(4)
        .map_or(500, |n| n.parse().expect("iterations is a number"));

    let node = NodeConfig::default();
    let env = BTreeMap::new();
    let options = CompileOptions {
        node: &node,
        node_config_name: "(built-in defaults)",
        base_rootfs: &rootfs,
        extra_args: &[],
        env: &env,
        cgroups_path: Some("/skillbox/bench"),
    };
    let (mut load_t, mut spec_t, mut compile_t) = (Vec::new(), Vec::new(), Vec::new());
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    for i in 0..iterations {
        let package = time(&mut load_t, || load(&skill).expect("skill loads"));

        let bundle_skill = scratch.join("skill");
        let rendered = time(&mut spec_t, || {
            let (policy, _warnings) = effective_policy(&package, &options).expect("policy resolves");
            let flags = runsc_flags(&node, &policy);
            render_config(&package, &policy, &flags, &bundle_skill, &options).expect("config renders")
        });
        assert!(!rendered.is_empty());

        let bundle = scratch.join(format!("bundle-{i}"));
        time(&mut compile_t, || {
            let package = load(&skill).expect("skill loads");
            compile(&package, &bundle, &options).expect("skill compiles")
        });
        std::fs::remove_dir_all(&bundle).expect("bundle removed");
    }
    report("load", load_t);
    report("policy+spec", spec_t);
    report("compile", compile_t);
}
