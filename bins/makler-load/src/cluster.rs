//! The cluster benchmark (`makler-load cluster`): what a cluster of brokers costs and how fast
//! it agrees, at each number of brokers and table size, as one table.
//!
//! In every configuration the instances are registered at the first broker and heartbeated
//! there every TTL/3, as servers keep their leases alive, so that the figures include what
//! keeping the replicas alive costs. Per configuration:
//!
//! - **Peer traffic**: every broker's `peer_bytes_out` and `peer_bytes_in` over a window of
//!   steady heartbeats: bytes sent and received per broker per second (the mean, and the
//!   busiest broker's), and the keep-alive figure: the bytes each other broker receives per
//!   instance per TTL (per peer: the mean over the brokers that are not heartbeated).
//! - **Convergence**: a register at the first broker until every other one answers it, and its
//!   deregistration until none does: p50 and p99.
//! - **Catch-up**: the last broker killed (SIGKILL) and restarted, until it says it is complete
//!   and holds as many instances as the first.
//!
//! Real `makler-broker` processes on loopback for the small clusters ([`run_real`]); the
//! library's nodes on a simulated network for the large ones ([`cluster_sim`](crate::cluster_sim)),
//! where a 2-core machine cannot run the processes. Per-broker traffic must grow at most
//! linearly with the number of brokers: [`linearity`] sets each size against three brokers.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use makler::protocol::{Request, Response, binary};
use uuid::Uuid;

use crate::child::ChildProcess;
use crate::peers::Asker;
use crate::udp::{Driver, instance_endpoint, populate};
use crate::{Latencies, Summary};

/// The prefix of the table's service names.
const PREFIX: &str = "type";

/// How long any one wait of a real run may take.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Numbers of brokers run as real processes.
    pub real: Vec<usize>,
    /// Numbers of brokers simulated.
    pub simulated: Vec<usize>,
    /// Table sizes.
    pub sizes: Vec<usize>,
    /// Services the instances are spread over.
    pub types: usize,
    /// The brokers' TTL; instances heartbeat every third of it.
    pub ttl: Duration,
    /// Heartbeats before the traffic is measured.
    pub settle: Duration,
    /// The window over which the traffic is measured.
    pub window: Duration,
    /// Samples of each convergence.
    pub samples: usize,
    /// The simulation's seed.
    pub seed: u64,
}

/// Parses a list of cluster sizes (`3,5,9`), each from 2 to 64, or `none`.
pub fn parse_brokers(text: &str) -> Result<Vec<usize>, String> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|item| match item.trim().parse::<usize>() {
            Ok(n) if (2..=64).contains(&n) => Ok(n),
            _ => Err(format!("{item:?}: expected a number of brokers from 2 to 64, or none")),
        })
        .collect()
}

/// Peer bytes of every broker over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Per broker, the first being the heartbeated one: bytes sent and received.
    pub bytes: Vec<(u64, u64)>,
    /// The window.
    pub seconds: f64,
}

impl Traffic {
    /// The difference of two readings of `(peer_bytes_out, peer_bytes_in)` per broker.
    pub fn between(before: &[(u64, u64)], after: &[(u64, u64)], window: Duration) -> Traffic {
        let bytes = before.iter().zip(after).map(|(b, a)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))).collect();
        Traffic { bytes, seconds: window.as_secs_f64() }
    }

    /// Bytes sent and received per broker per second: the mean over the brokers.
    pub fn per_broker(&self) -> f64 {
        let total: u64 = self.bytes.iter().map(|(o, i)| o + i).sum();
        total as f64 / self.bytes.len().max(1) as f64 / self.seconds.max(1e-9)
    }

    /// Bytes sent and received per second by the busiest broker.
    pub fn busiest(&self) -> f64 {
        self.bytes.iter().map(|(o, i)| o + i).max().unwrap_or(0) as f64 / self.seconds.max(1e-9)
    }

    /// Bytes received per instance per TTL at each broker that is not heartbeated (the mean
    /// over them), and the same with what they send (acknowledgements, hellos, digests).
    pub fn keep_alive(&self, instances: usize, ttl: Duration) -> (f64, f64) {
        let others = &self.bytes[1.min(self.bytes.len())..];
        let ttls = self.seconds / ttl.as_secs_f64();
        let per = |bytes: u64| bytes as f64 / others.len().max(1) as f64 / instances.max(1) as f64 / ttls.max(1e-9);
        (per(others.iter().map(|b| b.1).sum()), per(others.iter().map(|b| b.0 + b.1).sum()))
    }
}

