//! The node's mDNS face on a virtual clock: what it advertises and withdraws, what it imports
//! and drops, and the no-loop rule.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::{A, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::mdns::{MdnsConfig, import_id, is_imported, is_makler_host, service_of_type};
use super::*;
use crate::core::Core;
use crate::registry::Source;

fn node(import: &[&str]) -> Node {
    let mut n = 0u128;
    let config = NodeConfig {
        unicast: "10.0.0.1:7000".parse().unwrap(),
        mdns: Some(MdnsConfig::new(import.iter().map(|t| t.to_string()).collect(), 7)),
        ..NodeConfig::default()
    };
    Node::new(config, move || {
        n += 1;
        Uuid::from_u128(n)
    })
}

fn text(node: &mut Node, now: Instant, from: &str, line: &str) -> String {
    let mut reply = Vec::new();
    node.handle_datagram(now, Face::Client, from.parse().unwrap(), line.as_bytes(), &mut reply);
    String::from_utf8(reply).unwrap()
}

/// Runs the node's timers up to `until`, returning the mDNS datagrams it sent, decoded.
fn run(node: &mut Node, until: Instant) -> Vec<(Instant, SocketAddr, Message)> {
    let mut all = Vec::new();
    let mut now = None;
    loop {
        let mut out = Vec::new();
        while let Some(transmit) = node.poll_transmit(now.unwrap_or(until), &mut out) {
            if transmit.face == Face::Mdns {
                all.push((now.unwrap_or(until), transmit.to, Message::from_vec(&out).unwrap()));
            }
        }
        match node.poll_timeout().filter(|at| *at <= until) {
            Some(at) => {
                node.handle_timeout(at);
                now = Some(at);
            }
            None => return all,
        }
    }
}

fn records(sent: &[(Instant, SocketAddr, Message)]) -> Vec<Record> {
    sent.iter()
        .filter(|(_, _, m)| m.message_type == MessageType::Response)
        .flat_map(|(_, _, m)| m.answers.clone())
        .collect()
}

fn srv_port(records: &[Record], label: &str) -> Option<(u16, u32)> {
    records.iter().find_map(|r| match &r.data {
        RData::SRV(srv) if r.name.iter().next() == Some(label.as_bytes()) => Some((srv.port, r.ttl)),
        _ => None,
    })
}

#[test]
fn a_registered_instance_is_advertised_and_withdrawn_with_a_goodbye() {
    let (mut node, t0) = (node(&[]), Instant::now());
    node.handle_start(t0);
    let id = text(&mut node, t0, "10.0.0.5:40000", "register web 8080 path=/ v=2");
    let id = id.trim().strip_prefix("OK ").unwrap_or(id.trim()).to_owned();
    text(&mut node, t0, "127.0.0.1:40000", "register web 8081");
    let sent = run(&mut node, t0 + Duration::from_secs(2));
    let txt: Vec<Vec<u8>> = records(&sent)
        .iter()
        .find_map(|r| match &r.data {
            RData::TXT(txt) if r.name.iter().next() == Some(&b"10-0-0-5:8080"[..]) => {
                Some(txt.txt_data.iter().map(|s| s.to_vec()).collect())
            }
            _ => None,
        })
        .expect("a TXT record announced");
    assert_eq!(txt, vec![b"path=/".to_vec(), b"v=2".to_vec()], "the TXT record is the registration's metadata");
    let probes: Vec<_> = sent.iter().filter(|(_, _, m)| m.message_type == MessageType::Query).collect();
    assert_eq!(probes.len(), 3, "three probes");
    assert_eq!(probes[0].2.queries[0].name().iter().next(), Some(&b"10-0-0-5:8080"[..]));
    let announced = records(&sent);
    assert_eq!(srv_port(&announced, "10-0-0-5:8080"), Some((8080, 120)), "{announced:?}");
    assert!(srv_port(&announced, "127-0-0-1:8081").is_none(), "a loopback endpoint is not advertised");
    // Refreshes change nothing on the link.
    let t1 = t0 + Duration::from_secs(4);
    run(&mut node, t1);
    text(&mut node, t1, "10.0.0.5:40000", "register web 8080");
    assert!(run(&mut node, t1).is_empty());
    // Deregistered: the goodbye goes at once.
    text(&mut node, t1, "10.0.0.5:40000", &format!("deregister {id}"));
    let goodbye = records(&run(&mut node, t1));
    assert_eq!(srv_port(&goodbye, "10-0-0-5:8080"), Some((8080, 0)), "{goodbye:?}");
}

