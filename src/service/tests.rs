use super::*;
use crate::protocol::binary;
use crate::registry::{Config, Limits};

fn binary_request(id: u32, request: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    binary::encode_request(id, request, &mut out);
    out
}

struct Fixture {
    registry: Registry,
    service: Service,
    out: Vec<u8>,
}

fn fixture(max_instances: usize) -> Fixture {
    let limits = Limits { max_instances, ..Limits::default() };
    let mut n = 0u128;
    let registry = Registry::new(Config { limits, ..Config::default() }, move || {
        n += 1;
        uuid::Uuid::from_u128(n)
    });
    let service = Service::new(&registry, DEFAULT_MAX_DATAGRAM);
    Fixture { registry, service, out: Vec::new() }
}

impl Fixture {
    fn raw(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) -> Vec<u8> {
        let handled = self.service.handle(&mut self.registry, now, source, datagram, &mut self.out);
        assert!(matches!(handled, Handled::Replied(_)));
        self.out.clone()
    }

    fn text(&mut self, now: Instant, line: &str) -> String {
        let source = "127.0.0.1:50000".parse().unwrap();
        String::from_utf8(self.raw(now, source, line.as_bytes())).unwrap()
    }
}

#[test]
fn encoded_len_matches_postcard() {
    for addr in ["1.2.3.4:1", "1.2.3.4:200", "1.2.3.4:65535", "[::1]:127", "[::1]:16384"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let bytes = postcard::to_stdvec(&addr).unwrap();
        assert_eq!(encoded_len(Form::Binary { request_id: 0 }, addr), bytes.len(), "{addr}");
        assert_eq!(encoded_len(Form::Text, addr), addr.to_string().len() + 1);
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
        f.registry.lease_id("echo", "127.0.0.9:4000".parse().unwrap(), source).is_some(),
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
fn requests_beyond_the_protocol_are_handed_back() {
    let mut f = fixture(10);
    let now = Instant::now();
    let source = "127.0.0.1:50000".parse().unwrap();
    let handled = f.service.handle(&mut f.registry, now, source, b"stats", &mut f.out);
    assert_eq!(handled, Handled::Other { form: Form::Text, request: Request::Stats });
    let datagram = binary_request(9, &Request::Stats);
    let handled = f.service.handle(&mut f.registry, now, source, &datagram, &mut f.out);
    assert_eq!(handled, Handled::Other { form: Form::Binary { request_id: 9 }, request: Request::Stats });
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
    f.service.reply(Form::Text, &Response::Error(Rejection::Empty), &mut f.out);
    let counters = f.service.counters();
    assert_eq!((counters.received, counters.rejected), (5, 5));
    assert_eq!(f.registry.len(), 1);
}
