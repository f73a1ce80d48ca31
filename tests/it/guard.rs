//! Issue 21's guards, each written as the attack: a key file others may read, a balancer's
//! control port open to anyone (an outsider's backend, one source's flood of backends, health
//! checks turned on a victim), and a metrics face held by slow clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common;

/// Every program that takes `--key-file` refuses one that others may read, and says how to fix
/// it, as ssh does with a private key.
#[test]
fn a_key_file_others_may_read_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("makler-open-key-{}", std::process::id()));
    common::write_key_file(&path, "a secret that every account of the host can read\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path_text = path.to_str().unwrap();
    let programs = [
        (env!("CARGO_BIN_EXE_makler-broker"), &[][..]),
        (env!("CARGO_BIN_EXE_makler-balancer"), &["--service", "web"][..]),
        (env!("CARGO_BIN_EXE_makler-server"), &["--service", "echo"][..]),
        (env!("CARGO_BIN_EXE_makler-client"), &["echo"][..]),
        (env!("CARGO_BIN_EXE_makler"), &["stats"][..]),
    ];
    for (program, args) in programs {
        let output = Command::new(program)
            .args(["--key-file", path_text])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the program runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{program} accepted a key file others may read");
        assert!(stderr.contains(&format!("chmod 600 {path_text}")), "{program}: {stderr}");
    }
    std::fs::remove_file(&path).unwrap();
}

/// A systemd credential (`LoadCredential=` under `DynamicUser=`) reads 0440: the group bits are
/// the mask of the ACL that lets the service's user read it. In `$CREDENTIALS_DIRECTORY` that is
/// taken; a file others may read is refused even there.
#[test]
fn a_systemd_credential_is_taken() {
    use std::os::unix::fs::PermissionsExt;
    let directory = std::env::temp_dir().join(format!("makler-credentials-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let key = directory.join("key");
    common::write_key_file(&key, "a secret systemd handed to the service\n");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
    let broker = |key: &std::path::Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_makler-broker"));
        command.args(["--listen", "127.0.0.1:0", "--no-multicast", "--key-file", key.to_str().unwrap()]);
        command.env("CREDENTIALS_DIRECTORY", &directory).stdin(Stdio::null());
        command
    };
    let mut started = common::Process::spawn(broker(&key));
    started.terminate();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o444)).unwrap();
    let output = broker(&key).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"));
    std::fs::remove_dir_all(&directory).unwrap();
}

