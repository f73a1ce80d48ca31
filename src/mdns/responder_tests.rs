//! The responder's timing and answering rules (RFC 6762), on a virtual clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::SRV;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::records::{host_name, instance_name, type_name};
use super::responder::{MAX_QUESTIONS, MAX_RECORDS, UNICAST_PER_SOURCE};
use super::*;

pub(super) const MS: Duration = Duration::from_millis(1);

pub(super) fn responder(seed: u64) -> Responder {
    Responder::new(ResponderConfig { group: GROUP_V4, seed })
}

pub(super) fn advert(service: &str, endpoint: &str) -> Advert {
    Advert { service: service.to_owned(), endpoint: endpoint.parse().unwrap(), txt: Vec::new() }
}

pub(super) fn sent(r: &mut Responder) -> Vec<(SocketAddr, Message)> {
    let (mut out, mut all) = (Vec::new(), Vec::new());
    while let Some(to) = r.poll_transmit(&mut out) {
        all.push((to, Message::from_vec(&out).expect("what the responder sends decodes")));
    }
    all
}

/// Runs the responder's timers until it is idle or `until`, returning what it sent and when.
pub(super) fn run(r: &mut Responder, until: Instant) -> Vec<(Instant, SocketAddr, Message)> {
    let mut all = Vec::new();
    while let Some(at) = r.poll_timeout().filter(|at| *at <= until) {
        r.handle_timeout(at);
        all.extend(sent(r).into_iter().map(|(to, m)| (at, to, m)));
    }
    all
}

pub(super) fn web_name(label: &str) -> Name {
    instance_name("web", label).unwrap()
}

/// A live responder for `web` at 10.0.0.5:8080, and the time it went live.
pub(super) fn live() -> (Responder, Instant) {
    let (mut r, t0) = (responder(7), Instant::now());
    assert!(r.add(t0, advert("web", "10.0.0.5:8080")));
    run(&mut r, t0 + Duration::from_secs(10));
    assert_eq!(r.poll_timeout(), None);
    (r, t0 + Duration::from_secs(10))
}

pub(super) fn question(name: Name, qtype: RecordType, unicast: bool) -> Message {
    let mut message = Message::new(0, MessageType::Query, hickory_proto::op::OpCode::Query);
    let mut query = Query::query(name, qtype);
    query.set_mdns_unicast_response(unicast);
    message.queries.push(query);
    message
}

pub(super) fn peer() -> SocketAddr {
    "10.0.0.9:5353".parse().unwrap()
}

#[test]
fn probes_three_times_then_announces_three_times() {
    let (mut r, t0) = (responder(1), Instant::now());
    r.add(t0, advert("web", "10.0.0.5:8080"));
    let first = r.poll_timeout().unwrap();
    assert!(first <= t0 + 250 * MS, "the first probe within 250 ms");
    let all = run(&mut r, t0 + Duration::from_secs(10));
    let times: Vec<Duration> = all.iter().map(|(at, _, _)| *at - first).collect();
    assert_eq!(times, [Duration::ZERO, 250 * MS, 500 * MS, 750 * MS, 1750 * MS, 3750 * MS]);
    let name = web_name("10-0-0-5:8080");
    for (i, (_, to, probe)) in all[..3].iter().enumerate() {
        assert_eq!(*to, GROUP_V4);
        assert_eq!(probe.message_type, MessageType::Query);
        assert_eq!(probe.queries.len(), 1);
        assert_eq!((probe.queries[0].name(), probe.queries[0].query_type()), (&name, RecordType::ANY));
        assert_eq!(probe.queries[0].mdns_unicast_response(), i == 0, "QU on the first probe only");
        let types: Vec<RecordType> = probe.authorities.iter().map(Record::record_type).collect();
        assert_eq!(types, [RecordType::SRV, RecordType::TXT]);
        assert!(probe.authorities.iter().all(|a| !a.mdns_cache_flush));
    }
    for (_, to, announcement) in &all[3..] {
        assert_eq!(*to, GROUP_V4);
        assert!(announcement.message_type == MessageType::Response && announcement.authoritative);
        let records: Vec<(String, RecordType, bool, u32)> = announcement
            .answers
            .iter()
            .map(|a| (a.name.to_ascii(), a.record_type(), a.mdns_cache_flush, a.ttl))
            .collect();
        assert_eq!(
            records,
            [
                ("_web._tcp.local.".to_owned(), RecordType::PTR, false, SERVICE_TTL),
                (r"10-0-0-5\:8080._web._tcp.local.".to_owned(), RecordType::SRV, true, HOST_TTL),
                (r"10-0-0-5\:8080._web._tcp.local.".to_owned(), RecordType::TXT, true, SERVICE_TTL),
                ("10-0-0-5.makler.local.".to_owned(), RecordType::A, true, HOST_TTL),
                ("_services._dns-sd._udp.local.".to_owned(), RecordType::PTR, false, SERVICE_TTL),
            ]
        );
    }
    let event = r.poll_event();
    assert!(
        matches!(event, Some(ResponderEvent::Announced { ref label, .. }) if label == "10-0-0-5:8080"),
        "{event:?}"
    );
    assert_eq!(r.poll_timeout(), None, "live: nothing more until asked");
}

