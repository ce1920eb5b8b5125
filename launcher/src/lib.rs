//! The launcher a pre-booted sandbox waits in (`skillbox-launch`, a static
//! executable built by build.rs and carried here), and the header that
//! tells it what to run.

pub mod protocol;

/// The static `skillbox-launch` executable.
pub const LAUNCHER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/skillbox-launch"));

#[cfg(test)]
mod tests {
    use super::protocol::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_header_decodes_to_what_was_encoded() {
        let args = strings(&["sh", "scripts/hello.sh", "two words", ""]);
        let env = strings(&["PATH=/usr/bin:/bin", "HOME=/tmp"]);
        let header = encode(&args, &env);
        let length = payload_length(header[..4].try_into().unwrap()).unwrap();
        assert_eq!(length, header.len() - 4);
        assert_eq!(decode(&header[4..]).unwrap(), (args, env));
    }

    #[test]
    fn a_bad_header_is_refused_with_its_reason() {
        let header = encode(&strings(&["sh"]), &[]);
        assert_eq!(
            decode(&header[4..header.len() - 1]).unwrap_err(),
            "header cut short"
        );
        let mut longer = header[4..].to_vec();
        longer.push(0);
        assert_eq!(decode(&longer).unwrap_err(), "1 bytes after the last string");
        assert_eq!(decode(&encode(&[], &[])[4..]).unwrap_err(), "no program to run");
        let too_long = ((MAX_PAYLOAD + 1) as u32).to_le_bytes();
        assert!(payload_length(too_long).unwrap_err().contains("more than"));
    }

    #[test]
    fn the_launcher_is_a_static_executable() {
        let elf = super::LAUNCHER;
        assert_eq!(&elf[..4], b"\x7fELF");
        let read_u16 = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
        let offset = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
        let (size, count) = (read_u16(0x36), read_u16(0x38));
        // No PT_INTERP (3): no loader to find in the sandbox's root filesystem.
        let interpreters = (0..count)
            .map(|index| u32::from_le_bytes(elf[offset + index * size..][..4].try_into().unwrap()))
            .filter(|kind| *kind == 3)
            .count();
        assert!(count > 0);
        assert_eq!(interpreters, 0);
    }
}
