//! One query in, one answer out: the proxy's decisions, independent of the
//! transport it came on.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

use super::message::{
    canonical_question, encode_udp, follow_chain, parse_query, policy_name, raw_formerr, response,
    spell_as_asked, Rejection,
};
use super::policy::{DnsPolicy, NameDecision};
use super::upstream::forward;
use super::{AddressLearner, DnsProxyConfig};
use crate::events::{DnsAnswer, DnsQueryEvent, DnsVerdict, EgressEvent, EventSink};
use crate::observe::sinkhole::Sinkhole;

/// The TTL of sinkhole answers: a scan is short.
const SINKHOLE_TTL: u32 = 60;

pub(crate) struct Resolver {
    pub config: DnsProxyConfig,
    pub policy: DnsPolicy,
    pub learner: Arc<dyn AddressLearner>,
    pub events: Arc<dyn EventSink>,
}

/// How the client's answer is sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

pub(crate) fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

fn answer_of(record: &Record) -> DnsAnswer {
    let data = match record.data() {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(aaaa) => aaaa.0.to_string(),
        RData::CNAME(target) => policy_name(&target.0),
        other => other.to_string(),
    };
    DnsAnswer {
        name: policy_name(record.name()),
        record_type: record.record_type().to_string(),
        data,
        ttl: record.ttl(),
    }
}

fn address_of(record: &Record) -> Option<IpAddr> {
    match record.data() {
        RData::A(a) => Some(a.0.into()),
        RData::AAAA(aaaa) => Some(aaaa.0.into()),
        _ => None,
    }
}

/// What was decided for one query, before it is recorded and sent.
struct Outcome {
    code: ResponseCode,
    verdict: DnsVerdict,
    rule: Option<String>,
    reason: Option<String>,
    answers: Vec<Record>,
    /// (address, ports, how long) to teach the firewall.
    learn: Vec<(IpAddr, Option<Vec<policy_compiler::network::Port>>, Duration)>,
    /// Answered from the sinkhole.
    sinkhole: bool,
}

impl Outcome {
    fn refused(code: ResponseCode, reason: String) -> Self {
        Outcome {
            code,
            verdict: DnsVerdict::Refused,
            rule: None,
            reason: Some(reason),
            answers: Vec::new(),
            learn: Vec::new(),
            sinkhole: false,
        }
    }
}

impl Resolver {
    /// The bytes to send back for `bytes`, if any.
    pub async fn handle(&self, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let parsed = match parse_query(bytes) {
            Ok(parsed) => parsed,
            Err(Rejection::Drop) => return None,
            Err(Rejection::Answer(code)) => return self.reject(bytes, code, transport),
        };
        let question = parsed.question;
        let name = policy_name(question.name());
        let qtype = question.query_type();
        let mut outcome = self.decide(&name, qtype, &question).await;

        let event = EgressEvent::DnsQuery(DnsQueryEvent {
            name: name.clone(),
            qtype: qtype.to_string(),
            verdict: outcome.verdict,
            rcode: rcode_name(outcome.code),
            rule: outcome.rule.clone(),
            reason: outcome.reason.clone(),
            answers: outcome.answers.iter().map(answer_of).collect(),
            sinkhole: outcome.sinkhole,
        });
        if let Err(err) = self.events.record(&event) {
            // No record, no answer: the audit trail stays complete.
            tracing::error!(error = %err, %name, "cannot record a DNS query; answering SERVFAIL");
            outcome.code = ResponseCode::ServFail;
            outcome.answers.clear();
            outcome.learn.clear();
        }
        if !outcome.learn.is_empty() {
            let learner = Arc::clone(&self.learner);
            let learn = std::mem::take(&mut outcome.learn);
            // Before the answer leaves, so the client's connect finds the address.
            let taught = tokio::task::spawn_blocking(move || {
                for (ip, ports, ttl) in learn {
                    learner.learn(ip, ports.as_deref(), ttl);
                }
            })
            .await;
            if taught.is_err() {
                tracing::error!(%name, "address learner panicked; answering SERVFAIL");
                outcome.code = ResponseCode::ServFail;
                outcome.answers.clear();
            }
        }
        let reply = response(&parsed.message, outcome.code, outcome.answers);
        encode(&reply, &parsed.message, transport)
    }

