//! SIGHUP reloads: a running broker started with `--config FILE`, the file edited and the
//! signal sent: what can change is applied and logged, nothing held is lost (leases, watches,
//! the process), what cannot change is named as kept, and a bad file is refused with the old
//! settings still in force. The server takes its log level; the units reload with SIGHUP.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::PATIENCE;
use crate::common::{Logged, Process, Udp, wait_until};

/// A file of this test's own, removed when dropped.
pub(crate) struct TempFile(pub(crate) PathBuf);

impl TempFile {
    pub(crate) fn new(name: &str) -> TempFile {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        TempFile(std::env::temp_dir().join(format!("makler-reload-{}-{nanos}-{name}", std::process::id())))
    }

    pub(crate) fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    pub(crate) fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A UDP socket on another loopback address (127.0.0.2): a network an allow list can leave
/// out.
fn other_network(broker: SocketAddr) -> Udp {
    let mut udp = Udp::new(broker);
    udp.socket = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    udp.socket.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
    udp
}

/// The next datagram `socket` receives within 5 s.
fn notification(socket: &UdpSocket) -> String {
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0; 2048];
    let (n, _) = socket.recv_from(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn start_broker(config: &Path) -> Logged {
    let config = config.to_str().unwrap();
    let args = ["--config", config, "--listen", "127.0.0.1:0", "--no-multicast", "--probe-interval", "0"];
    Logged::start(env!("CARGO_BIN_EXE_makler-broker"), &args)
}

#[test]
fn a_broker_reloads_its_config_file_on_sighup_and_keeps_its_table_and_watches() {
    let file = TempFile::new("broker.toml");
    file.write("allow-register = [\"127.0.0.0/8\"]\nrate-limit = 200\n");
    let mut a = start_broker(&file.0);
    let addr = a.process.addr("udp");
    let udp = Udp::new(addr);
    assert_eq!(udp.text("register echo 4000").len(), 36);
    let other = other_network(addr);
    assert_eq!(other.text("register echo 4001").len(), 36, "127.0.0.2 may register before the reload");
    // A watch, started before the reload.
    let watcher = Udp::new(addr);
    let cookie = watcher.text("watch echo").strip_prefix("COOKIE ").expect("a cookie").to_owned();
    assert!(watcher.text(&format!("watch echo {cookie}")).contains("127.0.0.1:4000"));

    // A broker B that names A as its peer: A takes it once its file says so.
    let b_args = ["--listen", "127.0.0.1:0", "--no-multicast", "--quiet", "--peers", &addr.to_string()];
    let b = Process::start(env!("CARGO_BIN_EXE_makler-broker"), &b_args);
    let b_addr = b.addr("udp");
    let b_udp = Udp::new(b_addr);
    assert!(b_udp.text("query echo").starts_with("NOT FOUND"), "B does not have A's table yet");

    file.write(&format!("allow-register = [\"127.0.0.1/32\"]\nrate-limit = 50\npeers = [\"{b_addr}\"]\nttl = 30\n"));
    a.reload("reloaded: 3 changes");
    let log = a.log();
    assert!(log.contains(&format!("reload: --peers none → {b_addr}")), "{log}");
    assert!(log.contains("reload: --allow-register 127.0.0.0/8 → 127.0.0.1/32"), "{log}");
    assert!(log.contains("reload: --rate-limit 200 → 50"), "{log}");
    assert!(log.contains("reload: --ttl cannot change at run time: kept 5s (restart to apply)"), "{log}");

    // Applied: 127.0.0.2 is no longer allowed, and B gets the table.
    assert!(other.text("register web 5000").starts_with("ERROR not allowed"), "the narrower allow list holds");
    wait_until(PATIENCE, "B has A's table", || {
        Udp::new(b_addr).text("query echo").contains("127.0.0.1:4000").then_some(())
    });
    // Nothing lost: both leases are answered (the one from 127.0.0.2 too: it stays until it
    // lapses), and the watch started before the reload is notified.
    let answer = udp.text("query echo");
    assert!(answer.contains("127.0.0.1:4000") && answer.contains("127.0.0.2:4001"), "{answer}");
    assert_eq!(udp.text("register echo 4002").len(), 36);
    assert!(notification(&watcher.socket).contains("127.0.0.1:4002"), "the watch is notified");

    // A bad file: refused, the process alive, the old settings in force.
    file.write("allow-register = [\"not a network\"]\n");
    a.reload("reload refused:");
    assert!(a.log().contains("; the old settings stay"), "{}", a.log());
    assert!(other.text("register web 5000").starts_with("ERROR not allowed"), "still the narrower list");
    assert!(udp.text("query echo").contains("127.0.0.1:4002"));
    file.write("this is not toml = = =\n");
    a.reload("reload refused:");
    assert_eq!(a.count("reloaded:"), 1, "a refused reload changes nothing:\n{}", a.log());
    assert_eq!(a.process.terminate().code(), Some(0));
}

#[test]
fn a_reload_with_nothing_changed_says_so_and_a_new_log_level_is_taken() {
    let file = TempFile::new("quiet.toml");
    file.write("log-level = \"info\"\n");
    let mut a = start_broker(&file.0);
    a.reload("reloaded: 0 changes");
    file.write("log-level = \"warn\"\n");
    a.reload("reloaded: 1 change");
    assert!(a.log().contains("reload: --log-level info → warn"), "{}", a.log());
    // At warn, the next reload's info lines are not logged, its warnings are.
    file.write("log-level = \"warn\"\nmetrics = \"127.0.0.1:0\"\n");
    a.reload("--metrics cannot change at run time: kept none (restart to apply)");
    file.write("log-level = \"loud\"\n");
    a.reload("reload refused:");
}

#[test]
fn a_server_reloads_its_log_level_on_sighup() {
    let file = TempFile::new("server.toml");
    file.write("service = \"echo\"\nno-multicast = true\nlog-level = \"info\"\n");
    let args = ["--config", file.path(), "--broker", "127.0.0.1:9"];
    let mut server = Logged::start(env!("CARGO_BIN_EXE_makler-server"), &args);
    file.write("service = \"echo\"\nno-multicast = true\nlog-level = \"debug\"\n");
    server.reload("reloaded: 1 change");
    assert!(server.log().contains("reload: --log-level info → debug"), "{}", server.log());
    file.write("service = \"upper\"\nno-multicast = true\nlog-level = \"debug\"\n");
    server.reload("its other settings are kept (restart to apply)");
    file.write("service = \"nonsense\"\n");
    server.reload("reload refused:");
}

#[test]
fn every_unit_reloads_with_sighup() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd");
    for unit in ["makler-broker.service", "makler-balancer.service", "makler-server.service"] {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap();
        assert!(text.lines().any(|l| l == "ExecReload=/bin/kill -HUP $MAINPID"), "{unit} has no ExecReload");
    }
}

/// One `GET /` on a kept-alive connection: the body (which names the backend).
fn get_on(stream: &mut std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = stream.read(&mut buf).expect("an answer on the kept connection");
        assert!(n > 0, "the connection closed: {:?}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("a Content-Length");
            if body.len() >= length {
                return body.to_owned();
            }
        }
    }
}

