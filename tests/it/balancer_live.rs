//! The balancer's liveness: it leaves the broker while no backend is up and comes back with one;
//! a hung backend that keeps heartbeating costs at most one stall per thread; connections are
//! spread over the forwarding threads; SIGTERM drains the connections in flight.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use crate::common::{Udp, balancer, broker, http_get, listed, server, stat, wait_until};

/// A value of the first line of the balancer's `stats`.
fn summary(control: &Udp, key: &str) -> String {
    let stats = control.text("stats");
    let first = stats.lines().next().unwrap_or_default().to_owned();
    first
        .split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
        .unwrap_or_else(|| panic!("{key} in {first}"))
}

#[test]
fn the_balancer_leaves_the_broker_while_no_backend_is_up_and_returns_with_one() {
    let broker = broker(&[]);
    let udp = Udp::new(broker.addr("udp"));
    let lb = balancer("web", Some(broker.addr("udp")), &["--health-interval", "0.2", "--ttl", "30"]);
    let mut backend = server("http", lb.addr("udp"), &[]);
    wait_until(PATIENCE, "the balancer is registered", || (listed(&udp, "web") == [lb.addr("tcp")]).then_some(()));
    // Killed: it cannot deregister, and its lease at the balancer lasts 30 s; the health checks
    // find it down, and with no backend up the balancer deregisters.
    backend.child.kill().unwrap();
    backend.child.wait().unwrap();
    wait_until(PATIENCE, "the balancer left the broker", || listed(&udp, "web").is_empty().then_some(()));
    let _again = server("http", lb.addr("udp"), &[]);
    wait_until(PATIENCE, "the balancer is back", || (listed(&udp, "web") == [lb.addr("tcp")]).then_some(()));
    assert!(http_get(lb.addr("tcp")).is_ok());
}

/// A listener never accepted from, whose queue is full: connects to it hang.
pub(crate) fn black_hole() -> (socket2::Socket, Vec<TcpStream>, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    while let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        held.push(stream);
        assert!(held.len() < 64, "the listen queue never filled");
    }
    (socket, held, addr)
}

#[test]
fn a_hung_backend_that_keeps_heartbeating_stalls_at_most_once_a_thread() {
    // A stall is a connect to the hung backend waiting out its 2 s timeout, and the balancer
    // counts each as a redispatch: the count, not the requests' wall time, is asserted, so a
    // loaded machine cannot make a request look like a stall.
    let lb = balancer("web", None, &["--health-interval", "0.5", "--connect-timeout", "2", "--threads", "2"]);
    let _live = server("http", lb.addr("udp"), &[]);
    let (_hole, _held, hole) = black_hole();
    // Something keeps the hung backend's registration alive: it heartbeats every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeats = {
        let (stop, control) = (Arc::clone(&stop), lb.addr("udp"));
        std::thread::spawn(move || {
            let udp = Udp::new(control);
            let id = udp.text(&format!("register web {} {}", hole.ip(), hole.port()));
            while !stop.load(Ordering::SeqCst) {
                assert_eq!(udp.text(&format!("heartbeat {id}")), "OK");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let control = Udp::new(lb.addr("udp"));
    wait_until(PATIENCE, "both backends are registered", || (summary(&control, "backends") == "2").then_some(()));
    let mut slow = 0;
    for _ in 0..100 {
        let asked = Instant::now();
        http_get(lb.addr("tcp")).expect("every request is answered");
        slow += usize::from(asked.elapsed() > Duration::from_secs(1));
    }
    stop.store(true, Ordering::SeqCst);
    heartbeats.join().unwrap();
    let stalls = stat(&control, "redispatches");
    eprintln!("{stalls} connects to the hung backend timed out; {slow} requests took over a second");
    assert!(stalls <= 2, "{stalls} stalls: heartbeats must not bring the hung backend back");
    assert_eq!(stat(&control, "failed"), 0);
}

#[test]
fn connections_are_spread_over_the_threads_and_the_round_robin_stays_exact() {
    let lb = balancer("web", None, &["--threads", "2"]);
    let control = Udp::new(lb.addr("udp"));
    let servers: Vec<_> = (0..3).map(|_| server("http", lb.addr("udp"), &[])).collect();
    wait_until(PATIENCE, "three backends", || (summary(&control, "backends") == "3").then_some(()));
    let mut counts = std::collections::HashMap::new();
    for _ in 0..300 {
        *counts.entry(http_get(lb.addr("tcp")).unwrap()).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&n| n == 100), "{counts:?}");
    let split: Vec<u64> = summary(&control, "threads").split('/').map(|n| n.parse().unwrap()).collect();
    eprintln!("connections per thread: {split:?}");
    assert_eq!(split.iter().sum::<u64>(), 300);
    assert!(split.iter().all(|&n| n >= 60), "both threads take a share: {split:?}");
    drop(servers);
}

#[test]
fn sigterm_drains_connections_in_flight_and_stops_accepting() {
    // A TTL longer than the patient wait below: the balancer's leaving is seen from its
    // deregistration, never from its lease running out.
    let broker = broker(&["--ttl", "120"]);
    let udp = Udp::new(broker.addr("udp"));
    let mut lb = balancer("web", Some(broker.addr("udp")), &["--drain-timeout", "5"]);
    let _slow = server("http", lb.addr("udp"), &["--work-ms", "800"]);
    wait_until(PATIENCE, "the balancer is registered", || (listed(&udp, "web").len() == 1).then_some(()));
    let target = lb.addr("tcp");
    let in_flight = std::thread::spawn(move || http_get(target));
    // The request is in flight (the backend takes 800 ms); then SIGTERM.
    let control = Udp::new(lb.addr("udp"));
    wait_until(PATIENCE, "the request is in flight", || (summary(&control, "active") == "1").then_some(()));
    let pid = lb.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    wait_until(PATIENCE, "the balancer deregistered", || listed(&udp, "web").is_empty().then_some(()));
    wait_until(PATIENCE, "it stopped accepting", || {
        TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err().then_some(())
    });
    let answer = in_flight.join().unwrap().expect("the request in flight is answered");
    assert!(answer.starts_with("served by"), "{answer}");
    let status = wait_until(PATIENCE, "the balancer exits", || lb.child.try_wait().ok().flatten());
    assert!(status.success());
    let _ = UdpSocket::bind("127.0.0.1:0");
}
