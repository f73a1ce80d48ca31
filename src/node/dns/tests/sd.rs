//! DNS-SD over the unicast face: browsing service types and instances, resolving an instance.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, Record, RecordType};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::Name;

use super::{Transport, ask, ips, register, registry, srv, udp};
use crate::registry::Registry;

/// An instance's name: its label raw (`Name::from_ascii` refuses `:`), then the rest.
fn instance(label: &str, rest: &str) -> Name {
    Name::from_ascii(rest).unwrap().prepend_label(label.as_bytes()).unwrap()
}

fn ask_name(registry: &mut Registry, now: Instant, name: Name, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.add_query(Query::query(name, qtype));
    ask(registry, now, &message.to_vec().unwrap(), Transport::Udp).1
}

fn ptrs(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| match &r.data {
            RData::PTR(ptr) => ptr.0.to_ascii(),
            other => panic!("not PTR: {other:?}"),
        })
        .collect()
}

fn txt_strings(record: &Record) -> Vec<Vec<u8>> {
    match &record.data {
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.to_vec()).collect(),
        other => panic!("not TXT: {other:?}"),
    }
}

#[test]
fn service_types_and_browse_domains_are_listed() {
    let (mut reg, t0) = (registry(), Instant::now());
    register(&mut reg, t0, "web", "127.0.0.1:8001");
    register(&mut reg, t0, "db", "127.0.0.1:5432");
    let types = udp(&mut reg, t0, "_services._dns-sd._udp.makler.", RecordType::PTR);
    assert_eq!(types.response_code, ResponseCode::NoError);
    assert!(types.authoritative);
    let mut listed = ptrs(&types.answers);
    listed.sort();
    assert_eq!(listed, ["_db._tcp.makler.", "_web._tcp.makler."]);
    assert!(types.answers.iter().all(|r| r.name.to_ascii() == "_services._dns-sd._udp.makler." && r.ttl == 0));
    for name in ["b._dns-sd._udp.makler.", "lb._dns-sd._udp.makler."] {
        let reply = udp(&mut reg, t0, name, RecordType::PTR);
        assert_eq!(ptrs(&reply.answers), ["makler."], "{name}");
    }
    // The names exist, with no record of other types; their parents are empty non-terminals.
    for (name, qtype) in [
        ("_services._dns-sd._udp.makler.", RecordType::A),
        ("b._dns-sd._udp.makler.", RecordType::TXT),
        ("_dns-sd._udp.makler.", RecordType::PTR),
        ("_udp.makler.", RecordType::A),
    ] {
        let reply = udp(&mut reg, t0, name, qtype);
        assert_eq!(reply.response_code, ResponseCode::NoError, "{name}");
        assert!(reply.answers.is_empty() && reply.authorities.len() == 1, "{name}: the SOA only");
    }
    assert_eq!(udp(&mut reg, t0, "db._dns-sd._udp.makler.", RecordType::PTR).response_code, ResponseCode::NXDomain);
}

#[test]
fn a_service_ptr_lists_its_instances_with_srv_txt_and_addresses() {
    let (mut reg, t0) = (registry(), Instant::now());
    for endpoint in ["127.0.0.1:8001", "[::1]:8003"] {
        register(&mut reg, t0, "web", endpoint);
    }
    let reply = udp(&mut reg, t0, "_web._tcp.makler.", RecordType::PTR);
    assert_eq!(reply.response_code, ResponseCode::NoError);
    assert_eq!(ptrs(&reply.answers), [r"127-0-0-1\:8001._web._tcp.makler.", r"\[\:\:1\]\:8003._web._tcp.makler."]);
    let additional: Vec<(String, RecordType)> =
        reply.additionals.iter().map(|r| (r.name.to_ascii(), r.record_type())).collect();
    assert_eq!(
        additional,
        [
            ("7f000001-8001.addr.makler.".to_owned(), RecordType::A),
            (r"127-0-0-1\:8001._web._tcp.makler.".to_owned(), RecordType::SRV),
            (r"127-0-0-1\:8001._web._tcp.makler.".to_owned(), RecordType::TXT),
            ("00000000000000000000000000000001-8003.addr.makler.".to_owned(), RecordType::AAAA),
            (r"\[\:\:1\]\:8003._web._tcp.makler.".to_owned(), RecordType::SRV),
            (r"\[\:\:1\]\:8003._web._tcp.makler.".to_owned(), RecordType::TXT),
        ]
    );
    // Browsing does not move the rotation: SRV still starts at the first instance.
    assert_eq!(srv(&udp(&mut reg, t0, "_web._tcp.makler.", RecordType::SRV).answers[0]).2, 8001);
    // ANY on the service's name stays what it was: its SRV records.
    let any = udp(&mut reg, t0, "_web._tcp.makler.", RecordType::ANY);
    assert!(any.answers.iter().all(|r| r.record_type() == RecordType::SRV) && any.answers.len() == 2);
    assert_eq!(udp(&mut reg, t0, "_nope._tcp.makler.", RecordType::PTR).response_code, ResponseCode::NXDomain);
}