/// Connections in flight over every backend, from the balancer's `stats`.
fn active(control: &Udp) -> u64 {
    let stats = Udp::new(control.peer).text("stats");
    let counts = stats
        .lines()
        .filter(|l| l.starts_with("backend "))
        .filter_map(|l| l.split(' ').find_map(|w| w.strip_prefix("active=")).and_then(|n| n.parse::<u64>().ok()));
    counts.sum()
}

#[test]
fn a_balancer_reloads_its_policy_and_checks_on_sighup_and_keeps_its_connections() {
    let file = TempFile::new("balancer.toml");
    file.write("policy = \"round-robin\"\nrise = 2\nfall = 3\n");
    let args = [
        "--config",
        file.path(),
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--service",
        "web",
        "--no-register",
    ];
    let mut balancer = Logged::start(env!("CARGO_BIN_EXE_makler-balancer"), &args);
    let (tcp, control) = (balancer.process.addr("tcp"), balancer.process.addr("udp"));
    let _servers: Vec<Process> = (0..2).map(|_| crate::common::server("http", control, &[])).collect();
    let udp = Udp::new(control);
    wait_until(PATIENCE, "both backends are registered", || {
        (udp.text("stats").lines().filter(|l| l.starts_with("backend ")).count() == 2).then_some(())
    });
    // A connection open across the reload, held on one backend.
    let mut held = std::net::TcpStream::connect(tcp).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let busy = get_on(&mut held);

    file.write("policy = \"least-conn\"\nrise = 1\nfall = 2\nallow-register = [\"127.0.0.1/32\"]\nthreads = 7\n");
    balancer.reload("reloaded: 4 changes");
    let log = balancer.log();
    for line in [
        "reload: --policy round-robin → least-conn",
        "reload: --rise 2 → 1",
        "reload: --fall 3 → 2",
        "reload: --allow-register none → 127.0.0.1/32",
        "reload: --threads cannot change at run time: kept 2 (restart to apply)",
    ] {
        assert!(log.contains(line), "{line:?} in\n{log}");
    }
    // The connection still works; new ones go to the backend that holds none (least-conn).
    assert_eq!(get_on(&mut held), busy, "the held connection keeps its backend");
    for _ in 0..4 {
        let body = crate::common::http_get(tcp).unwrap();
        assert_ne!(body, busy, "least-conn picks the backend with no connection in flight");
        // The balancer counts a connection in flight until it has seen both ends close.
        wait_until(PATIENCE, "one connection is in flight", || (active(&udp) == 1).then_some(()));
    }
    assert!(other_network(control).text("register web 4000").starts_with("ERROR not allowed"));
    assert_eq!(udp.text("stats").lines().filter(|l| l.starts_with("backend ")).count(), 2, "no backend lost");

    file.write("policy = \"fastest\"\n");
    balancer.reload("reload refused:");
    assert_eq!(get_on(&mut held), busy, "still open after a refused reload");
}

