//! The remote-command protocol that `kubectl exec` speaks to the URL a CRI
//! `Exec` answers with, over WebSocket. containerd 1.6's streaming server
//! (its `pkg/cri/streaming`) takes SPDY/3.1 or WebSocket with the
//! subprotocols `channel.k8s.io`, `base64.channel.k8s.io` and their `v4.`
//! forms; this client asks for [`SUBPROTOCOL`].
//!
//! Every binary message starts with one byte naming its stream ([`Channel`]):
//! 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize. The session's streams are
//! those the Exec request asked for; the error and resize streams are always
//! there. The server first sends an empty message on stdout (stderr, error:
//! the lowest it writes) to say the session is open; once the command has
//! ended it writes a JSON `metav1.Status` on the error stream (v4) and closes
//! the connection. A resize message is JSON `{"Width":…,"Height":…}`. v4
//! cannot close stdin alone: closing the connection closes it.
//!
//! The streaming server listens on 127.0.0.1 in the node's network
//! namespace, so the TCP connection is made from a thread inside it. Every
//! wait has a limit; a session that does not answer in time fails naming
//! what it waited for and what it had received.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::error::ProtocolError;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// The subprotocol asked for: binary channels, the exit code on the error
/// stream.
pub const SUBPROTOCOL: &str = "v4.channel.k8s.io";

/// How long one blocking read may wait before the session checks its limit.
const POLL: Duration = Duration::from_millis(50);

/// The streams of a session, by the byte that starts their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    Error = 3,
    Resize = 4,
}

/// What a session received so far.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The error stream's bytes: a JSON `metav1.Status` once the command
    /// ended.
    pub error: Vec<u8>,
    /// Whether the server closed the connection.
    pub closed: bool,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The command's exit code from the status on the error stream.
    pub fn exit_code(&self) -> Result<i32, String> {
        if self.error.is_empty() {
            return Err("no status on the error stream".to_owned());
        }
        let status: Value = serde_json::from_slice(&self.error).map_err(|err| {
            format!(
                "the error stream is no JSON status ({err}): {:?}",
                String::from_utf8_lossy(&self.error)
            )
        })?;
        exit_code(&status)
    }
}

/// The exit code a v4 `metav1.Status` carries: 0 for `Success`; for a
/// `Failure` with reason `NonZeroExitCode`, the message of its cause of
/// type (JSON `reason`) `ExitCode`. Any other status is an error naming it.
pub fn exit_code(status: &Value) -> Result<i32, String> {
    match status["status"].as_str() {
        Some("Success") => return Ok(0),
        Some("Failure") if status["reason"] == "NonZeroExitCode" => {}
        _ => return Err(format!("the command did not end with an exit code: {status}")),
    }
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|cause| cause["reason"] == "ExitCode")
        .and_then(|cause| cause["message"].as_str()?.parse().ok())
        .ok_or_else(|| format!("a NonZeroExitCode status without an ExitCode cause: {status}"))
}

/// One open session on the streaming server.
#[derive(Debug)]
pub struct Session {
    socket: WebSocket<TcpStream>,
    pub output: Output,
}

impl Session {
    /// Opens the session at `url` (an `http://` URL from Exec) from the
    /// network namespace at `netns`: TCP connection and WebSocket handshake
    /// asking for [`SUBPROTOCOL`], within `limit`.
    pub fn open(url: &str, netns: &Path, limit: Duration) -> Result<Session, String> {
        let deadline = Instant::now() + limit;
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("Exec URL {url:?}: expected http://"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let address: SocketAddr = authority
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| format!("Exec URL {url:?}: no address in {authority:?}"))?;
        let stream =
            skillbox_egress::command::in_netns(Some(netns), || TcpStream::connect_timeout(&address, limit))
                .and_then(|connected| connected)
                .map_err(|err| format!("connecting to {address} in {}: {err}", netns.display()))?;
        stream
            .set_read_timeout(Some(POLL))
            .and_then(|()| stream.set_write_timeout(Some(limit)))
            .map_err(|err| format!("setting socket timeouts: {err}"))?;
        let mut request = format!("ws://{rest}")
            .into_client_request()
            .map_err(|err| format!("Exec URL {url:?}: {err}"))?;
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        let mut handshake = tungstenite::client(request, stream);
        let (socket, response) = loop {
            match handshake {
                Ok(done) => break done,
                Err(HandshakeError::Interrupted(_)) if Instant::now() > deadline => {
                    return Err(format!(
                        "WebSocket handshake with {url}: no answer within {limit:?}"
                    ))
                }
                Err(HandshakeError::Interrupted(midway)) => handshake = midway.handshake(),
                Err(HandshakeError::Failure(err)) => {
                    return Err(format!("WebSocket handshake with {url}: {err}"))
                }
            }
        };
        let protocol = response.headers().get(SEC_WEBSOCKET_PROTOCOL);
        if protocol.and_then(|value| value.to_str().ok()) != Some(SUBPROTOCOL) {
            return Err(format!(
                "WebSocket handshake with {url}: the server chose subprotocol {protocol:?}, not {SUBPROTOCOL}"
            ));
        }
        Ok(Session {
            socket,
            output: Output::default(),
        })
    }

