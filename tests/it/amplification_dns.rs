//! The DNS-SD rows of protocol.md's amplification table ("Amplification"), measured on the DNS
//! face: browsing, SRV and TXT questions about instances that carry the most metadata an instance
//! may hold (1,024 bytes of TXT data), over plain UDP (512 bytes) and with EDNS (1,232), for one
//! question and for a flood of them from one address. As in `amplification.rs`, loopback is not
//! exempt from the rate limit and each kind is asked from an address of its own (`127.K.0.1`).
//! `--nocapture` prints the rows.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{Udp, broker};

/// Questions in a flood.
const FLOOD: usize = 4000;

/// How long a flood is expected to take; a slower one lets the flood bound grow in proportion.
const FLOOD_TIME: Duration = Duration::from_millis(300);

/// A DNS query for `name` (dotted, absolute) of type `qtype`, with an OPT record offering
/// 1,232 bytes when `edns`.
fn question(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut out = vec![0x42, 0x42, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    if edns {
        out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    out
}

const PTR: u16 = 12;
const TXT: u16 = 16;
const SRV: u16 = 33;

/// A socket on `127.k.0.1` with room for every reply.
fn source(k: u8) -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&SocketAddr::from((Ipv4Addr::new(127, k, 0, 1), 0)).into()).unwrap();
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    socket
}

/// The reply's size to one question, the single and flood ratios, and how long the flood took.
fn measure(dns: SocketAddr, k: u8, query: &[u8]) -> (usize, f64, f64, Duration) {
    let socket = source(k);
    let mut buf = [0u8; 4096];
    // The broker may still be working through the previous kind's flood (a debug build on a
    // loaded machine took most of a minute for one), and this question waits behind it in the
    // face's socket: ask until it answers, every 300 ms (the socket's wait) for two minutes.
    let single = (0..400)
        .find_map(|_| {
            socket.send_to(query, dns).unwrap();
            socket.recv_from(&mut buf).ok().map(|(n, _)| n)
        })
        .unwrap_or(0);
    while socket.recv_from(&mut buf).is_ok() {}
    let reader = socket.try_clone().unwrap();
    let started = Instant::now();
    let replies = std::thread::spawn(move || {
        let (mut bytes, mut buf, mut last) = (0usize, [0u8; 4096], started);
        while let Ok((n, _)) = reader.recv_from(&mut buf) {
            bytes += n;
            last = Instant::now();
        }
        (bytes, last)
    });
    for chunk in 0..FLOOD / 100 {
        for _ in 0..100 {
            socket.send_to(query, dns).unwrap();
        }
        if chunk % 2 == 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let sent = started.elapsed();
    let (out, last) = replies.join().unwrap();
    let took = last.saturating_duration_since(started).max(sent);
    let flood = out as f64 / (FLOOD * query.len()) as f64;
    (single, single as f64 / query.len() as f64, flood, took)
}

#[test]
fn dns_sd_answers_with_the_largest_metadata_stay_within_their_stated_amplification() {
    let process =
        broker(&["--dns", "127.0.0.1:0", "--rate-limit", "200", "--rate-limit-exempt", "192.0.2.0/24", "--ttl", "600"]);
    let (control, dns) = (Udp::new(process.addr("udp")), process.addr("dns"));
    // 20 instances, each with four pairs of 255 bytes: 1,024 bytes of TXT data.
    let pairs: String = (0..4).map(|i| format!(" k{i}={}", "v".repeat(252))).collect();
    for i in 0..20 {
        let reply = control.text(&format!("register big 127.200.{i}.1 40000{pairs}"));
        assert_eq!(reply.len(), 36, "{reply}");
    }
    let instance = "127-200-0-1:40000._big._tcp.makler.";
    let kinds: Vec<(&str, Vec<u8>, (f64, f64))> = vec![
        ("`_services._dns-sd._udp` PTR", question("_services._dns-sd._udp.makler.", PTR, false), (2.0, 1.0)),
        ("`_big._tcp` PTR (browse)", question("_big._tcp.makler.", PTR, false), (17.0, 3.0)),
        ("`_big._tcp` PTR (browse), EDNS", question("_big._tcp.makler.", PTR, true), (20.0, 5.0)),
        ("`<instance>._big._tcp` SRV", question(instance, SRV, false), (3.0, 1.0)),
        ("`<instance>._big._tcp` TXT", question(instance, TXT, false), (1.05, 1.05)),
        ("`<instance>._big._tcp` TXT, EDNS", question(instance, TXT, true), (20.0, 4.0)),
    ];
    let mut failures = Vec::new();
    for (k, (name, query, bounds)) in (70u8..).zip(&kinds) {
        let (reply, single, flood, took) = measure(dns, k, query);
        eprintln!("| {name} | {} → {reply} | {single:.2} | {flood:.2} | {took:?} |", query.len());
        assert!(reply > 0, "{name}: no answer");
        let slower = (took.as_secs_f64() / FLOOD_TIME.as_secs_f64()).max(1.0);
        if single > bounds.0 || flood > bounds.1 * slower {
            failures.push(format!("{name}: {single:.2} single, {flood:.2} flooded in {took:?}; bounds {bounds:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
