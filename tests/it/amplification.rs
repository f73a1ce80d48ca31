//! The amplification table of protocol.md ("Amplification"), measured: for every request kind, text
//! and binary, the bytes the broker sends towards a source for the bytes it receives from it, for
//! one request and for a flood of them from one source. Loopback is not exempt here (the
//! broker's `--rate-limit-exempt` names another network), so loopback addresses stand for any
//! LAN host, and each kind is sent from an address of its own (`127.K.0.1`, a /24 of its own),
//! so that the limits one kind spends do not touch the next. Each row asserts the bound the
//! table states, so the table cannot go stale silently. `--nocapture` prints the table, and with
//! `AMP_DEBUG` set each request and its single reply too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Udp, broker, stat};
use makler::protocol::{Check, Request, binary};

/// Requests in a flood: past the acknowledgements' own burst of 2,048.
const FLOOD: usize = 4000;

/// A socket on `127.k.0.1` with room for every reply, so that only the broker decides what
/// arrives.
fn source(k: u8) -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&SocketAddr::from((Ipv4Addr::new(127, k, 0, 1), 0)).into()).unwrap();
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    socket
}

/// Reads replies from `socket` until `answered` is set (the broker answered a `stats` sent
/// after the requests) and nothing more waits; returns their bytes, their count, and when the
/// last arrived.
fn drain(socket: &UdpSocket, answered: &AtomicBool, started: Instant) -> (usize, u64, Instant) {
    let (mut bytes, mut count, mut buf, mut last) = (0usize, 0u64, [0u8; 2048], started);
    loop {
        // Read before the wait, so that a wait that ends empty after it means all was read.
        let finished = answered.load(Ordering::SeqCst);
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                (bytes, count, last) = (bytes + n, count + 1, Instant::now());
            }
            Err(_) if finished => return (bytes, count, last),
            Err(_) => {}
        }
    }
}

/// Makes a request from the socket that sends it.
type Make = Box<dyn Fn(&UdpSocket, SocketAddr) -> Vec<u8>>;

/// One request kind: its name in the table, and how to make the request from the socket that
/// sends it (a cookie echoed must first be asked for from there).
struct Kind {
    name: &'static str,
    /// At most this many bytes out per byte in, for a single request and under a flood.
    bounds: (f64, f64),
    make: Make,
}

fn kind(name: &'static str, bounds: (f64, f64), make: impl Fn(&UdpSocket, SocketAddr) -> Vec<u8> + 'static) -> Kind {
    Kind { name, bounds, make: Box::new(make) }
}

fn text(line: &'static str) -> impl Fn(&UdpSocket, SocketAddr) -> Vec<u8> {
    move |_, _| line.as_bytes().to_vec()
}

fn bin(request: Request<'static>) -> impl Fn(&UdpSocket, SocketAddr) -> Vec<u8> {
    move |_, _| {
        let mut out = Vec::new();
        binary::encode_request(7, &request, &mut out);
        out
    }
}

/// Asks for a watch's cookie from `socket`.
fn cookie(socket: &UdpSocket, broker: SocketAddr, form_binary: bool) -> u64 {
    let mut buf = [0u8; 2048];
    // Asked again every 300 ms (the socket's wait) for 30 s: a loaded machine may answer late.
    for _ in 0..100 {
        if form_binary {
            let mut out = Vec::new();
            binary::encode_request(7, &Request::Watch { service: "big" }, &mut out);
            socket.send_to(&out, broker).unwrap();
        } else {
            socket.send_to(b"watch big\n", broker).unwrap();
        }
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if form_binary {
                if let Ok((_, makler::protocol::Response::WatchCookie { cookie })) = binary::decode_response(&buf[..n])
                {
                    return cookie;
                }
            } else if let Some(hex) = std::str::from_utf8(&buf[..n]).ok().and_then(|r| r.strip_prefix("COOKIE ")) {
                return u64::from_str_radix(hex.trim(), 16).unwrap();
            }
        }
    }
    panic!("no cookie");
}

/// How long a flood may take the broker, from the first request sent to the last reply, for
/// the bounds to hold as stated: a slower run (a loaded machine) gives the buckets more time to
/// refill, and its bounds grow in proportion.
const FLOOD_TIME: Duration = Duration::from_millis(300);

