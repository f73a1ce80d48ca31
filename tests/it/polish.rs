//! What a newcomer runs into first: clear errors for bad flags and silent servers, a server
//! that waits for a broker to appear, and a balancer that drains on SIGTERM.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use crate::common::{Logged, Process, Udp, listed, wait_until};

/// Runs `program` with `args` to completion; returns (exit code, stderr).
fn run(program: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(program).args(args).stdin(Stdio::null()).output().expect("runs");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn bad_flags_say_what_is_wrong() {
    let broker = env!("CARGO_BIN_EXE_makler-broker");
    let (code, err) = run(broker, &["--ttl", "-1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("must be more than 0 seconds, not negative"), "{err}");
    let (code, err) = run(broker, &["--ttl", "0.01"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("must be at least 0.1 seconds"), "{err}");
    let (code, err) = run(broker, &["--listen", "7000"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("expected IP:PORT"), "{err}");
    let (code, err) = run(broker, &["--listen", "127.0.0.1:0", "--multicast-if", "192.0.2.77"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--multicast-if 192.0.2.77 is not the IPv4 address of an interface"), "{err}");

    // A host name is resolved.
    let named = Process::start(broker, &["--listen", "localhost:0", "--no-multicast", "--quiet"]);
    assert!(named.addr("udp").ip().is_loopback());

    // Which of the balancer's ports is taken.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let control = taken.local_addr().unwrap().to_string();
    let balancer = env!("CARGO_BIN_EXE_makler-balancer");
    let args = ["--listen", "127.0.0.1:0", "--control", &control, "--service", "web", "--no-register"];
    let (code, err) = run(balancer, &args);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("cannot listen for backends on udp {control} (--control)")), "{err}");
}

#[test]
fn a_server_that_accepts_but_does_not_answer_is_named() {
    let broker = common::broker(&[]);
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port().to_string();
    let udp = Udp::new(broker.addr("udp"));
    udp.text(&format!("register mute {port}"));
    let at = broker.addr("udp").to_string();
    let (code, _, err) = common::client(&["--broker", &at, "--server-timeout", "0.2", "mute", "hello"], "");
    assert_eq!(code, Some(5));
    assert!(err.contains("accepted the connection but did not answer within 0.2 s (--server-timeout)"), "{err}");
}

#[test]
fn a_server_started_before_any_broker_waits_for_one() {
    let port = UdpSocket::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
    let group = format!("239.255.77.1:{port}");
    let server = Logged::start(env!("CARGO_BIN_EXE_makler-server"), &["--service", "echo", "--multicast", &group]);
    server.wait_for_log("looking again every 2s");
    let broker = Process::start(
        env!("CARGO_BIN_EXE_makler-broker"),
        &["--listen", "127.0.0.1:0", "--quiet", "--multicast", &group],
    );
    let udp = Udp::new(broker.addr("udp"));
    wait_until(PATIENCE, "the server registers at the new broker", || {
        (listed(&udp, "echo") == [server.process.addr("tcp")]).then_some(())
    });
    // The log is read by a thread of its own, which may lag behind the registration it preceded.
    server.wait_for_log("found broker");
}

#[test]
fn a_server_that_never_registered_does_not_say_it_deregistered() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = silent.local_addr().unwrap().to_string();
    let mut server =
        Logged::start(env!("CARGO_BIN_EXE_makler-server"), &["--service", "echo", "--broker", &at, "--no-multicast"]);
    server.wait_for_log("no broker answered");
    assert!(server.process.terminate().success());
    // The log thread reads to the end of the stream.
    wait_until(PATIENCE, "the last log line", || server.log().contains("stopped").then_some(()));
    let log = server.log();
    assert!(log.contains("echo was never registered"), "{log}");
    assert!(!log.contains("deregistered"), "{log}");
}

/// Waits up to [`PATIENCE`] for `server` to exit by itself; its exit code and last line on stderr.
fn exit_of(server: &mut Logged) -> (Option<i32>, String) {
    let status = wait_until(PATIENCE, "the server exits by itself", || server.process.child.try_wait().ok().flatten());
    // The log thread reads to the end of the stream.
    wait_until(PATIENCE, "the error line", || server.log().contains("makler-server: ").then_some(()));
    let log = server.log();
    (status.code(), log.lines().last().unwrap_or_default().to_owned())
}

#[test]
fn a_server_whose_name_is_refused_exits_with_one_line() {
    let broker = common::broker(&[]);
    let at = broker.addr("udp").to_string();
    let args = ["--service", "echo", "--register-as", "bad/name", "--broker", &at, "--no-multicast"];
    let mut server = Logged::start(env!("CARGO_BIN_EXE_makler-server"), &args);
    let (code, last) = exit_of(&mut server);
    assert_eq!(code, Some(6), "{}", server.log());
    assert!(last.starts_with("makler-server: cannot register bad/name: "), "{last}");
    assert!(last.contains("bad service name"), "{last}");
    assert_eq!(server.log().matches("bad service name").count(), 1, "said once: {}", server.log());
}

#[test]
fn a_server_the_policy_refuses_exits_with_one_line() {
    let broker = common::broker(&["--allow-register", "10.0.0.0/8"]);
    let at = broker.addr("udp").to_string();
    let mut server =
        Logged::start(env!("CARGO_BIN_EXE_makler-server"), &["--service", "echo", "--broker", &at, "--no-multicast"]);
    let (code, last) = exit_of(&mut server);
    assert_eq!(code, Some(6), "{}", server.log());
    assert!(last.starts_with("makler-server: cannot register echo: "), "{last}");
    assert!(last.contains("not allowed"), "{last}");
}

#[test]
fn a_server_refused_after_a_broker_restart_exits() {
    let mut broker = common::broker(&[]);
    let at = broker.addr("udp").to_string();
    let mut server =
        Logged::start(env!("CARGO_BIN_EXE_makler-server"), &["--service", "echo", "--broker", &at, "--no-multicast"]);
    server.wait_for_log("registered echo");
    broker.terminate();
    // The same address, now with a policy that refuses the server: its heartbeat is not found,
    // its registration again refused, for good.
    let _broker = Process::start(
        env!("CARGO_BIN_EXE_makler-broker"),
        &["--listen", &at, "--quiet", "--no-multicast", "--allow-register", "10.0.0.0/8"],
    );
    let (code, last) = exit_of(&mut server);
    assert_eq!(code, Some(6), "{}", server.log());
    assert!(last.starts_with("makler-server: echo is no longer registered: "), "{last}");
    assert!(last.contains("not allowed"), "{last}");
    // One line says it, as for a refusal of the first try: not the registrar's log line too.
    assert_eq!(server.log().matches("no longer registered").count(), 1, "said once: {}", server.log());
}

/// A datagram and when it came.
type Datagram = (Instant, Vec<u8>);

#[test]
fn a_server_without_a_broker_says_so_once_and_backs_off() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = silent.local_addr().unwrap().to_string();
    // A thread of its own keeps each datagram with the time it came: a test thread held up on a
    // loaded machine then loses no try, and waits for tries rather than watching a window.
    let seen: Arc<Mutex<Vec<Datagram>>> = Arc::default();
    let keep = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0; 1500];
        while let Ok((n, _)) = silent.recv_from(&mut buf) {
            keep.lock().unwrap().push((Instant::now(), buf[..n].to_vec()));
        }
    });
    let server =
        Logged::start(env!("CARGO_BIN_EXE_makler-server"), &["--service", "echo", "--broker", &at, "--no-multicast"]);
    server.wait_for_log("no broker answered");
    // A try is one request sent up to three times (0.1 and 0.2 s apart, then 0.4 s for the last
    // answer) with the same bytes (its request id); the next try is a new request. Between
    // tries the server waits 0.5, 1, 2, 4 s, each shortened by up to a quarter: tries start at
    // least 1.075, 1.45 and 2.2 s apart, where a fixed 1.2 s period would not grow.
    let tries = |seen: &[Datagram]| {
        let mut starts: Vec<Instant> = Vec::new();
        for (i, (at, bytes)) in seen.iter().enumerate() {
            if i == 0 || seen[i - 1].1 != *bytes {
                starts.push(*at);
            }
        }
        starts
    };
    let starts = wait_until(Duration::from_secs(60), "four tries", || {
        let starts = tries(&seen.lock().unwrap());
        (starts.len() >= 4).then_some(starts)
    });
    // Only lower bounds: a loaded machine can delay a try, never bring one forward.
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("tries {gaps:?} apart");
    for (gap, least) in gaps.iter().zip([900, 1300, 2000]) {
        assert!(*gap >= Duration::from_millis(least), "tries {gaps:?} apart: not backing off");
    }
    // One warning where it logged one per try.
    assert_eq!(server.log().matches("no broker answered").count(), 1, "{}", server.log());
}

