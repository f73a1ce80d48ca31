//! The replicator alone: what leaves through `poll_transmit` and `poll_event`.

use super::*;
use crate::registry;

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
