//! Several threads register, heartbeat and query at once for a bounded time: every instance
//! that keeps heartbeating stays visible the whole time, and nothing else does at the end.
//!
//! The TTL is many heartbeat intervals (a loaded machine that stalls a worker for a while does
//! not lose a keeper), and the run goes on for longer than a TTL after the last registration
//! (a lower bound, which no load shortens), so that the quitters are gone at the end.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::common::{PATIENCE, Udp, stat, wait_until};
use makler::broker::{self, Broker};
use makler::protocol::{Request, Response};
use makler::registry;
use makler::shutdown::Shutdown;

const THREADS: u16 = 4;
const KEEPERS: u16 = 5;
const QUITTERS: u16 = 5;
const TTL: Duration = Duration::from_secs(3);
/// How long the workers go on after their last registration.
const RUN_FOR: Duration = Duration::from_millis(4000);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(80);

fn keeper(thread: u16, k: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 1, thread as u8], 10_000 + k))
}

#[test]
fn only_what_keeps_heartbeating_stays_visible() {
    let config = broker::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        registry: registry::Config { ttl: TTL, ..Default::default() },
        ..Default::default()
    };
    let broker = Broker::bind(config).unwrap();
    let addr = broker.local_addr();
    let shutdown = Shutdown::new();
    let loop_thread = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || broker.run(&shutdown))
    };

    let start = Arc::new(Barrier::new(THREADS as usize));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || worker(addr, t, &start))
        })
        .collect();
    let mut queries = 0;
    for worker in workers {
        queries += worker.join().expect("worker panicked");
    }
    assert!(queries > 100, "only {queries} queries ran");

    // The quitters registered at the start; once their TTL has passed, only keepers are left
    // (their last heartbeats are less than a TTL old, so they stay visible a while longer).
    let mut udp = Udp::new(addr);
    for t in 0..THREADS {
        let service = format!("svc{t}");
        let Response::Instances(list) = udp.binary(&Request::Query { service: &service }) else {
            panic!("{service} vanished")
        };
        let seen: BTreeSet<_> = list.into_iter().collect();
        let expected: BTreeSet<_> = (0..KEEPERS).map(|k| keeper(t, k)).collect();
        assert_eq!(seen, expected, "{service}");
    }
    // And when the keepers stop too, everything goes, by expiry. The quitters' absence above
    // shows the TTL is the configured one; that a lease runs out exactly at it is the registry's
    // unit tests with time passed in. So the wait is patient, not a few TTLs a loaded machine
    // may overrun.
    // (`stats` from a socket of its own: a late answer to a retransmitted binary query on this
    // one would be read as its reply.)
    wait_until(PATIENCE, "every registration expires", || {
        (Udp::new(addr).text("stats").starts_with("instances=0 services=0 ")).then_some(())
    });
    let registered = u64::from(THREADS * (KEEPERS + QUITTERS));
    assert_eq!(stat(&udp, "expired"), registered, "every registration went by expiry");

    shutdown.request();
    loop_thread.join().expect("broker thread").expect("broker ran");
}

/// Registers keepers and quitters of one service, then heartbeats the keepers and queries until
/// the time is up, checking every answer. Returns how many queries it made.
///
/// Text has no request ids: a late answer to a retransmitted request is read as the next one's
/// reply on the same socket. So binary requests go on one socket (their replies are matched by
/// id), text heartbeats on another (every answer there is a heartbeat's), and each text
/// registration on a socket of its own.
fn worker(broker: SocketAddr, t: u16, start: &Barrier) -> usize {
    let mut udp = Udp::new(broker);
    let heartbeats = Udp::new(broker);
    let service = format!("svc{t}");
    start.wait();

    let mut ids = Vec::new();
    for k in 0..KEEPERS {
        let ip = keeper(t, k).ip();
        let reply = Udp::new(broker).text(&format!("register {service} {ip} {}", keeper(t, k).port()));
        ids.push(uuid::Uuid::try_parse(&reply).unwrap_or_else(|_| panic!("register: {reply}")));
    }
    for q in 0..QUITTERS {
        let reply = udp.binary(&Request::Register { service: &service, ip: None, port: 20_000 + q });
        assert!(matches!(reply, Response::Registered { .. }), "{reply:?}");
    }
    let keepers: BTreeSet<_> = (0..KEEPERS).map(|k| keeper(t, k)).collect();
    let registered = Instant::now();

    let mut queries = 0;
    // The keepers' first heartbeat at once: the quitters' registrations took a while.
    let mut last_beat: Option<Instant> = None;
    while registered.elapsed() < RUN_FOR {
        if last_beat.is_none_or(|at| at.elapsed() >= HEARTBEAT_EVERY) {
            last_beat = Some(Instant::now());
            for (k, &id) in ids.iter().enumerate() {
                let reply = if k % 2 == 0 {
                    heartbeats.text(&format!("heartbeat {id}"))
                } else {
                    format!("{:?}", udp.binary(&Request::Heartbeat { id }))
                };
                assert!(reply == "OK" || reply == "Ok", "heartbeat of keeper {k}: {reply}");
            }
        }
        let Response::Instances(list) = udp.binary(&Request::Query { service: &service }) else {
            panic!("{service} not found")
        };
        let seen: BTreeSet<_> = list.into_iter().collect();
        assert!(keepers.is_subset(&seen), "a keeper is missing: {seen:?}");
        queries += 1;
    }
    queries
}
