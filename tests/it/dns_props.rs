//! The DNS face's oracle (`makler::oracles::dns`, also the `dns` fuzz target) on inputs from
//! proptest: arbitrary bytes never panic and never draw a reply larger than allowed. A biased
//! generator reaches deep into the decoder: real queries (names in and out of the zone, every
//! type the face knows and some it does not, EDNS of any size and version, several questions)
//! with bytes changed, cut or added.

use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use makler::oracles;
use proptest::prelude::*;

fn near_valid_query() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::sample::select(vec![
        "_web._tcp.makler.",
        "_big._tcp.makler.",
        "web.makler.",
        "big.makler.",
        "WEB.Makler.",
        "makler.",
        "_tcp.makler.",
        "7f000101-1000.addr.makler.",
        "00000000000000000000000000000001.addr.makler.",
        "nope.makler.",
        "_services._dns-sd._udp.makler.",
        "b._dns-sd._udp.makler.",
        "_dns-sd._udp.makler.",
        "x._web._tcp.makler.",
        "example.com.",
        ".",
    ]);
    let types = prop::sample::select(vec![
        RecordType::SRV,
        RecordType::PTR,
        RecordType::A,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::SOA,
        RecordType::TXT,
        RecordType::AXFR,
        RecordType::Unknown(65_000),
    ]);
    let query = (
        any::<u16>(),
        prop::collection::vec((names, types), 0..3),
        prop::option::of((any::<u16>(), 0u8..3, any::<bool>())),
        prop::sample::select(vec![OpCode::Query, OpCode::Query, OpCode::Notify, OpCode::Update]),
    )
        .prop_map(|(id, questions, edns, op_code)| {
            let mut message = Message::query();
            message.metadata.id = id;
            message.metadata.op_code = op_code;
            for (name, qtype) in questions {
                message.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
            }
            if let Some((size, version, dnssec_ok)) = edns {
                let mut e = Edns::new();
                e.set_max_payload(size).set_version(version).set_dnssec_ok(dnssec_ok);
                message.set_edns(e);
            }
            message.to_vec().expect("the query encodes")
        });
    let base = prop_oneof![4 => query, 1 => prop::collection::vec(any::<u8>(), 0..80)];
    (base, prop::collection::vec((any::<usize>(), any::<u8>()), 0..4), any::<u8>(), any::<bool>()).prop_map(
        |(mut bytes, edits, cut, extend)| {
            for (at, byte) in edits {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
            }
            if cut % 4 == 0 {
                bytes.truncate(usize::from(cut) % (bytes.len() + 1));
            }
            if extend {
                bytes.extend_from_slice(&[0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0]);
            }
            bytes
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn dns_queries_never_panic_nor_draw_replies_over_the_limit(data in near_valid_query()) {
        oracles::dns(&data);
    }

    #[test]
    fn dns_takes_any_bytes(data in prop::collection::vec(any::<u8>(), 0..600)) {
        oracles::dns(&data);
    }
}
