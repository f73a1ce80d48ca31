//! Request/response load over UDP with a bounded window in flight, and the broker benchmark:
//! the broker's query and heartbeat rates side by side with a plain UDP echo server, the
//! machine's limit for request/response on one socket.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Latencies, Measurement, Summary};
use crate::protocol::{Request, Response, binary};

/// How long a request may go unanswered before it counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);

/// Drives request/response load at one UDP target with at most `window` requests in flight.
#[derive(Debug)]
pub struct Driver {
    socket: UdpSocket,
    window: usize,
}

impl Driver {
    /// A driver on a fresh loopback (or wildcard, for remote targets) socket connected to
    /// `target`.
    pub fn new(target: SocketAddr, window: usize) -> io::Result<Driver> {
        let local: SocketAddr = match (target.is_ipv4(), target.ip().is_loopback()) {
            (true, true) => "127.0.0.1:0".parse(),
            (true, false) => "0.0.0.0:0".parse(),
            (false, true) => "[::1]:0".parse(),
            (false, false) => "[::]:0".parse(),
        }
        .map_err(io::Error::other)?;
        let socket = UdpSocket::bind(local)?;
        socket.connect(target)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        Ok(Driver { socket, window: window.max(1) })
    }

    /// Sends requests made by `make(id, out)` (a binary frame with that request id) until
    /// `duration` has passed or `max_requests` have been sent, keeping the window full. Replies
    /// are matched by the request id at the start of every binary frame; `check` sees each one.
    pub fn run(
        &self,
        duration: Duration,
        max_requests: u64,
        mut make: impl FnMut(u32, &mut Vec<u8>),
        mut check: impl FnMut(&[u8]),
    ) -> io::Result<Measurement> {
        let mut in_flight: HashMap<u32, Instant> = HashMap::with_capacity(self.window * 2);
        let mut latencies = Latencies::default();
        let mut request = Vec::with_capacity(1500);
        let mut reply = [0u8; 2048];
        let (mut next_id, mut sent, mut lost) = (0u32, 0u64, 0u64);
        let start = Instant::now();
        let stop_sending = start + duration;
        loop {
            let now = Instant::now();
            while now < stop_sending && sent < max_requests && in_flight.len() < self.window {
                next_id = next_id.wrapping_add(1);
                request.clear();
                make(next_id, &mut request);
                self.socket.send(&request)?;
                in_flight.insert(next_id, Instant::now());
                sent += 1;
            }
            if in_flight.is_empty() {
                break;
            }
            match self.socket.recv(&mut reply) {
                Ok(len) => {
                    let datagram = &reply[..len];
                    let id = datagram.get(1..).and_then(|b| postcard::take_from_bytes::<u32>(b).ok()).map(|(id, _)| id);
                    if let Some(sent_at) = id.and_then(|id| in_flight.remove(&id)) {
                        latencies.record(sent_at.elapsed());
                        check(datagram);
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(io::Error::new(e.kind(), "the target is not listening"));
                }
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            let before = in_flight.len();
            in_flight.retain(|_, &mut sent_at| now.duration_since(sent_at) < REQUEST_TIMEOUT);
            lost += (before - in_flight.len()) as u64;
        }
        Ok(Measurement { latencies, elapsed: start.elapsed(), lost })
    }
}

/// A plain UDP echo server on its own thread: the reference for what one socket and one thread
/// can answer on this machine. Stops when dropped.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Starts an echo server on a free loopback port.
    pub fn start() -> io::Result<EchoServer> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("udp-echo".into()).spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        })?;
        Ok(EchoServer { addr, stop, thread: Some(thread) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The service name of type `k` in the benchmark's table.
pub fn type_name(k: usize) -> String {
    format!("type{k}")
}

/// The endpoint of instance `i` in the benchmark's table: distinct loopback addresses, which
/// the broker stores and hands out but nobody connects to.
pub fn instance_endpoint(i: usize) -> SocketAddr {
    let [_, a, b, c] = (i as u32).to_be_bytes();
    SocketAddr::from(([127, a.wrapping_add(1), b, c], 4000 + (i % 1000) as u16))
}

/// Registers instances `from..to` (instance `i` under type `i % types`) and returns their ids in
/// order. Fails when any registration is refused or lost.
pub fn populate(driver: &Driver, from: usize, to: usize, types: usize) -> io::Result<Vec<Uuid>> {
    let count = to.saturating_sub(from);
    let mut ids = vec![Uuid::nil(); count];
    let mut refused = None;
    let summary = driver.run(
        Duration::from_secs(600),
        count as u64,
        |id, out| {
            let i = from + id as usize - 1;
            let endpoint = instance_endpoint(i);
            let service = type_name(i % types);
            let request = Request::Register { service: &service, ip: Some(endpoint.ip()), port: endpoint.port() };
            binary::encode_request(id, &request, out);
        },
        |reply| match binary::decode_response(reply) {
            Ok((id, Response::Registered { id: uuid, .. })) => {
                if let Some(slot) = ids.get_mut(id as usize - 1) {
                    *slot = uuid;
                }
            }
            other => refused = Some(format!("{other:?}")),
        },
    )?;
    if let Some(reply) = refused {
        return Err(io::Error::other(format!("a registration was refused: {reply}")));
    }
    if summary.lost > 0 || ids.iter().any(Uuid::is_nil) {
        return Err(io::Error::other(format!("{} registrations were lost", summary.lost)));
    }
    Ok(ids)
}

/// The resident memory of a process, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmRSS line"))
}

/// Settings of the broker benchmark.
#[derive(Debug, Clone)]
pub struct BrokerBench {
    /// The `makler-broker` executable to start.
    pub broker_bin: std::path::PathBuf,
    /// Instances registered for the query and heartbeat runs.
    pub instances: usize,
    /// Services they are spread over.
    pub types: usize,
    /// Instances registered for the memory measurement.
    pub rss_instances: usize,
    /// How long each run lasts.
    pub duration: Duration,
    /// Requests in flight at once.
    pub window: usize,
    /// The echo and query runs alternate this many times, each lasting `duration / rounds`, so
    /// that a change in the machine's speed during the benchmark affects both alike.
    pub rounds: u32,
}

/// What the broker benchmark measured.
#[derive(Debug, Clone)]
pub struct BrokerReport {
    /// The plain echo server: the reference.
    pub echo: Summary,
    /// Queries over all types, in turn.
    pub query: Summary,
    /// Heartbeats over all instances, in turn.
    pub heartbeat: Summary,
    /// The broker's resident memory just after it started.
    pub rss_empty: u64,
    /// The broker's resident memory with `rss_instances` registered.
    pub rss_full: u64,
}

impl BrokerReport {
    /// Broker queries per second over echoes per second.
    pub fn ratio(&self) -> f64 {
        self.query.rate / self.echo.rate.max(1e-9)
    }
}

/// Runs the broker benchmark: the echo reference, then a fresh broker process loaded with the
/// table, queried, heartbeated and finally filled for the memory figure. Kills the broker at
/// the end, whatever happens.
pub fn bench_broker(config: &BrokerBench) -> io::Result<BrokerReport> {
    // The echo server gets exactly the datagrams the broker's query run sends.
    let query_request = |id: u32, out: &mut Vec<u8>| {
        let service = type_name(id as usize % config.types);
        binary::encode_request(id, &Request::Query { service: &service }, out);
    };
    let echo_server = EchoServer::start()?;
    let echo_driver = Driver::new(echo_server.addr(), config.window)?;

    let mut broker = BrokerProcess::start(config)?;
    let rss_empty = rss_bytes(broker.pid())?;
    let driver = Driver::new(broker.addr, config.window)?;
    let ids = populate(&driver, 0, config.instances, config.types)?;

    let per_type = config.instances.div_ceil(config.types);
    let mut bad = None;
    let round = config.duration / config.rounds.max(1);
    let (mut echo, mut query) = (Measurement::default(), Measurement::default());
    for _ in 0..config.rounds.max(1) {
        echo.add(echo_driver.run(round, u64::MAX, query_request, |_| {})?);
        query.add(driver.run(round, u64::MAX, query_request, |reply| match binary::decode_response(reply) {
            Ok((_, Response::Instances(list))) if list.len() + 1 >= per_type => {}
            other => bad = Some(format!("query: {other:?}")),
        })?);
    }
    drop(echo_server);
    let heartbeat = driver.run(
        config.duration,
        u64::MAX,
        |id, out| binary::encode_request(id, &Request::Heartbeat { id: ids[id as usize % ids.len()] }, out),
        |reply| match binary::decode_response(reply) {
            Ok((_, Response::Ok)) => {}
            other => bad = Some(format!("heartbeat: {other:?}")),
        },
    )?;
    if let Some(bad) = bad {
        return Err(io::Error::other(format!("the broker answered wrongly: {bad}")));
    }
    populate(&driver, config.instances, config.rss_instances, config.types)?;
    let rss_full = rss_bytes(broker.pid())?;
    broker.stop();
    Ok(BrokerReport {
        echo: echo.summary(),
        query: query.summary(),
        heartbeat: heartbeat.summary(),
        rss_empty,
        rss_full,
    })
}

/// A broker child process for the benchmark, killed when dropped.
struct BrokerProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl BrokerProcess {
    fn start(config: &BrokerBench) -> io::Result<BrokerProcess> {
        use std::io::BufRead;
        let max = config.rss_instances.max(config.instances).to_string();
        let mut child = std::process::Command::new(&config.broker_bin)
            .args(["--listen", "127.0.0.1:0", "--quiet", "--ttl", "600", "--max-instances", &max])
            // One source registers every instance, nothing listens on them, and the load comes
            // from one address: no quota, no health checks, no rate limit, no multicast.
            .args(["--max-per-source", "0", "--probe-interval", "0", "--rate-limit", "0", "--no-multicast"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", config.broker_bin.display())))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            io::BufReader::new(stdout).read_line(&mut line)?;
        }
        let addr = line.trim().strip_prefix("listening udp=").and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(BrokerProcess { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::other(format!("the broker printed {line:?} instead of its address")))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_measures_an_echo_server() {
        let echo = EchoServer::start().unwrap();
        let driver = Driver::new(echo.addr(), 4).unwrap();
        let mut checked = 0;
        let summary = driver
            .run(
                Duration::from_secs(5),
                500,
                |id, out| binary::encode_request(id, &Request::Stats, out),
                |reply| {
                    assert!(binary::decode_request(reply).is_ok());
                    checked += 1;
                },
            )
            .unwrap()
            .summary();
        assert_eq!(summary.completed, 500);
        assert_eq!(checked, 500);
        assert_eq!(summary.lost, 0);
        assert!(summary.p50 <= summary.p99);
    }

    #[test]
    fn endpoints_are_distinct_loopback_addresses() {
        let all: std::collections::HashSet<_> = (0..100_000).map(instance_endpoint).collect();
        assert_eq!(all.len(), 100_000);
        assert!(all.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn rss_of_this_process_is_readable() {
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
