//! The DNS face: answers as a pure function of the query and the table, then its wiring into
//! the node (rate limiting, TCP framing).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::*;

/// DNS-SD's answers (`dns/sd.rs`).
mod sd;
use crate::protocol::Source;
use crate::registry::{self, Registry};

fn registry() -> Registry {
    let mut n = 0u128;
    let limits = registry::Limits { max_per_source: 0, max_per_network: 0, ..registry::Limits::default() };
    let config = registry::Config { ttl: Duration::from_secs(5), limits, ..registry::Config::default() };
    Registry::new(config, move || {
        n += 1;
        uuid::Uuid::from_u128(n)
    })
}

fn register(registry: &mut Registry, now: Instant, service: &str, endpoint: &str) {
    let source = Source::Unicast("10.9.9.9:50000".parse().unwrap());
    registry.register(now, service, endpoint.parse().unwrap(), source).unwrap();
}

fn zone() -> Zone {
    Zone::new(&DnsConfig::default()).unwrap()
}

/// A query for `name` and `qtype`, with EDNS of `edns` bytes if given.
fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

thread_local! {
    /// One zone per test, so that its answers go through the zone's cache.
    static ZONE: std::cell::RefCell<Zone> = std::cell::RefCell::new(zone());
}

fn ask(registry: &mut Registry, now: Instant, bytes: &[u8], transport: Transport) -> (Vec<u8>, Message) {
    let mut out = Vec::new();
    let answered = ZONE.with_borrow_mut(|zone| answer(zone, registry, now, bytes, transport, &mut out));
    assert!(answered, "a reply");
    let message = Message::from_vec(&out).expect("the reply decodes");
    assert_eq!(message.id, 4242);
    (out, message)
}

fn udp(registry: &mut Registry, now: Instant, name: &str, qtype: RecordType) -> Message {
    ask(registry, now, &query(name, qtype, None), Transport::Udp).1
}

fn ips(records: &[Record]) -> Vec<IpAddr> {
    records.iter().filter_map(|r| r.data.ip_addr()).collect()
}

fn srv(record: &Record) -> (u16, u16, u16, String) {
    match &record.data {
        RData::SRV(srv) => (srv.priority, srv.weight, srv.port, srv.target.to_ascii()),
        other => panic!("not SRV: {other:?}"),
    }
}

#[test]
fn srv_lists_every_instance_in_rotation_with_its_address_as_additional() {
    let (mut reg, t0) = (registry(), Instant::now());
    for endpoint in ["127.0.0.1:8001", "127.0.0.2:8002", "[::1]:8003"] {
        register(&mut reg, t0, "web", endpoint);
    }
    let first = udp(&mut reg, t0, "_web._tcp.makler.", RecordType::SRV);
    assert_eq!(first.response_code, ResponseCode::NoError);
    assert!(first.authoritative && !first.truncation && !first.recursion_available && first.recursion_desired);
    let answers: Vec<_> = first.answers.iter().map(srv).collect();
    assert_eq!(
        answers,
        [
            (1, 1, 8001, "7f000001-8001.addr.makler.".to_owned()),
            (1, 1, 8002, "7f000002-8002.addr.makler.".to_owned()),
            (1, 1, 8003, "00000000000000000000000000000001-8003.addr.makler.".to_owned()),
        ]
    );
    assert!(first.answers.iter().all(|r| r.ttl == 0 && r.name.to_ascii() == "_web._tcp.makler."));
    let additional: Vec<_> = first.additionals.iter().map(|r| (r.name.to_ascii(), r.data.ip_addr())).collect();
    assert_eq!(
        additional,
        [
            ("7f000001-8001.addr.makler.".to_owned(), Some("127.0.0.1".parse().unwrap())),
            ("7f000002-8002.addr.makler.".to_owned(), Some("127.0.0.2".parse().unwrap())),
            ("00000000000000000000000000000001-8003.addr.makler.".to_owned(), Some("::1".parse().unwrap())),
        ]
    );
    // Each query starts one further on.
    let firsts: Vec<u16> =
        (0..4).map(|_| srv(&udp(&mut reg, t0, "_web._tcp.makler.", RecordType::SRV).answers[0]).2).collect();
    assert_eq!(firsts, [8002, 8003, 8001, 8002]);
}

