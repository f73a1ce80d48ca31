//! The mDNS row of protocol.md's amplification table ("Amplification", mDNS), measured on a
//! real broker as `amplification.rs` measures the others: `makler-broker --mdns 127.0.0.1`
//! (the loopback interface's link, 127.0.0.0/8) advertising 200 instances of `web`, asked for
//! `_web._tcp.local.` PTR with legacy unicast queries (from a port other than 5353, so the reply
//! goes to the querier) from loopback addresses standing for forged on-link sources. Each row
//! asserts the bound the table states. `--nocapture` prints the rows.
//!
//! The broker's socket is port 5353 of every address, shared (`SO_REUSEADDR`, `SO_REUSEPORT`)
//! as every mDNS responder's: any other socket on that port in the same namespace (another
//! broker with `--mdns 127.0.0.1`, another run of this test, a responder on the host) takes a
//! share of the unicast datagrams to 127.0.0.1:5353 (the kernel spreads them over the sockets
//! of the port by source address), or all of them (a socket bound to 127.0.0.1:5353 itself), and
//! spends the broker's reply budget with its own queries. So the measurement runs in a network
//! namespace of its own (loopback only, made here and deleted when done): the test starts its
//! own binary again inside it (`ip netns exec … <this test binary>
//! mdns_amplification::measure_in_a_namespace`), as [`mdns_peers`](super::mdns_peers) does,
//! and nothing else on the machine can reach the broker's port. Needs root (ignored, saying
//! so, otherwise).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use crate::common::PATIENCE;
use crate::common::{Udp, broker, stat, wait_until};

/// The instances advertised: more than one packet of PTRs.
const INSTANCES: u16 = 200;

/// The largest mDNS packet the responder sends.
const MAX_PACKET: usize = 1440;

/// A legacy unicast query for `_web._tcp.local.` PTR (33 bytes).
fn query() -> Vec<u8> {
    let mut message = Message::new(0x4d4b, MessageType::Query, OpCode::Query);
    message.queries.push(Query::query(Name::from_ascii("_web._tcp.local.").unwrap(), RecordType::PTR));
    message.to_vec().unwrap()
}

/// A socket on `ip` (any port but 5353) that waits `wait` for a reply.
fn source(ip: Ipv4Addr, wait: Duration) -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket
}

/// Every datagram that arrives at `socket` until it is quiet: (count, bytes).
fn drain(socket: &UdpSocket) -> (usize, usize) {
    let (mut count, mut bytes, mut buf) = (0, 0, [0u8; 9000]);
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        count += 1;
        bytes += n;
    }
    (count, bytes)
}

/// Every reply that arrives at `sockets`: until none came for 2 s, after the first (for which
/// it waits up to [`PATIENCE`]): a debug build works on each answer for tens of milliseconds on a
/// loaded machine, the replies of a batch of datagrams leave together, and a broker starved of
/// the CPU (two cores shared with builds and real-time benchmarks) may start late. (count, bytes).
fn gather(sockets: &[UdpSocket]) -> (usize, usize) {
    for socket in sockets {
        socket.set_nonblocking(true).unwrap();
    }
    let (mut total, mut total_bytes, mut last) = (0, 0, Instant::now());
    let quiet = |total: usize| if total == 0 { PATIENCE } else { Duration::from_secs(2) };
    while last.elapsed() < quiet(total) {
        std::thread::sleep(Duration::from_millis(50));
        for (count, bytes) in sockets.iter().map(drain) {
            (total, total_bytes) = (total + count, total_bytes + bytes);
            if count > 0 {
                last = Instant::now();
            }
        }
    }
    (total, total_bytes)
}

/// A network namespace with only loopback, up; dropping it deletes it.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Makes `mk<pid>amp`, its loopback up.
fn namespace() -> Namespace {
    let namespace = Namespace(format!("mk{}amp", std::process::id()));
    for step in [format!("netns add {}", namespace.0), format!("-n {} link set lo up", namespace.0)] {
        let output = Command::new("ip").args(step.split(' ')).output().expect("ip runs");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "cannot make a network namespace here: ip {step}: {}", error.trim());
    }
    namespace
}

