//! The shell with a scripted core over real loopback sockets: replies on the same and on
//! another face, queued datagrams to third parties, budgets, streams and their limits, probes,
//! timers and a clean stop.

use std::io::{Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream, UdpSocket as StdUdp};

use super::*;
use crate::core::{Outbox, StreamStep, Transmit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum F {
    A,
    B,
    S,
}

#[derive(Default)]
struct Script {
    /// Commands handed over from other threads, in order.
    commands: Vec<String>,
    outbox: Option<Outbox<F>>,
    probes: std::collections::VecDeque<ProbeCmd>,
    outcomes: Vec<(ProbeId, ProbeOutcome)>,
    datagrams: HashMap<&'static str, usize>,
    timer: Option<Instant>,
    fired: usize,
    closed: bool,
    /// The client's socket, read by `arrived?` to see whether an earlier reply had already left.
    watcher: Option<StdUdp>,
    /// What each `arrived?` found at the client (the earlier reply, or nothing).
    arrivals: Vec<Option<String>>,
}

impl Core for Script {
    type Face = F;
    type Command = String;

    fn handle_command(&mut self, _now: Instant, command: String) {
        self.commands.push(command);
    }

    fn handle_datagram(
        &mut self,
        _now: Instant,
        face: F,
        _from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> Option<F> {
        *self.datagrams.entry(if face == F::A { "a" } else { "b" }).or_insert(0) += 1;
        let text = std::str::from_utf8(datagram).unwrap_or("");
        let mut words = text.split(' ');
        match words.next() {
            Some("echo") => {
                reply.extend_from_slice(datagram);
                Some(face)
            }
            Some("other") => {
                reply.extend_from_slice(datagram);
                Some(F::B)
            }
            Some("fanout") => {
                let n: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let to: SocketAddr = words.next().and_then(|w| w.parse().ok()).unwrap();
                for i in 0..n {
                    let outbox = self.outbox.get_or_insert_with(|| Outbox::new(1000));
                    outbox.push(F::A, to, |b| b.extend_from_slice(format!("copy {i}").as_bytes()));
                }
                None
            }
            Some("arrived?") => {
                let watcher = self.watcher.as_ref().expect("a watcher");
                // Patient: a reply that has left arrives however loaded the machine; one held
                // back leaves only after this returns, so no wait would see it.
                watcher.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 64];
                let seen = watcher.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
                self.arrivals.push(seen);
                None
            }
            Some("timer") => {
                let ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                self.timer = Some(Instant::now() + Duration::from_millis(ms));
                None
            }
            _ => None,
        }
    }

    fn handle_stream(
        &mut self,
        _now: Instant,
        face: F,
        _conn: ConnId,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> StreamStep {
        assert_eq!(face, F::S);
        let Some(end) = input.iter().position(|&b| b == b'\n') else { return StreamStep::default() };
        let line = &input[..end];
        if line == b"quit" {
            output.extend_from_slice(b"bye\n");
            return StreamStep { consumed: end + 1, close: true };
        }
        if let Some(n) = line.strip_prefix(b"big ") {
            let n: usize = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()).unwrap_or(0);
            output.resize(output.len() + n, b'x');
            return StreamStep { consumed: end + 1, close: false };
        }
        output.extend_from_slice(b"got ");
        output.extend_from_slice(line);
        output.push(b'\n');
        StreamStep { consumed: end + 1, close: false }
    }

    fn poll_transmit(&mut self, _now: Instant, out: &mut Vec<u8>) -> Option<Transmit<F>> {
        self.outbox.as_mut()?.pop(out)
    }

    fn poll_probe(&mut self) -> Option<ProbeCmd> {
        self.probes.pop_front()
    }

    fn handle_probe(&mut self, _now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        self.outcomes.push((id, outcome));
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.timer.is_some_and(|at| at <= now) {
            self.timer = None;
            self.fired += 1;
        }
    }

    fn handle_close(&mut self, _now: Instant) {
        self.closed = true;
    }
}

struct Rig {
    shell: Shell<Script>,
    events: Events,
    a: SocketAddr,
    b: SocketAddr,
    s: SocketAddr,
}

fn rig(limits: StreamLimits) -> Rig {
    let mut shell = Shell::new(Script::default()).unwrap();
    let udp_a = crate::net::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let udp_b = crate::net::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = crate::net::bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let (a, b, s) = (udp_a.local_addr().unwrap(), udp_b.local_addr().unwrap(), listener.local_addr().unwrap());
    shell.add_udp(F::A, udp_a).unwrap();
    shell.add_udp(F::B, udp_b).unwrap();
    shell.add_listener(F::S, listener, limits).unwrap();
    Rig { shell, events: Events::with_capacity(64), a, b, s }
}

impl Rig {
    /// Runs turns until `done` holds, for at most 30 s (patient: a loaded machine may be slow).
    #[track_caller]
    fn until(&mut self, what: &str, mut done: impl FnMut(&Shell<Script>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&self.shell) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            self.shell.turn(&mut self.events, Some(Duration::from_millis(10))).unwrap();
        }
    }
}

