//! Resource quotas: memory, processes, CPU and wall-clock time, each pushed
//! past its limit by a busybox skill. The harness also checks that every
//! run, however it ended, left no process, cgroup or runsc state behind.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runsc_config::{HostTaskBudget, Platform};
use skillbox_test_support::sandbox::SkillRun;
use skillbox_test_support::{busybox_rootfs, field, Cli, Skill};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

#[test]
fn memory_hog_is_killed_and_reported_as_oom() {
    let policy = "  resources: { memory: 64Mi, timeout: 60s }\n";
    let script = "dd if=/dev/zero of=/dev/null bs=300M count=1\necho survived\n";
    let skill = Skill::sh("memory-hog", policy, script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    assert_eq!(run.output.code, 137, "{}", run.describe());
    assert_eq!(run.outcome(), "oom", "{}", run.describe());
    assert!(run.output.stderr.contains("out of memory"), "{}", run.describe());
    assert!(!run.output.stdout.contains("survived"), "{}", run.describe());
    let peak = run.report_u64("memory_peak_bytes");
    eprintln!("memory hog: peak {peak} bytes");
    // The kernel may charge one batch of pages past the limit before the
    // OOM killer runs; anything beyond a MiB would mean no limit at all.
    assert!(
        peak <= (64 << 20) + (1 << 20),
        "memory peak {peak} is above the 64Mi limit"
    );
    assert!(
        peak >= 32 << 20,
        "memory peak {peak}: the hog never got near the limit"
    );
}

#[test]
fn process_quota_stops_forks() {
    // A failed fork is fatal to busybox sh, so the spawning runs in a
    // subshell that records how far it got.
    let script = r#"
(
    n=0
    while [ "$n" -lt 40 ]; do
        sleep 30 &
        n=$((n + 1))
        echo "$n" >/tmp/started
    done
)
echo "started=$(cat /tmp/started)"
echo "visible=$(ls -d /proc/[0-9]* | wc -l)"
killall sleep
"#;
    let skill = Skill::sh("process-quota", "  resources: { pids: 16 }\n", script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    run.assert_success();
    let started: u32 = field(&run.output.stdout, "started").parse().unwrap();
    assert!(
        started < 16,
        "started {started} sleeps with a quota of 16\n{}",
        run.describe()
    );
    assert!(
        started >= 8,
        "only {started} sleeps started under a quota of 16\n{}",
        run.describe()
    );
    assert!(run.output.stderr.contains("can't fork"), "{}", run.describe());
}

#[test]
fn process_quota_can_be_reached_repeatedly() {
    // Hitting the quota is a normal event for the skill (fork fails with
    // EAGAIN), never a crash of the sandbox: gVisor's own host tasks must
    // stay within the sandbox cgroup's budget while processes come and go.
    let script = r#"
round=1
while [ "$round" -le 5 ]; do
    ( n=0; while [ "$n" -lt 40 ]; do sleep 30 & n=$((n + 1)); echo "$n" >/tmp/started; done ) 2>/dev/null
    echo "round$round=$(cat /tmp/started)"
    killall sleep
    round=$((round + 1))
done
"#;
    let skill = Skill::sh("quota-churn", "  resources: { pids: 16 }\n", script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    run.assert_success();
    for round in 1..=5 {
        let started: u32 = field(&run.output.stdout, &format!("round{round}"))
            .parse()
            .unwrap();
        assert!(
            (8..16).contains(&started),
            "round {round}: started {started}\n{}",
            run.describe()
        );
    }
}

/// Samples the pids cgroup of the sandbox whose id starts with `prefix`
/// until `stop`: returns (highest pids.current, pids.max as read).
fn sample_pids_cgroup(
    prefix: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, Option<String>)> {
    std::thread::spawn(move || {
        let parent = Path::new("/sys/fs/cgroup/pids/skillbox");
        let (mut peak, mut max) = (0u64, None);
        while !stop.load(Ordering::Relaxed) {
            let entries = std::fs::read_dir(parent).into_iter().flatten().flatten();
            for entry in entries.filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)) {
                let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
                if let Some(current) = read("pids.current").and_then(|c| c.trim().parse().ok()) {
                    peak = peak.max(current);
                }
                if let Some(value) = read("pids.max") {
                    max = Some(value.trim().to_owned());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (peak, max)
    })
}

#[test]
fn fork_bomb_is_contained() {
    assert!(
        Path::new("/sys/fs/cgroup/pids").is_dir(),
        "this test samples the cgroup v1 pids controller at /sys/fs/cgroup/pids"
    );
    let policy = "  resources: { pids: 16, timeout: 10s }\n";
    // The main shell forks only before the bomb and then uses builtins, so
    // it outlives the bomb and can report what it sees.
    let script = r#"
sleep 4 &
sleeper=$!
( bomb() { bomb | bomb & }; bomb ) 2>/dev/null &
wait $sleeper
set -- /proc/[0-9]*
echo "visible=$#"
echo survived
"#;
    let skill = Skill::sh("fork-bomb", policy, script);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_pids_cgroup("fork-bomb-".to_owned(), stop.clone());
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    stop.store(true, Ordering::Relaxed);
    let (peak, max) = sampler.join().unwrap();
    eprintln!(
        "fork bomb: host tasks peak {peak}, pids.max {max:?}\n{}",
        run.describe()
    );

    // The bomb may starve the skill's own shell (it exits "can't fork") or
    // run until the timeout; either way the run ends on time.
    assert!(
        matches!(run.outcome(), "exited" | "timeout"),
        "{}",
        run.describe()
    );
    assert!(run.output.elapsed < Duration::from_secs(20), "{}", run.describe());
    if let Some(visible) = run.output.stdout.lines().find_map(|l| l.strip_prefix("visible=")) {
        let visible: u32 = visible.trim().parse().unwrap();
        assert!(visible <= 16, "{visible} processes under a quota of 16");
    }
    // The host-side backstop was applied and held.
    let expected = HostTaskBudget::for_platform(Platform::Ptrace).cgroup_pids_limit(16);
    assert_eq!(
        max.as_deref(),
        Some(expected.to_string().as_str()),
        "pids.max of the sandbox cgroup"
    );
    assert!(peak > 0, "never saw the sandbox's pids cgroup");
    assert!(
        peak <= expected as u64,
        "{peak} host tasks above pids.max {expected}"
    );
}

#[test]
fn cpu_share_is_capped() {
    let policy = "  resources: { cpus: 0.5, timeout: 30s }\n";
    // Two spinners: without the quota they would use both CPUs of the host.
    let script = r#"
spin() { while :; do :; done; }
spin &
spin &
sleep 3
kill $(jobs -p)
echo spun
"#;
    let skill = Skill::sh("cpu-spinner", policy, script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .exclusive()
        .run();
    run.assert_success();
    let cpu = run.report_u64("cpu_usage_ms") as f64;
    let wall = run.report_u64("wall_ms") as f64;
    let share = cpu / wall;
    eprintln!("cpu share {share:.3}: {cpu} ms of CPU in {wall} ms");
    assert!(
        share <= 0.5 * 1.15 + 0.05,
        "used {share:.2} CPUs with a 0.5 quota\n{}",
        run.describe()
    );
    assert!(
        share > 0.2,
        "used only {share:.2} CPUs: the spinner did not spin\n{}",
        run.describe()
    );
}

#[test]
fn timeout_kills_the_sandbox() {
    let skill = Skill::sh(
        "sleeper",
        "  resources: { timeout: 2s }\n",
        "sleep 60\necho woke\n",
    );
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .exclusive()
        .run();
    assert_eq!(run.output.code, 124, "{}", run.describe());
    assert_eq!(run.outcome(), "timeout");
    assert!(run.output.stderr.contains("timeout"), "{}", run.describe());
    assert!(!run.output.stdout.contains("woke"));
    assert!(run.output.elapsed >= Duration::from_secs(2), "{}", run.describe());
    assert!(run.output.elapsed < Duration::from_secs(10), "{}", run.describe());
}