pub(super) fn srv_record(name: Name, port: u16) -> Record {
    Record::from_rdata(name, 120, RData::SRV(SRV::new(0, 0, port, host_name("10.0.0.77".parse().unwrap()))))
}

#[test]
fn a_conflict_while_probing_renames_the_instance() {
    let (mut r, t0) = (responder(2), Instant::now());
    r.add(t0, advert("web", "10.0.0.5:8080"));
    let first = r.poll_timeout().unwrap();
    r.handle_timeout(first);
    sent(&mut r);
    let mut answer = Message::new(0, MessageType::Response, hickory_proto::op::OpCode::Query);
    answer.answers.push(srv_record(web_name("10-0-0-5:8080"), 9999));
    r.handle_datagram(first + 10 * MS, peer(), &answer.to_vec().unwrap());
    let renamed = r.poll_event();
    assert!(
        matches!(renamed, Some(ResponderEvent::Renamed { ref label, .. }) if label == "10-0-0-5:8080 (2)"),
        "{renamed:?}"
    );
    assert_eq!(r.label("web", "10.0.0.5:8080".parse().unwrap()), Some("10-0-0-5:8080 (2)"));
    let all = run(&mut r, first + Duration::from_secs(1));
    assert_eq!(all[0].2.queries[0].name(), &web_name("10-0-0-5:8080 (2)"));
    // Our own probe or announcement coming back (multicast loopback) is no conflict.
    let (mut r, now) = live();
    let mut own = Message::new(0, MessageType::Response, hickory_proto::op::OpCode::Query);
    own.answers.push(srv_record(web_name("10-0-0-5:8080"), 8080));
    own.answers[0].data = RData::SRV(SRV::new(0, 0, 8080, host_name("10.0.0.5".parse().unwrap())));
    r.handle_datagram(now, peer(), &own.to_vec().unwrap());
    assert_eq!(r.poll_timeout(), None, "still live");
    // A response with other data for a live name sends it back to probing (§9).
    r.handle_datagram(now, peer(), &answer.to_vec().unwrap());
    assert_eq!(r.poll_timeout(), Some(now));
}

/// A conflicting response for the name `r` probes for now.
fn conflict(r: &mut Responder, at: Instant) {
    let label = r.label("web", "10.0.0.5:8080".parse().unwrap()).unwrap().to_owned();
    let mut answer = Message::new(0, MessageType::Response, hickory_proto::op::OpCode::Query);
    answer.answers.push(srv_record(web_name(&label), 9999));
    r.handle_datagram(at, peer(), &answer.to_vec().unwrap());
}

#[test]
fn fifteen_conflicts_in_ten_seconds_make_each_further_probing_wait_five_seconds() {
    let (mut r, t0) = (responder(4), Instant::now());
    r.add(t0, advert("web", "10.0.0.5:8080"));
    // 14 conflicts, 100 ms apart: each renaming probes again at once.
    for n in 0..14u32 {
        let at = t0 + 100 * MS * n;
        conflict(&mut r, at);
        assert_eq!(r.poll_timeout(), Some(at), "conflict {}", n + 1);
    }
    // The 15th within 10 s: the next probing waits 5 s, and so does each one after it.
    let at = t0 + 1400 * MS;
    conflict(&mut r, at);
    assert_eq!(r.poll_timeout(), Some(at + Duration::from_secs(5)));
    assert_eq!(r.label("web", "10.0.0.5:8080".parse().unwrap()), Some("10-0-0-5:8080 (16)"));
    let at = t0 + Duration::from_secs(7);
    conflict(&mut r, at);
    assert_eq!(r.poll_timeout(), Some(at + Duration::from_secs(5)));
    // Ten seconds after the first ones, fewer than 15 are left in the window: at once again.
    let at = t0 + Duration::from_secs(12);
    conflict(&mut r, at);
    assert_eq!(r.poll_timeout(), Some(at));
}