fn client() -> StdUdp {
    let socket = StdUdp::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket
}

fn recv(socket: &StdUdp) -> (String, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}

#[test]
fn replies_leave_from_the_face_the_core_names_and_queued_datagrams_go_anywhere() {
    let mut rig = rig(StreamLimits::default());
    let c = client();
    let third = client();
    c.send_to(b"echo hi", rig.a).unwrap();
    c.send_to(b"other hi", rig.a).unwrap();
    c.send_to(format!("fanout 3 {}", third.local_addr().unwrap()).as_bytes(), rig.b).unwrap();
    rig.until("three datagrams are handled", |s| s.core().datagrams.values().sum::<usize>() == 3);
    assert_eq!(recv(&c), ("echo hi".into(), rig.a));
    assert_eq!(recv(&c), ("other hi".into(), rig.b), "answered from face B's socket");
    let copies: Vec<_> = (0..3).map(|_| recv(&third)).collect();
    assert_eq!(copies, (0..3).map(|i| (format!("copy {i}"), rig.a)).collect::<Vec<_>>());
}

/// A reply to a datagram of a short queue leaves before the next datagram is read: held back
/// for a batch, it would keep a client with a few requests in flight waiting for the rest.
#[test]
fn a_reply_leaves_before_the_next_datagram_of_a_short_queue_is_read() {
    let mut rig = rig(StreamLimits::default());
    let c = client();
    rig.shell.core_mut().watcher = Some(c.try_clone().unwrap());
    c.send_to(b"echo one", rig.a).unwrap();
    c.send_to(b"arrived?", rig.a).unwrap();
    rig.until("both are handled", |s| s.core().datagrams.get("a") == Some(&2));
    assert_eq!(rig.shell.core().arrivals, vec![Some("echo one".to_string())]);
}

/// A command sent from another thread is handed to the core at once (the waker ends the
/// poll), in order, and a handle outlives nothing: sending after the shell is gone fails.
#[test]
fn commands_from_another_thread_reach_the_core_in_order() {
    let mut rig = rig(StreamLimits::default());
    let commands = rig.shell.commands();
    let sender = commands.clone();
    std::thread::spawn(move || {
        sender.send("one".to_owned()).unwrap();
        sender.send("two".to_owned()).unwrap();
    })
    .join()
    .unwrap();
    rig.until("both commands are handed over", |s| s.core().commands.len() == 2);
    assert_eq!(rig.shell.core().commands, ["one", "two"]);
    drop(rig);
    assert!(commands.send("late".to_owned()).is_err(), "the loop is gone");
}

/// A queue longer than a batch is read in batches (see `PROBE_EVERY`), and every reply still
/// goes in the order of its datagram.
#[test]
fn a_long_queue_is_answered_in_order() {
    let mut rig = rig(StreamLimits::default());
    let c = client();
    let n = 5 * batch_io::BATCH;
    // Of one length, so that the queue the kernel holds is n times one of them.
    for i in 0..n {
        c.send_to(format!("echo {i:04}").as_bytes(), rig.a).unwrap();
    }
    until_queued(b"echo 0000", &[(rig.a, n)]);
    rig.until("all are handled", |s| s.core().datagrams.get("a") == Some(&n));
    let replies: Vec<String> = (0..n).map(|_| recv(&c).0).collect();
    assert_eq!(replies, (0..n).map(|i| format!("echo {i:04}")).collect::<Vec<_>>());
}

