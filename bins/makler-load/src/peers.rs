//! The redundant-brokers benchmark (`makler-load peers`): three brokers with `--peers` on
//! loopback, measured for what replication promises.
//!
//! - **Visibility**: p50/p99 from a `register` at one broker to the instance being answered by
//!   the two others (each sample a service of its own, registered on top of the base table).
//! - **Catch-up**: a broker killed with SIGKILL and restarted, until it says it is complete and
//!   holds the whole table, at each table size asked for.
//! - **Report**: from `report` of a registered instance whose port refuses connections to the
//!   instance being gone at all three.
//! - **Query rate under replication**: one broker's query rate while another receives 10,000
//!   heartbeats a second (whose renewals it replicates), next to the same broker without them,
//!   in alternating rounds, with the ratio.
//! - **What the renewals cost**: the peer bytes all three brokers sent (their `peer_bytes_out`)
//!   while the first took those heartbeats, per heartbeat and per peer it goes to; at a
//!   heartbeat every TTL/3 (as servers send them) three times that is the cost per instance per
//!   TTL per peer.

use std::io::{self, BufRead};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::udp::{Driver, instance_endpoint, populate, type_name};
use crate::wire::{BrokerLoad, Form, Op, Table};

/// The prefix of the benchmark table's service names.
const PREFIX: &str = "type";
use crate::{Latencies, Measurement, Summary};
use makler::protocol::{Check, Request, Response, binary};

/// Settings of the benchmark.
#[derive(Debug, Clone)]
pub struct PeersBench {
    /// The makler-broker executable.
    pub broker_bin: PathBuf,
    /// Table sizes at which catch-up is timed; the first is also the base table of the other
    /// measurements.
    pub sizes: Vec<usize>,
    /// Services the instances are spread over.
    pub types: usize,
    /// Samples of visibility and of report latency.
    pub samples: usize,
    /// Seconds of each query run, and rounds of alternation.
    pub duration: Duration,
    /// Rounds the query runs alternate in.
    pub rounds: u32,
    /// Heartbeats a second sent to the first broker during the loaded query rounds.
    pub heartbeat_rate: u32,
}

/// What the benchmark measured.
#[derive(Debug, Clone)]
pub struct PeersReport {
    /// Register at one broker to visible at both others.
    pub visible: Summary,
    /// Table size and catch-up time of a restarted broker.
    pub catch_up: Vec<(usize, Duration)>,
    /// Report to gone at all three, or why it could not be measured.
    pub report: Result<Summary, String>,
    /// Queries at a broker while its peer takes heartbeats.
    pub query_replicating: Summary,
    /// Queries at the same broker without them.
    pub query_quiet: Summary,
    /// Per-round ratios of the two.
    pub ratios: Vec<f64>,
    /// Per-round ratios of queries per second of the broker's own CPU time, with and without:
    /// the replication's cost to the broker, apart from the other processes sharing the cores.
    pub cpu_ratios: Vec<f64>,
    /// Peer bytes sent by all three brokers during the heartbeat rounds, and the heartbeats
    /// sent meanwhile (`None`: the brokers do not count peer bytes).
    pub renewal_bytes: Option<(u64, u64)>,
}