/// Heartbeats a second during the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heartbeats {
    /// Every instance every TTL/3.
    pub target: f64,
    /// Sent.
    pub sent: f64,
    /// Answered `OK` (a lease that expired is answered "not found").
    pub ok: f64,
}

/// One configuration's figures.
#[derive(Debug, Clone)]
pub struct ClusterRow {
    /// Simulated rather than real processes.
    pub simulated: bool,
    /// Brokers in the cluster.
    pub brokers: usize,
    /// Instances registered (and heartbeated) at the first.
    pub instances: usize,
    /// Peer bytes over the window.
    pub traffic: Traffic,
    /// Register at the first broker until every other answers it.
    pub register: Summary,
    /// Deregister at the first broker until no other answers it.
    pub removal: Summary,
    /// A restarted broker until complete with the whole table.
    pub catch_up: Duration,
    /// The heartbeat load during the window.
    pub heartbeats: Heartbeats,
    /// Instances the first broker held at the end.
    pub alive: u64,
}

/// The heartbeats of a real run: a thread that sends each id every `period`, round robin,
/// over a list that grows as instances are registered, and counts the `OK`s.
struct Beater {
    ids: Arc<Mutex<Vec<Uuid>>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Beater {
    fn start(to: SocketAddr, period: Duration) -> io::Result<Beater> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        // Room for a burst of answers while the thread sends.
        let _ = socket.set_recv_buffer_size(8 << 20);
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let socket: UdpSocket = socket.into();
        socket.connect(to)?;
        socket.set_nonblocking(true)?;
        let (ids, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (sent, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (ids, stop, sent, ok) = (Arc::clone(&ids), Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&ok));
            std::thread::spawn(move || beat(&socket, period, &ids, &stop, &sent, &ok))
        };
        Ok(Beater { ids, stop, sent, ok, thread: Some(thread) })
    }

    fn add(&self, ids: &[Uuid]) {
        if let Ok(mut list) = self.ids.lock() {
            list.extend_from_slice(ids);
        }
    }

    fn counts(&self) -> (u64, u64) {
        (self.sent.load(Ordering::Relaxed), self.ok.load(Ordering::Relaxed))
    }

