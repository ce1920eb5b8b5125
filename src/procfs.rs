//! Figures read from `/proc` files.

use std::path::Path;

/// The bytes of a `Key:   N kB` line of the `/proc` file at `path` (e.g.
/// `VmRSS` of `status`, `Pss` of `smaps_rollup`); 0 when the file or the
/// line is missing (a process that ended, a zombie).
pub fn kib_field_bytes(path: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kib_line_is_read_in_bytes_and_a_missing_one_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("smaps_rollup");
        std::fs::write(&path, "Rss:    20308 kB\nPss:   10511 kB\nPss_Anon:   100 kB\n").unwrap();
        assert_eq!(kib_field_bytes(&path, "Pss"), 10511 * 1024);
        assert_eq!(kib_field_bytes(&path, "Swap"), 0);
        assert_eq!(kib_field_bytes(&dir.path().join("gone"), "Pss"), 0);
    }
}
