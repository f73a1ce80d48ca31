//! The PROXY protocol end to end: `makler-balancer --send-proxy` writes the header every byte of
//! which a decoder written here from the specification checks (not the crate the balancer uses),
//! `makler-server --accept-proxy` reads it, and both interoperate with HAProxy.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::common::PATIENCE;
use crate::common::{Process, Udp, wait_until};

/// The v2 signature (section 2.2 of the specification).
const SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// A header read by hand, as the specification lays it out.
#[derive(Debug, PartialEq)]
struct Header {
    source: SocketAddr,
    destination: SocketAddr,
    len: usize,
}

/// Section 2.1: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, single spaces, at most 107
/// bytes, ports in decimal without leading zeros.
fn decode_v1(bytes: &[u8]) -> Header {
    let end = bytes.windows(2).position(|w| w == b"\r\n").expect("a CRLF") + 2;
    assert!(end <= 107, "a v1 header is at most 107 bytes");
    let line = std::str::from_utf8(&bytes[..end - 2]).expect("ASCII");
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 6, "{line:?}");
    assert_eq!(words[0], "PROXY");
    let source: IpAddr = words[2].parse().unwrap();
    let destination: IpAddr = words[3].parse().unwrap();
    match words[1] {
        "TCP4" => assert!(source.is_ipv4() && destination.is_ipv4()),
        "TCP6" => assert!(source.is_ipv6() && destination.is_ipv6()),
        other => panic!("protocol {other}"),
    }
    for port in &words[4..] {
        assert!(*port == "0" || !port.starts_with('0'), "no leading zero in {port}");
    }
    Header {
        source: SocketAddr::new(source, words[4].parse().unwrap()),
        destination: SocketAddr::new(destination, words[5].parse().unwrap()),
        len: end,
    }
}

/// Section 2.2: signature, version 2 and command PROXY (0x21), family and transport (0x11 TCP
/// over IPv4, 0x21 over IPv6), the length of what follows (network order), then the addresses
/// and ports in network order.
fn decode_v2(bytes: &[u8]) -> Header {
    assert_eq!(bytes[..12], SIGNATURE);
    assert_eq!(bytes[12], 0x21, "version 2, PROXY");
    let len = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    let a = &bytes[16..16 + len];
    let (source, destination) = match bytes[13] {
        0x11 => {
            assert_eq!(len, 12);
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&a[at..at + 4]).unwrap());
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            (SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))
        }
        0x21 => {
            assert_eq!(len, 36);
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&a[at..at + 16]).unwrap());
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            (SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))
        }
        other => panic!("family and transport {other:#x}"),
    };
    Header { source, destination, len: 16 + len }
}

/// Starts a balancer on `listen` writing `version` headers, with no health probes (a probe's
/// connect would reach the test's backend) and one backend: `backend`.
fn balancer_to(listen: &str, version: &str, backend: SocketAddr) -> Process {
    let args = [
        "--listen",
        listen,
        "--control",
        "127.0.0.1:0",
        "--service",
        "web",
        "--no-register",
        "--health-interval",
        "0",
        "--send-proxy",
        version,
        "--quiet",
    ];
    let balancer = Process::start(env!("CARGO_BIN_EXE_makler-balancer"), &args);
    let control = Udp::new(balancer.addr("udp"));
    let reply = control.text(&format!("register web {} {}", backend.ip(), backend.port()));
    assert!(!reply.starts_with("ERROR"), "{reply}");
    wait_until(PATIENCE, "the backend is in the pool", || {
        control.text("stats").contains(&format!("backend {backend} up")).then_some(())
    });
    balancer
}

/// Sends `hello` through `balancer` from a new connection and returns what the backend listening
/// on `backend` received first (up to the end of `hello`), with the client's own address.
fn through(balancer: SocketAddr, backend: &TcpListener) -> (Vec<u8>, SocketAddr) {
    let mut client = TcpStream::connect(balancer).unwrap();
    let from = client.local_addr().unwrap();
    client.write_all(b"hello").unwrap();
    let (mut accepted, _) = backend.accept().unwrap();
    accepted.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"hello") {
        let n = accepted.read(&mut buf).unwrap();
        assert!(n > 0, "the backend saw the end after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    (got, from)
}

#[test]
fn send_proxy_v1_writes_the_specifications_line_for_ipv4_and_ipv6() {
    for (listen, backend_at) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
        let backend = TcpListener::bind(backend_at).unwrap();
        let balancer = balancer_to(listen, "v1", backend.local_addr().unwrap());
        let (got, client) = through(balancer.addr("tcp"), &backend);
        let header = decode_v1(&got);
        assert_eq!(header, Header { source: client, destination: balancer.addr("tcp"), len: got.len() - 5 });
        let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
        let want = format!(
            "PROXY {family} {} {} {} {}\r\nhello",
            client.ip(),
            balancer.addr("tcp").ip(),
            client.port(),
            balancer.addr("tcp").port()
        );
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }
}

