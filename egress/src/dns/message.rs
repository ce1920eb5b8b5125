//! Parsing queries and building responses; no sockets.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The longest CNAME chain followed; longer ones are cut (and the
/// addresses past the cut neither returned nor learned).
pub const MAX_CHAIN: usize = 16;

/// Largest query accepted, over UDP or TCP. Real queries are a few hundred
/// bytes; anything bigger is dropped.
pub const MAX_QUERY_LEN: usize = 4096;

/// Largest UDP response sent, whatever the client advertises.
pub const MAX_UDP_RESPONSE: u16 = 1232;

/// A well-formed standard query with one question.
#[derive(Debug)]
pub struct ParsedQuery {
    pub message: Message,
    pub question: Query,
}

/// Why a packet is not a query the proxy serves.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not worth an answer (a response, a runt, oversized).
    Drop,
    /// Answer with this code, echoing the id and question if any.
    Answer(ResponseCode),
}

/// The name as the policy sees it: lower case, no trailing dot.
pub fn policy_name(name: &Name) -> String {
    let text = name.to_lowercase().to_ascii();
    text.strip_suffix('.').unwrap_or(&text).to_owned()
}

/// The question asked upstream for an allowed `name` (as [`policy_name`]
/// gives it): the policy's spelling, lower case, class IN. Never the
/// client's spelling: the letter case of a name the policy allows could
/// otherwise carry about a bit per letter to the upstream resolver's log.
pub fn canonical_question(name: &str, qtype: RecordType) -> Option<Query> {
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(Query::query(name, qtype))
}

/// Gives the records owned by the forwarded name the client's spelling of
/// it, as a resolver answering the client's own question would: a client
/// may compare them with what it sent, letter case included.
pub fn spell_as_asked(records: &mut [Record], asked: &Name) {
    let forwarded = policy_name(asked);
    for record in records {
        if policy_name(record.name()) == forwarded {
            record.set_name(asked.clone());
        }
    }
}

pub fn parse_query(bytes: &[u8]) -> Result<ParsedQuery, Rejection> {
    if bytes.len() < 12 || bytes.len() > MAX_QUERY_LEN {
        return Err(Rejection::Drop);
    }
    // QR bit set: a response; never answer those (no reflection loops).
    if bytes[2] & 0x80 != 0 {
        return Err(Rejection::Drop);
    }
    let message = Message::from_vec(bytes).map_err(|_| Rejection::Answer(ResponseCode::FormErr))?;
    if message.op_code() != OpCode::Query {
        return Err(Rejection::Answer(ResponseCode::NotImp));
    }
    if message.queries().len() != 1 || !message.answers().is_empty() {
        return Err(Rejection::Answer(ResponseCode::FormErr));
    }
    let question = message.queries()[0].clone();
    if question.query_class() != DNSClass::IN {
        return Err(Rejection::Answer(ResponseCode::Refused));
    }
    Ok(ParsedQuery { message, question })
}

/// FORMERR for a packet `Message` could not parse: the header's id and
/// opcode, no question. `None` for packets `parse_query` drops.
pub fn raw_formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || bytes.len() > MAX_QUERY_LEN || bytes[2] & 0x80 != 0 {
        return None;
    }
    let mut out = vec![0; 12];
    out[..2].copy_from_slice(&bytes[..2]);
    out[2] = 0x80 | (bytes[2] & 0x78); // QR, opcode
    out[3] = 0x80 | ResponseCode::FormErr.low(); // RA, rcode
    Some(out)
}

/// A response to `query` with `code` and `answers`.
pub fn response(query: &Message, code: ResponseCode, answers: Vec<Record>) -> Message {
    let mut out = Message::new();
    out.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code)
        .add_queries(query.queries().iter().cloned())
        .add_answers(answers);
    if query.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_RESPONSE);
        out.set_edns(edns);
    }
    out
}

