//! The broker binary over real UDP sockets: every text line of the protocol, the binary form,
//! expiry, hostile input and a clean stop.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::{PATIENCE, Udp, broker, wait_until};
use makler::protocol::{Rejection, Request, Response, binary};

fn is_uuid(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok() && text.len() == 36
}

#[test]
fn every_text_line_works() {
    let broker = broker(&[]);
    let udp = Udp::new(broker.addr("udp"));

    let first = udp.text("register echo 4000");
    assert!(is_uuid(&first), "{first}");
    assert_eq!(udp.text("register echo 4000"), first, "registering again keeps the id");
    let second = udp.text("register echo 127.0.0.2 4001");
    assert!(is_uuid(&second) && second != first, "{second}");
    let v6 = udp.text("REGISTER upper ::1 5000\n");
    assert!(is_uuid(&v6), "{v6}");

    let a = udp.text("query echo");
    let b = udp.text("request echo");
    let c = udp.text("Query echo\n");
    assert_eq!(a, "127.0.0.1:4000 127.0.0.2:4001");
    assert_eq!(b, "127.0.0.2:4001 127.0.0.1:4000");
    assert_eq!(c, a);
    assert_eq!(udp.text("query upper"), "[::1]:5000");
    assert_eq!(udp.text("query time"), "NOT FOUND");

    assert_eq!(udp.text(&format!("heartbeat {first}")), "OK");
    assert_eq!(udp.text("heartbeat 00000000-0000-0000-0000-000000000001"), "NOT FOUND");
    assert!(udp.text("heartbeat nonsense").starts_with("ERROR bad id \"nonsense\""));
    assert_eq!(udp.text(&format!("deregister {second}")), "OK");
    assert_eq!(udp.text(&format!("deregister {second}")), "NOT FOUND");
    assert_eq!(udp.text(&format!("heartbeat {second}")), "NOT FOUND");
    assert_eq!(udp.text("query echo"), "127.0.0.1:4000");

    assert_eq!(
        udp.text("fetch echo"),
        "ERROR unknown command \"fetch\": expected register, heartbeat, query, request, deregister, report, stats, services, list, instances, watch or unwatch"
    );
    assert_eq!(
        udp.text("register echo"),
        "ERROR usage: register <service> [<ip>] <port> [check=tcp|check=http:<path>|check=none] [<key>=<value> ...]"
    );
    assert_eq!(
        udp.text("register echo 0.0.0.0 80"),
        "ERROR address 0.0.0.0 cannot be registered: it is the unspecified address"
    );
    assert_eq!(
        udp.text("register bad/name 80"),
        "ERROR bad service name \"bad/name\": '/' is not allowed; use ASCII letters, digits and \"-_.\""
    );
    assert!(udp.text("stats").starts_with("instances=2 services=2 "));
}

#[test]
fn the_binary_form_offers_every_operation() {
    let broker = broker(&[]);
    let mut udp = Udp::new(broker.addr("udp"));
    let Response::Registered { id, ttl_ms: 5000 } =
        udp.binary(&Request::Register { service: "echo", ip: None, port: 4000 })
    else {
        panic!("not registered")
    };
    assert_eq!(
        udp.binary(&Request::Query { service: "echo" }),
        Response::Instances(vec!["127.0.0.1:4000".parse().unwrap()])
    );
    assert_eq!(udp.binary(&Request::Heartbeat { id }), Response::Ok);
    assert_eq!(udp.binary(&Request::Deregister { id }), Response::Ok);
    assert_eq!(udp.binary(&Request::Heartbeat { id }), Response::NotFound);
    assert_eq!(udp.binary(&Request::Query { service: "echo" }), Response::NotFound);
    assert_eq!(
        udp.binary(&Request::Register { service: "echo", ip: Some("224.0.0.1".parse().unwrap()), port: 1 }),
        Response::Error(Rejection::UnusableIp {
            ip: "224.0.0.1".parse().unwrap(),
            why: "it is a multicast address".into()
        })
    );
    let Response::Stats(stats) = udp.binary(&Request::Stats) else { panic!("no stats") };
    assert_eq!((stats["instances"], stats["received"], stats["rejected"]), (0, 8, 1));

    let reply = udp.raw(&[0x85, 1, 2, 3]);
    assert_eq!(
        binary::decode_response(&reply),
        Ok((0, Response::Error(Rejection::UnsupportedVersion { got: 5, supported: 1 })))
    );
}