/// A long queue from many sources is answered in batches (one `sendmmsg` to many
/// destinations, from the thread's kept headers), and every source gets its own replies, in
/// order, in both address families.
#[test]
fn a_long_queue_from_many_sources_gets_each_its_own_replies() {
    let mut rig = rig(StreamLimits::default());
    let mut shell6 = Shell::new(Script::default()).unwrap();
    // IPv6 loopback is required: a test of both families must not pass having tried one.
    let v6 = crate::net::bind_udp("[::1]:0".parse().unwrap()).expect("bind [::1]");
    let a6 = v6.local_addr().unwrap();
    shell6.add_udp(F::A, v6).unwrap();
    for (server, bind) in [(rig.a, "127.0.0.1:0"), (a6, "[::1]:0")] {
        let clients: Vec<StdUdp> = (0..4).map(|_| StdUdp::bind(bind).unwrap()).collect();
        for c in &clients {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let n = 3 * batch_io::BATCH;
        // One length for all, so that each takes the same room in the receive queue.
        for i in 0..n {
            clients[i % 4].send_to(format!("echo {i:04}").as_bytes(), server).unwrap();
        }
        // The whole queue is there before the first turn, so it is read and answered in batches.
        until_queued(b"echo 0000", &[(server, n)]);
        if server == rig.a {
            rig.until("all are handled", |s| s.core().datagrams.get("a") == Some(&n));
        } else {
            let deadline = Instant::now() + Duration::from_secs(30);
            while shell6.core().datagrams.get("a") != Some(&n) {
                assert!(Instant::now() < deadline, "timed out on IPv6");
                shell6.turn(&mut rig.events, Some(Duration::from_millis(10))).unwrap();
            }
        }
        for (k, c) in clients.iter().enumerate() {
            let mine: Vec<String> = (k..n).step_by(4).map(|i| format!("echo {i:04}")).collect();
            let got: Vec<String> = mine
                .iter()
                .map(|_| recv(c))
                .map(|(text, from)| {
                    assert_eq!(from, server);
                    text
                })
                .collect();
            assert_eq!(got, mine, "client {k} of {server}");
        }
    }
}

#[test]
fn a_flood_on_one_socket_waits_its_turn_behind_the_others() {
    let mut rig = rig(StreamLimits::default());
    flood_a_and_take_one_turn(&mut rig);
    rig.until("the rest of A is handled", |s| s.core().datagrams.get("a") == Some(&3000));
}

/// The bytes the kernel holds for the loopback UDP socket bound to `addr`: the `rx_queue`
/// column of `/proc/net/udp` (or `udp6`), which grows by the same amount for each datagram of
/// the same size (the buffer it takes) until the socket is read.
fn queued_bytes(addr: SocketAddr) -> usize {
    // The kernel prints the address as 32-bit words as they lie in memory, in hex: native byte
    // order.
    let words = |octets: &[u8]| -> String {
        octets.chunks(4).map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap()))).collect()
    };
    let (local, path) = match addr {
        SocketAddr::V4(a) => (format!("{}:{:04X}", words(&a.ip().octets()), a.port()), "/proc/net/udp"),
        SocketAddr::V6(a) => (format!("{}:{:04X}", words(&a.ip().octets()), a.port()), "/proc/net/udp6"),
    };
    let table = std::fs::read_to_string(path).unwrap();
    let row = table.lines().skip(1).map(|line| line.split_whitespace().collect::<Vec<_>>()).find(|f| f[1] == local);
    let row = row.unwrap_or_else(|| panic!("{addr} ({local}) is not in {path}"));
    let (_tx, rx) = row[4].split_once(':').unwrap();
    usize::from_str_radix(rx, 16).unwrap()
}

