//! Several nodes on the simulated network (see [`crate::sim`]).

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::core::Core;
use crate::registry::Cursor;
use crate::sim::{NetConfig, Sim, node_with};

fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 7000))
}

fn client_addr(i: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, 1 + i as u8], 40000))
}

/// Every lease of a node's table, sorted.
fn table(node: &mut Node, now: Instant) -> Vec<(Uuid, String, SocketAddr, Duration)> {
    let mut all = Vec::new();
    let mut cursor = Some(Cursor::START);
    while let Some(at) = cursor {
        cursor = node.registry.page(now, at, |l| {
            all.push((l.id, l.service.to_owned(), l.endpoint, l.ttl_left));
            true
        });
    }
    all.sort();
    all
}

/// Runs a random workload from several clients against three nodes that do not know each
/// other, over a lossy, duplicating, reordering network; then replays what each node received
/// into a fresh node with no network at all. The answers and the final tables must be the
/// same: the harness delivers faithfully, and N independent nodes are N single nodes.
fn independent_nodes_are_single_nodes(seed: u64) {
    let net = NetConfig {
        min_delay: Duration::from_micros(50),
        max_delay: Duration::from_millis(20),
        loss: 0.1,
        duplicate: 0.05,
    };
    let mut sim = Sim::new(seed, net);
    sim.keep_traces = true;
    for i in 0..3 {
        sim.add_node(node_addr(i), node_with(i as u64, NodeConfig::default()));
    }
    let mut ids: Vec<Vec<String>> = vec![Vec::new(); 5];
    for _ in 0..400 {
        let client = sim.rng.below(5);
        let node = node_addr(sim.rng.below(3) as usize);
        let service = sim.rng.below(4);
        let known = &ids[client as usize];
        let line = match sim.rng.below(5) {
            0 | 1 => format!("register s{service} {}", 4000 + sim.rng.below(4)),
            2 if !known.is_empty() => format!("heartbeat {}", known[sim.rng.below(known.len() as u64) as usize]),
            3 if !known.is_empty() => format!("deregister {}", known[sim.rng.below(known.len() as u64) as usize]),
            _ => format!("query s{service}"),
        };
        sim.send(client_addr(client), node, line.into_bytes());
        let pause = sim.rng.between(Duration::ZERO, Duration::from_millis(60));
        sim.run_for(pause);
        for c in 0..5u64 {
            for (_, reply) in sim.take_inbox(client_addr(c)) {
                let text = String::from_utf8(reply).unwrap();
                if uuid::Uuid::try_parse(text.trim()).is_ok() {
                    ids[c as usize].push(text.trim().to_owned());
                }
            }
        }
    }
    sim.run_for(Duration::from_secs(3));
    let end = sim.now;
    assert!(sim.lost > 0, "the network lost something");
    for i in 0..3 {
        let mut reference = node_with(i as u64, NodeConfig::default());
        let trace = std::mem::take(&mut sim.nodes[i].trace);
        assert!(trace.len() > 50, "node {i} got {} datagrams", trace.len());
        for received in &trace {
            let mut reply = Vec::new();
            let answered =
                reference.handle_datagram(received.at, Face::Client, received.from, &received.bytes, &mut reply);
            assert_eq!(
                answered.map(|_| reply),
                received.reply.clone(),
                "seed {seed}, node {i}, at {:?}",
                received.at - sim.start
            );
        }
        reference.handle_timeout(end);
        assert_eq!(table(&mut reference, end), table(sim.node(i), end), "seed {seed}, node {i}");
    }
}

#[test]
fn independent_nodes_are_single_nodes_seed_1() {
    independent_nodes_are_single_nodes(1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn independent_nodes_are_single_nodes_any_seed(seed in any::<u64>()) {
        independent_nodes_are_single_nodes(seed);
    }
}

#[test]
fn partitions_and_crashes_cut_a_node_off() {
    let mut sim = Sim::new(7, NetConfig::default());
    let (a, b) = (sim.add_node(node_addr(0), node_with(0, NodeConfig::default())), node_addr(1));
    sim.add_node(b, node_with(1, NodeConfig::default()));
    let client = client_addr(0);
    let id = sim.request(client, node_addr(a), b"register echo 4000").expect("an answer");
    assert_eq!(id.len(), 37);
    sim.partition(client, node_addr(a));
    assert_eq!(sim.request(client, node_addr(a), b"query echo"), None, "cut off");
    assert_eq!(
        sim.request(client, b, b"query echo").as_deref(),
        Some(&b"NOT FOUND\n"[..]),
        "another node still answers"
    );
    sim.heal();
    assert_eq!(sim.request(client, node_addr(a), b"query echo").as_deref(), Some(&b"10.0.1.1:4000\n"[..]));
    sim.crash(a);
    assert_eq!(sim.request(client, node_addr(a), b"query echo"), None, "down");
    sim.restart(a, node_with(0, NodeConfig::default()));
    assert_eq!(
        sim.request(client, node_addr(a), b"query echo").as_deref(),
        Some(&b"NOT FOUND\n"[..]),
        "restarted empty"
    );
}

const GROUP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(239, 255, 77, 1)), 7077);

