//! What the first bytes of a connection say about where it meant to go: the
//! server name of a TLS ClientHello, or the method, `Host` and path of an
//! HTTP request.

use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_plaintext, SNIType, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};

/// Longest path kept; a longer one is cut (and says so with `…`).
const MAX_PATH: usize = 256;
/// Headers looked at in an HTTP request head.
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstBytes {
    pub tls_sni: Option<String>,
    pub http_method: Option<String>,
    pub http_host: Option<String>,
    pub http_path: Option<String>,
}

impl FirstBytes {
    /// Whether the bytes were recognised as TLS or HTTP.
    pub fn recognised(&self) -> bool {
        self.tls_sni.is_some() || self.http_method.is_some()
    }
}

/// Reads `bytes`, the start of what a client sent.
pub fn inspect(bytes: &[u8]) -> FirstBytes {
    if let Some(name) = server_name(bytes) {
        return FirstBytes {
            tls_sni: Some(name),
            ..FirstBytes::default()
        };
    }
    http_head(bytes).unwrap_or_default()
}

fn server_name(bytes: &[u8]) -> Option<String> {
    let (_, record) = parse_tls_plaintext(bytes).ok()?;
    record.msg.iter().find_map(|message| {
        let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = message else {
            return None;
        };
        let (_, extensions) = parse_tls_client_hello_extensions(hello.ext?).ok()?;
        extensions.iter().find_map(|extension| match extension {
            TlsExtension::SNI(names) => names
                .iter()
                .find(|(kind, _)| *kind == SNIType::HostName)
                .map(|(_, name)| String::from_utf8_lossy(name).to_ascii_lowercase()),
            _ => None,
        })
    })
}

fn http_head(bytes: &[u8]) -> Option<FirstBytes> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    // A head cut short still names its method and path.
    let _ = request.parse(bytes);
    let method = request.method?.to_owned();
    let path = request.path.map(|path| match path.char_indices().nth(MAX_PATH) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_owned(),
    });
    let host = request
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("host"))
        .map(|header| String::from_utf8_lossy(header.value).into_owned());
    Some(FirstBytes {
        tls_sni: None,
        http_method: Some(method),
        http_host: host,
        http_path: path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS 1.2 ClientHello for `exfil.example.net`, built by hand: record
    /// header, handshake header, version, random, empty session id, one
    /// cipher suite, null compression, and one extension (server_name).
    fn client_hello(name: &str) -> Vec<u8> {
        let name = name.as_bytes();
        let mut sni = vec![0x00]; // host_name
        sni.extend((name.len() as u16).to_be_bytes());
        sni.extend(name);
        let mut list = (sni.len() as u16).to_be_bytes().to_vec();
        list.extend(sni);
        let mut extension = vec![0x00, 0x00]; // server_name
        extension.extend((list.len() as u16).to_be_bytes());
        extension.extend(list);
        let mut body = vec![0x03, 0x03];
        body.extend([0x11; 32]);
        body.push(0); // session id
        body.extend([0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend([0x01, 0x00]); // null compression
        body.extend((extension.len() as u16).to_be_bytes());
        body.extend(extension);
        let mut handshake = vec![0x01];
        handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend(body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    #[test]
    fn a_client_hello_names_its_server() {
        let seen = inspect(&client_hello("Exfil.Example.NET"));
        assert_eq!(seen.tls_sni.as_deref(), Some("exfil.example.net"));
        assert!(seen.recognised());
    }

    #[test]
    fn an_http_request_gives_method_host_and_path() {
        let seen = inspect(
            b"POST /upload?d=c2VjcmV0 HTTP/1.1\r\nHost: exfil.example.net\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert_eq!(seen.http_method.as_deref(), Some("POST"));
        assert_eq!(seen.http_host.as_deref(), Some("exfil.example.net"));
        assert_eq!(seen.http_path.as_deref(), Some("/upload?d=c2VjcmV0"));
    }

    #[test]
    fn a_head_cut_short_still_gives_what_arrived() {
        let seen = inspect(b"GET /a HTTP/1.1\r\nHost: x.example\r\nUser-Agent: wget");
        assert_eq!(seen.http_method.as_deref(), Some("GET"));
        assert_eq!(seen.http_path.as_deref(), Some("/a"));
        assert_eq!(seen.http_host.as_deref(), Some("x.example"));
    }

    #[test]
    fn anything_else_is_not_recognised() {
        assert!(!inspect(b"SSH-2.0-OpenSSH_9.2\r\n").recognised());
        assert!(!inspect(b"").recognised());
        assert!(!inspect(&[0x16, 0x03, 0x01, 0x00]).recognised());
    }

    #[test]
    fn a_long_path_is_cut() {
        let request = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(1000));
        let path = inspect(request.as_bytes()).http_path.unwrap();
        assert_eq!(path.chars().count(), MAX_PATH + 1);
        assert!(path.ends_with('…'));
    }
}
