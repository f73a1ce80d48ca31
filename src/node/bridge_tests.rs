//! Bridged brokers on the simulated network (see [`crate::sim`]): two sites that are not
//! peers, each with its own table, asking each other.

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::protocol::binary;
use crate::protocol::peer::PeerFrame;
use crate::protocol::seal::Key;
use crate::sim::{NetConfig, Sim, node_with};

/// Site A's broker, site B's broker, and a third address nobody listens on.
const A: SocketAddr = addr(10, 1, 0, 1, 7000);
const B: SocketAddr = addr(10, 2, 0, 1, 7000);
const DEAD: SocketAddr = addr(10, 3, 0, 1, 7000);
const SERVER_A: SocketAddr = addr(10, 1, 0, 50, 40000);
const SERVER_B: SocketAddr = addr(10, 2, 0, 50, 40000);
const CLIENT: SocketAddr = addr(10, 2, 0, 99, 40000);

const fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)), port)
}

fn bridged_to(bridges: &[SocketAddr]) -> NodeConfig {
    NodeConfig {
        bridges: BridgeConfig { bridges: bridges.to_vec(), ..BridgeConfig::default() },
        ..NodeConfig::default()
    }
}

/// Two sites: A bridged to `a_bridges`, B bridged to `b_bridges`; `echo` registered at A only.
fn two_sites(net: NetConfig, a_bridges: &[SocketAddr], b_bridges: &[SocketAddr]) -> Sim {
    let mut sim = Sim::new(1, net);
    sim.add_node(A, node_with(1, bridged_to(a_bridges)));
    sim.add_node(B, node_with(2, bridged_to(b_bridges)));
    let id = sim.request(SERVER_A, A, b"register echo 4000").expect("registered");
    assert_eq!(id.len(), 37, "{}", String::from_utf8_lossy(&id));
    sim
}

fn stats(sim: &mut Sim, node: usize) -> BrokerStats {
    let now = sim.now;
    sim.node(node).stats(now)
}

fn text(reply: Option<Vec<u8>>) -> String {
    String::from_utf8(reply.expect("an answer")).unwrap()
}

/// Sends `line` from the client to B and returns the answer and how long it took.
fn ask_b(sim: &mut Sim, line: &str) -> (String, Duration) {
    let sent = sim.now;
    let answer = text(sim.request(CLIENT, B, line.as_bytes()));
    (answer, sim.now - sent)
}

#[test]
fn a_service_at_a_only_is_answered_by_b_in_both_forms() {
    let mut sim = two_sites(NetConfig::default(), &[], &[A]);
    let (answer, took) = ask_b(&mut sim, "query echo");
    assert_eq!(answer, "10.1.0.50:4000\n");
    assert!(took < Duration::from_millis(50), "{took:?}");
    let mut request = Vec::new();
    binary::encode_request(77, &Request::Query { service: "echo" }, &mut request);
    let reply = sim.request(CLIENT, B, &request).expect("an answer");
    let (id, response) = binary::decode_response(&reply).unwrap();
    assert_eq!((id, response), (77, Response::Instances(vec![SERVER_A.with_port(4000)])));
    let b = stats(&mut sim, 1);
    assert_eq!((b["bridged"], b["bridged_found"]), (2, 2));
    assert_eq!(b.bridges[0].asked, 1, "the second answer came from the cache");
    assert_eq!(stats(&mut sim, 0)["bridge_queries"], 1);
    // Never stored at B, never replicated.
    assert_eq!(sim.node(1).registry().len(), 0);
}

trait WithPort {
    fn with_port(self, port: u16) -> SocketAddr;
}

impl WithPort for SocketAddr {
    fn with_port(mut self, port: u16) -> SocketAddr {
        self.set_port(port);
        self
    }
}

#[test]
fn a_local_only_query_is_not_passed_to_a_bridge_in_either_form() {
    let mut sim = two_sites(NetConfig::default(), &[], &[A]);
    let before = sim.sent;
    assert_eq!(ask_b(&mut sim, "query echo local").0, "NOT FOUND\n");
    let mut request = Vec::new();
    binary::encode_request(78, &Request::QueryLocal { service: "echo" }, &mut request);
    let reply = sim.request(CLIENT, B, &request).expect("an answer");
    assert_eq!(binary::decode_response(&reply).unwrap(), (78, Response::NotFound));
    sim.run_for(Duration::from_secs(1));
    // Two queries and two answers; no question to A.
    assert_eq!(sim.sent - before, 4);
    assert_eq!((stats(&mut sim, 1)["bridged"], stats(&mut sim, 0)["bridge_queries"]), (0, 0));
    // Asked without `local`, B still finds it at A; and a local instance is found either way.
    assert_eq!(ask_b(&mut sim, "query echo").0, "10.1.0.50:4000\n");
    sim.request(SERVER_B, B, b"register echo 5000").expect("registered");
    assert_eq!(ask_b(&mut sim, "query echo local").0, "10.2.0.50:5000\n");
}