#[test]
fn simultaneous_probes_are_settled_by_the_later_data() {
    for (their_port, we_lose) in [(9999, true), (80, false)] {
        let (mut r, t0) = (responder(3), Instant::now());
        r.add(t0, advert("web", "10.0.0.5:8080"));
        let first = r.poll_timeout().unwrap();
        r.handle_timeout(first);
        sent(&mut r);
        let mut probe = question(web_name("10-0-0-5:8080"), RecordType::ANY, true);
        let mut theirs = srv_record(web_name("10-0-0-5:8080"), their_port);
        theirs.data = RData::SRV(SRV::new(0, 0, their_port, host_name("10.0.0.5".parse().unwrap())));
        probe.authorities.push(theirs);
        // The same TXT as ours, so that the SRV records decide (§8.2 compares sorted sets).
        let txt = hickory_proto::rr::rdata::TXT::from_bytes(vec![&b""[..]]);
        probe.authorities.push(Record::from_rdata(web_name("10-0-0-5:8080"), 120, RData::TXT(txt)));
        r.handle_datagram(first + 10 * MS, peer(), &probe.to_vec().unwrap());
        let next = r.poll_timeout().unwrap();
        if we_lose {
            assert_eq!(next, first + 10 * MS + Duration::from_secs(1), "the loser probes again after 1 s");
        } else {
            assert_eq!(next, first + 250 * MS, "the winner goes on");
        }
        assert_eq!(r.poll_event(), None, "no rename either way");
    }
}

#[test]
fn shared_answers_wait_20_to_120_ms_and_carry_additional_records() {
    let (mut r, now) = live();
    let ptr = question(type_name("web").unwrap(), RecordType::PTR, false);
    r.handle_datagram(now, peer(), &ptr.to_vec().unwrap());
    assert!(sent(&mut r).is_empty());
    let at = r.poll_timeout().unwrap();
    assert!(at >= now + 20 * MS && at <= now + 120 * MS, "{:?}", at - now);
    r.handle_timeout(at);
    let reply = sent(&mut r);
    assert_eq!(reply.len(), 1);
    let (to, message) = &reply[0];
    assert_eq!(*to, GROUP_V4);
    assert_eq!(message.answers.len(), 1);
    let additional: Vec<RecordType> = message.additionals.iter().map(Record::record_type).collect();
    assert_eq!(additional, [RecordType::SRV, RecordType::TXT, RecordType::A]);
    // Asked again within a second: the rate limit holds it back; after, it goes.
    r.handle_datagram(at + 500 * MS, peer(), &ptr.to_vec().unwrap());
    assert_eq!(r.poll_timeout(), None);
    r.handle_datagram(at + 1000 * MS, peer(), &ptr.to_vec().unwrap());
    assert!(r.poll_timeout().is_some());
}

#[test]
fn known_answers_with_half_our_ttl_or_more_are_not_repeated() {
    let (mut r, now) = live();
    let known = |ttl: u32| {
        let mut ptr = question(type_name("web").unwrap(), RecordType::PTR, false);
        let instance = web_name("10-0-0-5:8080");
        ptr.answers.push(Record::from_rdata(
            type_name("web").unwrap(),
            ttl,
            RData::PTR(hickory_proto::rr::rdata::PTR(instance)),
        ));
        ptr.to_vec().unwrap()
    };
    r.handle_datagram(now, peer(), &known(SERVICE_TTL / 2));
    assert_eq!(r.poll_timeout(), None, "suppressed");
    r.handle_datagram(now, peer(), &known(SERVICE_TTL / 2 - 1));
    assert!(r.poll_timeout().is_some(), "the querier's copy is about to expire: answered");
}

