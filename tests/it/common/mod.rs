//! Helpers for the integration tests: start the real binaries on port 0, talk UDP with
//! retransmission, and wait on conditions with deadlines.

mod activation;
pub use activation::{activated, held_listener};
mod logged;
pub use logged::Logged;
pub mod podman;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use makler::protocol::{Request, Response, binary};

/// A child process that is killed when dropped, with the address from its `listening` line.
pub struct Process {
    pub child: Child,
    /// Every `key=addr` pair of the first stdout line, in order.
    pub listening: Vec<(String, SocketAddr)>,
}

impl Process {
    /// Starts `program` (a path) with `args` and waits up to [`PATIENCE`] for its `listening …` line;
    /// its stderr goes to the test's.
    #[track_caller]
    pub fn start(program: &str, args: &[&str]) -> Process {
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stderr(Stdio::inherit());
        Process::spawn(command)
    }

    /// Starts `command` as it is set up (stdin, stderr, environment) with its stdout piped, and
    /// waits up to [`PATIENCE`] for its first line, `listening key=addr …`. The one way the tests start
    /// a program that prints where it listens; a caller that wants the program's stdin or stderr
    /// sets them up as pipes and takes them from `child` afterwards.
    #[track_caller]
    pub fn spawn(mut command: Command) -> Process {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child =
            command.stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep reading so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        panic!("{program} printed no `listening` line within {PATIENCE:?}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => {
                        panic!("{program} closed its stdout ({status}) before printing a `listening` line")
                    }
                }
            }
        };
        let listening = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("first line {line:?} of {program} does not start with `listening `"))
            .split(' ')
            .map(|pair| {
                let (key, addr) = pair.split_once('=').unwrap_or_else(|| panic!("bad pair {pair:?}"));
                (key.to_owned(), addr.parse().unwrap_or_else(|_| panic!("bad address in {pair:?}")))
            })
            .collect();
        Process { child, listening }
    }

    /// The address printed for `key` (`udp`, `tcp`).
    #[track_caller]
    pub fn addr(&self, key: &str) -> SocketAddr {
        self.listening.iter().find(|(k, _)| k == key).map(|&(_, a)| a).unwrap_or_else(|| panic!("no {key}= address"))
    }

    /// Sends SIGTERM and waits up to [`PATIENCE`] for the exit status.
    #[track_caller]
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success());
        wait_until(PATIENCE, "the process exits", || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the broker binary on a free loopback port with extra `args`. Unless `args` name a
/// multicast group, the broker takes no part in one: brokers of tests that run at the same time
/// would otherwise find each other there as peers.
pub fn broker(args: &[&str]) -> Process {
    let mut all = vec!["--listen", "127.0.0.1:0", "--quiet"];
    if !args.iter().any(|a| a.starts_with("--multicast")) {
        all.push("--no-multicast");
    }
    all.extend_from_slice(args);
    Process::start(env!("CARGO_BIN_EXE_makler-broker"), &all)
}

/// Starts `makler-server` for `service`, registering at `broker`, with extra `args`.
pub fn server(service: &str, broker: SocketAddr, args: &[&str]) -> Process {
    let broker = broker.to_string();
    let mut all = vec!["--service", service, "--broker", broker.as_str()];
    all.extend_from_slice(args);
    Process::start(env!("CARGO_BIN_EXE_makler-server"), &all)
}

/// Starts `makler-balancer` for `service` on free loopback ports, registering at `broker` (or
/// nowhere), with extra `args`.
pub fn balancer(service: &str, broker: Option<SocketAddr>, args: &[&str]) -> Process {
    let broker = broker.map(|b| b.to_string());
    let mut all = vec!["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--service", service];
    match &broker {
        Some(broker) => all.extend_from_slice(&["--broker", broker.as_str()]),
        None => all.push("--no-register"),
    }
    all.extend_from_slice(args);
    Process::start(env!("CARGO_BIN_EXE_makler-balancer"), &all)
}

/// One HTTP request on a new connection to `addr`; returns the body (which names the backend
/// that answered).
pub fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 ") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!("bad response {response:?}"))),
    }
}

/// Runs `makler-client` to completion and returns (exit code, stdout, stderr).
pub fn client(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_makler-client"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("makler-client starts");
    child.stdin.take().expect("stdin is piped").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("makler-client runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8 output");
    (output.status.code(), text(output.stdout), text(output.stderr))
}

/// Writes a key file as an operator should: readable by its owner only (mode 0600), which
/// every program that takes `--key-file` requires.
pub fn write_key_file(path: &std::path::Path, secret: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).expect("create the key file");
    file.write_all(secret.as_bytes()).expect("write the key file");
}

/// The instances the broker lists for `service`, sorted; empty for NOT FOUND.
pub fn listed(udp: &Udp, service: &str) -> Vec<SocketAddr> {
    let reply = udp.text(&format!("query {service}"));
    if reply.starts_with("NOT FOUND") {
        return Vec::new();
    }
    let mut all: Vec<SocketAddr> =
        reply.split(' ').map(|a| a.parse().unwrap_or_else(|_| panic!("bad reply {reply:?}"))).collect();
    all.sort();
    all
}

/// Polls `check` until it returns `Some` or `limit` has passed.
#[track_caller]
pub fn wait_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A UDP client socket bound to loopback, retransmitting on timeout.
pub struct Udp {
    pub socket: UdpSocket,
    pub peer: SocketAddr,
    next_id: u32,
}

