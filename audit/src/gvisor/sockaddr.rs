//! Socket addresses as connect(2)/bind(2) received them (the raw bytes
//! gVisor copies from the caller): AF_INET, AF_INET6 and AF_UNIX become an
//! address text and a port; anything else is reported by family number.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::limits::{lossy, MAX_UNIX_PATH_BYTES};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// `(address, port)` of a raw sockaddr. Never fails: a truncated or unknown
/// address is described (`af_inet(truncated)`, `family 16`, `empty`).
pub fn describe(bytes: &[u8]) -> (String, Option<u16>) {
    let Some(family) = bytes.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])) else {
        return ("empty".to_owned(), None);
    };
    match family {
        AF_INET => match bytes.get(2..8) {
            Some(b) => (
                Ipv4Addr::new(b[2], b[3], b[4], b[5]).to_string(),
                Some(u16::from_be_bytes([b[0], b[1]])),
            ),
            None => ("af_inet(truncated)".to_owned(), None),
        },
        AF_INET6 => match bytes.get(2..24) {
            Some(b) => {
                let octets: [u8; 16] = b[6..22].try_into().unwrap_or([0; 16]);
                (
                    Ipv6Addr::from(octets).to_string(),
                    Some(u16::from_be_bytes([b[0], b[1]])),
                )
            }
            None => ("af_inet6(truncated)".to_owned(), None),
        },
        AF_UNIX => {
            let path = &bytes[2..];
            let path = &path[..path.len().min(MAX_UNIX_PATH_BYTES)];
            let text = match path.first() {
                // Abstract socket: a leading NUL, the name is the rest.
                Some(0) => format!("@{}", lossy(&path[1..], MAX_UNIX_PATH_BYTES)),
                _ => {
                    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                    lossy(&path[..end], MAX_UNIX_PATH_BYTES)
                }
            };
            (text, None)
        }
        other => (format!("family {other}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_inet6_and_unix_addresses() {
        let v4 = [2, 0, 0, 9, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(describe(&v4), ("127.0.0.1".to_owned(), Some(9)));
        let mut v6 = vec![10, 0, 0x01, 0xbb, 0, 0, 0, 0];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(describe(&v6), ("2001:db8::1".to_owned(), Some(443)));
        assert_eq!(
            describe(b"\x01\x00/run/x.sock\0junk"),
            ("/run/x.sock".to_owned(), None)
        );
        assert_eq!(describe(b"\x01\x00\0name"), ("@name".to_owned(), None));
    }

    #[test]
    fn truncated_and_unknown_addresses_are_described() {
        assert_eq!(describe(&[]).0, "empty");
        assert_eq!(describe(&[2]).0, "empty");
        assert_eq!(describe(&[2, 0, 0, 9, 127]).0, "af_inet(truncated)");
        assert_eq!(describe(&[10, 0, 0, 9]).0, "af_inet6(truncated)");
        assert_eq!(describe(&[16, 0, 1, 2]).0, "family 16");
        let long = [&[1u8, 0][..], &[b'a'; 5000][..]].concat();
        assert_eq!(describe(&long).0.len(), MAX_UNIX_PATH_BYTES);
    }
}