    async fn decide(&self, name: &str, qtype: RecordType, question: &Query) -> Outcome {
        if let Some(sinkhole) = &self.config.sinkhole {
            return self.sinkholed(sinkhole, name, qtype, question);
        }
        let allowed = match self.policy.decide(name) {
            NameDecision::Refused(refusal) => {
                return Outcome::refused(ResponseCode::Refused, refusal.to_string());
            }
            NameDecision::Allowed(allowed) => allowed,
        };
        let rule = Some(allowed.rules.join("; "));
        if !matches!(qtype, RecordType::A | RecordType::AAAA) {
            // Allowed name, other type: an empty answer, never forwarded.
            return Outcome {
                code: ResponseCode::NoError,
                verdict: DnsVerdict::Allowed,
                rule,
                reason: Some(format!("type {qtype} is not forwarded")),
                answers: Vec::new(),
                learn: Vec::new(),
                sinkhole: false,
            };
        }
        // The policy's spelling goes upstream, never the client's.
        let Some(forwarded) = canonical_question(name, qtype) else {
            return Outcome::refused(ResponseCode::Refused, "not a valid host name".to_owned());
        };
        let Some(upstream) = forward(&self.config.upstreams, &forwarded, self.config.upstream_timeout).await
        else {
            return Outcome {
                rule,
                ..Outcome::refused(ResponseCode::ServFail, "no upstream resolver answered".to_owned())
            };
        };
        let code = upstream.response_code();
        let mut outcome = Outcome {
            code,
            verdict: DnsVerdict::Allowed,
            rule,
            reason: None,
            answers: Vec::new(),
            learn: Vec::new(),
            sinkhole: false,
        };
        if code != ResponseCode::NoError {
            return outcome;
        }
        let max_ttl = u32::try_from(self.config.max_ttl.as_secs()).unwrap_or(u32::MAX);
        let mut withheld = Vec::new();
        for mut record in follow_chain(forwarded.name(), qtype, upstream.answers()) {
            record.set_ttl(record.ttl().min(max_ttl));
            if let Some(ip) = address_of(&record) {
                if !self.policy.may_learn(ip) {
                    withheld.push(ip.to_string());
                    continue;
                }
                let ttl = Duration::from_secs(u64::from(record.ttl())) + self.config.ttl_grace;
                outcome.learn.push((ip, allowed.ports.clone(), ttl));
            }
            outcome.answers.push(record);
        }
        spell_as_asked(&mut outcome.answers, question.name());
        if !withheld.is_empty() {
            outcome.reason = Some(format!("withheld denied addresses: {}", withheld.join(", ")));
        }
        outcome
    }

    /// The sinkhole's answer, with the policy's verdict on `name` recorded.
    fn sinkholed(&self, sinkhole: &Sinkhole, name: &str, qtype: RecordType, question: &Query) -> Outcome {
        let (verdict, rule, reason) = match self.policy.decide(name) {
            NameDecision::Refused(refusal) => (DnsVerdict::Refused, None, Some(refusal.to_string())),
            NameDecision::Allowed(allowed) => (DnsVerdict::Allowed, Some(allowed.rules.join("; ")), None),
        };
        let mut outcome = Outcome {
            code: ResponseCode::NoError,
            verdict,
            rule,
            reason,
            answers: Vec::new(),
            learn: Vec::new(),
            sinkhole: true,
        };
        if qtype == RecordType::A {
            match sinkhole.address_for(name) {
                Some(address) => outcome.answers.push(Record::from_rdata(
                    question.name().clone(),
                    SINKHOLE_TTL,
                    RData::A(address.into()),
                )),
                None => {
                    outcome.code = ResponseCode::ServFail;
                    outcome.reason = Some(format!("the sinkhole {} is used up", sinkhole.net()));
                }
            }
        }
        outcome
    }

    /// An answer for a packet that is not a query the proxy serves.
    fn reject(&self, bytes: &[u8], code: ResponseCode, transport: Transport) -> Option<Vec<u8>> {
        let parsed = Message::from_vec(bytes).ok();
        let first = parsed.as_ref().and_then(|m| m.queries().first());
        let event = EgressEvent::DnsQuery(DnsQueryEvent {
            name: first.map(|q| policy_name(q.name())).unwrap_or_default(),
            qtype: first.map(|q| q.query_type().to_string()).unwrap_or_default(),
            verdict: DnsVerdict::Refused,
            rcode: rcode_name(code),
            rule: None,
            reason: Some("not a single-question standard query of class IN".to_owned()),
            answers: Vec::new(),
            sinkhole: false,
        });
        if let Err(err) = self.events.record(&event) {
            tracing::error!(error = %err, "cannot record a rejected DNS packet");
        }
        match parsed {
            Some(query) => encode(&response(&query, code, Vec::new()), &query, transport),
            None => raw_formerr(bytes),
        }
    }
}

fn encode(reply: &Message, query: &Message, transport: Transport) -> Option<Vec<u8>> {
    match transport {
        Transport::Udp => encode_udp(reply, query.max_payload()),
        Transport::Tcp => reply.to_vec().ok(),
    }
}
