//! Watches on the simulated network (see [`crate::sim`]), on virtual time: how soon a watcher
//! hears of each kind of change, across peers, through a lost datagram, after its watch
//! expired, and a thousand watchers at once.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::protocol::Request;
use crate::sim::{NetConfig, Sim, node_with};

const BROKER: SocketAddr = addr(10, 0, 0, 1, 7000);
const PEER: SocketAddr = addr(10, 0, 0, 2, 7000);
const SERVER: SocketAddr = addr(10, 0, 9, 1, 40000);
const WATCHER: SocketAddr = addr(10, 0, 2, 1, 40000);
const TTL: Duration = Duration::from_secs(5);
/// How soon a watcher must hear of a change (of the TTL, for an expiry).
const PROMPT: Duration = Duration::from_millis(50);

const fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)), port)
}

fn net() -> NetConfig {
    NetConfig { min_delay: Duration::from_micros(100), max_delay: Duration::from_millis(2), loss: 0.0, duplicate: 0.0 }
}

fn one_broker(config: NodeConfig) -> Sim {
    let mut sim = Sim::new(1, net());
    sim.add_node(BROKER, node_with(1, config));
    sim
}

fn stats(sim: &mut Sim) -> BrokerStats {
    let now = sim.now;
    sim.node(0).stats(now)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

/// Runs until a datagram reaches `to` (at most `limit`); returns it and how long it took.
fn next_at(sim: &mut Sim, to: SocketAddr, limit: Duration) -> Option<(String, Duration)> {
    let start = sim.now;
    let deadline = start + limit;
    loop {
        if let Some((_, bytes)) = sim.take_inbox(to).into_iter().next() {
            return Some((text(bytes), sim.now - start));
        }
        if !sim.step_until(deadline) {
            sim.run_until(deadline);
            return sim.take_inbox(to).into_iter().next().map(|(_, b)| (text(b), sim.now - start));
        }
    }
}

/// `watch web` from `watcher`, and the cookie it was answered with echoed: the answer to that.
fn watch(sim: &mut Sim, watcher: SocketAddr, broker: SocketAddr) -> String {
    watch_as(sim, watcher, broker, "web")
}

fn watch_as(sim: &mut Sim, watcher: SocketAddr, broker: SocketAddr, service: &str) -> String {
    let answer = text(sim.request(watcher, broker, format!("watch {service}").as_bytes()).expect("an answer"));
    let cookie = answer.strip_prefix("COOKIE ").expect("a cookie first").trim();
    text(sim.request(watcher, broker, format!("watch {service} {cookie}").as_bytes()).expect("an answer"))
}

#[test]
fn a_watcher_hears_of_a_registration_an_expiry_and_a_deregistration_within_50_ms() {
    let mut sim = one_broker(NodeConfig::default());
    assert_eq!(watch(&mut sim, WATCHER, BROKER), "WATCHING web seq=0 ttl_ms=5000\n");

    sim.send(SERVER, BROKER, b"register web 8001".to_vec());
    let registered = sim.now;
    let (told, took) = next_at(&mut sim, WATCHER, Duration::from_secs(1)).expect("told of the registration");
    assert_eq!(told, "CHANGED web seq=1 10.0.9.1:8001\n");
    assert!(took <= PROMPT, "{took:?}");
    sim.take_inbox(SERVER);

    // The watch is renewed; the instance is not, and expires.
    sim.run_for(Duration::from_secs(3));
    sim.take_inbox(SERVER);
    assert_eq!(watch(&mut sim, WATCHER, BROKER), "WATCHING web seq=1 ttl_ms=5000 10.0.9.1:8001\n");
    let (told, _) = next_at(&mut sim, WATCHER, Duration::from_secs(3)).expect("told of the expiry");
    assert_eq!(told, "CHANGED web seq=2\n");
    let late = sim.now - (registered + TTL);
    assert!(late <= PROMPT, "told {late:?} after the TTL");

    let id = text(sim.request(SERVER, BROKER, b"register web 8002").unwrap());
    assert_eq!(next_at(&mut sim, WATCHER, PROMPT).unwrap().0, "CHANGED web seq=3 10.0.9.1:8002\n");
    // A heartbeat changes nothing and tells nothing.
    assert_eq!(text(sim.request(SERVER, BROKER, format!("heartbeat {}", id.trim()).as_bytes()).unwrap()), "OK\n");
    assert_eq!(next_at(&mut sim, WATCHER, Duration::from_millis(200)), None);
    sim.send(SERVER, BROKER, format!("deregister {}", id.trim()).into_bytes());
    let (told, took) = next_at(&mut sim, WATCHER, Duration::from_secs(1)).expect("told of the deregistration");
    assert_eq!(told, "CHANGED web seq=4\n");
    assert!(took <= PROMPT, "{took:?}");
    let counts = stats(&mut sim);
    assert_eq!((counts["watches"], counts["watch_notifications"], counts["watch_dropped"]), (1, 4, 0));
}

#[test]
fn a_change_at_a_peer_broker_reaches_a_watcher_of_another() {
    let mut sim = Sim::new(2, net());
    for (i, at) in [BROKER, PEER].into_iter().enumerate() {
        let replica = ReplicaConfig { peers: vec![BROKER, PEER], ..ReplicaConfig::default() };
        let config = NodeConfig { replica, unicast: at, incarnation: i as u64 + 1, ..NodeConfig::default() };
        sim.add_node(at, node_with(i as u64, config));
    }
    sim.run_for(Duration::from_millis(1500));
    assert_eq!(watch(&mut sim, WATCHER, PEER), "WATCHING web seq=0 ttl_ms=5000\n");
    sim.send(SERVER, BROKER, b"register web 8001".to_vec());
    let (told, took) = next_at(&mut sim, WATCHER, Duration::from_secs(1)).expect("told through replication");
    assert_eq!(told, "CHANGED web seq=1 10.0.9.1:8001\n");
    assert!(took <= PROMPT, "{took:?}");
}

#[test]
fn a_lost_notification_shows_as_a_gap_and_watching_again_recovers() {
    let mut sim = one_broker(NodeConfig::default());
    watch(&mut sim, WATCHER, BROKER);
    sim.partition(BROKER, WATCHER);
    sim.request(SERVER, BROKER, b"register web 8001").unwrap();
    sim.run_for(Duration::from_millis(10));
    sim.heal();
    sim.request(SERVER, BROKER, b"register web 8002").unwrap();
    let (told, _) = next_at(&mut sim, WATCHER, Duration::from_secs(1)).unwrap();
    // seq=1 was lost: the watcher had 0 and gets 2.
    assert_eq!(told, "CHANGED web seq=2 10.0.9.1:8001 10.0.9.1:8002\n");
    assert_eq!(watch(&mut sim, WATCHER, BROKER), "WATCHING web seq=2 ttl_ms=5000 10.0.9.1:8001 10.0.9.1:8002\n");
}

#[test]
fn an_expired_or_ended_watch_gets_nothing_more() {
    let mut sim = one_broker(NodeConfig::default());
    watch(&mut sim, WATCHER, BROKER);
    let other = addr(10, 0, 2, 2, 40000);
    watch(&mut sim, other, BROKER);
    let answer = text(sim.request(other, BROKER, b"watch web").unwrap());
    let cookie = answer.strip_prefix("COOKIE ").expect("a cookie").trim().to_owned();
    let unwatch = format!("unwatch web {cookie}");
    // Without the cookie, or with the watcher's cookie from another address: refused, kept.
    assert_eq!(
        text(sim.request(other, BROKER, b"unwatch web").unwrap()),
        "ERROR cookie required: unwatch <service> <cookie>\n"
    );
    let forger = addr(10, 0, 2, 2, 40001);
    let forged = text(sim.request(forger, BROKER, unwatch.as_bytes()).unwrap());
    assert_eq!(forged, "ERROR bad cookie: watch <service> for a fresh one\n");
    assert_eq!(stats(&mut sim)["watches"], 2, "kept");
    assert_eq!(text(sim.request(other, BROKER, unwatch.as_bytes()).unwrap()), "OK\n");
    assert_eq!(text(sim.request(other, BROKER, unwatch.as_bytes()).unwrap()), "NOT FOUND\n");
    sim.run_for(TTL);
    assert_eq!(stats(&mut sim)["watches"], 0, "expired");
    sim.request(SERVER, BROKER, b"register web 8001").unwrap();
    assert_eq!(next_at(&mut sim, WATCHER, Duration::from_secs(1)), None);
    assert_eq!(next_at(&mut sim, other, Duration::from_secs(1)), None);
}

#[test]
fn binary_watchers_get_their_request_id_and_caps_hold() {
    use crate::protocol::binary;
    let config = NodeConfig {
        watches: WatchConfig { max_per_source: 1, max_total: 10, max_per_network: 0 },
        ..NodeConfig::default()
    };
    let mut sim = one_broker(config);
    let mut request = Vec::new();
    binary::encode_request(41, &Request::Watch { service: "web" }, &mut request);
    let reply = sim.request(WATCHER, BROKER, &request).unwrap();
    let Ok((41, Response::WatchCookie { cookie })) = binary::decode_response(&reply) else { panic!("{reply:?}") };
    request.clear();
    binary::encode_request(42, &Request::WatchEcho { service: "web", cookie }, &mut request);
    let reply = sim.request(WATCHER, BROKER, &request).unwrap();
    assert!(matches!(binary::decode_response(&reply), Ok((42, Response::Watching { seq: 0, .. }))));
    sim.send(SERVER, BROKER, b"register web 8001".to_vec());
    let pushed = loop {
        if let Some((_, bytes)) = sim.take_inbox(WATCHER).into_iter().next() {
            break bytes;
        }
        assert!(sim.step_until(sim.now + Duration::from_secs(1)));
    };
    let (id, response) = binary::decode_response(&pushed).unwrap();
    assert_eq!(
        (id, response),
        (
            42,
            Response::Changed {
                service: "web".into(),
                seq: 1,
                instances: vec![
                    SERVER.ip().to_string().parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 8001)).unwrap()
                ]
            }
        )
    );
    let same_host = addr(10, 0, 2, 1, 40001);
    assert_eq!(watch(&mut sim, same_host, BROKER), "ERROR too many watches from this address: at most 1\n");
}

