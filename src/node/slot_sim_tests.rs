//! Slot renewals on the simulated network (see [`replicate::slots`]): what keeping replicas
//! alive costs, and that it keeps them alive (and only them) through loss, reordering,
//! restarts, lost mappings and clients that move.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::protocol::Source;
use crate::sim::{NetConfig, Sim, node_with};

const TTL: Duration = Duration::from_secs(6);
const EVERY: Duration = Duration::from_secs(2);

fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 7000))
}

fn source(k: u32) -> Source {
    Source::Unicast(SocketAddr::from(([10, 3, (k >> 8) as u8, k as u8], 50000 + (k >> 16) as u16)))
}

fn endpoint(k: u32) -> SocketAddr {
    SocketAddr::from(([10, 1, (k >> 8) as u8, k as u8], 4000))
}

/// `n` brokers with `--ttl 6`; those in `old` do not read slots (as brokers before them).
fn cluster(seed: u64, net: NetConfig, n: usize, old: &[usize]) -> Sim {
    let mut sim = Sim::new(seed, net);
    for i in 0..n {
        let mut registry = crate::registry::Config { ttl: TTL, ..crate::registry::Config::default() };
        registry.limits.max_instances = 200_000;
        registry.limits.max_per_source = 200_000;
        let config = NodeConfig {
            unicast: node_addr(i),
            incarnation: 0xfeed_0000_0000_0000 + i as u64,
            registry,
            replica: ReplicaConfig {
                peers: (0..n).filter(|&j| j != i).map(node_addr).collect(),
                slot_renewals: !old.contains(&i),
                ..ReplicaConfig::default()
            },
            ..NodeConfig::default()
        };
        sim.add_node(node_addr(i), node_with(i as u64, config));
    }
    sim.run_for(Duration::from_secs(3));
    sim
}

/// Registers `count` instances at `node` (a service per 100).
fn register(sim: &mut Sim, node: usize, count: u32) -> Vec<uuid::Uuid> {
    let now = sim.now;
    let ids = (0..count)
        .map(|k| sim.node(node).registry.register(now, &format!("svc{}", k / 100), endpoint(k), source(k)).unwrap().id)
        .collect();
    sim.poke(node);
    sim.run_for(Duration::from_millis(50));
    ids
}

/// Heartbeats every lease every 2 s, spread evenly, for `duration`, each at the broker
/// `at(k)` says; every second, `check` looks at the cluster.
fn heartbeat(
    sim: &mut Sim,
    ids: &[uuid::Uuid],
    duration: Duration,
    at: impl Fn(usize) -> usize,
    mut check: impl FnMut(&mut Sim),
) {
    let step = Duration::from_millis(10);
    let steps = (EVERY.as_millis() / step.as_millis()) as usize;
    let per_step = ids.len().div_ceil(steps);
    let rounds = (duration.as_millis() / step.as_millis()) as usize;
    for round in 0..rounds {
        let now = sim.now;
        let first = (round % steps) * per_step;
        let mut touched = Vec::new();
        for (k, &id) in ids.iter().enumerate().skip(first).take(per_step) {
            let node = at(k);
            sim.node(node).registry.heartbeat(now, id).unwrap();
            touched.push(node);
        }
        touched.sort_unstable();
        touched.dedup();
        for node in touched {
            sim.poke(node);
        }
        sim.run_for(step);
        if round % 100 == 99 {
            check(sim);
        }
    }
}

fn counter(sim: &mut Sim, node: usize, name: &str) -> u64 {
    let now = sim.now;
    sim.node(node).stats(now)[name]
}

fn leases(sim: &mut Sim, node: usize) -> usize {
    sim.node(node).registry.lease_count()
}

