//! Redundant brokers on the simulated network: replication, catch-up, reports, health checks
//! and fair rotation (the property test over random networks, failures and workloads is in
//! `random_cluster_tests`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::protocol;
use crate::sim::{NetConfig, Sim, node_with};

pub(super) const TTL: Duration = Duration::from_secs(5);

pub(super) fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 7000))
}

pub(super) fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, (i % 250) as u8 + 1], 40000 + (i / 250) as u16))
}

fn config(n: usize, incarnation: u64, probe_interval: Option<Duration>) -> NodeConfig {
    NodeConfig {
        // Every broker gets the same list, its own address included.
        replica: ReplicaConfig { peers: (0..n).map(node_addr).collect(), ..ReplicaConfig::default() },
        verify: VerifyConfig { probe_interval, ..VerifyConfig::default() },
        incarnation,
        ..NodeConfig::default()
    }
}

/// `n` brokers, each told of all; run until they have met.
pub(super) fn cluster(n: usize, seed: u64, net: NetConfig, probe_interval: Option<Duration>) -> Sim {
    let mut sim = Sim::new(seed, net);
    for i in 0..n {
        let mut config = config(n, i as u64, probe_interval);
        config.unicast = node_addr(i);
        sim.add_node(node_addr(i), node_with(i as u64, config));
    }
    sim.run_for(Duration::from_millis(1500));
    for i in 0..n {
        assert!(sim.node(i).is_complete(), "node {i} is complete");
    }
    sim
}

pub(super) fn restart(sim: &mut Sim, i: usize, n: usize, incarnation: u64, probe_interval: Option<Duration>) {
    let mut config = config(n, incarnation, probe_interval);
    config.unicast = node_addr(i);
    sim.restart(i, node_with(incarnation, config));
}

pub(super) fn text(sim: &mut Sim, client: usize, node: usize, line: &str) -> Option<String> {
    let reply = sim.request(client_addr(client), node_addr(node), line.as_bytes())?;
    Some(String::from_utf8(reply).unwrap().trim_end().to_owned())
}

pub(super) fn live(sim: &mut Sim, node: usize, service: &str) -> Vec<SocketAddr> {
    let now = sim.now;
    let mut all: Vec<_> = sim.node(node).registry.query(now, service).map(Iterator::collect).unwrap_or_default();
    all.sort();
    all
}

pub(super) fn stats(sim: &mut Sim, node: usize) -> BrokerStats {
    let now = sim.now;
    sim.node(node).stats(now)
}

pub(super) fn quiet() -> NetConfig {
    NetConfig { min_delay: Duration::from_micros(50), max_delay: Duration::from_micros(300), ..NetConfig::default() }
}

#[test]
fn a_registration_anywhere_is_seen_everywhere_with_the_same_id() {
    let mut sim = cluster(3, 1, quiet(), None);
    let id = text(&mut sim, 0, 0, "register echo 4000").unwrap();
    sim.run_for(Duration::from_millis(5));
    let endpoint: SocketAddr = "10.0.1.1:4000".parse().unwrap();
    for node in 0..3 {
        assert_eq!(live(&mut sim, node, "echo"), [endpoint], "node {node}");
    }
    // The server may heartbeat or deregister at any broker.
    assert_eq!(text(&mut sim, 0, 1, &format!("heartbeat {id}")).as_deref(), Some("OK"));
    assert_eq!(text(&mut sim, 0, 2, "register echo 4000"), Some(id.clone()), "the same source gets the same id");
    assert_eq!(text(&mut sim, 0, 2, &format!("deregister {id}")).as_deref(), Some("OK"));
    sim.run_for(Duration::from_millis(5));
    for node in 0..3 {
        assert!(live(&mut sim, node, "echo").is_empty(), "node {node}");
        assert_eq!(text(&mut sim, 1, node, "query echo").as_deref(), Some("NOT FOUND"));
    }
}