/// `rate-limit-exempt = []` exempts nobody (as `--rate-limit-exempt none`), where the key absent
/// keeps loopback exempt: a reload between the three says so.
#[test]
fn an_empty_rate_limit_exempt_list_exempts_nobody() {
    let file = TempFile::new("exempt.toml");
    file.write("log-level = \"info\"\n");
    let mut broker = start_broker(&file.0);
    file.write("log-level = \"info\"\nrate-limit-exempt = []\n");
    broker.reload("reloaded: 1 change");
    assert!(broker.log().contains("reload: --rate-limit-exempt 127.0.0.0/8,::1/128 → none"), "{}", broker.log());
    file.write("log-level = \"info\"\nrate-limit-exempt = \"10.0.0.0/8\"\n");
    broker.reload("reload: --rate-limit-exempt none → 10.0.0.0/8");
    file.write("log-level = \"info\"\n");
    broker.reload("reload: --rate-limit-exempt 10.0.0.0/8 → 127.0.0.0/8,::1/128");
}

/// The config file replaced by a FIFO nobody writes to: the reload is refused at once (reading
/// it would hold the reload thread, and every later SIGHUP with it, until a writer came), and
/// the next one, with the file back, is taken.
#[test]
fn a_config_file_replaced_by_a_fifo_is_refused_at_a_reload() {
    let file = TempFile::new("fifo.toml");
    file.write("log-level = \"info\"\n");
    let mut broker = start_broker(&file.0);
    std::fs::remove_file(&file.0).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(&file.0).status().expect("mkfifo runs").success());
    broker.reload("a FIFO, not a regular file");
    assert!(broker.log().contains("reload refused"), "{}", broker.log());
    std::fs::remove_file(&file.0).unwrap();
    file.write("log-level = \"info\"\nrate-limit = 100\n");
    broker.reload("reload: --rate-limit 200 → 100");
}
