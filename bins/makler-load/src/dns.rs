//! DNS as load: SRV queries `_NAME._tcp.ZONE.` for a list of service names, encoded and decoded
//! with `hickory-proto` (no DNS byte is written by hand), and the zone file that holds the same
//! table the broker benchmark registers, for an authoritative server such as NSD.

use std::fmt::Write as _;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::udp::{Answer, Workload, instance_endpoint, type_name};

/// The query name of service `name` in `zone`: `_NAME._tcp.ZONE.` (RFC 2782).
pub fn srv_name(name: &str, zone: &str) -> String {
    format!("_{name}._tcp.{}.", zone.trim_end_matches('.'))
}

/// SRV queries over a list of names, in turn; a reply is good when it parses as a DNS response
/// with the request's id, `NOERROR` and at least one answer.
#[derive(Debug, Clone)]
pub struct DnsLoad {
    /// One prepared query per name; only the id changes from request to request.
    queries: Vec<Message>,
}

impl DnsLoad {
    /// SRV queries for `names` in `zone`. Fails on a name that is not a valid DNS name.
    pub fn new(names: &[String], zone: &str) -> Result<DnsLoad, String> {
        if names.is_empty() {
            return Err("no names to query".into());
        }
        let queries = names
            .iter()
            .map(|name| {
                let qname = srv_name(name, zone);
                let qname = Name::from_ascii(&qname).map_err(|e| format!("{qname:?} is not a DNS name: {e}"))?;
                let mut message = Message::new(0, MessageType::Query, OpCode::Query);
                message.metadata.recursion_desired = false;
                message.add_query(Query::query(qname, RecordType::SRV));
                Ok(message)
            })
            .collect::<Result<_, String>>()?;
        Ok(DnsLoad { queries })
    }
}

impl Workload for DnsLoad {
    fn keyed(&self) -> bool {
        true
    }

    fn request(&mut self, seq: u64, out: &mut Vec<u8>) -> u64 {
        let n = self.queries.len();
        let message = &mut self.queries[seq as usize % n];
        let id = seq as u16;
        message.metadata.id = id;
        // Encoding a query built from a valid name does not fail; an empty datagram would only
        // be lost, and counted so.
        if let Ok(bytes) = message.to_vec() {
            out.extend_from_slice(&bytes);
        }
        id.into()
    }

    fn answer(&mut self, reply: &[u8]) -> Answer {
        match Message::from_vec(reply) {
            Ok(message) => {
                let m = &message.metadata;
                let good = m.message_type == MessageType::Response
                    && m.response_code == ResponseCode::NoError
                    && !message.answers.is_empty();
                Answer { key: Some(m.id.into()), good }
            }
            Err(_) => Answer { key: None, good: false },
        }
    }

    fn fork(&self) -> Box<dyn Workload> {
        Box::new(self.clone())
    }
}

/// A zone file for `zone` holding the broker benchmark's table: for each of `types` services
/// `{prefix}K`, one SRV record `_{prefix}K._tcp.ZONE.` per instance (instance `i` under type
/// `i % types`, port and address from [`instance_endpoint`]), and an A record `iN.ZONE.` for
/// each instance's address; plus the SOA and NS records a zone needs.
pub fn zone_file(zone: &str, prefix: &str, instances: usize, types: usize) -> String {
    let zone = format!("{}.", zone.trim_end_matches('.'));
    let mut out = String::with_capacity(instances * 120);
    let _ = writeln!(out, "$ORIGIN {zone}\n$TTL 3600");
    let _ = writeln!(out, "@ IN SOA ns.{zone} hostmaster.{zone} 1 3600 900 604800 300");
    let _ = writeln!(out, "@ IN NS ns.{zone}\nns IN A 127.0.0.1");
    for k in 0..types.max(1) {
        let name = srv_name(&type_name(prefix, k), &zone);
        for i in (k..instances).step_by(types.max(1)) {
            let _ = writeln!(out, "{name} IN SRV 0 0 {} i{i}.{zone}", instance_endpoint(i).port());
        }
    }
    for i in 0..instances {
        let _ = writeln!(out, "i{i} IN A {}", instance_endpoint(i).ip());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::SRV;
    use hickory_proto::rr::{RData, Record};

    #[test]
    fn queries_are_srv_queries_with_the_sequence_as_id() {
        let mut load = DnsLoad::new(&["svc0".into(), "svc1".into()], "makler.test").unwrap();
        let mut out = Vec::new();
        assert_eq!(load.request(65537, &mut out), 1);
        let query = Message::from_vec(&out).unwrap();
        assert_eq!(query.metadata.id, 1);
        assert_eq!(query.metadata.message_type, MessageType::Query);
        assert_eq!(query.queries[0].name().to_ascii(), "_svc1._tcp.makler.test.");
        assert_eq!(query.queries[0].query_type(), RecordType::SRV);
        assert!(DnsLoad::new(&["a..b".into()], "makler.test").is_err());
    }

    #[test]
    fn replies_are_judged_by_code_and_answers() {
        let mut load = DnsLoad::new(&["svc0".into()], "makler.test").unwrap();
        let name = Name::from_ascii("_svc0._tcp.makler.test.").unwrap();
        let mut reply = Message::response(7, OpCode::Query);
        let target = Name::from_ascii("i0.makler.test.").unwrap();
        reply.answers.push(Record::from_rdata(name, 60, RData::SRV(SRV::new(0, 0, 4000, target))));
        assert_eq!(load.answer(&reply.to_vec().unwrap()), Answer { key: Some(7), good: true });
        let empty = Message::response(8, OpCode::Query);
        assert_eq!(load.answer(&empty.to_vec().unwrap()), Answer { key: Some(8), good: false });
        let refused = Message::error_msg(9, OpCode::Query, ResponseCode::Refused);
        assert_eq!(load.answer(&refused.to_vec().unwrap()), Answer { key: Some(9), good: false });
        assert_eq!(load.answer(b"\x00"), Answer { key: None, good: false });
    }

    #[test]
    fn the_zone_holds_every_instance_once() {
        let zone = zone_file("makler.test", "svc", 25, 10);
        assert_eq!(zone.lines().filter(|l| l.contains(" IN SRV ")).count(), 25);
        assert_eq!(zone.lines().filter(|l| l.starts_with("_svc3._tcp.makler.test. ")).count(), 3);
        assert!(zone.contains("_svc3._tcp.makler.test. IN SRV 0 0 4013 i13.makler.test.\n"), "{zone}");
        assert!(zone.contains(&format!("i13 IN A {}\n", instance_endpoint(13).ip())));
    }
}
