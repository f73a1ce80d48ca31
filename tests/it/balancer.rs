//! The balancer binary with real backends: round robin, failover, half-close, the connection
//! cap, idle timeout, and its registration at the broker.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use crate::common::{Process, Udp, balancer, broker, http_get, listed, server, tcp_row, wait_until};
use makler::protocol::{Request, Response};

/// The balancer's `stats` reply, parsed: backend address -> (up, total).
fn backends(control: &Udp) -> HashMap<SocketAddr, (bool, u64)> {
    let stats = control.text("stats");
    stats
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("backend ")?.split(' ');
            let addr = words.next()?.parse().ok()?;
            let up = words.next()? == "up";
            let total = words.find_map(|w| w.strip_prefix("total="))?.parse().ok()?;
            Some((addr, (up, total)))
        })
        .collect()
}

fn summary(control: &Udp, key: &str) -> u64 {
    let stats = control.text("stats");
    let first = stats.lines().next().unwrap_or_default().to_owned();
    first
        .split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {first}"))
}

/// A balancer with `n` http backends registered at its control port.
fn with_backends(n: usize, args: &[&str]) -> (Process, Vec<Process>, Udp) {
    let balancer = balancer("web", None, args);
    let control = Udp::new(balancer.addr("udp"));
    let servers: Vec<_> = (0..n).map(|_| server("http", balancer.addr("udp"), &[])).collect();
    wait_until(PATIENCE, "every backend is registered", || (backends(&control).len() == n).then_some(()));
    (balancer, servers, control)
}

#[test]
fn round_robin_is_even() {
    let (balancer, servers, control) = with_backends(3, &[]);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *counts.entry(http_get(balancer.addr("tcp")).unwrap()).or_default() += 1;
    }
    let expected: HashMap<String, usize> =
        servers.iter().map(|s| (format!("served by {}\n", s.addr("tcp")), 100)).collect();
    assert_eq!(counts, expected);
    assert!(backends(&control).values().all(|&(up, total)| up && total == 100));
    assert_eq!(summary(&control, "total"), 300);
}

#[test]
fn a_dead_backend_costs_no_client_a_failure_once_detected() {
    let (balancer, mut servers, control) = with_backends(3, &["--health-interval", "0.2"]);
    let target = balancer.addr("tcp");
    let stop = Arc::new(AtomicBool::new(false));
    // (started, ok) for every request.
    let log = Arc::new(Mutex::new(Vec::<(Instant, bool)>::new()));
    const CLIENTS: usize = 4;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, log) = (Arc::clone(&stop), Arc::clone(&log));
            std::thread::spawn(move || {
                // Bounded: at most 20,000 requests or until told to stop.
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let started = Instant::now();
                    let ok = http_get(target).is_ok();
                    log.lock().unwrap().push((started, ok));
                }
            })
        })
        .collect();
    wait_until(PATIENCE, "load is flowing", || (log.lock().unwrap().len() > 100).then_some(()));

    let victim = servers[1].addr("tcp");
    servers[1].child.kill().unwrap();
    servers[1].child.wait().unwrap();
    // Dead and reaped: its sockets are closed from here on.
    let dead_at = Instant::now();
    let detected_at = wait_until(PATIENCE, "the balancer marks the victim down", || {
        (backends(&control).get(&victim).map(|&(up, _)| up) == Some(false)).then(Instant::now)
    });
    let after = Instant::now();
    wait_until(PATIENCE, "more load has flowed", || {
        (log.lock().unwrap().iter().filter(|(t, _)| *t > after).count() > 200).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }

    let log = log.lock().unwrap();
    let failed_before: Vec<_> = log.iter().filter(|(t, ok)| !ok && *t <= detected_at).collect();
    let failed_after = log.iter().filter(|(t, ok)| !ok && *t > detected_at).count();
    assert_eq!(failed_after, 0, "{} requests in all", log.len());
    // Before detection, only requests already in flight on the victim can fail.
    assert!(failed_before.len() <= CLIENTS, "{} failed", failed_before.len());
    assert!(failed_before.iter().all(|(t, _)| *t <= dead_at), "a request started after the victim died failed");
}