#[test]
fn a_and_aaaa_answer_the_instances_of_their_family() {
    let (mut reg, t0) = (registry(), Instant::now());
    for endpoint in ["127.0.0.1:8001", "127.0.0.2:8002", "[::1]:8003", "127.0.0.2:8004"] {
        register(&mut reg, t0, "web", endpoint);
    }
    let a = udp(&mut reg, t0, "web.makler.", RecordType::A);
    let two: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(ips(&a.answers), ["127.0.0.1".parse::<IpAddr>().unwrap(), two, two]);
    assert!(a.additionals.is_empty());
    let aaaa = udp(&mut reg, t0, "web.makler.", RecordType::AAAA);
    assert_eq!(ips(&aaaa.answers), ["::1".parse::<IpAddr>().unwrap()]);
    let any = udp(&mut reg, t0, "web.makler.", RecordType::ANY);
    assert_eq!(any.answers.len(), 4);
    // Rotation: the third query started at the third instance.
    assert_eq!(ips(&any.answers)[0], "::1".parse::<IpAddr>().unwrap());
}

#[test]
fn unknown_names_are_nxdomain_and_other_zones_refused() {
    let (mut reg, t0) = (registry(), Instant::now());
    register(&mut reg, t0, "web", "127.0.0.1:8001");
    for name in ["nope.makler.", "_nope._tcp.makler.", "a.web.makler.", "_web._udp.makler.", "zz.addr.makler."] {
        let reply = udp(&mut reg, t0, name, RecordType::A);
        assert_eq!(reply.response_code, ResponseCode::NXDomain, "{name}");
        assert!(reply.authoritative && reply.answers.is_empty(), "{name}");
        assert_eq!(reply.authorities.len(), 1, "{name}: the SOA");
        assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);
    }
    for name in ["example.com.", "web.", ".", "makler.example."] {
        let reply = udp(&mut reg, t0, name, RecordType::A);
        assert_eq!(reply.response_code, ResponseCode::Refused, "{name}");
        assert!(!reply.authoritative && reply.answers.is_empty() && reply.authorities.is_empty(), "{name}");
        assert!(!reply.recursion_available);
    }
}

#[test]
fn a_name_that_exists_without_the_type_asked_is_nodata() {
    let (mut reg, t0) = (registry(), Instant::now());
    register(&mut reg, t0, "web", "127.0.0.1:8001");
    for (name, qtype) in [
        ("_web._tcp.makler.", RecordType::A),
        ("web.makler.", RecordType::SRV),
        ("web.makler.", RecordType::AAAA),
        ("web.makler.", RecordType::TXT),
        ("makler.", RecordType::A),
        ("_tcp.makler.", RecordType::A),
        ("addr.makler.", RecordType::A),
        ("7f000001.addr.makler.", RecordType::AAAA),
    ] {
        let reply = udp(&mut reg, t0, name, qtype);
        assert_eq!(reply.response_code, ResponseCode::NoError, "{name} {qtype}");
        assert!(reply.answers.is_empty(), "{name} {qtype}");
        assert_eq!(reply.authorities.iter().map(Record::record_type).collect::<Vec<_>>(), [RecordType::SOA]);
    }
    let soa = udp(&mut reg, t0, "makler.", RecordType::SOA);
    assert_eq!(soa.answers.len(), 1);
    assert!(soa.authorities.is_empty());
}

