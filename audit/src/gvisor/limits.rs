//! Bounds on what one untrusted message may put in an event. Text longer
//! than its bound is truncated (at a character boundary, after lossy UTF-8
//! conversion); lists longer than theirs keep their first entries. Nothing
//! is rejected for being long except a whole packet over
//! [`super::wire::MAX_MESSAGE_BYTES`].

/// A path (open, exec binary, cwd).
pub const MAX_PATH_BYTES: usize = 4096;
/// argv entries kept, and bytes kept of each.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG_BYTES: usize = 4096;
/// Environment names kept, and bytes kept of each name.
pub const MAX_ENV_NAMES: usize = 256;
pub const MAX_ENV_NAME_BYTES: usize = 256;
/// A process (`comm`) or container id.
pub const MAX_NAME_BYTES: usize = 256;
/// A Unix socket path (sun_path is 108 bytes).
pub const MAX_UNIX_PATH_BYTES: usize = 108;

/// `bytes` as text, invalid UTF-8 replaced, cut to at most `max` bytes.
pub fn lossy(bytes: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The first `max_items` entries, each as bounded text.
pub fn lossy_list(items: &[Vec<u8>], max_items: usize, max_bytes: usize) -> Vec<String> {
    items
        .iter()
        .take(max_items)
        .map(|item| lossy(item, max_bytes))
        .collect()
}

/// The names of `NAME=value` entries: the part before the first `=`; the
/// value is never looked at beyond finding that `=`.
pub fn env_names(env: &[Vec<u8>]) -> Vec<String> {
    env.iter()
        .take(MAX_ENV_NAMES)
        .map(|entry| {
            let name = entry.split(|&b| b == b'=').next().unwrap_or_default();
            lossy(name, MAX_ENV_NAME_BYTES)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        assert_eq!(lossy("héllo".as_bytes(), 2), "h");
        assert_eq!(lossy(b"\xffab", 10), "\u{fffd}ab");
        assert_eq!(lossy(b"abc", 10), "abc");
    }

    #[test]
    fn only_environment_names_are_kept() {
        let env = vec![b"PATH=/bin".to_vec(), b"SECRET=a=b".to_vec(), b"NOVALUE".to_vec()];
        assert_eq!(env_names(&env), ["PATH", "SECRET", "NOVALUE"]);
        let many = vec![b"A=1".to_vec(); 1000];
        assert_eq!(env_names(&many).len(), MAX_ENV_NAMES);
    }
}