#[test]
fn a_half_close_is_passed_on() {
    let balancer = balancer("echo", None, &[]);
    let control = Udp::new(balancer.addr("udp"));
    let _echo = server("echo", balancer.addr("udp"), &[]);
    wait_until(PATIENCE, "the backend is registered", || (backends(&control).len() == 1).then_some(()));

    let mut stream = TcpStream::connect(balancer.addr("tcp")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"first line\nno newline").unwrap();
    // Our end of sending reaches the server as end of stream: it answers the partial line and
    // closes, which reaches us as end of stream in turn.
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "first line\nno newline\n");
}

#[test]
fn the_balancer_registers_after_its_first_backend_and_deregisters_after_its_last() {
    let broker = broker(&[]);
    let udp = Udp::new(broker.addr("udp"));
    let balancer = balancer("web", Some(broker.addr("udp")), &[]);
    let control = Udp::new(balancer.addr("udp"));
    assert_eq!(udp.text("query web"), "NOT FOUND", "no backend, no registration");

    let mut first = server("http", balancer.addr("udp"), &[]);
    wait_until(PATIENCE, "the balancer is registered", || {
        (listed(&udp, "web") == [balancer.addr("tcp")]).then_some(())
    });
    let mut second = server("http", balancer.addr("udp"), &[]);
    wait_until(PATIENCE, "both backends are in", || (backends(&control).len() == 2).then_some(()));
    assert!(first.terminate().success());
    wait_until(PATIENCE, "one backend is left", || (backends(&control).len() == 1).then_some(()));
    assert_eq!(listed(&udp, "web"), [balancer.addr("tcp")], "still registered with one backend");
    assert!(second.terminate().success());
    wait_until(PATIENCE, "the balancer deregisters", || (udp.text("query web") == "NOT FOUND").then_some(()));

    let _third = server("http", balancer.addr("udp"), &[]);
    wait_until(PATIENCE, "it registers again", || (listed(&udp, "web") == [balancer.addr("tcp")]).then_some(()));
    assert!(http_get(balancer.addr("tcp")).is_ok());
}

#[test]
fn a_connection_beyond_the_cap_is_refused_not_hung() {
    let (balancer, _servers, control) = with_backends(1, &["--max-connections", "2"]);
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(balancer.addr("tcp")).unwrap()).collect();
    wait_until(PATIENCE, "both are forwarded", || (summary(&control, "active") == 2).then_some(()));

    let mut third = TcpStream::connect(balancer.addr("tcp")).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    match third.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed, got {other:?} after {:?}", started.elapsed()),
    }
    assert_eq!(summary(&control, "refused"), 1);
    drop(held);
    wait_until(PATIENCE, "the held ones are closed", || (summary(&control, "active") == 0).then_some(()));
    assert!(http_get(balancer.addr("tcp")).is_ok(), "below the cap again");
}

