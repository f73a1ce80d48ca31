//! The replicator alone: what leaves through `poll_transmit` and `poll_event`.

use super::*;
use crate::protocol::peer::{Entry, Lease};
use crate::registry;
use std::time::Duration;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7000))
}

fn sent(r: &mut Replicator) -> Vec<(SocketAddr, PeerFrame<'static>)> {
    let mut out = Vec::new();
    let mut all = Vec::new();
    while let Some(transmit) = r.poll_transmit(&mut out) {
        assert_eq!(transmit.face, Face::Client);
        let frame = peer::decode(&out).unwrap();
        // Only the bodies without borrowed data are kept.
        let body = match frame.body {
            Peer::Hello { addr, complete, instances } => Peer::Hello { addr, complete, instances },
            Peer::SyncRequest { cursor, pages } => Peer::SyncRequest { cursor, pages },
            Peer::Ack { seq } => Peer::Ack { seq },
            Peer::Bye => Peer::Bye,
            // Sent with every hello (see `slots`); not what these tests are about.
            Peer::Features { .. } => continue,
            other => panic!("unexpected {other:?}"),
        };
        all.push((transmit.to, PeerFrame { node: frame.node, body }));
    }
    all
}

#[test]
fn a_new_peer_is_greeted_logged_and_moves_checks_once() {
    let t0 = Instant::now();
    let config = ReplicaConfig { peers: vec![addr(2), addr(3)], ..ReplicaConfig::default() };
    let mut r = Replicator::new(1, addr(1), config);
    let mut registry = Registry::new(registry::Config::default(), uuid::Uuid::new_v4);
    r.handle_start(t0);
    assert!(!r.is_complete(), "waiting for a complete peer");
    r.handle_timeout(t0, &mut registry);
    let hellos = sent(&mut r);
    assert_eq!(hellos.iter().map(|(to, _)| *to).collect::<Vec<_>>(), [addr(2), addr(3)]);
    assert_eq!(r.poll_event(), None);

    for from in [addr(2), addr(3)] {
        let hello = PeerFrame { node: 7, body: Peer::Hello { addr: from, complete: true, instances: 0 } };
        r.handle_datagram(t0, from, hello, &mut registry);
    }
    // A hello of a new incarnation is answered at once; the first complete peer is pulled from.
    let answers = sent(&mut r);
    assert!(matches!(answers[0], (to, PeerFrame { body: Peer::Hello { .. }, .. }) if to == addr(2)));
    assert!(matches!(answers[1], (to, PeerFrame { body: Peer::SyncRequest { cursor: 0, .. }, .. }) if to == addr(2)));
    assert!(matches!(answers[2], (to, PeerFrame { body: Peer::Hello { .. }, .. }) if to == addr(3)));
    assert_eq!(answers.len(), 3);
    assert_eq!(r.poll_event(), Some(ReplicaEvent::Peer(PeerEvent::Joined(addr(2)))));
    assert_eq!(r.poll_event(), Some(ReplicaEvent::Peer(PeerEvent::Joined(addr(3)))));
    assert_eq!(r.poll_event(), Some(ReplicaEvent::OwnersChanged), "once, however many changes");
    assert_eq!(r.poll_event(), None);

    let report = PeerFrame { node: 7, body: Peer::Report { service: "echo", endpoint: addr(9) } };
    r.handle_datagram(t0, addr(2), report, &mut registry);
    assert_eq!(r.poll_event(), Some(ReplicaEvent::Report { service: "echo".into(), endpoint: addr(9) }));
    assert_eq!(r.poll_event(), None);

    r.handle_close();
    assert_eq!(sent(&mut r).iter().filter(|(_, f)| f.body == Peer::Bye).count(), 2);
}

#[test]
fn a_stranger_is_refused_and_its_datagram_sends_nothing() {
    let t0 = Instant::now();
    let mut r = Replicator::new(1, addr(1), ReplicaConfig::default());
    let mut registry = Registry::new(registry::Config::default(), uuid::Uuid::new_v4);
    r.handle_start(t0);
    let hello = PeerFrame { node: 7, body: Peer::Hello { addr: addr(5), complete: true, instances: 0 } };
    r.handle_datagram(t0, addr(5), hello, &mut registry);
    assert!(sent(&mut r).is_empty());
    assert_eq!(r.poll_event(), None);
    assert_eq!(r.stats().rejected, 1);
}

