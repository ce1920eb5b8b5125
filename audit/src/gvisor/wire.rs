//! Framing of one monitoring message: gVisor's remote sink writes each point
//! as one SOCK_SEQPACKET packet, an 8-byte header then a protobuf payload.
//!
//! Header (`pkg/sentry/seccheck/sinks/remote/wire`, written with the host's
//! byte order — little-endian on the x86_64 and arm64 hosts gVisor supports):
//! `header_size: u16` (8 today; the payload starts at this offset, so a
//! longer future header is skipped), `message_type: u16` (gVisor's
//! `MessageType` enum), `dropped_count: u32` (points the sink failed to send
//! so far; wraps at `u32::MAX`).

use crate::Error as DecodeError;

/// The largest packet the monitor accepts; a larger one is dropped whole
/// and counted as loss. gVisor's largest messages are execs with a big
/// argv/environment.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The header as gVisor defines it (`wire.HeaderStructSize`).
pub const HEADER_BYTES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub header_size: u16,
    pub message_type: u16,
    pub dropped_count: u32,
}

/// Splits a packet into its header and payload.
pub fn split(packet: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    if packet.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge { len: packet.len() });
    }
    let fixed: &[u8; HEADER_BYTES] = packet
        .get(..HEADER_BYTES)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(DecodeError::ShortHeader { len: packet.len() })?;
    let header = Header {
        header_size: u16::from_le_bytes([fixed[0], fixed[1]]),
        message_type: u16::from_le_bytes([fixed[2], fixed[3]]),
        dropped_count: u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
    };
    let start = usize::from(header.header_size);
    if start < HEADER_BYTES || start > packet.len() {
        return Err(DecodeError::BadHeaderSize {
            header_size: header.header_size,
            len: packet.len(),
        });
    }
    Ok((header, &packet[start..]))
}

/// A packet as the sentry would write it (tests, fuzz seeds).
pub fn frame(message_type: u16, dropped_count: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HEADER_BYTES + payload.len());
    packet.extend_from_slice(&(HEADER_BYTES as u16).to_le_bytes());
    packet.extend_from_slice(&message_type.to_le_bytes());
    packet.extend_from_slice(&dropped_count.to_le_bytes());
    packet.extend_from_slice(payload);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_little_endian_sizes_type_then_dropped_count() {
        let packet = [8, 0, 7, 0, 3, 1, 0, 0, 0xaa];
        let (header, payload) = split(&packet).unwrap();
        assert_eq!(
            header,
            Header {
                header_size: 8,
                message_type: 7,
                dropped_count: 259
            }
        );
        assert_eq!(payload, &[0xaa]);
        assert_eq!(frame(7, 259, &[0xaa]), packet);
    }

    #[test]
    fn a_longer_header_is_skipped() {
        let packet = [10, 0, 1, 0, 0, 0, 0, 0, 9, 9, 0xbb];
        assert_eq!(split(&packet).unwrap().1, &[0xbb]);
    }

    #[test]
    fn short_oversized_and_inconsistent_packets_are_errors() {
        assert!(matches!(
            split(&[8, 0, 1]),
            Err(DecodeError::ShortHeader { len: 3 })
        ));
        assert!(matches!(
            split(&[4, 0, 1, 0, 0, 0, 0, 0]),
            Err(DecodeError::BadHeaderSize { header_size: 4, .. })
        ));
        assert!(matches!(
            split(&[9, 0, 1, 0, 0, 0, 0, 0]),
            Err(DecodeError::BadHeaderSize { header_size: 9, .. })
        ));
        let big = frame(1, 0, &vec![0; MAX_MESSAGE_BYTES]);
        assert!(matches!(split(&big), Err(DecodeError::TooLarge { .. })));
    }
}
