//! Reloads: each setting a running node takes anew, what it keeps, and a peer added at run
//! time on the simulated network.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::core::Core;
use crate::service::policy::{ForeignIp, Policy};
use crate::sim::{NetConfig, Sim, node_with};

const ME: &str = "127.0.0.1:7000";

fn config() -> NodeConfig {
    NodeConfig {
        unicast: ME.parse().unwrap(),
        replica: ReplicaConfig { peers: vec!["127.0.0.1:7001".parse().unwrap()], ..ReplicaConfig::default() },
        ..NodeConfig::default()
    }
}

fn node() -> Node {
    let mut n = 0u128;
    Node::new(config(), move || {
        n += 1;
        Uuid::from_u128(n)
    })
}

fn text(node: &mut Node, now: Instant, from: &str, line: &str) -> String {
    let mut reply = Vec::new();
    node.handle_datagram(now, Face::Client, from.parse().unwrap(), line.as_bytes(), &mut reply);
    String::from_utf8(reply).unwrap()
}

/// Every datagram the node queued, by destination.
fn sent(node: &mut Node, now: Instant) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut to = Vec::new();
    while let Some(transmit) = node.poll_transmit(now, &mut out) {
        to.push(transmit.to);
        out.clear();
    }
    to
}

fn shown(changes: &[Change]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

#[test]
fn the_same_settings_change_nothing() {
    let mut node = node();
    let now = Instant::now();
    node.handle_start(now);
    assert_eq!(node.reloadable(), Reloadable::of(&config()), "a node's settings are those it was made with");
    assert!(node.reconfigure(Reloadable::of(&config()), now).is_empty());
}

#[test]
fn each_setting_is_taken_and_told_once() {
    let mut node = node();
    let now = Instant::now();
    node.handle_start(now);
    sent(&mut node, now);
    let mut new = node.reloadable();
    new.peers.push("127.0.0.1:7002".parse().unwrap());
    new.bridges = vec!["127.0.0.1:7100".parse().unwrap()];
    new.policy = Policy { allow_register: vec!["10.0.0.0/8".parse().unwrap()], foreign_ip: ForeignIp::Deny };
    new.max_per_source = 7;
    new.max_per_network = 9;
    new.watches.max_per_network = 9;
    new.rate_limit.rate = 50;
    new.watches.max_total = 10;
    new.watches.max_per_source = 2;
    new.probe_interval = Some(Duration::from_secs(1));
    new.probe_timeout = Duration::from_millis(500);
    new.log_changes = true;
    let changes = node.reconfigure(new.clone(), now);
    assert_eq!(
        shown(&changes),
        [
            "--peers 127.0.0.1:7001 → 127.0.0.1:7001,127.0.0.1:7002",
            "--bridge none → 127.0.0.1:7100",
            "--allow-register none → 10.0.0.0/8",
            "--foreign-ip allow → deny",
            "--max-per-source 1024 → 7",
            "--max-per-network 4096 → 9",
            "--rate-limit 0 → 50",
            "--max-watches 100000 → 10",
            "--max-watches-per-source 1024 → 2",
            "--probe-interval off → 1s",
            "--probe-timeout 3s → 0.5s",
            "--quiet true → false",
        ]
    );
    assert_eq!(node.reloadable(), new, "every setting is the new one");
    assert!(sent(&mut node, now).contains(&"127.0.0.1:7002".parse().unwrap()), "the new peer is said hello to at once");
    assert!(node.bridges.is_on());
    assert_eq!(node.stats(now).peers.len(), 2);
    assert!(node.reconfigure(new, now).is_empty(), "taken: the same again is no change");
}

#[test]
fn a_narrower_policy_refuses_new_registrations_and_keeps_the_leases_held() {
    let mut node = node();
    let now = Instant::now();
    node.handle_start(now);
    assert_eq!(text(&mut node, now, "10.1.0.1:1", "register echo 4000").len(), 37);
    let mut new = node.reloadable();
    new.policy.allow_register = vec!["192.168.0.0/16".parse().unwrap()];
    new.max_per_source = 1;
    assert_eq!(node.reconfigure(new, now).len(), 2);
    assert!(text(&mut node, now, "10.1.0.1:1", "register web 5000").starts_with("ERROR not allowed"));
    assert!(text(&mut node, now, "192.168.0.1:1", "register web 5000").len() == 37, "an allowed network registers");
    assert!(text(&mut node, now, "192.168.0.1:1", "register web 5001").starts_with("ERROR"), "the new quota holds");
    assert_eq!(text(&mut node, now, "10.1.0.1:1", "query echo"), "10.1.0.1:4000\n", "the lease held is kept");
    assert_eq!(node.registry().len(), 2);
}

/// `watch SERVICE` from `from`: the cookie it is answered with.
fn cookie(node: &mut Node, now: Instant, from: &str, service: &str) -> String {
    let answer = text(node, now, from, &format!("watch {service}"));
    answer.strip_prefix("COOKIE ").expect("a cookie").trim().to_owned()
}

#[test]
fn watches_and_their_cookies_outlive_a_reload() {
    let mut node = node();
    let now = Instant::now();
    node.handle_start(now);
    let (held, waiting, late) = ("127.0.0.1:5555", "127.0.0.2:5555", "127.0.0.3:5555");
    let first = cookie(&mut node, now, held, "echo");
    assert!(!text(&mut node, now, held, &format!("watch echo {first}")).starts_with("ERROR"));
    let second = cookie(&mut node, now, waiting, "echo");
    let mut new = node.reloadable();
    new.watches.max_per_source = 1;
    new.watches.max_total = 2;
    new.peers.clear();
    assert_eq!(node.reconfigure(new, now).len(), 3);
    let taken = text(&mut node, now, waiting, &format!("watch echo {second}"));
    assert!(!taken.starts_with("ERROR"), "a cookie made before the reload is taken after it: {taken}");
    let renewed = text(&mut node, now, held, &format!("watch echo {first}"));
    assert!(!renewed.starts_with("ERROR"), "a watch held is renewed: {renewed}");
    assert_eq!(node.stats(now)["watches"], 2);
    text(&mut node, now, "127.0.0.1:1", "register echo 4000");
    node.handle_timeout(now);
    let to = sent(&mut node, now);
    assert!(to.contains(&held.parse().unwrap()) && to.contains(&waiting.parse().unwrap()), "both are notified");
    let third = cookie(&mut node, now, late, "echo");
    let refused = text(&mut node, now, late, &format!("watch echo {third}"));
    assert!(refused.starts_with("ERROR"), "the new cap holds for new watches: {refused}");
}

#[test]
fn a_removed_peer_is_sent_nothing_more() {
    let mut node = node();
    let start = Instant::now();
    node.handle_start(start);
    node.handle_timeout(start);
    let peer: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    assert!(sent(&mut node, start).contains(&peer));
    let mut new = node.reloadable();
    new.peers.clear();
    assert_eq!(shown(&node.reconfigure(new, start)), ["--peers 127.0.0.1:7001 → none"]);
    assert!(node.stats(start).peers.is_empty());
    text(&mut node, start, "127.0.0.1:1", "register echo 4000");
    let later = start + Duration::from_secs(5);
    node.handle_timeout(later);
    assert!(!sent(&mut node, later).contains(&peer), "no hello, no delta");
}

/// A request answered, asked again as a client would when an answer is lost.
fn ask(sim: &mut Sim, from: SocketAddr, to: SocketAddr, line: &str) -> String {
    (0..5)
        .find_map(|_| sim.request(from, to, line.as_bytes()))
        .map(|answer| String::from_utf8(answer).unwrap())
        .expect("an answer within five tries")
}

fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 7000))
}

