use super::*;
use crate::protocol::fit::{binary_len, instance_len};
use crate::protocol::{MAX_REPLY_LEN, Source, binary};
use crate::registry::{Config, Limits};

fn binary_request(id: u32, request: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    binary::encode_request(id, request, &mut out);
    out
}

struct Fixture {
    table: Plain,
    out: Vec<u8>,
}

fn fixture(max_instances: usize) -> Fixture {
    let limits = Limits { max_instances, ..Limits::default() };
    let mut n = 0u128;
    let registry = Registry::new(Config { limits, ..Config::default() }, move || {
        n += 1;
        uuid::Uuid::from_u128(n)
    });
    Fixture { table: Plain::new(registry, DEFAULT_MAX_DATAGRAM), out: Vec::new() }
}

impl Fixture {
    fn raw(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) -> Vec<u8> {
        assert!(handle(&mut self.table, now, source, datagram, &mut self.out).is_some());
        self.out.clone()
    }

    fn text(&mut self, now: Instant, line: &str) -> String {
        let source = "127.0.0.1:50000".parse().unwrap();
        String::from_utf8(self.raw(now, source, line.as_bytes())).unwrap()
    }
}

#[test]
fn an_instance_is_sized_as_it_is_encoded() {
    for addr in [
        "1.2.3.4:1",
        "1.2.3.4:127",
        "1.2.3.4:128",
        "1.2.3.4:200",
        "1.2.3.4:16383",
        "1.2.3.4:16384",
        "1.2.3.4:65535",
        "[::1]:127",
        "[::1]:128",
        "[::1]:16384",
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        let bytes = postcard::to_stdvec(&addr).unwrap();
        assert_eq!(instance_len(Form::Binary { request_id: 0 }, addr), bytes.len(), "{addr}");
        assert_eq!(binary_len(&addr), bytes.len(), "{addr}");
        assert_eq!(instance_len(Form::Text, addr), addr.to_string().len() + 1);
    }
}

#[test]
fn a_long_answer_is_cut_to_fit_and_still_rotates() {
    let mut f = fixture(10_000);
    let now = Instant::now();
    for i in 0..500u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        let line = format!("register big 10.{hi}.{lo}.1 40000");
        assert_eq!(f.text(now, &line).len(), 37, "{line}");
    }
    let mut seen = std::collections::HashSet::new();
    let mut firsts = Vec::new();
    for _ in 0..500 {
        let reply = f.text(now, "query big");
        assert!(reply.len() <= MAX_REPLY_LEN, "{} bytes", reply.len());
        assert!(reply.len() > MAX_REPLY_LEN - 30, "only {} bytes", reply.len());
        let words: Vec<_> = reply.split_whitespace().map(str::to_owned).collect();
        firsts.push(words[0].clone());
        seen.extend(words);
    }
    assert_eq!(seen.len(), 500);
    firsts.dedup();
    assert_eq!(firsts.len(), 500, "every query starts with another instance");

    let source = "127.0.0.1:50000".parse().unwrap();
    for id in [0, u32::MAX] {
        let request = binary_request(id, &Request::Query { service: "big" });
        let reply = f.raw(now, source, &request);
        assert!(reply.len() <= MAX_REPLY_LEN && reply.len() > MAX_REPLY_LEN - 20, "{}", reply.len());
        let (echoed, response) = binary::decode_response(&reply).unwrap();
        assert_eq!(echoed, id);
        let Response::Instances(list) = response else { panic!("{response:?}") };
        assert!(list.len() > 100);
    }
}

#[test]
fn register_takes_the_source_address_when_no_ip_is_given() {
    let mut f = fixture(10);
    let now = Instant::now();
    let mapped: SocketAddr = "[::ffff:127.0.0.9]:50000".parse().unwrap();
    f.raw(now, mapped, b"register echo 4000");
    assert_eq!(f.text(now, "query echo"), "127.0.0.9:4000\n");
    let source = Source::Unicast("127.0.0.9:50000".parse().unwrap());
    assert!(
        f.table.registry.lease_id("echo", "127.0.0.9:4000".parse().unwrap(), source).is_some(),
        "the source is canonical too"
    );
}

#[test]
fn a_register_from_another_source_gets_its_own_id() {
    let mut f = fixture(10);
    let now = Instant::now();
    let owner: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let other: SocketAddr = "127.0.0.1:50001".parse().unwrap();
    let first = f.raw(now, owner, b"register echo 127.0.0.1 4000");
    assert_eq!(f.raw(now, owner, b"register echo 127.0.0.1 4000"), first, "a retransmission gets the same id");
    let second = f.raw(now, other, b"register echo 127.0.0.1 4000");
    assert_ne!(second, first);
    assert_eq!(f.text(now, "query echo"), "127.0.0.1:4000\n");
}