/// Single and flood ratios of `kind`, sent from `127.k.0.1`, and how long the flood took.
fn measure(broker: SocketAddr, control: &Udp, k: u8, kind: &Kind) -> (usize, usize, f64, f64, Duration) {
    let socket = source(k);
    let request = (kind.make)(&socket, broker);
    let mut buf = [0u8; 2048];
    while socket.recv_from(&mut buf).is_ok() {}
    socket.send_to(&request, broker).unwrap();
    // The broker takes its socket's datagrams in order: once it answered a `stats` sent after
    // the request, the reply (if any) has arrived, however loaded the machine.
    let _ = stat(control, "received");
    let single = socket.recv_from(&mut buf).map_or(0, |(n, _)| n);
    if std::env::var_os("AMP_DEBUG").is_some() {
        eprintln!(
            "{}: {:?} -> {:?}",
            kind.name,
            String::from_utf8_lossy(&request),
            String::from_utf8_lossy(&buf[..single])
        );
    }

    // The flood, paced a little so that the broker's socket buffer takes it all; what arrives
    // is counted as it comes (until the broker has answered everything, as above, not until a
    // pause), and what the broker received is its own count.
    let before = stat(control, "received");
    let reader = socket.try_clone().unwrap();
    let started = Instant::now();
    let answered = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&answered);
    let replies = std::thread::spawn(move || drain(&reader, &done, started));
    for chunk in 0..FLOOD / 100 {
        for _ in 0..100 {
            socket.send_to(&request, broker).unwrap();
        }
        if chunk % 2 == 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let sent = started.elapsed();
    // Less this `stats` request itself.
    let received = (stat(control, "received") - before - 1) as usize;
    answered.store(true, Ordering::SeqCst);
    let (out, _, last) = replies.join().unwrap();
    let took = last.saturating_duration_since(started).max(sent);
    let flood = out as f64 / (received * request.len()) as f64;
    (request.len(), single, single as f64 / request.len() as f64, flood, took)
}