#[test]
fn unicast_and_legacy_questions_are_answered_to_the_querier() {
    let (mut r, now) = live();
    // QU: unicast, at once.
    let srv = question(web_name("10-0-0-5:8080"), RecordType::SRV, true);
    r.handle_datagram(now, peer(), &srv.to_vec().unwrap());
    let reply = sent(&mut r);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].0, peer());
    assert_eq!(reply[0].1.answers[0].record_type(), RecordType::SRV);
    assert_eq!(reply[0].1.additionals[0].record_type(), RecordType::A);
    // A unique answer to a multicast question: multicast at once.
    let plain = question(web_name("10-0-0-5:8080"), RecordType::TXT, false);
    r.handle_datagram(now, peer(), &plain.to_vec().unwrap());
    let reply = sent(&mut r);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].0, GROUP_V4);
    // From another port: a legacy unicast reply with the id, the question, TTLs of 10 s at most.
    let legacy: SocketAddr = "10.0.0.9:40000".parse().unwrap();
    let mut query = question(type_name("web").unwrap(), RecordType::PTR, false);
    query.metadata.id = 777;
    r.handle_datagram(now, legacy, &query.to_vec().unwrap());
    let reply = sent(&mut r);
    assert_eq!(reply.len(), 1);
    let (to, message) = &reply[0];
    assert_eq!((*to, message.id, message.queries.len()), (legacy, 777, 1));
    assert!(message.answers.iter().chain(&message.additionals).all(|a| a.ttl <= 10 && !a.mdns_cache_flush));
    // A question for someone else's name: no answer.
    r.handle_datagram(now, peer(), &question(type_name("db").unwrap(), RecordType::PTR, true).to_vec().unwrap());
    assert!(sent(&mut r).is_empty());
}

#[test]
fn removing_an_instance_says_goodbye_with_ttl_zero() {
    let (mut r, now) = live();
    r.add(now, advert("web", "10.0.0.5:8081"));
    run(&mut r, now + Duration::from_secs(10));
    let later = now + Duration::from_secs(10);
    r.remove(later, "web", "10.0.0.5:8080".parse().unwrap());
    let goodbye = sent(&mut r);
    assert_eq!(goodbye.len(), 1);
    let records: Vec<(RecordType, u32)> = goodbye[0].1.answers.iter().map(|a| (a.record_type(), a.ttl)).collect();
    // The address and the service type stay: the other instance still has them.
    assert_eq!(records, [(RecordType::PTR, 0), (RecordType::SRV, 0), (RecordType::TXT, 0)]);
    r.remove_all(later);
    let last = sent(&mut r);
    assert_eq!(last[0].1.answers.len(), 5, "the last one takes the address and the type along");
    assert!(last[0].1.answers.iter().all(|a| a.ttl == 0));
    // A probing instance leaves silently.
    r.add(later, advert("web", "10.0.0.5:8082"));
    r.remove(later, "web", "10.0.0.5:8082".parse().unwrap());
    assert!(sent(&mut r).is_empty());
}

#[test]
fn two_responders_on_one_link_claim_distinct_names() {
    // Two brokers both advertising 10.0.0.5:8080 with other TXT: one of them renames.
    let t0 = Instant::now();
    let (mut a, mut b) = (responder(11), responder(12));
    let mut first = advert("web", "10.0.0.5:8080");
    a.add(t0, first.clone());
    first.txt = vec![b"v=2".to_vec()];
    b.add(t0, first);
    let mut now = t0;
    for _ in 0..200 {
        let Some(next) = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min() else { break };
        now = next;
        for (from, to) in [(0, 1), (1, 0)] {
            let (src, dst) = if from == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
            src.handle_timeout(now);
            let mut out = Vec::new();
            let src_addr: SocketAddr = if to == 1 { "10.0.0.1:5353" } else { "10.0.0.2:5353" }.parse().unwrap();
            while src.poll_transmit(&mut out).is_some() {
                dst.handle_datagram(now, src_addr, &out);
            }
        }
    }
    assert!(now < t0 + Duration::from_secs(20));
    let endpoint = "10.0.0.5:8080".parse().unwrap();
    let labels = [a.label("web", endpoint).unwrap().to_owned(), b.label("web", endpoint).unwrap().to_owned()];
    assert_ne!(labels[0], labels[1], "{labels:?}");
    assert!(labels.contains(&"10-0-0-5:8080".to_owned()), "{labels:?}");
}