/// How long to wait for the first reply before sending again.
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest wait between retransmissions.
const MOST_WAIT: Duration = Duration::from_secs(2);
/// The patient deadline: how long a test waits for something that must happen (a request
/// retransmitted until it is answered, a registration to appear, a process to exit) before it
/// gives up. A broker on a loaded 2-core machine running the whole test binary may take seconds
/// to answer, and a passing run is not slowed down by it. Not for deadlines that are themselves
/// the upper bound a test asserts: those keep their own figure.
pub const PATIENCE: Duration = Duration::from_secs(30);

impl Udp {
    pub fn new(peer: SocketAddr) -> Udp {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        socket.set_read_timeout(Some(FIRST_WAIT)).expect("timeout");
        Udp { socket, peer, next_id: 1 }
    }

    /// Sends raw bytes and returns the reply, retransmitting (each wait twice the last, up to
    /// [`MOST_WAIT`]) until [`PATIENCE`] has passed.
    #[track_caller]
    pub fn raw(&self, datagram: &[u8]) -> Vec<u8> {
        self.raw_where(datagram, |_| true)
    }

    /// As [`Udp::raw`], skipping replies `wanted` turns down (late answers to earlier requests).
    #[track_caller]
    fn raw_where(&self, datagram: &[u8], wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + PATIENCE;
        let mut wait = FIRST_WAIT;
        let reply = 'sending: loop {
            self.socket.send_to(datagram, self.peer).expect("send");
            let resend = Instant::now() + wait;
            loop {
                let left = resend.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.socket.set_read_timeout(Some(left)).expect("timeout");
                match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) if from == self.peer && wanted(&buf[..n]) => break 'sending Some(buf[..n].to_vec()),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if Instant::now() >= deadline {
                break None;
            }
            wait = (wait * 2).min(MOST_WAIT);
        };
        self.socket.set_read_timeout(Some(FIRST_WAIT)).expect("timeout");
        reply.unwrap_or_else(|| panic!("no reply to {:?} in {PATIENCE:?}", String::from_utf8_lossy(datagram)))
    }

    /// Sends a text line and returns the reply line without its newline.
    #[track_caller]
    pub fn text(&self, line: &str) -> String {
        let reply = String::from_utf8(self.raw(line.as_bytes())).expect("text replies are UTF-8");
        reply.strip_suffix('\n').unwrap_or_else(|| panic!("reply {reply:?} does not end in a newline")).to_owned()
    }

    /// Sends a binary request and returns the reply, checking that it echoes the request id.
    #[track_caller]
    pub fn binary(&mut self, request: &Request<'_>) -> Response {
        self.next_id += 1;
        let mut datagram = Vec::new();
        binary::encode_request(self.next_id, request, &mut datagram);
        let id = self.next_id;
        let reply = self.raw_where(&datagram, |reply| binary::decode_response(reply).is_ok_and(|(got, _)| got == id));
        let (id, response) = binary::decode_response(&reply).expect("a binary reply");
        assert_eq!(id, self.next_id, "the reply echoes the request id");
        response
    }
}

/// A counter from the first line of a broker's (or balancer's) `stats`, asked from a socket of
/// its own, so that a late reply to an earlier, retransmitted ask cannot be read for this one.
#[track_caller]
pub fn stat(udp: &Udp, key: &str) -> u64 {
    let reply = Udp::new(udp.peer).text("stats");
    let line = reply.lines().next().unwrap_or_default();
    line.split(' ')
        .find_map(|pair| pair.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// The kernel's row for one end of a TCP connection over IPv4, from `/proc/net/tcp`: what a
/// test waits on when the program under test shows nothing of it (whether it closed a
/// connection, whether a peer's window is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    /// The state, as the kernel numbers it ([`ESTABLISHED`] is 1, FIN-WAIT-1 is 4, …).
    pub state: u8,
    /// Bytes written and not yet acknowledged by the peer.
    pub send_queue: u64,
    /// Bytes received and not yet read.
    pub receive_queue: u64,
}

/// [`TcpRow::state`] of an established connection.
pub const ESTABLISHED: u8 = 1;

/// The row of the connection from `local` to `remote` (both IPv4) at `local`'s end, if the
/// kernel lists one.
pub fn tcp_row(local: SocketAddr, remote: SocketAddr) -> Option<TcpRow> {
    let hex = |addr: SocketAddr| match addr {
        // The kernel prints the address as the number in memory, in hex: native byte order.
        SocketAddr::V4(a) => format!("{:08X}:{:04X}", u32::from_ne_bytes(a.ip().octets()), a.port()),
        SocketAddr::V6(_) => panic!("{addr} is not IPv4"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).map(|line| line.split_whitespace().collect::<Vec<_>>()).find_map(|f| {
        if f.len() < 5 || f[1] != local || f[2] != remote {
            return None;
        }
        let (send, receive) = f[4].split_once(':')?;
        Some(TcpRow {
            state: u8::from_str_radix(f[3], 16).ok()?,
            send_queue: u64::from_str_radix(send, 16).ok()?,
            receive_queue: u64::from_str_radix(receive, 16).ok()?,
        })
    })
}

/// [`tcp_row`] finds an open connection and what waits in its queues, and not a closed one: so
/// that a wait on it cannot pass by a misread table.
#[test]
fn tcp_row_reads_the_table() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let (at_server, at_client) = (server.local_addr().unwrap(), client.local_addr().unwrap());
    client.write_all(b"unread").unwrap();
    wait_until(PATIENCE, "the connection is listed with the bytes unread", || {
        let row = tcp_row(at_server, at_client)?;
        (row.state == ESTABLISHED && row.receive_queue == 6).then_some(())
    });
    drop(server);
    wait_until(PATIENCE, "the closed end is not established", || {
        tcp_row(at_server, at_client).is_none_or(|row| row.state != ESTABLISHED).then_some(())
    });
}