/// A replicator whose peer `addr(2)` is up and complete, and a table of `leases` leases.
fn with_peer(leases: u32) -> (Replicator, Registry, Instant) {
    let t0 = Instant::now();
    let config = ReplicaConfig { peers: vec![addr(2)], ..ReplicaConfig::default() };
    let mut r = Replicator::new(1, addr(1), config);
    let config = registry::Config { ttl: Duration::from_secs(600), ..registry::Config::default() };
    let mut registry = Registry::new(config, uuid::Uuid::new_v4);
    for k in 0..leases {
        let endpoint = SocketAddr::from(([10, 1, (k >> 8) as u8, k as u8], 4000));
        let source = crate::protocol::Source::Unicast(SocketAddr::from(([10, 2, (k >> 8) as u8, k as u8], 5000)));
        registry.register(t0, "echo", endpoint, source).unwrap();
    }
    r.handle_start(t0);
    let hello = PeerFrame { node: 7, body: Peer::Hello { addr: addr(2), complete: true, instances: 0 } };
    r.handle_datagram(t0, addr(2), hello, &mut registry);
    // The peer's table is empty: one last page, and this broker is complete.
    let page = PeerFrame { node: 7, body: Peer::Page { cursor: 0, next: None, leases: Vec::new() } };
    r.handle_datagram(t0, addr(2), page, &mut registry);
    assert!(r.is_complete());
    let mut out = Vec::new();
    while r.poll_transmit(&mut out).is_some() {}
    (r, registry, t0)
}

/// What the replicator sent, by kind: (bucket, element and want datagrams, leases pushed).
fn answers(r: &mut Replicator) -> (usize, usize) {
    let (mut datagrams, mut leases) = (0, 0);
    let mut out = Vec::new();
    while r.poll_transmit(&mut out).is_some() {
        match peer::decode(&out).unwrap().body {
            Peer::Buckets { .. } | Peer::Elements { .. } | Peer::Want { .. } => datagrams += 1,
            Peer::Delta { entries, .. } => leases += entries.len(),
            _ => {}
        }
    }
    (datagrams, leases)
}

#[test]
fn a_peer_cannot_make_a_repair_grow_past_its_budgets() {
    let (mut r, mut registry, now) = with_peer(6000);
    // Bucket hashes that differ everywhere, sent over and over: at most 256 datagrams go back in
    // a digest interval, however many come in.
    for _ in 0..20 {
        let buckets = PeerFrame { node: 7, body: Peer::Buckets { first: 0, hashes: vec![1; 256] } };
        r.handle_datagram(now, addr(2), buckets, &mut registry);
    }
    assert_eq!(answers(&mut r), (256, 0));
    // An empty range over the whole hash space would make it push the whole table: ignored.
    let all = PeerFrame { node: 7, body: Peer::Elements { from: 0, to: u64::MAX, hashes: Vec::new() } };
    r.handle_datagram(now, addr(2), all, &mut registry);
    assert_eq!(answers(&mut r), (0, 0));
    // Wants for every lease, twice: at most 4,096 leases pushed per interval.
    let hashes: Vec<u64> = registry.element_hashes(0, u64::MAX).collect();
    for _ in 0..2 {
        for chunk in hashes.chunks(150) {
            let want = PeerFrame { node: 7, body: Peer::Want { hashes: chunk.to_vec() } };
            r.handle_datagram(now, addr(2), want, &mut registry);
        }
    }
    assert_eq!(answers(&mut r), (0, 4096));
    // The next interval brings new budgets (pushes are deltas: unacknowledged, they are resent
    // like any other, a few times).
    r.handle_timeout(now + Duration::from_secs(1), &mut registry);
    let want = PeerFrame { node: 7, body: Peer::Want { hashes: hashes[..10].to_vec() } };
    r.handle_datagram(now + Duration::from_secs(1), addr(2), want, &mut registry);
    answers(&mut r);
    assert_eq!(r.stats().entropy.pushed, 4106);
}