#[test]
fn refused_backends_are_skipped_and_marked_down() {
    let (balancer, servers, control) = with_backends(1, &["--health-interval", "0"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    assert_eq!(control.text(&format!("register web 127.0.0.1 {}", closed.port())).len(), 36);
    wait_until(PATIENCE, "the dead backend is in", || (backends(&control).len() == 2).then_some(()));
    for _ in 0..10 {
        assert_eq!(http_get(balancer.addr("tcp")).unwrap(), format!("served by {}\n", servers[0].addr("tcp")));
    }
    let state = backends(&control);
    assert_eq!(state[&closed], (false, 0), "tried once, marked down, never used");
    assert_eq!(state[&servers[0].addr("tcp")], (true, 10));
    assert_eq!(summary(&control, "failed"), 0);
}

#[test]
fn idle_connections_time_out() {
    let (balancer, _servers, control) = with_backends(1, &["--idle-timeout", "0.3"]);
    let mut idle = TcpStream::connect(balancer.addr("tcp")).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(idle.read(&mut buf).unwrap(), 0);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(summary(&control, "active"), 0);
}

#[test]
fn the_control_port_speaks_the_binary_protocol_too() {
    let (_balancer, servers, _control) = with_backends(2, &[]);
    let mut control = Udp::new(_balancer.addr("udp"));
    let Response::BalancerStats(stats) = control.binary(&Request::Stats) else { panic!("not balancer stats") };
    assert_eq!(stats["backend_count"], 2);
    let mut addrs: Vec<_> = stats.backends.iter().map(|b| b.addr).collect();
    addrs.sort();
    let mut expected: Vec<_> = servers.iter().map(|s| s.addr("tcp")).collect();
    expected.sort();
    assert_eq!(addrs, expected);
    let Response::Registered { id, .. } = control.binary(&Request::Register { service: "web", ip: None, port: 9 })
    else {
        panic!("not registered")
    };
    assert_eq!(control.binary(&Request::Heartbeat { id }), Response::Ok);
    assert_eq!(control.binary(&Request::Deregister { id }), Response::Ok);
    assert_eq!(control.text("query web").split(' ').count(), 2, "queries work on the control port too");
}

#[test]
fn a_backend_marked_down_comes_back_when_a_probe_succeeds() {
    let (balancer, _servers, control) = with_backends(1, &["--health-interval", "0.1"]);
    // A port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let late: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(control.text(&format!("register web 127.0.0.1 {port}")).len(), 36);
    wait_until(PATIENCE, "the probe marks it down", || {
        (backends(&control).get(&late).map(|&(up, _)| up) == Some(false)).then_some(())
    });
    let listen = late.to_string();
    let _now_alive = Process::start(
        env!("CARGO_BIN_EXE_makler-server"),
        &["--service", "http", "--listen", &listen, "--no-register"],
    );
    wait_until(PATIENCE, "a probe marks it up again", || {
        (backends(&control).get(&late).map(|&(up, _)| up) == Some(true)).then_some(())
    });
    let served: Vec<_> = (0..4).map(|_| http_get(balancer.addr("tcp")).unwrap()).collect();
    assert!(served.contains(&format!("served by {late}\n")), "{served:?}");
}

#[test]
fn sigterm_on_the_balancer_deregisters_it_from_the_broker() {
    let broker = broker(&["--ttl", "60"]);
    let udp = Udp::new(broker.addr("udp"));
    let mut balancer = balancer("web", Some(broker.addr("udp")), &[]);
    let _backend = server("http", balancer.addr("udp"), &[]);
    wait_until(PATIENCE, "the balancer is registered", || {
        (listed(&udp, "web") == [balancer.addr("tcp")]).then_some(())
    });
    assert!(balancer.terminate().success());
    assert_eq!(udp.text("query web"), "NOT FOUND", "gone before the process exited, long before the TTL");
}

/// A balancer (no health checks) with one backend of the test's own: `serve` runs on a thread
/// with the backend's listener, registered at the balancer before this returns.
fn with_own_backend(
    serve: impl FnOnce(std::net::TcpListener) + Send + 'static,
) -> (Process, Udp, std::thread::JoinHandle<()>) {
    let balancer = balancer("web", None, &["--health-interval", "0"]);
    let control = Udp::new(balancer.addr("udp"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = std::thread::spawn(move || serve(listener));
    assert_eq!(control.text(&format!("register web 127.0.0.1 {port}")).len(), 36);
    wait_until(PATIENCE, "the backend is registered", || (backends(&control).len() == 1).then_some(()));
    (balancer, control, backend)
}

#[test]
fn a_backend_that_closes_first_is_passed_on_whether_the_client_stays_or_resets() {
    // A backend that answers at once and closes first.
    let (balancer, control, backend) = with_own_backend(|listener| {
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"bye\n").unwrap();
        }
    });

    // A client that keeps its side open gets the answer and then the end of the stream (the
    // backend's end is passed on as a shutdown).
    let mut stays = TcpStream::connect(balancer.addr("tcp")).unwrap();
    stays.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    stays.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "bye\n");
    // A client that resets once it has its answer (the balancer reads it before it would shut
    // it down).
    let resets = TcpStream::connect(balancer.addr("tcp")).unwrap();
    resets.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0; 4];
    (&resets).read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"bye\n");
    socket2::SockRef::from(&resets).set_linger(Some(Duration::ZERO)).unwrap();
    drop(resets);
    backend.join().unwrap();
    // The first client still may send; once it closes too, both connections are gone.
    drop(stays);
    wait_until(PATIENCE, "both connections closed", || (summary(&control, "active") == 0).then_some(()));
    assert_eq!(summary(&control, "total"), 2);
    assert_eq!(summary(&control, "failed"), 0);
}