fn run(kinds: &[Kind], first_k: u8) {
    let broker = broker(&["--rate-limit", "200", "--rate-limit-exempt", "192.0.2.0/24", "--ttl", "600"]);
    let to = broker.addr("udp");
    let control = Udp::new(to);
    // 60 instances: a query's answer is near the datagram limit.
    for i in 0..60 {
        assert!(!control.text(&format!("register big 127.200.{i}.1 40000")).starts_with("ERROR"));
    }
    let mut failures = Vec::new();
    for (k, kind) in (first_k..).zip(kinds) {
        let (request, reply, single, flood, took) = measure(to, &control, k, kind);
        eprintln!("| {} | {request} | {reply} | {single:.2} | {flood:.2} | {took:?} |", kind.name);
        let slower = (took.as_secs_f64() / FLOOD_TIME.as_secs_f64()).max(1.0);
        if single > kind.bounds.0 || flood > kind.bounds.1 * slower {
            failures.push(format!(
                "{}: {single:.2} single, {flood:.2} flooded in {took:?}; bounds {:?} (the flood's × {slower:.2})",
                kind.name, kind.bounds
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let udp = Udp::new(to);
    assert!(stat(&udp, "acks_dropped") > 0, "the floods of acknowledgements went past their bound");
}

/// An id no lease has: what a forger sends.
const ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

#[test]
fn every_text_request_stays_within_its_stated_amplification() {
    let kinds = vec![
        kind("register", (1.5, 1.2), text("register big 127.201.0.1 80")),
        kind("register … check=tcp", (1.1, 1.0), text("register big 127.202.0.1 80 check=tcp")),
        kind("register … path=/ version=2", (1.0, 1.0), text("register big 127.205.0.1 80 path=/ version=2")),
        kind("heartbeat", (0.3, 0.3), text(concat!("heartbeat ", "67e55044-10b1-426f-9247-bb680e5fe0c8"))),
        kind("deregister", (0.3, 0.3), text("deregister 67e55044-10b1-426f-9247-bb680e5fe0c8")),
        kind("report", (0.5, 1.0), text("report big 127.203.0.1:9")),
        kind("query", (140.0, 14.0), text("query big")),
        kind("query … local", (80.0, 8.0), text("query big local")),
        kind("services", (5.0, 1.0), text("services")),
        kind("instances", (110.0, 13.0), text("instances big")),
        kind("stats", (160.0, 15.0), text("stats")),
        kind("watch", (3.0, 3.0), text("watch big")),
        kind("watch <cookie> (forged)", (1.0, 1.0), text("watch big 00c0ffee00c0ffee")),
        kind("watch <cookie>", (50.0, 7.0), |s, b| format!("watch big {:016x}", cookie(s, b, false)).into_bytes()),
        kind("unwatch (no cookie)", (5.0, 1.0), text("unwatch big")),
        kind("unwatch <cookie> (forged)", (2.0, 1.0), text("unwatch big 00c0ffee00c0ffee")),
        kind("unwatch <cookie>", (1.0, 1.0), |s, b| format!("unwatch big {:016x}", cookie(s, b, false)).into_bytes()),
    ];
    run(&kinds, 10);
}

#[test]
fn every_binary_request_stays_within_its_stated_amplification() {
    let id = uuid::Uuid::parse_str(ID).unwrap();
    let ip = |d: u8| Some(IpAddr::V4(Ipv4Addr::new(127, 204, d, 1)));
    let kinds = vec![
        kind("Register", (2.0, 1.5), bin(Request::Register { service: "big", ip: ip(0), port: 80 })),
        kind(
            "RegisterChecked",
            (2.0, 1.5),
            bin(Request::RegisterChecked { service: "big", ip: ip(1), port: 80, check: Check::Tcp }),
        ),
        kind(
            "RegisterMeta",
            (1.5, 1.2),
            bin(Request::RegisterMeta {
                service: "big",
                ip: ip(2),
                port: 80,
                check: Check::None,
                meta: vec![("path", "/"), ("version", "2")],
            }),
        ),
        kind("Heartbeat", (0.2, 0.2), bin(Request::Heartbeat { id })),
        kind("Deregister", (0.2, 0.2), bin(Request::Deregister { id })),
        kind("Report", (0.3, 1.5), bin(Request::Report { service: "big", endpoint: "127.203.0.1:9".parse().unwrap() })),
        kind("Query", (80.0, 10.0), bin(Request::Query { service: "big" })),
        kind("QueryLocal", (80.0, 10.0), bin(Request::QueryLocal { service: "big" })),
        kind("Services", (3.0, 1.5), bin(Request::Services { cursor: 0 })),
        kind("Instances", (200.0, 30.0), bin(Request::Instances { service: "big", cursor: 0 })),
        kind("InstancesChecked", (200.0, 30.0), bin(Request::InstancesChecked { service: "big", cursor: 0 })),
        kind("Stats", (250.0, 25.0), bin(Request::Stats)),
        kind("Watch", (3.0, 3.0), bin(Request::Watch { service: "big" })),
        kind("WatchEcho (forged)", (3.0, 3.0), bin(Request::WatchEcho { service: "big", cookie: 0xc0ffee })),
        kind("WatchEcho", (40.0, 5.0), |s, b| {
            let cookie = cookie(s, b, true);
            let mut out = Vec::new();
            binary::encode_request(7, &Request::WatchEcho { service: "big", cookie }, &mut out);
            out
        }),
        kind("Unwatch (no cookie)", (1.0, 1.0), bin(Request::Unwatch { service: "big" })),
        kind("UnwatchEcho (forged)", (1.0, 1.0), bin(Request::UnwatchEcho { service: "big", cookie: 0xc0ffee })),
        kind("UnwatchEcho", (1.0, 1.0), |s, b| {
            let cookie = cookie(s, b, true);
            let mut out = Vec::new();
            binary::encode_request(7, &Request::UnwatchEcho { service: "big", cookie }, &mut out);
            out
        }),
    ];
    run(&kinds, 40);
}

/// A registration forged in one address's name, repeated as fast as one socket sends: the address gets at
/// most 2,048 acknowledgements at once and 2,048 a second after, every registration is still
/// carried out, and the rest are counted.
#[test]
fn forged_registrations_draw_a_bounded_number_of_acknowledgements() {
    let broker = broker(&["--rate-limit-exempt", "192.0.2.0/24"]);
    let to = broker.addr("udp");
    let victim = source(90);
    let reader = victim.try_clone().unwrap();
    let control = Udp::new(to);
    let before = stat(&control, "received");
    let started = Instant::now();
    let answered = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&answered);
    let acks = std::thread::spawn(move || drain(&reader, &done, started));
    let sent = 10_000u64;
    for i in 0..sent {
        victim.send_to(b"register forged 127.205.0.1 80", to).unwrap();
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let sending = started.elapsed();
    // Answered after the flood (see `drain`).
    let dropped = stat(&control, "acks_dropped");
    answered.store(true, Ordering::SeqCst);
    let (_, acks, last) = acks.join().unwrap();
    // The broker took the flood in from the first datagram to its last answer (at the latest):
    // its buckets refilled for no longer than that.
    let seconds = last.saturating_duration_since(started).max(sending).as_secs_f64();
    // What the broker took of the flood (its socket may have lost some on a loaded machine),
    // less the `stats` that asked, and so what it sent: its own count, whatever this socket lost.
    let taken = stat(&control, "received") - before - 2;
    let answered = taken - dropped;
    eprintln!("{acks} acknowledgements for {sent} registrations in {seconds:.2} s, {taken} taken, {dropped} dropped");
    let bound = 2048 + (2048.0 * (seconds + 0.05)).ceil() as u64;
    assert!(answered <= bound, "{answered} acknowledgements, at most {bound}");
    assert!(acks <= answered, "{acks} arrived of {answered} sent");
    assert!(answered >= 2048.min(taken), "the first burst is whole: {answered} of {taken}");
    assert!(taken >= 2048, "the broker took a flood: {taken} of {sent}");
    assert_eq!(stat(&control, "instances"), 1, "and carried out");
}