#[test]
fn local_instances_win() {
    let mut sim = two_sites(NetConfig::default(), &[], &[A]);
    sim.request(SERVER_B, B, b"register echo 5000").expect("registered");
    assert_eq!(ask_b(&mut sim, "query echo").0, "10.2.0.50:5000\n");
    assert_eq!(stats(&mut sim, 1)["bridged"], 0);
}

#[test]
fn a_service_at_neither_is_not_found_at_once_when_the_bridge_answers() {
    let mut sim = two_sites(NetConfig::default(), &[], &[A]);
    let (answer, took) = ask_b(&mut sim, "query nowhere");
    assert_eq!(answer, "NOT FOUND\n");
    assert!(took < Duration::from_millis(50), "{took:?}");
}

#[test]
fn two_sites_bridging_each_other_do_not_loop() {
    let mut sim = two_sites(NetConfig::default(), &[B], &[A]);
    let before = sim.sent;
    assert_eq!(ask_b(&mut sim, "query nowhere").0, "NOT FOUND\n");
    sim.run_for(Duration::from_secs(2));
    // The query, B's question to A, A's answer, B's answer: nothing else.
    assert_eq!(sim.sent - before, 4);
    assert_eq!(stats(&mut sim, 0)["bridged"], 0, "A answered from its own table only");
    // And each side finds the other's services.
    sim.request(SERVER_B, B, b"register web 80").expect("registered");
    assert_eq!(text(sim.request(CLIENT, A, b"query web")), "10.2.0.50:80\n");
    assert_eq!(ask_b(&mut sim, "query echo").0, "10.1.0.50:4000\n");
}

#[test]
fn a_dead_bridge_costs_the_bound_once_then_fails_fast() {
    let mut sim = two_sites(NetConfig::default(), &[], &[DEAD]);
    let (answer, took) = ask_b(&mut sim, "query echo");
    assert_eq!(answer, "NOT FOUND\n");
    let bound = BridgeConfig::default().bound;
    assert!(took >= bound && took < bound + Duration::from_millis(50), "{took:?}");
    for service in ["echo", "other"] {
        let (answer, took) = ask_b(&mut sim, &format!("query {service}"));
        assert_eq!(answer, "NOT FOUND\n");
        assert!(took < Duration::from_millis(50), "failed fast: {took:?}");
    }
    let b = stats(&mut sim, 1).bridges[0].clone();
    assert_eq!((b.up, b.timeouts, b.asked), (false, 1, 1));
    // Past its time out, it is asked again.
    sim.run_for(BridgeConfig::default().down_for);
    let (_, took) = ask_b(&mut sim, "query echo");
    assert!(took >= bound, "asked again: {took:?}");
}

#[test]
fn local_queries_are_not_slowed_while_a_bridged_query_waits() {
    let mut sim = two_sites(NetConfig::default(), &[], &[DEAD]);
    sim.request(SERVER_B, B, b"register web 80").expect("registered");
    let waiting = addr(10, 2, 0, 98, 40000);
    sim.send(waiting, B, b"query echo".to_vec());
    sim.run_for(Duration::from_millis(10));
    assert!(sim.take_inbox(waiting).is_empty(), "still waiting for the bridge");
    let (answer, took) = ask_b(&mut sim, "query web");
    assert_eq!(answer, "10.2.0.50:80\n");
    assert!(took < Duration::from_millis(50), "{took:?}");
    sim.run_for(Duration::from_millis(300));
    assert_eq!(sim.take_inbox(waiting), [(B, b"NOT FOUND\n".to_vec())], "one answer, at the bound");
}

#[test]
fn the_first_bridge_with_the_service_answers_and_a_silent_one_does_not_delay_it() {
    let mut sim = two_sites(NetConfig::default(), &[], &[DEAD, A]);
    let (answer, took) = ask_b(&mut sim, "query echo");
    assert_eq!(answer, "10.1.0.50:4000\n");
    assert!(took < Duration::from_millis(50), "{took:?}");
}