#[test]
fn arbitrary_datagrams_never_panic() {
    let (mut r, now) = live();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let valid = question(type_name("web").unwrap(), RecordType::PTR, false).to_vec().unwrap();
    for round in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bytes = valid.clone();
        let len = (seed % 64) as usize;
        if round % 2 == 0 {
            bytes = seed.to_le_bytes().iter().cycle().take(len).copied().collect();
        } else {
            let at = (seed >> 8) as usize % bytes.len();
            bytes[at] ^= (seed >> 16) as u8;
            bytes.truncate(bytes.len() - (seed >> 24) as usize % 4);
        }
        r.handle_datagram(now, peer(), &bytes);
        r.handle_timeout(now + Duration::from_secs(2));
        sent(&mut r);
    }
}

#[test]
fn another_hosts_goodbye_for_our_record_is_answered_by_announcing_it_again() {
    let (mut r, now) = live();
    let ours = srv_record(web_name("10-0-0-5:8080"), 8080);
    let mut goodbye = Message::new(0, MessageType::Response, hickory_proto::op::OpCode::Query);
    goodbye.answers.push(ours);
    goodbye.answers[0].data = RData::SRV(SRV::new(0, 0, 8080, host_name("10.0.0.5".parse().unwrap())));
    goodbye.answers[0].ttl = 0;
    r.handle_datagram(now, peer(), &goodbye.to_vec().unwrap());
    let again = sent(&mut r);
    assert_eq!(again.len(), 1, "{again:?}");
    let (to, message) = &again[0];
    assert_eq!(*to, GROUP_V4);
    assert_eq!(message.answers.len(), 1);
    assert_eq!((message.answers[0].record_type(), message.answers[0].ttl), (RecordType::SRV, 120));
    // Not again within 250 ms; a goodbye for a record that is not ours changes nothing.
    r.handle_datagram(now + 100 * MS, peer(), &goodbye.to_vec().unwrap());
    assert!(sent(&mut r).is_empty());
    goodbye.answers[0].data = RData::SRV(SRV::new(0, 0, 9999, host_name("10.0.0.5".parse().unwrap())));
    r.handle_datagram(now + Duration::from_secs(2), peer(), &goodbye.to_vec().unwrap());
    assert!(sent(&mut r).is_empty());
}

/// A live responder for `n` instances of `web` at 10.0.0.5 and the time they went live.
pub(super) fn live_many(n: u16) -> (Responder, Instant) {
    let (mut r, t0) = (responder(7), Instant::now());
    for i in 0..n {
        assert!(r.add(t0, advert("web", &format!("10.0.0.5:{}", 8000 + i))));
    }
    run(&mut r, t0 + Duration::from_secs(10));
    (r, t0 + Duration::from_secs(10))
}

#[test]
fn thousands_of_repeated_questions_cost_bounded_work() {
    let (mut r, now) = live_many(200);
    let mut query = question(type_name("web").unwrap(), RecordType::PTR, false);
    let repeated = query.queries[0].clone();
    query.queries.extend(std::iter::repeat_n(repeated, 2000));
    // Distinct questions past the cap are ignored too.
    for i in 0..100 {
        query.queries.push(Query::query(type_name(&format!("x{i}")).unwrap(), RecordType::PTR));
    }
    r.handle_datagram(now, peer(), &query.to_vec().unwrap());
    assert!(r.work() <= MAX_QUESTIONS * 200, "{} instances visited", r.work());
    let answers: usize = run(&mut r, now + Duration::from_secs(1)).iter().map(|(_, _, m)| m.answers.len()).sum();
    assert!((1..=200).contains(&answers), "{answers} answers for 200 instances");
    // A response's records are read up to the cap.
    let mut response = super::wire::response();
    let record =
        Record::from_rdata(web_name("x"), 0, RData::SRV(SRV::new(0, 0, 1, host_name("10.0.0.9".parse().unwrap()))));
    response.answers = vec![record; 2000];
    r.handle_datagram(now, peer(), &response.to_vec().unwrap());
    // Each record against each instance's 1 (conflict) + 5 (goodbye defence) records.
    assert!(r.work() <= MAX_RECORDS * 200 * 6, "{} records compared", r.work());
}