#[test]
fn the_owner_advertises_and_hands_over() {
    // Ownership is the replicator's; with no peer this node owns everything. A change of owner
    // is driven through `handle_owners_changed` directly.
    let (mut node, t0) = (node(&[]), Instant::now());
    node.handle_start(t0);
    text(&mut node, t0, "10.0.0.5:40000", "register web 8080");
    let t1 = t0 + Duration::from_secs(4);
    run(&mut node, t1);
    text(&mut node, t1, "10.0.0.5:40000", "register web 8080");
    node.mdns.handle_owners_changed(t1, &node.registry, |_| false);
    node.drain(t1);
    assert!(run(&mut node, t1).is_empty(), "no goodbye while the new owner may take it over");
    // Nobody announced it within the handover's wait: the old owner says goodbye.
    let t2 = t1 + crate::mdns::responder::handover::HANDOVER_WAIT;
    let goodbye = records(&run(&mut node, t2));
    assert_eq!(srv_port(&goodbye, "10-0-0-5:8080"), Some((8080, 0)), "the old owner says goodbye");
    // The new owner takes it over: announced at once, without probes.
    node.mdns.handle_owners_changed(t2, &node.registry, |_| true);
    node.drain(t2);
    let again = run(&mut node, t2);
    assert!(again.iter().all(|(_, _, m)| m.message_type == MessageType::Response), "no probes: {again:?}");
    assert_eq!(srv_port(&records(&again), "10-0-0-5:8080"), Some((8080, 120)), "the new owner announces at once");
    // Handed over again, then gone from the table before anyone took it: the goodbye goes at once.
    let t3 = t2 + Duration::from_secs(1);
    run(&mut node, t3);
    let id = text(&mut node, t3, "10.0.0.5:40000", "register web 8080");
    node.mdns.handle_owners_changed(t3, &node.registry, |_| false);
    node.drain(t3);
    assert!(run(&mut node, t3).is_empty());
    text(&mut node, t3, "10.0.0.5:40000", &format!("deregister {}", id.trim().trim_start_matches("OK ")));
    let goodbye = records(&run(&mut node, t3));
    assert_eq!(srv_port(&goodbye, "10-0-0-5:8080"), Some((8080, 0)), "the goodbye goes when it leaves the table");
}

/// A zeroconf-like announcement of `label` of `_http._tcp` at `ip:port` on `host`, with `ttl`.
fn announcement(label: &str, host: &str, ip: &str, port: u16, ttl: u32) -> Vec<u8> {
    announcement_txt(label, host, ip, port, ttl, "path=/")
}

/// [`announcement`] with the TXT string `txt`.
fn announcement_txt(label: &str, host: &str, ip: &str, port: u16, ttl: u32, txt: &str) -> Vec<u8> {
    let type_name = Name::from_ascii("_http._tcp.local.").unwrap();
    let name = type_name.prepend_label(label.as_bytes()).unwrap();
    let host = Name::from_ascii(host).unwrap();
    let mut message = Message::new(0, MessageType::Response, OpCode::Query);
    message.metadata.authoritative = true;
    message.answers = vec![
        Record::from_rdata(type_name, ttl, RData::PTR(PTR(name.clone()))),
        Record::from_rdata(name.clone(), ttl, RData::SRV(SRV::new(0, 0, port, host.clone()))),
        Record::from_rdata(name, ttl, RData::TXT(TXT::new(vec![txt.to_owned()]))),
        Record::from_rdata(host, ttl, RData::A(A(ip.parse().unwrap()))),
    ];
    message.to_vec().unwrap()
}

fn mdns_in(node: &mut Node, now: Instant, from: &str, datagram: &[u8]) {
    let mut reply = Vec::new();
    assert_eq!(node.handle_datagram(now, Face::Mdns, from.parse().unwrap(), datagram, &mut reply), None);
}

