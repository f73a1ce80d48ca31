//! HAProxy finds makler services through the broker's DNS face, with no makler code on its
//! side: `server-template` slots filled from `_web._tcp.makler` SRV records, refreshed as
//! servers come and go, without a restart. Skips itself, saying so, where haproxy is not
//! installed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use crate::common::{Process, Udp, broker, http_get, listed, server, wait_until};

/// An HAProxy process and its directory, both gone when dropped; the log is printed if the test
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
            let log = std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default();
            eprintln!("haproxy's log:\n{log}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts HAProxy with a frontend on `frontend` balancing over up to 5 servers it learns from
/// the SRV records of `_web._tcp.makler` at `dns`: the configuration README.md shows.
fn haproxy(dns: SocketAddr, frontend: SocketAddr) -> Haproxy {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("makler-haproxy-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let config = format!(
        "global
  log stderr format raw local0 info

defaults
  mode http
  log global
  timeout connect 1s
  timeout client 5s
  timeout server 5s
  retries 0

resolvers makler
  nameserver broker {dns}
  accepted_payload_size 1232
  hold valid 1s
  hold obsolete 0s
  timeout resolve 100ms
  timeout retry 100ms

frontend web
  bind {frontend}
  default_backend web

backend web
  balance roundrobin
  server-template web 5 _web._tcp.makler resolvers makler init-addr none
"
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
    Haproxy { child, dir }
}

/// A loopback port free at the time of asking.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("an address")
}

/// The backend that answered, from the body of `makler-server --service http`.
fn served_by(body: &str) -> Option<SocketAddr> {
    body.split_whitespace().find_map(|word| word.parse().ok())
}

/// Waits until HAProxy's rotation is exactly `expected`: a run of requests, each answered
/// (a dead server still in rotation would fail one: `retries 0`, no health checks), that
/// together reach every expected backend and no other.
#[track_caller]
fn wait_for_rotation(frontend: SocketAddr, expected: &BTreeSet<SocketAddr>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    loop {
        let mut seen = BTreeSet::new();
        let mut ok = true;
        for _ in 0..4 * expected.len() {
            match http_get(frontend).map(|body| served_by(&body)) {
                Ok(Some(backend)) => {
                    seen.insert(backend);
                }
                other => {
                    last = format!("{other:?}");
                    ok = false;
                    break;
                }
            }
        }
        if ok && &seen == expected {
            return;
        }
        if ok {
            last = format!("reached {seen:?}");
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}: expected {expected:?}, last {last}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn web_server(broker: SocketAddr) -> (Process, SocketAddr) {
    let process = server("http", broker, &["--register-as", "web"]);
    let addr = process.addr("tcp");
    (process, addr)
}

#[test]
#[cfg_attr(not(has_haproxy), ignore = "haproxy is not installed (apt-get install haproxy)")]
fn haproxy_follows_makler_services_through_dns() {
    let broker = broker(&["--dns", "127.0.0.1:0", "--ttl", "1", "--probe-interval", "0"]);
    let (udp, dns) = (Udp::new(broker.addr("udp")), broker.addr("dns"));
    let mut servers: Vec<(Process, SocketAddr)> = (0..3).map(|_| web_server(broker.addr("udp"))).collect();
    let addrs = |servers: &[(Process, SocketAddr)]| servers.iter().map(|(_, a)| *a).collect::<BTreeSet<_>>();
    wait_until(PATIENCE, "three servers are registered", || (listed(&udp, "web").len() == 3).then_some(()));

    let frontend = free_port();
    let _haproxy = haproxy(dns, frontend);
    wait_for_rotation(frontend, &addrs(&servers), "requests through HAProxy reach all three servers");

    // One server dies without a word: once its registration expires, the SRV records no longer
    // list it, and HAProxy takes it out of its rotation.
    let (mut dead, dead_addr) = servers.remove(1);
    dead.child.kill().expect("kill a server");
    let _ = dead.child.wait();
    wait_until(PATIENCE, "the dead server expires at the broker", || {
        (!listed(&udp, "web").contains(&dead_addr)).then_some(())
    });
    wait_for_rotation(frontend, &addrs(&servers), "HAProxy forgets the dead server");

    // A new one registers and HAProxy takes it in.
    servers.push(web_server(broker.addr("udp")));
    wait_for_rotation(frontend, &addrs(&servers), "HAProxy finds the new server");
}