#[test]
fn address_names_resolve_on_their_own() {
    let (mut reg, t0) = (registry(), Instant::now());
    let reply = udp(&mut reg, t0, "0a000102.addr.makler.", RecordType::A);
    assert_eq!(ips(&reply.answers), ["10.0.1.2".parse::<IpAddr>().unwrap()]);
    let reply = udp(&mut reg, t0, "fd0000000000000000000000000000AB.ADDR.makler.", RecordType::AAAA);
    assert_eq!(ips(&reply.answers), ["fd00::ab".parse::<IpAddr>().unwrap()]);
    let reply = udp(&mut reg, t0, "0a000102-8080.addr.makler.", RecordType::A);
    assert_eq!(ips(&reply.answers), ["10.0.1.2".parse::<IpAddr>().unwrap()]);
}

#[test]
fn instances_that_share_an_address_have_targets_of_their_own() {
    let (mut reg, t0) = (registry(), Instant::now());
    register(&mut reg, t0, "web", "127.0.0.1:8001");
    register(&mut reg, t0, "web", "127.0.0.1:8002");
    let reply = udp(&mut reg, t0, "_web._tcp.makler.", RecordType::SRV);
    let targets: Vec<String> = reply.answers.iter().map(|r| srv(r).3).collect();
    assert_eq!(targets, ["7f000001-8001.addr.makler.", "7f000001-8002.addr.makler."]);
    let additional: Vec<String> = reply.additionals.iter().map(|r| r.name.to_ascii()).collect();
    assert_eq!(additional, targets);
}

#[test]
fn service_labels_match_exactly_then_in_lower_case() {
    let (mut reg, t0) = (registry(), Instant::now());
    register(&mut reg, t0, "web", "127.0.0.1:8001");
    register(&mut reg, t0, "Api", "127.0.0.2:8001");
    register(&mut reg, t0, "a.b", "127.0.0.3:8001");
    assert_eq!(udp(&mut reg, t0, "WEB.makler.", RecordType::A).answers.len(), 1, "0x20 case");
    assert_eq!(udp(&mut reg, t0, "_WeB._tcp.MAKLER.", RecordType::SRV).answers.len(), 1);
    assert_eq!(udp(&mut reg, t0, "Api.makler.", RecordType::A).answers.len(), 1);
    assert_eq!(udp(&mut reg, t0, "api.makler.", RecordType::A).response_code, ResponseCode::NXDomain);
    // Not one label: not reachable.
    assert_eq!(udp(&mut reg, t0, "a.b.makler.", RecordType::A).response_code, ResponseCode::NXDomain);
}

#[test]
fn instances_leave_the_answers_when_they_expire() {
    let (mut reg, t0) = (registry(), Instant::now());
    register(&mut reg, t0, "web", "127.0.0.1:8001");
    register(&mut reg, t0 + Duration::from_secs(3), "web", "127.0.0.2:8001");
    assert_eq!(udp(&mut reg, t0 + Duration::from_secs(4), "web.makler.", RecordType::A).answers.len(), 2);
    let later = udp(&mut reg, t0 + Duration::from_secs(6), "web.makler.", RecordType::A);
    assert_eq!(ips(&later.answers), ["127.0.0.2".parse::<IpAddr>().unwrap()]);
    let gone = udp(&mut reg, t0 + Duration::from_secs(9), "web.makler.", RecordType::A);
    assert_eq!(gone.response_code, ResponseCode::NXDomain);
}

fn many(count: u16) -> (Registry, Instant) {
    let (mut reg, t0) = (registry(), Instant::now());
    for i in 0..count {
        register(&mut reg, t0, "big", &format!("10.0.{}.{}:{}", i / 200, i % 200 + 1, 9000 + i));
    }
    (reg, t0)
}