/// The environment variable that tells [`measure_in_a_namespace`] it runs in its namespace.
const INSIDE: &str = "MAKLER_MDNS_AMPLIFICATION_NETNS";

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
fn the_mdns_rows_of_the_amplification_table_hold() {
    let namespace = namespace();
    let exe = std::env::current_exe().expect("the test binary's path");
    let args =
        ["mdns_amplification::measure_in_a_namespace", "--exact", "--ignored", "--nocapture", "--test-threads=1"];
    let output = Command::new("ip")
        .args(["netns", "exec", &namespace.0])
        .arg(exe)
        .args(args)
        .env(INSIDE, &namespace.0)
        .output()
        .expect("ip runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(output.status.success(), "the measurement failed in namespace {}", namespace.0);
    assert!(stdout.contains("1 passed"), "the measurement did not run: {stdout}");
    assert!(stdout.contains("| `_web._tcp.local.` PTR, legacy |"), "no row: {stdout}");
}

/// The measurement, inside the namespace [`the_mdns_rows_of_the_amplification_table_hold`]
/// made (see the module documentation); does nothing elsewhere.
#[test]
#[ignore = "run by the_mdns_rows_of_the_amplification_table_hold, inside a network namespace"]
fn measure_in_a_namespace() {
    if std::env::var_os(INSIDE).is_none() {
        return;
    }
    let broker = broker(&["--mdns", "127.0.0.1", "--ttl", "120"]);
    let udp = Udp::new(broker.addr("udp"));
    for i in 0..INSTANCES {
        let reply = udp.text(&format!("register web 10.9.{}.{} 8080", i / 250, 1 + i % 250));
        assert_eq!(reply.len(), 36, "{reply}");
    }
    let responder: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let query = query();
    // The instances are probed and announced (about 1 s), then answered.
    let probe = source(Ipv4Addr::new(127, 77, 0, 1), Duration::from_millis(200));
    wait_until(PATIENCE, "the broker answers on the link", || {
        probe.send_to(&query, responder).unwrap();
        let mut buf = [0u8; 9000];
        probe.recv_from(&mut buf).ok().map(drop)
    });
    std::thread::sleep(Duration::from_millis(1100));

    // One query: one packet, at most 1,440 bytes, truncated (TC).
    let one = source(Ipv4Addr::new(127, 78, 0, 1), Duration::from_secs(3));
    one.send_to(&query, responder).unwrap();
    let mut buf = [0u8; 9000];
    let (n, _) = one.recv_from(&mut buf).expect("an answer");
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert!(n <= MAX_PACKET && reply.truncation, "{n} bytes, TC {}", reply.truncation);
    assert_eq!(drain(&one), (0, 0), "one packet");
    let single = n as f64 / query.len() as f64;
    assert!(single <= 44.0, "{single}");

    // Forged sources, 400 of them, one query each, within a second: at most 64 replies in all.
    let sources: Vec<UdpSocket> = (0..400u16)
        .map(|i| source(Ipv4Addr::new(127, 80, (i / 200) as u8, 1 + (i % 200) as u8), Duration::from_millis(50)))
        .collect();
    let dropped_before = stat(&udp, "mdns_unicast_dropped");
    let started = Instant::now();
    for socket in &sources {
        socket.send_to(&query, responder).unwrap();
    }
    let took = started.elapsed();
    let (many, many_bytes) = gather(&sources);
    let many_ratio = many_bytes as f64 / (sources.len() * query.len()) as f64;
    if took < Duration::from_millis(900) {
        assert!((1..=64).contains(&many), "{many} replies to 400 sources within a second");
        assert!(many_ratio <= 7.0, "{many_ratio}");
    }
    // Those past the budget are counted (some of the 400 may not even reach the socket).
    let dropped = stat(&udp, "mdns_unicast_dropped") - dropped_before;
    assert!(dropped > 0, "the replies past the budget are counted");
    // A flood from one source: 4,000 queries within a second, at most 4 replies (the budget
    // of all sources is back a second later).
    std::thread::sleep(Duration::from_millis(1000));
    let flood = source(Ipv4Addr::new(127, 79, 0, 1), Duration::from_millis(300));
    let started = Instant::now();
    for _ in 0..4000 {
        flood.send_to(&query, responder).unwrap();
    }
    let took = started.elapsed();
    let (replies, bytes) = gather(std::slice::from_ref(&flood));
    let flood_ratio = bytes as f64 / (4000 * query.len()) as f64;
    if took < Duration::from_millis(900) {
        assert!((1..=4).contains(&replies), "{replies} replies to one source within a second");
    }
    assert!(flood_ratio <= 0.05, "{flood_ratio}");

    println!("| question | bytes → reply | one | flood, one source | flood, 400 sources |");
    println!(
        "| `_web._tcp.local.` PTR, legacy | {} → {n} (TC) | {single:.1} | {replies} replies, {flood_ratio:.3} | {many} replies, {many_ratio:.2} |",
        query.len()
    );
}
