//! What the pool writes to a waiting launcher's stdin, shared by the
//! launcher (compiled on its own, see build.rs) and skillbox.
//!
//! The launcher writes [`READY`] to its stdout once it runs, then reads one
//! header from its stdin: a little-endian `u32` length, then that many
//! bytes of payload. The payload is the argument count and the environment
//! count (each a `u32`), then each string as a `u32` length and its bytes.
//! Exactly the header is read, so what follows it on stdin is the skill's.

/// Written by the launcher when it is up and waiting for its header.
pub const READY: &[u8; 8] = b"SBXREADY";

/// The largest payload a launcher accepts.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The header for running `args` with environment `env` (`NAME=value`).
pub fn encode(args: &[String], env: &[String]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(args.len() as u32).to_le_bytes());
    payload.extend_from_slice(&(env.len() as u32).to_le_bytes());
    for text in args.iter().chain(env) {
        payload.extend_from_slice(&(text.len() as u32).to_le_bytes());
        payload.extend_from_slice(text.as_bytes());
    }
    let mut header = (payload.len() as u32).to_le_bytes().to_vec();
    header.extend_from_slice(&payload);
    header
}

/// The payload length a header's first four bytes announce.
pub fn payload_length(prefix: [u8; 4]) -> Result<usize, String> {
    let length = u32::from_le_bytes(prefix) as usize;
    match length <= MAX_PAYLOAD {
        true => Ok(length),
        false => Err(format!("header of {length} bytes, more than {MAX_PAYLOAD}")),
    }
}

/// The arguments and environment of a payload.
pub fn decode(payload: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut rest = payload;
    let take_u32 = |rest: &mut &[u8]| -> Result<usize, String> {
        if rest.len() < 4 {
            return Err("header cut short".to_owned());
        }
        let (number, tail) = rest.split_at(4);
        *rest = tail;
        Ok(u32::from_le_bytes([number[0], number[1], number[2], number[3]]) as usize)
    };
    let arg_count = take_u32(&mut rest)?;
    let env_count = take_u32(&mut rest)?;
    let mut strings = Vec::new();
    for _ in 0..arg_count.saturating_add(env_count) {
        let length = take_u32(&mut rest)?;
        if rest.len() < length {
            return Err("header cut short".to_owned());
        }
        let (text, tail) = rest.split_at(length);
        rest = tail;
        strings.push(String::from_utf8(text.to_vec()).map_err(|_| "a string is not UTF-8".to_owned())?);
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last string", rest.len()));
    }
    if arg_count == 0 {
        return Err("no program to run".to_owned());
    }
    let env = strings.split_off(arg_count);
    Ok((strings, env))
}