/// Two brokers that do not know each other; one gains the other as a peer at run time (and
/// the other the first, as an operator editing both files would do): their tables converge,
/// each keeping its own leases, and later changes replicate.
fn a_peer_added_at_run_time_converges(seed: u64) {
    let net = NetConfig { loss: 0.05, ..NetConfig::default() };
    let mut sim = Sim::new(seed, net);
    let config = |i: usize| NodeConfig { unicast: sim_addr(i), incarnation: 100 + i as u64, ..NodeConfig::default() };
    let a = sim.add_node(sim_addr(0), node_with(0, config(0)));
    let b = sim.add_node(sim_addr(1), node_with(1, config(1)));
    let client = SocketAddr::from(([10, 0, 1, 1], 40000));
    ask(&mut sim, client, sim_addr(0), "register echo 4000");
    ask(&mut sim, client, sim_addr(1), "register web 5000");
    sim.run_for(Duration::from_secs(2));
    assert_eq!(ask(&mut sim, client, sim_addr(1), "query echo"), "NOT FOUND\n");
    for (node, other) in [(a, sim_addr(1)), (b, sim_addr(0))] {
        let now = sim.now;
        let mut new = sim.node(node).reloadable();
        new.peers = vec![other];
        assert_eq!(sim.node(node).reconfigure(new, now).len(), 1);
        sim.poke(node);
    }
    // Heartbeats keep both leases alive while the brokers find each other.
    for _ in 0..6 {
        sim.run_for(Duration::from_secs(1));
        sim.request(client, sim_addr(0), b"register echo 4000");
        sim.request(client, sim_addr(1), b"register web 5000");
    }
    for at in [sim_addr(0), sim_addr(1)] {
        assert_eq!(ask(&mut sim, client, at, "query echo"), "10.0.1.1:4000\n", "seed {seed}");
        assert_eq!(ask(&mut sim, client, at, "query web"), "10.0.1.1:5000\n", "seed {seed}");
    }
    ask(&mut sim, client, sim_addr(0), "register late 6000");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(ask(&mut sim, client, sim_addr(1), "query late"), "10.0.1.1:6000\n", "seed {seed}");
    let now = sim.now;
    assert!(sim.node(a).stats(now).peers.iter().all(|p| p.up), "seed {seed}");
}

