//! `--http`: the broker's and the balancer's HTTP face. The JSON catalog's shapes (parsed with
//! serde_json), `/metrics` as on `--metrics`, and slow clients bounded while the UDP face keeps
//! answering.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Udp, wait_until};

/// How long a test waits for an answer that must come. Generous: a debug build on a loaded
/// 2-core machine builds a 2 MiB answer in seconds, and a wait that ends early is a flaky test,
/// not a finding (what must be quick is asserted by what happens, never by a clock).
const PATIENCE: Duration = Duration::from_secs(60);

/// One request of `target` on a new connection: the status, the headers (names lower-cased)
/// and the body, read to the end (the face closes every connection).
fn request(addr: SocketAddr, method: &str, target: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the http face");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "{method} {target} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("the face answers and closes");
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(end) = parsed.parse(&response).expect("an HTTP answer") else {
        panic!("a partial head: {response:?}")
    };
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let body = response[end..].to_vec();
    if method == "GET" {
        let length = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
        assert_eq!(length, Some(body.len()), "Content-Length matches the body");
    }
    (parsed.code.unwrap(), headers, body)
}

/// A GET whose answer is JSON: the status and the parsed body.
fn json(addr: SocketAddr, target: &str) -> (u16, Value) {
    let (status, headers, body) = request(addr, "GET", target);
    assert!(headers.contains(&("content-type".into(), "application/json".into())), "{headers:?}");
    assert!(headers.contains(&("cache-control".into(), "no-store".into())), "{headers:?}");
    (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{target}: {e}: {body:?}")))
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[test]
fn the_broker_catalog_shows_services_instances_checks_and_metadata() {
    let broker = common::broker(&["--http", "127.0.0.1:0", "--probe-interval", "0.2", "--ttl", "60"]);
    let http = broker.addr("http");
    let udp = Udp::new(broker.addr("udp"));
    // A live server to check, and one that declares no check.
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let live_addr = live.local_addr().unwrap();
    let id = udp.text(&format!("register echo 127.0.0.1 {} check=tcp version=1.4", live_addr.port()));
    assert!(is_uuid(&id), "{id}");
    udp.text("register echo 127.0.0.1 4001");
    udp.text("register time 127.0.0.1 4002");

    let (status, services) = json(http, "/v1/services");
    assert_eq!(status, 200);
    assert_eq!(services["node"]["addr"], broker.addr("udp").to_string());
    assert_eq!(services["node"]["cluster"], "makler");
    assert_eq!(services["node"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(services["node"]["ttl_s"], 60.0);
    assert_eq!(services["truncated"], false);
    let list: Vec<(&str, u64)> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["instances"].as_u64().unwrap()))
        .collect();
    assert_eq!(list, [("echo", 2), ("time", 1)]);
    let (_, one) = json(http, "/v1/services?limit=1");
    assert_eq!(one["services"].as_array().unwrap().len(), 1);
    assert_eq!(one["services"][0]["name"], "echo");
    assert_eq!(one["truncated"], true);

    // Sorted by address: port 4001 before the listener's (above 32768 on Linux).
    let echo = wait_until(PATIENCE, "the checked instance passes", || {
        let (status, echo) = json(http, "/v1/services/echo");
        assert_eq!(status, 200);
        (echo["instances"][1]["check_state"] == "passing").then_some(echo)
    });
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["truncated"], false);
    let instances = echo["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    let checked = &instances[1];
    assert_eq!(checked["id"], id.as_str());
    assert_eq!(checked["addr"], live_addr.to_string());
    assert_eq!(checked["check"], "tcp");
    assert_eq!(checked["meta"]["version"], "1.4");
    assert_eq!(checked["origin"], "registered");
    assert_eq!(checked["leases"], 1);
    assert!(checked["age_s"].as_f64().unwrap() >= 0.0);
    let left = checked["ttl_left_s"].as_f64().unwrap();
    // Within the TTL; how much of it went by is the machine's business.
    assert!(left > 0.0 && left <= 60.0, "{left}");
    let plain = &instances[0];
    assert_eq!(plain["addr"], "127.0.0.1:4001");
    assert!(is_uuid(plain["id"].as_str().unwrap()));
    assert_eq!(plain["check"], Value::Null);
    assert_eq!(plain["check_state"], "unchecked");
    assert_eq!(plain["meta"], serde_json::json!({}));

    let (_, limited) = json(http, "/v1/services/echo?limit=1");
    assert_eq!(limited["instances"].as_array().unwrap().len(), 1);
    assert_eq!(limited["truncated"], true);

    let (status, missing) = json(http, "/v1/services/nope");
    assert_eq!((status, missing), (404, serde_json::json!({"error": "not found", "name": "nope"})));
    assert_eq!(json(http, "/v1/backends").0, 404);
    assert_eq!(json(http, "/v1/services?limit=x").0, 400);
    assert_eq!(request(http, "DELETE", "/v1/services/echo").0, 405);
    let (status, headers, body) = request(http, "HEAD", "/v1/services");
    assert_eq!(status, 200);
    assert!(body.is_empty() && headers.iter().any(|(n, _)| n == "content-length"));
}

#[test]
fn metadata_from_the_network_is_escaped() {
    let broker = common::broker(&["--http", "127.0.0.1:0"]);
    let udp = Udp::new(broker.addr("udp"));
    let reply = udp.text(r#"register echo 127.0.0.1 4000 note=<script>"x"</script>"#);
    assert!(is_uuid(&reply), "{reply}");
    let (status, echo) = json(broker.addr("http"), "/v1/services/echo");
    assert_eq!(status, 200);
    let meta = &echo["instances"][0]["meta"];
    assert_eq!(meta["note"], r#"<script>"x"</script>"#);
}

/// Free UDP ports on loopback, reserved just long enough to read them back.
fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    sockets.iter().map(|s| s.local_addr().unwrap().port()).collect()
}

#[test]
fn peers_show_each_other() {
    let ports = free_ports(2);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let a = common::Process::start(
        env!("CARGO_BIN_EXE_makler-broker"),
        &["--listen", &addrs[0], "--peers", &addrs[1], "--no-multicast", "--quiet", "--http", "127.0.0.1:0"],
    );
    let _b = common::Process::start(
        env!("CARGO_BIN_EXE_makler-broker"),
        &["--listen", &addrs[1], "--peers", &addrs[0], "--no-multicast", "--quiet"],
    );
    Udp::new(a.addr("udp")).text("register echo 127.0.0.1 4000");
    let peers = wait_until(PATIENCE, "the peer is up and complete", || {
        let (status, peers) = json(a.addr("http"), "/v1/peers");
        assert_eq!(status, 200);
        (peers["peers"][0]["state"] == "up" && peers["peers"][0]["complete"] == true).then_some(peers)
    });
    let list = peers["peers"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["addr"], addrs[1].as_str());
    // Heard from lately (it is up): within the peer timeout, however loaded the machine.
    assert!(list[0]["last_heard_s"].as_f64().is_some_and(|s| s >= 0.0), "{peers}");
    assert!(list[0]["instances"].is_u64());
    assert_eq!(peers["bridges"], serde_json::json!([]));
}

#[test]
fn the_balancer_shows_its_backends_and_their_connections() {
    let balancer = common::balancer("web", None, &["--http", "127.0.0.1:0", "--quiet", "--policy", "least-conn"]);
    let http = balancer.addr("http");
    let servers = [
        common::server("http", balancer.addr("udp"), &["--quiet"]),
        common::server("http", balancer.addr("udp"), &["--quiet"]),
    ];
    let backends = wait_until(PATIENCE, "both backends are registered and up", || {
        let (status, backends) = json(http, "/v1/backends");
        assert_eq!(status, 200);
        let list = backends["backends"].as_array().unwrap();
        (list.len() == 2 && list.iter().all(|b| b["state"] == "up")).then_some(backends)
    });
    assert_eq!(backends["service"], "web");
    assert_eq!(backends["policy"], "least-conn");
    let mut want: Vec<String> = servers.iter().map(|s| s.addr("tcp").to_string()).collect();
    want.sort();
    let got: Vec<&str> = backends["backends"].as_array().unwrap().iter().map(|b| b["addr"].as_str().unwrap()).collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got, got_sorted, "sorted by address");
    assert_eq!(got_sorted, want);
    assert_eq!(backends["backends"][0]["weight"], 1);

    // A connection held open through the balancer shows on its backend.
    let mut open = TcpStream::connect(balancer.addr("tcp")).unwrap();
    open.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let sum = |backends: &Value, key: &str| -> u64 {
        backends["backends"].as_array().unwrap().iter().map(|b| b[key].as_u64().unwrap()).sum()
    };
    // A backend counts the connection among its open ones from the pick, and in its total
    // once the connect succeeded: wait for both (a look between the two saw total 0).
    let backends = wait_until(PATIENCE, "the open connection shows on a backend, connected", || {
        let (_, backends) = json(http, "/v1/backends");
        (sum(&backends, "connections") == 1 && sum(&backends, "total") == 1).then_some(backends)
    });
    assert_eq!(backends["connections"], 1, "{backends}");
    assert_eq!(sum(&backends, "total"), 1, "{backends}");
    drop(open);

    assert_eq!(json(http, "/v1/services").0, 404);
    assert_eq!(json(http, "/v1/peers").0, 404);
}

/// The metrics page of the `--http` face is the `--metrics` face's, on the broker and the
/// balancer.
#[test]
fn metrics_on_http_are_those_of_the_metrics_face() {
    let broker = common::broker(&["--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let balancer = common::balancer("web", None, &["--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--quiet"]);
    Udp::new(broker.addr("udp")).text("register echo 127.0.0.1 4000");
    for process in [&broker, &balancer] {
        let (http, metrics) = (process.addr("http"), process.addr("metrics"));
        // Counters move between two requests now and then (a peer's timer, a probe): the
        // pages agree within a few tries.
        let same = (0..20).any(|_| {
            let (status, headers, from_http) = request(http, "GET", "/metrics");
            assert_eq!(status, 200);
            assert!(headers.contains(&("content-type".into(), "text/plain; version=0.0.4; charset=utf-8".into())));
            let (_, _, from_metrics) = request(metrics, "GET", "/metrics");
            from_http == from_metrics
        });
        assert!(same, "the pages differ");
        assert!(String::from_utf8(request(http, "GET", "/metrics").2).unwrap().contains("# TYPE "));
    }
}

/// Asks the broker's UDP face `line` until it answers, for as long as [`PATIENCE`]: the face
/// must answer while HTTP clients stall (a broker blocked on one would never answer), but how
/// fast is the machine's business, not this test's.
fn ask_patiently(broker: SocketAddr, line: &str) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 2048];
    loop {
        socket.send_to(line.as_bytes(), broker).unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
        }
        assert!(Instant::now() < deadline, "the UDP face did not answer {line:?} within {PATIENCE:?}");
    }
}

/// A client that sends a request head a byte at a time, never whole, is closed at the head
/// deadline (its bytes keep the idle time from closing it); one that never reads a large
/// answer holds nothing beyond the idle time; meanwhile the UDP face and other HTTP clients are
/// answered. No clock bounds what the broker does: a loaded machine makes it slower, not wrong.
#[test]
fn slow_clients_are_bounded() {
    let broker =
        common::broker(&["--http", "127.0.0.1:0", "--max-per-source", "0", "--max-per-network", "0", "--ttl", "600"]);
    let http = broker.addr("http");
    let udp = Udp::new(broker.addr("udp"));
    // More than 2 MiB of JSON: 2,000 instances with about 1,000 bytes of metadata each.
    let meta = ["a", "b", "c", "d"].map(|k| format!("{k}={}", "v".repeat(240))).join(" ");
    for port in 0..2000u16 {
        let reply = udp.text(&format!("register big 127.0.0.1 {} {meta}", 10_000 + port));
        assert!(is_uuid(&reply), "{reply}");
    }

    // A request head that never ends: one byte of it now and then, never the blank line.
    let mut stalled = TcpStream::connect(http).unwrap();
    stalled.write_all(b"GET /v1/services HTTP/1.1\r\nX-Slow: ").unwrap();
    // Readers that never read: a small receive window, and the largest answer.
    let mut readers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&http.into()).unwrap();
            let mut stream: TcpStream = socket.into();
            stream.write_all(b"GET /v1/services/big?limit=10000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            stream
        })
        .collect();

    let mut trickled = 0;
    for _ in 0..20 {
        assert_eq!(ask_patiently(broker.addr("udp"), "query nothing"), "NOT FOUND");
        let (status, services) = json(http, "/v1/services");
        assert_eq!(status, 200);
        assert_eq!(services["services"][0]["instances"], 2000);
        // One more byte of the head that never ends (while the connection is open).
        if stalled.write_all(b"a").is_ok() {
            trickled += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The largest answer is cut at its size bound.
    let (status, big) = json(http, "/v1/services/big?limit=10000");
    assert_eq!(status, 200);
    let listed = big["instances"].as_array().unwrap().len();
    assert!(big["truncated"] == true && listed < 2000 && listed > 1000, "{listed}");

    // The head that never ends is closed with nothing said: by the head deadline (2 s), as its
    // bytes keep coming well within the idle time (10 s) unless the machine stalls this test.
    stalled.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        assert!(Instant::now() < deadline, "a head sent a byte at a time is still open after {PATIENCE:?}");
        if stalled.write_all(b"a").is_err() {
            break;
        }
        trickled += 1;
    }
    assert!(rest.is_empty(), "{rest:?}");
    assert!(trickled < 8 * 1024, "closed by its size, not its time: {trickled} bytes");

    // The readers that never read are closed by the idle time (10 s) at the latest (the shell's
    // unit tests time the idle close): the broker's ends of their connections leave ESTABLISHED
    // (for FIN-WAIT, the rest of the answer with the kernel, or gone). Only then do they read:
    // what they read ends, whole or cut.
    for reader in &readers {
        let (broker_end, reader_end) = (reader.peer_addr().unwrap(), reader.local_addr().unwrap());
        wait_until(PATIENCE, "the broker closes a reader that never reads", || {
            common::tcp_row(broker_end, reader_end).is_none_or(|row| row.state != common::ESTABLISHED).then_some(())
        });
    }
    for reader in &mut readers {
        reader.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    assert_eq!(ask_patiently(broker.addr("udp"), "query nothing"), "NOT FOUND");
}

/// The balancer takes a passed socket named `http` (`FileDescriptorName=http`) for `--http`.
#[test]
fn the_balancer_serves_http_on_a_passed_socket() {
    let (listen, http) = (common::held_listener(), common::held_listener());
    let args = ["--control", "127.0.0.1:0", "--service", "web", "--no-register", "--quiet"];
    let sockets = vec![("listen", listen.try_clone().unwrap().into()), ("http", http.try_clone().unwrap().into())];
    let balancer = common::activated(env!("CARGO_BIN_EXE_makler-balancer"), &args, sockets, None);
    assert_eq!(balancer.addr("http"), http.local_addr().unwrap());
    let (status, backends) = json(balancer.addr("http"), "/v1/backends");
    assert_eq!((status, &backends["service"]), (200, &Value::from("web")));
}

/// The broker takes passed TCP listeners named `http` and `metrics` (`FileDescriptorName=`)
/// for `--http` and `--metrics`, as the balancer does, beside its own UDP socket.
#[test]
fn the_broker_serves_http_and_metrics_on_passed_sockets() {
    let (http, metrics) = (common::held_listener(), common::held_listener());
    let args = ["--listen", "127.0.0.1:0", "--no-multicast", "--quiet", "--ttl", "60"];
    let sockets = vec![("http", http.try_clone().unwrap().into()), ("metrics", metrics.try_clone().unwrap().into())];
    let broker = common::activated(env!("CARGO_BIN_EXE_makler-broker"), &args, sockets, None);
    assert_eq!(broker.addr("http"), http.local_addr().unwrap());
    assert_eq!(broker.addr("metrics"), metrics.local_addr().unwrap());
    Udp::new(broker.addr("udp")).text("register echo 127.0.0.1 4000");
    let (status, services) = json(broker.addr("http"), "/v1/services");
    assert_eq!((status, &services["services"][0]["name"]), (200, &Value::from("echo")));
    let (status, _, body) = request(broker.addr("metrics"), "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("makler_"), "metrics served");
}

/// Requests close to valid ones: a method, a target built from the router's words, a version,
/// a few headers, the whole then cut or with a byte changed.
fn near_request() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "get", "OPTIONS", "", "GET GET"]);
    let piece = prop::sample::select(vec![
        "/",
        "/v1",
        "/v1/services",
        "/v1/services/",
        "echo",
        "e%63ho",
        "%",
        "%2F",
        "%ff",
        "?",
        "limit=",
        "0",
        "7",
        "99999999999999999999",
        "-1",
        "&",
        "=",
        "#",
        "+",
        "/metrics",
        "/ui/app.js",
        "http://x",
        "HTTPS://h:1",
        "/peers",
        "/backends",
        "..",
        "\u{e9}",
    ]);
    let target = prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat());
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2", "", "HTTP/1.1 x"]);
    let header = prop::sample::select(vec![
        "Host: x\r\n",
        "Connection: close\r\n",
        "Connection: keep-alive\r\n",
        "Content-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "X: \u{1}\r\n",
        "bad header\r\n",
        " folded\r\n",
        "\r\n",
    ]);
    let headers = prop::collection::vec(header, 0..6).prop_map(|h| h.concat());
    (method, target, version, headers, any::<u16>(), any::<u8>(), 0u8..4).prop_map(
        |(method, target, version, headers, at, byte, how)| {
            let mut bytes = format!("{method} {target} {version}\r\n{headers}\r\nbody").into_bytes();
            let at = usize::from(at) % bytes.len();
            match how {
                0 => bytes.truncate(at),
                1 => bytes[at] = byte,
                2 => bytes.insert(at, byte),
                _ => {}
            }
            bytes
        },
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// The HTTP face never panics, and answers each request once, whole, with an exact
    /// `Content-Length` (the `decoders` fuzz target runs the same oracle on any bytes).
    #[test]
    fn the_http_face_answers_any_bytes_whole_or_waits(data in near_request()) {
        makler::oracles::http_face(&data);
    }
}