/// A TSIG-signed query whose answer does not fit gets it cut with TC and signed, the TSIG
/// record within the 512 bytes (RFC 8945 §5.3: a truncated answer is signed as it is sent).
#[test]
fn a_signed_answer_cut_for_udp_keeps_room_for_its_tsig() {
    use super::tsig::{Checked, KEY_NAME, RESERVE, Tsig, secret};
    use hickory_proto::rr::TSigner;
    use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
    let (mut reg, t0) = many(60);
    let key = crate::protocol::seal::Key::from_secret(&[0x41; 32]).unwrap();
    let signer =
        TSigner::new(secret(&key).to_vec(), TsigAlgorithm::HmacSha256, Name::from_ascii(KEY_NAME).unwrap(), 300)
            .unwrap();
    let mut message = Message::from_vec(&query("_big._tcp.makler.", RecordType::SRV, None)).unwrap();
    let mut verifier = message.finalize(&signer, 1_796_000_000).unwrap().unwrap();
    let bytes = message.to_vec().unwrap();
    let tsig = Tsig::new(&key);
    let mut out = Vec::new();
    let Checked::Signed(mac) = tsig.check(&bytes, 1_796_000_000, &mut out) else { panic!("signed") };
    let answered =
        ZONE.with_borrow_mut(|zone| answer_reserving(zone, &mut reg, t0, &bytes, Transport::Udp, RESERVE, &mut out));
    assert!(answered && tsig.sign(&mac, 1_796_000_000, &mut out));
    assert!(out.len() <= 512, "{}", out.len());
    let verified = verifier.verify(&out).expect("signed, the query's MAC chained");
    assert!(verified.truncation && !verified.answers.is_empty());
}

#[test]
fn udp_answers_are_cut_to_whole_records_with_tc_and_tcp_has_them_all() {
    let (mut reg, t0) = many(60);
    let (bytes, plain) = ask(&mut reg, t0, &query("_big._tcp.makler.", RecordType::SRV, None), Transport::Udp);
    assert!(bytes.len() <= 512, "{}", bytes.len());
    assert!(plain.truncation);
    assert!(!plain.answers.is_empty() && plain.answers.len() < 60);
    assert!(plain.additionals.is_empty() && plain.edns.is_none());
    let (bytes, edns) = ask(&mut reg, t0, &query("_big._tcp.makler.", RecordType::SRV, Some(4096)), Transport::Udp);
    assert!(bytes.len() <= usize::from(MAX_UDP_PAYLOAD) && bytes.len() > 512, "{}", bytes.len());
    assert!(edns.truncation && edns.answers.len() > plain.answers.len() && edns.answers.len() < 60);
    assert_eq!(edns.edns.as_ref().map(Edns::max_payload), Some(MAX_UDP_PAYLOAD), "the OPT record is kept");
    let (_, tcp) = ask(&mut reg, t0, &query("_big._tcp.makler.", RecordType::SRV, None), Transport::Tcp);
    assert!(!tcp.truncation);
    assert_eq!((tcp.answers.len(), tcp.additionals.len()), (60, 60));
    // A small EDNS size means 512.
    let (bytes, _) = ask(&mut reg, t0, &query("big.makler.", RecordType::A, Some(100)), Transport::Udp);
    assert!(bytes.len() <= 512 && bytes.len() > 400, "{}", bytes.len());
}

#[test]
fn additional_records_that_do_not_fit_are_left_out_without_tc() {
    // 10 SRV records fit in 512 bytes (their targets are not compressed, RFC 2782), their 10
    // addresses do not.
    let (mut reg, t0) = many(10);
    let (bytes, reply) = ask(&mut reg, t0, &query("_big._tcp.makler.", RecordType::SRV, None), Transport::Udp);
    assert!(bytes.len() <= 512);
    assert!(!reply.truncation);
    assert_eq!((reply.answers.len(), reply.additionals.len()), (10, 1));
}

#[test]
fn tcp_answers_stop_at_the_largest_message() {
    let (mut reg, t0) = many(5000);
    let (bytes, reply) = ask(&mut reg, t0, &query("big.makler.", RecordType::A, None), Transport::Tcp);
    assert!(bytes.len() <= MAX_TCP_MESSAGE);
    // Names are compressed up to hickory's limit of 120 (as Unbound's), then written whole.
    assert!(reply.truncation && reply.answers.len() > 2500, "{}", reply.answers.len());
}

