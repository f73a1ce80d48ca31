//! Anti-entropy on the simulated network (see [`crate::sim`] and [`replicate::entropy`]):
//! views converge after partitions and losses without waiting for the TTL, and cost little in
//! sync.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::core::Core;
use crate::protocol::Source;
use crate::protocol::seal::Key;
use crate::registry::{Cursor, LeaseView};
use crate::sim::{NetConfig, Sim, node_with};

fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 7000))
}

/// A client for the `k`th request: many addresses, so that no per-source quota is hit.
fn client(k: u32) -> SocketAddr {
    SocketAddr::from(([10, 2, (k >> 8) as u8, k as u8], 40000))
}

/// A broker of `n` with the others as peers, `--ttl 600`, no heartbeats, no probes.
fn broker(i: usize, n: usize, key: Option<Key>, digest_interval: Duration) -> Node {
    let peers = (0..n).filter(|&j| j != i).map(node_addr).collect();
    let mut registry = crate::registry::Config { ttl: Duration::from_secs(600), ..crate::registry::Config::default() };
    registry.limits.max_instances = 200_000;
    let config = NodeConfig {
        unicast: node_addr(i),
        // As large as a random one, so datagrams are as long as in a real run.
        incarnation: 0xfeed_0000_0000_0000 + i as u64,
        registry,
        replica: ReplicaConfig { peers, digest_interval, ..ReplicaConfig::default() },
        key,
        ..NodeConfig::default()
    };
    node_with(i as u64, config)
}

fn cluster(seed: u64, net: NetConfig, n: usize, key: Option<Key>, digest_interval: Duration) -> Sim {
    let mut sim = Sim::new(seed, net);
    for i in 0..n {
        sim.add_node(node_addr(i), broker(i, n, key, digest_interval));
    }
    sim.run_for(Duration::from_secs(3));
    sim
}

/// The `k`th preloaded lease: its id and identity.
fn preloaded(k: u32) -> (uuid::Uuid, String, SocketAddr, Source) {
    let service = format!("svc{}", k % 97);
    let endpoint = SocketAddr::from(([10, 1, (k >> 8) as u8, k as u8], 4000 + (k % 7) as u16));
    let source = Source::Unicast(SocketAddr::from(([10, 3, (k >> 8) as u8, k as u8], 50000 + (k >> 16) as u16)));
    (uuid::Uuid::from_u128(0xaaaa_0000 + u128::from(k)), service, endpoint, source)
}

/// Puts the same `count` leases (ten minutes left) into every node, as if replicated long ago.
fn preload(sim: &mut Sim, count: u32) {
    let now = sim.now;
    for i in 0..sim.nodes.len() {
        let node = sim.node(i);
        for k in 0..count {
            let (id, service, endpoint, source) = preloaded(k);
            let view = LeaseView {
                id,
                service: &service,
                endpoint,
                source,
                ttl_left: Duration::from_secs(600),
                aliases: &[],
                check: crate::protocol::Check::None,
                meta: None,
            };
            node.registry.apply_remote(now, view);
        }
        node.handle_timeout(now);
    }
}

type Identity = (String, SocketAddr, Source);

/// A node's view: every lease's (service, endpoint, source).
fn view(sim: &mut Sim, node: usize) -> BTreeSet<Identity> {
    let now = sim.now;
    let mut all = BTreeSet::new();
    let mut cursor = Some(Cursor::START);
    while let Some(at) = cursor {
        cursor = sim.node(node).registry.page(now, at, |l| {
            all.insert((l.service.to_owned(), l.endpoint, l.source));
            true
        });
    }
    all
}

fn counter(sim: &mut Sim, node: usize, name: &str) -> u64 {
    let now = sim.now;
    sim.node(node).stats(now)[name]
}

/// Runs until every node has the same view, for at most `limit`; returns how long it took.
fn converge(sim: &mut Sim, limit: Duration) -> Option<Duration> {
    let start = sim.now;
    while sim.now < start + limit {
        let first = view(sim, 0);
        if (1..sim.nodes.len()).all(|i| view(sim, i) == first) {
            return Some(sim.now - start);
        }
        sim.run_for(Duration::from_millis(100));
    }
    None
}

/// Sends a text request from `from` to node `node` until it is answered (as a client
/// retransmits on a lossy network).
fn ask(sim: &mut Sim, from: SocketAddr, node: usize, line: &str) -> String {
    for _ in 0..10 {
        // A duplicated answer to an earlier request is not this one's.
        sim.take_inbox(from);
        if let Some(answer) = sim.request(from, node_addr(node), line.as_bytes()) {
            return String::from_utf8(answer).unwrap();
        }
    }
    panic!("no answer to {line}");
}