#[test]
fn digests_go_to_complete_peers_and_two_mismatches_start_a_repair() {
    let (mut r, mut registry, now) = with_peer(10);
    let now = now + Duration::from_secs(1);
    r.handle_timeout(now, &mut registry);
    let mut out = Vec::new();
    let mut digests = 0;
    while r.poll_transmit(&mut out).is_some() {
        if let Peer::Digest { leases, root } = peer::decode(&out).unwrap().body {
            assert_eq!((leases, root), registry.digest());
            digests += 1;
        }
    }
    assert_eq!(digests, 1);
    let same = PeerFrame { node: 7, body: Peer::Digest { leases: 10, root: registry.digest().1 } };
    r.handle_datagram(now, addr(2), same, &mut registry);
    let other = PeerFrame { node: 7, body: Peer::Digest { leases: 9, root: 0 } };
    r.handle_datagram(now, addr(2), other.clone(), &mut registry);
    assert_eq!(answers(&mut r), (0, 0), "one mismatch may be a delta in flight");
    r.handle_datagram(now, addr(2), other, &mut registry);
    assert_eq!(answers(&mut r), (1, 0), "the second sends the bucket hashes (one datagram: most are empty)");
    assert_eq!(r.stats().entropy.mismatches, 2);
}

#[test]
fn a_difference_no_repair_changes_is_retried_less_and_less_often() {
    let (mut r, mut registry, t0) = with_peer(10);
    // A peer that never takes what it is pushed (it is full, or its limits differ): its digest
    // stays the same, and so does this broker's.
    let stuck = PeerFrame { node: 7, body: Peer::Digest { leases: 9, root: 0 } };
    let mut repairs = Vec::new();
    for second in 1..=40u64 {
        let now = t0 + Duration::from_secs(second);
        r.handle_datagram(now, addr(2), stuck.clone(), &mut registry);
        if answers(&mut r).0 > 0 {
            repairs.push(second);
        }
    }
    // The second mismatch starts one; then after 1, 2, 4, 8 and 16 digests more.
    assert_eq!(repairs, [2, 3, 5, 9, 17, 33]);
    // Anything that changes either side starts again at once.
    let moved = PeerFrame { node: 7, body: Peer::Digest { leases: 8, root: 1 } };
    r.handle_datagram(t0 + Duration::from_secs(41), addr(2), moved, &mut registry);
    assert_eq!(answers(&mut r).0, 1);
}

/// A delta from `from`'s incarnation 7.
fn delta(r: &mut Replicator, registry: &mut Registry, now: Instant, seq: u32, entries: Vec<Entry<'_>>) {
    r.handle_datagram(now, addr(2), PeerFrame { node: 7, body: Peer::Delta { seq, entries } }, registry);
}

fn slotted(id: u128, port: u16) -> Entry<'static> {
    Entry::UpsertSlot {
        slot: 5,
        lease: CheckedLease {
            lease: Lease {
                id: uuid::Uuid::from_u128(id),
                service: "echo",
                endpoint: SocketAddr::from(([10, 1, 0, 1], port)),
                source: crate::protocol::Source::Unicast(SocketAddr::from(([10, 3, 0, 1], port))),
                ttl_ms: 1_000,
                aliases: Vec::new(),
            },
            check: Check::None,
        },
    }
}

/// The `Unknown`s sent, as slots.
fn asked(r: &mut Replicator) -> Vec<u32> {
    let mut out = Vec::new();
    let mut slots = Vec::new();
    while r.poll_transmit(&mut out).is_some() {
        if let Peer::Unknown { slots: list } = peer::decode(&out).unwrap().body {
            slots.extend(peer::decode_slots(list));
        }
    }
    slots
}

