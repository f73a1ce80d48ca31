//! The node as a state machine: the client face, the group face, counters.

use std::time::{Duration, Instant};

use std::io;

use super::*;
use crate::core::Core;
use crate::protocol::{Multicast, binary};

const OWN_ORIGIN: u64 = 0xAAAA;

fn node() -> Node {
    let mut n = 0u128;
    let config = NodeConfig {
        group: Some(GroupConfig {
            group: "239.255.77.1:7077".parse().unwrap(),
            origin: OWN_ORIGIN,
            hello_interval: Duration::from_secs(2),
        }),
        unicast: "127.0.0.1:7000".parse().unwrap(),
        ..NodeConfig::default()
    };
    Node::new(config, move || {
        n += 1;
        Uuid::from_u128(n)
    })
}

fn text(node: &mut Node, now: Instant, from: &str, line: &str) -> String {
    let mut reply = Vec::new();
    assert_eq!(
        node.handle_datagram(now, Face::Client, from.parse().unwrap(), line.as_bytes(), &mut reply),
        Some(Face::Client)
    );
    String::from_utf8(reply).unwrap()
}

fn group(node: &mut Node, now: Instant, from: &str, message: &Multicast<'_>) -> Option<Vec<u8>> {
    let mut datagram = Vec::new();
    binary::encode(5, message, &mut datagram);
    let mut reply = Vec::new();
    node.handle_datagram(now, Face::Group, from.parse().unwrap(), &datagram, &mut reply).map(|face| {
        assert_eq!(face, Face::Client, "answers leave from the unicast socket");
        reply
    })
}

#[test]
fn stats_counts_the_node_and_the_protocol() {
    let mut node = node();
    let now = Instant::now();
    assert_eq!(text(&mut node, now, "127.0.0.1:1", "register echo 4000").len(), 37);
    assert!(text(&mut node, now, "127.0.0.1:1", "bogus").starts_with("ERROR unknown command"));
    let stats = text(&mut node, now, "127.0.0.1:1", "stats");
    assert_eq!(
        stats,
        "instances=1 services=1 received=3 rejected=1 expired=0 send_failures=0 announcements=0 multicast_ignored=0 \
         complete=yes peers_up=0/0 replicated_out=0 replicated_in=0 retransmits=0 peer_rejected=0 probes=0 probes_dead=0 \
         reports=0 reports_unchecked=0 removed_unreachable=0 refused_full=0 refused_quota=0 refused_policy=0 refused_reports=0 \
         rate_dropped=0 rate_slipped=0 bridged=0 bridged_found=0 bridge_queries=0 watches=0 watch_notifications=0 watch_dropped=0 foreign_hellos=0 \
         digests_sent=0 digest_mismatches=0 repairs_pushed=0 repairs_removed=0 peer_bytes_out=0 peer_bytes_in=0 refused_key=0 sealed_dropped=0 acks_dropped=0 mdns_unicast_dropped=0\n"
    );
    node.handle_send_error(Face::Client, "127.0.0.1:1".parse().unwrap(), &io::Error::other("full"));
    assert_eq!(node.stats(now)["send_failures"], 1);
}

#[test]
fn an_announcement_registers_and_only_its_announcer_can_say_goodbye() {
    let mut node = node();
    let now = Instant::now();
    let announce = Multicast::Announce { origin: 1, service: "echo", ip: None, port: 4000 };
    assert_eq!(group(&mut node, now, "127.0.0.1:9999", &announce), None);
    assert_eq!(text(&mut node, now, "127.0.0.1:1", "query echo"), "127.0.0.1:4000\n");
    // A unicast registration of the same instance is a lease of its own.
    text(&mut node, now, "127.0.0.1:1", "register upper 5000");

    let forged = Multicast::Goodbye { origin: 2, service: "echo", ip: None, port: 4000 };
    group(&mut node, now, "127.0.0.1:9999", &forged);
    assert_eq!(text(&mut node, now, "127.0.0.1:1", "query echo"), "127.0.0.1:4000\n", "another origin removes nothing");
    let forged = Multicast::Goodbye { origin: 2, service: "upper", ip: None, port: 5000 };
    group(&mut node, now, "127.0.0.1:9999", &forged);
    assert_eq!(text(&mut node, now, "127.0.0.1:1", "query upper"), "127.0.0.1:5000\n", "nor a unicast lease");

    let goodbye = Multicast::Goodbye { origin: 1, service: "echo", ip: None, port: 4000 };
    group(&mut node, now, "127.0.0.1:9999", &goodbye);
    assert_eq!(text(&mut node, now, "127.0.0.1:1", "query echo"), "NOT FOUND\n");
    // A goodbye for something gone already is not counted as an announcement.
    group(&mut node, now, "127.0.0.1:9999", &goodbye);
    let stats = node.stats(now);
    assert_eq!((stats["announcements"], stats["multicast_ignored"]), (2, 3));
}