    fn stop(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the heartbeat thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Beater {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn beat(
    socket: &UdpSocket,
    period: Duration,
    ids: &Mutex<Vec<Uuid>>,
    stop: &AtomicBool,
    sent: &AtomicU64,
    ok: &AtomicU64,
) -> io::Result<()> {
    let (mut cursor, mut owed, mut last) = (0usize, 0f64, Instant::now());
    let (mut datagram, mut buf, mut seq) = (Vec::with_capacity(64), [0u8; 512], 0u32);
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        {
            let list = ids.lock().map_err(|_| io::Error::other("poisoned"))?;
            let n = list.len();
            // Each id once a period; a thread that fell behind catches up, but by one period
            // at most.
            owed = (owed + now.duration_since(last).as_secs_f64() * n as f64 / period.as_secs_f64()).min(n as f64);
            while owed >= 1.0 && n > 0 {
                datagram.clear();
                seq = seq.wrapping_add(1);
                binary::encode_request(seq, &Request::Heartbeat { id: list[cursor % n] }, &mut datagram);
                match socket.send(&datagram) {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        cursor = (cursor + 1) % n;
                        owed -= 1.0;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        last = now;
        loop {
            match socket.recv(&mut buf) {
                Ok(len) => {
                    if matches!(binary::decode_response(&buf[..len]), Ok((_, Response::Ok))) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A refused send reported on the socket: the broker is restarting.
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Waits until `done` or [`WAIT_LIMIT`]; how long it took. A broker that does not answer
/// (an overloaded one drops requests) is asked again until the limit.
fn wait(what: &str, mut done: impl FnMut() -> io::Result<bool>) -> io::Result<Duration> {
    let start = Instant::now();
    loop {
        let error = match done() {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if start.elapsed() > WAIT_LIMIT {
            let why = error.map_or_else(String::new, |e| format!(" ({e})"));
            return Err(io::Error::other(format!("timed out waiting until {what}{why}")));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Asks `to` until it answers, up to [`WAIT_LIMIT`] (for requests that may be repeated).
fn ask_patiently(asker: &mut Asker, to: SocketAddr, request: &Request<'_>) -> io::Result<Response> {
    let mut answer = None;
    wait("a broker answered", || {
        answer = Some(asker.ask(to, request)?);
        Ok(true)
    })?;
    answer.ok_or_else(|| io::Error::other("no answer"))
}

/// Waits until every broker in `pending` satisfies `done`, asking each in turn.
fn converge(
    asker: &mut Asker,
    what: &str,
    mut pending: Vec<SocketAddr>,
    want: bool,
    service: &str,
) -> io::Result<Duration> {
    wait(what, || {
        let mut left = Vec::with_capacity(pending.len());
        for &addr in &pending {
            if asker.has(addr, service)? != want {
                left.push(addr);
            }
        }
        pending = left;
        Ok(pending.is_empty())
    })
}

fn broker_args(port: u16, peers: &str, ttl: Duration) -> Vec<String> {
    let listen = format!("127.0.0.1:{port}");
    let ttl = format!("{}", ttl.as_secs_f64());
    [
        "--listen",
        &listen,
        "--peers",
        peers,
        "--quiet",
        "--ttl",
        &ttl,
        "--max-instances",
        "10000000",
        "--max-per-source",
        "0",
        "--max-per-network",
        "0",
        "--probe-interval",
        "0",
        "--rate-limit",
        "0",
        "--no-multicast",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn start_broker(bin: &Path, args: &[String]) -> io::Result<ChildProcess> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ChildProcess::start(bin, &args)
}

fn traffic_of(asker: &mut Asker, addrs: &[SocketAddr]) -> io::Result<Vec<(u64, u64)>> {
    addrs.iter().map(|&a| asker.stats(a).map(|s| (s["peer_bytes_out"], s["peer_bytes_in"]))).collect()
}

/// Runs one configuration with `brokers` real `makler-broker` processes (`bin`) on loopback.
/// Every broker is killed when this returns, whatever happened.
pub fn run_real(plan: &Plan, bin: &Path, brokers: usize, instances: usize) -> io::Result<ClusterRow> {
    let ports: Vec<u16> = {
        let sockets: Vec<UdpSocket> =
            (0..brokers).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<io::Result<_>>()?;
        sockets.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<io::Result<_>>()?
    };
    let peers = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let args: Vec<Vec<String>> = ports.iter().map(|&p| broker_args(p, &peers, plan.ttl)).collect();
    // The guards kill the brokers when dropped: on every return below, and on a panic.
    let mut procs: Vec<ChildProcess> = args.iter().map(|a| start_broker(bin, a)).collect::<io::Result<_>>()?;
    let addrs: Vec<SocketAddr> = procs.iter().map(ChildProcess::addr).collect();
    let mut asker = Asker::new()?;
    wait("the brokers have met", || {
        for &addr in &addrs {
            let stats = asker.stats(addr)?;
            if stats["complete"] != 1 || stats["peers_up"] != brokers as u64 - 1 {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    let mut beater = Beater::start(addrs[0], plan.ttl / 3)?;
    let loader = Driver::new(addrs[0], 64)?;
    let types = plan.types.clamp(1, instances.max(1));
    // In chunks, each heartbeated from the moment it is registered, so none expires while
    // the rest are registered.
    for from in (0..instances).step_by(5_000) {
        let to = (from + 5_000).min(instances);
        // A registration lost under the heartbeats is sent again with its chunk: registering
        // the same instance from the same socket again renews it under the same id.
        let mut tries = 0;
        let ids = loop {
            match populate(&loader, PREFIX, from, to, types) {
                Ok((ids, _)) => break ids,
                Err(_) if tries < 5 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        beater.add(&ids);
    }
    let mut held = Vec::new();
    wait("every broker holds the table", || {
        held = addrs.iter().map(|&a| asker.stats(a).map(|s| s["instances"])).collect::<io::Result<Vec<u64>>>()?;
        Ok(held.iter().all(|&n| n >= instances as u64))
    })
    .map_err(|e| io::Error::other(format!("{e}; they hold {held:?}; heartbeats sent, ok: {:?}", beater.counts())))?;
    std::thread::sleep(plan.settle);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    wait("every broker answered", || {
        before = traffic_of(&mut asker, &addrs)?;
        Ok(true)
    })?;
    let (counts_before, started) = (beater.counts(), Instant::now());
    std::thread::sleep(plan.window);
    wait("every broker answered", || {
        after = traffic_of(&mut asker, &addrs)?;
        Ok(true)
    })?;
    let counts_after = beater.counts();
    let window = started.elapsed();
    let traffic = Traffic::between(&before, &after, window);
    let per_s = |n: u64| n as f64 / window.as_secs_f64();
    let heartbeats = Heartbeats {
        target: instances as f64 / (plan.ttl / 3).as_secs_f64(),
        sent: per_s(counts_after.0 - counts_before.0),
        ok: per_s(counts_after.1 - counts_before.1),
    };

    let others = addrs[1..].to_vec();
    let (mut register, mut removal) = (Latencies::default(), Latencies::default());
    for k in 0..plan.samples {
        let service = format!("conv{k}");
        let endpoint = instance_endpoint(instances + k);
        let request = Request::Register { service: &service, ip: Some(endpoint.ip()), port: endpoint.port() };
        let started = Instant::now();
        // (Registering again from the same socket renews the same lease, so a repeat is safe.)
        let Response::Registered { id, .. } = ask_patiently(&mut asker, addrs[0], &request)? else {
            return Err(io::Error::other("a sample registration was refused"));
        };
        converge(&mut asker, "the others answer", others.clone(), true, &service)?;
        register.record(started.elapsed());
        let started = Instant::now();
        // (A repeated deregistration is answered "not found".)
        if !matches!(
            ask_patiently(&mut asker, addrs[0], &Request::Deregister { id })?,
            Response::Ok | Response::NotFound
        ) {
            return Err(io::Error::other("a sample deregistration was refused"));
        }
        converge(&mut asker, "the others drop it", others.clone(), false, &service)?;
        removal.record(started.elapsed());
    }

    let last = brokers - 1;
    procs[last].stop();
    let restarted = Instant::now();
    procs[last] = start_broker(bin, &args[last])?;
    wait("the restarted broker caught up", || {
        let expected = asker.stats(addrs[0])?["instances"];
        let stats = asker.stats(addrs[last])?;
        Ok(stats["complete"] == 1 && stats["instances"] >= expected)
    })?;
    let catch_up = restarted.elapsed();
    let mut alive = 0;
    wait("the first broker answered", || {
        alive = asker.stats(addrs[0])?["instances"];
        Ok(true)
    })?;
    beater.stop()?;
    Ok(ClusterRow {
        simulated: false,
        brokers,
        instances,
        traffic,
        register: register.summary(Duration::from_secs(1), 0),
        removal: removal.summary(Duration::from_secs(1), 0),
        catch_up,
        heartbeats,
        alive,
    })
}

/// One line of the linearity check: per-broker traffic at `brokers` against three brokers of
/// the same kind (real or simulated) and table size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Simulated or real.
    pub simulated: bool,
    /// The table size.
    pub instances: usize,
    /// The cluster size.
    pub brokers: usize,
    /// Bytes per broker per second at `brokers` over the same at three.
    pub ratio: f64,
    /// The busiest broker's bytes per second over the same at three.
    pub busiest_ratio: f64,
}

impl Growth {
    /// What linear growth allows: `brokers / 3`.
    pub fn linear(&self) -> f64 {
        self.brokers as f64 / 3.0
    }

    /// Whether per-broker traffic grew at most linearly.
    pub fn at_most_linear(&self) -> bool {
        self.ratio <= self.linear()
    }
}

/// Every row with more than three brokers set against the row of three of the same kind and
/// size (rows without such a reference are left out).
pub fn linearity(rows: &[ClusterRow]) -> Vec<Growth> {
    rows.iter()
        .filter(|r| r.brokers > 3)
        .filter_map(|r| {
            let base =
                rows.iter().find(|b| b.brokers == 3 && b.simulated == r.simulated && b.instances == r.instances)?;
            Some(Growth {
                simulated: r.simulated,
                instances: r.instances,
                brokers: r.brokers,
                ratio: r.traffic.per_broker() / base.traffic.per_broker().max(1e-9),
                busiest_ratio: r.traffic.busiest() / base.traffic.busiest().max(1e-9),
            })
        })
        .collect()
}

/// The header of the table.
pub fn write_header(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<5} {:>3} {:>7} {:>20} {:>10} {:>10} {:>15} {:>13} {:>13} {:>9} {:>7}",
        "where",
        "N",
        "inst",
        "hb/s target sent ok",
        "B/broker/s",
        "busiest",
        "keep B/i/TTL/p",
        "reg p50/p99",
        "rm p50/p99",
        "catch-up",
        "alive"
    )
}

/// One row of the table.
pub fn write_row(out: &mut impl Write, row: &ClusterRow, ttl: Duration) -> io::Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (keep_in, keep_all) = row.traffic.keep_alive(row.instances, ttl);
    let h = row.heartbeats;
    writeln!(
        out,
        "{:<5} {:>3} {:>7} {:>20} {:>10.0} {:>10.0} {:>15} {:>13} {:>13} {:>9} {:>7}",
        if row.simulated { "sim" } else { "real" },
        row.brokers,
        row.instances,
        format!("{:.0} {:.0} {:.0}", h.target, h.sent, h.ok),
        row.traffic.per_broker(),
        row.traffic.busiest(),
        format!("{keep_in:.1} ({keep_all:.1})"),
        format!("{:.1}/{:.1}", ms(row.register.p50), ms(row.register.p99)),
        format!("{:.1}/{:.1}", ms(row.removal.p50), ms(row.removal.p99)),
        format!("{:.0} ms", ms(row.catch_up)),
        row.alive
    )
}

/// The linearity lines.
pub fn write_linearity(out: &mut impl Write, rows: &[ClusterRow]) -> io::Result<()> {
    writeln!(out, "per-broker traffic against 3 brokers (at most linear: ratio <= N/3):")?;
    for g in linearity(rows) {
        writeln!(
            out,
            "  {:<4} {:>7} instances, N={:<2}: B/broker/s ratio {:.2} vs N/3 {:.2}: {}; busiest broker ratio {:.2} (its peers: {:.2}x)",
            if g.simulated { "sim" } else { "real" },
            g.instances,
            g.brokers,
            g.ratio,
            g.linear(),
            if g.at_most_linear() { "at most linear" } else { "MORE THAN LINEAR" },
            g.busiest_ratio,
            (g.brokers - 1) as f64 / 2.0
        )?;
    }
    Ok(())
}

/// Runs the whole plan, printing each row as it is measured (or why it could not be) and then
/// the linearity check; returns the rows and how many configurations failed.
pub fn run(plan: &Plan, bin: &Path, out: &mut impl Write) -> io::Result<(Vec<ClusterRow>, usize)> {
    write_header(out)?;
    let (mut rows, mut failed) = (Vec::new(), 0);
    for &instances in &plan.sizes {
        let real = plan.real.iter().map(|&n| (false, n));
        for (simulated, brokers) in real.chain(plan.simulated.iter().map(|&n| (true, n))) {
            let result = if simulated {
                crate::cluster_sim::run(plan, brokers, instances)
            } else {
                run_real(plan, bin, brokers, instances)
            };
            match result {
                Ok(row) => {
                    write_row(out, &row, plan.ttl)?;
                    rows.push(row);
                }
                Err(e) => {
                    failed += 1;
                    let kind = if simulated { "sim" } else { "real" };
                    writeln!(out, "{kind:<5} {brokers:>3} {instances:>7} failed: {e}")?;
                }
            }
            out.flush()?;
        }
    }
    write_linearity(out, &rows)?;
    Ok((rows, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            real: vec![],
            simulated: vec![3, 5, 9],
            sizes: vec![300],
            types: 10,
            ttl: Duration::from_secs(6),
            settle: Duration::from_secs(2),
            window: Duration::from_secs(6),
            samples: 5,
            seed: 1,
        }
    }

    #[test]
    fn traffic_figures() {
        let t =
            Traffic::between(&[(0, 0), (10, 10), (0, 0)], &[(600, 60), (70, 310), (60, 300)], Duration::from_secs(2));
        assert_eq!(t.bytes, vec![(600, 60), (60, 300), (60, 300)]);
        assert_eq!(t.per_broker(), (660.0 + 360.0 + 360.0) / 3.0 / 2.0);
        assert_eq!(t.busiest(), 330.0);
        // 300 B received by each other broker over 2 s, a third of a TTL of 6 s, for 10 instances.
        assert_eq!(t.keep_alive(10, Duration::from_secs(6)), (90.0, 108.0));
    }

    #[test]
    fn small_simulated_clusters_grow_at_most_linearly_and_converge() {
        let plan = plan();
        let mut out = Vec::new();
        let (rows, failed) = run(&plan, Path::new("/nonexistent"), &mut out).unwrap();
        assert_eq!(failed, 0);
        print!("{}", String::from_utf8_lossy(&out));
        assert_eq!(rows.len(), 3);
        for row in &rows {
            assert_eq!(row.alive, 300, "every instance kept alive: {row:?}");
            assert!(row.heartbeats.ok >= row.heartbeats.target * 0.99, "{row:?}");
            assert!(row.traffic.keep_alive(300, plan.ttl).0 > 0.0);
            assert!(row.register.p99 < Duration::from_millis(50), "{row:?}");
            assert!(row.removal.p99 < Duration::from_millis(50), "{row:?}");
            assert!(row.catch_up < Duration::from_secs(3), "{row:?}");
        }
        let growth = linearity(&rows);
        assert_eq!(growth.len(), 2);
        for g in growth {
            assert!(g.at_most_linear(), "{g:?}");
        }
    }
}