/// A broker child process, killed when dropped.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    fn start(bin: &PathBuf, port: u16, peers: &str) -> io::Result<Broker> {
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(bin)
            .args(["--listen", &listen, "--peers", peers, "--quiet", "--ttl", "600", "--max-instances", "1000000"])
            .args(crate::child::UNLIMITED_BROKER)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", bin.display())))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            io::BufReader::new(stdout).read_line(&mut line)?;
        }
        match line.trim().strip_prefix("listening udp=").and_then(|a| a.parse().ok()) {
            Some(addr) => Ok(Broker { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::other(format!("the broker printed {line:?} instead of its address")))
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request, one reply, with retransmission.
pub(crate) struct Asker {
    socket: UdpSocket,
    next: u32,
    buf: Vec<u8>,
}

impl Asker {
    pub(crate) fn new() -> io::Result<Asker> {
        Asker::on("127.0.0.1")
    }

    /// An asker sending from `ip` (reports are capped per source address).
    fn on(ip: &str) -> io::Result<Asker> {
        let socket = UdpSocket::bind((ip, 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(Asker { socket, next: 1, buf: vec![0; 2048] })
    }

    pub(crate) fn ask(&mut self, to: SocketAddr, request: &Request<'_>) -> io::Result<Response> {
        self.next += 1;
        let mut datagram = Vec::new();
        binary::encode_request(self.next, request, &mut datagram);
        for _ in 0..20 {
            self.socket.send_to(&datagram, to)?;
            while let Ok((n, _)) = self.socket.recv_from(&mut self.buf) {
                if let Ok((id, response)) = binary::decode_response(&self.buf[..n]) {
                    if id == self.next {
                        return Ok(response);
                    }
                }
            }
        }
        Err(io::Error::other(format!("{to} did not answer")))
    }

    pub(crate) fn stats(&mut self, to: SocketAddr) -> io::Result<makler::protocol::BrokerStats> {
        match self.ask(to, &Request::Stats)? {
            Response::Stats(stats) => Ok(*stats),
            other => Err(io::Error::other(format!("unexpected {other:?}"))),
        }
    }

    pub(crate) fn has(&mut self, to: SocketAddr, service: &str) -> io::Result<bool> {
        Ok(matches!(self.ask(to, &Request::Query { service })?, Response::Instances(_)))
    }
}

/// Waits until `done` or 60 s have passed.
fn wait(what: &str, mut done: impl FnMut() -> io::Result<bool>) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done()? {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("timed out waiting until {what}")));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

/// Runs the benchmark.
pub fn bench_peers(config: &PeersBench) -> io::Result<PeersReport> {
    let ports: Vec<u16> = {
        let sockets: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<io::Result<_>>()?;
        sockets.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<io::Result<_>>()?
    };
    let peers = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let mut brokers: Vec<Broker> =
        ports.iter().map(|&port| Broker::start(&config.broker_bin, port, &peers)).collect::<io::Result<_>>()?;
    let addrs: Vec<SocketAddr> = brokers.iter().map(|b| b.addr).collect();
    let mut asker = Asker::new()?;
    for &addr in &addrs {
        wait("the brokers have met", || {
            let stats = asker.stats(addr)?;
            Ok(stats["complete"] == 1 && stats["peers_up"] == 2)
        })?;
    }
    let base = config.sizes.first().copied().unwrap_or(10_000);
    let loader = Driver::new(addrs[0], 64)?;
    let (ids, _) = populate(&loader, PREFIX, 0, base, config.types)?;
    for &addr in &addrs {
        wait("every broker holds the base table", || Ok(asker.stats(addr)?["instances"] >= base as u64))?;
    }

    // Visibility.
    let mut visible = Latencies::default();
    let started = Instant::now();
    for k in 0..config.samples {
        let service = format!("visible{k}");
        let endpoint = instance_endpoint(base + k);
        let registered = Instant::now();
        asker
            .ask(addrs[0], &Request::Register { service: &service, ip: Some(endpoint.ip()), port: endpoint.port() })?;
        wait("the others answer", || Ok(asker.has(addrs[1], &service)? && asker.has(addrs[2], &service)?))?;
        visible.record(registered.elapsed());
    }
    let visible = visible.summary(started.elapsed(), 0);

    // Report of a refusing instance until gone everywhere. A failure is printed rather than
    // ending the run, so the figures after it are still measured.
    let report = reports(config, &addrs, &mut asker).map_err(|e| e.to_string());

    // Query rate with and without 10,000 heartbeats a second replicated.
    let pid = brokers[1].child.id();
    let (query_replicating, query_quiet, ratios, cpu_ratios, renewal_bytes) = query_rates(config, &addrs, &ids, pid)?;

    // Catch-up at each size: grow the table, kill and restart the third broker.
    let mut catch_up = Vec::new();
    for &size in &config.sizes {
        if size > base {
            populate(&loader, PREFIX, base + config.samples, base + config.samples + (size - base), config.types)?;
        }
        let expected = size.max(base) + config.samples;
        wait("every broker holds the table", || Ok(asker.stats(addrs[2])?["instances"] >= expected as u64))?;
        let _ = brokers[2].child.kill();
        let _ = brokers[2].child.wait();
        let restarted = Instant::now();
        brokers[2] = Broker::start(&config.broker_bin, ports[2], &peers)?;
        wait("the restarted broker caught up", || {
            let stats = asker.stats(addrs[2])?;
            Ok(stats["complete"] == 1 && stats["instances"] >= expected as u64)
        })?;
        catch_up.push((expected, restarted.elapsed()));
    }
    Ok(PeersReport { visible, catch_up, report, query_replicating, query_quiet, ratios, cpu_ratios, renewal_bytes })
}

/// From `report` of a registered instance whose port refuses connections to the instance being
/// gone at all three brokers.
fn reports(config: &PeersBench, addrs: &[SocketAddr], asker: &mut Asker) -> io::Result<Summary> {
    let mut report = Latencies::default();
    let started = Instant::now();
    for k in 0..config.samples {
        let refusing = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let service = format!("dead{k}");
        // Declared `check=tcp`: a report of an instance that declares no check is answered but
        // not verified (issue 20), so it would never go.
        let register = Request::RegisterChecked {
            service: &service,
            ip: Some(refusing.ip()),
            port: refusing.port(),
            check: Check::Tcp,
        };
        asker.ask(addrs[0], &register)?;
        wait("the instance is everywhere", || Ok(asker.has(addrs[1], &service)? && asker.has(addrs[2], &service)?))?;
        // Each report from an address of its own: one source is allowed 20 reports a second.
        let mut reporter = Asker::on(&format!("127.0.{}.{}", 1 + k / 250, 2 + k % 250))?;
        let reported = Instant::now();
        match reporter.ask(addrs[1], &Request::Report { service: &service, endpoint: refusing })? {
            Response::Ok => {}
            other => return Err(io::Error::other(format!("the report was answered {other:?}"))),
        }
        wait("the instance is gone everywhere", || {
            let mut gone = true;
            for &addr in addrs {
                gone &= !asker.has(addr, &service)?;
            }
            Ok(gone)
        })?;
        report.record(reported.elapsed());
    }
    Ok(report.summary(started.elapsed(), 0))
}

/// The peer bytes all brokers sent so far (`None` if one does not count them).
fn peer_bytes(asker: &mut Asker, addrs: &[SocketAddr]) -> io::Result<Option<u64>> {
    let mut total = Some(0);
    for &addr in addrs {
        let sent = asker.stats(addr)?.get("peer_bytes_out");
        total = total.zip(sent).map(|(a, b)| a + b);
    }
    Ok(total)
}

/// What [`query_rates`] measured.
type Rates = (Summary, Summary, Vec<f64>, Vec<f64>, Option<(u64, u64)>);

/// The second broker's query rate while the first takes heartbeats, next to without, in
/// alternating rounds; also per second of the second broker's CPU time (`pid`), and the peer
/// bytes the heartbeats cost.
fn query_rates(config: &PeersBench, addrs: &[SocketAddr], ids: &[Uuid], pid: u32) -> io::Result<Rates> {
    let mut asker = Asker::new()?;
    let mut renewal_bytes = Some((0, 0));
    let driver = Driver::new(addrs[1], 8)?;
    let round = config.duration / config.rounds.max(1);
    let (mut busy, mut quiet, mut ratios, mut cpu_ratios) =
        (Measurement::default(), Measurement::default(), Vec::new(), Vec::new());
    let names = (0..config.types).map(|k| type_name(PREFIX, k)).collect();
    let table = Arc::new(Table { names, instances: ids.len(), ids: ids.to_vec() });
    // One run, and the broker's CPU seconds during it.
    let query = |driver: &Driver| -> io::Result<(Measurement, f64)> {
        let before = cpu_seconds(pid)?;
        let mut load = BrokerLoad::new(Arc::clone(&table), Form::Binary, Op::Query);
        let run = driver.run(round, u64::MAX, 0, &mut load)?;
        Ok((run, cpu_seconds(pid)? - before))
    };
    for _ in 0..config.rounds.max(1) {
        let bytes_before = peer_bytes(&mut asker, addrs)?;
        let stop = Arc::new(AtomicBool::new(false));
        let beats = {
            let (stop, ids, to, rate) = (Arc::clone(&stop), ids.to_vec(), addrs[0], config.heartbeat_rate);
            std::thread::spawn(move || heartbeats(&stop, &ids, to, rate))
        };
        let (loaded, loaded_cpu) = query(&driver)?;
        stop.store(true, Ordering::SeqCst);
        let beaten = beats.join().map_err(|_| io::Error::other("the heartbeat thread panicked"))??;
        // The last renewals leave within the 200 ms batch, and are acknowledged.
        std::thread::sleep(Duration::from_millis(400));
        let bytes = bytes_before.zip(peer_bytes(&mut asker, addrs)?).map(|(before, after)| after - before);
        renewal_bytes = renewal_bytes.zip(bytes).map(|((total, beats), bytes)| (total + bytes, beats + beaten));
        let (alone, alone_cpu) = query(&driver)?;
        ratios.push(rate_of(&loaded) / rate_of(&alone).max(1.0));
        let per_cpu = |m: &Measurement, cpu: f64| m.latencies.count() as f64 / cpu.max(1e-3);
        cpu_ratios.push(per_cpu(&loaded, loaded_cpu) / per_cpu(&alone, alone_cpu).max(1.0));
        busy.add(loaded);
        quiet.add(alone);
    }
    Ok((busy.summary(), quiet.summary(), ratios, cpu_ratios, renewal_bytes))
}

/// User and system CPU seconds a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |k: usize| fields.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; the kernel
    // counts them in USER_HZ, 100 on Linux.
    Ok((ticks(11) + ticks(12)) as f64 / 100.0)
}

fn rate_of(measurement: &Measurement) -> f64 {
    measurement.latencies.count() as f64 / measurement.elapsed.as_secs_f64().max(1e-9)
}

/// Sends heartbeats for `ids` round robin at `rate` a second until `stop`; returns how many.
fn heartbeats(stop: &AtomicBool, ids: &[Uuid], to: SocketAddr, rate: u32) -> io::Result<u64> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_nonblocking(true)?;
    let started = Instant::now();
    let (mut sent, mut buf, mut datagram) = (0u64, [0u8; 256], Vec::new());
    while !stop.load(Ordering::SeqCst) {
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            datagram.clear();
            let id = ids[sent as usize % ids.len().max(1)];
            binary::encode_request(sent as u32, &Request::Heartbeat { id }, &mut datagram);
            let _ = socket.send_to(&datagram, to);
            sent += 1;
        }
        // Drain the answers; they are not counted.
        while socket.recv_from(&mut buf).is_ok() {}
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(sent)
}

/// The benchmark's figures as the lines `makler-load peers` prints.
pub fn report_text(report: &PeersReport, samples: usize, heartbeats: u32) -> String {
    use super::micros;
    let mut lines: Vec<String> = Vec::new();
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    lines.push(format!("{:<44} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "max ms"));
    lines.push(format!(
        "{:<44} {:>9} {:>9}",
        format!("register at one -> answered by both others ({samples})"),
        ms(report.visible.p50),
        ms(report.visible.p99)
    ));
    match &report.report {
        Ok(summary) => lines.push(format!(
            "{:<44} {:>9} {:>9}",
            format!("report of a refusing instance -> gone at all ({samples})"),
            ms(summary.p50),
            ms(summary.p99)
        )),
        Err(e) => lines.push(format!("report of a refusing instance -> gone at all: not measured ({e})")),
    }
    for (size, took) in &report.catch_up {
        lines.push(format!("catch-up of a restarted broker at {size} instances: {} ms", ms(*took)));
    }
    lines.push(format!(
        "queries at a broker while its peer takes {heartbeats} heartbeats/s: {:.0}/s (p99 {} µs)",
        report.query_replicating.rate,
        micros(report.query_replicating.p99)
    ));
    lines.push(format!(
        "queries at the same broker without them:             {:.0}/s (p99 {} µs)",
        report.query_quiet.rate,
        micros(report.query_quiet.p99)
    ));
    let mut ratios = report.ratios.clone();
    ratios.sort_by(f64::total_cmp);
    lines.push(format!(
        "ratio replicating / quiet: {:.2} (rounds {:.2}..{:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    ));
    let mut cpu = report.cpu_ratios.clone();
    cpu.sort_by(f64::total_cmp);
    lines.push(format!(
        "ratio per second of the broker's own CPU: {:.2} (rounds {:.2}..{:.2}); the rest is other processes on the same cores",
        cpu[cpu.len() / 2],
        cpu[0],
        cpu[cpu.len() - 1]
    ));
    match report.renewal_bytes {
        Some((bytes, beats)) if beats > 0 => {
            // Each heartbeat's renewal goes to the two peers of the broker that took it.
            let per_peer = bytes as f64 / beats as f64 / 2.0;
            lines.push(format!(
                "peer bytes while taking heartbeats: {bytes} for {beats} heartbeats, {per_peer:.2} B per heartbeat per \
                 peer; at a heartbeat every TTL/3: {:.2} B per instance per TTL per peer",
                3.0 * per_peer
            ));
        }
        _ => lines.push("peer bytes: the brokers do not count them (peer_bytes_out)".to_owned()),
    }
    lines.iter().map(|line| format!("{line}\n")).collect()
}