/// Waits until the kernel holds `counts` datagrams `datagram` for each socket (none read yet),
/// so that a turn taken next finds them all, however late a loaded machine delivers them. A
/// fixed pause would be a guess.
fn until_queued(datagram: &[u8], counts: &[(SocketAddr, usize)]) {
    // What one such datagram takes in a receive queue, measured on a socket of the test's, of
    // the family of the sockets waited on (all of one family).
    let bind = if counts[0].0.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" };
    let scratch = StdUdp::bind(bind).unwrap();
    StdUdp::bind(bind).unwrap().send_to(datagram, scratch.local_addr().unwrap()).unwrap();
    let queued = |want: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !want() {
            assert!(Instant::now() < deadline, "the kernel did not queue the datagrams in 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    queued(&|| queued_bytes(scratch.local_addr().unwrap()) > 0);
    let each = queued_bytes(scratch.local_addr().unwrap());
    queued(&|| counts.iter().all(|&(addr, n)| queued_bytes(addr) >= n * each));
}

/// Sends 3,000 datagrams to A and one to B, takes one turn and checks that it served one budget
/// of A and B's datagram.
fn flood_a_and_take_one_turn(rig: &mut Rig) {
    let c = client();
    for _ in 0..3000 {
        c.send_to(b"noop", rig.a).unwrap();
    }
    c.send_to(b"noop", rig.b).unwrap();
    // Wait until the kernel holds all of them, then take one turn.
    until_queued(b"noop", &[(rig.a, 3000), (rig.b, 1)]);
    rig.shell.turn(&mut rig.events, Some(Duration::from_millis(100))).unwrap();
    let counts = rig.shell.core().datagrams.clone();
    assert_eq!(counts.get("a"), Some(&DATAGRAM_BUDGET), "one budget of A in the first turn");
    assert_eq!(counts.get("b"), Some(&1), "B is served in the same turn");
}

/// A's batch-read interval (see `PROBE_MAX`).
fn probe_of(shell: &Shell<Script>) -> &Cell<usize> {
    let index = shell.udp_faces.iter().find(|(f, _)| *f == F::A).map(|&(_, i)| i).unwrap();
    let Some(Io::Udp { probe, .. }) = shell.ios.get(index) else { panic!("A is a UDP socket") };
    probe
}

/// After a quiet spell has spread a socket's batch reads far apart (see `PROBE_MAX`), a flood
/// on it is still taken one budget a turn, the other socket is served in the same turn, and
/// the first full batch read brings the socket back to batch reads every `PROBE_EVERY`.
#[test]
fn a_flood_after_a_quiet_spell_keeps_to_the_budget() {
    let mut rig = rig(StreamLimits::default());
    probe_of(&rig.shell).set(PROBE_MAX);
    flood_a_and_take_one_turn(&mut rig);
    assert_eq!(probe_of(&rig.shell).get(), PROBE_EVERY, "a full batch read shortens the interval");
    rig.until("the rest of A is handled", |s| s.core().datagrams.get("a") == Some(&3000));
}

/// A batch read that finds the queue empty (it was exactly the interval long) is a batch read
/// that found a short queue: the interval doubles, as for one that finds a few datagrams.
#[test]
fn a_batch_read_that_finds_nothing_spreads_the_batch_reads() {
    let mut rig = rig(StreamLimits::default());
    let c = client();
    for _ in 0..PROBE_EVERY {
        c.send_to(b"noop", rig.a).unwrap();
    }
    until_queued(b"noop", &[(rig.a, PROBE_EVERY)]);
    rig.shell.turn(&mut rig.events, Some(Duration::from_millis(100))).unwrap();
    assert_eq!(rig.shell.core().datagrams.get("a"), Some(&PROBE_EVERY));
    assert_eq!(probe_of(&rig.shell).get(), 2 * PROBE_EVERY);
}

/// Connections open at the listeners.
fn open_streams(shell: &Shell<Script>) -> usize {
    shell.ios.iter().map(|(_, io)| if let Io::Listener { open, .. } = io { *open } else { 0 }).sum()
}

/// A client that sends a byte now and then is closed at the request time, though it is never
/// idle; at the cap, a new client takes the place of the one that waited longest for its
/// request, and is answered. Which limit closed each one is the shell's counters, not the
/// clock: the idle time (60 s) is past every wait here, and the third client comes once both
/// slow ones are in, well within their request time (2 s) unless the machine stalls that long.
#[test]
fn slow_clients_lose_their_place_to_whole_requests() {
    let limits = StreamLimits {
        max_connections: 2,
        max_input: 1024,
        idle: Duration::from_secs(60),
        request: Some(Duration::from_secs(2)),
    };
    let mut rig = rig(limits);
    let mut slow: Vec<StdStream> = (0..2).map(|_| StdStream::connect(rig.s).unwrap()).collect();
    rig.until("both slow ones are in", |s| open_streams(s) == 2);
    let started = Instant::now();
    // A byte every 50 ms from each, and a whole request from a third.
    let mut third = StdStream::connect(rig.s).unwrap();
    third.write_all(b"hello\n").unwrap();
    third.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let mut answer = Vec::new();
    let mut last_byte = started;
    while rig.shell.stats().streams_slow + rig.shell.stats().streams_evicted < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", rig.shell.stats());
        if last_byte.elapsed() >= Duration::from_millis(50) {
            last_byte = Instant::now();
            for stream in &mut slow {
                let _ = stream.write_all(b"x");
            }
        }
        if let Ok(n) = third.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        rig.shell.turn(&mut rig.events, Some(Duration::from_millis(50))).unwrap();
    }
    let stats = rig.shell.stats();
    // One slow one evicted, the other closed at its request time; the third, answered and then
    // waiting for its next request, may be closed in the same turn as that one (2 s on).
    assert_eq!((stats.streams_evicted, stats.streams_refused), (1, 0), "{stats:?}");
    assert!(matches!(stats.streams_slow, 1 | 2), "{stats:?}");
    assert_eq!(stats.streams_idle, 0, "closed at the request time, not the idle time");
    rig.until("the third is answered", |_| {
        if let Ok(n) = third.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        answer == b"got hello\n"
    });
}

#[test]
fn streams_are_request_response_within_their_limits() {
    let limits = StreamLimits { max_connections: 2, max_input: 64, idle: Duration::from_millis(200), request: None };
    let mut rig = rig(limits);
    let mut one = StdStream::connect(rig.s).unwrap();
    one.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    one.write_all(b"a\nb").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    rig.until("the first answer", |_| {
        one.set_nonblocking(true).unwrap();
        if let Ok(n) = one.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got == b"got a\n"
    });
    one.write_all(b"\nquit\n").unwrap();
    rig.until("the rest and the close", |_| {
        match one.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        false
    });
    assert_eq!(got, b"got a\ngot b\nbye\n", "answers do not depend on how the bytes were split");

    // Over the input limit without a whole request: closed.
    let mut greedy = StdStream::connect(rig.s).unwrap();
    greedy.write_all(&[b'x'; 100]).unwrap();
    rig.until("the greedy one is closed", |s| s.stats().streams_overflowed == 1);
    // At the cap, a new connection is closed at once.
    let mut idle = StdStream::connect(rig.s).unwrap();
    let _second = StdStream::connect(rig.s).unwrap();
    let mut third = StdStream::connect(rig.s).unwrap();
    rig.until("the third is refused", |s| s.stats().streams_refused == 1);
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(third.read(&mut buf), Ok(0) | Err(_)), "refused means closed");
    // Idle ones are closed after the idle time.
    rig.until("the idle ones are closed", |s| s.stats().streams_idle == 2);
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)));
    let _ = greedy.read(&mut buf);
}