#[test]
fn the_ttl_and_domain_are_the_configured_ones() {
    let mut zone = Zone::new(&DnsConfig { domain: "Svc.Example".into(), ttl: 7, unsealed: false }).unwrap();
    assert_eq!(zone.domain(), "svc.example.");
    let (mut reg, t0, mut out) = (registry(), Instant::now(), Vec::new());
    register(&mut reg, t0, "web", "127.0.0.1:8001");
    assert!(answer(
        &mut zone,
        &mut reg,
        t0,
        &query("_web._tcp.svc.example.", RecordType::SRV, None),
        Transport::Udp,
        &mut out
    ));
    let reply = Message::from_vec(&out).unwrap();
    assert_eq!(srv(&reply.answers[0]).3, "7f000001-8001.addr.svc.example.");
    assert!(reply.answers.iter().chain(&reply.additionals).all(|r| r.ttl == 7));
    assert_eq!(check_domain("makler"), Ok("makler.".to_owned()));
    assert!(check_domain(".").is_err());
    assert!(check_domain("a..b").is_err());
    assert!(check_domain(&"x".repeat(230)).is_err());
}

#[test]
fn malformed_and_unsupported_queries_get_errors_or_nothing() {
    let (mut reg, t0, mut zone, mut out) = (registry(), Instant::now(), zone(), Vec::new());
    let good = query("web.makler.", RecordType::A, None);
    // Shorter than a header, or a response: nothing.
    assert!(!answer(&mut zone, &mut reg, t0, &good[..11], Transport::Udp, &mut out));
    let mut response = good.clone();
    response[2] |= 0x80;
    assert!(!answer(&mut zone, &mut reg, t0, &response, Transport::Udp, &mut out));
    // A body that does not decode: FORMERR, no larger than the query.
    let cut = &good[..good.len() - 3];
    assert!(answer(&mut zone, &mut reg, t0, cut, Transport::Udp, &mut out));
    assert!(out.len() <= cut.len());
    assert_eq!(Message::from_vec(&out).unwrap().response_code, ResponseCode::FormErr);
    let rcode =
        |reg: &mut Registry, message: Message| ask(reg, t0, &message.to_vec().unwrap(), Transport::Udp).1.response_code;
    let base = Message::from_vec(&good).unwrap();
    let mut two = base.clone();
    two.add_query(Query::query(Name::from_ascii("web.makler.").unwrap(), RecordType::AAAA));
    assert_eq!(rcode(&mut reg, two), ResponseCode::FormErr);
    let mut none = base.clone();
    none.queries.clear();
    assert_eq!(rcode(&mut reg, none), ResponseCode::FormErr);
    let mut notify = base.clone();
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(rcode(&mut reg, notify), ResponseCode::NotImp);
    let mut version = base.clone();
    let mut edns = Edns::new();
    edns.set_version(1);
    version.set_edns(edns);
    // BADVERS is 16 (which hickory reads as BADSIG, the same code).
    assert_eq!(u16::from(rcode(&mut reg, version)), 16);
    let mut chaos = base.clone();
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(rcode(&mut reg, chaos), ResponseCode::Refused);
    let mut axfr = base.clone();
    axfr.queries[0].set_query_type(RecordType::AXFR);
    assert_eq!(rcode(&mut reg, axfr), ResponseCode::NotImp);
}

#[test]
fn cached_answers_are_the_answers_built_anew() {
    let t0 = Instant::now();
    let (mut cached, mut fresh) = (registry(), registry());
    let mut cache = zone();
    let questions = [
        ("_web._tcp.makler.", RecordType::SRV, None),
        ("_WEB._tcp.makler.", RecordType::SRV, None),
        ("_web._tcp.makler.", RecordType::SRV, Some(1232)),
        ("web.makler.", RecordType::A, None),
        ("web.makler.", RecordType::AAAA, Some(600)),
        ("web.makler.", RecordType::ANY, None),
    ];
    for step in 0..40u16 {
        if step % 8 == 0 {
            // The table changes between the queries.
            let endpoint = format!("127.0.0.{}:{}", step / 8 + 1, 8000 + step);
            register(&mut cached, t0, "web", &endpoint);
            register(&mut fresh, t0, "web", &endpoint);
            register(&mut cached, t0, "web", "[::1]:9000");
            register(&mut fresh, t0, "web", "[::1]:9000");
        }
        let (name, qtype, edns) = questions[usize::from(step) % questions.len()];
        let mut bytes = query(name, qtype, edns);
        bytes[..2].copy_from_slice(&step.to_be_bytes());
        bytes[2] ^= u8::from(step % 3 == 0); // RD now and then
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(answer(&mut cache, &mut cached, t0, &bytes, Transport::Udp, &mut a));
        assert!(answer(&mut zone(), &mut fresh, t0, &bytes, Transport::Udp, &mut b));
        assert_eq!(a, b, "step {step}: {name} {qtype}");
    }
    let (kept, hits) = cache.cache.counts();
    assert!(kept > 10 && hits > 10, "{kept} kept, {hits} hits");
}

