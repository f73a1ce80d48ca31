//! Reports of a slow server, as real processes on loopback: a server whose every connect takes
//! about a second is kept however often it is reported.
//!
//! The slow server needs no privileges: a listener whose accept queue is kept full, so the
//! kernel drops each SYN, and the client retransmits it after its initial RTO (1 s). A helper
//! thread watches `/proc/net/tcp` for a connect to it in SYN-SENT and frees one place in the
//! queue a tenth of a second later, in time for the retransmitted SYN, which then fills it again. So
//! every connect, the broker's probes and this test's own, takes about one second.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use makler::node::verify::DEFAULT_PROBE_TIMEOUT;

use crate::common::{Udp, broker, listed, stat};

/// The broker's default cooldown after a verification kept a reported endpoint.
const COOLDOWN: Duration = Duration::from_secs(2);

/// A listener whose connects each take about one second (see the module documentation). The
/// thread stops when the value is dropped.
struct SlowServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowServer {
    fn start() -> SlowServer {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        socket.listen(1).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        // Fill the queue until a connect no longer completes at once.
        let mut held = Vec::new();
        while let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            held.push(stream);
            assert!(held.len() < 64, "the listen queue never filled");
        }
        // Never block on an empty queue (a client that gave up leaves nothing to take), so the
        // thread always sees the stop flag.
        socket.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let _held = held;
            let remote = format!("0100007F:{:04X}", addr.port());
            // Connects seen in SYN-SENT (by their local address), and when.
            let mut seen: Vec<(String, Instant)> = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
                let now = Instant::now();
                let syn_sent: Vec<String> = table
                    .lines()
                    .skip(1)
                    .filter_map(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        (fields.len() > 3 && fields[2] == remote && fields[3] == "02").then(|| fields[1].to_owned())
                    })
                    .collect();
                seen.retain(|(local, _)| syn_sent.contains(local));
                for local in syn_sent {
                    if !seen.iter().any(|(l, _)| *l == local) {
                        seen.push((local, now));
                    }
                }
                // A tenth of a second after a SYN was dropped, free one place for its
                // retransmission (due 1 s after it): this thread may be 0.9 s late on a loaded
                // machine and still be in time.
                for (_, at) in &mut seen {
                    if now >= *at + Duration::from_millis(100) {
                        if let Ok((conn, _)) = socket.accept() {
                            drop(conn);
                        }
                        // Once per connect.
                        *at += Duration::from_secs(3600);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        SlowServer { addr, stop, thread: Some(thread) }
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_server_whose_connect_takes_a_second_is_kept_after_100_reports() {
    let slow = SlowServer::start();
    // The precondition: a connect really takes about a second (one dropped SYN).
    let asked = Instant::now();
    let stream = TcpStream::connect_timeout(&slow.addr, Duration::from_secs(5)).expect("the slow server answers");
    let took = asked.elapsed();
    drop(stream);
    // A SYN was dropped (the kernel's retransmission, 1 s, is a bound no load shortens), and
    // only one: a second drop would take 3 s, the broker's probe timeout.
    assert!(
        (Duration::from_millis(900)..DEFAULT_PROBE_TIMEOUT).contains(&took),
        "a connect to the slow server took {took:?}"
    );
    eprintln!("a connect to the slow server takes {took:?}");

    // The default --probe-timeout; no health checks, so every probe is a report's.
    let mut process = broker(&["--ttl", "60", "--probe-interval", "0"]);
    let udp = Udp::new(process.addr("udp"));
    let (ip, port) = (slow.addr.ip(), slow.addr.port());
    udp.text(&format!("register web {ip} {port} check=tcp"));
    assert_eq!(listed(&udp, "web"), [slow.addr]);
    // 100 reports, 60 ms apart (under the per-source cap of 20 a second).
    let started = Instant::now();
    for k in 0..100 {
        assert_eq!(udp.text(&format!("report web {}", slow.addr)), "OK", "report {k}");
        assert_eq!(listed(&udp, "web"), [slow.addr], "removed after report {k}");
        std::thread::sleep(Duration::from_millis(60));
    }
    // The last verification ends (a second's connect) and it is still there.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(listed(&udp, "web"), [slow.addr], "removed after the reports");
    let (probes, dead) = (stat(&udp, "probes"), stat(&udp, "probes_dead"));
    let span = started.elapsed();
    eprintln!("100 reports over {span:?}: {probes} probes, {dead} failed");
    assert_eq!(stat(&udp, "removed_unreachable"), 0);
    // One verification at a time, each a second's connect (0.9 s at least: the kernel's
    // retransmission of the dropped SYN) and then a 2 s cooldown: one per 2.9 s of reports at
    // the most, whatever the load (which only stretches the time the reports took), plus one
    // re-check for each probe that timed out. A probe per report would be dozens.
    let spacing = COOLDOWN + Duration::from_millis(900);
    let most = 1 + span.as_millis() / spacing.as_millis() + u128::from(dead);
    assert!((2..=most).contains(&u128::from(probes)), "{probes} probes for 100 reports over {span:?}");
    process.terminate();
}