#[test]
fn a_client_that_does_not_read_holds_a_bounded_answer() {
    let limits = StreamLimits { max_connections: 2, max_input: 4096, idle: Duration::from_secs(5), request: None };
    let mut rig = rig(limits);
    // Forty answers of 100 kB asked at once (4 MB), none read for a while.
    const ANSWER: usize = 100_000;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&rig.s.into()).unwrap();
    let mut client: StdStream = socket.into();
    client.write_all(&b"big 100000\n".repeat(40)).unwrap();
    let mut most = 0;
    for _ in 0..50 {
        rig.shell.turn(&mut rig.events, Some(Duration::from_millis(5))).unwrap();
        most = most.max(rig.shell.pending_output().into_iter().max().unwrap_or(0));
    }
    assert!(most > 0, "the answers wait");
    assert!(most < stream::MAX_PENDING + ANSWER, "{most} bytes held");
    // Read now: every answer comes, the held requests taken as the client reads.
    client.set_nonblocking(true).unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    rig.until("every answer is read", |_| {
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got == 40 * ANSWER
    });
}

#[test]
fn probes_report_connected_refused_and_nothing_once_aborted() {
    let mut rig = rig(StreamLimits::default());
    let open = StdListener::bind("127.0.0.1:0").unwrap();
    let closed = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let probes = &mut rig.shell.core_mut().probes;
    probes.push_back(ProbeCmd::Start {
        id: 1,
        addr: open.local_addr().unwrap(),
        check: Arc::new(crate::protocol::Check::Tcp),
    });
    probes.push_back(ProbeCmd::Start { id: 2, addr: closed, check: Arc::new(crate::protocol::Check::Tcp) });
    probes.push_back(ProbeCmd::Start {
        id: 3,
        addr: open.local_addr().unwrap(),
        check: Arc::new(crate::protocol::Check::Tcp),
    });
    probes.push_back(ProbeCmd::Abort { id: 3 });
    rig.until("two outcomes", |s| s.core().outcomes.len() >= 2);
    // A little longer: an aborted probe must never report.
    for _ in 0..5 {
        rig.shell.turn(&mut rig.events, Some(Duration::from_millis(10))).unwrap();
    }
    let mut outcomes = rig.shell.core().outcomes.clone();
    outcomes.sort_by_key(|&(id, _)| id);
    assert_eq!(outcomes, [(1, ProbeOutcome::Connected), (2, ProbeOutcome::Failed(io::ErrorKind::ConnectionRefused))]);
    assert!(rig.shell.probes.is_empty(), "finished probes leave no socket behind");
}