#[test]
fn an_announced_instance_is_imported_while_mdns_holds_it_and_goes_with_its_goodbye() {
    let (mut node, t0) = (node(&["_http._tcp"]), Instant::now());
    node.handle_start(t0);
    let queries = run(&mut node, t0 + Duration::from_millis(200));
    assert!(
        queries.iter().any(|(_, _, m)| m.queries.iter().any(|q| q.query_type() == RecordType::PTR)),
        "the browser asks for the type"
    );
    let t1 = t0 + Duration::from_millis(300);
    mdns_in(&mut node, t1, "10.0.0.9:5353", &announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120));
    assert_eq!(text(&mut node, t1, "127.0.0.1:1", "query http"), "10.0.0.9:80\n");
    let endpoint: SocketAddr = "10.0.0.9:80".parse().unwrap();
    assert_eq!(node.registry.lease_id("http", endpoint, ann()), Some(import_id("http", endpoint, 0)));
    let meta = node.registry.metadata("http", endpoint).expect("the TXT record became the lease's metadata");
    assert_eq!(meta.get_str("path"), Some("/"));
    // Held past the table's TTL (5 s) while mDNS holds it; never advertised back.
    let t2 = t1 + Duration::from_secs(30);
    let sent = run(&mut node, t2);
    assert_eq!(text(&mut node, t2, "127.0.0.1:1", "query http"), "10.0.0.9:80\n");
    assert!(records(&sent).is_empty(), "nothing advertised: {sent:?}");
    // The goodbye: gone 1 s later (RFC 6762 §10.1).
    mdns_in(&mut node, t2, "10.0.0.9:5353", &announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 0));
    run(&mut node, t2 + Duration::from_millis(1100));
    let t3 = t2 + Duration::from_millis(1100);
    assert!(text(&mut node, t3, "127.0.0.1:1", "query http").starts_with("NOT FOUND"));
    // Back within the tombstones' life: imported under the next generation.
    mdns_in(&mut node, t3, "10.0.0.9:5353", &announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120));
    assert_eq!(node.registry.lease_id("http", endpoint, ann()), Some(import_id("http", endpoint, 1)));
}

#[test]
fn an_import_renews_its_lease_without_rewriting_the_pairs_a_peer_wrote() {
    let (mut node, t0) = (node(&["_http._tcp"]), Instant::now());
    node.handle_start(t0);
    run(&mut node, t0 + Duration::from_millis(200));
    let t1 = t0 + Duration::from_millis(300);
    mdns_in(&mut node, t1, "10.0.0.9:5353", &announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120));
    let endpoint: SocketAddr = "10.0.0.9:80".parse().unwrap();
    let shown = |node: &Node| node.registry.metadata("http", endpoint).map(ToString::to_string);
    assert_eq!(shown(&node), Some("path=/".to_owned()));
    // Another broker importing it, with another TXT record, writes the same lease.
    let id = import_id("http", endpoint, 0);
    let theirs = crate::meta::Metadata::parse_words(["path=/v2"]).unwrap();
    let applied = node.registry.register_with_id(t1, id, "http", endpoint, ann(), Some(theirs));
    assert_eq!(applied, crate::registry::Applied::Refreshed);
    // This broker's renewals (every ttl/3) and an unchanged announcement leave those pairs.
    let t2 = t1 + Duration::from_secs(30);
    run(&mut node, t2);
    mdns_in(&mut node, t2, "10.0.0.9:5353", &announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120));
    run(&mut node, t2 + Duration::from_secs(10));
    assert_eq!(shown(&node), Some("path=/v2".to_owned()), "renewals say nothing of the pairs");
    // A change of this broker's own view is written at its next renewal.
    let t3 = t2 + Duration::from_secs(10);
    mdns_in(
        &mut node,
        t3,
        "10.0.0.9:5353",
        &announcement_txt("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120, "path=/v3"),
    );
    run(&mut node, t3 + Duration::from_secs(10));
    assert_eq!(shown(&node), Some("path=/v3".to_owned()));
}

fn ann() -> Source {
    Source::Announcer { ip: "10.0.0.9".parse().unwrap(), origin: mdns::IMPORT_ORIGIN }
}

#[test]
fn what_a_makler_broker_advertises_is_never_imported() {
    let (mut node, t0) = (node(&["_http._tcp"]), Instant::now());
    node.handle_start(t0);
    let datagram = announcement("10-0-0-9:80", "10-0-0-9.makler.local.", "10.0.0.9", 80, 120);
    mdns_in(&mut node, t0, "10.0.0.2:5353", &datagram);
    assert!(text(&mut node, t0, "127.0.0.1:1", "query http").starts_with("NOT FOUND"));
}