/// The records of `answers` on the chain from `qname` to its `qtype`
/// records: CNAMEs in order, then the addresses. Records for other names
/// are dropped.
pub fn follow_chain(qname: &Name, qtype: RecordType, answers: &[Record]) -> Vec<Record> {
    let mut chain = Vec::new();
    let mut current = policy_name(qname);
    for _ in 0..=MAX_CHAIN {
        let here: Vec<&Record> = answers
            .iter()
            .filter(|r| policy_name(r.name()) == current)
            .collect();
        let finals: Vec<Record> = here
            .iter()
            .filter(|r| r.record_type() == qtype)
            .map(|r| (*r).clone())
            .collect();
        if !finals.is_empty() {
            chain.extend(finals);
            return chain;
        }
        match here.iter().find_map(|r| match r.data() {
            RData::CNAME(target) => Some((*r, policy_name(&target.0))),
            _ => None,
        }) {
            Some((record, target)) if chain.len() < MAX_CHAIN => {
                chain.push(record.clone());
                current = target;
            }
            _ => return chain,
        }
    }
    chain
}

/// Encodes `message` for UDP to a client that accepts `client_max` bytes:
/// if it does not fit, the answers are dropped and TC set, so the client
/// retries over TCP.
pub fn encode_udp(message: &Message, client_max: u16) -> Option<Vec<u8>> {
    let limit = usize::from(client_max.clamp(512, MAX_UDP_RESPONSE));
    let bytes = message.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut truncated = message.clone();
    truncated.take_answers();
    truncated.take_name_servers();
    truncated.take_additionals();
    truncated.set_truncated(true);
    truncated.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    use hickory_proto::rr::rdata::{A, CNAME, TXT};

    use super::*;

    fn name(text: &str) -> Name {
        Name::from_str(text).unwrap()
    }

    fn cname(from: &str, to: &str) -> Record {
        Record::from_rdata(name(from), 30, RData::CNAME(CNAME(name(to))))
    }

    fn a(owner: &str, ip: [u8; 4], ttl: u32) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(ip))))
    }

    fn query_bytes(qname: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x1234)
            .set_recursion_desired(true)
            .add_query(Query::query(name(qname), qtype));
        m.to_vec().unwrap()
    }

    #[test]
    fn parses_a_standard_query() {
        let parsed = parse_query(&query_bytes("Api.Example.com.", RecordType::AAAA)).unwrap();
        assert_eq!(parsed.message.id(), 0x1234);
        assert_eq!(parsed.question.query_type(), RecordType::AAAA);
        assert_eq!(policy_name(parsed.question.name()), "api.example.com");
    }

    #[test]
    fn rejects_odd_packets() {
        assert_eq!(parse_query(b"short").unwrap_err(), Rejection::Drop);
        assert_eq!(parse_query(&[0; MAX_QUERY_LEN + 1]).unwrap_err(), Rejection::Drop);
        let mut response = query_bytes("a.example.com", RecordType::A);
        response[2] |= 0x80;
        assert_eq!(parse_query(&response).unwrap_err(), Rejection::Drop);
        assert!(raw_formerr(&response).is_none());

        // Header claims one question, body is garbage.
        let garbage = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff];
        assert_eq!(
            parse_query(&garbage).unwrap_err(),
            Rejection::Answer(ResponseCode::FormErr)
        );
        let formerr = Message::from_vec(&raw_formerr(&garbage).unwrap()).unwrap();
        assert_eq!(formerr.id(), 0xabcd);
        assert_eq!(formerr.message_type(), MessageType::Response);
        assert_eq!(formerr.response_code(), ResponseCode::FormErr);

        let mut two = Message::new();
        two.add_query(Query::query(name("a.example.com."), RecordType::A));
        two.add_query(Query::query(name("b.example.com."), RecordType::A));
        let err = parse_query(&two.to_vec().unwrap()).unwrap_err();
        assert_eq!(err, Rejection::Answer(ResponseCode::FormErr));

        let mut chaos = Message::new();
        let mut q = Query::query(name("version.bind."), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        chaos.add_query(q);
        let err = parse_query(&chaos.to_vec().unwrap()).unwrap_err();
        assert_eq!(err, Rejection::Answer(ResponseCode::Refused));
    }

    #[test]
    fn follows_cname_chains_only_from_the_question() {
        let answers = vec![
            a("unrelated.example.net.", [198, 51, 100, 99], 5),
            cname("www.example.com.", "a.cdn.example.net."),
            cname("a.cdn.example.net.", "B.cdn.example.net."),
            a("b.cdn.example.net.", [198, 51, 100, 1], 60),
            a("b.cdn.example.net.", [198, 51, 100, 2], 60),
        ];
        let chain = follow_chain(&name("WWW.example.com."), RecordType::A, &answers);
        let kinds: Vec<String> = chain
            .iter()
            .map(|r| format!("{} {}", r.name(), r.record_type()))
            .collect();
        assert_eq!(
            kinds,
            [
                "www.example.com. CNAME",
                "a.cdn.example.net. CNAME",
                "b.cdn.example.net. A",
                "b.cdn.example.net. A"
            ]
        );
        // A loop ends at the limit without addresses.
        let looped = vec![
            cname("x.example.com.", "y.example.com."),
            cname("y.example.com.", "x.example.com."),
        ];
        let chain = follow_chain(&name("x.example.com."), RecordType::A, &looped);
        assert_eq!(chain.len(), MAX_CHAIN);
        assert!(chain.iter().all(|r| r.record_type() == RecordType::CNAME));
        // Other types at the end of the chain are not followed.
        let txt = vec![Record::from_rdata(
            name("t.example.com."),
            1,
            RData::TXT(TXT::new(vec!["x".into()])),
        )];
        assert!(follow_chain(&name("t.example.com."), RecordType::A, &txt).is_empty());
    }

    #[test]
    fn upstream_gets_the_policys_spelling_and_the_client_its_own() {
        let asked = Name::from_ascii("ALLowED.EXaMplE.").unwrap();
        let parsed = parse_query(&{
            let mut m = Message::new();
            m.add_query(Query::query(asked.clone(), RecordType::A));
            m.to_vec().unwrap()
        })
        .unwrap();
        assert_eq!(parsed.question.name().to_ascii(), "ALLowED.EXaMplE.");
        let forwarded = canonical_question(&policy_name(parsed.question.name()), RecordType::A).unwrap();
        assert_eq!(forwarded.name().to_ascii(), "allowed.example.");
        assert_eq!(forwarded.query_class(), DNSClass::IN);

        let mut records = vec![
            cname("allowed.example.", "cdn.example.net."),
            a("cdn.example.net.", [198, 51, 100, 1], 60),
        ];
        spell_as_asked(&mut records, &asked);
        let owners: Vec<String> = records.iter().map(|r| r.name().to_ascii()).collect();
        assert_eq!(owners, ["ALLowED.EXaMplE.", "cdn.example.net."]);
    }

    #[test]
    fn response_echoes_the_question_and_truncates() {
        let query = parse_query(&query_bytes("big.example.com.", RecordType::A))
            .unwrap()
            .message;
        let answers: Vec<Record> = (0..100)
            .map(|i| a("big.example.com.", [198, 51, 100, i], 60))
            .collect();
        let full = response(&query, ResponseCode::NoError, answers);
        assert_eq!(full.id(), 0x1234);
        assert!(full.recursion_desired());
        let bytes = encode_udp(&full, 512).unwrap();
        assert!(bytes.len() <= 512);
        let back = Message::from_vec(&bytes).unwrap();
        assert!(back.truncated());
        assert!(back.answers().is_empty());
        assert_eq!(back.queries(), query.queries());
        let small = response(&query, ResponseCode::Refused, vec![]);
        let back = Message::from_vec(&encode_udp(&small, 512).unwrap()).unwrap();
        assert_eq!(back.response_code(), ResponseCode::Refused);
        assert!(!back.truncated());
    }
}
