//! Watches against a real broker on loopback: plain text datagrams, `makler-client --watch`,
//! the resolver's watch mode, a thousand watchers told of one change, and a watch forged from
//! another address drawing no more than three times its bytes.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use crate::common::{Udp, wait_until};
use makler::client::{BrokerClient, Resolver, ResolverConfig};

fn watcher() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    socket
}

fn receive(socket: &UdpSocket) -> String {
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).expect("a datagram within 30 s");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// `watch <service>` by hand: the broker answers with a cookie, which is echoed; returns the
/// answer to the echo.
fn watch(w: &UdpSocket, at: SocketAddr, service: &str) -> String {
    w.send_to(format!("watch {service}").as_bytes(), at).unwrap();
    let answer = receive(w);
    let cookie = answer.strip_prefix("COOKIE ").unwrap_or_else(|| panic!("a cookie, not {answer:?}")).trim();
    assert_eq!(cookie.len(), 16, "{answer:?}");
    w.send_to(format!("watch {service} {cookie}").as_bytes(), at).unwrap();
    receive(w)
}

/// `unwatch <service> <cookie>` by hand, with a cookie asked for first (a `watch` without one
/// answers it and starts nothing); returns the answer.
fn unwatch(w: &UdpSocket, at: SocketAddr, service: &str) -> String {
    w.send_to(format!("watch {service}").as_bytes(), at).unwrap();
    let answer = receive(w);
    let cookie = answer.strip_prefix("COOKIE ").unwrap_or_else(|| panic!("a cookie, not {answer:?}")).trim();
    w.send_to(format!("unwatch {service} {cookie}").as_bytes(), at).unwrap();
    receive(w)
}

#[test]
fn a_text_watcher_is_told_of_a_registration_an_expiry_and_a_deregistration() {
    let broker = common::broker(&["--ttl", "1"]);
    let at = broker.addr("udp");
    let w = watcher();
    assert_eq!(watch(&w, at, "web"), "WATCHING web seq=0 ttl_ms=1000\n");

    let udp = Udp::new(at);
    let registered = Instant::now();
    udp.text("register web 8001");
    assert_eq!(receive(&w), "CHANGED web seq=1 127.0.0.1:8001\n");
    eprintln!("registration told after {:?}", registered.elapsed());
    // Renew the watch (it would expire with the instance), then let the instance expire.
    assert_eq!(watch(&w, at, "web"), "WATCHING web seq=1 ttl_ms=1000 127.0.0.1:8001\n");
    assert_eq!(receive(&w), "CHANGED web seq=2\n");
    let late = registered.elapsed().saturating_sub(Duration::from_secs(1));
    eprintln!("expiry told {late:?} after the TTL");
    // The watch lives a TTL too, and has just run out with the instance (or is about to):
    // watched again. A service nobody watched starts its count again at 0.
    let again = watch(&w, at, "web");
    let seq: u64 = match again.as_str() {
        "WATCHING web seq=2 ttl_ms=1000\n" => 2,
        "WATCHING web seq=0 ttl_ms=1000\n" => 0,
        other => panic!("{other:?}"),
    };

    let id = udp.text("register web 8002");
    assert_eq!(receive(&w), format!("CHANGED web seq={} 127.0.0.1:8002\n", seq + 1));
    assert_eq!(udp.text(&format!("deregister {id}")), "OK");
    assert_eq!(receive(&w), format!("CHANGED web seq={}\n", seq + 2));
    assert_eq!(unwatch(&w, at, "web"), "OK\n");
    assert!(udp.text("stats").contains(" watches=0 watch_notifications=4 watch_dropped=0"));
}