#[test]
fn a_peer_added_at_run_time_converges_seeds_1_to_4() {
    for seed in 1..=4 {
        a_peer_added_at_run_time_converges(seed);
    }
}

/// Health checks turned on by a reload probe the instances already registered, and a new
/// interval is taken at once.
#[test]
fn health_checks_follow_a_new_interval() {
    let mut node = node();
    let start = Instant::now();
    node.handle_start(start);
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    assert_eq!(text(&mut node, start, "127.0.0.1:1", "register echo 4000 check=tcp").len(), 37);
    // Runs the timers at `now`; every probe started is answered: how many.
    let probes = |node: &mut Node, now: Instant| {
        node.handle_timeout(now);
        let started: Vec<_> = std::iter::from_fn(|| node.poll_probe()).collect();
        for command in &started {
            if let crate::core::ProbeCmd::Start { id, .. } = command {
                node.handle_probe(now, *id, crate::core::ProbeOutcome::Connected);
            }
        }
        started.len()
    };
    assert_eq!(probes(&mut node, at(1)), 0, "no checks yet");
    let mut new = node.reloadable();
    new.probe_interval = Some(Duration::from_secs(1));
    assert_eq!(shown(&node.reconfigure(new.clone(), at(1))), ["--probe-interval off → 1s"]);
    assert_eq!(probes(&mut node, at(2)), 1, "probed within one new interval");
    new.probe_interval = Some(Duration::from_secs(3));
    node.reconfigure(new, at(2));
    text(&mut node, at(3), "127.0.0.1:1", "register echo 4000 check=tcp");
    assert_eq!(probes(&mut node, at(5)), 1, "probed within the new interval");
}

/// Two brokers that check their instances between them: the one whose file drops the other
/// takes over the other's checks at once (the owners are worked out again), and every
/// instance is still checked by someone.
#[test]
fn a_removed_peer_leaves_its_checks_to_this_broker() {
    let mut sim = Sim::new(7, NetConfig::default());
    let config = |i: usize| NodeConfig {
        unicast: sim_addr(i),
        incarnation: 100 + i as u64,
        replica: ReplicaConfig { peers: vec![sim_addr(1 - i)], ..ReplicaConfig::default() },
        verify: VerifyConfig { probe_interval: Some(Duration::from_secs(1)), ..VerifyConfig::default() },
        ..NodeConfig::default()
    };
    let a = sim.add_node(sim_addr(0), node_with(0, config(0)));
    sim.add_node(sim_addr(1), node_with(1, config(1)));
    let client = SocketAddr::from(([10, 0, 1, 1], 40000));
    let endpoints: Vec<SocketAddr> = (4000..4016).map(|port| SocketAddr::from(([10, 0, 1, 1], port))).collect();
    sim.listening.extend(endpoints.iter().copied());
    sim.run_for(Duration::from_secs(3));
    for endpoint in &endpoints {
        ask(&mut sim, client, sim_addr(0), &format!("register echo {} check=tcp", endpoint.port()));
    }
    sim.run_for(Duration::from_secs(2));
    let owned_by_b = |sim: &mut Sim| {
        let node = sim.node(a);
        endpoints.iter().filter(|&&e| node.replicator.owner(e) == Some(sim_addr(1))).count()
    };
    assert!(owned_by_b(&mut sim) > 0, "B checks some");

    let now = sim.now;
    let mut new = sim.node(a).reloadable();
    new.peers.clear();
    sim.node(a).handle_command(now, Command::Reload { settings: Box::new(new), reply: None });
    sim.poke(a);
    assert_eq!(owned_by_b(&mut sim), 0, "A owns every check once B is gone");
    let before = sim.node(a).verifier.prober_stats().started;
    sim.run_for(Duration::from_secs(2));
    let started = sim.node(a).verifier.prober_stats().started - before;
    assert!(started >= 2 * endpoints.len() as u64 - 1, "A checks every instance each second: {started}");
}
