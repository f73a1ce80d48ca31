//! Metadata on the simulated network: it travels with the lease to every broker (deltas,
//! catch-up pages, slot renewals that must not lose a change), converges after a
//! re-registration, and is not sent to a broker that did not say it reads it.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::sim::{NetConfig, Sim, node_with};

fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 7000))
}

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5)), 50000);

fn endpoint() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 5], 8080))
}

fn node(i: usize, n: usize, metadata: bool) -> Node {
    let config = NodeConfig {
        unicast: node_addr(i),
        incarnation: 0xfeed_0000_0000_0000 + i as u64,
        replica: ReplicaConfig {
            peers: (0..n).filter(|&j| j != i).map(node_addr).collect(),
            metadata,
            ..ReplicaConfig::default()
        },
        ..NodeConfig::default()
    };
    node_with(i as u64, config)
}

/// Brokers `0..n`, those in `old` without metadata (as brokers before it).
fn cluster(seed: u64, net: NetConfig, n: usize, old: &[usize]) -> Sim {
    let mut sim = Sim::new(seed, net);
    for i in 0..n {
        sim.add_node(node_addr(i), node(i, n, !old.contains(&i)));
    }
    sim.run_for(Duration::from_secs(3));
    sim
}

fn shown(sim: &mut Sim, i: usize) -> String {
    let now = sim.now;
    sim.node(i).registry.handle_timeout(now);
    sim.node(i).registry.metadata("web", endpoint()).map(ToString::to_string).unwrap_or_default()
}

/// Registers at broker `at` as a client does: again until answered (the network may lose it).
fn register(sim: &mut Sim, at: usize, line: &str) {
    let reply = (0..10)
        .find_map(|_| {
            // A duplicated answer to an earlier register would answer this one.
            sim.take_inbox(CLIENT);
            sim.request(CLIENT, node_addr(at), line.as_bytes())
        })
        .expect("an answer");
    assert_eq!(reply.len(), 37, "{}", String::from_utf8_lossy(&reply));
}

#[test]
fn metadata_converges_on_three_brokers_through_loss() {
    for seed in 0..16 {
        converges(seed);
    }
}

fn converges(seed: u64) {
    let net = NetConfig { loss: 0.2, duplicate: 0.05, ..NetConfig::default() };
    let mut sim = cluster(seed, net, 3, &[]);
    register(&mut sim, 0, "register web 8080 path=/ version=2");
    sim.run_for(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(shown(&mut sim, i), "path=/ version=2", "seed {seed} broker {i}");
    }
    // Renewals (by slot once confirmed) for a while, then other pairs at the same broker: the
    // change goes whole, not as a renewal.
    for _ in 0..6 {
        register(&mut sim, 0, "register web 8080 path=/ version=2");
        sim.run_for(Duration::from_secs(1));
    }
    register(&mut sim, 0, "register web 8080 path=/v3 version=3");
    sim.run_for(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(shown(&mut sim, i), "path=/v3 version=3", "seed {seed} broker {i}");
    }
    // The same source at another broker: the one lease, its pairs replaced everywhere.
    register(&mut sim, 2, "register web 8080 version=4");
    sim.run_for(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(shown(&mut sim, i), "version=4", "seed {seed} broker {i}");
        assert_eq!(sim.node(i).registry.lease_count(), 1, "seed {seed} broker {i}");
    }
    // A plain register keeps them; one with `check=` only too.
    register(&mut sim, 1, "register web 8080");
    register(&mut sim, 1, "register web 8080 check=tcp");
    sim.run_for(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(shown(&mut sim, i), "version=4", "broker {i}");
    }
}

#[test]
fn a_broker_that_catches_up_gets_the_metadata_from_its_pages() {
    let mut sim = Sim::new(5, NetConfig::default());
    sim.add_node(node_addr(0), node(0, 3, true));
    sim.add_node(node_addr(1), node(1, 3, true));
    sim.run_for(Duration::from_secs(3));
    register(&mut sim, 0, "register web 8080 path=/ version=2");
    sim.run_for(Duration::from_millis(500));
    assert_eq!(shown(&mut sim, 1), "path=/ version=2");
    // The third starts late and pulls the table; no renewal happens meanwhile.
    sim.add_node(node_addr(2), node(2, 3, true));
    sim.run_for(Duration::from_millis(2500));
    assert!(sim.node(2).registry.lease_count() == 1);
    assert_eq!(shown(&mut sim, 2), "path=/ version=2");
}

#[test]
fn an_older_broker_is_not_sent_metadata_and_keeps_the_lease() {
    let mut sim = cluster(3, NetConfig::default(), 3, &[2]);
    register(&mut sim, 0, "register web 8080 path=/ version=2");
    for _ in 0..4 {
        sim.run_for(Duration::from_secs(1));
        register(&mut sim, 0, "register web 8080 path=/ version=2");
    }
    sim.run_for(Duration::from_secs(1));
    assert_eq!(shown(&mut sim, 1), "path=/ version=2");
    assert_eq!(shown(&mut sim, 2), "");
    for i in 0..3 {
        assert_eq!(sim.node(i).registry.lease_count(), 1, "broker {i}");
    }
}

const WATCHER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 2, 1)), 40000);

/// Everything that reached the watcher so far, as text.
fn heard(sim: &mut Sim) -> Vec<String> {
    sim.take_inbox(WATCHER).into_iter().map(|(_, bytes)| String::from_utf8(bytes).unwrap()).collect()
}