/// Sends a line on `stream` and reads the echoed line.
fn try_echo(stream: &mut TcpStream, line: &str) -> std::io::Result<String> {
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = Vec::new();
    let mut byte = [0];
    while stream.read(&mut byte)? == 1 && byte[0] != b'\n' {
        answer.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[track_caller]
fn echo(stream: &mut TcpStream, line: &str) -> String {
    try_echo(stream, line).unwrap()
}

#[test]
fn sigterm_drains_the_balancer() {
    let broker = common::broker(&[]);
    let udp = Udp::new(broker.addr("udp"));
    let mut balancer = Logged::start(
        env!("CARGO_BIN_EXE_makler-balancer"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--service",
            "front",
            "--broker",
            &broker.addr("udp").to_string(),
            "--drain-timeout",
            "60",
        ],
    );
    let _backend = common::server("echo", balancer.process.addr("udp"), &["--quiet"]);
    let front = balancer.process.addr("tcp");
    wait_until(Duration::from_secs(30), "the balancer registers", || (listed(&udp, "front") == [front]).then_some(()));
    let mut stream = TcpStream::connect(front).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(echo(&mut stream, "before"), "before");

    let pid = balancer.process.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    balancer.wait_for_log("draining: waiting up to 60 s for 1 connections");
    // Deregistered, and so no longer accepting (it closes its listeners before it deregisters),
    // while the connection in flight still works.
    wait_until(Duration::from_secs(30), "the balancer deregisters", || listed(&udp, "front").is_empty().then_some(()));
    assert!(TcpStream::connect(front).is_err(), "a new connection was accepted while draining");
    assert_eq!(echo(&mut stream, "during"), "during");
    let closed = Instant::now();
    drop(stream);
    let status =
        wait_until(Duration::from_secs(60), "the balancer exits", || balancer.process.child.try_wait().ok().flatten());
    assert!(status.success());
    // It stopped when the connection finished, not when the drain timeout ran out: the log
    // says so, and it took well under the 60 s.
    assert!(closed.elapsed() < Duration::from_secs(30), "it waited for the drain timeout");
    balancer.wait_for_log("stopped");
    assert!(balancer.log().contains("drained: every connection finished"), "{}", balancer.log());
}

#[test]
fn the_drain_timeout_closes_what_is_left_and_says_so() {
    let args = ["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--service", "front", "--no-register"];
    let mut balancer =
        Logged::start(env!("CARGO_BIN_EXE_makler-balancer"), &[&args[..], &["--drain-timeout", "0.3"]].concat());
    let _backend = common::server("echo", balancer.process.addr("udp"), &["--quiet"]);
    let front: SocketAddr = balancer.process.addr("tcp");
    let mut stream = wait_until(Duration::from_secs(30), "the backend serves", || {
        let mut stream = TcpStream::connect(front).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        (try_echo(&mut stream, "hi").ok()? == "hi").then_some(stream)
    });
    // The connection stays open: only the drain timeout ends the balancer, which exits.
    let pid = balancer.process.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status =
        wait_until(Duration::from_secs(60), "the balancer exits", || balancer.process.child.try_wait().ok().flatten());
    assert!(status.success());
    // The connection was closed.
    let mut rest = Vec::new();
    assert!(matches!(stream.read_to_end(&mut rest), Ok(0) | Err(_)));
    // And the log says the drain cut it, not that every connection finished.
    balancer.wait_for_log("stopped");
    let log = balancer.log();
    assert!(log.contains("1 connections were still open after --drain-timeout: closed them"), "{log}");
    assert!(!log.contains("every connection finished"), "{log}");
}

/// Starts the balancer under `prlimit --nofile=SOFT:HARD`; its open-file limits as
/// `/proc/PID/limits` gives them once it listens, and its log.
fn balancer_with_nofile(limits: &str) -> ((u64, u64), String) {
    let nofile = format!("--nofile={limits}");
    let args = [
        &nofile,
        env!("CARGO_BIN_EXE_makler-balancer"),
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--service",
        "web",
        "--no-register",
    ];
    let mut balancer = Logged::start("prlimit", &args);
    let _ = balancer.process.addr("tcp");
    let pid = balancer.process.child.id();
    let proc_limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = proc_limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(balancer.process.terminate().success());
    balancer.wait_for_log("stopped");
    ((numbers[0], numbers[1]), balancer.log())
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "reads /proc and runs prlimit (util-linux)")]
fn the_balancer_raises_its_open_file_limit_to_the_hard_one() {
    let (limits, log) = balancer_with_nofile("256:4096");
    assert_eq!(limits, (4096, 4096), "{log}");
    assert!(!log.contains("open-file limit"), "no warning once raised: {log}");
    // A hard limit too low for a thousand connections is still worth a line.
    let (limits, log) = balancer_with_nofile("256:512");
    assert_eq!(limits, (512, 512), "{log}");
    assert!(log.contains("at most 224 connections (the open-file limit is 512, the hard limit"), "{log}");
}

#[test]
fn brokers_with_different_key_files_say_why_they_do_not_peer() {
    let dir = std::env::temp_dir();
    let (one, two) =
        (dir.join(format!("makler-k1-{}", std::process::id())), dir.join(format!("makler-k2-{}", std::process::id())));
    common::write_key_file(&one, "the first secret of the key mismatch test\n");
    common::write_key_file(&two, "the second secret of the key mismatch test\n");
    let ports: Vec<u16> =
        (0..2).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let peers = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let broker = |port: u16, key: &std::path::Path| {
        let listen = format!("127.0.0.1:{port}");
        let args = ["--listen", &listen, "--peers", &peers, "--no-multicast", "--key-file", key.to_str().unwrap()];
        Logged::start(env!("CARGO_BIN_EXE_makler-broker"), &args)
    };
    let (mut a, _b) = (broker(ports[0], &one), broker(ports[1], &two));
    a.wait_for_log(&format!("from 127.0.0.1:{}: it is sealed with another key", ports[1]));
    // Hellos go out twice a second: a few more of b's dropped at a (counted) make still one
    // line, not one per datagram. That the line comes again after the interval is the unit
    // tests' of `key_warn`, with time passed in.
    let udp = Udp::new(a.process.addr("udp"));
    let dropped = common::stat(&udp, "sealed_dropped");
    wait_until(PATIENCE, "three more of b's hellos are dropped at a", || {
        (common::stat(&udp, "sealed_dropped") >= dropped + 3).then_some(())
    });
    // Every line a wrote is read once its last one, `stopped`, is.
    assert!(a.process.terminate().success());
    a.wait_for_log("stopped\n");
    assert_eq!(a.log().matches("sealed with another key").count(), 1, "{}", a.log());
    let _ = (std::fs::remove_file(one), std::fs::remove_file(two));
}