#[test]
fn a_reused_or_reordered_slot_never_renews_a_removed_or_another_lease() {
    let t0 = Instant::now();
    let config = ReplicaConfig { peers: vec![addr(2)], ..ReplicaConfig::default() };
    let mut r = Replicator::new(1, addr(1), config);
    let mut registry = Registry::new(registry::Config::default(), uuid::Uuid::new_v4);
    r.handle_start(t0);
    let (a, b) = (uuid::Uuid::from_u128(0xa), uuid::Uuid::from_u128(0xb));
    let renew = |list: &'static [u8]| Entry::Renew { ttl_ms: 5_000, slots: list };
    let left = |registry: &Registry, id, now| registry.view(now, id).map(|v| v.ttl_left);

    // A at the sender's slot 5; renewed by slot.
    delta(&mut r, &mut registry, t0, 1, vec![slotted(0xa, 4000)]);
    delta(&mut r, &mut registry, t0, 2, vec![renew(&[5])]);
    assert_eq!(left(&registry, a, t0), Some(Duration::from_secs(5)));
    assert_eq!(asked(&mut r), Vec::<u32>::new());

    // A removed, slot 5 reused for B; a renewal that left before both arrives last.
    delta(&mut r, &mut registry, t0, 4, vec![Entry::Remove { id: a, reason: RemoveReason::Deregistered }]);
    delta(&mut r, &mut registry, t0, 5, vec![slotted(0xb, 4001)]);
    let t1 = t0 + Duration::from_millis(100);
    delta(&mut r, &mut registry, t1, 3, vec![renew(&[5])]);
    assert_eq!(left(&registry, a, t1), None, "A stays removed");
    assert_eq!(left(&registry, b, t1), Some(Duration::from_millis(900)), "B is not renewed by A's renewal");
    assert_eq!(asked(&mut r), Vec::<u32>::new(), "a stale renewal asks for nothing");
    // B's own renewals do renew it.
    delta(&mut r, &mut registry, t1, 6, vec![renew(&[5])]);
    assert_eq!(left(&registry, b, t1), Some(Duration::from_secs(5)));

    // B goes here (its removal lost at the sender's side, say) and its place here is taken by
    // another lease: a renewal of slot 5 finds another id there, renews nothing, and asks.
    registry.apply_remote_removal(t1, b, RemoveReason::Deregistered);
    let source = crate::protocol::Source::Unicast(SocketAddr::from(([10, 9, 0, 1], 1)));
    let c = registry.register(t1, "other", SocketAddr::from(([10, 1, 0, 9], 1)), source).unwrap().id;
    assert_eq!(registry.slot_of(c), Some(crate::registry::Cursor(0)), "C is kept where A and B were");
    let t2 = t1 + Duration::from_secs(1);
    delta(&mut r, &mut registry, t2, 7, vec![renew(&[5]), renew(&[9])]);
    assert_eq!(left(&registry, c, t2), Some(Duration::from_secs(4)), "C is not renewed");
    assert_eq!(asked(&mut r), [5, 9], "both slots asked for");
}

#[test]
fn a_slot_whose_copy_expired_here_renews_neither_the_next_lease_there_nor_the_copy_put_back() {
    let t0 = Instant::now();
    let config = ReplicaConfig { peers: vec![addr(2)], ..ReplicaConfig::default() };
    let mut r = Replicator::new(1, addr(1), config);
    // C's id has A's fingerprint (its 32-bit words XOR alike), as sequential ids often do.
    let (a, c) = (uuid::Uuid::from_u128(0xa), uuid::Uuid::from_u128((0x5 << 32) | 0xf));
    let fingerprint =
        |id: uuid::Uuid| (id.as_u128() ^ (id.as_u128() >> 32) ^ (id.as_u128() >> 64) ^ (id.as_u128() >> 96)) as u32;
    assert_eq!(fingerprint(a), fingerprint(c));
    let mut registry = Registry::new(registry::Config::default(), move || c);
    r.handle_start(t0);
    let renew = |list: &'static [u8]| Entry::Renew { ttl_ms: 5_000, slots: list };
    let left = |registry: &Registry, id, now| registry.view(now, id).map(|v| v.ttl_left);

    // A at the sender's slot 5, kept here at slot 0; it runs out here (its renewals lost).
    delta(&mut r, &mut registry, t0, 1, vec![slotted(0xa, 4000)]);
    assert_eq!(registry.slot_of(a), Some(registry::Cursor(0)));
    let t1 = t0 + Duration::from_secs(2);
    registry.handle_timeout(t1);
    assert_eq!(left(&registry, a, t1), None);
    // C takes its place here; a repair puts A back, elsewhere.
    let source = crate::protocol::Source::Unicast(SocketAddr::from(([10, 9, 0, 1], 1)));
    registry.register(t1, "other", SocketAddr::from(([10, 1, 0, 9], 1)), source).unwrap();
    assert_eq!(registry.slot_of(c), Some(registry::Cursor(0)));
    let Entry::UpsertSlot { lease: CheckedLease { lease, .. }, .. } = slotted(0xa, 4000) else { unreachable!() };
    delta(&mut r, &mut registry, t1, 2, vec![Entry::Upsert(lease)]);
    assert_eq!(registry.slot_of(a), Some(registry::Cursor(1)));
    assert_eq!(asked(&mut r), Vec::<u32>::new());

    // The sender renews A by its slot: C is not renewed in its stead, and the slot is asked for.
    let t2 = t1 + Duration::from_millis(500);
    delta(&mut r, &mut registry, t2, 3, vec![renew(&[5])]);
    assert_eq!(left(&registry, c, t2), Some(registry::Config::default().ttl - Duration::from_millis(500)));
    assert_eq!(asked(&mut r), [5]);
    // Sent whole in answer, A is mapped anew, and its renewals by slot renew it.
    delta(&mut r, &mut registry, t2, 4, vec![slotted(0xa, 4000)]);
    delta(&mut r, &mut registry, t2, 5, vec![renew(&[5])]);
    assert_eq!(left(&registry, a, t2), Some(Duration::from_secs(5)));
    assert_eq!(asked(&mut r), Vec::<u32>::new());
}

