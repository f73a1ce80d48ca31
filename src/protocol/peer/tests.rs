//! The peer protocol's frames, slot lists and the list packer.

use super::*;

fn lease(service: &str) -> Lease<'_> {
    Lease {
        id: Uuid::from_u128(u128::MAX),
        service,
        endpoint: "[ffff::1]:65535".parse().unwrap(),
        source: Source::Announcer { ip: "ffff::2".parse().unwrap(), origin: u64::MAX },
        ttl_ms: u32::MAX,
        aliases: Vec::new(),
    }
}

#[test]
fn frames_round_trip_and_garbage_is_refused() {
    let frames = [
        PeerFrame { node: u64::MAX, body: Peer::Delta { seq: u32::MAX, entries: vec![Entry::Upsert(lease("echo"))] } },
        PeerFrame { node: 1, body: Peer::Page { cursor: 3, next: None, leases: vec![lease("x")] } },
        PeerFrame { node: 1, body: Peer::Report { service: "echo", endpoint: "127.0.0.1:1".parse().unwrap() } },
        PeerFrame { node: 1, body: Peer::Bye },
        PeerFrame { node: 1, body: Peer::Digest { leases: 10_000, root: u64::MAX } },
        PeerFrame { node: 1, body: Peer::Buckets { first: 255, hashes: vec![0, u64::MAX] } },
        PeerFrame { node: 1, body: Peer::Elements { from: 0, to: u64::MAX, hashes: vec![1, 2] } },
        PeerFrame { node: 1, body: Peer::Want { hashes: vec![u64::MAX] } },
        PeerFrame { node: 1, body: Peer::Features { bits: 1 } },
        PeerFrame { node: 1, body: Peer::MdnsLink { network: "10.0.0.0".parse().unwrap(), prefix: 24 } },
        PeerFrame { node: 1, body: Peer::Unknown { slots: &[0x05, 0x00] } },
        PeerFrame {
            node: 1,
            body: Peer::Delta {
                seq: 2,
                entries: vec![
                    Entry::UpsertSlot { slot: u32::MAX, lease: CheckedLease { lease: lease("x"), check: Check::Tcp } },
                    Entry::Renew { ttl_ms: 6_000, slots: &[0x03, 0x00, 0x05] },
                ],
            },
        },
    ];
    for frame in frames {
        let mut out = Vec::new();
        encode(&frame, &mut out);
        assert_eq!(decode(&out).unwrap(), frame);
        out.push(0);
        assert_eq!(decode(&out), Err(Error::TrailingBytes(1)));
    }
    assert_eq!(decode(b"query echo"), Err(Error::NotPeer));
    assert_eq!(decode(&[0xFA, 0]), Err(Error::UnsupportedVersion(2)));
    assert!(matches!(decode(&[VERSION_BYTE, 1, 99]), Err(Error::Malformed(_))));
}

#[test]
fn slot_lists_round_trip_and_garbage_stops_them() {
    let slots = [0, 1, 2, 200, 70_000, u32::MAX];
    let mut list = Vec::new();
    encode_slots(slots, &mut list);
    assert_eq!(decode_slots(&list).collect::<Vec<_>>(), slots);
    let mut pushed = Vec::new();
    let mut previous = None;
    for slot in slots {
        assert_eq!(slot_size(previous, slot), {
            let before = pushed.len();
            push_slot(&mut pushed, previous, slot);
            pushed.len() - before
        });
        previous = Some(slot);
    }
    assert_eq!(pushed, list);
    // Past u32::MAX, an endless varint, a cut one: the list just ends.
    assert_eq!(decode_slots(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]).collect::<Vec<_>>(), [u32::MAX]);
    assert_eq!(decode_slots(&[0x80; 20]).count(), 0);
    assert_eq!(decode_slots(&[0x01, 0x80]).collect::<Vec<_>>(), [1]);
}

#[test]
fn a_packed_list_decodes_like_an_encoded_one() {
    let names: Vec<String> = (0..200).map(|i| format!("service-{i}")).collect();
    let mut packer = ListPacker::default();
    let mut packed = Vec::new();
    for name in &names {
        if !packer.push(&Entry::Upsert(lease(name))) {
            break;
        }
        packed.push(Entry::Upsert(lease(name)));
    }
    assert!(packed.len() > 10 && packed.len() < 200, "{}", packed.len());
    let mut out = Vec::new();
    packer.write(&PeerFrame { node: u64::MAX, body: Peer::Delta { seq: 9, entries: Vec::new() } }, &mut out);
    assert!(out.len() <= MAX_DATAGRAM, "{}", out.len());
    let expected = PeerFrame { node: u64::MAX, body: Peer::Delta { seq: 9, entries: packed } };
    assert_eq!(decode(&out).unwrap(), expected);
    packer.clear();
    assert!(packer.is_empty());
}

#[test]
fn the_overhead_bound_holds_for_the_largest_header() {
    let delta = PeerFrame { node: u64::MAX, body: Peer::Delta { seq: u32::MAX, entries: Vec::new() } };
    let page =
        PeerFrame { node: u64::MAX, body: Peer::Page { cursor: u32::MAX, next: Some(u32::MAX), leases: Vec::new() } };
    for frame in [delta, page] {
        let mut out = Vec::new();
        encode(&frame, &mut out);
        // An empty list's length is one byte; a full datagram's at most three.
        assert!(out.len() + 2 <= FRAME_OVERHEAD, "{} bytes", out.len());
    }
    let name = "s".repeat(64);
    let entry = Entry::Upsert(lease(&name));
    assert!(size_of(&entry) < 200, "{}", size_of(&entry));
}