/// Sends `line` from `socket` to `to` and returns the reply line, retransmitting (each wait
/// twice the last, up to 2 s) for up to 30 s: a broker on a loaded machine may be slow to answer.
/// It asks from a new socket on `socket`'s address, so that a late reply to an earlier,
/// retransmitted ask cannot be read for this one.
#[track_caller]
fn ask(socket: &UdpSocket, to: SocketAddr, line: &str) -> String {
    let socket = &UdpSocket::bind((socket.local_addr().unwrap().ip(), 0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut wait = Duration::from_millis(250);
    let mut buf = [0u8; 2048];
    loop {
        socket.set_read_timeout(Some(wait)).unwrap();
        socket.send_to(line.as_bytes(), to).unwrap();
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert_eq!(from, to);
            return String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
        }
        assert!(Instant::now() < deadline, "no reply to {line:?} from {to} in 30 s");
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// Whether a reply is a registration's id.
fn is_id(reply: &str) -> bool {
    reply.parse::<uuid::Uuid>().is_ok()
}

/// `--allow-register` and `--foreign-ip deny` on the balancer's control port: an outsider's
/// backend is refused, and so is an insider's registration of someone else's address, with
/// the broker's own replies; the insider's own backend is taken.
#[test]
fn the_balancer_refuses_an_outsider_as_the_broker_does() {
    let flags = ["--allow-register", "127.0.0.1", "--foreign-ip", "deny"];
    let broker = common::broker(&flags);
    let balancer = common::balancer("web", None, &flags);
    let (broker, control) = (broker.addr("udp"), balancer.addr("udp"));
    let insider = UdpSocket::bind("127.0.0.1:0").unwrap();
    let outsider = UdpSocket::bind("127.0.0.2:0").unwrap();
    for (socket, line) in [(&outsider, "register web 4000"), (&insider, "register web 127.0.0.9 4000")] {
        let refused = ask(socket, control, line);
        assert!(refused.starts_with("ERROR not allowed"), "{line}: {refused}");
        assert_eq!(refused, ask(socket, broker, line), "the broker's reply");
    }
    assert!(is_id(&ask(&insider, control, "register web 4000")));
    let stats = ask(&insider, control, "stats");
    assert!(stats.starts_with("backends=1 "), "{stats}");
}

/// `--max-per-source 5`: a sixth backend from one address is refused as the broker refuses it,
/// while another address still registers.
#[test]
fn a_sixth_backend_from_one_source_is_refused() {
    let flags = ["--max-per-source", "5"];
    let broker = common::broker(&flags);
    let balancer = common::balancer("web", None, &flags);
    let (broker, control) = (broker.addr("udp"), balancer.addr("udp"));
    let source = UdpSocket::bind("127.0.0.1:0").unwrap();
    for port in 4001..=4005 {
        let line = format!("register web {port}");
        assert!(is_id(&ask(&source, control, &line)), "backend {port}");
        assert!(is_id(&ask(&source, broker, &line)), "instance {port}");
    }
    let sixth = ask(&source, control, "register web 4006");
    assert!(sixth.starts_with("ERROR quota"), "{sixth}");
    assert_eq!(sixth, ask(&source, broker, "register web 4006"), "the broker's reply");
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    assert!(is_id(&ask(&other, control, "register web 4006")), "another address still registers");
}

/// The sum of every sample of `metric` on a metrics page.
fn metric_sum(page: &str, metric: &str) -> f64 {
    page.lines()
        .filter(|line| line.strip_prefix(metric).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The body of `GET /metrics`.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics listener");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the listener answers and closes");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_owned()
}

/// 300 backends registered at one address, probed every second: the balancer sends at most
/// 100 health probes a second toward it, and counts the rest as skipped.
#[test]
fn health_probes_toward_one_address_are_bounded() {
    let balancer = common::balancer("web", None, &["--health-interval", "1", "--metrics", "127.0.0.1:0", "-q"]);
    let (control, metrics) = (balancer.addr("udp"), balancer.addr("metrics"));
    // Ports nothing listens on (bound, then closed): every probe is refused at once.
    let listeners: Vec<TcpListener> = (0..300).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    drop(listeners);
    let source = UdpSocket::bind("127.0.0.1:0").unwrap();
    for port in &ports {
        assert!(is_id(&ask(&source, control, &format!("register web {port}"))));
    }
    // Probing under way (a window's worth sent and refused); then measured until two rounds
    // (600 probes) were due and handled, sent or skipped: at most 100 a second sent (and one
    // window's worth of slack for where the windows fall), the rest skipped and counted. A
    // loaded machine that handles them late stretches the measure, which can only loosen the
    // figure; the bound to the probe is the unit test of `balancer::health`, time passed in.
    let handled = |page: &str| {
        metric_sum(page, "makler_backend_failures_total") + metric_sum(page, "makler_balancer_probes_skipped_total")
    };
    common::wait_until(common::PATIENCE, "a window's worth of probes is sent", || {
        (metric_sum(&scrape(metrics), "makler_backend_failures_total") >= 100.0).then_some(())
    });
    let before = scrape(metrics);
    let started = Instant::now();
    let after = common::wait_until(common::PATIENCE, "two rounds of probes are handled", || {
        let page = scrape(metrics);
        (handled(&page) - handled(&before) >= 600.0).then_some(page)
    });
    let seconds = started.elapsed().as_secs_f64();
    let sent =
        metric_sum(&after, "makler_backend_failures_total") - metric_sum(&before, "makler_backend_failures_total");
    let skipped = metric_sum(&after, "makler_balancer_probes_skipped_total")
        - metric_sum(&before, "makler_balancer_probes_skipped_total");
    assert!(sent <= 100.0 * (seconds + 1.0), "{sent} probes in {seconds:.2} s");
    assert!(sent > 0.0, "the backends are still probed: {sent} in {seconds:.2} s");
    assert!(skipped > 0.0, "the rest are skipped and counted: {skipped}, sent {sent} in {seconds:.2} s");
}

/// Makes sure this process may open `needed` more descriptors, raising its soft limit toward the
/// hard one (with util-linux's `prlimit`) if it must; the reason it cannot, if it cannot.
fn ensure_descriptors(needed: u64) -> Result<(), String> {
    let soft = makler::net::descriptor_limit().ok_or("cannot read the open-file limit")?;
    if soft >= needed {
        return Ok(());
    }
    let pid = std::process::id().to_string();
    let raised = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={needed}:")])
        .status()
        .is_ok_and(|status| status.success());
    match makler::net::descriptor_limit() {
        Some(now) if raised && now >= needed => Ok(()),
        _ => Err(format!("the open-file soft limit is {soft}, below {needed}, and cannot be raised")),
    }
}

/// Slow clients, as slowloris: `count` connections to `addr`, each sending a request head one
/// byte at a time, every `every`, and connecting again when closed, until `stop` is set.
/// Counts in `closed` how many times they were closed by the server.
fn slowloris(
    addr: SocketAddr,
    count: usize,
    every: Duration,
    stop: &AtomicBool,
    up: &AtomicUsize,
    closed: &AtomicUsize,
) {
    let connect = || {
        let mut stream = TcpStream::connect(addr).ok()?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").ok()?;
        Some(stream)
    };
    let mut streams: Vec<Option<TcpStream>> = (0..count).map(|_| connect()).collect();
    up.store(streams.iter().flatten().count(), Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) {
        for slot in &mut streams {
            if slot.as_mut().is_none_or(|stream| stream.write_all(b"a").is_err()) {
                closed.fetch_add(1, Ordering::SeqCst);
                *slot = connect();
            }
        }
        std::thread::sleep(every);
    }
}

/// 300 slowloris connections to a metrics face (the broker's, then the balancer's): scrapes are
/// answered while the slow ones are closed at the head deadline (2 s) and come back, until all
/// 300 were closed once. A scrape queued behind the slow connections would wait out their
/// deadlines, 2 s for each one ahead of it; the bound, 10 s, is ten times what it allowed
/// before, so that a loaded machine meets it. (That one slow client cannot hold the loop up is
/// asserted on the shell itself, in `src/shell/tests.rs`.)
#[test]
fn scrapes_are_answered_under_300_slow_connections() {
    if let Err(why) = ensure_descriptors(1024) {
        eprintln!("skipped: {why} (300 slow connections need as many descriptors)");
        return;
    }
    let broker = common::broker(&["--metrics", "127.0.0.1:0"]);
    let balancer = common::balancer("web", None, &["--metrics", "127.0.0.1:0"]);
    for metrics in [broker.addr("metrics"), balancer.addr("metrics")] {
        let (stop, up, closed) = (AtomicBool::new(false), AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|scope| {
            let attack = scope.spawn(|| slowloris(metrics, 300, Duration::from_millis(400), &stop, &up, &closed));
            // Stops the attack however this scope ends (a failed assertion too).
            let _stop = StopOnDrop(&stop);
            common::wait_until(Duration::from_secs(30), "300 slow connections are open", || {
                (up.load(Ordering::SeqCst) == 300).then_some(())
            });
            let started = Instant::now();
            let mut slowest = Duration::ZERO;
            let mut scrapes = 0;
            // Until the slow connections were closed at the head deadline (300 times), with a
            // deadline that fails the test if they never are.
            while closed.load(Ordering::SeqCst) < 300 {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{metrics}: the slow connections were closed at the head deadline ({} of 300)",
                    closed.load(Ordering::SeqCst)
                );
                let asked = Instant::now();
                let page = scrape(metrics);
                slowest = slowest.max(asked.elapsed());
                assert!(page.contains("# TYPE"), "{page}");
                scrapes += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            stop.store(true, Ordering::SeqCst);
            attack.join().unwrap();
            eprintln!("{metrics}: {scrapes} scrapes in {:?}, the slowest {slowest:?}", started.elapsed());
            assert!(slowest < Duration::from_secs(10), "{metrics}: a scrape took {slowest:?} ({scrapes} scrapes)");
        });
    }
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