#[test]
fn the_slip_reply_is_the_question_with_tc() {
    let mut out = Vec::new();
    let bytes = query("_web._tcp.makler.", RecordType::SRV, Some(1232));
    assert!(truncated(&bytes, &mut out));
    assert!(out.len() <= bytes.len());
    let reply = Message::from_vec(&out).unwrap();
    assert!(reply.truncation && reply.answers.is_empty() && reply.queries.len() == 1);
    assert!(!truncated(b"short", &mut out));
}

mod face {
    //! The node's DNS faces.

    use super::*;
    use crate::core::{Core, StreamStep};
    use crate::limit::RateLimit;
    use crate::node::{Face, Node, NodeConfig};

    fn node(rate: u32) -> Node {
        let mut n = 0u128;
        let config = NodeConfig {
            dns: Some(DnsConfig::default()),
            rate_limit: RateLimit { rate, ..RateLimit::default() },
            ..NodeConfig::default()
        };
        Node::new(config, move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        })
    }

    fn register(node: &mut Node, now: Instant, line: &str) {
        let mut reply = Vec::new();
        let from: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        node.handle_datagram(now, Face::Client, from, line.as_bytes(), &mut reply);
        assert_eq!(reply.len(), 37, "{}", String::from_utf8_lossy(&reply));
    }

    /// Under `--require-key all`, a rate-limited signed query's slip is signed as its answer
    /// would be (RFC 8945 §5.3), with the query's MAC chained: the client can verify it and
    /// retry over TCP. A refused query's slip is not.
    #[test]
    fn the_slip_of_a_signed_query_is_signed() {
        use hickory_proto::rr::TSigner;
        use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
        let key = crate::protocol::seal::Key::from_secret(&[0x41; 32]).unwrap();
        let config = NodeConfig {
            dns: Some(DnsConfig::default()),
            rate_limit: RateLimit { rate: 1, ..RateLimit::default() },
            key: Some(key),
            require_key: crate::service::policy::RequireKey::All,
            ..NodeConfig::default()
        };
        let t0 = Instant::now();
        let unix_s = config.wall.unix_ms(t0) / 1000;
        let mut node = Node::new(config, uuid::Uuid::new_v4);
        node.handle_start(t0);
        let name = Name::from_ascii(crate::node::dns::tsig::KEY_NAME).unwrap();
        let signer =
            TSigner::new(crate::node::dns::tsig::secret(&key).to_vec(), TsigAlgorithm::HmacSha256, name, 300).unwrap();
        let from: SocketAddr = "192.0.2.1:53000".parse().unwrap();
        let mut slips = 0;
        for id in 0..6 {
            let mut message = Message::query();
            message.metadata.id = id;
            message.add_query(Query::query(Name::from_ascii("makler.").unwrap(), RecordType::SOA));
            let mut verifier = message.finalize(&signer, unix_s).unwrap().unwrap();
            let bytes = message.to_vec().unwrap();
            let mut reply = Vec::new();
            if node.handle_datagram(t0, Face::Dns, from, &bytes, &mut reply) != Some(Face::Dns) {
                continue;
            }
            let verified = verifier.verify(&reply).expect("signed with the key, the query's MAC chained");
            if verified.truncation {
                assert!(verified.answers.is_empty() && reply.len() <= bytes.len());
                slips += 1;
            } else {
                assert!(reply.len() > bytes.len(), "the answer is larger than the query: limited");
            }
        }
        assert_eq!((slips, node.stats(t0)["rate_slipped"]), (2, 2));
    }

    #[test]
    fn datagrams_on_the_dns_face_are_answered_and_rate_limited() {
        let (mut node, t0) = (node(5), Instant::now());
        node.handle_start(t0);
        for i in 1..=8 {
            register(&mut node, t0, &format!("register web 127.0.0.{i} 8000"));
        }
        let bytes = query("_web._tcp.makler.", RecordType::SRV, None);
        let (mut sent, mut slipped) = (0, 0);
        for source in ["192.0.2.1:53000", "127.0.0.1:53000"] {
            for _ in 0..20 {
                let mut reply = Vec::new();
                let out = node.handle_datagram(t0, Face::Dns, source.parse().unwrap(), &bytes, &mut reply);
                if out == Some(Face::Dns) {
                    let message = Message::from_vec(&reply).unwrap();
                    if message.answers.is_empty() {
                        assert!(message.truncation && reply.len() <= bytes.len());
                        slipped += 1;
                    } else {
                        sent += 1;
                    }
                }
            }
        }
        // Five answers to the limited source, every second of the other 15 a slip; loopback is
        // exempt.
        assert_eq!((sent, slipped), (5 + 20, 7));
        let stats = node.stats(t0);
        assert_eq!((stats["rate_dropped"], stats["rate_slipped"]), (8, 7));
        // A node without a DNS face drops them.
        let mut plain = Node::new(NodeConfig::default(), uuid::Uuid::new_v4);
        let mut reply = Vec::new();
        let from = "127.0.0.1:53000".parse().unwrap();
        assert_eq!(plain.handle_datagram(t0, Face::Dns, from, &bytes, &mut reply), None);
    }

    #[test]
    fn tcp_messages_are_framed_by_their_length() {
        let (mut node, t0) = (node(0), Instant::now());
        node.handle_start(t0);
        register(&mut node, t0, "register web 127.0.0.1 8000");
        let one = query("web.makler.", RecordType::A, None);
        let mut input = Vec::new();
        for _ in 0..2 {
            input.extend_from_slice(&u16::try_from(one.len()).unwrap().to_be_bytes());
            input.extend_from_slice(&one);
        }
        let mut output = Vec::new();
        // Not whole yet: wait.
        for partial in [&input[..1], &input[..one.len()]] {
            let step = node.handle_stream(t0, Face::DnsTcp, 0, partial, &mut output);
            assert_eq!(step, StreamStep { consumed: 0, close: false });
        }
        let step = node.handle_stream(t0, Face::DnsTcp, 0, &input, &mut output);
        assert_eq!(step, StreamStep { consumed: 2 + one.len(), close: false });
        let step = node.handle_stream(t0, Face::DnsTcp, 0, &input[step.consumed..], &mut output);
        assert_eq!(step, StreamStep { consumed: 2 + one.len(), close: false });
        let mut rest = output.as_slice();
        for _ in 0..2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let reply = Message::from_vec(&rest[2..2 + len]).unwrap();
            assert_eq!(ips(&reply.answers), ["127.0.0.1".parse::<IpAddr>().unwrap()]);
            rest = &rest[2 + len..];
        }
        assert!(rest.is_empty());
        // A zero length, or a message that gets no answer, closes the connection.
        assert!(node.handle_stream(t0, Face::DnsTcp, 1, &[0, 0, 1], &mut output).close);
        assert!(node.handle_stream(t0, Face::DnsTcp, 2, &[0, 3, 1, 2, 3], &mut output).close);
        // So does a client that reads no answers.
        let mut full = vec![0; MAX_PENDING];
        let step = node.handle_stream(t0, Face::DnsTcp, 3, &input, &mut full);
        assert!(step.close);
    }

    const MAX_PENDING: usize = 1 << 20;
}