#[test]
fn names_ids_and_the_loop_rule() {
    assert_eq!(service_of_type("_printer._tcp").as_deref(), Some("printer"));
    assert_eq!(service_of_type("_IPP._tcp.").as_deref(), Some("ipp"));
    assert_eq!(service_of_type("printer._tcp"), None);
    assert_eq!(service_of_type("_a.b._tcp"), None);
    assert!(is_makler_host("10-0-0-5.makler.local.") && is_makler_host("X.MAKLER.LOCAL"));
    assert!(!is_makler_host("printer.local."));
    let endpoint: SocketAddr = "10.0.0.9:80".parse().unwrap();
    let id = import_id("http", endpoint, 0);
    assert_eq!(id, import_id("http", endpoint, 0), "the same on every broker");
    assert_ne!(id, import_id("http", endpoint, 1));
    assert_ne!(id, import_id("ipp", endpoint, 0));
    assert!(is_imported(id) && !is_imported(Uuid::new_v4()) && !is_imported(Uuid::from_u128(1)));
}

/// The SRV records announced (TTL > 0) in the mDNS datagrams `from` sent to the group, by
/// instance label.
fn announced_by(datagrams: &[(SocketAddr, Vec<u8>)], from: SocketAddr) -> std::collections::BTreeSet<String> {
    let messages = datagrams.iter().filter(|(f, _)| *f == from).filter_map(|(_, b)| Message::from_vec(b).ok());
    let records: Vec<Record> = messages.flat_map(|m| m.answers).collect();
    let srv = records.iter().filter(|r| r.record_type() == RecordType::SRV && r.ttl > 0);
    srv.filter_map(|r| r.name.iter().next().map(|l| String::from_utf8_lossy(l).into_owned())).collect()
}

/// Two peer brokers with `--mdns` on one simulated link (seeded `seed`, incarnations from
/// `incarnation`), met, and eight instances registered at the first, 6 s later: what the
/// hand-over tests start from.
fn two_advertising_brokers(seed: u64, incarnation: u64) -> (crate::sim::Sim, Vec<SocketAddr>) {
    use crate::sim::{NetConfig, Sim, node_with};
    let addrs: Vec<SocketAddr> = ["10.0.0.1:7000", "10.0.0.2:7000"].iter().map(|a| a.parse().unwrap()).collect();
    let net = NetConfig {
        min_delay: Duration::from_micros(100),
        max_delay: Duration::from_millis(2),
        loss: 0.0,
        duplicate: 0.0,
    };
    let mut sim = Sim::new(seed, net);
    for (i, &addr) in addrs.iter().enumerate() {
        let config = NodeConfig {
            unicast: addr,
            incarnation: incarnation + i as u64,
            replica: ReplicaConfig { peers: addrs.clone(), ..ReplicaConfig::default() },
            registry: crate::registry::Config { ttl: Duration::from_secs(60), ..Default::default() },
            mdns: Some(MdnsConfig::new(Vec::new(), i as u64)),
            ..NodeConfig::default()
        };
        sim.add_node(addr, node_with(i as u64, config));
    }
    sim.run_for(Duration::from_secs(3));
    for i in 0..8u8 {
        sim.send(SocketAddr::from(([10, 0, 1, i + 1], 40000)), addrs[0], b"register web 8080".to_vec());
    }
    sim.run_for(Duration::from_secs(6));
    (sim, addrs)
}

#[test]
fn two_brokers_split_the_adverts_by_owner_and_the_survivor_takes_over() {
    let (mut sim, addrs) = two_advertising_brokers(5, 100);
    let labels: Vec<String> = (0..8).map(|i| format!("10-0-1-{}:8080", i + 1)).collect();
    let sent = sim.take_inbox(crate::mdns::GROUP_V4);
    let (first, second) = (announced_by(&sent, addrs[0]), announced_by(&sent, addrs[1]));
    assert!(!first.is_empty() && !second.is_empty(), "both own some: {first:?} {second:?}");
    assert!(first.is_disjoint(&second), "each instance advertised by one: {first:?} {second:?}");
    let all: std::collections::BTreeSet<String> = first.union(&second).cloned().collect();
    assert_eq!(all, labels.iter().cloned().collect(), "every instance advertised");
    // The second broker crashes (no goodbye, no bye): once the first finds it down, it owns
    // and advertises the rest.
    sim.crash(1);
    sim.run_for(Duration::from_secs(8));
    let taken = announced_by(&sim.take_inbox(crate::mdns::GROUP_V4), addrs[0]);
    assert_eq!(taken, second, "the survivor advertises what the crashed one did");
}

