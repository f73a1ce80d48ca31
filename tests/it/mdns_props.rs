//! The mDNS oracle (`makler::oracles::mdns`, also the `mdns` fuzz target) on inputs from
//! proptest: datagrams that are often real mDNS (questions for the advertised names and others,
//! with the unicast-response bit or not, known answers, probes, responses claiming the
//! instance's name with other data, goodbyes), with bytes changed or cut, from port 5353 or
//! another.

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use makler::oracles;
use proptest::prelude::*;

fn name(labels: &[&[u8]]) -> Name {
    Name::from_labels(labels.iter().copied()).expect("a name")
}

fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let instance = || name(&[b"10-0-0-5:8080", b"_web", b"_tcp", b"local"]);
    let names = prop::sample::select(vec![0u8, 1, 2, 3, 4]).prop_map(move |i| match i {
        0 => name(&[b"_web", b"_tcp", b"local"]),
        1 => instance(),
        2 => name(&[b"_services", b"_dns-sd", b"_udp", b"local"]),
        3 => name(&[b"10-0-0-5", b"makler", b"local"]),
        _ => name(&[b"other", b"_web", b"_tcp", b"local"]),
    });
    let types =
        prop::sample::select(vec![RecordType::PTR, RecordType::SRV, RecordType::TXT, RecordType::A, RecordType::ANY]);
    let record = (names.clone(), 0u8..4, any::<u16>(), prop::sample::select(vec![0u32, 1, 60, 120, 4500])).prop_map(
        move |(name, kind, port, ttl)| {
            let data = match kind {
                0 => RData::PTR(PTR(instance())),
                1 => RData::SRV(SRV::new(0, 0, port, name.clone())),
                2 => RData::TXT(TXT::new(vec![format!("v={port}")])),
                _ => RData::A(A::new(10, 0, 0, (port % 256) as u8)),
            };
            let mut record = Record::from_rdata(name, ttl, data);
            record.mdns_cache_flush = port % 2 == 0;
            record
        },
    );
    let message = (
        any::<bool>(),
        prop::collection::vec((names, types, any::<bool>()), 0..3),
        prop::collection::vec(record.clone(), 0..3),
        prop::collection::vec(record, 0..2),
        any::<bool>(),
    )
        .prop_map(|(response, questions, answers, authorities, truncated)| {
            let kind = if response { MessageType::Response } else { MessageType::Query };
            let mut message = Message::new(0, kind, OpCode::Query);
            message.metadata.truncation = truncated;
            for (name, qtype, unicast) in questions {
                let mut query = Query::query(name, qtype);
                query.set_mdns_unicast_response(unicast);
                message.queries.push(query);
            }
            message.answers = answers;
            message.authorities = authorities;
            message.to_vec().expect("the message encodes")
        });
    let base = prop_oneof![5 => message, 1 => prop::collection::vec(any::<u8>(), 0..60)];
    (base, prop::collection::vec((any::<usize>(), any::<u8>()), 0..3), any::<u8>()).prop_map(
        |(mut bytes, edits, cut)| {
            for (at, byte) in edits {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
            }
            if cut % 5 == 0 {
                bytes.truncate(usize::from(cut) % (bytes.len() + 1));
            }
            bytes
        },
    )
}

/// Datagrams framed as the oracle reads them: a length byte, a port byte, the bytes.
fn datagrams() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((datagram(), any::<u8>()), 0..6).prop_map(|all| {
        let mut out = Vec::new();
        for (bytes, port) in all {
            let bytes = &bytes[..bytes.len().min(255)];
            out.push(bytes.len() as u8);
            out.push(port);
            out.extend_from_slice(bytes);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_responder_and_browser_hold_on_near_valid_datagrams(data in datagrams()) {
        oracles::mdns(&data);
    }

    #[test]
    fn the_responder_and_browser_hold_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        oracles::mdns(&data);
    }
}