/// A node on the simulated group, of cluster `cluster`, with `peers` configured.
fn group_node(i: usize, cluster: &str, peers: &[SocketAddr]) -> Node {
    let config = NodeConfig {
        unicast: node_addr(i),
        incarnation: 100 + i as u64,
        group: Some(GroupConfig { group: GROUP, origin: 200 + i as u64, hello_interval: Duration::from_secs(2) }),
        replica: ReplicaConfig { peers: peers.to_vec(), discover: true, ..ReplicaConfig::default() },
        cluster: cluster.to_owned(),
        ..NodeConfig::default()
    };
    node_with(i as u64, config)
}

/// The peers a node's `stats` lists: address and whether up.
fn listed(sim: &mut Sim, node: usize) -> Vec<(SocketAddr, bool)> {
    let now = sim.now;
    let mut peers: Vec<_> = sim.node(node).stats(now).peers.iter().map(|p| (p.addr, p.up)).collect();
    peers.sort();
    peers
}

#[test]
fn brokers_of_another_cluster_on_the_group_are_ignored_and_counted() {
    let mut sim = Sim::new(3, NetConfig::default());
    sim.group = Some(GROUP);
    let (prod_a, prod_b) = (sim.add_node(node_addr(0), group_node(0, "prod", &[])), node_addr(1));
    sim.add_node(prod_b, group_node(1, "prod", &[]));
    let test = sim.add_node(node_addr(2), group_node(2, "test", &[]));
    sim.run_for(Duration::from_secs(10));
    assert_eq!(listed(&mut sim, prod_a), [(prod_b, true)], "the other prod broker only");
    assert_eq!(listed(&mut sim, test), [], "the test broker peers with nobody");
    let now = sim.now;
    // Five hellos in 10 s from each stranger.
    assert!(sim.node(prod_a).stats(now)["foreign_hellos"] >= 4);
    assert!(sim.node(test).stats(now)["foreign_hellos"] >= 8, "it hears both prod brokers");
    let client = client_addr(0);
    assert_eq!(sim.request(client, node_addr(test), b"register echo 4000").map(|id| id.len()), Some(37));
    sim.request(client, node_addr(prod_a), b"register web 8080").expect("an id");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.request(client, prod_b, b"query web").as_deref(), Some(&b"10.0.1.1:8080\n"[..]));
    assert_eq!(sim.request(client, prod_b, b"query echo").as_deref(), Some(&b"NOT FOUND\n"[..]), "not merged");
    assert_eq!(sim.request(client, node_addr(test), b"query web").as_deref(), Some(&b"NOT FOUND\n"[..]));
}

#[test]
fn discovered_peers_that_stay_down_are_forgotten_and_configured_ones_kept() {
    let mut sim = Sim::new(4, NetConfig::default());
    sim.group = Some(GROUP);
    let (found, configured) = (node_addr(1), node_addr(2));
    let a = sim.add_node(node_addr(0), group_node(0, "makler", &[configured]));
    let b = sim.add_node(found, group_node(1, "makler", &[]));
    let c = sim.add_node(configured, group_node(2, "makler", &[node_addr(0)]));
    sim.run_for(Duration::from_secs(5));
    assert_eq!(listed(&mut sim, a), [(found, true), (configured, true)]);
    sim.crash(b);
    sim.crash(c);
    sim.run_for(Duration::from_secs(20));
    assert_eq!(listed(&mut sim, a), [(found, false), (configured, false)], "down, not yet forgotten");
    sim.run_for(Duration::from_secs(15));
    assert_eq!(listed(&mut sim, a), [(configured, false)], "the one found on the group is forgotten");
    let now = sim.now;
    assert_eq!(sim.node(a).stats(now)["peer_count"], 1);
    // It comes back: found again on the group.
    sim.restart(b, group_node(1, "makler", &[]));
    sim.run_for(Duration::from_secs(3));
    assert_eq!(listed(&mut sim, a), [(found, true), (configured, false)]);
}

#[test]
fn a_peer_heard_only_on_the_group_is_kept_while_it_says_hello_and_then_forgotten() {
    // A broker whose hellos reach the group but whose unicast datagrams never arrive (a
    // firewall): listed as `last_heard_ms=never` while it says hello there, forgotten once it
    // stops, not kept forever.
    let mut sim = Sim::new(5, NetConfig::default());
    sim.group = Some(GROUP);
    let a = sim.add_node(node_addr(0), group_node(0, "makler", &[]));
    let ghost = node_addr(9);
    let mut hello = Vec::new();
    let body = crate::protocol::Multicast::ClusterHello { origin: 9, addr: ghost, cluster: "makler" };
    crate::protocol::binary::encode(0, &body, &mut hello);
    for _ in 0..20 {
        sim.send(ghost, GROUP, hello.clone());
        sim.run_for(Duration::from_secs(2));
    }
    let now = sim.now;
    let peers = sim.node(a).stats(now).peers;
    assert_eq!((peers.len(), peers[0].addr, peers[0].up, peers[0].last_heard_ms), (1, ghost, false, None));
    sim.run_for(Duration::from_secs(25));
    assert_eq!(listed(&mut sim, a), [(ghost, false)], "seen on the group 27 s ago");
    sim.run_for(Duration::from_secs(5));
    assert_eq!(listed(&mut sim, a), [], "forgotten");
}