#[test]
fn datagrams_from_off_the_link_are_dropped() {
    let mut n = 0u128;
    let config = NodeConfig {
        mdns: Some(MdnsConfig {
            link: Some("10.0.0.0/24".parse().unwrap()),
            ..MdnsConfig::new(vec!["_http._tcp".into()], 7)
        }),
        ..NodeConfig::default()
    };
    let mut node = Node::new(config, move || {
        n += 1;
        Uuid::from_u128(n)
    });
    let t0 = Instant::now();
    node.handle_start(t0);
    let datagram = announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120);
    mdns_in(&mut node, t0, "192.0.2.9:5353", &datagram);
    assert!(text(&mut node, t0, "127.0.0.1:1", "query http").starts_with("NOT FOUND"), "off the link: dropped");
    mdns_in(&mut node, t0, "10.0.0.9:5353", &datagram);
    assert_eq!(text(&mut node, t0, "127.0.0.1:1", "query http"), "10.0.0.9:80\n");
}

#[test]
fn a_datagram_over_9000_bytes_is_dropped() {
    let (mut node, t0) = (node(&["_http._tcp"]), Instant::now());
    node.handle_start(t0);
    let mut message = Message::from_vec(&announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120)).unwrap();
    let filler = Name::from_ascii("filler.local.").unwrap();
    for i in 0..40 {
        let txt = TXT::new(vec![format!("{i}").repeat(250 / format!("{i}").len())]);
        message.additionals.push(Record::from_rdata(filler.clone(), 120, RData::TXT(txt)));
    }
    let big = message.to_vec().unwrap();
    assert!(big.len() > crate::mdns::MAX_DATAGRAM);
    mdns_in(&mut node, t0, "10.0.0.9:5353", &big);
    assert!(text(&mut node, t0, "127.0.0.1:1", "query http").starts_with("NOT FOUND"), "too big: dropped");
    mdns_in(&mut node, t0, "10.0.0.9:5353", &announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120));
    assert_eq!(text(&mut node, t0, "127.0.0.1:1", "query http"), "10.0.0.9:80\n");
}

#[test]
fn an_imported_lease_is_the_links_to_end() {
    let (mut node, t0) = (node(&["_http._tcp"]), Instant::now());
    node.handle_start(t0);
    mdns_in(&mut node, t0, "10.0.0.9:5353", &announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120));
    let id = import_id("http", "10.0.0.9:80".parse().unwrap(), 0);
    for _ in 0..10 {
        assert!(text(&mut node, t0, "10.0.0.66:1", &format!("deregister {id}")).starts_with("NOT FOUND"));
        assert!(text(&mut node, t0, "10.0.0.66:1", &format!("heartbeat {id}")).starts_with("NOT FOUND"));
    }
    assert_eq!(text(&mut node, t0, "127.0.0.1:1", "query http"), "10.0.0.9:80\n", "still held");
    assert!(!node.registry.is_tombstoned(id));
}