#[test]
fn discovery_is_answered_and_own_or_foreign_datagrams_are_dropped() {
    let mut node = node();
    let now = Instant::now();
    let reply = group(&mut node, now, "127.0.0.1:9999", &Multicast::Discover { origin: 3 }).unwrap();
    assert_eq!(
        binary::decode_response(&reply).unwrap(),
        (5, Response::BrokerHere { addr: "127.0.0.1:7000".parse().unwrap() })
    );
    let own = Multicast::Announce { origin: OWN_ORIGIN, service: "echo", ip: None, port: 1 };
    assert_eq!(group(&mut node, now, "127.0.0.1:9999", &own), None);
    let mut reply = Vec::new();
    assert_eq!(node.handle_datagram(now, Face::Group, "127.0.0.1:1".parse().unwrap(), b"query echo", &mut reply), None);
    assert!(node.registry().is_empty());
    assert_eq!(node.stats(now)["multicast_ignored"], 2);
}

#[test]
fn the_node_wakes_for_expiry_and_drains_its_changes() {
    let mut node = node();
    let now = Instant::now();
    text(&mut node, now, "127.0.0.1:1", "register echo 4000");
    let ttl = Duration::from_secs(5);
    assert_eq!(node.poll_timeout(), Some(now + ttl));
    node.handle_timeout(now + ttl);
    assert!(node.registry().is_empty());
    assert_eq!(node.stats(now)["expired"], 1);
    assert_eq!(node.registry.poll_change(), None, "the node took every change");
}

/// A LAN host (not exempt) registering 1,000 instances at once gets its 1,000 ids, renews and
/// drops them, while its queries, listings and `stats` stay limited, and so does a refusal.
#[test]
fn acknowledgements_are_not_rate_limited_but_queries_are() {
    let config =
        NodeConfig { rate_limit: crate::limit::RateLimit { rate: 5, exempt: Vec::new() }, ..NodeConfig::default() };
    let mut n = 0u128;
    let mut node = Node::new(config, move || {
        n += 1;
        Uuid::from_u128(n)
    });
    let now = Instant::now();
    let host: SocketAddr = "192.0.2.7:5000".parse().unwrap();
    let send = |node: &mut Node, line: &[u8]| {
        let mut reply = Vec::new();
        node.handle_datagram(now, Face::Client, host, line, &mut reply).map(|_| reply)
    };
    let mut ids = Vec::new();
    for i in 0..1000 {
        let reply = send(&mut node, format!("register s 10.0.{}.{} 80", i / 250, i % 250).as_bytes());
        let reply = reply.expect("every registration gets its id");
        ids.push(String::from_utf8(reply).unwrap().trim().to_owned());
    }
    assert_eq!(node.registry().len(), 1000);
    let mut request = Vec::new();
    binary::encode_request(7, &crate::protocol::Request::Register { service: "b", ip: None, port: 9 }, &mut request);
    assert!(send(&mut node, &request).is_some_and(|reply| reply.len() > request.len()), "binary too");
    for id in &ids {
        assert_eq!(send(&mut node, format!("heartbeat {id}").as_bytes()).unwrap(), b"OK\n");
    }
    assert_eq!(send(&mut node, format!("deregister {}", ids[0]).as_bytes()).unwrap(), b"OK\n");
    assert_eq!(send(&mut node, b"report s 10.0.0.2:80").unwrap(), b"OK\n");
    assert_eq!(node.stats(now)["rate_dropped"] + node.stats(now)["rate_slipped"], 0, "nothing limited yet");

    // Queries are limited as before: 5 full replies, then every second one a slip or nothing.
    let full = (0..100).filter(|_| send(&mut node, b"query s").is_some_and(|r| r.len() > 7)).count();
    assert_eq!(full, 5);
    for request in [&b"services"[..], b"instances s", b"stats"] {
        assert!(send(&mut node, request).is_none_or(|r| r.len() <= request.len()), "{request:?} is limited");
    }
    // A refusal may echo what was sent: limited too.
    assert_eq!(send(&mut node, b"register bad/name 1"), None);
    assert!(node.stats(now)["rate_dropped"] >= 50);
    // And the acknowledgements still go out.
    assert_eq!(send(&mut node, format!("heartbeat {}", ids[1]).as_bytes()).unwrap(), b"OK\n");
    assert_eq!(send(&mut node, b"register s 10.9.9.9 80").unwrap().len(), 37);
    // Time refills the bucket for queries.
    let later = now + Duration::from_secs(1);
    let mut reply = Vec::new();
    assert_eq!(node.handle_datagram(later, Face::Client, host, b"query s", &mut reply), Some(Face::Client));
    assert!(reply.len() > 1000);
}
