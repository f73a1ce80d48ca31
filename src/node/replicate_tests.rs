//! Redundant brokers on the simulated network: replication, catch-up, reports, health checks
//! and fair rotation, then a property test over random networks, failures and workloads.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::protocol;
use crate::sim::{NetConfig, Sim, node_with};

const TTL: Duration = Duration::from_secs(5);

fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 7000))
}

fn client_addr(i: usize) -> SocketAddr {
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

/// A server of the property test: registers at a broker, heartbeats every third of the TTL,
/// moves to another broker when one does not answer or is catching up, registers again on a
/// plain `NOT FOUND` (as the client library does).
struct Server {
    source: SocketAddr,
    endpoint: SocketAddr,
    id: Option<String>,
    broker: usize,
    state: State,
    next: Instant,
    awaiting: bool,
    /// The verb of the last request sent.
    sent: &'static str,
    /// After it was removed: what each node (by incarnation) showed at the checks: `true`
    /// once it was listed, `false` once it was then no longer.
    seen: HashMap<(usize, u64), bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Alive,
    /// Stopped heartbeating (killed).
    Dead,
    /// Deregistering; once a broker answered `OK`, when.
    Gone(Option<Instant>),
    /// Deregistered at a broker that did not know it (`NOT FOUND`): it expires elsewhere.
    Lapsed,
}

fn run_random_cluster(seed: u64, n: usize) {
    let net = NetConfig {
        min_delay: Duration::from_micros(100),
        max_delay: Duration::from_millis(30),
        loss: 0.05,
        duplicate: 0.02,
    };
    let mut sim = cluster(n, seed, net, None);
    let mut incarnation = 100;
    let mut servers: Vec<Server> = (0..20)
        .map(|i| Server {
            source: client_addr(i),
            endpoint: SocketAddr::new(client_addr(i).ip(), 4000 + i as u16),
            id: None,
            broker: i % n,
            state: State::Alive,
            next: sim.now,
            awaiting: false,
            sent: "",
            seen: HashMap::new(),
        })
        .collect();
    let step = Duration::from_millis(50);
    let end_of_chaos = sim.now + Duration::from_secs(20);
    let mut partitioned_until = sim.now;
    let mut last_partition_end = sim.now;
    // The last partition, heal, crash or restart: removals reach every broker only when the
    // brokers' views of each other have been stable around them.
    let mut last_disturbance = sim.now;
    while sim.now < end_of_chaos + TTL + Duration::from_secs(3) {
        let now = sim.now;
        let chaos = now < end_of_chaos;
        // Failures: partitions, crashes and restarts, servers dying or leaving.
        if chaos && now >= partitioned_until && sim.rng.chance(0.01) {
            let victim = sim.rng.below(n as u64) as usize;
            for other in (0..n).filter(|&o| o != victim) {
                sim.partition(node_addr(victim), node_addr(other));
                last_disturbance = now;
            }
            partitioned_until = now + sim.rng.between(Duration::from_millis(500), Duration::from_secs(3));
        }
        if now >= partitioned_until && partitioned_until > last_partition_end {
            sim.heal();
            last_partition_end = partitioned_until;
            last_disturbance = now;
        }
        if !chaos {
            // The network heals: no partition, no loss, no duplicates.
            sim.heal();
            sim.net.loss = 0.0;
            sim.net.duplicate = 0.0;
        }
        if chaos && sim.rng.chance(0.004) {
            let victim = sim.rng.below(n as u64) as usize;
            if sim.is_up(victim) {
                sim.crash(victim);
                last_disturbance = now;
            }
        }
        for node in 0..n {
            if !sim.is_up(node) && sim.rng.chance(if chaos { 0.02 } else { 1.0 }) {
                incarnation += 1;
                restart(&mut sim, node, n, incarnation, None);
                last_disturbance = now;
            }
        }
        if chaos && sim.rng.chance(0.02) {
            let i = sim.rng.below(servers.len() as u64) as usize;
            if servers[i].state == State::Alive {
                servers[i].state = if sim.rng.chance(0.5) { State::Dead } else { State::Gone(None) };
                servers[i].awaiting = false;
                // A server that leaves says so at once, maybe right after a heartbeat elsewhere.
                servers[i].next = now;
            }
        }
        // Servers act.
        for (i, server) in servers.iter_mut().enumerate() {
            for (from, reply) in sim.take_inbox(server.source) {
                if from != node_addr(server.broker) {
                    continue;
                }
                server.awaiting = false;
                server.next = now + TTL / 3;
                let reply = String::from_utf8(reply).unwrap();
                if std::env::var("SIM_DEBUG").is_ok_and(|v| v == server.endpoint.to_string()) {
                    eprintln!("{:?} reply {reply:?} from {from}", now - sim.start);
                }
                match (reply.trim_end(), server.state) {
                    // An answer to an earlier heartbeat is not the deregistration's.
                    (_, State::Gone(None)) if server.sent != "deregister" => {}
                    // The text form's `OK` does not say what it answers: a late or duplicated
                    // answer to a heartbeat may arrive after a deregister that was lost. Only a
                    // broker that no longer lists the instance has taken the deregistration (one
                    // that crashed since cannot say: ask again).
                    ("OK", State::Gone(None)) => {
                        let service = format!("s{}", i % 4);
                        if !sim.is_up(server.broker)
                            || live(&mut sim, server.broker, &service).contains(&server.endpoint)
                        {
                            server.next = now;
                        } else {
                            server.state = State::Gone(Some(now));
                        }
                    }
                    ("NOT FOUND (catching up)", _) => {
                        server.broker = (server.broker + 1) % n;
                        server.next = now;
                    }
                    ("NOT FOUND", State::Gone(None)) => server.state = State::Lapsed,
                    ("NOT FOUND", _) => {
                        server.id = None;
                        server.next = now;
                    }
                    (id, State::Alive) if id.len() == 36 => server.id = Some(id.to_owned()),
                    _ => {}
                }
            }
            if now < server.next || matches!(server.state, State::Dead | State::Lapsed | State::Gone(Some(_))) {
                continue;
            }
            if server.awaiting {
                // No answer: try the next broker.
                server.broker = (server.broker + 1) % n;
            } else if matches!(server.state, State::Gone(None)) || sim.rng.chance(0.1) {
                // A server may heartbeat or deregister at any broker.
                server.broker = sim.rng.below(n as u64) as usize;
            }
            let line = match (&server.state, &server.id) {
                (State::Gone(None), Some(id)) => format!("deregister {id}"),
                (State::Gone(None), None) => {
                    server.state = State::Dead;
                    continue;
                }
                (_, Some(id)) => format!("heartbeat {id}"),
                (_, None) => format!("register s{} {}", i % 4, server.endpoint.port()),
            };
            if std::env::var("SIM_DEBUG").is_ok_and(|v| v == server.endpoint.to_string()) {
                let listed: Vec<bool> = (0..n)
                    .map(|node| {
                        sim.is_up(node) && live(&mut sim, node, &format!("s{}", i % 4)).contains(&server.endpoint)
                    })
                    .collect();
                eprintln!(
                    "{:?} send {line:?} to {} awaiting={} listed={listed:?} up={:?}",
                    sim.now - sim.start,
                    server.broker,
                    server.awaiting,
                    (0..n).map(|k| sim.is_up(k)).collect::<Vec<_>>()
                );
            }
            server.awaiting = true;
            server.sent = line.split(' ').next().map_or("", |verb| match verb {
                "deregister" => "deregister",
                "heartbeat" => "heartbeat",
                _ => "register",
            });
            // Without an answer, it asks the next broker soon (the client library retransmits
            // after 100, 200, 400 ms); with one, at the next heartbeat.
            server.next = now + Duration::from_millis(300);
            let (source, broker) = (server.source, node_addr(server.broker));
            sim.send(source, broker, line.into_bytes());
        }
        sim.run_for(step);
        // A deregistered instance that a broker stopped listing never comes back there; and
        // where nothing failed around the removal, it is gone everywhere within two seconds.
        let stable = Duration::from_secs(2);
        for server in &mut servers {
            let State::Gone(Some(at)) = server.state else { continue };
            let service = format!("s{}", (server.endpoint.port() - 4000) % 4);
            let settled = sim.now >= at + stable && last_disturbance + ReplicaConfig::default().peer_timeout < at;
            for node in 0..n {
                if !sim.is_up(node) {
                    continue;
                }
                let incarnation = sim.node(node).replicator.incarnation();
                let listed = live(&mut sim, node, &service).contains(&server.endpoint);
                assert!(
                    !(listed && settled),
                    "seed {seed}, {n} brokers: {} still listed at node {node} at {:?}, removed at {:?}",
                    server.endpoint,
                    sim.now - sim.start,
                    at - sim.start
                );
                match (server.seen.get(&(node, incarnation)), listed) {
                    (None, true) => drop(server.seen.insert((node, incarnation), true)),
                    (Some(true), false) => drop(server.seen.insert((node, incarnation), false)),
                    // Back where the removal was taken (a tombstone holds its id): a removal undone.
                    // Back where the lease had only expired (it missed the renewals, and the
                    // removal has not reached it yet) is anti-entropy repairing from a broker that
                    // still holds it, which the removal then reaches in turn.
                    (Some(false), true) => {
                        let id = server.id.as_deref().and_then(|id| id.parse().ok());
                        assert!(
                            !id.is_some_and(|id| sim.node(node).registry().is_tombstoned(id)),
                            "seed {seed}, {n} brokers: {} came back at node {node} at {:?}, after its removal there",
                            server.endpoint,
                            sim.now - sim.start,
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    // Healed, a TTL and more passed: every live broker holds the same live set, which is
    // exactly the servers that kept heartbeating.
    let alive: HashSet<SocketAddr> = servers.iter().filter(|s| s.state == State::Alive).map(|s| s.endpoint).collect();
    for node in 0..n {
        assert!(sim.is_up(node));
        let mut listed = HashSet::new();
        for service in 0..4 {
            listed.extend(live(&mut sim, node, &format!("s{service}")));
        }
        assert_eq!(listed, alive, "seed {seed}, {n} brokers: node {node}");
    }
}

/// Cases of the random-cluster property: 24 in CI, `SIM_CASES` for longer runs.
fn cases() -> u32 {
    std::env::var("SIM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
}

#[test]
#[ignore]
fn debug_seed() {
    let seed = std::env::var("SIM_SEED").unwrap().parse().unwrap();
    let n = std::env::var("SIM_N").unwrap().parse().unwrap();
    run_random_cluster(seed, n);
}

#[test]
fn a_random_cluster_converges_seed_1() {
    run_random_cluster(1, 3);
}

/// Found by the property: a copy that expired and came back by a repair was never renewed by
/// one peer again, whose slot still pointed at the copy's old place, now another lease's with
/// the same id fingerprint (`replicate::slots`, guard 1).
#[test]
fn a_random_cluster_converges_seed_1240894719366158360() {
    run_random_cluster(1240894719366158360, 4);
}

/// Found by the property after that: a lease put back in the heartbeat broker's table took a
/// slot confirmed at a peer for an earlier lease whose id had the same fingerprint, and went to
/// that peer as renewals of the earlier one's copy (`replicate::slots`, guard 2).
#[test]
fn a_random_cluster_converges_seed_14501125254301116308() {
    run_random_cluster(14501125254301116308, 4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    /// Any seed: 3 to 5 brokers on a lossy, duplicating, reordering network with partitions,
    /// crashes and restarts, servers that heartbeat, die or leave. The seed is printed on
    /// failure; `run_random_cluster(seed, n)` replays it exactly.
    #[test]
    fn a_random_cluster_converges(seed in any::<u64>(), n in 3usize..=5) {
        run_random_cluster(seed, n);
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
