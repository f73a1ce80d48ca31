//! protocol.md shows real bytes: every binary example in it is checked against the encoder.

use makler::protocol::peer::{self, CheckedLease, Entry, Lease, Peer, PeerFrame};
use makler::protocol::{
    self, BrokerStats, Check, Counter, Form, InstanceInfo, InstancePage, Multicast, PeerStats, Rejection, RemoveReason,
    Request, Response, ServiceCount, ServicePage, Source, binary,
};
use uuid::Uuid;

const ID: Uuid = Uuid::from_u128(0x67e55044_10b1_426f_9247_bb680e5fe0c8);

/// The element hash of the lease in the examples (`echo`, `127.0.0.1:4000`, from `127.0.0.1:50000`).
const HASH: u64 = 0x0ba4_ae25_e355_1888;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// The sealed example of protocol.md: `register echo 4000` in text, sealed with the key of the
/// file `makler example key, not for use`, sender 0x0102030405060708, seq 1, sent at Unix time
/// 1,800,000,000,000 ms.
const SEALED_TEXT: &[u8] = b"register echo 4000";

fn sealed(datagram: &[u8]) -> Vec<u8> {
    use makler::protocol::seal::{Key, Sealer};
    let key = Key::from_secret(b"makler example key, not for use").unwrap();
    let mut out = Vec::new();
    Sealer::new(key, 0x0102_0304_0506_0708).seal(datagram, 1_800_000_000_000, &mut out);
    out
}

