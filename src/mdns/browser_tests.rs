//! The browser's querying, cache and events, against the responder and hand-made packets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::RecordType;

use super::*;

fn browser(now: Instant) -> Browser {
    Browser::new(now, BrowserConfig { group: GROUP_V4, types: vec!["_web._tcp".to_owned()], seed: 5 })
}

fn queries(b: &mut Browser) -> Vec<Message> {
    let (mut out, mut all) = (Vec::new(), Vec::new());
    while let Some(to) = b.poll_transmit(&mut out) {
        assert_eq!(to, GROUP_V4);
        all.push(Message::from_vec(&out).expect("queries decode"));
    }
    all
}

fn events(b: &mut Browser) -> Vec<BrowserEvent> {
    std::iter::from_fn(|| b.poll_event()).collect()
}

/// Everything `r` sends, handed to `b` as from a peer on port 5353.
fn deliver(r: &mut Responder, b: &mut Browser, now: Instant) {
    let mut out = Vec::new();
    let from: SocketAddr = "10.0.0.2:5353".parse().unwrap();
    while r.poll_transmit(&mut out).is_some() {
        b.handle_datagram(now, from, &out);
    }
}

/// A responder that advertised `web` at 10.0.0.5:8080 with `v=1`, its announcements delivered.
fn announced(b: &mut Browser, t0: Instant) -> (Responder, Instant) {
    let mut r = Responder::new(ResponderConfig { group: GROUP_V4, seed: 9 });
    let advert =
        Advert { service: "web".to_owned(), endpoint: "10.0.0.5:8080".parse().unwrap(), txt: vec![b"v=1".to_vec()] };
    r.add(t0, advert);
    let mut now = t0;
    while let Some(at) = r.poll_timeout() {
        now = at;
        r.handle_timeout(at);
        deliver(&mut r, b, at);
    }
    (r, now)
}

#[test]
fn queries_back_off_from_one_second_doubling() {
    let t0 = Instant::now();
    let mut b = browser(t0);
    let mut times = Vec::new();
    while let Some(at) = b.poll_timeout().filter(|at| *at < t0 + Duration::from_secs(40)) {
        b.handle_timeout(at);
        for query in queries(&mut b) {
            assert_eq!(query.message_type, MessageType::Query);
            assert_eq!(query.queries[0].name().to_ascii(), "_web._tcp.local.");
            assert_eq!(query.queries[0].query_type(), RecordType::PTR);
            times.push(at);
        }
    }
    assert!(times[0] >= t0 + Duration::from_millis(20) && times[0] <= t0 + Duration::from_millis(120));
    let gaps: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    assert_eq!(gaps, [1, 2, 4, 8, 16]);
}

