//! Redundant brokers as real processes on loopback: replication, a restarted broker catching up,
//! reports of dead servers, and a black-holed probe that must not stall the loop.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{Process, Udp, client, listed, server, wait_until};

/// Free UDP ports on loopback, reserved just long enough to read them back.
fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    sockets.iter().map(|s| s.local_addr().unwrap().port()).collect()
}

fn broker_at(port: u16, peers: &str, extra: &[&str]) -> Process {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", listen.as_str(), "--peers", peers, "--no-multicast", "--quiet"];
    args.extend_from_slice(extra);
    Process::start(env!("CARGO_BIN_EXE_makler-broker"), &args)
}

/// `n` brokers, each given the same list of all of them, started and met.
fn cluster(n: usize, extra: &[&str]) -> (Vec<Process>, Vec<SocketAddr>, String) {
    let ports = free_ports(n);
    let addrs: Vec<SocketAddr> = ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
    let peers = addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let brokers: Vec<Process> = ports.iter().map(|&port| broker_at(port, &peers, extra)).collect();
    // Started together, no broker finds a complete peer: each takes itself as complete after
    // the grace time.
    for &addr in &addrs {
        wait_until(PATIENCE, "every broker sees its peers up and is complete", || {
            let udp = Udp::new(addr);
            (stat(&udp, "peers_up").starts_with(&format!("{}/", n - 1)) && stat(&udp, "complete") == "yes")
                .then_some(())
        });
    }
    (brokers, addrs, peers)
}