#[test]
fn makler_client_watch_prints_each_change_as_a_line_or_json() {
    let broker = common::broker(&[]);
    let at = broker.addr("udp").to_string();
    let udp = Udp::new(broker.addr("udp"));
    for json in [false, true] {
        let mut args = vec!["--broker", at.as_str(), "--watch", "web", "--count", "2"];
        if json {
            args.push("--json");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_makler-client"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let id = udp.text("register web 9001");
        let second = lines.next().unwrap().unwrap();
        assert_eq!(udp.text(&format!("deregister {id}")), "OK");
        let third = lines.next().unwrap().unwrap();
        assert!(child.wait().unwrap().success(), "it stops after --count changes");
        assert_eq!(common::stat(&udp, "watches"), 0, "and ends its watch at the broker");
        if json {
            let parse = |line: &str| serde_json::from_str::<serde_json::Value>(line).unwrap();
            let (a, b, c) = (parse(&first), parse(&second), parse(&third));
            assert_eq!(b["service"], "web");
            assert_eq!(b["instances"], serde_json::json!(["127.0.0.1:9001"]));
            assert_eq!(b["seq"].as_u64(), a["seq"].as_u64().map(|s| s + 1));
            assert_eq!(c["instances"], serde_json::json!([]));
        } else {
            assert_eq!(first, "seq=0");
            assert_eq!(second, "seq=1 127.0.0.1:9001");
            assert_eq!(third, "seq=2");
        }
    }
}

#[test]
fn a_resolver_in_watch_mode_sees_a_new_instance_without_asking_again() {
    let broker = common::broker(&[]);
    let at = broker.addr("udp");
    let udp = Udp::new(at);
    udp.text("register web 8001");
    // A cache that never expires: only the watch can bring news.
    let config = ResolverConfig { watch: true, cache_for: Duration::from_secs(3600), ..ResolverConfig::default() };
    let mut resolver = Resolver::with_client(BrokerClient::new(&[at]).unwrap(), config);
    let one: SocketAddr = "127.0.0.1:8001".parse().unwrap();
    assert_eq!(resolver.instances("web").unwrap(), [one]);
    udp.text("register web 8002");
    let two = wait_until(PATIENCE, "the resolver sees the new instance", || {
        let instances = resolver.instances("web").unwrap();
        (instances.len() == 2).then_some(instances)
    });
    assert!(two.contains(&one));
    assert!(udp.text("stats").contains(" watches=1 "));
}

/// A broker under `--require-key writes`, its key, and a keyed client that has registered
/// `web` at 127.0.0.1:8001 there.
fn keyed_broker_with_web(test: &str) -> (common::Process, makler::protocol::seal::Key, BrokerClient) {
    let path = std::env::temp_dir().join(format!("makler-watch-{test}-key-{}", std::process::id()));
    common::write_key_file(&path, &format!("the secret of the {test} watch test\n"));
    let key = makler::protocol::seal::Key::load(&path).unwrap();
    let broker = common::broker(&["--key-file", path.to_str().unwrap(), "--require-key", "writes"]);
    let _ = std::fs::remove_file(&path);
    let mut registrar = BrokerClient::new(&[broker.addr("udp")]).unwrap();
    registrar.set_key(key);
    registrar.register("web", None, 8001).unwrap();
    (broker, key, registrar)
}

#[test]
fn a_keyed_resolvers_watch_is_sealed_and_taken_by_a_broker_that_requires_a_key() {
    let (broker, key, mut registrar) = keyed_broker_with_web("keyed");
    let at = broker.addr("udp");
    // A cache that never expires: only the watch can bring news (an unsealed watch is refused,
    // and the resolver would fall back to its cached answer).
    let mut client = BrokerClient::new(&[at]).unwrap();
    client.set_key(key);
    let config = ResolverConfig { watch: true, cache_for: Duration::from_secs(3600), ..ResolverConfig::default() };
    let mut resolver = Resolver::with_client(client, config);
    assert_eq!(resolver.instances("web").unwrap().len(), 1);
    registrar.register("web", None, 8002).unwrap();
    wait_until(Duration::from_secs(30), "the resolver's watch tells it of the new instance", || {
        (resolver.instances("web").unwrap().len() == 2).then_some(())
    });
    assert_eq!(registrar.stats().unwrap().get("watches"), Some(1));
}

#[test]
fn a_resolver_whose_watch_is_refused_asks_instead_and_does_not_watch_again_at_every_lookup() {
    let (broker, _key, _registrar) = keyed_broker_with_web("refused");
    let at = broker.addr("udp");
    let udp = Udp::new(at);
    // An unkeyed resolver: its watch is refused, its queries are not (`writes`).
    let config = ResolverConfig { watch: true, cache_for: Duration::ZERO, ..ResolverConfig::default() };
    let mut resolver = Resolver::with_client(BrokerClient::new(&[at]).unwrap(), config);
    for _ in 0..5 {
        assert_eq!(resolver.instances("web").unwrap().len(), 1);
    }
    assert_eq!(common::stat(&udp, "refused_key"), 1, "one watch refused, not one per lookup");
    assert_eq!(common::stat(&udp, "watches"), 0);
}

#[test]
fn a_thousand_watchers_are_all_told_of_one_change() {
    let broker = common::broker(&[]);
    let at = broker.addr("udp");
    let watchers: Vec<UdpSocket> = (0..1000).map(|_| watcher()).collect();
    for w in &watchers {
        w.send_to(b"watch web", at).unwrap();
    }
    for w in &watchers {
        let cookie = receive(w);
        w.send_to(format!("watch web {}", cookie.strip_prefix("COOKIE ").unwrap().trim()).as_bytes(), at).unwrap();
    }
    for w in &watchers {
        assert_eq!(receive(w), "WATCHING web seq=0 ttl_ms=5000\n");
    }
    let udp = Udp::new(at);
    let changed = Instant::now();
    udp.text("register web 8001");
    for w in &watchers {
        assert_eq!(receive(w), "CHANGED web seq=1 127.0.0.1:8001\n");
    }
    let took = changed.elapsed();
    eprintln!("1000 watchers: the last one told {took:?} after the registration was sent");
    assert!(udp.text("stats").contains(" watches=1000 watch_notifications=1000 watch_dropped=0"));
}

/// An attacker sends watches "from" a victim (here the victim is 127.0.0.66, a loopback
/// address the test binds and never answers from) while the service churns: the victim
/// receives at most three times the bytes sent in its name, and no watch starts.
#[test]
fn a_watch_forged_from_another_address_draws_at_most_three_times_its_bytes() {
    let broker = common::broker(&["--rate-limit", "0"]);
    let at = broker.addr("udp");
    let victim = UdpSocket::bind("127.0.0.66:0").unwrap();
    victim.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let udp = Udp::new(at);
    let mut sent = 0;
    let mut binary = Vec::new();
    for round in 0..50u32 {
        // Text and binary watches, on a short name (the most a reply could gain).
        for request in [&b"watch ab"[..], b"watch web\n", b"watch a"] {
            sent += victim.send_to(request, at).unwrap();
        }
        binary.clear();
        makler::protocol::binary::encode_request(
            round,
            &makler::protocol::Request::Watch { service: "w" },
            &mut binary,
        );
        sent += victim.send_to(&binary, at).unwrap();
        // A forged echo, guessing.
        sent += victim.send_to(format!("watch web {:016x}", round).as_bytes(), at).unwrap();
        let id = udp.text(&format!("register web {}", 9000 + round));
        assert_eq!(udp.text(&format!("deregister {id}")), "OK");
        udp.text(&format!("register ab {}", 9000 + round));
    }
    let mut received = 0;
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = victim.recv_from(&mut buf) {
        received += n;
    }
    eprintln!("forged watches: {sent} bytes sent, {received} received ({:.2}x)", received as f64 / sent as f64);
    assert!(received <= 3 * sent, "{received} bytes drawn by {sent}");
    assert!(received > 0, "the cookies came back");
    assert!(udp.text("stats").contains(" watches=0 watch_notifications=0 "));
}

/// A broker played by the test: the client library's `Watch` must notice a gap in the
/// sequence and watch again, and ignore a duplicate.
#[test]
fn the_client_watch_repairs_a_gap_by_watching_again() {
    use makler::client::{Watch, WatchEvent};
    use makler::protocol::{Request, Response, binary};
    let fake = UdpSocket::bind("127.0.0.1:0").unwrap();
    fake.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let at = fake.local_addr().unwrap();
    let instance: SocketAddr = "127.0.0.1:8001".parse().unwrap();
    let player = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut answer = |seq: u64, instances: Vec<SocketAddr>| {
            let (n, from) = fake.recv_from(&mut buf).unwrap();
            let (id, request) = binary::decode_request(&buf[..n]).unwrap();
            assert_eq!(request, Request::Watch { service: "web" });
            let mut out = Vec::new();
            let reply = Response::Watching { service: "web".into(), seq, ttl_ms: 60_000, instances };
            binary::encode_response(id, &reply, &mut out);
            fake.send_to(&out, from).unwrap();
            (id, from)
        };
        let (id, client) = answer(0, vec![]);
        let push = |seq: u64, instances: Vec<SocketAddr>| {
            let mut out = Vec::new();
            binary::encode_response(id, &Response::Changed { service: "web".into(), seq, instances }, &mut out);
            fake.send_to(&out, client).unwrap();
        };
        push(1, vec![instance]);
        push(1, vec![instance]);
        // seq 2 is lost; 3 arrives: the client must ask again.
        push(3, vec![]);
        answer(3, vec![]);
    });
    let mut watch = Watch::start(&[at], "web").unwrap();
    assert_eq!((watch.seq(), watch.instances()), (0, &[][..]));
    let soon = || Instant::now() + Duration::from_secs(5);
    assert_eq!(watch.next(soon()).unwrap(), Some(WatchEvent::Changed { seq: 1, instances: vec![instance] }));
    assert_eq!(watch.next(soon()).unwrap(), Some(WatchEvent::Resynced { seq: 3, instances: vec![] }));
    player.join().unwrap();
}
