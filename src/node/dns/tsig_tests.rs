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