#[test]
fn renewals_at_one_broker_keep_a_lease_alive_at_all() {
    let mut sim = cluster(3, 2, quiet(), None);
    let id = text(&mut sim, 0, 0, "register echo 4000").unwrap();
    for _ in 0..30 {
        sim.run_for(TTL / 3);
        assert_eq!(text(&mut sim, 0, 0, &format!("heartbeat {id}")).as_deref(), Some("OK"));
    }
    for node in 0..3 {
        assert_eq!(live(&mut sim, node, "echo").len(), 1, "node {node} after 50 s");
    }
    // Heartbeats stop: every broker lets it expire on its own clock.
    sim.run_for(TTL + Duration::from_millis(500));
    for node in 0..3 {
        assert!(live(&mut sim, node, "echo").is_empty(), "node {node}");
    }
    let sent: u64 = (0..3).map(|i| stats(&mut sim, i)["replicated_out"]).sum();
    assert!(sent < 3 * 2 * 40, "renewals are not sent more often than they happen ({sent})");
}

#[test]
fn deltas_lost_on_the_way_are_resent() {
    let net = NetConfig { loss: 0.3, ..quiet() };
    let mut sim = cluster(3, 3, net, None);
    for client in 0..40 {
        sim.send(client_addr(client), node_addr(0), format!("register s{client} 4000").into_bytes());
    }
    // Retransmissions: 100, 200, 400, 800 ms.
    sim.run_for(Duration::from_millis(1600));
    let count = |sim: &mut Sim, node| (0..40).filter(|c| !live(sim, node, &format!("s{c}")).is_empty()).count();
    let registered = count(&mut sim, 0);
    assert!(registered > 20, "{registered}");
    for node in 1..3 {
        assert_eq!(count(&mut sim, node), registered, "node {node}");
    }
    assert!(stats(&mut sim, 0)["retransmits"] > 0);
}

#[test]
fn a_restarted_broker_catches_up_without_anyone_registering_again() {
    let n = 3;
    let mut sim = cluster(n, 4, quiet(), None);
    let mut ids = Vec::new();
    for client in 0..2000 {
        let node = client % n;
        let line = format!("register s{} {}", client % 100, 4000 + client);
        ids.push(sim.request(client_addr(client), node_addr(node), line.as_bytes()).unwrap());
    }
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.node(2).registry.lease_count(), 2000);
    sim.crash(2);
    sim.run_for(Duration::from_secs(1));
    restart(&mut sim, 2, n, 77, None);
    assert!(!sim.node(2).is_complete());
    // While it catches up, it says so instead of a plain NOT FOUND.
    let early = text(&mut sim, 0, 2, "query nothing-here").unwrap();
    let restarted = sim.now;
    while !sim.node(2).is_complete() {
        assert!(sim.now - restarted < Duration::from_secs(1), "caught up within a second");
        sim.run_for(Duration::from_millis(1));
    }
    assert_eq!(early, "NOT FOUND (catching up)");
    assert_eq!(sim.node(2).registry.lease_count(), 2000);
    assert_eq!(text(&mut sim, 0, 2, "query nothing-here").as_deref(), Some("NOT FOUND"));
    // The servers' ids work at the restarted broker.
    let id = String::from_utf8(ids[7].clone()).unwrap();
    assert_eq!(text(&mut sim, 7, 2, &format!("heartbeat {}", id.trim())).as_deref(), Some("OK"));
}

#[test]
fn a_report_removes_a_dead_instance_everywhere_and_keeps_a_live_one() {
    let mut sim = cluster(3, 5, quiet(), None);
    let alive: SocketAddr = "10.0.1.1:4001".parse().unwrap();
    sim.listening.insert(alive);
    text(&mut sim, 0, 0, "register echo 4000 check=tcp").unwrap();
    text(&mut sim, 0, 0, "register echo 4001 check=tcp").unwrap();
    sim.run_for(Duration::from_millis(5));
    assert_eq!(text(&mut sim, 1, 1, "report echo 10.0.1.1:4000").as_deref(), Some("OK"));
    assert_eq!(text(&mut sim, 1, 2, "report echo 10.0.1.1:4001").as_deref(), Some("OK"));
    assert_eq!(text(&mut sim, 1, 2, "report echo 10.0.1.1:4999").as_deref(), Some("NOT FOUND"));
    assert!(text(&mut sim, 1, 2, "report echo nonsense").unwrap().starts_with("ERROR bad endpoint"));
    sim.run_for(Duration::from_millis(20));
    for node in 0..3 {
        assert_eq!(live(&mut sim, node, "echo"), [alive], "node {node}");
    }
    let removed: u64 = (0..3).map(|i| stats(&mut sim, i)["removed_unreachable"]).sum();
    assert_eq!(removed, 1, "removed once, by its owner; the others follow its removal");
}