/// Each example as protocol.md writes it: a name and the encoded bytes.
fn examples() -> Vec<(&'static str, Vec<u8>)> {
    let request = |id: u32, r: Request<'_>| {
        let mut out = Vec::new();
        binary::encode_request(id, &r, &mut out);
        out
    };
    let multicast = |id: u32, m: Multicast<'_>| {
        let mut out = Vec::new();
        binary::encode(id, &m, &mut out);
        out
    };
    let reply = |id: u32, r: Response| {
        let mut out = Vec::new();
        protocol::encode_reply(Form::Binary { request_id: id }, &r, &mut out);
        out
    };
    let to_peer = |node: u64, body: Peer<'_>| {
        let mut out = Vec::new();
        peer::encode(&PeerFrame { node, body }, &mut out);
        out
    };
    let lease = Lease {
        id: ID,
        service: "echo",
        endpoint: "127.0.0.1:4000".parse().unwrap(),
        source: Source::Unicast("127.0.0.1:50000".parse().unwrap()),
        ttl_ms: 5000,
        aliases: Vec::new(),
    };
    let one_peer = BrokerStats {
        counters: vec![Counter::new("instances", 2), Counter::new("peer_count", 1), Counter::new("peers_up", 1)],
        peers: vec![PeerStats {
            addr: "127.0.0.1:7001".parse().unwrap(),
            up: true,
            complete: true,
            instances: 2,
            last_heard_ms: Some(120),
        }],
        ..BrokerStats::default()
    };
    vec![
        ("register", request(1, Request::Register { service: "echo", ip: None, port: 4000 })),
        (
            "register with ip",
            request(2, Request::Register { service: "echo", ip: Some([10, 0, 0, 7].into()), port: 4000 }),
        ),
        ("registered", reply(1, Response::Registered { id: ID, ttl_ms: 5000 })),
        ("heartbeat", request(3, Request::Heartbeat { id: ID })),
        ("ok", reply(3, Response::Ok)),
        ("query", request(4, Request::Query { service: "echo" })),
        (
            "instances",
            reply(4, Response::Instances(vec!["127.0.0.1:4000".parse().unwrap(), "[::1]:4001".parse().unwrap()])),
        ),
        ("not found", reply(5, Response::NotFound)),
        ("deregister", request(6, Request::Deregister { id: ID })),
        ("stats", request(7, Request::Stats)),
        (
            "stats reply",
            reply(
                7,
                Response::Stats(Box::new(BrokerStats {
                    counters: vec![
                        Counter::new("instances", 2),
                        Counter::new("services", 1),
                        Counter::new("received", 300),
                    ],
                    ..BrokerStats::default()
                })),
            ),
        ),
        ("stats reply with a peer", reply(7, Response::Stats(Box::new(one_peer)))),
        ("error full", reply(8, Response::Error(Rejection::Full { max: 100_000 }))),
        ("network quota", reply(8, Response::Error(Rejection::NetworkQuota { max: 4096 }))),
        ("nearly full", reply(8, Response::Error(Rejection::NearlyFull { held: 64 }))),
        ("key required", reply(8, Response::Error(Rejection::KeyRequired))),
        ("sealed request", sealed(SEALED_TEXT)),
        ("sealed request, binary", sealed(&request(1, Request::Register { service: "echo", ip: None, port: 4000 }))),
        ("report", request(10, Request::Report { service: "echo", endpoint: "127.0.0.1:4000".parse().unwrap() })),
        ("catching up", reply(11, Response::CatchingUp)),
        ("too many reports", reply(12, Response::Error(Rejection::TooMany { what: "reports".into(), max: 20 }))),
        (
            "peer hello",
            to_peer(0x42, Peer::Hello { addr: "127.0.0.1:7001".parse().unwrap(), complete: true, instances: 3 }),
        ),
        ("peer delta", to_peer(0x42, Peer::Delta { seq: 1, entries: vec![Entry::Upsert(lease.clone())] })),
        ("peer ack", to_peer(0x43, Peer::Ack { seq: 1 })),
        (
            "peer removal",
            to_peer(
                0x42,
                Peer::Delta { seq: 2, entries: vec![Entry::Remove { id: ID, reason: RemoveReason::Unreachable }] },
            ),
        ),
        ("sync request", to_peer(0x43, Peer::SyncRequest { cursor: 0, pages: 16 })),
        ("page", to_peer(0x42, Peer::Page { cursor: 0, next: None, leases: vec![lease.clone()] })),
        (
            "checked upsert",
            to_peer(
                0x42,
                Peer::Delta {
                    seq: 3,
                    entries: vec![Entry::UpsertChecked(CheckedLease { lease: lease.clone(), check: Check::Tcp })],
                },
            ),
        ),
        (
            "checked page",
            to_peer(
                0x42,
                Peer::PageChecked {
                    cursor: 0,
                    next: None,
                    leases: vec![CheckedLease { lease: lease.clone(), check: Check::Http("/") }],
                },
            ),
        ),
        ("peer report", to_peer(0x43, Peer::Report { service: "echo", endpoint: "127.0.0.1:4000".parse().unwrap() })),
        ("bye", to_peer(0x42, Peer::Bye)),
        ("bridge query", to_peer(0x43, Peer::Query { id: 7, service: "echo" })),
        ("bridge answer", to_peer(0x42, Peer::Answer { id: 7, instances: vec!["127.0.0.1:4000".parse().unwrap()] })),
        ("digest", to_peer(0x42, Peer::Digest { leases: 1, root: HASH })),
        ("buckets", to_peer(0x43, Peer::Buckets { first: 11, hashes: vec![0] })),
        ("elements", to_peer(0x42, Peer::Elements { from: 0x0b << 56, to: (0x0c << 56) - 1, hashes: vec![HASH] })),
        ("want", to_peer(0x43, Peer::Want { hashes: vec![HASH] })),
        ("features", to_peer(0x43, Peer::Features { bits: 1 })),
        (
            "slot upsert",
            to_peer(
                0x42,
                Peer::Delta {
                    seq: 4,
                    entries: vec![Entry::UpsertSlot {
                        slot: 7,
                        lease: CheckedLease { lease: lease.clone(), check: Check::None },
                    }],
                },
            ),
        ),
        (
            "slot renewal",
            to_peer(
                0x42,
                Peer::Delta { seq: 5, entries: vec![Entry::Renew { ttl_ms: 5750, slots: &[0x03, 0x00, 0x05] }] },
            ),
        ),
        ("unknown slots", to_peer(0x43, Peer::Unknown { slots: &[0x07] })),
        ("features with metadata", to_peer(0x43, Peer::Features { bits: 3 })),
        ("features with mdns", to_peer(0x43, Peer::Features { bits: 7 })),
        ("mdns link", to_peer(0x43, Peer::MdnsLink { network: "10.0.0.0".parse().unwrap(), prefix: 24 })),
        (
            "slot upsert with metadata",
            to_peer(
                0x42,
                Peer::Delta {
                    seq: 6,
                    entries: vec![Entry::UpsertMeta {
                        slot: 7,
                        lease: CheckedLease { lease: lease.clone(), check: Check::None },
                        meta: b"\x06path=/",
                    }],
                },
            ),
        ),
        (
            "register with metadata",
            request(
                20,
                Request::RegisterMeta {
                    service: "web",
                    ip: None,
                    port: 8080,
                    check: Check::None,
                    meta: vec![("path", "/"), ("version", "2")],
                },
            ),
        ),
        (
            "bad metadata",
            reply(20, Response::Error(Rejection::BadMeta { why: "bad metadata \"=x\": the key is empty".into() })),
        ),
        ("instances with metadata", request(21, Request::InstancesMeta { service: "web", cursor: 0 })),
        ("watch with metadata", request(22, Request::WatchMeta { service: "web", cookie: 0x5f0e_3a17_c2d9_4b61 })),
        (
            "changed with metadata",
            reply(
                22,
                Response::ChangedMeta {
                    service: "web".into(),
                    seq: 2,
                    instances: vec!["127.0.0.1:8080".parse().unwrap()],
                    meta: vec![vec![("v".into(), Some(b"3".to_vec()))]],
                },
            ),
        ),
        (
            "instances with metadata reply",
            reply(
                21,
                Response::InstanceListMeta {
                    page: InstancePage {
                        total: 1,
                        instances: vec![InstanceInfo {
                            endpoint: "127.0.0.1:8080".parse().unwrap(),
                            age_ms: 1500,
                            expires_ms: 3500,
                            leases: 1,
                            source: Source::Unicast("127.0.0.1:50000".parse().unwrap()),
                            check: Check::None,
                            meta: Default::default(),
                        }],
                        next: None,
                    },
                    checks: vec![Check::None],
                    meta: vec![vec![("path".into(), Some(b"/".to_vec()))]],
                },
            ),
        ),
        ("services", request(13, Request::Services { cursor: 0 })),
        (
            "services reply",
            reply(
                13,
                Response::Services(ServicePage {
                    total: 1,
                    services: vec![ServiceCount { name: "echo".into(), instances: 2 }],
                    next: None,
                }),
            ),
        ),
        ("instances", request(14, Request::Instances { service: "echo", cursor: 0 })),
        (
            "instances reply",
            reply(
                14,
                Response::InstanceList(InstancePage {
                    total: 1,
                    instances: vec![InstanceInfo {
                        check: Default::default(),
                        meta: Default::default(),
                        endpoint: "127.0.0.1:4000".parse().unwrap(),
                        age_ms: 1500,
                        expires_ms: 3500,
                        leases: 1,
                        source: Source::Unicast("127.0.0.1:50000".parse().unwrap()),
                    }],
                    next: Some(1),
                }),
            ),
        ),
        ("instances checked", request(20, Request::InstancesChecked { service: "echo", cursor: 0 })),
        (
            "instances checked reply",
            reply(
                20,
                Response::InstanceListChecked {
                    page: InstancePage {
                        total: 1,
                        instances: vec![InstanceInfo {
                            check: Default::default(),
                            meta: Default::default(),
                            endpoint: "127.0.0.1:4000".parse().unwrap(),
                            age_ms: 1500,
                            expires_ms: 3500,
                            leases: 1,
                            source: Source::Unicast("127.0.0.1:50000".parse().unwrap()),
                        }],
                        next: None,
                    },
                    checks: vec![Check::Http("/".into())],
                },
            ),
        ),
        ("watch", request(15, Request::Watch { service: "echo" })),
        (
            "watching",
            reply(
                15,
                Response::Watching {
                    service: "echo".into(),
                    seq: 3,
                    ttl_ms: 5000,
                    instances: vec!["127.0.0.1:4000".parse().unwrap()],
                },
            ),
        ),
        ("changed", reply(15, Response::Changed { service: "echo".into(), seq: 4, instances: Vec::new() })),
        ("unwatch", request(16, Request::Unwatch { service: "echo" })),
        ("unwatch echo", request(16, Request::UnwatchEcho { service: "echo", cookie: 0x5f0e_3a17_c2d9_4b61 })),
        ("cookie required", reply(16, Response::Error(Rejection::CookieRequired))),
        ("bad cookie", reply(16, Response::Error(Rejection::BadCookie))),
        ("query local", request(17, Request::QueryLocal { service: "echo" })),
        ("watch cookie", reply(15, Response::WatchCookie { cookie: 0x5f0e_3a17_c2d9_4b61 })),
        ("watch echo", request(18, Request::WatchEcho { service: "echo", cookie: 0x5f0e_3a17_c2d9_4b61 })),
        (
            "register with a check",
            request(
                18,
                Request::RegisterChecked { service: "echo", ip: None, port: 4000, check: Check::Http("/health") },
            ),
        ),
        (
            "register checked tcp",
            request(19, Request::RegisterChecked { service: "echo", ip: None, port: 4000, check: Check::Tcp }),
        ),
        ("unknown option", reply(18, Response::Error(Rejection::UnknownOption { key: "chek".into() }))),
        ("too many watches", reply(16, Response::Error(Rejection::TooManyWatches { scope: String::new(), max: 3 }))),
        ("announce", multicast(0, Multicast::Announce { origin: 0x1234, service: "echo", ip: None, port: 4000 })),
        ("goodbye", multicast(0, Multicast::Goodbye { origin: 0x1234, service: "echo", ip: None, port: 4000 })),
        (
            "announce committed",
            multicast(
                0,
                Multicast::AnnounceCommitted {
                    origin: 0x1234,
                    service: "echo",
                    ip: None,
                    port: 4000,
                    commitment: protocol::goodbye_commitment(&[0x11; 32]),
                    check: Check::Tcp,
                },
            ),
        ),
        (
            "announce with metadata",
            multicast(
                0,
                Multicast::AnnounceMeta {
                    origin: 0x1234,
                    service: "echo",
                    ip: None,
                    port: 4000,
                    commitment: protocol::goodbye_commitment(&[0x11; 32]),
                    check: Check::Tcp,
                    meta: vec![("path", "/")],
                },
            ),
        ),
        (
            "goodbye revealed",
            multicast(
                0,
                Multicast::GoodbyeRevealed {
                    origin: 0x1234,
                    service: "echo",
                    ip: None,
                    port: 4000,
                    secret: [0x11; 32],
                },
            ),
        ),
        ("discover", multicast(9, Multicast::Discover { origin: 0x99 })),
        ("broker here", reply(9, Response::BrokerHere { addr: "127.0.0.1:7000".parse().unwrap() })),
        (
            "broker hello",
            multicast(0, Multicast::BrokerHello { origin: 0x42, addr: "127.0.0.1:7000".parse().unwrap() }),
        ),
        (
            "cluster hello",
            multicast(
                0,
                Multicast::ClusterHello { origin: 0x42, addr: "127.0.0.1:7000".parse().unwrap(), cluster: "makler" },
            ),
        ),
    ]
}