#[test]
fn requests_beyond_the_protocol_go_to_the_context() {
    /// A context that answers `stats` and bridges every query, like a broker with bridges.
    struct Broker {
        plain: Plain,
        asked: Vec<String>,
    }
    impl Context for Broker {
        fn parts(&mut self) -> (&mut Service, &mut Registry) {
            self.plain.parts()
        }
        fn bridging(&self) -> bool {
            true
        }
        fn answer_bridged(&mut self, _: Instant, _: SocketAddr, _: Form, _: usize, service: &str) -> Option<Response> {
            self.asked.push(service.to_owned());
            None
        }
        fn answer_stats(&mut self, _: Instant, _: Form) -> Response {
            Response::Ok
        }
    }
    let mut broker = Broker { plain: fixture(10).table, asked: Vec::new() };
    let now = Instant::now();
    let source = "127.0.0.1:50000".parse().unwrap();
    let mut out = Vec::new();
    assert_eq!(handle(&mut broker, now, source, b"stats", &mut out).map(|w| w.form), Some(Form::Text));
    assert_eq!(out, b"OK\n");
    let datagram = binary_request(9, &Request::Stats);
    assert_eq!(
        handle(&mut broker, now, source, &datagram, &mut out).map(|w| w.form),
        Some(Form::Binary { request_id: 9 })
    );
    assert_eq!(binary::decode_response(&out).unwrap(), (9, Response::Ok));
    assert_eq!(handle(&mut broker, now, source, b"query elsewhere", &mut out).map(|w| w.form), None, "answered later");
    assert_eq!(handle(&mut broker, now, source, b"query elsewhere local", &mut out).map(|w| w.form), Some(Form::Text));
    assert_eq!(out, b"NOT FOUND\n", "a local query is never bridged");
    assert_eq!(broker.asked, ["elsewhere"]);
    assert_eq!(handle(&mut broker, now, source, b"watch echo", &mut out).map(|w| w.form), Some(Form::Text));
    assert_eq!(out, b"ERROR not supported here: Watch { service: \"echo\" }\n");
    let counters = broker.plain.service.counters();
    assert_eq!((counters.received, counters.rejected, counters.requests.query), (5, 1, 2));
}

#[test]
fn every_error_is_counted_and_answered_in_kind() {
    let mut f = fixture(1);
    let now = Instant::now();
    assert!(f.text(now, "register a 1").len() == 37);
    assert_eq!(f.text(now, "register b 1"), "ERROR full: 1 instances registered\n");
    assert_eq!(
        f.text(now, "query no/such"),
        format!("ERROR {}\n", Limits::default().check_name("no/such").unwrap_err())
    );
    assert_eq!(f.text(now, &"x".repeat(1401)), "ERROR datagram too large: at most 1400 bytes\n");
    let source = "127.0.0.1:50000".parse().unwrap();
    let mut big = binary_request(42, &Request::Query { service: "a" });
    big.resize(1401, 0);
    let (id, response) = binary::decode_response(&f.raw(now, source, &big)).unwrap();
    assert_eq!((id, response), (42, Response::Error(Rejection::TooLarge { max: 1400 })));
    f.table.service.reply(Form::Text, &Response::Error(Rejection::Empty), &mut f.out);
    let counters = f.table.service.counters();
    assert_eq!((counters.received, counters.rejected), (5, 5));
    assert_eq!(f.table.registry.len(), 1);
}

#[test]
fn require_key_refuses_unsealed_writes_or_everything_and_never_sealed_requests() {
    use policy::RequireKey;
    let now = Instant::now();
    let source: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let writes = [
        "register echo 4000",
        "register echo 10.0.0.1 4000 check=tcp",
        "heartbeat 00000000-0000-0000-0000-000000000001",
        "deregister 00000000-0000-0000-0000-000000000001",
        "report echo 127.0.0.1:4000",
        "watch echo",
        "watch echo 00000000000000aa",
        "unwatch echo",
        "unwatch echo 00000000000000aa",
    ];
    let queries = ["query echo", "request echo", "services", "instances echo", "stats"];
    for (require, refused_queries) in [(RequireKey::Writes, false), (RequireKey::All, true)] {
        let mut f = fixture(10);
        f.table.service.set_require_key(require);
        for line in writes.iter().chain(&queries) {
            let refused = queries.contains(line) == refused_queries || writes.contains(line);
            let reply = f.text(now, line);
            assert_eq!(reply == "ERROR key required\n", refused, "{require:?} {line}: {reply}");
            // Sealed (opened by the caller), nothing is refused for the key.
            handle_sealed(&mut f.table, now, source, line.as_bytes(), &mut f.out);
            assert_ne!(f.out, b"ERROR key required\n", "{require:?} sealed {line}");
        }
        let refused = f.table.service.counters().key_required;
        assert_eq!(refused as usize, writes.len() + if refused_queries { queries.len() } else { 0 });
        // In binary, the rejection has its own variant.
        let reply = f.raw(now, source, &binary_request(7, &Request::Register { service: "x", ip: None, port: 1 }));
        assert_eq!(binary::decode_response(&reply).unwrap(), (7, Response::Error(Rejection::KeyRequired)));
    }
    // By default nothing is required.
    let mut f = fixture(10);
    assert_eq!(f.text(now, "register echo 4000").len(), 37);
}
