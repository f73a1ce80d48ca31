//! The watch memory benchmark behind `makler-load watches`: a fresh broker with a short TTL,
//! given WATCHES confirmed watches (SOCKETS sockets on loopback addresses, each watching SERVICES
//! services, every watch with its cookie echoed) and then left alone until they expire, for a
//! number of cycles; the broker's resident memory before, with the watches and after they
//! expired, as bytes per watch and the ratio of after to before.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::child::ChildProcess;
use crate::udp::{rss_bytes, rss_split};

/// Settings of the watch benchmark.
#[derive(Debug, Clone)]
pub struct WatchBench {
    /// The `makler-broker` executable to start.
    pub broker_bin: PathBuf,
    /// Sockets the watches come from, each on an address of its own in 127.0.0.0/8.
    pub sockets: usize,
    /// Services each socket watches (`watch0`, `watch1`, …).
    pub services: usize,
    /// The broker's TTL: how long a watch lives unrenewed.
    pub ttl: Duration,
    /// Times the watches are made and left to expire.
    pub cycles: usize,
}

/// Requests in flight per socket.
const WINDOW: usize = 64;

/// Runs the benchmark and writes its lines to `out`.
pub fn bench_watches(config: &WatchBench, out: &mut dyn Write) -> io::Result<()> {
    let watches = config.sockets * config.services;
    let ttl = format!("{}", config.ttl.as_secs_f64());
    let total = (watches * 2).to_string();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        "--no-multicast",
        "--ttl",
        &ttl,
        "--max-watches",
        &total,
        "--max-watches-per-source",
        "0",
        "--max-per-network",
        "0",
        "--rate-limit",
        "0",
        "--probe-interval",
        "0",
    ];
    let broker = ChildProcess::start(&config.broker_bin, &args)?;
    let sockets = (0..config.sockets).map(|k| bind(k, broker.addr())).collect::<io::Result<Vec<_>>>()?;
    // Settle: the broker's start-up allocations are done once it answers, and a burst of one
    // window (as the cycles send) has touched its receive path (stack, buffers); those watches
    // expire before the measurement, so "before" is a broker that has served but holds none.
    watch_all(&sockets[..1], WINDOW)?;
    std::thread::sleep(config.ttl + Duration::from_millis(1500));
    let before = rss_bytes(broker.pid())?;
    let before_split = rss_split(broker.pid())?;
    writeln!(
        out,
        "makler-load watches: {watches} watches ({} sockets x {} services), ttl {ttl} s, {} cycles",
        config.sockets, config.services, config.cycles
    )?;
    writeln!(out, "RSS before: {:.2} MiB ({})", mib(before), split(before_split))?;
    let mut last_after = before;
    for cycle in 1..=config.cycles {
        let started = Instant::now();
        watch_all(&sockets, config.services)?;
        let made = started.elapsed();
        let full = rss_bytes(broker.pid())?;
        // Every watch expires a TTL after it was made, the last one a TTL from now (on a busy
        // machine making them takes seconds); the broker's loop wakes for it.
        std::thread::sleep(config.ttl + Duration::from_millis(1500));
        let after = rss_bytes(broker.pid())?;
        let after_split = rss_split(broker.pid())?;
        last_after = after;
        let per_watch = full.saturating_sub(before) as f64 / watches as f64;
        writeln!(
            out,
            "cycle {cycle}: {watches} watches made in {:.2} s; RSS with them {:.2} MiB: {per_watch:.0} bytes/watch \
             (target <= 200: {}); after expiry {:.2} MiB ({}): {:.3}x before (target <= 1.10: {})",
            made.as_secs_f64(),
            mib(full),
            pass(per_watch <= 200.0),
            mib(after),
            split(after_split),
            after as f64 / before as f64,
            pass(after as f64 <= before as f64 * 1.10),
        )?;
    }
    writeln!(out, "RSS after the last cycle: {:.2} MiB", mib(last_after))?;
    Ok(())
}

/// Anonymous and file-backed resident memory, for the lines above.
fn split((anon, file): (u64, u64)) -> String {
    format!("anonymous {:.2} MiB, files {:.2} MiB", mib(anon), mib(file))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn pass(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Socket `k` on its own loopback address (127.0.1.1, 127.0.1.2, …, 250 to a /24).
fn bind(k: usize, broker: SocketAddr) -> io::Result<UdpSocket> {
    let (hi, lo) = ((k / 250) % 250, k % 250 + 1);
    let socket = UdpSocket::bind(SocketAddr::from(([127, 1 + (k / 62_500) as u8, 1 + hi as u8, lo as u8], 0)))?;
    socket.connect(broker)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket)
}

/// Every socket watches `services` services, with its cookie echoed; an error unless every
/// watch was confirmed.
fn watch_all(sockets: &[UdpSocket], services: usize) -> io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    for socket in sockets {
        let cookie = cookie(socket, &mut buf)?;
        let mut pending: Vec<usize> = (0..services).collect();
        for _attempt in 0..5 {
            let mut missing = Vec::new();
            for chunk in pending.chunks(WINDOW) {
                for &k in chunk {
                    socket.send(format!("watch watch{k} {cookie}\n").as_bytes())?;
                }
                let mut confirmed = vec![false; chunk.len()];
                let mut got = 0;
                while got < chunk.len() {
                    let Ok(n) = socket.recv(&mut buf) else { break };
                    let reply = String::from_utf8_lossy(&buf[..n]);
                    let Some(rest) = reply.strip_prefix("WATCHING watch") else {
                        return Err(io::Error::other(format!("watch refused: {}", reply.trim())));
                    };
                    let k: usize = rest.split(' ').next().and_then(|k| k.parse().ok()).unwrap_or(usize::MAX);
                    if let Some(i) = chunk.iter().position(|&c| c == k) {
                        if !confirmed[i] {
                            confirmed[i] = true;
                            got += 1;
                        }
                    }
                }
                missing.extend(chunk.iter().zip(&confirmed).filter(|(_, c)| !**c).map(|(k, _)| *k));
            }
            pending = missing;
            if pending.is_empty() {
                break;
            }
        }
        if !pending.is_empty() {
            return Err(io::Error::other(format!("{} watches were never confirmed", pending.len())));
        }
    }
    Ok(())
}

/// The cookie the broker gives this socket.
fn cookie(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<String> {
    for _ in 0..5 {
        socket.send(b"watch watch0\n")?;
        if let Ok(n) = socket.recv(buf) {
            let reply = String::from_utf8_lossy(&buf[..n]);
            if let Some(cookie) = reply.trim().strip_prefix("COOKIE ") {
                return Ok(cookie.to_owned());
            }
        }
    }
    Err(io::Error::other("no cookie"))
}