#[test]
fn the_core_is_woken_for_its_timers_and_may_say_goodbye_on_stop() {
    let mut rig = rig(StreamLimits::default());
    let c = client();
    c.send_to(b"timer 30", rig.a).unwrap();
    let start = Instant::now();
    rig.until("the timer fires", |s| s.core().fired == 1);
    assert!(start.elapsed() >= Duration::from_millis(25));

    let Rig { mut shell, a, .. } = rig;
    let listener = client();
    let to = listener.local_addr().unwrap();
    shell.core_mut().outbox = Some(Outbox::new(10));
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let runner = std::thread::spawn(move || {
        let mut core = shell.run(&stop).unwrap();
        assert!(core.closed);
        core.outbox.take().map(|o| o.len())
    });
    // The loop answers while it runs, then stops when asked.
    c.send_to(format!("fanout 1 {to}").as_bytes(), a).unwrap();
    assert_eq!(recv(&listener), ("copy 0".into(), a));
    shutdown.request();
    assert_eq!(runner.join().unwrap(), Some(0));
}

/// A listener that answers every connection with `reply` once the request's head is in (or,
/// with `None`, closes it at once), from a thread of its own.
fn http_answering(reply: Option<&'static str>) -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let Some(reply) = reply else { continue };
            let mut head = Vec::new();
            let mut buf = [0; 256];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if head.starts_with(b"GET /health HTTP/1.1\r\n") {
                let _ = stream.write_all(reply.as_bytes());
            }
        }
    });
    addr
}

#[test]
fn http_probes_are_healthy_on_2xx_and_3xx_only() {
    let mut rig = rig(StreamLimits::default());
    let check = Arc::new(crate::protocol::Check::Http("/health".into()));
    let targets = [
        (1, http_answering(Some("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))),
        (2, http_answering(Some("HTTP/1.1 301 Moved\r\nLocation: /\r\n\r\n"))),
        (3, http_answering(Some("HTTP/1.1 500 Internal Server Error\r\n\r\n"))),
        (4, http_answering(Some("SSH-2.0-OpenSSH_9.6\r\n\r\n"))),
        (5, http_answering(None)),
    ];
    let probes = &mut rig.shell.core_mut().probes;
    for (id, addr) in targets {
        probes.push_back(ProbeCmd::Start { id, addr, check: Arc::clone(&check) });
    }
    rig.until("five outcomes", |s| s.core().outcomes.len() >= 5);
    let mut outcomes = rig.shell.core().outcomes.clone();
    outcomes.sort_by_key(|&(id, _)| id);
    let kinds: Vec<_> = outcomes.iter().map(|&(_, outcome)| outcome).collect();
    assert_eq!(
        kinds[..4],
        [
            ProbeOutcome::Connected,
            ProbeOutcome::Connected,
            ProbeOutcome::Failed(io::ErrorKind::Other),
            ProbeOutcome::Failed(io::ErrorKind::InvalidData),
        ]
    );
    // Closed before any answer: a failure (no head, or the connection reset).
    assert!(matches!(kinds[4], ProbeOutcome::Failed(_)), "{kinds:?}");
}
