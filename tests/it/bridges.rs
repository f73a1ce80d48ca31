//! Bridged brokers as real processes on loopback: two brokers that are not peers, each with
//! its own table, one asking the other (`--bridge`) for what it does not have.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use crate::common::{Process, Udp, client, listed, server, stat, wait_until};

fn broker(extra: &[&str]) -> Process {
    broker_at("127.0.0.1:0", extra)
}

fn broker_at(listen: &str, extra: &[&str]) -> Process {
    let mut args = vec!["--listen", listen, "--no-multicast", "--quiet"];
    args.extend_from_slice(extra);
    Process::start(env!("CARGO_BIN_EXE_makler-broker"), &args)
}

/// The lines of `stats` after the first that start with `prefix`.
fn stat_lines(udp: &Udp, prefix: &str) -> Vec<String> {
    udp.text("stats").lines().skip(1).filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
}

/// A UDP address on loopback where nothing listens (a dead bridge).
fn dead_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

#[test]
fn a_service_registered_only_at_a_is_answered_by_b_through_the_client_and_text() {
    let a = broker(&[]);
    let a_addr = a.addr("udp");
    let b = broker(&["--bridge", &a_addr.to_string()]);
    let (udp_a, udp_b) = (Udp::new(a_addr), Udp::new(b.addr("udp")));
    let upper = server("upper", a_addr, &["--quiet"]);
    let at_a = wait_until(PATIENCE, "the server registers at A", || {
        let listed = listed(&udp_a, "upper");
        (!listed.is_empty()).then_some(listed)
    });
    assert_eq!(listed(&udp_b, "upper"), at_a, "plain text query at B");
    // Asked for B's own instances only, B does not pass the query on.
    let bridged = stat(&udp_b, "bridged");
    assert_eq!(udp_b.text("query upper local"), "NOT FOUND");
    assert_eq!(stat(&udp_b, "bridged"), bridged);
    let (code, out, err) = client(&["--broker", &b.addr("udp").to_string(), "upper", "across"], "");
    assert_eq!((code, out.as_str()), (Some(0), "ACROSS\n"), "{err}");
    // Answered, not stored: B's table is empty.
    assert_eq!(stat(&udp_b, "instances"), 0);
    assert!(stat(&udp_b, "bridged_found") >= 1);
    assert!(stat(&udp_a, "bridge_queries") >= 1);
    let bridges = stat_lines(&udp_b, "bridge ");
    assert_eq!(bridges.len(), 1);
    assert!(bridges[0].starts_with(&format!("bridge {a_addr} up asked=")), "{bridges:?}");
    drop(upper);
}

#[test]
fn a_service_at_neither_is_not_found_and_two_sites_bridging_each_other_do_not_loop() {
    // Each broker must know the other's address before it starts: a port for B is reserved.
    let b_addr = dead_addr();
    let a = broker(&["--bridge", &b_addr.to_string()]);
    let b = broker_at(&b_addr.to_string(), &["--bridge", &a.addr("udp").to_string()]);
    let (udp_a, udp_b) = (Udp::new(a.addr("udp")), Udp::new(b.addr("udp")));
    let started = Instant::now();
    assert_eq!(udp_b.text("query nowhere"), "NOT FOUND");
    let took = started.elapsed();
    eprintln!("NOT FOUND from both sites after {took:?}");
    // A answered (NOT FOUND): B did not wait out the bound.
    let a_line = format!("bridge {} up asked=1 found=0 timeouts=0", a.addr("udp"));
    assert_eq!(stat_lines(&udp_b, "bridge "), [a_line]);
    // B asked A once; A answered from its own table and asked nobody.
    assert_eq!((stat(&udp_b, "bridged"), stat(&udp_a, "bridge_queries")), (1, 1));
    assert_eq!((stat(&udp_a, "bridged"), stat(&udp_b, "bridge_queries")), (0, 0));
    // And each finds the other's services.
    assert!(udp_a.text("register left 4001").len() == 36);
    assert!(udp_b.text("register right 4002").len() == 36);
    assert_eq!(listed(&udp_b, "left"), [SocketAddr::from(([127, 0, 0, 1], 4001))]);
    assert_eq!(listed(&udp_a, "right"), [SocketAddr::from(([127, 0, 0, 1], 4002))]);
    drop(b);
}

#[test]
fn a_dead_bridge_costs_the_bound_once_then_fails_fast_and_local_queries_go_on() {
    let dead = dead_addr();
    let b = broker(&["--bridge", &dead.to_string()]);
    let b_addr = b.addr("udp");
    let udp_b = Udp::new(b_addr);
    assert_eq!(udp_b.text("register web 8080").len(), 36);

    // One bridged query waits for the dead bridge; a local one meanwhile is answered first.
    let waiting = UdpSocket::bind("127.0.0.1:0").unwrap();
    waiting.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let sent = Instant::now();
    waiting.send_to(b"query echo", b_addr).unwrap();
    let local = UdpSocket::bind("127.0.0.1:0").unwrap();
    local.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    local.send_to(b"query web", b_addr).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = local.recv_from(&mut buf).unwrap();
    let local_took = sent.elapsed();
    assert_eq!(&buf[..n], b"127.0.0.1:8080\n");
    let (n, _) = waiting.recv_from(&mut buf).unwrap();
    let bridged_took = sent.elapsed();
    assert_eq!(&buf[..n], b"NOT FOUND\n");
    eprintln!("local answer after {local_took:?}, bridged NOT FOUND after {bridged_took:?}");
    assert!(local_took < bridged_took, "the local query did not wait for the bridged one");
    assert!(bridged_took >= Duration::from_millis(300), "{bridged_took:?}");

    // Now the bridge is down: the next queries are answered without asking it.
    assert_eq!(udp_b.text("query echo"), "NOT FOUND");
    assert_eq!(udp_b.text("query other"), "NOT FOUND");
    let bridges = stat_lines(&udp_b, "bridge ");
    assert_eq!(bridges, [format!("bridge {dead} down asked=1 found=0 timeouts=1")]);
    assert_eq!(stat(&udp_b, "bridged"), 3);
}
