//! The property test of redundant brokers: random networks (loss, duplication, reordering,
//! partitions), crashes and restarts, and servers that heartbeat, die or leave; after the
//! network heals, every broker lists exactly the servers that kept heartbeating. A failing seed
//! replays exactly with `run_random_cluster(seed, n)`, or `SIM_SEED=… SIM_N=… cargo test --lib
//! debug_seed -- --ignored` (`SIM_DEBUG=<endpoint>` prints that server's requests and replies).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::ReplicaConfig;
use super::replicate_tests::{TTL, client_addr, cluster, live, node_addr, restart};
use crate::sim::NetConfig;

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
                    // Back where the removal was taken (a tombstone holds one of its names): a
                    // removal undone. Back where the lease had only expired (it missed the
                    // renewals, and the removal has not reached it yet) is anti-entropy repairing
                    // from a broker that still holds it, which the removal then reaches in turn.
                    // Back as another lease of the server's, which no removal covers, is not the
                    // removal undone: a register whose answer was lost, sent again to another
                    // broker, leaves a lease under another id at the first, which a partition can
                    // keep from meeting (and merging with) the one the server knows before that
                    // one is removed; it is never renewed, and runs out within the TTL.
                    (Some(false), true) => {
                        let now = sim.now;
                        let registry = &mut sim.node(node).registry;
                        let mut names = Vec::new();
                        let mut at = Some(crate::registry::Cursor::START);
                        while let Some(cursor) = at {
                            at = registry.page(now, cursor, |view| {
                                if view.endpoint == server.endpoint {
                                    names.push(view.id);
                                    names.extend_from_slice(view.aliases);
                                }
                                true
                            });
                        }
                        assert!(
                            !names.iter().any(|&id| registry.is_tombstoned(id)),
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

/// Found by the property: a register answered by nobody (its answer lost) left a lease at a
/// partitioned broker under another id than the one the server got from the next broker; once
/// the partition healed, that lease showed where the server's own lease had been removed. The
/// model had taken it for the removed lease; the check now looks at the listed leases' names.
#[test]
fn a_random_cluster_converges_seed_11061316243324621309() {
    run_random_cluster(11061316243324621309, 4);
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
