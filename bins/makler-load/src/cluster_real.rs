//! The real half of `makler-load cluster`: `makler-broker` processes with `--peers` on
//! loopback, their instances registered at the first and heartbeated there every TTL/3 by a
//! thread of this process, measured through each broker's `stats` (see [`crate::cluster`]).
//! Every broker is a [`ChildProcess`] guard, killed whatever happens.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use makler::protocol::{Request, Response, binary};
use uuid::Uuid;

use crate::Latencies;
use crate::child::ChildProcess;
use crate::cluster::{ClusterRow, Heartbeats, Plan, Traffic};
use crate::peers::Asker;
use crate::udp::{Driver, instance_endpoint, populate};

/// The prefix of the table's service names.
const PREFIX: &str = "type";

/// How long any one wait of a real run may take.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// How long a real run waits for every broker to hold the whole table before it measures
/// what they hold.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

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
            // Each id once a period. A thread that fell behind catches up by 20 ms of heartbeats
            // at most: servers do not all send at once, and a burst the broker's socket cannot
            // hold would measure the burst (what falls behind shows as fewer sent).
            let rate = n as f64 / period.as_secs_f64();
            owed = (owed + now.duration_since(last).as_secs_f64() * rate).min((rate * 0.02).max(1.0));
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
    ["--listen", &listen, "--peers", peers, "--quiet", "--ttl", &ttl, "--max-instances", "10000000"]
        .iter()
        .chain(&crate::child::UNLIMITED_BROKER)
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
    // A machine that cannot answer every heartbeat loses instances to expiry, and the brokers
    // never hold the whole table: after a while the run goes on with what they hold, and the
    // row says so (heartbeats answered, instances alive at the end).
    let started = Instant::now();
    let held = loop {
        let held = addrs.iter().map(|&a| asker.stats(a).map(|s| s["instances"])).collect::<io::Result<Vec<u64>>>();
        match held {
            Ok(held) if held.iter().all(|&n| n >= instances as u64) => break held,
            Ok(held) if started.elapsed() > HOLD_LIMIT => break held,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    if held.iter().any(|&n| n < instances as u64) {
        let (sent, ok) = beater.counts();
        eprintln!(
            "makler-load: {brokers} brokers hold {held:?} of {instances} after {HOLD_LIMIT:?}; heartbeats sent {sent}, answered OK {ok}: going on"
        );
    }
    std::thread::sleep(plan.settle);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    wait("every broker answered", || {
        before = traffic_of(&mut asker, &addrs)?;
        Ok(true)
    })?;
    let (counts_before, started) = (beater.counts(), Instant::now());
    std::thread::sleep(plan.window);
    let mut held = 0;
    wait("every broker answered", || {
        after = traffic_of(&mut asker, &addrs)?;
        held = asker.stats(addrs[0])?["instances"];
        Ok(true)
    })?;
    let counts_after = beater.counts();
    let window = started.elapsed();
    let traffic = Traffic::between(&before, &after, window, held);
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