#[test]
fn the_element_hash_in_protocol_md_is_the_registrys() {
    let source = Source::Unicast("127.0.0.1:50000".parse().unwrap());
    assert_eq!(makler::registry::digest::element_hash("echo", "127.0.0.1:4000".parse().unwrap(), source), HASH);
}

#[test]
fn every_binary_example_in_protocol_md_is_what_the_encoder_writes() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/protocol.md")).unwrap();
    let mut missing = Vec::new();
    for (name, bytes) in examples() {
        let wanted = hex(&bytes);
        if !doc.contains(&wanted) {
            missing.push(format!("{name}: {wanted}"));
        }
    }
    assert!(missing.is_empty(), "protocol.md lacks these encodings:\n{}", missing.join("\n"));
}

/// protocol.md's reply from a newer broker (a counter this client does not know, a field
/// appended to a peer, a section appended after the bridges) decodes with today's client code.
#[test]
fn a_newer_brokers_stats_in_protocol_md_decodes_today() {
    let newer = "81 07 04 24 02 09 69 6e 73 74 61 6e 63 65 73 02 05 7a 6f 6e 65 73 05 01 0d 00 7f 00 00 01 d9 36 01 01 \
                 02 01 78 2a 00 00";
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/protocol.md")).unwrap();
    assert!(doc.contains(&newer.split_whitespace().collect::<Vec<_>>().join(" ")), "protocol.md lacks it");
    let bytes: Vec<u8> = newer.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    let (id, response) = binary::decode_response(&bytes).expect("today's decoder reads it");
    let Response::Stats(stats) = response else { panic!("{response:?}") };
    assert_eq!((id, stats["instances"], stats.get("zones")), (7, 2, Some(5)));
    let peer = PeerStats {
        addr: "127.0.0.1:7001".parse().unwrap(),
        up: true,
        complete: true,
        instances: 2,
        last_heard_ms: Some(120),
    };
    assert_eq!(stats.peers, [peer]);
    // The text form shows the counter it does not know, like the others.
    let mut text = Vec::new();
    protocol::text::encode_response(&Response::Stats(stats), &mut text);
    assert!(String::from_utf8(text).unwrap().starts_with("instances=2 zones=5\npeer 127.0.0.1:7001 up "));
}
