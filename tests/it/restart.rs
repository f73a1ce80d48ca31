//! Socket activation and restarts that refuse nobody: the test plays the service manager. It
//! binds and holds the listening socket, starts balancer A with it as descriptor 3
//! (`LISTEN_FDS=1`, `LISTEN_PID` its own pid, as systemd sets them), runs load that opens a new
//! connection per request, starts balancer B on the same socket, stops A with SIGTERM, and
//! counts failed requests: none.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use crate::common::{Process, Udp, activated, held_listener, wait_until};

/// The test's copy of `listener`, to pass on as the manager does.
fn fd(listener: &TcpListener) -> OwnedFd {
    listener.try_clone().unwrap().into()
}

/// A balancer on the passed socket, its control port on a free one, backends registered there
/// by the test (a long TTL: no heartbeats needed).
fn balancer_on(listener: &TcpListener) -> Process {
    balancer_on_with(listener, &[])
}

/// [`balancer_on`] with `extra` arguments.
fn balancer_on_with(listener: &TcpListener, extra: &[&str]) -> Process {
    let args = ["--control", "127.0.0.1:0", "--service", "web", "--no-register", "--ttl", "60", "--quiet"];
    activated(env!("CARGO_BIN_EXE_makler-balancer"), &[&args[..], extra].concat(), vec![("listen", fd(listener))], None)
}

/// Registers every backend at `balancer`'s control port and waits until they are in its pool.
fn register(balancer: &Process, backends: &[Process]) {
    let control = Udp::new(balancer.addr("udp"));
    for backend in backends {
        let addr = backend.addr("tcp");
        let reply = control.text(&format!("register web {} {}", addr.ip(), addr.port()));
        assert!(!reply.starts_with("ERROR"), "{reply}");
    }
    wait_until(PATIENCE, "the backends are in the pool", || {
        let stats = control.text("stats");
        backends.iter().all(|b| stats.contains(&format!("backend {} up", b.addr("tcp")))).then_some(())
    });
}

/// The `total=` of a balancer's `stats`: connections it accepted.
fn accepted(balancer: &Process) -> u64 {
    let stats = Udp::new(balancer.addr("udp")).text("stats");
    let first = stats.lines().next().unwrap_or_default().to_owned();
    first.split(' ').find_map(|kv| kv.strip_prefix("total=")?.parse().ok()).unwrap_or_else(|| panic!("{first}"))
}

/// One request on a new connection; whether a whole 200 answer came back.
fn request(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.starts_with("HTTP/1.1 200 ") && response.ends_with('\n'))
    };
    attempt().unwrap_or(false)
}

