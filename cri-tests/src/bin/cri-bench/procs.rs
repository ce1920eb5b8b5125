//! The host processes a node's pods add, and their memory: every process
//! whose command line names the node's directory (shims: `-address
//! <dir>/containerd.sock`; runsc: its bundle under `<dir>/state`), but
//! containerd and the benchmark itself, plus all their descendants (runc's
//! pause and app processes, runsc's sandbox, gofers and ptrace stubs). RSS
//! and PSS come from `/proc/<pid>/smaps_rollup`: PSS shares the pages of one
//! binary mapped by 50 shims among them, so its sum is what the pods cost.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// One process: its pid, parent, arguments and command name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub argv: Vec<String>,
    /// `/proc/<pid>/comm`.
    pub comm: String,
}

impl Process {
    /// What the process is, by its `argv[0]`'s file name
    /// (`containerd-shim-runc-v2`, `runsc-sandbox`, `runsc-gofer`, `pause`…),
    /// with the subcommand for `runsc`, or `[comm]` without arguments (gVisor's
    /// ptrace stubs).
    pub fn kind(&self) -> String {
        let Some(first) = self.argv.first() else {
            return format!("[{}]", self.comm);
        };
        let name = first.rsplit('/').next().unwrap_or(first);
        match self.argv[1..].iter().find(|arg| !arg.starts_with('-')) {
            Some(subcommand) if name == "runsc" => format!("runsc {subcommand}"),
            _ => name.to_owned(),
        }
    }
}

/// The parent pid in the text of `/proc/<pid>/stat` (the field after the
/// state, which follows the parenthesised command that may hold spaces).
pub fn parse_ppid(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Every process now (those that vanish while being read are skipped).
pub fn table() -> Vec<Process> {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        let Some(ppid) = parse_ppid(&stat) else {
            continue;
        };
        let argv = cmdline
            .split(|byte| *byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        processes.push(Process {
            pid,
            ppid,
            argv,
            comm: comm.trim().to_owned(),
        });
    }
    processes
}

/// The processes of `table` naming `dir` in their arguments, but `exclude`,
/// and all their descendants.
pub fn naming_and_descendants<'a>(table: &'a [Process], dir: &Path, exclude: &[i32]) -> Vec<&'a Process> {
    let dir = dir.display().to_string();
    let mut chosen: HashSet<i32> = table
        .iter()
        .filter(|process| !exclude.contains(&process.pid))
        .filter(|process| process.argv.iter().any(|arg| arg.contains(&dir)))
        .map(|process| process.pid)
        .collect();
    loop {
        let before = chosen.len();
        for process in table {
            if chosen.contains(&process.ppid) && !exclude.contains(&process.pid) {
                chosen.insert(process.pid);
            }
        }
        if chosen.len() == before {
            break;
        }
    }
    table
        .iter()
        .filter(|process| chosen.contains(&process.pid))
        .collect()
}

/// Resident and proportional set sizes, in kB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss_kb: u64,
    pub pss_kb: u64,
}

impl std::ops::AddAssign for Memory {
    fn add_assign(&mut self, other: Memory) {
        self.rss_kb += other.rss_kb;
        self.pss_kb += other.pss_kb;
    }
}

/// `Rss:` and `Pss:` of a `smaps_rollup` text.
pub fn parse_smaps_rollup(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kb: field("Rss:")?,
        pss_kb: field("Pss:")?,
    })
}

/// The memory of process `pid`, `None` if it is gone.
pub fn memory(pid: i32) -> Option<Memory> {
    parse_smaps_rollup(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// Per kind of process: how many, and their memory summed.
pub fn by_kind(measured: &[(String, Memory)]) -> BTreeMap<String, (usize, Memory)> {
    let mut kinds: BTreeMap<String, (usize, Memory)> = BTreeMap::new();
    for (kind, memory) in measured {
        let entry = kinds.entry(kind.clone()).or_default();
        entry.0 += 1;
        entry.1 += *memory;
    }
    kinds
}

/// The memory charged to the cgroup `parent` (e.g. a pod's
/// `/kubepods/besteffort/pod<uid>`), children included, in bytes: cgroup v1
/// `memory.usage_in_bytes` or v2 `memory.current`.
pub fn cgroup_memory(parent: &str) -> Option<u64> {
    let relative = parent.trim_start_matches('/');
    [
        Path::new("/sys/fs/cgroup/memory")
            .join(relative)
            .join("memory.usage_in_bytes"),
        Path::new("/sys/fs/cgroup").join(relative).join("memory.current"),
    ]
    .iter()
    .find_map(|file| std::fs::read_to_string(file).ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: i32, ppid: i32, argv: &[&str]) -> Process {
        Process {
            pid,
            ppid,
            argv: argv.iter().map(|arg| (*arg).to_owned()).collect(),
            comm: "exe".to_owned(),
        }
    }

    #[test]
    fn the_parent_follows_a_command_with_spaces_and_parentheses() {
        assert_eq!(parse_ppid("42 (a b) c) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parse_ppid("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn processes_naming_the_directory_and_their_descendants() {
        let table = vec![
            process(1, 0, &["init"]),
            process(10, 1, &["containerd", "--config", "/tmp/n/config.toml"]),
            process(
                20,
                1,
                &["/t/containerd-shim-runc-v2", "-address", "/tmp/n/containerd.sock"],
            ),
            process(21, 20, &["/pause"]),
            process(22, 20, &["sleep", "3600"]),
            process(23, 22, &["child"]),
            process(30, 1, &["runsc-sandbox", "--bundle=/tmp/n/state/x"]),
            process(31, 30, &["runsc-sandbox"]),
            process(40, 1, &["cargo", "build"]),
            process(41, 10, &["unrelated-child-of-containerd"]),
        ];
        let pids: Vec<i32> = naming_and_descendants(&table, Path::new("/tmp/n"), &[10])
            .iter()
            .map(|process| process.pid)
            .collect();
        assert_eq!(pids, [20, 21, 22, 23, 30, 31]);
        assert_eq!(table[2].kind(), "containerd-shim-runc-v2");
        assert_eq!(table[3].kind(), "pause");
        assert_eq!(
            process(50, 1, &["runsc", "--root=/r", "wait", "x"]).kind(),
            "runsc wait"
        );
        assert_eq!(process(51, 30, &[]).kind(), "[exe]");
    }

    #[test]
    fn rss_and_pss_of_a_rollup() {
        let text = "00400000-7ffd rw-p 00000000 00:00 0 [rollup]\nRss:                6320 kB\nPss:                4792 kB\nPss_Anon:           1000 kB\n";
        assert_eq!(
            parse_smaps_rollup(text),
            Some(Memory {
                rss_kb: 6320,
                pss_kb: 4792
            })
        );
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
    }

    #[test]
    fn kinds_are_counted_and_summed() {
        let m = |rss_kb, pss_kb| Memory { rss_kb, pss_kb };
        let kinds = by_kind(&[
            ("pause".to_owned(), m(100, 50)),
            ("pause".to_owned(), m(100, 30)),
            ("sleep".to_owned(), m(10, 5)),
        ]);
        assert_eq!(kinds["pause"], (2, m(200, 80)));
        assert_eq!(kinds["sleep"], (1, m(10, 5)));
    }
}