/// Peer bytes, all brokers together, per instance per TTL per peer of the broker they
/// heartbeat at, over four TTLs of heartbeats every 2 s at broker 0.
fn renewal_bytes(instances: u32, old: &[usize]) -> f64 {
    let mut sim = cluster(7, NetConfig::default(), 3, old);
    let ids = register(&mut sim, 0, instances);
    // One TTL to settle (every lease confirmed at its slot), then four measured.
    heartbeat(&mut sim, &ids, TTL, |_| 0, |_| {});
    let before: u64 = (0..3).map(|i| counter(&mut sim, i, "peer_bytes_out")).sum();
    heartbeat(&mut sim, &ids, 4 * TTL, |_| 0, |_| {});
    let bytes: u64 = (0..3).map(|i| counter(&mut sim, i, "peer_bytes_out")).sum::<u64>() - before;
    for node in 0..3 {
        assert_eq!(leases(&mut sim, node), instances as usize, "node {node}");
        assert_eq!(sim.node(node).registry.expired_total(), 0, "node {node}");
    }
    bytes as f64 / f64::from(instances) / 4.0 / 2.0
}

#[test]
fn keeping_10_000_replicas_alive_costs_under_8_bytes_per_instance_per_ttl_per_peer() {
    let slots = renewal_bytes(10_000, &[]);
    let whole = renewal_bytes(10_000, &[1, 2]);
    println!(
        "3 brokers, 10,000 instances heartbeating every 2 s at one, TTL 6 s: {slots:.2} B per instance per TTL \
         per peer with slot renewals, {whole:.2} B with whole leases ({:.1}x less)",
        whole / slots
    );
    assert!(slots <= 8.0, "{slots}");
}

#[test]
fn nothing_expires_early_at_the_peers_under_loss_and_reordering() {
    let net = NetConfig {
        min_delay: Duration::from_micros(50),
        max_delay: Duration::from_millis(30),
        loss: 0.1,
        duplicate: 0.05,
    };
    for seed in [1, 2] {
        let mut sim = cluster(seed, net, 3, &[]);
        let ids = register(&mut sim, 0, 2_000);
        sim.run_for(Duration::from_secs(2));
        heartbeat(
            &mut sim,
            &ids,
            4 * TTL,
            |_| 0,
            |sim| {
                for node in 1..3 {
                    assert_eq!(leases(sim, node), 2_000, "seed {seed}, node {node}");
                }
            },
        );
        for node in 0..3 {
            assert_eq!(sim.node(node).registry.expired_total(), 0, "seed {seed}, node {node}");
        }
        assert!(counter(&mut sim, 0, "retransmits") > 0, "the network lost deltas");
    }
}

#[test]
fn registrations_and_removals_still_go_at_once() {
    let mut sim = cluster(3, NetConfig::default(), 3, &[]);
    let ids = register(&mut sim, 0, 100);
    heartbeat(&mut sim, &ids, TTL, |_| 0, |_| {});
    let now = sim.now;
    let id = sim.node(0).registry.register(now, "late", endpoint(9_999), source(9_999)).unwrap().id;
    sim.poke(0);
    sim.run_for(Duration::from_millis(5));
    for node in 1..3 {
        assert_eq!(leases(&mut sim, node), 101, "registered: node {node}");
    }
    let now = sim.now;
    sim.node(0).registry.deregister(now, id).unwrap();
    sim.node(0).registry.deregister(now, ids[7]).unwrap();
    sim.poke(0);
    sim.run_for(Duration::from_millis(5));
    for node in 1..3 {
        assert_eq!(leases(&mut sim, node), 99, "removed: node {node}");
    }
}

#[test]
fn slots_a_peer_lost_are_asked_for_and_heal() {
    let mut sim = cluster(4, NetConfig::default(), 3, &[]);
    let ids = register(&mut sim, 0, 500);
    heartbeat(&mut sim, &ids, TTL, |_| 0, |_| {});
    sim.node(1).replicator.forget_slots();
    heartbeat(&mut sim, &ids, 3 * TTL, |_| 0, |sim| assert_eq!(leases(sim, 1), 500));
    assert_eq!(sim.node(1).registry.expired_total(), 0);
}

