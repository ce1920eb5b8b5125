//! Just enough HTTP/1.x for a scraper: one request per connection, its
//! head read up to [`MAX_HEAD`] bytes within [`IO_TIMEOUT`], any body
//! ignored, `Connection: close` on every answer.
//!
//! `GET /metrics` (a query string is ignored) gets the metrics, `HEAD
//! /metrics` their headers; another method on `/metrics` gets 405, another
//! path 404, a head that is not `METHOD TARGET HTTP/1.x` 400, one longer
//! than [`MAX_HEAD`] 431. A client that sends nothing, or too slowly, is
//! dropped after the timeout without an answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use skillbox_audit::metrics::TEXT_FORMAT;

/// The longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// How long reading the request, or writing the answer, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// The metrics; without the body for `HEAD`.
    Metrics {
        head_only: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes a complete request head (pure: the decision, apart from the socket).
pub fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match (path, method) {
        ("/metrics", "GET") => Route::Metrics { head_only: false },
        ("/metrics", "HEAD") => Route::Metrics { head_only: true },
        ("/metrics", _) => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

/// Where a request head ends: after its first empty line.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
    crlf.into_iter().chain(lf).min()
}

/// Reads a request head: `Ok(None)` when it exceeds [`MAX_HEAD`].
fn read_head(stream: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..read]);
        match head_end(&head) {
            Some(end) if end <= MAX_HEAD => {
                head.truncate(end);
                return Ok(Some(head));
            }
            _ if head.len() > MAX_HEAD => return Ok(None),
            _ => {}
        }
    }
}

/// A whole response: status line, headers, body unless `head_only`.
fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        text.push_str("Allow: GET, HEAD\r\n");
    }
    text.push_str("\r\n");
    if !head_only {
        text.push_str(body);
    }
    text.into_bytes()
}

/// Serves one request on `stream`; `metrics` renders the body.
pub fn serve_connection(mut stream: TcpStream, metrics: impl FnOnce() -> String) {
    if stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    const PLAIN: &str = "text/plain; charset=utf-8";
    let answer = match read_head(&mut stream) {
        Err(_) => return,
        Ok(None) => response(
            "431 Request Header Fields Too Large",
            PLAIN,
            "request head too large\n",
            false,
        ),
        Ok(Some(head)) => match route(&head) {
            Route::Metrics { head_only } => response("200 OK", TEXT_FORMAT, &metrics(), head_only),
            Route::NotFound => response("404 Not Found", PLAIN, "not found: try /metrics\n", false),
            Route::MethodNotAllowed => response("405 Method Not Allowed", PLAIN, "use GET\n", false),
            Route::BadRequest => response("400 Bad Request", PLAIN, "bad request\n", false),
        },
    };
    if let Err(err) = stream.write_all(&answer).and_then(|()| stream.flush()) {
        tracing::debug!("cannot answer a scrape: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_or_head_of_metrics_is_served() {
        let cases: [(&[u8], Route); 10] = [
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Route::Metrics { head_only: false },
            ),
            (
                b"GET /metrics?name[]=x HTTP/1.0\n\n",
                Route::Metrics { head_only: false },
            ),
            (
                b"HEAD /metrics HTTP/1.1\r\n\r\n",
                Route::Metrics { head_only: true },
            ),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
            (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metrics/x HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metrics HTTP/2\r\n\r\n", Route::BadRequest),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"GET http://x/metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"\xff /metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
        ];
        for (head, expected) in cases {
            assert_eq!(route(head), expected, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn a_head_ends_at_its_first_empty_line_and_is_bounded() {
        let mut two = &b"GET /metrics HTTP/1.1\r\nA: b\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..];
        assert_eq!(
            read_head(&mut two).unwrap().unwrap(),
            b"GET /metrics HTTP/1.1\r\nA: b\r\n\r\n"
        );
        let long = format!("GET /metrics HTTP/1.1\r\nA: {}\r\n\r\n", "x".repeat(MAX_HEAD));
        assert!(read_head(&mut long.as_bytes()).unwrap().is_none());
        let mut cut = &b"GET /metrics HTTP/1.1\r\n"[..];
        assert_eq!(
            read_head(&mut cut).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn responses_carry_length_and_close_and_head_has_no_body() {
        let full = String::from_utf8(response("200 OK", TEXT_FORMAT, "a 1\n", false)).unwrap();
        assert_eq!(
            full,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: 4\r\n\
             Connection: close\r\n\r\na 1\n"
        );
        let head = String::from_utf8(response("200 OK", TEXT_FORMAT, "a 1\n", true)).unwrap();
        assert!(
            head.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
        let refused = String::from_utf8(response("405 Method Not Allowed", "text/plain", "", false)).unwrap();
        assert!(refused.contains("Allow: GET, HEAD\r\n"), "{refused}");
    }
}