    /// Sends `data` on `channel`.
    pub fn send(&mut self, channel: Channel, data: &[u8]) -> Result<(), String> {
        let mut message = Vec::with_capacity(data.len() + 1);
        message.push(channel as u8);
        message.extend_from_slice(data);
        self.socket
            .send(Message::binary(message))
            .map_err(|err| format!("sending {} bytes on {channel:?}: {err}", data.len()))
    }

    /// Sends `data` to the command's stdin.
    pub fn stdin(&mut self, data: &[u8]) -> Result<(), String> {
        self.send(Channel::Stdin, data)
    }

    /// Asks for the terminal to be `width` columns by `height` rows.
    pub fn resize(&mut self, width: u16, height: u16) -> Result<(), String> {
        let size = serde_json::json!({ "Width": width, "Height": height });
        self.send(Channel::Resize, size.to_string().as_bytes())
    }

    /// Reads what arrives until `done` holds for the output, for at most
    /// `limit`; fails naming `what` if the connection closes or the limit
    /// passes first.
    pub fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Output) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if done(&self.output) {
                return Ok(());
            }
            if self.output.closed {
                return Err(format!(
                    "{what}: the server closed the session first; {}",
                    self.so_far()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{what}: not within {limit:?}; {}", self.so_far()));
            }
            self.read_one()?;
        }
    }

    /// Waits up to `limit` for the server to close the session (the
    /// command ended), and returns all it sent.
    pub fn finish(mut self, limit: Duration) -> Result<Output, String> {
        self.wait_for("the end of the session", limit, |output| output.closed)?;
        Ok(self.output)
    }

    /// Closes the session from this side (which closes the command's stdin)
    /// and waits up to `limit` for the server to close it too.
    pub fn close(mut self, limit: Duration) -> Result<Output, String> {
        self.socket
            .close(None)
            .map_err(|err| format!("closing the session: {err}"))?;
        self.wait_for("the server's close", limit, |output| output.closed)?;
        Ok(self.output)
    }

    /// Reads at most one message (waiting up to [`POLL`]) into the output.
    fn read_one(&mut self) -> Result<(), String> {
        match self.socket.read() {
            Ok(Message::Binary(data)) => {
                if let Some((&channel, payload)) = data.split_first() {
                    match channel {
                        1 => self.output.stdout.extend_from_slice(payload),
                        2 => self.output.stderr.extend_from_slice(payload),
                        3 => self.output.error.extend_from_slice(payload),
                        other => {
                            return Err(format!(
                                "a message on stream {other}, which the server never writes; {}",
                                self.so_far()
                            ))
                        }
                    }
                }
                Ok(())
            }
            Ok(Message::Close(_)) => {
                self.output.closed = true;
                Ok(())
            }
            Ok(Message::Text(text)) => Err(format!("a text message {text:?} on a binary protocol")),
            Ok(_) => Ok(()),
            Err(tungstenite::Error::Io(err))
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(())
            }
            Err(
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
            ) => {
                self.output.closed = true;
                Ok(())
            }
            Err(err) => Err(format!("reading the session: {err}; {}", self.so_far())),
        }
    }

    fn so_far(&self) -> String {
        format!(
            "so far stdout {:?}, stderr {:?}, error stream {:?}",
            self.output.stdout_text(),
            self.output.stderr_text(),
            String::from_utf8_lossy(&self.output.error)
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn success_is_exit_code_zero() {
        assert_eq!(exit_code(&json!({"metadata": {}, "status": "Success"})), Ok(0));
    }

    #[test]
    fn a_non_zero_exit_code_is_the_exit_code_cause() {
        let status = json!({
            "metadata": {},
            "status": "Failure",
            "message": "command terminated with non-zero exit code: exit status 3",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        });
        assert_eq!(exit_code(&status), Ok(3));
    }

    #[test]
    fn other_failures_are_errors_naming_the_status() {
        let internal = json!({"status": "Failure", "reason": "InternalError", "message": "boom"});
        assert!(exit_code(&internal).unwrap_err().contains("boom"));
        let no_cause = json!({"status": "Failure", "reason": "NonZeroExitCode", "details": {}});
        assert!(exit_code(&no_cause)
            .unwrap_err()
            .contains("without an ExitCode cause"));
    }

    #[test]
    fn output_parses_the_error_stream() {
        let output = Output {
            error: br#"{"status":"Success"}"#.to_vec(),
            ..Output::default()
        };
        assert_eq!(output.exit_code(), Ok(0));
        assert!(Output::default().exit_code().is_err());
    }
}