#[test]
fn an_instance_name_has_srv_and_txt() {
    let (mut reg, t0) = (registry(), Instant::now());
    register(&mut reg, t0, "web", "127.0.0.1:8001");
    let name = instance("127-0-0-1:8001", "_web._tcp.makler.");
    let reply = ask_name(&mut reg, t0, name.clone(), RecordType::SRV);
    assert_eq!(reply.response_code, ResponseCode::NoError);
    assert_eq!(
        reply.answers.iter().map(srv).collect::<Vec<_>>(),
        [(1, 1, 8001, "7f000001-8001.addr.makler.".to_owned())]
    );
    assert_eq!(ips(&reply.additionals), ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
    let txt = ask_name(&mut reg, t0, name.clone(), RecordType::TXT);
    assert_eq!(txt.answers.len(), 1);
    assert_eq!(txt_strings(&txt.answers[0]), [Vec::<u8>::new()], "one empty string (RFC 6763 §6.1)");
    let any = ask_name(&mut reg, t0, name.clone(), RecordType::ANY);
    let types: Vec<RecordType> = any.answers.iter().map(Record::record_type).collect();
    assert_eq!(types, [RecordType::SRV, RecordType::TXT]);
    // The name exists without an A record; other instances, spellings and services do not.
    let nodata = ask_name(&mut reg, t0, name.clone(), RecordType::A);
    assert_eq!((nodata.response_code, nodata.answers.len(), nodata.authorities.len()), (ResponseCode::NoError, 0, 1));
    for missing in [
        instance("127-0-0-1:8002", "_web._tcp.makler."),
        instance("127-0-0-01:8001", "_web._tcp.makler."),
        instance("127-0-0-1:8001", "_db._tcp.makler."),
        instance("nope", "_web._tcp.makler."),
    ] {
        let code = ask_name(&mut reg, t0, missing.clone(), RecordType::SRV).response_code;
        assert_eq!(code, ResponseCode::NXDomain, "{missing}");
    }
    // The service label is looked up in lower case too, as the face's other names are.
    let upper = instance("127-0-0-1:8001", "_WEB._tcp.makler.");
    assert_eq!(ask_name(&mut reg, t0, upper, RecordType::SRV).answers.len(), 1);
    // Gone with the lease.
    let later = t0 + Duration::from_secs(6);
    assert_eq!(ask_name(&mut reg, later, name, RecordType::SRV).response_code, ResponseCode::NXDomain);
    assert_eq!(udp(&mut reg, later, "_services._dns-sd._udp.makler.", RecordType::PTR).answers.len(), 0);
}

#[test]
fn txt_serves_the_metadata_and_a_large_one_is_truncated_over_plain_udp() {
    use crate::meta::Metadata;
    let (mut reg, t0) = (registry(), Instant::now());
    let source = crate::protocol::Source::Unicast("10.9.9.9:50000".parse().unwrap());
    let meta = Metadata::parse_words(["path=/", "version=2"]).unwrap();
    let check = crate::protocol::Check::None;
    reg.register_meta(t0, "web", "127.0.0.1:8001".parse().unwrap(), source, check, meta).unwrap();
    let name = instance("127-0-0-1:8001", "_web._tcp.makler.");
    let txt = ask_name(&mut reg, t0, name.clone(), RecordType::TXT);
    assert_eq!(txt_strings(&txt.answers[0]), [b"path=/".to_vec(), b"version=2".to_vec()]);
    // Browsing carries it in the additional TXT record.
    let browse = udp(&mut reg, t0, "_web._tcp.makler.", RecordType::PTR);
    let additional = browse.additionals.iter().find(|r| r.record_type() == RecordType::TXT).unwrap();
    assert_eq!(txt_strings(additional), [b"path=/".to_vec(), b"version=2".to_vec()]);

    // The most an instance holds: 1,024 bytes of TXT data.
    let big: Vec<String> = (0..4).map(|i| format!("k{i}={}", "v".repeat(252))).collect();
    let meta = Metadata::parse_words(big.iter().map(String::as_str)).unwrap();
    reg.register_meta(t0, "big", "127.0.0.1:8002".parse().unwrap(), source, check, meta).unwrap();
    let name = instance("127-0-0-1:8002", "_big._tcp.makler.");
    let mut query = Message::query();
    query.metadata.id = 4242;
    query.add_query(Query::query(name, RecordType::TXT));
    let query = query.to_vec().unwrap();
    let (bytes, plain) = ask(&mut reg, t0, &query, Transport::Udp);
    assert!(bytes.len() <= 512 && plain.truncation && plain.answers.is_empty(), "{}", bytes.len());
    let (bytes, tcp) = ask(&mut reg, t0, &query, Transport::Tcp);
    assert!(!tcp.truncation && bytes.len() > 1024, "{}", bytes.len());
    assert_eq!(txt_strings(&tcp.answers[0]).len(), 4);
}