#[test]
fn register_with_id_refuses_tombstones_and_renews_the_same_sources_lease() {
    use crate::meta::Metadata;
    use crate::registry::{Applied, RemoveReason};
    let (mut node, t0) = (node(&[]), Instant::now());
    let endpoint: SocketAddr = "10.0.0.9:80".parse().unwrap();
    let (gen0, gen1) = (import_id("http", endpoint, 0), import_id("http", endpoint, 1));
    let registry = &mut node.registry;
    // A tombstoned id is refused, not inserted for peers to bounce.
    registry.apply_remote_removal(t0, gen0, RemoveReason::Goodbye);
    assert_eq!(
        registry.register_with_id(t0, gen0, "http", endpoint, ann(), Some(Metadata::default())),
        Applied::Tombstoned
    );
    assert_eq!(
        registry.register_with_id(t0, gen1, "http", endpoint, ann(), Some(Metadata::default())),
        Applied::Inserted
    );
    // Another generation of the same source's instance renews that lease: still one.
    let gen2 = import_id("http", endpoint, 2);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        registry.register_with_id(t1, gen2, "http", endpoint, ann(), Some(Metadata::default())),
        Applied::Merged
    );
    assert_eq!(text(&mut node, t1, "127.0.0.1:1", "query http"), "10.0.0.9:80\n");
    let held = node.registry.lease_id("http", endpoint, ann());
    assert_eq!(held, Some(gen1.min(gen2)), "one lease, under the lesser id (rule 3)");
    for id in [gen1, gen2] {
        let again = node.registry.register_with_id(t1, id, "http", endpoint, ann(), Some(Metadata::default()));
        assert!(matches!(again, Applied::Refreshed | Applied::Merged), "{again:?}");
        assert_eq!(node.registry.lease_id("http", endpoint, ann()), held);
    }
}

fn node_with_policy(policy: crate::service::policy::Policy) -> Node {
    let mut n = 0u128;
    let config =
        NodeConfig { mdns: Some(MdnsConfig::new(vec!["_http._tcp".into()], 7)), policy, ..NodeConfig::default() };
    Node::new(config, move || {
        n += 1;
        Uuid::from_u128(n)
    })
}

#[test]
fn imports_follow_the_registration_policy_and_refuse_meaningless_endpoints() {
    use crate::service::policy::{ForeignIp, Policy};
    let t0 = Instant::now();
    // --foreign-ip deny: an announcer may import only its own address.
    let mut node = node_with_policy(Policy { foreign_ip: ForeignIp::Deny, ..Policy::default() });
    node.handle_start(t0);
    mdns_in(&mut node, t0, "10.0.0.9:5353", &announcement("Far", "far.local.", "203.0.113.5", 80, 120));
    assert!(text(&mut node, t0, "127.0.0.1:1", "query http").starts_with("NOT FOUND"), "a foreign address");
    mdns_in(&mut node, t0, "10.0.0.9:5353", &announcement("Far", "far.local.", "203.0.113.5", 80, 120));
    assert_eq!(node.mdns.refused(), 1, "counted once while the browser holds it");
    mdns_in(&mut node, t0, "10.0.0.9:5353", &announcement("Kitchen", "kitchen.local.", "10.0.0.9", 80, 120));
    assert_eq!(text(&mut node, t0, "127.0.0.1:1", "query http"), "10.0.0.9:80\n", "its own address");
    // --allow-register: only announcers of those networks.
    let allowed = crate::service::policy::parse_networks("10.0.0.0/29").unwrap();
    let mut node = node_with_policy(Policy { allow_register: allowed, ..Policy::default() });
    node.handle_start(t0);
    mdns_in(&mut node, t0, "10.0.0.99:5353", &announcement("Kitchen", "kitchen.local.", "10.0.0.99", 80, 120));
    assert!(text(&mut node, t0, "127.0.0.1:1", "query http").starts_with("NOT FOUND"), "not allowed to register");
    // Whatever the policy: no loopback, unspecified, multicast or link-local endpoint.
    let mut node = node_with_policy(Policy::default());
    node.handle_start(t0);
    for (label, ip) in [("L", "127.0.0.1"), ("U", "0.0.0.0"), ("M", "224.0.0.9"), ("K", "169.254.3.4")] {
        let host = format!("{label}.local.");
        mdns_in(&mut node, t0, "10.0.0.9:5353", &announcement(label, &host, ip, 80, 120));
        assert!(text(&mut node, t0, "127.0.0.1:1", "query http").starts_with("NOT FOUND"), "{ip} refused");
    }
    assert_eq!(node.mdns.refused(), 4);
}

