//! Request/response load over UDP with a bounded window in flight, from one or several client
//! threads, for any protocol that can say what it sends and judge what comes back (a
//! [`Workload`]: the broker's binary and text forms, DNS, an echo).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::{Latencies, Measurement};
use makler::protocol::{Check, Request, Response, binary};

/// How long a request may go unanswered before it counts as lost.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);

/// What a [`Workload`] makes of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The key of the request it answers, when the reply carries one (a request id).
    pub key: Option<u64>,
    /// Whether it is the right answer (an error, a refusal or garbage is not).
    pub good: bool,
}

/// One kind of request and the judgement of its replies.
pub trait Workload: Send {
    /// Whether replies carry their request's key ([`Answer::key`]). Replies without one are
    /// matched to requests in order, which is exact for a server that answers in order on
    /// loopback; a lost request then shifts the match by one until its timeout.
    fn keyed(&self) -> bool;
    /// Writes request number `seq` into `out` (empty) and returns its key.
    fn request(&mut self, seq: u64, out: &mut Vec<u8>) -> u64;
    /// Judges one reply.
    fn answer(&mut self, reply: &[u8]) -> Answer;
    /// The same workload for another client thread.
    fn fork(&self) -> Box<dyn Workload>;
}

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

    /// Sends requests `first_seq`, `first_seq + 1`, … made by `workload` until `duration` has
    /// passed or `max_requests` have been sent, keeping the window full, then waits for the
    /// last replies (at most [`REQUEST_TIMEOUT`]). The time measured ends with the last reply.
    pub fn run(
        &self,
        duration: Duration,
        max_requests: u64,
        first_seq: u64,
        workload: &mut dyn Workload,
    ) -> io::Result<Measurement> {
        let keyed = workload.keyed();
        // Oldest first: requests are sent in order, so the expired ones are at the front.
        let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(self.window);
        let mut latencies = Latencies::default();
        let mut request = Vec::with_capacity(1500);
        let mut reply = vec![0u8; 65536];
        let (mut seq, mut sent, mut lost, mut bad, mut reply_bytes) = (first_seq, 0u64, 0u64, 0u64, 0u64);
        let start = Instant::now();
        let stop_sending = start + duration;
        let mut last_reply = None;
        loop {
            let now = Instant::now();
            while now < stop_sending && sent < max_requests && in_flight.len() < self.window {
                request.clear();
                let key = workload.request(seq, &mut request);
                seq = seq.wrapping_add(1);
                self.socket.send(&request)?;
                in_flight.push_back((key, Instant::now()));
                sent += 1;
            }
            if in_flight.is_empty() {
                break;
            }
            match self.socket.recv(&mut reply) {
                Ok(len) => {
                    let received = Instant::now();
                    last_reply = Some(received);
                    let answer = workload.answer(&reply[..len]);
                    let position = match (keyed, answer.key) {
                        (true, Some(key)) => in_flight.iter().position(|&(k, _)| k == key),
                        (true, None) => None,
                        (false, _) => Some(0),
                    };
                    // A reply to nothing in flight (a late one, or unreadable) is only counted
                    // as bad; its request, if any, times out.
                    match position.and_then(|i| in_flight.remove(i)) {
                        Some((_, sent_at)) if answer.good => {
                            latencies.record(received.duration_since(sent_at));
                            reply_bytes += len as u64;
                        }
                        _ if answer.good => {}
                        _ => bad += 1,
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(io::Error::new(e.kind(), "the target is not listening"));
                }
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            while in_flight.front().is_some_and(|&(_, sent_at)| now.duration_since(sent_at) >= REQUEST_TIMEOUT) {
                in_flight.pop_front();
                lost += 1;
            }
        }
        let end = last_reply.unwrap_or_else(Instant::now);
        Ok(Measurement { latencies, elapsed: end.duration_since(start), lost, bad, reply_bytes })
    }
}

/// Runs `workload` at `target` from `threads` client threads at once, each with its own socket
/// and `window` requests in flight, for `duration`; the threads' figures are added up.
pub fn run_parallel(
    target: SocketAddr,
    threads: usize,
    window: usize,
    duration: Duration,
    workload: &dyn Workload,
) -> io::Result<Measurement> {
    let threads = threads.max(1);
    let drivers = (0..threads).map(|_| Driver::new(target, window)).collect::<io::Result<Vec<_>>>()?;
    let barrier = Barrier::new(threads);
    let results: Vec<io::Result<Measurement>> = std::thread::scope(|scope| {
        let handles: Vec<_> = drivers
            .iter()
            .enumerate()
            .map(|(t, driver)| {
                let mut workload = workload.fork();
                let barrier = &barrier;
                // Threads start far apart in the sequence, so they ask for different names.
                let first_seq = t as u64 * 7919;
                scope.spawn(move || {
                    barrier.wait();
                    driver.run(duration, u64::MAX, first_seq, workload.as_mut())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a client thread panicked"))))
            .collect()
    });
    let mut total = Measurement::default();
    for result in results {
        total.add_parallel(result?);
    }
    Ok(total)
}

/// The service name of type `k` in a benchmark's table: `prefix` then `k`.
pub fn type_name(prefix: &str, k: usize) -> String {
    format!("{prefix}{k}")
}

/// The endpoint of instance `i` in the benchmark's table: distinct loopback addresses, which
/// the broker stores and hands out but nobody connects to.
pub fn instance_endpoint(i: usize) -> SocketAddr {
    let [_, a, b, c] = (i as u32).to_be_bytes();
    SocketAddr::from(([127, a.wrapping_add(1), b, c], 4000 + (i % 1000) as u16))
}

/// Registrations of instances `from..to` (instance `i` under type `i % types`) in the binary
/// form, collecting the ids the broker hands out.
struct Populate<'a> {
    prefix: &'a str,
    from: usize,
    types: usize,
    ids: Vec<Uuid>,
    refused: Option<String>,
    /// Metadata pairs every instance carries (`MAKLER_LOAD_META`), if any.
    meta: Option<Vec<(&'static str, &'static str)>>,
}

/// The metadata pairs of `MAKLER_LOAD_META` (`key=value` words), if set: a benchmark's whole
/// run registers with them, so the string lives as long (leaked once).
fn meta_from_env() -> Option<Vec<(&'static str, &'static str)>> {
    let words: &'static str = Box::leak(std::env::var("MAKLER_LOAD_META").ok()?.into_boxed_str());
    Some(words.split_whitespace().map(|word| word.split_once('=').unwrap_or((word, ""))).collect())
}

impl Workload for Populate<'_> {
    fn keyed(&self) -> bool {
        true
    }

    fn request(&mut self, seq: u64, out: &mut Vec<u8>) -> u64 {
        let i = self.from + seq as usize;
        let endpoint = instance_endpoint(i);
        let service = type_name(self.prefix, i % self.types);
        let (ip, port) = (Some(endpoint.ip()), endpoint.port());
        // `MAKLER_LOAD_META="path=/ version=2"`: every instance carries these metadata pairs
        // (what an instance with metadata costs the broker).
        let request = match &self.meta {
            Some(meta) => Request::RegisterMeta { service: &service, ip, port, check: Check::None, meta: meta.clone() },
            None => Request::Register { service: &service, ip, port },
        };
        binary::encode_request(seq as u32, &request, out);
        seq
    }

    fn answer(&mut self, reply: &[u8]) -> Answer {
        match binary::decode_response(reply) {
            Ok((id, Response::Registered { id: uuid, .. })) => {
                if let Some(slot) = self.ids.get_mut(id as usize) {
                    *slot = uuid;
                }
                Answer { key: Some(id.into()), good: true }
            }
            other => {
                self.refused = Some(format!("{other:?}"));
                Answer { key: other.ok().map(|(id, _)| id.into()), good: false }
            }
        }
    }

    fn fork(&self) -> Box<dyn Workload> {
        unreachable!("registrations run from one thread")
    }
}

/// Registers instances `from..to` (instance `i` as `{prefix}{i % types}` at
/// [`instance_endpoint`]`(i)`) in the binary form and returns their ids in order, with the
/// measurement. Fails when any registration is refused or lost.
pub fn populate(
    driver: &Driver,
    prefix: &str,
    from: usize,
    to: usize,
    types: usize,
) -> io::Result<(Vec<Uuid>, Measurement)> {
    let count = to.saturating_sub(from);
    let mut work = Populate {
        prefix,
        from,
        types: types.max(1),
        ids: vec![Uuid::nil(); count],
        refused: None,
        meta: meta_from_env(),
    };
    let measurement = driver.run(Duration::from_secs(600), count as u64, 0, &mut work)?;
    if let Some(reply) = work.refused {
        return Err(io::Error::other(format!("a registration was refused: {reply}")));
    }
    if measurement.lost > 0 || work.ids.iter().any(Uuid::is_nil) {
        return Err(io::Error::other(format!("{} registrations were lost", measurement.lost)));
    }
    Ok((work.ids, measurement))
}

/// The resident memory of a process, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    status_bytes(pid, "VmRSS:")
}

/// The resident memory of process `pid` that is its own (`RssAnon`: the heap, stacks, anonymous
/// maps) and that is pages of files (`RssFile`: mostly its code, which stays resident once run),
/// in bytes.
pub fn rss_split(pid: u32) -> io::Result<(u64, u64)> {
    Ok((status_bytes(pid, "RssAnon:")?, status_bytes(pid, "RssFile:")?))
}

/// A `kB` line of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other(format!("no {field} line")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::EchoServer;
    use makler::shutdown::Shutdown;

    /// Sends `Stats` requests and accepts any binary frame back, keyed by its id.
    struct Stats {
        keyed: bool,
    }

    impl Workload for Stats {
        fn keyed(&self) -> bool {
            self.keyed
        }
        fn request(&mut self, seq: u64, out: &mut Vec<u8>) -> u64 {
            binary::encode_request(seq as u32, &Request::Stats, out);
            seq
        }
        fn answer(&mut self, reply: &[u8]) -> Answer {
            match binary::decode_request(reply) {
                Ok((id, _)) => Answer { key: Some(id.into()), good: true },
                Err(_) => Answer { key: None, good: false },
            }
        }
        fn fork(&self) -> Box<dyn Workload> {
            Box::new(Stats { keyed: self.keyed })
        }
    }

    fn echo() -> (SocketAddr, Shutdown, std::thread::JoinHandle<io::Result<u64>>) {
        let server = EchoServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr();
        let shutdown = Shutdown::new();
        let stopper = shutdown.clone();
        (addr, shutdown, std::thread::spawn(move || server.run(&stopper, Duration::from_secs(60))))
    }

    #[test]
    fn the_driver_measures_an_echo_server_keyed_and_in_order() {
        let (addr, shutdown, thread) = echo();
        for keyed in [true, false] {
            let driver = Driver::new(addr, 4).unwrap();
            let m = driver.run(Duration::from_secs(5), 500, 0, &mut Stats { keyed }).unwrap();
            assert_eq!((m.latencies.count(), m.lost, m.bad), (500, 0, 0));
            // The echo returns each request: ids below 128 take one varint byte, the others two.
            assert_eq!(m.reply_bytes, 128 * 3 + (500 - 128) * 4);
            let s = m.summary();
            assert!(s.p50 <= s.p99);
        }
        shutdown.request();
        assert_eq!(thread.join().unwrap().unwrap(), 1000);
    }

    #[test]
    fn parallel_threads_add_up() {
        let (addr, shutdown, thread) = echo();
        let m = run_parallel(addr, 3, 2, Duration::from_millis(50), &Stats { keyed: true }).unwrap();
        assert!(m.latencies.count() > 0);
        assert_eq!((m.lost, m.bad), (0, 0));
        shutdown.request();
        assert_eq!(thread.join().unwrap().unwrap(), m.latencies.count() as u64);
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