/// Segments `stream` has received so far (`segs_in` in `ss -i`, from the kernel's `TCP_INFO`), or
/// `None` where `ss` (iproute2) is missing.
fn segments_in(stream: &TcpStream) -> u32 {
    let port = stream.local_addr().unwrap().port();
    let out = std::process::Command::new("ss")
        .args(["-Htina", &format!("sport = :{port}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss (apt-get install iproute2): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("segs_in:")?.parse().ok())
        .unwrap_or_else(|| panic!("no segs_in for port {port} in: {text}"))
}

#[test]
#[cfg_attr(not(has_ss), ignore = "ss is not installed (apt-get install iproute2)")]
fn the_last_bytes_and_the_end_of_the_stream_reach_the_client_in_one_segment() {
    // A backend that speaks first and closes, its answer and its FIN in one segment (corked);
    // it keeps the socket until the client has its answer, so nothing else (a reset) follows.
    fn corked_bye(listener: std::net::TcpListener) {
        let (stream, _) = listener.accept().unwrap();
        socket2::SockRef::from(&stream).set_tcp_cork(true).unwrap();
        (&stream).write_all(b"bye\n").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let _ = (&stream).read(&mut [0; 1]);
    }
    let (balancer, _control, backend) = with_own_backend(corked_bye);
    // The same answer straight from a corked sender, for the count a merged end gives.
    let direct_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let direct_addr = direct_listener.local_addr().unwrap();
    let direct_backend = std::thread::spawn(move || corked_bye(direct_listener));
    let read_all = |addr: SocketAddr| {
        let mut client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "bye\n");
        segments_in(&client)
    };
    let direct = read_all(direct_addr);
    let through = read_all(balancer.addr("tcp"));
    direct_backend.join().unwrap();
    backend.join().unwrap();
    assert_eq!(through, direct, "segments received through the balancer and straight from a corked sender");
}

#[test]
fn a_large_answer_to_a_slow_client_arrives_whole_and_in_order() {
    // 16 MiB, each byte telling its place, so a byte lost, repeated or moved shows. The client
    // waits before reading, so the buffers fill and the balancer holds the rest back and sends it
    // in pieces as the client drains them.
    const LEN: usize = 16 << 20;
    let pattern = |i: usize| (i % 251) as u8;
    let (balancer, control, backend) = with_own_backend(move |listener| {
        let (mut stream, _) = listener.accept().unwrap();
        let data: Vec<u8> = (0..LEN).map(pattern).collect();
        stream.write_all(&data).unwrap();
    });
    let mut client = TcpStream::connect(balancer.addr("tcp")).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The client reads nothing until its buffers are full: bytes wait unread at its end, and
    // the balancer's end holds bytes the client's window has no room for (on loopback, bytes in
    // flight are acknowledged at once).
    let (at_balancer, at_client) = (balancer.addr("tcp"), client.local_addr().unwrap());
    wait_until(PATIENCE, "the client's buffers are full", || {
        let (client_end, balancer_end) = (tcp_row(at_client, at_balancer)?, tcp_row(at_balancer, at_client)?);
        (client_end.receive_queue > 0 && balancer_end.send_queue > 0).then_some(())
    });
    let mut received = Vec::with_capacity(LEN);
    let mut chunk = vec![0; 7_000];
    loop {
        match client.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("after {} of {LEN} bytes: {e}", received.len()),
        }
    }
    backend.join().unwrap();
    assert_eq!(received.len(), LEN);
    if let Some(at) = (0..LEN).find(|&i| received[i] != pattern(i)) {
        panic!("byte {at} is {} where {} was sent", received[at], pattern(at));
    }
    drop(client);
    wait_until(PATIENCE, "the connection closed", || (summary(&control, "active") == 0).then_some(()));
}