#[test]
fn with_a_key_bridged_queries_are_sealed_and_strangers_get_nothing() {
    let key = Key::from_secret(b"a shared secret of the two sites").unwrap();
    let keyed = |bridges: &[SocketAddr]| NodeConfig { key: Some(key), ..bridged_to(bridges) };
    let mut sim = Sim::new(1, NetConfig::default());
    sim.add_node(A, node_with(1, keyed(&[])));
    sim.add_node(B, node_with(2, keyed(&[A])));
    sim.request(SERVER_A, A, b"register echo 4000").expect("registered");
    assert_eq!(ask_b(&mut sim, "query echo").0, "10.1.0.50:4000\n", "the client's answer is not sealed");
    // An unsealed bridge query from anyone is dropped.
    let mut query = Vec::new();
    peer::encode(&PeerFrame { node: 9, body: Peer::Query { id: 1, service: "echo" } }, &mut query);
    assert_eq!(sim.request(CLIENT, A, &query), None);
    assert_eq!(stats(&mut sim, 0)["bridge_queries"], 1);
}

#[test]
fn an_unsealed_bridge_query_gets_a_bounded_answer_and_never_a_bridged_one() {
    // A broker with bridges, asked by a stranger: answered from its own table only.
    let mut sim = two_sites(NetConfig::default(), &[B], &[]);
    let mut query = Vec::new();
    peer::encode(&PeerFrame { node: 9, body: Peer::Query { id: 5, service: "echo" } }, &mut query);
    let reply = sim.request(CLIENT, A, &query).expect("an answer");
    assert!(reply.len() <= MAX_REPLY_LEN);
    let frame = peer::decode(&reply).unwrap();
    assert_eq!(frame.body, Peer::Answer { id: 5, instances: vec![SERVER_A.with_port(4000)] });
    peer::encode(&PeerFrame { node: 9, body: Peer::Query { id: 6, service: "nowhere" } }, &mut query);
    let before = sim.sent;
    query.clear();
    peer::encode(&PeerFrame { node: 9, body: Peer::Query { id: 6, service: "nowhere" } }, &mut query);
    sim.request(CLIENT, A, &query).expect("an answer");
    assert_eq!(sim.sent - before, 2, "A did not ask its own bridge");
    // A stranger's answer is ignored.
    let mut answer = Vec::new();
    peer::encode(&PeerFrame { node: 9, body: Peer::Answer { id: 1, instances: vec![CLIENT] } }, &mut answer);
    sim.send(CLIENT, B, answer);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(stats(&mut sim, 1)["bridged_found"], 0);
}

/// Over a lossy, duplicating, reordering network, every query that arrives gets one answer,
/// the right one or `NOT FOUND` (a bridge's answer may be lost), within the bound and the
/// network's delays, and a silent bridge is marked down.
fn every_query_gets_one_answer(seed: u64) {
    let net = NetConfig {
        min_delay: Duration::from_micros(50),
        max_delay: Duration::from_millis(20),
        loss: 0.2,
        duplicate: 0.1,
    };
    let mut sim = two_sites(net, &[B], &[A, DEAD]);
    sim.rng = crate::sim::Rng::new(seed);
    let clients: Vec<SocketAddr> = (0..20).map(|k| addr(10, 2, 1, k, 40000)).collect();
    let mut sent_at = Vec::new();
    for (k, &client) in clients.iter().enumerate() {
        let service = ["echo", "nowhere", "echo2"][k % 3];
        sim.send(client, B, format!("query {service}").into_bytes());
        sent_at.push(sim.now);
        let pause = sim.rng.between(Duration::ZERO, Duration::from_millis(100));
        sim.run_for(pause);
    }
    sim.run_for(Duration::from_secs(1));
    for (k, &client) in clients.iter().enumerate() {
        let answers = sim.take_inbox(client);
        // The query or its answer may be lost, or either duplicated: at most four answers.
        assert!(answers.len() <= 4, "seed {seed}, client {k}: {answers:?}");
        for (_, answer) in answers {
            let answer = String::from_utf8(answer).unwrap();
            let right = if k % 3 == 0 { ["10.1.0.50:4000\n", "NOT FOUND\n"] } else { ["NOT FOUND\n", "NOT FOUND\n"] };
            assert!(right.contains(&answer.as_str()), "seed {seed}, client {k}: {answer:?}");
        }
    }
    let b = stats(&mut sim, 1);
    assert!(b.bridges.iter().any(|b| b.addr == DEAD && b.timeouts >= 1), "seed {seed}");
}

#[test]
fn every_query_gets_one_answer_seed_1() {
    every_query_gets_one_answer(1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn every_query_gets_one_answer_any_seed(seed in any::<u64>()) {
        every_query_gets_one_answer(seed);
    }
}
