//! The PROXY protocol against real HAProxy, both ways: HAProxy's `send-proxy-v2` to
//! `makler-server --accept-proxy`, and `makler-balancer --send-proxy v2` to an HAProxy frontend
//! with `accept-proxy` that answers with the client it was told of. Ignored where haproxy is
//! not installed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::PATIENCE;
use crate::common::{Process, Udp, wait_until};

/// An HAProxy process and its directory, both gone when dropped; its log is printed if the test
/// failed.
struct Haproxy {
    child: Child,
    dir: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("haproxy's log:\n{}", std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts HAProxy with `proxies` (frontends and backends) and waits until `frontend` accepts.
fn haproxy(proxies: &str, frontend: SocketAddr) -> Haproxy {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("makler-haproxy-pp-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let config = format!(
        "global
  log stderr format raw local0 info

defaults
  log global
  timeout connect 1s
  timeout client 5s
  timeout server 5s
  retries 0

{proxies}"
    );
    std::fs::write(dir.join("haproxy.cfg"), config).expect("write the configuration");
    let log = std::fs::File::create(dir.join("haproxy.log")).expect("a log file");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("haproxy starts");
    let haproxy = Haproxy { child, dir };
    wait_until(PATIENCE, "haproxy listens", || TcpStream::connect(frontend).ok().map(drop));
    haproxy
}

/// A loopback port free at the time of asking.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("an address")
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
#[cfg_attr(not(has_haproxy), ignore = "needs haproxy (apt-get install haproxy)")]
fn haproxy_send_proxy_v2_reaches_the_server_with_the_client() {
    let args = ["--service", "http", "--no-register", "--accept-proxy", "--quiet"];
    let server = Process::start(env!("CARGO_BIN_EXE_makler-server"), &args);
    let frontend = free_port();
    let proxies = format!(
        "frontend web
  mode tcp
  bind {frontend}
  default_backend servers

backend servers
  mode tcp
  server s1 {} send-proxy-v2
",
        server.addr("tcp")
    );
    let _haproxy = haproxy(&proxies, frontend);
    for _ in 0..3 {
        let (client, body) = get(frontend);
        assert_eq!(body, format!("served by {} for client {client}\n", server.addr("tcp")));
    }
}

#[test]
#[cfg_attr(not(has_haproxy), ignore = "needs haproxy (apt-get install haproxy)")]
fn the_balancers_v2_header_is_what_haproxy_accept_proxy_reads() {
    let frontend = free_port();
    // HAProxy answers itself, naming the source and destination the header gave it.
    let proxies = format!(
        "frontend web
  mode http
  bind {frontend} accept-proxy
  http-request return status 200 content-type text/plain lf-string \"client %[src]:%[src_port] to %[dst]:%[dst_port]\"
"
    );
    let _haproxy = haproxy(&proxies, frontend);
    let balancer = crate::common::balancer("web", None, &["--send-proxy", "v2", "--health-interval", "0"]);
    let control = Udp::new(balancer.addr("udp"));
    let reply = control.text(&format!("register web {} {}", frontend.ip(), frontend.port()));
    assert!(!reply.starts_with("ERROR"), "{reply}");
    wait_until(PATIENCE, "haproxy is the balancer's backend", || {
        control.text("stats").contains(&format!("backend {frontend} up")).then_some(())
    });
    for _ in 0..3 {
        let (client, body) = get(balancer.addr("tcp"));
        assert_eq!(body, format!("client {client} to {}", balancer.addr("tcp")));
    }
}