#[test]
fn a_unicast_reply_is_one_packet_and_a_source_gets_few() {
    let (mut r, now) = live_many(200);
    // Legacy unicast: one packet, truncated (TC), though 200 PTRs do not fit one.
    let legacy: SocketAddr = "10.0.0.9:40000".parse().unwrap();
    let query = question(type_name("web").unwrap(), RecordType::PTR, false);
    r.handle_datagram(now, legacy, &query.to_vec().unwrap());
    let (mut out, mut packets) = (Vec::new(), Vec::new());
    while let Some(to) = r.poll_transmit(&mut out) {
        packets.push((to, out.clone()));
    }
    assert_eq!(packets.len(), 1, "one packet");
    assert!(packets[0].1.len() <= MAX_PACKET);
    let reply = Message::from_vec(&packets[0].1).unwrap();
    assert!(reply.truncation && !reply.answers.is_empty());
    // QU: one packet too, no TC.
    let qu = question(type_name("web").unwrap(), RecordType::PTR, true);
    r.handle_datagram(now, peer(), &qu.to_vec().unwrap());
    let reply = sent(&mut r);
    assert_eq!(reply.len(), 1);
    assert!(!reply[0].1.truncation);
    // A burst from one source (any port): capped per second.
    let mut replies = 0;
    for port in 0..50 {
        let from = SocketAddr::new("10.0.0.7".parse().unwrap(), 40000 + port);
        r.handle_datagram(now, from, &query.to_vec().unwrap());
        replies += sent(&mut r).len();
    }
    assert_eq!(replies, UNICAST_PER_SOURCE as usize);
    // Another second, another few.
    r.handle_datagram(now + Duration::from_secs(1), legacy, &query.to_vec().unwrap());
    assert_eq!(sent(&mut r).len(), 1);
}

#[test]
fn a_question_visits_only_the_instances_that_answer_it() {
    let (mut r, now) = live_many(200);
    assert!(r.add(now, advert("db", "10.0.0.6:5432")));
    run(&mut r, now + Duration::from_secs(10));
    let now = now + Duration::from_secs(10);
    let ask = |r: &mut Responder, questions: Vec<(Name, RecordType)>| {
        let mut query = question(questions[0].0.clone(), questions[0].1, false);
        query.queries.extend(questions[1..].iter().map(|(n, t)| Query::query(n.clone(), *t)));
        r.handle_datagram(now, peer(), &query.to_vec().unwrap());
        sent(r);
        r.work()
    };
    // 32 instance names: one instance each (it was 32 × 201).
    let names: Vec<(Name, RecordType)> =
        (0..32).map(|i| (web_name(&format!("10-0-0-5:{}", 8000 + i)), RecordType::SRV)).collect();
    assert_eq!(ask(&mut r, names), 32);
    // Another type's instances, the address shared by 200 instances, the type enumeration.
    assert_eq!(ask(&mut r, vec![(type_name("db").unwrap(), RecordType::PTR)]), 1);
    assert_eq!(ask(&mut r, vec![(host_name("10.0.0.5".parse().unwrap()), RecordType::A)]), 1);
    let services = super::records::services_name();
    assert_eq!(ask(&mut r, vec![(services, RecordType::PTR)]), 2, "one per type");
    // A name nobody holds costs nothing; a type costs its instances (its answers).
    assert_eq!(ask(&mut r, vec![(type_name("nope").unwrap(), RecordType::PTR)]), 0);
    assert_eq!(ask(&mut r, vec![(type_name("web").unwrap(), RecordType::PTR)]), 200);
    // The index follows removals and renames.
    for i in 0..200u16 {
        r.remove(now, "web", format!("10.0.0.5:{}", 8000 + i).parse().unwrap());
    }
    r.remove(now, "db", "10.0.0.6:5432".parse().unwrap());
    assert_eq!(r.index_len(), 0);
}

#[test]
fn many_sources_share_one_budget_of_unicast_replies() {
    use super::responder::UNICAST_TOTAL;
    let (mut r, now) = live_many(200);
    let query = question(type_name("web").unwrap(), RecordType::PTR, false).to_vec().unwrap();
    // 200 forged sources, one legacy query each (within every source's own cap).
    let mut replies = 0;
    for i in 0..200u8 {
        let from = SocketAddr::new(std::net::Ipv4Addr::new(10, 0, 1, i).into(), 40000);
        r.handle_datagram(now, from, &query);
        replies += sent(&mut r).len();
    }
    assert_eq!(replies, UNICAST_TOTAL as usize, "at most the budget in all");
    assert_eq!(r.unicast_dropped(), 200 - u64::from(UNICAST_TOTAL), "the others counted");
    // The next second, the budget is back.
    r.handle_datagram(now + Duration::from_secs(1), "10.0.2.1:40000".parse().unwrap(), &query);
    assert_eq!(sent(&mut r).len(), 1);
}