#[test]
fn a_watch_with_meta_hears_of_the_pairs_and_of_their_changes_at_another_broker() {
    let mut sim = cluster(9, NetConfig::default(), 2, &[]);
    let cookie = sim.request(WATCHER, node_addr(1), b"watch web").unwrap();
    let cookie = String::from_utf8(cookie).unwrap();
    let cookie = cookie.trim().strip_prefix("COOKIE ").unwrap().to_owned();
    let answer = sim.request(WATCHER, node_addr(1), format!("watch web {cookie} meta").as_bytes()).unwrap();
    assert_eq!(String::from_utf8(answer).unwrap(), "WATCHING web seq=0 ttl_ms=5000\n");

    register(&mut sim, 0, "register web 8080 path=/ version=2");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(heard(&mut sim), ["CHANGED web seq=1 10.0.0.5:8080\nmeta 10.0.0.5:8080 path=/ version=2\n"]);
    // A refresh with the same pairs is no change; other pairs are, at the other broker too.
    register(&mut sim, 0, "register web 8080 path=/ version=2");
    sim.run_for(Duration::from_millis(300));
    assert_eq!(heard(&mut sim), Vec::<String>::new());
    register(&mut sim, 0, "register web 8080 version=3");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(heard(&mut sim), ["CHANGED web seq=2 10.0.0.5:8080\nmeta 10.0.0.5:8080 version=3\n"]);

    // The same watch renewed without `meta`: the plain lines again.
    let answer = sim.request(WATCHER, node_addr(1), format!("watch web {cookie}").as_bytes()).unwrap();
    assert_eq!(String::from_utf8(answer).unwrap(), "WATCHING web seq=2 ttl_ms=5000 10.0.0.5:8080\n");
    register(&mut sim, 0, "register web 8080 version=4");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(heard(&mut sim), ["CHANGED web seq=3 10.0.0.5:8080\n"]);
}

#[test]
fn a_watch_with_meta_keeps_its_replies_within_a_datagram() {
    let mut sim = cluster(4, NetConfig::default(), 1, &[]);
    let pairs: String = (0..4).map(|i| format!(" k{i}={}", "v".repeat(252))).collect();
    for port in 8000..8004 {
        register(&mut sim, 0, &format!("register web {port}{pairs}"));
    }
    for binary in [false, true] {
        let cookie = sim.request(WATCHER, node_addr(0), b"watch web").unwrap();
        let cookie = u64::from_str_radix(String::from_utf8(cookie).unwrap().trim().trim_start_matches("COOKIE "), 16);
        let request = crate::protocol::Request::WatchMeta { service: "web", cookie: cookie.unwrap() };
        let mut datagram = Vec::new();
        match binary {
            true => crate::protocol::binary::encode_request(5, &request, &mut datagram),
            false => crate::protocol::text::encode_request(&request, &mut datagram),
        }
        let answer = sim.request(WATCHER, node_addr(0), &datagram).unwrap();
        assert!(answer.len() <= crate::protocol::MAX_REPLY_LEN, "{}", answer.len());
        if binary {
            let (_, response) = crate::protocol::binary::decode_response(&answer).unwrap();
            let crate::protocol::Response::WatchingMeta { instances, meta, .. } = response else {
                panic!("{response:?}")
            };
            // Every instance, as a plain watch lists them; the pairs of the first, which
            // alone fit, and the marker on the next, whose pairs were left out.
            assert_eq!((instances.len(), meta.len()), (4, 4), "every instance is listed");
            assert_eq!(meta[0].len(), 4);
            assert_eq!(meta[1], [(crate::meta::TRUNCATED.to_owned(), None)]);
            assert!(meta[2].is_empty() && meta[3].is_empty());
        } else {
            let text = String::from_utf8(answer).unwrap();
            let first = text.lines().next().unwrap();
            assert_eq!(first.split(' ').filter(|w| w.starts_with("10.0.0.5:")).count(), 4, "{text}");
            let metas: Vec<&str> = text.lines().filter(|line| line.starts_with("meta ")).collect();
            assert_eq!(metas.len(), 2, "{text}");
            assert_eq!(metas[1], "meta 10.0.0.5:8001 meta_truncated");
        }
    }
    register(&mut sim, 0, &format!("register web 8004{pairs}"));
    sim.run_for(Duration::from_millis(100));
    let heard = sim.take_inbox(WATCHER);
    assert!(!heard.is_empty());
    for bytes in heard.into_iter().map(|(_, bytes)| bytes) {
        assert!(bytes.len() <= crate::protocol::MAX_REPLY_LEN, "{}", bytes.len());
        // The watch was last renewed in the binary form.
        let (_, response) = crate::protocol::binary::decode_response(&bytes).unwrap();
        let crate::protocol::Response::ChangedMeta { instances, meta, .. } = response else { panic!("{response:?}") };
        assert_eq!((instances.len(), meta.len()), (5, 5));
        assert_eq!(meta[1], [(crate::meta::TRUNCATED.to_owned(), None)]);
    }
}

#[test]
fn a_broker_that_missed_the_registration_gets_the_metadata_with_the_repair() {
    let mut sim = cluster(5, NetConfig::default(), 2, &[]);
    sim.partition(node_addr(0), node_addr(1));
    register(&mut sim, 0, "register web 8080 path=/ version=2");
    // Long enough for the delta to be given up and the peers to find each other down, within
    // the lease's TTL (5 s).
    sim.run_for(Duration::from_millis(2100));
    assert_eq!(shown(&mut sim, 1), "", "broker 1 missed it");
    sim.heal();
    // No renewal comes (the client does not heartbeat): only anti-entropy repairs broker 1.
    sim.run_for(Duration::from_millis(2500));
    let now = sim.now;
    assert!(sim.node(1).registry.contains(now, "web", endpoint()), "repaired");
    let repairs = sim.node(0).stats(now)["repairs_pushed"];
    assert!(repairs > 0, "by anti-entropy");
    assert_eq!(shown(&mut sim, 1), "path=/ version=2", "with its metadata");
}