/// `--ttl` is the lease a registration gets, and it runs out: not before the TTL, and by expiry.
/// That it runs out exactly at the TTL is the registry's unit test with time passed in
/// (`an_instance_expires_exactly_at_the_ttl`); a wall-clock upper bound here would be one a
/// loaded machine breaks, so the wait is patient and the lease's length is read from the reply.
#[test]
fn registrations_expire_within_the_ttl() {
    // A TTL a loaded machine cannot overrun between the register and the first query.
    let broker = broker(&["--ttl", "1"]);
    let mut udp = Udp::new(broker.addr("udp"));
    let registered_at = Instant::now();
    let Response::Registered { id, ttl_ms } = udp.binary(&Request::Register { service: "echo", ip: None, port: 4000 })
    else {
        panic!("not registered")
    };
    assert_eq!(ttl_ms, 1000, "the lease is --ttl long");
    assert_eq!(udp.text("query echo"), "127.0.0.1:4000");
    wait_until(PATIENCE, "the registration expires", || (udp.text("query echo") == "NOT FOUND").then_some(()));
    assert!(registered_at.elapsed() >= Duration::from_secs(1), "expired before the TTL");
    assert_eq!(udp.text(&format!("heartbeat {id}")), "NOT FOUND");
    assert!(udp.text("stats").contains(" expired=1 "));
}

#[test]
fn heartbeats_keep_a_registration_alive_past_the_ttl() {
    // Heartbeats every 50 ms or so, the TTL 40 times that: a loaded machine that stalls this
    // test or the broker for a second (seen at a load average of 11) still renews in time. The
    // run is two and a half TTLs.
    let broker = broker(&["--ttl", "2"]);
    let udp = Udp::new(broker.addr("udp"));
    let id = udp.text("register echo 4000");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        assert_eq!(udp.text(&format!("heartbeat {id}")), "OK");
        assert_eq!(udp.text("query echo"), "127.0.0.1:4000");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_burst_of_malformed_datagrams_changes_nothing() {
    let broker = broker(&[]);
    let udp = Udp::new(broker.addr("udp"));
    let id = udp.text("register echo 4000");

    let hostile = Udp::new(broker.addr("udp"));
    let mut sent = HashSet::new();
    for i in 0..1000u32 {
        let datagram: Vec<u8> = match i % 8 {
            0 => vec![],
            1 => vec![b'x'; 2000],
            2 => vec![0xff, 0xfe, 0xfd],
            3 => vec![0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 42],
            4 => vec![0x9f; 64],
            5 => format!("register echo{i} 99999").into_bytes(),
            6 => format!("deregister {}", &id[..35]).into_bytes(),
            _ => i.to_le_bytes().iter().cycle().take(1 + i as usize % 300).copied().collect(),
        };
        hostile.socket.send_to(&datagram, hostile.peer).expect("send");
        sent.insert(datagram);
    }

    assert_eq!(udp.text("query echo"), "127.0.0.1:4000");
    assert_eq!(udp.text(&format!("heartbeat {id}")), "OK");
    let stats = udp.text("stats");
    let field = |name: &str| -> u64 {
        stats.split(' ').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok()).expect(name)
    };
    assert_eq!(field("instances"), 1);
    // Everything but our four good requests was rejected and counted (the kernel may drop
    // some of a burst before the broker sees it, never after).
    assert_eq!(field("rejected"), field("received") - 4, "{stats}");
    assert!(field("received") > 4, "{stats}");
}

#[test]
fn sigterm_stops_the_broker_cleanly() {
    let mut broker = broker(&[]);
    let udp = Udp::new(broker.addr("udp"));
    assert_eq!(udp.text("query echo"), "NOT FOUND");
    assert!(broker.terminate().success());
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for flags in [["--ttl", "0"], ["--ttl", "soon"], ["--max-datagram", "10"], ["--listen", "nowhere"]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_makler-broker")).args(flags).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flags[0]), "{flags:?}: {stderr}");
    }
}
