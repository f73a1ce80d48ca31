//! The DNS face's TSIG checks, on hickory-signed queries (the client side dig and hickory share).

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::{Name, RecordType, TSigner};

use super::{Checked, KEY_NAME, Tsig, secret};
use crate::protocol::seal::Key;

const NOW: u64 = 1_796_000_000;

fn key() -> Key {
    Key::from_secret(&[0x42; 32]).unwrap()
}

fn signer(key: &Key) -> TSigner {
    TSigner::new(secret(key).to_vec(), TsigAlgorithm::HmacSha256, Name::from_ascii(KEY_NAME).unwrap(), 300).unwrap()
}

/// `web.makler.` A, signed at `time`: its bytes and its MAC.
fn signed_query(key: &Key, time: u64) -> (Vec<u8>, Vec<u8>) {
    let mut query = Message::new(7, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii("web.makler.").unwrap(), RecordType::A));
    query.finalize(&signer(key), time).unwrap();
    let mac = query.signature().unwrap().data.mac.clone();
    (query.to_vec().unwrap(), mac)
}

/// A query signed out of time gets BADTIME signed as RFC 8945 §5.2.3 says: the query's time
/// signed and fudge, the server's time in the other data (6 bytes), the request's MAC chained,
/// so that the client verifies it and learns the server's clock.
#[test]
fn badtime_carries_the_clients_time_and_the_servers_in_other_data() {
    let key = key();
    let tsig = Tsig::new(&key);
    let (query, mac) = signed_query(&key, NOW - 3600);
    let mut out = Vec::new();
    assert!(matches!(tsig.check(&query, NOW, &mut out), Checked::Refused));
    let refusal = Message::from_vec(&out).unwrap();
    assert_eq!(refusal.metadata.response_code, ResponseCode::NotAuth);
    let record = refusal.signature().expect("BADTIME is signed");
    assert_eq!(record.data.error, Some(TsigError::BadTime));
    assert_eq!(record.data.time, NOW - 3600, "the client's time signed");
    assert_eq!(record.data.fudge, 300);
    assert_eq!(record.data.other, NOW.to_be_bytes()[2..].to_vec(), "the server's time");
    // The client's check: the MAC chains the request's, and the time is the client's own.
    let (_, time, window) = signer(&key).verify_message_byte(&out, Some(&mac), true).expect("signed with the key");
    assert!(window.contains(&(NOW - 3600)), "{time}");
}

/// A validly signed query whose time signed is within its fudge of 1970 is refused BADTIME,
/// not a panic (hickory's own window subtracts the fudge from the time unchecked).
#[test]
fn a_time_signed_near_zero_is_badtime_not_a_panic() {
    let key = key();
    let tsig = Tsig::new(&key);
    let (query, _) = signed_query(&key, 100);
    let mut out = Vec::new();
    assert!(matches!(tsig.check(&query, NOW, &mut out), Checked::Refused));
    let refusal = Message::from_vec(&out).unwrap();
    assert_eq!(refusal.signature().unwrap().data.error, Some(TsigError::BadTime));
}

/// In time and under the key: taken, with the query's MAC to chain into the answer; another
/// secret or a changed byte: BADSIG, unsigned.
#[test]
fn a_good_signature_is_taken_and_a_bad_one_refused_unsigned() {
    let key = key();
    let tsig = Tsig::new(&key);
    let (query, mac) = signed_query(&key, NOW - 299);
    let mut out = Vec::new();
    assert!(matches!(tsig.check(&query, NOW, &mut out), Checked::Signed(m) if m == mac));
    let mut tampered = query.clone();
    tampered[13] ^= 1;
    let other = Key::from_secret(&[0x43; 32]).unwrap();
    for bad in [tampered, signed_query(&other, NOW).0] {
        assert!(matches!(tsig.check(&bad, NOW, &mut out), Checked::Refused));
        let refusal = Message::from_vec(&out).unwrap();
        assert_eq!(refusal.metadata.response_code, ResponseCode::NotAuth);
        let record = refusal.signature().unwrap();
        assert_eq!((record.data.error, record.data.mac.len()), (Some(TsigError::BadSig), 0));
    }
}