/// A value from the first line of `stats`.
fn stat(udp: &Udp, key: &str) -> String {
    let reply = udp.text("stats");
    let line = reply.lines().next().unwrap_or_default().to_owned();
    line.split(' ')
        .find_map(|pair| pair.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

fn stat_u64(udp: &Udp, key: &str) -> u64 {
    stat(udp, key).parse().unwrap()
}

/// No wall-clock upper bound is asserted in this file (a loaded 2-core machine running a debug
/// build can stretch any of them): how a change travelled is read from the brokers' own
/// counters instead. The exact timings are asserted on the simulated network's virtual clock,
/// in `src/node/replicate_tests.rs` (seen everywhere 5 ms after a registration, caught up
/// within a second of a restart, a report acted on within 20 ms).
const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn a_server_registered_at_one_broker_is_answered_by_all_at_once() {
    let (_brokers, addrs, peers) = cluster(3, &[]);
    let udp: Vec<Udp> = addrs.iter().map(|&a| Udp::new(a)).collect();
    let id = udp[0].text("register echo 4000");
    let registered = Instant::now();
    wait_until(PATIENCE, "the others list it", || {
        (listed(&udp[1], "echo").len() == 1 && listed(&udp[2], "echo").len() == 1).then_some(())
    });
    eprintln!("visible at every broker after {:?}", registered.elapsed());
    // Pushed to the peers at once, not pulled by the periodic sync: the registering broker
    // sent the change to each peer, and no anti-entropy repair (which starts only after two
    // mismatching digests a second apart) carried it.
    assert_eq!(stat_u64(&udp[0], "replicated_out"), 2);
    for u in &udp {
        assert_eq!(stat_u64(u, "repairs_pushed"), 0, "{}", u.peer);
    }
    // The same id works at every broker.
    assert_eq!(udp[2].text(&format!("heartbeat {id}")), "OK");

    // End to end: a real server registers at the first broker only, a real client asks the last.
    let echo = server("upper", addrs[0], &[]);
    let (code, out, err) = client(&["--broker", &addrs[2].to_string(), "--wait", "5", "upper", "hi"], "");
    assert_eq!((code, out.as_str()), (Some(0), "HI\n"), "{err}");
    drop(echo);
    let _ = peers;
}

#[test]
fn a_broker_killed_and_restarted_lists_everything_without_anyone_registering_again() {
    let (mut brokers, addrs, peers) = cluster(3, &["--ttl", "60"]);
    let udp = Udp::new(addrs[1]);
    let mut ids = Vec::new();
    for i in 0..300u32 {
        ids.push(udp.text(&format!("register s{} 10.1.{}.{} 4000", i % 30, i / 250, i % 250)));
    }
    let servers: Vec<Process> = ["echo", "upper", "time"].iter().map(|s| server(s, addrs[0], &[])).collect();
    let killed = Udp::new(addrs[2]);
    wait_until(PATIENCE, "the third broker has all", || (stat_u64(&killed, "instances") == 303).then_some(()));

    brokers[2].child.kill().unwrap();
    brokers[2].child.wait().unwrap();
    brokers[2] = broker_at(addrs[2].port(), &peers, &["--ttl", "60"]);
    let restarted = Instant::now();
    let fresh = Udp::new(addrs[2]);
    // The first leases expire after 60 s: a broker that caught up only by hearing the
    // servers register again would take that long (the simulator times the catch-up).
    wait_until(PATIENCE, "the restarted broker lists everything", || {
        (stat(&fresh, "complete") == "yes" && stat_u64(&fresh, "instances") == 303).then_some(())
    });
    eprintln!("caught up after {:?}", restarted.elapsed());
    // Nobody registered again: the old ids are the ones it knows, and the leases are as many.
    for id in ids.iter().step_by(37) {
        assert_eq!(fresh.text(&format!("heartbeat {id}")), "OK");
    }
    let first = Udp::new(addrs[0]);
    assert_eq!(stat_u64(&first, "instances"), 303);
    for service in ["echo", "upper", "time"] {
        assert_eq!(listed(&fresh, service).len(), 1, "{service}");
    }
    drop(servers);
}

#[test]
fn a_reported_dead_server_is_gone_everywhere_and_a_live_one_stays() {
    let (_brokers, addrs, _) = cluster(3, &["--ttl", "30", "--probe-interval", "0"]);
    let mut dead = server("echo", addrs[0], &[]);
    let live = server("echo", addrs[0], &[]);
    let udp: Vec<Udp> = addrs.iter().map(|&a| Udp::new(a)).collect();
    wait_until(PATIENCE, "both are everywhere", || udp.iter().all(|u| listed(u, "echo").len() == 2).then_some(()));
    let (dead_addr, live_addr) = (dead.addr("tcp"), live.addr("tcp"));
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();

    assert_eq!(udp[1].text(&format!("report echo {dead_addr}")), "OK");
    assert_eq!(udp[2].text(&format!("report echo {live_addr}")), "OK");
    let reported = Instant::now();
    // Removed for the report (the simulator times it), not expired: no broker counts an
    // expiry (its 30 s lease would have run out by the end of the wait).
    wait_until(PATIENCE, "the dead one is gone everywhere", || {
        udp.iter().all(|u| listed(u, "echo") == [live_addr]).then_some(())
    });
    eprintln!("gone everywhere after {:?}", reported.elapsed());
    assert!(udp.iter().all(|u| stat_u64(u, "expired") == 0), "expired, not removed for the report");
    // The live one was probed too, and stays.
    wait_until(PATIENCE, "both probes ran", || {
        (udp.iter().map(|u| stat_u64(u, "probes")).sum::<u64>() == 2).then_some(())
    });
    assert!(udp.iter().all(|u| listed(u, "echo") == [live_addr]));
    assert_eq!(udp[0].text(&format!("report echo {dead_addr}")), "NOT FOUND");
}

#[test]
fn two_clients_one_second_apart_cost_one_probe_and_both_get_answers() {
    let (_brokers, addrs, _) = cluster(3, &["--ttl", "30", "--probe-interval", "0"]);
    let mut dead = server("upper", addrs[0], &[]);
    let _live = server("upper", addrs[0], &[]);
    let udp: Vec<Udp> = addrs.iter().map(|&a| Udp::new(a)).collect();
    wait_until(PATIENCE, "both are everywhere", || udp.iter().all(|u| listed(u, "upper").len() == 2).then_some(()));
    let dead_addr = dead.addr("tcp");
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    // Each client asks another broker; both are answered by the live server, and the first
    // one's report removes the dead one everywhere.
    for (k, broker) in [addrs[1], addrs[2]].iter().enumerate() {
        if k == 1 {
            // The scenario: the second client comes one second after the first.
            std::thread::sleep(Duration::from_secs(1));
        }
        for _ in 0..4 {
            let (code, out, err) = client(&["--broker", &broker.to_string(), "upper", "x"], "");
            assert_eq!((code, out.as_str()), (Some(0), "X\n"), "{err}");
        }
    }
    wait_until(PATIENCE, "the dead one is gone everywhere", || {
        udp.iter().all(|u| !listed(u, "upper").contains(&dead_addr)).then_some(())
    });
    let probes: u64 = udp.iter().map(|u| stat_u64(u, "probes")).sum();
    assert_eq!(probes, 1, "one probe for every report of it");
}

/// A TCP listener that is never accepted from and whose queue is full, so the kernel drops
/// every further SYN: a connect to it hangs like one to a black-holed host.
fn black_hole() -> (socket2::Socket, Vec<TcpStream>, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    // Fill the queue until a connect no longer completes.
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
        assert!(held.len() < 64, "the listen queue never filled");
    }
    (socket, held, addr)
}

#[test]
fn queries_are_answered_at_once_while_a_black_holed_instance_is_probed() {
    let (_brokers, addrs, _) = cluster(1, &["--ttl", "30", "--probe-interval", "0", "--probe-timeout", "1"]);
    let (_hole, _held, hole) = black_hole();
    let udp = Udp::new(addrs[0]);
    udp.text(&format!("register web {} {} check=tcp", hole.ip(), hole.port()));
    udp.text("register other 4000");
    assert_eq!(udp.text(&format!("report web {hole}")), "OK");
    let probing = Instant::now();
    // Queries answered while the probe is still in flight (started, not yet found dead): were
    // the loop waiting on the probe's connect, no query could be answered before the probe's
    // one-second timeout, and the `stats` after it would show the probe done. So the count
    // proves the loop went on, whatever the machine's speed (one would; two leave no doubt that
    // it did not race the probe's start, and a loaded machine still fits them in a second).
    let mut latencies = Vec::new();
    loop {
        let asked = Instant::now();
        assert_eq!(udp.text("query other"), "127.0.0.1:4000");
        let took = asked.elapsed();
        let (started, dead) = (stat_u64(&udp, "probes"), stat_u64(&udp, "probes_dead"));
        if dead > 0 {
            // One timeout is not conclusive: still listed until a second probe, after a
            // backoff, times out too.
            assert_eq!(listed(&udp, "web"), [hole], "removed after one timeout");
            break;
        }
        if started == 1 {
            latencies.push(took);
        }
        assert!(probing.elapsed() < PATIENCE, "the probe never ended");
    }
    assert!(latencies.len() >= 2, "{} queries answered during the probe", latencies.len());
    latencies.sort();
    let (p95, max) = (latencies[latencies.len() * 95 / 100], *latencies.last().unwrap());
    eprintln!("{} queries answered while the probe was in flight: p95 {p95:?}, max {max:?}", latencies.len());
    // The probe times out after a second, the re-check a second later times out too, and the
    // instance goes: 3 s after the report.
    wait_until(PATIENCE, "the black hole is removed", || listed(&udp, "web").is_empty().then_some(()));
    eprintln!("the black hole was removed {:?} after the report", probing.elapsed());
    assert!(probing.elapsed() >= Duration::from_millis(2900), "removed after two timeouts and the backoff");
    assert_eq!(stat_u64(&udp, "probes"), 2, "one probe, then one re-check");
    drop(TcpListener::bind("127.0.0.1:0"));
}

#[test]
fn a_broker_keeps_serving_when_its_peers_are_gone_and_takes_them_back() {
    let (mut brokers, addrs, peers) = cluster(2, &[]);
    let udp = Udp::new(addrs[0]);
    brokers[1].child.kill().unwrap();
    brokers[1].child.wait().unwrap();
    wait_until(PATIENCE, "the peer is down", || (stat(&udp, "peers_up") == "0/1").then_some(()));
    let id = udp.text("register echo 4000");
    assert_eq!(udp.text("query echo"), "127.0.0.1:4000");
    brokers[1] = broker_at(addrs[1].port(), &peers, &[]);
    wait_until(PATIENCE, "the peer is back", || (stat(&udp, "peers_up") == "1/1").then_some(()));
    let back = Udp::new(addrs[1]);
    wait_until(PATIENCE, "it caught up", || (listed(&back, "echo").len() == 1).then_some(()));
    assert_eq!(back.text(&format!("heartbeat {id}")), "OK");
}

#[test]
fn brokers_in_sync_exchange_digests_and_count_their_peer_bytes() {
    let (_brokers, addrs, _) = cluster(2, &[]);
    let udp: Vec<Udp> = addrs.iter().map(|&a| Udp::new(a)).collect();
    udp[0].text("register echo 4000");
    wait_until(PATIENCE, "the other lists it", || (listed(&udp[1], "echo").len() == 1).then_some(()));
    let (sent, bytes) = (stat_u64(&udp[0], "digests_sent"), stat_u64(&udp[0], "peer_bytes_out"));
    let since = Instant::now();
    // Three digests waited for, not a fixed time counted in: a loaded machine can only make
    // them later, so the bounds below (at most one a second, under 200 B/s) hold whatever
    // the load, and a broker that sent none fails here.
    wait_until(PATIENCE, "three more digests", || (stat_u64(&udp[0], "digests_sent") >= sent + 3).then_some(()));
    let took = since.elapsed();
    let digests = stat_u64(&udp[0], "digests_sent") - sent;
    let out = stat_u64(&udp[0], "peer_bytes_out") - bytes;
    let rate = out as f64 / took.as_secs_f64();
    eprintln!("{digests} digests in {took:?}, {rate:.0} peer bytes per second to one peer");
    // One digest a second to the one peer: the last three were a second apart or more.
    assert!(took >= Duration::from_millis(1900), "{digests} digests in {took:?}");
    // Hellos and digests, unsealed (about 25 B a digest), well under 200 B/s.
    assert!(out >= 3 * 20, "{out} bytes for {digests} digests");
    assert!(rate < 200.0, "{rate}");
    // In sync (one digest may have crossed the registration's delta).
    assert!(stat_u64(&udp[1], "digest_mismatches") <= 1);
    assert_eq!(stat_u64(&udp[1], "repairs_pushed") + stat_u64(&udp[0], "repairs_pushed"), 0);
    assert!(stat_u64(&udp[1], "peer_bytes_in") > 0);
}