#[test]
fn send_proxy_v2_writes_the_specifications_bytes_for_ipv4_and_ipv6() {
    for (listen, backend_at) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
        let backend = TcpListener::bind(backend_at).unwrap();
        let balancer = balancer_to(listen, "v2", backend.local_addr().unwrap());
        let front = balancer.addr("tcp");
        let (got, client) = through(front, &backend);
        let header = decode_v2(&got);
        assert_eq!(header, Header { source: client, destination: front, len: got.len() - 5 });
        // Every byte, built here from the specification's layout.
        let mut want = SIGNATURE.to_vec();
        match (client.ip(), front.ip()) {
            (IpAddr::V4(c), IpAddr::V4(f)) => {
                want.extend_from_slice(&[0x21, 0x11, 0, 12]);
                want.extend_from_slice(&c.octets());
                want.extend_from_slice(&f.octets());
            }
            (IpAddr::V6(c), IpAddr::V6(f)) => {
                want.extend_from_slice(&[0x21, 0x21, 0, 36]);
                want.extend_from_slice(&c.octets());
                want.extend_from_slice(&f.octets());
            }
            other => panic!("{other:?}"),
        }
        want.extend_from_slice(&client.port().to_be_bytes());
        want.extend_from_slice(&front.port().to_be_bytes());
        want.extend_from_slice(b"hello");
        assert_eq!(got, want);
    }
}

/// Starts `makler-server --service http --accept-proxy` registered at `control`.
fn proxied_server(control: SocketAddr) -> Process {
    let control = control.to_string();
    let args = ["--service", "http", "--broker", &control, "--accept-proxy", "--quiet"];
    Process::start(env!("CARGO_BIN_EXE_makler-server"), &args)
}

/// One `GET /` on a new connection to `addr`: the client's own address and the body.
fn get(addr: SocketAddr) -> (SocketAddr, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let from = stream.local_addr().unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or(response);
    (from, body)
}

#[test]
fn the_server_behind_the_balancer_names_the_real_client_with_both_versions() {
    for version in ["v1", "v2"] {
        let balancer = crate::common::balancer("web", None, &["--send-proxy", version]);
        let control = Udp::new(balancer.addr("udp"));
        let server = proxied_server(balancer.addr("udp"));
        wait_until(PATIENCE, "the server is registered", || {
            control.text("stats").contains(&format!("backend {} up", server.addr("tcp"))).then_some(())
        });
        let (client, body) = get(balancer.addr("tcp"));
        assert_eq!(body, format!("served by {} for client {client}\n", server.addr("tcp")));
    }
}

#[test]
fn the_server_refuses_a_client_that_skips_the_proxy() {
    let args = ["--service", "http", "--no-register", "--accept-proxy", "--quiet"];
    let server = Process::start(env!("CARGO_BIN_EXE_makler-server"), &args);
    let (_, body) = get(server.addr("tcp"));
    assert_eq!(body, "", "closed without an answer");
}

#[test]
fn the_header_goes_first_whatever_the_client_sends_and_its_end_follows() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let balancer = balancer_to("127.0.0.1:0", "v1", backend.local_addr().unwrap());
    // Nothing sent, the sending side closed at once; then a request and a close together.
    for sent in [&b""[..], b"GET / HTTP/1.0\r\n\r\n"] {
        let mut client = TcpStream::connect(balancer.addr("tcp")).unwrap();
        let from = client.local_addr().unwrap();
        client.write_all(sent).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let (mut accepted, _) = backend.accept().unwrap();
        accepted.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        accepted.read_to_end(&mut got).unwrap();
        let header = decode_v1(&got);
        assert_eq!(header.source, from);
        assert_eq!(&got[header.len..], sent, "then the client's bytes and the end of its stream");
        // The way back still works after the client's half-close.
        accepted.write_all(b"bye").unwrap();
        drop(accepted);
        let mut answer = Vec::new();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"bye");
    }
}

/// A backend that requires the header and declares an HTTP check stays up behind
/// `--send-proxy`: the balancer's checks carry a `LOCAL` (v2) or `UNKNOWN` (v1) header too, as
/// HAProxy's do; without it every check failed and the backend was marked down for good.
#[test]
fn http_checks_carry_the_header_to_a_server_that_requires_it() {
    for version in ["v1", "v2"] {
        // A check that fails for want of the header fails at once (the server closes); one that
        // is only slow on a loaded machine has 10 s before it counts as failed.
        let args = ["--send-proxy", version, "--health-interval", "0.1", "--fall", "1", "--connect-timeout", "10"];
        let balancer = crate::common::balancer("web", None, &args);
        let control = Udp::new(balancer.addr("udp"));
        let broker = balancer.addr("udp").to_string();
        let server_args = ["--service", "http", "--broker", &broker, "--accept-proxy", "--check", "http:/", "--quiet"];
        let server = Process::start(env!("CARGO_BIN_EXE_makler-server"), &server_args);
        let up = format!("backend {} up", server.addr("tcp"));
        wait_until(PATIENCE, "the server is registered", || control.text("stats").contains(&up).then_some(()));
        // Ten check intervals: one failed check (--fall 1) would have marked it down.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            let stats = control.text("stats");
            assert!(stats.contains(&up), "{version}: {stats}");
        }
        let (client, body) = get(balancer.addr("tcp"));
        assert_eq!(body, format!("served by {} for client {client}\n", server.addr("tcp")));
    }
}