#[test]
fn many_reports_of_one_instance_cost_one_probe_per_cooldown() {
    let mut sim = cluster(3, 6, quiet(), None);
    let endpoint: SocketAddr = "10.0.1.1:4000".parse().unwrap();
    sim.listening.insert(endpoint);
    text(&mut sim, 0, 0, "register echo 4000 check=tcp").unwrap();
    sim.run_for(Duration::from_millis(5));
    let probes = |sim: &mut Sim| (0..3).map(|i| stats(sim, i)["probes"]).sum::<u64>();
    for round in 0..3 {
        for client in 0..30 {
            assert_eq!(text(&mut sim, client, client % 3, "report echo 10.0.1.1:4000").as_deref(), Some("OK"));
        }
        sim.run_for(Duration::from_millis(100));
        assert_eq!(probes(&mut sim), 1, "round {round}: 90 reports at 3 brokers, one probe");
    }
    sim.run_for(VerifyConfig::default().report_cooldown);
    text(&mut sim, 0, 1, "report echo 10.0.1.1:4000").unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(probes(&mut sim), 2, "after the cooldown, one more");
    assert_eq!(live(&mut sim, 0, "echo"), [endpoint]);
}

#[test]
fn reports_per_source_are_capped() {
    let mut sim = cluster(1, 7, quiet(), None);
    sim.listening.insert("10.0.1.1:4000".parse().unwrap());
    text(&mut sim, 0, 0, "register echo 4000 check=tcp").unwrap();
    let rate = VerifyConfig::default().reports_per_second as usize;
    let answers: Vec<String> =
        (0..3 * rate).map(|_| text(&mut sim, 1, 0, "report echo 10.0.1.1:4000").unwrap()).collect();
    let refused = answers.iter().filter(|a| a.starts_with("ERROR too many reports from this source")).count();
    assert!(refused >= rate / 2, "{refused} refused of {}", answers.len());
    assert_eq!(text(&mut sim, 2, 0, "report echo 10.0.1.1:4000").as_deref(), Some("OK"), "another source is not");
}

#[test]
fn health_checks_split_instances_between_brokers_and_remove_the_dead() {
    let interval = Duration::from_secs(1);
    let mut sim = cluster(3, 8, quiet(), Some(interval));
    for port in 0..60u16 {
        let endpoint = SocketAddr::from(([10, 0, 1, 1], 5000 + port));
        if port % 2 == 0 {
            sim.listening.insert(endpoint);
        }
        text(&mut sim, 0, usize::from(port % 3), &format!("register web {} check=tcp", 5000 + port)).unwrap();
    }
    sim.run_for(Duration::from_millis(50));
    let before: Vec<u64> = (0..3).map(|i| stats(&mut sim, i)["probes"]).collect();
    sim.run_for(interval * 3);
    for node in 0..3 {
        let listed = live(&mut sim, node, "web");
        assert_eq!(listed.len(), 30, "node {node}: the dead half is gone");
        assert!(listed.iter().all(|e| sim.listening.contains(e)));
    }
    let probes: Vec<u64> = (0..3).map(|i| stats(&mut sim, i)["probes"] - before[i]).collect();
    let total: u64 = probes.iter().sum();
    // 60 instances, then 30, over three rounds: each probed by one broker, not three.
    assert!((90..=150).contains(&total), "{probes:?}");
    assert!(probes.iter().all(|&p| p > total / 6), "every broker takes a share: {probes:?}");
}