#[test]
fn an_announced_instance_is_found_then_gone_a_second_after_its_goodbye() {
    let t0 = Instant::now();
    let mut b = browser(t0);
    let (mut r, now) = announced(&mut b, t0);
    let found = events(&mut b);
    assert_eq!(found.len(), 1, "{found:?}");
    let BrowserEvent::Found(instance) = &found[0] else { panic!("{found:?}") };
    assert_eq!(instance.service_type, "_web._tcp");
    assert_eq!(instance.label, "10-0-0-5:8080");
    assert_eq!(instance.host, "10-0-0-5.makler.local.");
    assert_eq!(instance.addresses, ["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!((instance.port, instance.ttl), (8080, SERVICE_TTL));
    assert_eq!(instance.pairs(), [("v".to_owned(), Some(b"1".to_vec()))]);
    // A new TXT: changed.
    let changed =
        Advert { service: "web".to_owned(), endpoint: "10.0.0.5:8080".parse().unwrap(), txt: vec![b"v=2".to_vec()] };
    r.add(now, changed);
    r.handle_timeout(now);
    deliver(&mut r, &mut b, now);
    let change = events(&mut b);
    assert!(matches!(&change[..], [BrowserEvent::Changed(i)] if i.txt == [b"v=2".to_vec()]), "{change:?}");
    // Goodbye: still there for a second, then gone.
    r.remove(now, "web", "10.0.0.5:8080".parse().unwrap());
    deliver(&mut r, &mut b, now);
    assert!(events(&mut b).is_empty());
    b.handle_timeout(now + Duration::from_millis(999));
    assert!(events(&mut b).is_empty());
    b.handle_timeout(now + Duration::from_secs(1));
    assert_eq!(
        events(&mut b),
        [BrowserEvent::Gone { service_type: "_web._tcp".to_owned(), label: "10-0-0-5:8080".to_owned() }]
    );
}

#[test]
fn known_answers_ride_along_and_records_are_refreshed_before_they_expire() {
    let t0 = Instant::now();
    let mut b = browser(t0);
    let (_r, now) = announced(&mut b, t0);
    events(&mut b);
    queries(&mut b);
    // The next continuous query lists the PTR as a known answer.
    let mut sent = Vec::new();
    let mut at = now;
    while let Some(next) = b.poll_timeout().filter(|n| *n <= now + Duration::from_secs(SERVICE_TTL.into())) {
        at = next;
        b.handle_timeout(at);
        sent.extend(queries(&mut b).into_iter().map(|q| (at, q)));
    }
    let continuous = sent.iter().find(|(_, q)| q.queries.iter().any(|q| q.query_type() == RecordType::PTR)).unwrap();
    assert_eq!(continuous.1.answers.len(), 1, "the known PTR");
    assert_eq!(continuous.1.answers[0].record_type(), RecordType::PTR);
    // Refreshes at 80, 85, 90 and 95 % of the TTL for the SRV.
    let srv_asks: Vec<u64> = sent
        .iter()
        .filter(|(_, q)| q.queries.iter().any(|q| q.query_type() == RecordType::SRV))
        .map(|(at, _)| (*at - now).as_secs())
        .collect();
    assert_eq!(srv_asks.len(), 4, "{srv_asks:?}");
    // Unrefreshed, the instance expires with its records.
    assert!(at >= now);
    b.handle_timeout(now + Duration::from_secs(SERVICE_TTL.into()) + Duration::from_secs(1));
    assert!(matches!(&events(&mut b)[..], [BrowserEvent::Gone { .. }]));
}

#[test]
fn responses_from_other_ports_and_other_types_are_ignored() {
    let t0 = Instant::now();
    let mut b = browser(t0);
    let mut r = Responder::new(ResponderConfig { group: GROUP_V4, seed: 1 });
    r.add(t0, Advert { service: "db".to_owned(), endpoint: "10.0.0.6:5432".parse().unwrap(), txt: Vec::new() });
    let mut out = Vec::new();
    while let Some(at) = r.poll_timeout() {
        r.handle_timeout(at);
        while r.poll_transmit(&mut out).is_some() {
            b.handle_datagram(at, "10.0.0.2:5353".parse().unwrap(), &out);
        }
    }
    assert!(events(&mut b).is_empty(), "not a browsed type");
    let mut b = browser(t0);
    let (mut r2, now) = (Responder::new(ResponderConfig { group: GROUP_V4, seed: 2 }), t0);
    r2.add(now, Advert { service: "web".to_owned(), endpoint: "10.0.0.7:80".parse().unwrap(), txt: Vec::new() });
    while let Some(at) = r2.poll_timeout() {
        r2.handle_timeout(at);
        while r2.poll_transmit(&mut out).is_some() {
            b.handle_datagram(at, "10.0.0.2:40000".parse().unwrap(), &out);
        }
    }
    assert!(events(&mut b).is_empty(), "a response from port 40000 is not mDNS");
    // Garbage never panics.
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        b.handle_datagram(now, "10.0.0.2:5353".parse().unwrap(), &bytes);
    }
}

#[test]
fn the_cache_is_bounded() {
    use hickory_proto::rr::rdata::PTR;
    use hickory_proto::rr::{Name, RData, Record};
    let t0 = Instant::now();
    let mut b = browser(t0);
    let type_name = Name::from_ascii("_web._tcp.local.").unwrap();
    for chunk in 0..(browser::MAX_RECORDS / 50 + 2) {
        let mut message = Message::new(0, MessageType::Response, hickory_proto::op::OpCode::Query);
        for i in 0..50 {
            let instance = type_name.prepend_label(format!("flood-{chunk}-{i}").into_bytes()).unwrap();
            message.answers.push(Record::from_rdata(type_name.clone(), 120, RData::PTR(PTR(instance))));
        }
        b.handle_datagram(t0, "10.0.0.2:5353".parse().unwrap(), &message.to_vec().unwrap());
    }
    b.handle_timeout(t0 + Duration::from_millis(200));
    let asked: usize = queries(&mut b).iter().map(|q| q.queries.len()).sum();
    assert!(asked <= 2 * browser::MAX_RECORDS + 1, "{asked}");
    assert!(b.instances().next().is_none(), "PTRs alone make no instance");
}
