//! Declared health checks, as real processes on loopback: an instance that declares no check is
//! never probed (a heartbeating UDP-only service stays through a minute of health checks, a
//! report of one does not remove it), an HTTP check removes a server that answers 500 and keeps
//! one that answers 200, and `makler-server` declares its checks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use crate::common::{Udp, broker, listed, server, stat, wait_until};

/// The `check=` of each instance of `service` in the `instances` listing.
fn listed_checks(udp: &Udp, service: &str) -> Vec<String> {
    let page = udp.text(&format!("instances {service}"));
    page.lines().skip(1).filter_map(|line| line.split(" check=").nth(1).map(str::to_owned)).collect()
}

/// A loopback port where nothing listens for TCP: a connect to it is refused.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A tiny HTTP server answering every request with `status`, recording each request's head.
/// It stops when dropped.
struct HttpServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start(status: &'static str) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (seen, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut head = Vec::new();
                let mut buf = [0; 512];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            }
        });
        HttpServer { addr, requests, stop, thread: Some(thread) }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_heartbeating_udp_only_service_stays_through_a_minute_of_health_checks() {
    // Heartbeats every second, the TTL ten times that: a stalled second or two loses nothing.
    let mut process = broker(&["--ttl", "10", "--probe-interval", "1"]);
    let udp = Udp::new(process.addr("udp"));
    // A UDP-only service: a bound UDP socket, no TCP listener on its port. It registers with
    // the bare form, which declares no check.
    let service = UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = service.local_addr().unwrap();
    let id = udp.text(&format!("register dns {}", endpoint.port()));
    assert_eq!(id.len(), 36, "{id}");
    // A control: a dead TCP service that declares a check is removed by the same checks.
    let dead = closed_port();
    let dead_id = udp.text(&format!("register dead {} {} check=tcp", dead.ip(), dead.port()));
    assert_eq!(listed(&udp, "dead"), [dead]);

    // The text form has no request ids: a reply that comes after its request was sent again
    // stays queued and would be read as the next request's. So each kind of request has a
    // socket of its own, where a late reply is the same answer again.
    let (beat, dead_beat, look) = (Udp::new(udp.peer), Udp::new(udp.peer), Udp::new(udp.peer));
    let started = Instant::now();
    let mut last_heartbeat = started;
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(60) {
        if last_heartbeat.elapsed() >= Duration::from_secs(1) {
            assert_eq!(beat.text(&format!("heartbeat {id}")), "OK");
            // The dead one heartbeats too (until it is removed): only a probe removes it.
            dead_beat.text(&format!("heartbeat {dead_id}"));
            last_heartbeat = Instant::now();
        }
        assert_eq!(listed(&look, "dns"), [endpoint], "dropped after {:?}", started.elapsed());
        rounds += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("listed at each of {rounds} looks over 60 s of probing every second");
    assert!(listed(&Udp::new(udp.peer), "dead").is_empty(), "the checked dead one went");
    assert_eq!(stat(&udp, "removed_unreachable"), 1, "only the checked dead one");
    // Two probes found the dead one dead; the UDP-only one was never probed.
    assert_eq!(stat(&udp, "probes"), 2);
    assert_eq!(listed_checks(&Udp::new(udp.peer), "dns"), ["none"]);
    process.terminate();
}

#[test]
fn a_report_of_an_instance_without_a_check_does_not_remove_it() {
    let mut process = broker(&["--ttl", "30", "--probe-interval", "0"]);
    let udp = Udp::new(process.addr("udp"));
    // Nothing listens there, so a probe would be refused and remove it at once.
    let dead = closed_port();
    udp.text(&format!("register udp-only {} {}", dead.ip(), dead.port()));
    udp.text(&format!("register tcp-dead {} {} check=tcp", dead.ip(), dead.port()));
    assert_eq!(udp.text(&format!("report udp-only {dead}")), "OK");
    wait_until(PATIENCE, "the report is counted", || (stat(&udp, "reports_unchecked") == 1).then_some(()));
    // The same endpoint under a service that declared a check goes on a report: the probes work.
    assert_eq!(udp.text(&format!("report tcp-dead {dead}")), "OK");
    wait_until(PATIENCE, "the checked one is gone", || listed(&udp, "tcp-dead").is_empty().then_some(()));
    assert_eq!(listed(&udp, "udp-only"), [dead], "the unchecked one stays");
    assert_eq!(stat(&udp, "probes"), 1);
    process.terminate();
}

#[test]
fn an_http_check_removes_a_server_answering_500_and_keeps_one_answering_200() {
    let healthy = HttpServer::start("200 OK");
    let failing = HttpServer::start("500 Internal Server Error");
    // A TTL no wait below comes near: only a check removes anything here.
    let mut process = broker(&["--ttl", "600", "--probe-interval", "1"]);
    let udp = Udp::new(process.addr("udp"));
    for server in [&healthy, &failing] {
        let (ip, port) = (server.addr.ip(), server.addr.port());
        assert_eq!(udp.text(&format!("register web {ip} {port} check=http:/health")).len(), 36);
    }
    assert_eq!(listed_checks(&udp, "web"), ["http:/health", "http:/health"]);
    let registered = Instant::now();
    // Two failed checks, a second apart, each at its own phase of the interval: within 3 s on a
    // quiet machine. When checks are due is the prober's unit tests with time passed in
    // (`src/probe/tests.rs`); here the waits are patient, and what shows the checks removed it
    // (not its expiry) is `removed_unreachable` below and the two checks the server answered.
    wait_until(PATIENCE, "the failing server is removed", || (listed(&udp, "web") == [healthy.addr]).then_some(()));
    eprintln!("the 500 server went after {:?}", registered.elapsed());
    assert!(failing.requests.lock().unwrap().len() >= 2, "checked twice before it went");
    // The healthy one answers every check and stays.
    wait_until(PATIENCE, "the healthy one is checked three times", || {
        (healthy.requests.lock().unwrap().len() >= 3).then_some(())
    });
    assert_eq!(listed(&udp, "web"), [healthy.addr]);
    let request = healthy.requests.lock().unwrap()[0].clone();
    assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request:?}");
    assert!(request.contains(&format!("\r\nHost: {}\r\n", healthy.addr)), "{request:?}");
    assert!(request.contains("\r\nConnection: close\r\n"), "{request:?}");
    assert_eq!(stat(&udp, "removed_unreachable"), 1);
    process.terminate();
}

#[test]
fn makler_server_declares_tcp_and_http_checks() {
    let mut process = broker(&["--ttl", "30"]);
    let at = process.addr("udp");
    let udp = Udp::new(at);
    let _echo = server("echo", at, &["--no-multicast"]);
    let _http = server("http", at, &["--no-multicast"]);
    let _udp_like = server("time", at, &["--no-multicast", "--register-as", "clock", "--check", "none"]);
    for (service, check) in [("echo", "tcp"), ("http", "http:/"), ("clock", "none")] {
        wait_until(PATIENCE, service, || (listed_checks(&udp, service) == [check]).then_some(()));
    }
    process.terminate();
}