/// Three brokers, 10,000 instances, a 10 s partition with registrations and deregistrations on
/// both sides: identical views within 5 s of the heal, the deregistered ones gone everywhere.
fn partition_heals(seed: u64, net: NetConfig) {
    partition_heals_at(seed, net, 10_000, Duration::from_secs(5));
}

/// The same with `instances` preloaded, converging within `bound`.
fn partition_heals_at(seed: u64, net: NetConfig, instances: u32, bound: Duration) {
    let mut sim = cluster(seed, net, 3, None, Duration::from_secs(1));
    let net = sim.net;
    preload(&mut sim, instances);
    // (Digests sent before the preload and received after it differ, once.)
    sim.run_for(Duration::from_secs(2));
    let before = counter(&mut sim, 0, "digest_mismatches");
    sim.run_for(Duration::from_secs(3));
    assert_eq!(counter(&mut sim, 0, "digest_mismatches"), before, "in sync");
    let (a, c) = (0, 2);
    sim.partition(node_addr(a), node_addr(c));
    sim.partition(node_addr(1), node_addr(c));
    let mut registered = Vec::new();
    let mut deregistered = Vec::new();
    for k in 0..50u32 {
        for (side, base) in [(a, 0u32), (c, 50)] {
            let from = client(base + k);
            let id = ask(&mut sim, from, side, &format!("register late{k} {}", 5000 + base + k));
            assert_eq!(id.len(), 37, "{id}");
            registered.push((
                format!("late{k}"),
                SocketAddr::new(from.ip(), (5000 + base + k) as u16),
                Source::Unicast(from),
            ));
            let (old, service, endpoint, source) = preloaded(k * 100 + base);
            // (On a lossy network the first answer may be lost, and the retry not find it.)
            let answer = ask(&mut sim, client(9000), side, &format!("deregister {old}"));
            assert!(net.loss > 0.0 || answer == "OK\n", "{answer}");
            deregistered.push((service, endpoint, source));
        }
        sim.run_for(Duration::from_millis(200));
    }
    assert_ne!(view(&mut sim, a), view(&mut sim, c), "the partition kept them apart");
    let bytes_before: u64 = (0..3).map(|i| counter(&mut sim, i, "peer_bytes_out")).sum();
    sim.heal();
    let took = converge(&mut sim, bound).unwrap_or_else(|| panic!("seed {seed}: no convergence in {bound:?}"));
    let bytes: u64 = (0..3).map(|i| counter(&mut sim, i, "peer_bytes_out")).sum::<u64>() - bytes_before;
    let all = view(&mut sim, 0);
    for identity in &registered {
        assert!(all.contains(identity), "seed {seed}: {identity:?} missing");
    }
    for identity in &deregistered {
        assert!(!all.contains(identity), "seed {seed}: {identity:?} deregistered but listed");
    }
    assert_eq!(all.len(), instances as usize);
    let pushed: u64 = (0..3).map(|i| counter(&mut sim, i, "repairs_pushed")).sum();
    let removed: u64 = (0..3).map(|i| counter(&mut sim, i, "repairs_removed")).sum();
    assert!(pushed > 0 && removed > 0, "pushed {pushed}, removed {removed}");
    println!(
        "seed {seed}, {instances} instances: converged {took:?} after the heal, {bytes} peer bytes sent meanwhile \
         (all three); pushed {pushed}, removals sent back {removed}"
    );
}

#[test]
fn a_partition_heals_within_5_s_at_100_000_instances() {
    // 390 leases a bucket: three datagrams of element hashes for each bucket that differs.
    partition_heals_at(6, NetConfig::default(), 100_000, Duration::from_secs(5));
}

#[test]
fn a_partition_with_changes_on_both_sides_heals_within_5_s() {
    partition_heals(1, NetConfig::default());
}

#[test]
fn a_partition_heals_over_a_lossy_reordering_network() {
    let net = NetConfig {
        min_delay: Duration::from_micros(100),
        max_delay: Duration::from_millis(30),
        loss: 0.05,
        duplicate: 0.02,
    };
    partition_heals(2, net);
}