#[test]
fn the_advertiser_is_chosen_among_the_brokers_of_the_link() {
    use crate::sim::{NetConfig, Sim, node_with};
    // Brokers 0 and 1 advertise on 10.0.0.0/24, broker 2 on another link, broker 3 not at all:
    // every instance is advertised once on each link, whoever checks it.
    let addrs: Vec<SocketAddr> = (1..=4).map(|i| SocketAddr::from(([10, 0, 0, i], 7000))).collect();
    let net = NetConfig {
        min_delay: Duration::from_micros(100),
        max_delay: Duration::from_millis(2),
        loss: 0.0,
        duplicate: 0.0,
    };
    let links = [Some("10.0.0.0/24"), Some("10.0.0.0/24"), Some("10.9.0.0/16"), None];
    let mut sim = Sim::new(11, net);
    for (i, &addr) in addrs.iter().enumerate() {
        let mdns = links[i]
            .map(|link| MdnsConfig { link: Some(link.parse().unwrap()), ..MdnsConfig::new(Vec::new(), i as u64) });
        let config = NodeConfig {
            unicast: addr,
            incarnation: 200 + i as u64,
            replica: ReplicaConfig { peers: addrs.clone(), ..ReplicaConfig::default() },
            registry: crate::registry::Config { ttl: Duration::from_secs(60), ..Default::default() },
            mdns,
            ..NodeConfig::default()
        };
        sim.add_node(addr, node_with(i as u64, config));
    }
    sim.run_for(Duration::from_secs(3));
    let labels: std::collections::BTreeSet<String> = (0..16).map(|i| format!("10-0-1-{}:8080", i + 1)).collect();
    for i in 0..16u8 {
        sim.send(SocketAddr::from(([10, 0, 1, i + 1], 40000)), addrs[3], b"register web 8080".to_vec());
    }
    sim.run_for(Duration::from_secs(6));
    let sent = sim.take_inbox(crate::mdns::GROUP_V4);
    let (first, second) = (announced_by(&sent, addrs[0]), announced_by(&sent, addrs[1]));
    assert!(!first.is_empty() && !second.is_empty(), "both brokers of the link own some: {first:?} {second:?}");
    assert!(first.is_disjoint(&second), "each instance advertised by one: {first:?} {second:?}");
    let link: std::collections::BTreeSet<String> = first.union(&second).cloned().collect();
    assert_eq!(link, labels, "every instance advertised on the first link");
    assert_eq!(announced_by(&sent, addrs[2]), labels, "the other link's only broker advertises all");
    assert!(announced_by(&sent, addrs[3]).is_empty());
    // Broker 1 stops advertising (restarted without --mdns): broker 0 takes its share.
    let config = NodeConfig {
        unicast: addrs[1],
        incarnation: 300,
        replica: ReplicaConfig { peers: addrs.clone(), ..ReplicaConfig::default() },
        registry: crate::registry::Config { ttl: Duration::from_secs(60), ..Default::default() },
        ..NodeConfig::default()
    };
    sim.restart(1, node_with(9, config));
    sim.run_for(Duration::from_secs(8));
    let taken = announced_by(&sim.take_inbox(crate::mdns::GROUP_V4), addrs[0]);
    assert_eq!(taken, second, "the remaining broker of the link advertises what the other did");
}

#[test]
fn a_broker_that_stops_leaves_its_adverts_to_the_survivor_without_goodbyes() {
    let (mut sim, addrs) = two_advertising_brokers(9, 400);
    let second = announced_by(&sim.take_inbox(crate::mdns::GROUP_V4), addrs[1]);
    assert!(!second.is_empty());
    // Broker 1 stops: its Bye goes to broker 0, and no goodbye to the link.
    let now = sim.now;
    sim.node(1).handle_close(now);
    sim.poke(1);
    sim.crash(1);
    sim.run_for(Duration::from_secs(1));
    let sent = sim.take_inbox(crate::mdns::GROUP_V4);
    let messages: Vec<(SocketAddr, Message)> =
        sent.iter().filter_map(|(from, b)| Message::from_vec(b).ok().map(|m| (*from, m))).collect();
    let goodbyes: Vec<String> = messages
        .iter()
        .flat_map(|(from, m)| m.answers.iter().filter(|r| r.ttl == 0).map(move |r| format!("{from} {}", r.name)))
        .collect();
    assert!(goodbyes.is_empty(), "no goodbye: {goodbyes:?}");
    let probes = messages.iter().filter(|(_, m)| m.message_type == MessageType::Query).count();
    assert_eq!(probes, 0, "the survivor takes over without probing");
    assert_eq!(announced_by(&sent, addrs[0]), second, "the survivor announced them at once");
}
