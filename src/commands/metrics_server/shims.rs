//! The node's skillbox shims and their memory, from `/proc`.
//!
//! A process is a shim when its executable (`/proc/<pid>/exe`, else
//! `argv[0]` of `/proc/<pid>/cmdline`) is named
//! `containerd-shim-skillbox-v1`. `comm` alone cannot tell: the kernel
//! truncates it to 15 bytes (`containerd-shim`, shared by every
//! containerd shim), so it only rules processes out cheaply. Memory is
//! `VmRSS` of `/proc/<pid>/status`. Processes that end while being read
//! are skipped.

use std::path::Path;

/// The shim binary's name.
pub const SHIM: &str = "containerd-shim-skillbox-v1";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub count: usize,
    pub resident_bytes: u64,
}

/// The last component of `path`, without the kernel's ` (deleted)` mark
/// of a binary replaced since it was started.
fn base_name(path: &str) -> &str {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

fn is_shim(process: &Path) -> bool {
    let Ok(comm) = std::fs::read_to_string(process.join("comm")) else {
        return false;
    };
    let comm = comm.trim_end_matches('\n');
    if comm.is_empty() || !SHIM.starts_with(comm) {
        return false;
    }
    if let Ok(exe) = std::fs::read_link(process.join("exe")) {
        return base_name(&exe.to_string_lossy()) == SHIM;
    }
    std::fs::read(process.join("cmdline")).is_ok_and(|cmdline| {
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        base_name(&String::from_utf8_lossy(argv0)) == SHIM
    })
}

/// `VmRSS` in bytes; 0 when the process has none (a zombie).
fn resident_bytes(process: &Path) -> u64 {
    crate::procfs::kib_field_bytes(&process.join("status"), "VmRSS")
}

/// The shims among the processes under `proc_root` (`/proc`).
pub fn measure(proc_root: &Path) -> Usage {
    let mut usage = Usage::default();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return usage;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let process = entry.path();
        if is_shim(&process) {
            usage.count += 1;
            usage.resident_bytes += resident_bytes(&process);
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn process(root: &Path, pid: u32, comm: &str, exe: Option<&str>, argv0: &str, rss_kib: Option<u64>) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        if let Some(exe) = exe {
            std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
        }
        std::fs::write(dir.join("cmdline"), format!("{argv0}\0-namespace\0k8s.io\0")).unwrap();
        let rss = rss_kib.map_or(String::new(), |kib| format!("VmRSS:\t    {kib} kB\n"));
        std::fs::write(dir.join("status"), format!("Name:\t{comm}\n{rss}Threads:\t4\n")).unwrap();
    }

    #[test]
    fn shims_are_told_by_executable_and_their_rss_summed() {
        let root = tempfile::tempdir().unwrap();
        let root: PathBuf = root.path().to_owned();
        let bin = "/usr/local/bin/containerd-shim-skillbox-v1";
        process(&root, 10, "containerd-shim", Some(bin), bin, Some(1000));
        // Replaced on disk since it started: still a shim.
        process(
            &root,
            11,
            "containerd-shim",
            Some(&format!("{bin} (deleted)")),
            bin,
            Some(24),
        );
        // No readable exe: told by argv[0].
        process(&root, 12, "containerd-shim", None, bin, Some(6));
        // Another runtime's shim shares the truncated comm.
        let runc = "/usr/bin/containerd-shim-runc-v2";
        process(&root, 13, "containerd-shim", Some(runc), runc, Some(5000));
        // A program whose argv[0] claims to be a shim but whose comm does not.
        process(&root, 14, "python3", Some("/usr/bin/python3"), bin, Some(7000));
        // A zombie shim has no RSS.
        process(&root, 15, "containerd-shim", Some(bin), bin, None);
        std::fs::create_dir_all(root.join("self")).unwrap();
        std::fs::write(root.join("uptime"), "1 1\n").unwrap();
        assert_eq!(
            measure(&root),
            Usage {
                count: 4,
                resident_bytes: (1000 + 24 + 6) * 1024,
            }
        );
        assert_eq!(measure(&root.join("absent")), Usage::default());
    }
}