/// Clients that each send requests on new connections until told to stop (bounded: 20,000
/// each, and 60 s); the counts of good and failed requests.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let (stop, ok, failed) = (Arc::default(), Arc::default(), Arc::default());
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) =
                    (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
                std::thread::spawn(move || {
                    let until = Instant::now() + Duration::from_secs(60);
                    for _ in 0..20_000 {
                        if stop.load(Ordering::SeqCst) || Instant::now() > until {
                            break;
                        }
                        let counter = if request(addr) { &ok } else { &failed };
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load { stop, ok, failed, threads }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stops the clients: (good, failed).
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().unwrap();
        }
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

/// Two http backends that register nowhere.
fn backends() -> Vec<Process> {
    let args = ["--service", "http", "--no-register", "--quiet"];
    (0..2).map(|_| Process::start(env!("CARGO_BIN_EXE_makler-server"), &args)).collect()
}

/// Balancer A serves on the held socket; B starts on it; A gets SIGTERM and exits after its
/// drain; B goes on. `during` runs while A alone, both, and B alone are up, and is given how
/// many connections the balancers up then have accepted.
fn restart(
    listener: &TcpListener,
    backends: &[Process],
    mut during: impl FnMut(&str, &dyn Fn() -> u64),
) -> (Process, u64) {
    let mut a = balancer_on(listener);
    assert_eq!(a.addr("tcp"), listener.local_addr().unwrap(), "A serves on the passed socket");
    register(&a, backends);
    during("A alone", &|| accepted(&a));
    // B waits for its first backend before it accepts; A serves meanwhile.
    let b = balancer_on(listener);
    assert_eq!(b.addr("tcp"), listener.local_addr().unwrap());
    register(&b, backends);
    during("A and B", &|| accepted(&a) + accepted(&b));
    let served_by_a = accepted(&a);
    let status = a.terminate();
    assert!(status.success(), "A drained and exited: {status}");
    during("B alone", &|| accepted(&b));
    (b, served_by_a)
}

#[test]
fn a_restart_on_a_held_socket_fails_no_request() {
    let listener = held_listener();
    let addr = listener.local_addr().unwrap();
    let backends = backends();
    let mut load: Option<Load> = None;
    let (b, served_by_a) = restart(&listener, &backends, |phase, _| {
        let load = load.get_or_insert_with(|| Load::start(addr, 2));
        // Let each phase see some requests.
        let from = load.ok();
        wait_until(PATIENCE, &format!("requests during {phase}"), || (load.ok() >= from + 200).then_some(()));
    });
    let (ok, failed) = load.take().unwrap().stop();
    assert_eq!(failed, 0, "{failed} of {} requests failed across the restart", ok + failed);
    assert!(served_by_a > 0 && accepted(&b) > 0, "both served: A {served_by_a}, B {}", accepted(&b));
}

#[test]
#[cfg_attr(not(has_wrk), ignore = "needs wrk (apt-get install wrk)")]
fn a_restart_under_wrk_fails_no_request() {
    let listener = held_listener();
    let addr = listener.local_addr().unwrap();
    let backends = backends();
    let mut wrk = None;
    let started = Instant::now();
    let (_b, _) = restart(&listener, &backends, |phase, accepted| {
        if wrk.is_none() {
            // `Connection: close`: a new connection for every request. One thread and 8
            // connections, so as to leave the other tests some CPU; it runs through all three
            // phases (checked below) and is stopped after them (a minute is the most it runs).
            let child = Command::new("wrk")
                .args(["-t", "1", "-c", "8", "-d", "60s", "-H", "Connection: close", &format!("http://{addr}/")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("wrk starts");
            wrk = Some(child);
        }
        // Each phase sees some of wrk's connections (each request is one).
        let from = accepted();
        wait_until(PATIENCE, &format!("connections during {phase}"), || (accepted() >= from + 200).then_some(()));
    });
    let mut wrk = wrk.take().unwrap();
    assert!(wrk.try_wait().unwrap().is_none(), "wrk still runs: A stopped during its run ({:?} in)", started.elapsed());
    // SIGINT: wrk stops and reports what it did so far.
    let pid = wrk.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let output = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk: {report}{}", String::from_utf8_lossy(&output.stderr));
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no request count in {report}"));
    assert!(requests > 100, "{report}");
    assert!(!report.contains("Socket errors"), "failed connections: {report}");
    assert!(!report.contains("Non-2xx"), "failed requests: {report}");
}

#[test]
fn sockets_passed_to_another_pid_are_not_taken() {
    let listener = held_listener();
    let args = ["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--service", "web", "--no-register", "--quiet"];
    let balancer = activated(env!("CARGO_BIN_EXE_makler-balancer"), &args, vec![("listen", fd(&listener))], Some("1"));
    assert_ne!(balancer.addr("tcp"), listener.local_addr().unwrap(), "LISTEN_PID=1 is not for it: it binds --listen");
}

#[test]
fn the_broker_takes_its_udp_socket_from_the_manager() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let socket_fd: OwnedFd = socket.try_clone().unwrap().into();
    let broker =
        activated(env!("CARGO_BIN_EXE_makler-broker"), &["--no-multicast", "--quiet"], vec![("", socket_fd)], None);
    assert_eq!(broker.addr("udp"), addr);
    // The broker answers on it; the manager's copy stays open for the next one.
    let udp = Udp::new(addr);
    assert!(!udp.text("register echo 127.0.0.1 4000").starts_with("ERROR"));
    assert_eq!(crate::common::listed(&udp, "echo"), [SocketAddr::from(([127, 0, 0, 1], 4000))]);
}

#[test]
fn a_stopping_balancer_finishes_what_it_accepted_and_leaves_the_socket_to_the_next() {
    let listener = held_listener();
    let addr = listener.local_addr().unwrap();
    let backends = backends();
    // A drain time longer than the patient wait for A's exit below: A exiting within that wait
    // shows it exits once drained, not at the drain time.
    let mut a = balancer_on_with(&listener, &["--drain-timeout", "120"]);
    register(&a, &backends);
    // A request in flight through A: its head is not whole yet.
    let mut in_flight = TcpStream::connect(addr).unwrap();
    in_flight.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    in_flight.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n").unwrap();
    wait_until(PATIENCE, "A accepted it", || (accepted(&a) == 1).then_some(()));
    let pid = a.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // A closes its copies of the socket once it stops accepting: none of its descriptors is it.
    let socket = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
    wait_until(PATIENCE, "A stopped accepting", || {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        let held = fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link == socket));
        (!held).then_some(())
    });
    // No balancer accepts now; the manager's socket still queues a new connection.
    let mut queued = TcpStream::connect(addr).unwrap();
    queued.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    queued.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    // A finishes the request it had.
    in_flight.write_all(b"Connection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    in_flight.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    // The client closes too: the connection is over, and A, drained, exits (not at its 120 s).
    drop(in_flight);
    let status = wait_until(PATIENCE, "A exits", || a.child.try_wait().ok().flatten());
    assert!(status.success(), "{status}");
    // B takes what queued meanwhile.
    let b = balancer_on(&listener);
    register(&b, &backends);
    let mut answer = String::new();
    queued.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert_eq!(accepted(&b), 1);
}

/// A balancer stopped while it waits for its first backend accepts nothing: what queued in the
/// manager's socket meanwhile is served by the next one, not accepted and closed unserved.
#[test]
fn a_balancer_stopped_before_its_first_backend_leaves_the_queue_to_the_next() {
    let listener = held_listener();
    let addr = listener.local_addr().unwrap();
    let mut a = balancer_on(&listener);
    let mut queued = TcpStream::connect(addr).unwrap();
    queued.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    queued.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let status = a.terminate();
    assert!(status.success(), "A exits on SIGTERM while it waits: {status}");
    let backends = backends();
    let b = balancer_on(&listener);
    register(&b, &backends);
    let mut answer = String::new();
    queued.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert_eq!(accepted(&b), 1);
}

/// A balancer on both held sockets, as OPERATIONS.md's upgrade without systemd says: the clients'
/// listener as descriptor 3 and the control socket as 4 (`LISTEN_FDS=2`,
/// `LISTEN_FDNAMES=listen:control`), `--control` naming the control socket's address as a
/// configuration would. Backends heartbeat every 2 s (`--ttl 6`), and B waits up to 6 s for one.
fn balancer_on_both(listener: &TcpListener, control: &std::net::UdpSocket) -> Process {
    let control_addr = control.local_addr().unwrap().to_string();
    let args = ["--control", &control_addr, "--service", "web", "--no-register", "--ttl", "6", "--quiet"];
    let control: OwnedFd = control.try_clone().unwrap().into();
    activated(env!("CARGO_BIN_EXE_makler-balancer"), &args, vec![("listen", fd(listener)), ("control", control)], None)
}

/// OPERATIONS.md's upgrade without systemd, step by step: the manager holds both sockets, a
/// backend registers itself at the one control address, B starts on both sockets while A runs
/// (given only the listener, B would bind `--control` itself and exit), A is stopped, and no
/// request fails; B then has the backend by its heartbeats.
#[test]
fn an_upgrade_without_systemd_passes_both_sockets_and_fails_no_request() {
    let listener = held_listener();
    let control = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (addr, control_addr) = (listener.local_addr().unwrap(), control.local_addr().unwrap());
    let mut a = balancer_on_both(&listener, &control);
    assert_eq!((a.addr("tcp"), a.addr("udp")), (addr, control_addr), "A serves on the passed sockets");
    let broker = control_addr.to_string();
    let server =
        Process::start(env!("CARGO_BIN_EXE_makler-server"), &["--service", "http", "--broker", &broker, "--quiet"]);
    let up = format!("backend {} up", server.addr("tcp"));
    let stats = Udp::new(control_addr);
    wait_until(PATIENCE, "the backend registered itself", || stats.text("stats").contains(&up).then_some(()));
    let load = Load::start(addr, 2);
    let requests = |phase: &str| {
        let from = load.ok();
        wait_until(PATIENCE, &format!("requests during {phase}"), || (load.ok() >= from + 100).then_some(()));
    };
    requests("A alone");
    let b = balancer_on_both(&listener, &control);
    assert_eq!((b.addr("tcp"), b.addr("udp")), (addr, control_addr), "B serves on the same sockets");
    requests("A and B");
    let status = a.terminate();
    assert!(status.success(), "A drained and exited: {status}");
    requests("B alone");
    let (ok, failed) = load.stop();
    assert_eq!(failed, 0, "{failed} of {} requests failed across the upgrade", ok + failed);
    // Only B reads the control socket now: the backend is in its pool, and B served.
    wait_until(PATIENCE, "B has the backend", || stats.text("stats").contains(&up).then_some(()));
    assert!(accepted(&b) > 0);
}