#[test]
fn a_thousand_watchers_are_all_told_of_one_change() {
    let config = NodeConfig {
        rate_limit: crate::limit::RateLimit { rate: 0, ..crate::limit::RateLimit::default() },
        ..NodeConfig::default()
    };
    let mut sim = one_broker(config);
    let watchers: Vec<SocketAddr> =
        (0..1000).map(|i| addr(10, 0, 10 + (i / 250) as u8, (i % 250) as u8 + 1, 40000)).collect();
    for &w in &watchers {
        sim.send(w, BROKER, b"watch web".to_vec());
    }
    sim.run_for(Duration::from_millis(100));
    for &w in &watchers {
        let told = sim.take_inbox(w);
        assert_eq!(told.len(), 1);
        let cookie = text(told[0].1.clone()).strip_prefix("COOKIE ").unwrap().trim().to_owned();
        sim.send(w, BROKER, format!("watch web {cookie}").into_bytes());
    }
    sim.run_for(Duration::from_millis(100));
    for &w in &watchers {
        assert_eq!(sim.take_inbox(w).len(), 1);
    }
    sim.send(SERVER, BROKER, b"register web 8001".to_vec());
    sim.run_for(Duration::from_millis(100));
    for &w in &watchers {
        let told = sim.take_inbox(w);
        assert_eq!(told.len(), 1, "{w}");
        assert_eq!(text(told[0].1.clone()), "CHANGED web seq=1 10.0.9.1:8001\n");
    }
    assert_eq!(stats(&mut sim)["watch_notifications"], 1000);
}

#[test]
fn notifications_obey_the_rate_limit_and_the_gap_tells_the_watcher() {
    let config = NodeConfig {
        rate_limit: crate::limit::RateLimit { rate: 2, ..crate::limit::RateLimit::default() },
        ..NodeConfig::default()
    };
    let mut sim = one_broker(config);
    watch(&mut sim, WATCHER, BROKER);
    for port in 8001..8011 {
        // The server's answers are limited too: sent, not waited for.
        sim.send(SERVER, BROKER, format!("register web {port}").into_bytes());
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_millis(10));
    let told = sim.take_inbox(WATCHER);
    let counts = stats(&mut sim);
    assert!(told.len() < 10 && counts["watch_dropped"] > 0, "{} told, {} dropped", told.len(), counts["watch_dropped"]);
    assert_eq!(told.len() as u64 + counts["watch_dropped"], 10);
}