/// A delta's entry as (kind, slot, id).
type Sent = (&'static str, u32, uuid::Uuid);

/// Passes this broker's table changes to `r` and ends the turn; returns the deltas sent to
/// `addr(2)`: their numbers and entries.
fn turn(r: &mut Replicator, registry: &mut Registry, now: Instant) -> Vec<(u32, Vec<Sent>)> {
    while let Some(change) = registry.poll_change() {
        r.handle_change(now, &change);
    }
    r.flush(now, registry);
    let mut out = Vec::new();
    let mut deltas = Vec::new();
    while let Some(transmit) = r.poll_transmit(&mut out) {
        let Peer::Delta { seq, entries } = peer::decode(&out).unwrap().body else { continue };
        assert_eq!(transmit.to, addr(2));
        let entries = entries.iter().map(|entry| match entry {
            Entry::UpsertSlot { slot, lease: CheckedLease { lease, .. } } => ("upsert", *slot, lease.id),
            Entry::Remove { id, .. } => ("remove", 0, *id),
            other => panic!("unexpected {other:?}"),
        });
        deltas.push((seq, entries.collect()));
    }
    deltas
}

#[test]
fn a_slot_taken_by_a_new_lease_goes_whole_whatever_its_id() {
    let t0 = Instant::now();
    let config = ReplicaConfig { peers: vec![addr(2)], ..ReplicaConfig::default() };
    let mut r = Replicator::new(1, addr(1), config);
    // B's id has A's fingerprint (its 32-bit words XOR alike), as sequential ids often do.
    let mut ids = [uuid::Uuid::from_u128((0x5 << 32) | 0xf), uuid::Uuid::from_u128(0xa)].into_iter().rev();
    let mut registry = Registry::new(registry::Config::default(), move || ids.next().unwrap());
    r.handle_start(t0);
    let hello = PeerFrame { node: 7, body: Peer::Hello { addr: addr(2), complete: true, instances: 0 } };
    r.handle_datagram(t0, addr(2), hello, &mut registry);
    let page = PeerFrame { node: 7, body: Peer::Page { cursor: 0, next: None, leases: Vec::new() } };
    r.handle_datagram(t0, addr(2), page, &mut registry);
    let features = PeerFrame { node: 7, body: Peer::Features { bits: slots::FEATURE_SLOTS } };
    r.handle_datagram(t0, addr(2), features, &mut registry);
    while r.poll_transmit(&mut Vec::new()).is_some() {}
    let register = |registry: &mut Registry, k: u8| {
        let source = crate::protocol::Source::Unicast(SocketAddr::from(([10, 9, 0, k], 1)));
        registry.register(t0, "echo", SocketAddr::from(([10, 1, 0, k], 4000)), source).unwrap().id
    };

    // A goes whole at its slot, and the peer acknowledges it: confirmed.
    let a = register(&mut registry, 1);
    let sent = turn(&mut r, &mut registry, t0);
    assert_eq!(sent, [(1, vec![("upsert", 0, a)])]);
    r.handle_datagram(t0, addr(2), PeerFrame { node: 7, body: Peer::Ack { seq: 1 } }, &mut registry);
    // A goes; B takes its slot: B goes whole, not as a renewal of A's copy there.
    registry.deregister(t0, a).unwrap();
    assert_eq!(turn(&mut r, &mut registry, t0), [(2, vec![("remove", 0, a)])]);
    let b = register(&mut registry, 2);
    let fingerprint =
        |id: uuid::Uuid| (id.as_u128() ^ (id.as_u128() >> 32) ^ (id.as_u128() >> 64) ^ (id.as_u128() >> 96)) as u32;
    assert_eq!(fingerprint(a), fingerprint(b));
    assert_eq!(registry.slot_of(b), Some(registry::Cursor(0)));
    assert_eq!(turn(&mut r, &mut registry, t0), [(3, vec![("upsert", 0, b)])]);
}

#[test]
fn unknowns_are_answered_for_at_most_4096_slots_a_second_per_peer() {
    let t0 = Instant::now();
    let config = ReplicaConfig { peers: vec![addr(2)], ..ReplicaConfig::default() };
    let mut r = Replicator::new(1, addr(1), config);
    let limits = registry::Limits { max_per_source: 0, max_per_network: 0, ..registry::Limits::default() };
    let mut registry = Registry::new(registry::Config { limits, ..registry::Config::default() }, uuid::Uuid::new_v4);
    r.handle_start(t0);
    let source = crate::protocol::Source::Unicast(SocketAddr::from(([10, 9, 0, 1], 1)));
    for port in 1..=300 {
        registry.register(t0, "echo", SocketAddr::from(([10, 1, 0, 9], port)), source).unwrap();
    }
    let features = PeerFrame { node: 7, body: Peer::Features { bits: super::slots::FEATURE_SLOTS } };
    r.handle_datagram(t0, addr(2), features, &mut registry);
    let mut list = Vec::new();
    peer::encode_slots(0..256, &mut list);
    // Whole leases sent in answer, as UpsertSlot entries.
    let mut answered = |r: &mut Replicator, now: Instant, times: usize| {
        for _ in 0..times {
            r.handle_datagram(now, addr(2), PeerFrame { node: 7, body: Peer::Unknown { slots: &list } }, &mut registry);
        }
        let mut out = Vec::new();
        let mut upserts = 0;
        while r.poll_transmit(&mut out).is_some() {
            if let Peer::Delta { entries, .. } = peer::decode(&out).unwrap().body {
                upserts += entries.iter().filter(|e| matches!(e, Entry::UpsertSlot { .. })).count();
            }
        }
        upserts
    };
    assert_eq!(answered(&mut r, t0, 1), 256, "one Unknown is answered whole");
    assert_eq!(answered(&mut r, t0, 40), 4096 - 256, "then the second's budget runs out");
    assert_eq!(answered(&mut r, t0 + Duration::from_millis(500), 1), 0);
    assert_eq!(answered(&mut r, t0 + Duration::from_secs(1), 1), 256, "the next second answers again");
}

#[test]
fn a_slot_whose_lease_conflicts_here_renews_nothing() {
    let t0 = Instant::now();
    let config = ReplicaConfig { peers: vec![addr(2)], ..ReplicaConfig::default() };
    let mut r = Replicator::new(1, addr(1), config);
    let mut ids = 0xa_u128..;
    let mut registry = Registry::new(registry::Config::default(), move || uuid::Uuid::from_u128(ids.next().unwrap()));
    r.handle_start(t0);
    // 0xa is a lease of another instance here: the peer's lease with that id is a conflict.
    let source = crate::protocol::Source::Unicast(SocketAddr::from(([10, 9, 0, 1], 1)));
    let here = registry.register(t0, "other", SocketAddr::from(([10, 1, 0, 9], 1)), source).unwrap().id;
    assert_eq!(here, uuid::Uuid::from_u128(0xa));
    delta(&mut r, &mut registry, t0, 1, vec![slotted(0xa, 4000)]);
    let t1 = t0 + Duration::from_secs(1);
    delta(&mut r, &mut registry, t1, 2, vec![Entry::Renew { ttl_ms: 60_000, slots: &[5] }]);
    let left = registry.view(t1, here).map(|v| v.ttl_left);
    assert_eq!(left, Some(registry::Config::default().ttl - Duration::from_secs(1)), "the lease here is not renewed");
    assert_eq!(asked(&mut r), [5]);
}

#[test]
fn a_repair_of_a_bucket_hashes_its_leases_once() {
    use crate::registry::digest::{self, HASHED};
    let (mut r, mut registry, now) = with_peer(6000);
    // Bucket 7, not among the last looked at (the listing ends with bucket 255).
    let all: Vec<u64> = registry.element_hashes(0, u64::MAX).collect();
    let mine: Vec<u64> = all.iter().copied().filter(|&hash| digest::bucket_of(hash) == 7).collect();
    let n = mine.len() as u64;
    assert!(n > 10);
    let before = HASHED.with(|hashed| hashed.get());
    // The peer has none of the bucket: its elements come in four datagrams, each answered with
    // pushes, then it wants them all again.
    let (first, last) = digest::bucket_range(7);
    let cuts: Vec<u64> = (0..=4).map(|k| first + (last - first) / 4 * k).collect();
    for pair in cuts.windows(2) {
        let to = if pair[1] == cuts[4] { last } else { pair[1] - 1 };
        let elements = PeerFrame { node: 7, body: Peer::Elements { from: pair[0], to, hashes: Vec::new() } };
        r.handle_datagram(now, addr(2), elements, &mut registry);
    }
    let want = PeerFrame { node: 7, body: Peer::Want { hashes: mine.iter().rev().copied().collect() } };
    r.handle_datagram(now, addr(2), want, &mut registry);
    let hashed = HASHED.with(|hashed| hashed.get()) - before;
    assert_eq!(r.stats().entropy.pushed, 2 * n);
    // Before: each datagram hashed the bucket, each pushed lease the bucket again (n² + 4n).
    assert!(hashed <= n, "{hashed} element hashes for a bucket of {n}");
}

#[test]
fn a_lease_too_large_with_its_metadata_goes_in_a_page_that_says_nothing_of_it() {
    let (mut r, registry, now) = with_peer(0);
    // A name longer than the default limit, so that the lease cannot fit a page with its pairs.
    let mut config = registry.config().clone();
    config.limits.max_name_len = 250;
    let mut registry = Registry::new(config, uuid::Uuid::new_v4);
    let txt: Vec<Vec<u8>> = (b'a'..=b'd').map(|k| [&[k, b'='][..], &[b'v'; 253][..]].concat()).collect();
    let meta = crate::meta::Metadata::from_txt(&txt);
    let path = format!("/{}", "p".repeat(crate::protocol::check::MAX_CHECK_PATH - 1));
    let source = crate::protocol::Source::Unicast(addr(9));
    let service = "s".repeat(250);
    let (big, small) = (SocketAddr::from(([10, 1, 0, 1], 4000)), SocketAddr::from(([10, 1, 0, 2], 4000)));
    let check = crate::protocol::Check::Http(path.as_str());
    registry.register_meta(now, &service, big, source, check, meta).unwrap();
    let small_meta = crate::meta::Metadata::parse_words(["a=1"]).unwrap();
    registry.register_meta(now, "echo", small, source, Check::None, small_meta).unwrap();

    sync::serve_pages(r.me, now, addr(2), (0, 4, true), &mut registry, &mut r.transmits);
    let mut out = Vec::new();
    let mut seen = Vec::new();
    while r.poll_transmit(&mut out).is_some() {
        match peer::decode(&out).unwrap().body {
            Peer::PageChecked { leases, .. } => {
                seen.extend(leases.iter().map(|l| (l.lease.endpoint, None)));
            }
            Peer::PageMeta { leases, .. } => {
                seen.extend(leases.iter().map(|l| (l.lease.lease.endpoint, Some(l.meta.len()))));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort();
    // The large lease without a word on its metadata, never with "none"; the other with its own.
    assert_eq!(seen, [(big, None), (small, Some(4))]);
}

/// A peer table full of brokers found on the group still takes a peer a reload names: it
/// goes before one of them.
#[test]
fn a_configured_peer_added_at_run_time_goes_before_one_found_on_the_group() {
    let config = ReplicaConfig { max_peers: 2, discover: true, ..ReplicaConfig::default() };
    let mut r = Replicator::new(1, addr(1), config);
    let registry = Registry::new(registry::Config::default(), uuid::Uuid::new_v4);
    let now = Instant::now();
    r.handle_start(now);
    r.handle_discovered(now, addr(2), &registry);
    r.handle_discovered(now, addr(3), &registry);
    assert_eq!(r.peers.len(), 2);
    sent(&mut r);
    r.set_peers(&[addr(4)], &registry);
    let table: Vec<SocketAddr> = r.peers.iter().map(|p| p.addr).collect();
    assert!(table.contains(&addr(4)) && table.len() == 2, "{table:?}");
    assert!(sent(&mut r).iter().any(|(to, _)| *to == addr(4)), "the new peer is said hello to");
}