/// Hostile TSIG records: two, one not last, one with a 60,000-byte MAC or other data, one
/// under an unknown algorithm with a long key name. No panic; what does not decode is left to
/// the DNS face's own rules (FORMERR); every refusal is at most the query's size plus one
/// key name and algorithm name (so the response-rate limit bounds it like any answer).
#[test]
fn hostile_tsig_records_are_refused_without_panic_or_growth() {
    use hickory_proto::rr::rdata::tsig::{TSIG, make_tsig_record};
    let key = key();
    let tsig = Tsig::new(&key);
    let record = |name: &str, algorithm: TsigAlgorithm, mac: usize, other: usize| {
        let data = TSIG::new(algorithm, NOW, 300, vec![0xAB; mac], 7, None, vec![0xCD; other]);
        make_tsig_record(Name::from_ascii(name).unwrap(), data)
    };
    let long_name = format!("{}.{}.{}.{}.", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
    let base = || {
        let mut query = Message::new(7, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(Name::from_ascii("web.makler.").unwrap(), RecordType::A));
        query
    };
    let mut cases = Vec::new();
    for (mac, other) in [(60_000, 0), (32, 60_000), (0, 0), (31, 0), (33, 0)] {
        let mut query = base();
        query.set_signature(Box::new(record(KEY_NAME, TsigAlgorithm::HmacSha256, mac, other)));
        cases.push(query.to_vec().unwrap());
    }
    let mut unknown = base();
    unknown.set_signature(Box::new(record(&long_name, TsigAlgorithm::HmacSha512, 0, 0)));
    cases.push(unknown.to_vec().unwrap());
    let mut two = base();
    two.additionals.push(record(KEY_NAME, TsigAlgorithm::HmacSha256, 32, 0).into_record_of_rdata());
    two.set_signature(Box::new(record(KEY_NAME, TsigAlgorithm::HmacSha256, 32, 0)));
    cases.push(two.to_vec().unwrap());
    let (mut not_last, _) = signed_query(&key, NOW);
    not_last[11] += 1; // one more additional record after the TSIG: an A record, whole
    not_last.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1]);
    cases.push(not_last);
    let mut out = Vec::new();
    for (i, query) in cases.iter().enumerate() {
        match tsig.check(query, NOW, &mut out) {
            Checked::Refused => {
                assert!(i < 6, "case {i} refused");
                assert!(out.len() <= query.len() + 2 * 255, "case {i}: {} for {}", out.len(), query.len());
                let refusal = Message::from_vec(&out).unwrap();
                assert_eq!(refusal.metadata.response_code, ResponseCode::NotAuth, "case {i}");
            }
            // Two TSIG records, or one not last, do not decode (hickory): FORMERR, unsigned.
            Checked::NotAQuery => assert!(i >= 6, "case {i} does not decode"),
            Checked::Signed(_) => panic!("case {i} taken"),
        }
    }
}

#[test]
#[ignore = "a timing, by hand"]
fn tsig_cost() {
    use crate::registry::{Config, Registry};
    use std::time::Instant;
    let key = key();
    let tsig = Tsig::new(&key);
    let mut zone = crate::node::dns::Zone::new(&crate::node::dns::DnsConfig::default()).unwrap();
    let mut registry = Registry::new(Config::default(), uuid::Uuid::new_v4);
    let source = crate::protocol::Source::Unicast("10.9.9.9:50000".parse().unwrap());
    registry.register(Instant::now(), "web", "10.0.0.1:80".parse().unwrap(), source).unwrap();
    let t0 = Instant::now();
    let mut plain = Message::new(7, MessageType::Query, OpCode::Query);
    plain.add_query(Query::query(Name::from_ascii("web.makler.").unwrap(), RecordType::A));
    let plain = plain.to_vec().unwrap();
    let (signed, _) = signed_query(&key, NOW);
    let mut badsig = signed.clone();
    let n = badsig.len();
    badsig[n - 10] ^= 1;
    let (stale, _) = signed_query(&key, NOW - 3600);
    let mut out = Vec::new();
    const N: u32 = 100_000;
    let time = |label: &str, f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..N {
            f();
        }
        println!("{label}: {:?} per query", start.elapsed() / N);
    };
    time("plain answer, no TSIG", &mut || {
        crate::node::dns::answer(&mut zone, &mut registry, t0, &plain, crate::node::dns::Transport::Udp, &mut out);
    });
    time("unsigned, REFUSED", &mut || {
        tsig.check(&plain, NOW, &mut out);
    });
    time("bad MAC, BADSIG", &mut || {
        tsig.check(&badsig, NOW, &mut out);
    });
    time("stale, BADTIME", &mut || {
        tsig.check(&stale, NOW, &mut out);
    });
    time("signed, checked and answered and signed", &mut || {
        if let Checked::Signed(mac) = tsig.check(&signed, NOW, &mut out) {
            crate::node::dns::answer_reserving(
                &mut zone,
                &mut registry,
                t0,
                &signed,
                crate::node::dns::Transport::Udp,
                96,
                &mut out,
            );
            tsig.sign(&mac, NOW, &mut out);
        }
    });
}