#[test]
fn a_restarted_peer_catches_up_and_is_kept_alive() {
    let mut sim = cluster(5, NetConfig::default(), 3, &[]);
    let ids = register(&mut sim, 0, 500);
    heartbeat(&mut sim, &ids, TTL, |_| 0, |_| {});
    sim.crash(2);
    heartbeat(&mut sim, &ids, EVERY, |_| 0, |_| {});
    let mut registry = crate::registry::Config { ttl: TTL, ..crate::registry::Config::default() };
    registry.limits.max_per_source = 200_000;
    let config = NodeConfig {
        unicast: node_addr(2),
        incarnation: 0xbeef,
        registry,
        replica: ReplicaConfig { peers: vec![node_addr(0), node_addr(1)], ..ReplicaConfig::default() },
        ..NodeConfig::default()
    };
    sim.restart(2, node_with(2, config));
    heartbeat(&mut sim, &ids, 3 * TTL, |_| 0, |_| {});
    assert_eq!(leases(&mut sim, 2), 500);
    assert_eq!(sim.node(2).registry.expired_total(), 0);
}

#[test]
fn a_client_that_moves_to_another_broker_stays_alive_everywhere() {
    let mut sim = cluster(6, NetConfig::default(), 3, &[]);
    let ids = register(&mut sim, 0, 300);
    heartbeat(&mut sim, &ids, TTL, |_| 0, |_| {});
    // Half the clients move to broker 1, a third of them on to broker 2.
    heartbeat(&mut sim, &ids, 2 * TTL, |k| if k % 2 == 0 { 1 } else { 0 }, |_| {});
    heartbeat(
        &mut sim,
        &ids,
        2 * TTL,
        |k| if k % 2 == 0 { 1 + usize::from(k % 3 == 0) } else { 0 },
        |sim| {
            for node in 0..3 {
                assert_eq!(leases(sim, node), 300, "node {node}");
            }
        },
    );
    for node in 0..3 {
        assert_eq!(sim.node(node).registry.expired_total(), 0, "node {node}");
    }
}

#[test]
fn a_broker_that_does_not_read_slots_gets_whole_leases() {
    let mut sim = cluster(8, NetConfig::default(), 3, &[2]);
    let ids = register(&mut sim, 0, 300);
    heartbeat(&mut sim, &ids, 4 * TTL, |k| k % 3, |_| {});
    for node in 0..3 {
        assert_eq!(leases(&mut sim, node), 300, "node {node}");
        assert_eq!(sim.node(node).registry.expired_total(), 0, "node {node}");
    }
    // Nothing it could not read reached it.
    assert_eq!(counter(&mut sim, 2, "peer_rejected"), 0);
}

#[test]
fn a_short_partition_loses_nothing_and_a_long_one_heals() {
    let mut sim = cluster(9, NetConfig::default(), 3, &[]);
    let ids = register(&mut sim, 0, 500);
    heartbeat(&mut sim, &ids, TTL, |_| 0, |_| {});
    // 1.5 s apart: what is lost meanwhile is resent after (100 + 200 + 400 + 800 ms).
    sim.partition(node_addr(0), node_addr(1));
    heartbeat(&mut sim, &ids, Duration::from_millis(1_500), |_| 0, |_| {});
    sim.heal();
    heartbeat(&mut sim, &ids, 2 * TTL, |_| 0, |sim| assert_eq!(leases(sim, 1), 500));
    assert_eq!(sim.node(1).registry.expired_total(), 0);
    // 10 s alone: its peers go down (their confirmations are dropped), the copies run out on
    // its own clock, as before, and come back whole after the heal, then renewed by slot.
    sim.partition(node_addr(0), node_addr(1));
    sim.partition(node_addr(2), node_addr(1));
    heartbeat(&mut sim, &ids, Duration::from_secs(10), |_| 0, |_| {});
    assert_eq!(leases(&mut sim, 1), 0, "expired at the cut-off broker");
    sim.heal();
    heartbeat(&mut sim, &ids, TTL, |_| 0, |_| {});
    assert_eq!(leases(&mut sim, 1), 500, "back after the heal");
    let expired = sim.node(1).registry.expired_total();
    heartbeat(&mut sim, &ids, 2 * TTL, |_| 0, |sim| assert_eq!(leases(sim, 1), 500));
    assert_eq!(sim.node(1).registry.expired_total(), expired);
}