#[test]
fn a_peer_back_under_the_same_incarnation_and_a_missed_delta_are_repaired() {
    let mut sim = cluster(3, NetConfig::default(), 2, None, Duration::from_secs(1));
    preload(&mut sim, 1000);
    // Cut off for 1.8 s: the peer is never taken as down, but every retry of the delta is lost.
    sim.partition(node_addr(0), node_addr(1));
    assert_eq!(ask(&mut sim, client(1), 0, "register missed 4000").len(), 37);
    sim.run_for(Duration::from_millis(1800));
    sim.heal();
    assert_eq!(counter(&mut sim, 0, "retransmits"), 4, "the delta was given up");
    assert!(converge(&mut sim, Duration::from_secs(3)).is_some(), "the missed delta is repaired");
    // Cut off for 5 s: the peer goes down and comes back as the same incarnation (no catch-up).
    sim.partition(node_addr(0), node_addr(1));
    let (old, ..) = preloaded(7);
    assert_eq!(ask(&mut sim, client(2), 1, &format!("deregister {old}")), "OK\n");
    assert_eq!(ask(&mut sim, client(3), 1, "register back 4001").len(), 37);
    sim.run_for(Duration::from_secs(5));
    let now = sim.now;
    let peers = sim.node(0).stats(now).peers;
    assert!(!peers[0].up, "down meanwhile");
    sim.heal();
    assert!(converge(&mut sim, Duration::from_secs(4)).is_some(), "repaired without a restart");
    let (_, service, endpoint, source) = preloaded(7);
    assert!(!view(&mut sim, 0).contains(&(service, endpoint, source)));
    assert_eq!(view(&mut sim, 0).len(), 1001);
}

/// Peer bytes per second each broker sends each peer, in sync, over 20 s (sealed).
fn steady_bytes_per_peer(instances: u32, digest_interval: Duration) -> f64 {
    let key = Key::from_secret(b"a shared secret of the two sites").unwrap();
    let mut sim = cluster(4, NetConfig::default(), 2, Some(key), digest_interval);
    preload(&mut sim, instances);
    sim.run_for(Duration::from_secs(3));
    let before = counter(&mut sim, 0, "peer_bytes_out");
    let mismatches = counter(&mut sim, 0, "digest_mismatches") + counter(&mut sim, 1, "digest_mismatches");
    sim.run_for(Duration::from_secs(20));
    let now_mismatches = counter(&mut sim, 0, "digest_mismatches") + counter(&mut sim, 1, "digest_mismatches");
    assert_eq!(now_mismatches, mismatches, "in sync");
    (counter(&mut sim, 0, "peer_bytes_out") - before) as f64 / 20.0
}

#[test]
fn in_sync_the_digests_cost_under_100_bytes_per_second_per_peer() {
    let hellos_only = steady_bytes_per_peer(10_000, Duration::ZERO);
    let at_10k = steady_bytes_per_peer(10_000, Duration::from_secs(1));
    let at_100k = steady_bytes_per_peer(100_000, Duration::from_secs(1));
    println!(
        "per peer, sealed: hellos {hellos_only} B/s; with digests {at_10k} B/s at 10,000, {at_100k} B/s at 100,000"
    );
    assert!(at_10k - hellos_only <= 100.0, "{at_10k} - {hellos_only}");
    assert!(at_100k - hellos_only <= 100.0, "{at_100k} - {hellos_only}");
    assert!(at_100k - at_10k <= 2.0, "the size of the table barely matters: {at_10k} {at_100k}");
}

#[test]
fn partitions_heal_over_lossy_networks_for_other_seeds() {
    let net = NetConfig {
        min_delay: Duration::from_micros(100),
        max_delay: Duration::from_millis(30),
        loss: 0.1,
        duplicate: 0.05,
    };
    for seed in 10..14 {
        partition_heals(seed, net);
    }
}

#[test]
fn churn_without_loss_starts_no_repair() {
    // Registrations and deregistrations at all brokers, ten a second: a digest may cross a delta
    // (one mismatch), but two in a row take a real difference, so nothing is repaired.
    let mut sim = cluster(5, NetConfig::default(), 3, None, Duration::from_secs(1));
    preload(&mut sim, 1000);
    sim.run_for(Duration::from_secs(2));
    let mut ids = Vec::new();
    for k in 0..300u32 {
        let node = (k % 3) as usize;
        let id = ask(&mut sim, client(k), node, &format!("register churn {}", 6000 + k));
        ids.push((node, id.trim().to_owned()));
        if k % 2 == 1 {
            let (at, id) = ids.remove(0);
            assert_eq!(ask(&mut sim, client(k - 1), (at + 1) % 3, &format!("deregister {id}")), "OK\n");
        }
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_secs(3));
    let mismatches: u64 = (0..3).map(|i| counter(&mut sim, i, "digest_mismatches")).sum();
    let pushed: u64 = (0..3).map(|i| counter(&mut sim, i, "repairs_pushed")).sum();
    println!("30 s of churn: {mismatches} mismatching digests, {pushed} leases pushed");
    assert_eq!(pushed, 0);
    assert!(converge(&mut sim, Duration::from_millis(1)).is_some(), "in sync");
}
