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
         reports=0 removed_unreachable=0 refused_full=0 refused_quota=0 refused_policy=0 refused_reports=0 \
         rate_dropped=0 rate_slipped=0 bridged=0 bridged_found=0 bridge_queries=0 watches=0 watch_notifications=0 watch_dropped=0 foreign_hellos=0\n"
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