#[test]
fn a_broker_alone_keeps_serving_and_takes_its_peers_back() {
    let n = 3;
    let mut sim = cluster(n, 9, quiet(), None);
    sim.crash(1);
    sim.crash(2);
    sim.run_for(Duration::from_secs(3));
    assert_eq!(stats(&mut sim, 0)["peers_up"], 0);
    assert_eq!(text(&mut sim, 0, 0, "register echo 4000").map(|id| id.len()), Some(36));
    assert_eq!(text(&mut sim, 0, 0, "query echo").as_deref(), Some("10.0.1.1:4000"));
    restart(&mut sim, 1, n, 11, None);
    restart(&mut sim, 2, n, 12, None);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(stats(&mut sim, 0)["peers_up"], 2);
    for node in 1..3 {
        assert_eq!(live(&mut sim, node, "echo").len(), 1, "node {node} caught up");
    }
}

#[test]
fn replicas_hand_out_each_instance_first_about_equally() {
    let mut sim = cluster(3, 10, quiet(), None);
    for port in 0..4 {
        text(&mut sim, 0, 0, &format!("register web {}", 4000 + port)).unwrap();
    }
    sim.run_for(Duration::from_millis(5));
    let mut firsts: HashMap<String, usize> = HashMap::new();
    let queries = 3000;
    for q in 0..queries {
        let node = sim.rng.below(3) as usize;
        let answer = text(&mut sim, q % 50, node, "query web").unwrap();
        *firsts.entry(answer.split(' ').next().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(firsts.len(), 4);
    for (first, count) in firsts {
        let share = count as f64 / queries as f64;
        assert!((share - 0.25).abs() < 0.02, "{first}: {share}");
    }
}

#[test]
fn with_a_key_peers_replicate_sealed_and_strangers_are_refused() {
    let key = seal::Key::from_secret(b"the cluster's shared secret").unwrap();
    let mut sim = Sim::new(11, quiet());
    for i in 0..3 {
        let mut config = config(3, i as u64, None);
        config.unicast = node_addr(i);
        config.key = Some(key);
        sim.add_node(node_addr(i), node_with(i as u64, config));
    }
    sim.run_for(Duration::from_millis(1500));
    text(&mut sim, 0, 0, "register echo 4000 check=tcp").unwrap();
    sim.run_for(Duration::from_millis(5));
    assert_eq!(live(&mut sim, 2, "echo").len(), 1, "sealed deltas arrive");

    // A stranger speaking from a peer's address: unsealed, or sealed with another key.
    let rejected = stats(&mut sim, 1)["peer_rejected"];
    let lease = peer::Lease {
        id: Uuid::from_u128(666),
        service: "evil",
        endpoint: "10.6.6.6:66".parse().unwrap(),
        source: protocol::Source::Unicast("10.6.6.6:66".parse().unwrap()),
        ttl_ms: 5000,
        aliases: Vec::new(),
    };
    let frame =
        peer::PeerFrame { node: 2, body: peer::Peer::Delta { seq: 1, entries: vec![peer::Entry::Upsert(lease)] } };
    let mut plain = Vec::new();
    peer::encode(&frame, &mut plain);
    let mut forged = Vec::new();
    let wrong = seal::Key::from_secret(b"a guess at the shared secret").unwrap();
    seal::Sealer::new(wrong, 99).seal(&plain, seal::unix_ms(std::time::SystemTime::now()), &mut forged);
    sim.send(node_addr(2), node_addr(1), plain);
    sim.send(node_addr(2), node_addr(1), forged);
    sim.run_for(Duration::from_millis(5));
    assert!(live(&mut sim, 1, "evil").is_empty());
    assert_eq!(stats(&mut sim, 1)["peer_rejected"], rejected + 2);
}

#[test]
fn an_instance_registered_again_where_a_dead_one_was_removed_is_checked_anew() {
    let mut sim = cluster(1, 12, quiet(), None);
    for round in 0..3 {
        text(&mut sim, 0, 0, "register echo 4000 check=tcp").unwrap();
        assert_eq!(text(&mut sim, 1, 0, "report echo 10.0.1.1:4000").as_deref(), Some("OK"), "round {round}");
        sim.run_for(Duration::from_millis(20));
        assert!(live(&mut sim, 0, "echo").is_empty(), "round {round}: removed within the cooldown");
    }
    assert_eq!(stats(&mut sim, 0)["probes"], 3);
}
