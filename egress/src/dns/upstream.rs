//! Asking the node's resolvers: a fresh query (random id, fresh source
//! port) carrying only the allowed question, over UDP, then TCP when the
//! answer is truncated. Upstreams are tried in order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// The addresses of the `nameserver` lines of a resolv.conf, port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => {
                    // A link-local IPv6 may carry a zone (`fe80::1%eth0`): skipped.
                    addr.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
                }
                _ => None,
            }
        })
        .collect()
}

/// The first answer from `upstreams` to `question`, or `None` if none
/// answered within `each` (per upstream and transport).
pub async fn forward(upstreams: &[SocketAddr], question: &Query, each: Duration) -> Option<Message> {
    for &upstream in upstreams {
        match ask_udp(upstream, question, each).await {
            Some(answer) if answer.truncated() => {
                if let Some(answer) = ask_tcp(upstream, question, each).await {
                    return Some(answer);
                }
            }
            Some(answer) => return Some(answer),
            None => {}
        }
        tracing::debug!(%upstream, "upstream resolver did not answer");
    }
    None
}

fn request(question: &Query) -> Message {
    let mut message = Message::new();
    message
        .set_id(rand::random())
        .set_recursion_desired(true)
        .add_query(question.clone());
    message
}

/// Whether `answer` answers `request`.
fn matches(request: &Message, answer: &Message) -> bool {
    answer.id() == request.id()
        && answer.message_type() == MessageType::Response
        && answer.queries().len() == 1
        && answer.queries()[0].query_type() == request.queries()[0].query_type()
        && super::message::policy_name(answer.queries()[0].name())
            == super::message::policy_name(request.queries()[0].name())
}

async fn ask_udp(upstream: SocketAddr, question: &Query, each: Duration) -> Option<Message> {
    let request = request(question);
    let bytes = request.to_vec().ok()?;
    let local: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0)).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(&bytes).await.ok()?;
    let mut buffer = vec![0; 65535];
    timeout(each, async {
        loop {
            let len = socket.recv(&mut buffer).await.ok()?;
            // Anything that does not answer our id and question is ignored.
            if let Ok(answer) = Message::from_vec(&buffer[..len]) {
                if matches(&request, &answer) {
                    return Some(answer);
                }
            }
        }
    })
    .await
    .ok()
    .flatten()
}

async fn ask_tcp(upstream: SocketAddr, question: &Query, each: Duration) -> Option<Message> {
    let request = request(question);
    let bytes = request.to_vec().ok()?;
    timeout(each, async {
        let mut stream = TcpStream::connect(upstream).await.ok()?;
        let len = u16::try_from(bytes.len()).ok()?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.ok()?;
        let len = stream.read_u16().await.ok()?;
        let mut buffer = vec![0; usize::from(len)];
        stream.read_exact(&mut buffer).await.ok()?;
        let answer = Message::from_vec(&buffer).ok()?;
        matches(&request, &answer).then_some(answer)
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver  2001:db8::53 \n\
                    nameserver fe80::1%eth0\nnameserver\noptions ndots:2\n";
        assert_eq!(
            parse_resolv_conf(text),
            [
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
    }
}
