//! `makler-balancer --backends-from SERVICE`: backends taken from a service the broker holds
//! (watched there), beside those that register at the balancer's control port: their weights
//! from the instances' metadata, the watch's trust (a forged notification, sealed or not), and an
//! mDNS service imported by a broker (in network namespaces) that the balancer forwards to.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::PATIENCE;
use crate::common::{Udp, balancer, broker, listed, server, wait_until};

/// The balancer's `stats` reply, parsed: backend address -> total connections.
fn backends(control: &Udp) -> HashMap<SocketAddr, u64> {
    control
        .text("stats")
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("backend ")?.split(' ');
            let addr = words.next()?.parse().ok()?;
            let total = words.find_map(|w| w.strip_prefix("total="))?.parse().ok()?;
            Some((addr, total))
        })
        .collect()
}

/// One line through the balancer, echoed back.
fn echo_through(balancer: SocketAddr, line: &str) -> String {
    let mut stream = TcpStream::connect(balancer).expect("connect to the balancer");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).expect("an answer");
    answer
}

#[test]
fn the_instances_of_a_watched_service_are_backends_while_they_live() {
    let broker = broker(&[]);
    let udp = Udp::new(broker.addr("udp"));
    let first = server("echo", broker.addr("udp"), &[]);
    let mut second = server("echo", broker.addr("udp"), &[]);
    let both = {
        let mut both = vec![first.addr("tcp"), second.addr("tcp")];
        both.sort();
        both
    };
    wait_until(PATIENCE, "both servers are registered", || (listed(&udp, "echo") == both).then_some(()));

    let balancer = balancer("front", Some(broker.addr("udp")), &["--backends-from", "echo"]);
    let control = Udp::new(balancer.addr("udp"));
    wait_until(PATIENCE, "both instances are backends", || {
        let mut seen: Vec<SocketAddr> = backends(&control).into_keys().collect();
        seen.sort();
        (seen == both).then_some(())
    });
    wait_until(PATIENCE, "the balancer registers as front", || {
        (listed(&udp, "front") == [balancer.addr("tcp")]).then_some(())
    });
    for n in 0..10 {
        assert_eq!(echo_through(balancer.addr("tcp"), &format!("line {n}")), format!("line {n}\n"));
    }
    let totals = backends(&control);
    assert!(totals.values().all(|&total| total > 0), "both servers reached: {totals:?}");

    // The second server stops (and deregisters at the broker): the balancer stops using it.
    let gone = second.addr("tcp");
    assert!(second.terminate().success());
    wait_until(PATIENCE, "the stopped server is no backend any more", || {
        (backends(&control).keys().copied().collect::<Vec<_>>() == [first.addr("tcp")]).then_some(())
    });
    let before = backends(&control)[&first.addr("tcp")];
    for n in 0..6 {
        assert_eq!(echo_through(balancer.addr("tcp"), &format!("after {n}")), format!("after {n}\n"));
    }
    assert_eq!(backends(&control)[&first.addr("tcp")], before + 6, "every connection went to the one left");
    assert!(!backends(&control).contains_key(&gone));
}

#[test]
fn a_balancer_that_would_be_its_own_backend_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_makler-balancer"))
        .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--broker", "127.0.0.1:9"])
        .args(["--service", "echo", "--backends-from", "echo"])
        .output()
        .expect("makler-balancer runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--backends-from echo") && stderr.contains("loop"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing was bound: {:?}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn after_a_broker_restart_the_backends_are_the_restarted_brokers_set() {
    let mut broker = broker(&[]);
    let at = broker.addr("udp");
    let first = server("echo", at, &[]);
    let mut second = server("echo", at, &[]);
    let balancer = balancer("front", Some(at), &["--backends-from", "echo"]);
    let control = Udp::new(balancer.addr("udp"));
    wait_until(PATIENCE, "both instances are backends", || (backends(&control).len() == 2).then_some(()));

    // The broker goes, the second server stops meanwhile (its goodbye is lost), the broker
    // comes back empty on the same address and the first server registers again: the watch,
    // started again there, replaces the set.
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    let at_text = at.to_string();
    let _broker = crate::common::Process::start(
        env!("CARGO_BIN_EXE_makler-broker"),
        &["--listen", &at_text, "--quiet", "--no-multicast"],
    );
    wait_until(PATIENCE, "only the first server is a backend", || {
        (backends(&control).keys().copied().collect::<Vec<_>>() == [first.addr("tcp")]).then_some(())
    });
    assert_eq!(echo_through(balancer.addr("tcp"), "still"), "still\n");
}

#[test]
fn instances_weighing_one_and_three_get_a_quarter_and_three_quarters() {
    let broker = broker(&[]);
    let at = broker.addr("udp");
    let udp = Udp::new(at);
    let light = server("echo", at, &["--meta", "weight=1"]);
    let heavy = server("echo", at, &["--meta", "weight=3"]);
    // A value that is no weight: the instance stays a backend, weighing 1.
    let odd = server("echo", at, &["--register-as", "odd", "--meta", "weight=heavy"]);
    wait_until(Duration::from_secs(30), "the servers are registered", || {
        (listed(&udp, "echo").len() == 2 && listed(&udp, "odd").len() == 1).then_some(())
    });
    // The metadata comes with the registration: an instance is a backend with its weight at once.
    let balancer = balancer("front", Some(at), &["--backends-from", "echo"]);
    let control = Udp::new(balancer.addr("udp"));
    wait_until(Duration::from_secs(30), "both instances are backends", || {
        (backends(&control).len() == 2).then_some(())
    });
    // Round robin (the default) is smooth weighted round robin: every 4 connections in a row, 1 and 3.
    for n in 0..40 {
        assert_eq!(echo_through(balancer.addr("tcp"), &format!("line {n}")), format!("line {n}\n"));
    }
    let totals = backends(&control);
    assert_eq!((totals[&light.addr("tcp")], totals[&heavy.addr("tcp")]), (10, 30), "{totals:?}");

    // A bad value: logged once for its instance (not at each change of the set), weighing 1.
    let at_text = at.to_string();
    let logged = crate::common::Logged::start(
        env!("CARGO_BIN_EXE_makler-balancer"),
        &["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--service", "front2", "--broker", &at_text]
            .into_iter()
            .chain(["--backends-from", "odd"])
            .collect::<Vec<_>>(),
    );
    let bad = format!("--backends-from odd: instance {}: its weight= ignored (weighs 1)", odd.addr("tcp"));
    logged.wait_for_log(&bad);
    let odd_control = Udp::new(logged.process.addr("udp"));
    let _more = server("echo", at, &["--register-as", "odd", "--meta", "weight=2"]);
    wait_until(Duration::from_secs(30), "the second odd instance is a backend", || {
        (backends(&odd_control).len() == 2).then_some(())
    });
    assert_eq!(logged.count(&bad), 1, "{}", logged.log());
    assert!(backends(&odd_control).contains_key(&odd.addr("tcp")), "the instance stays, weighing 1");
}

/// A broker played by the test for `--backends-from web`: it answers the balancer's watch with
/// `first` (sealed with `key` when given), then sends two notifications of `seq=1` from the
/// broker's own address: `forged` unsealed (what a host forging the broker's address can send,
/// without the key), then `real` sealed with the key (or unsealed, without one). The balancer
/// takes the first of the two it opens: the one after the other is a duplicate. The player ends
/// once the balancer has read both (see the fence).
fn play_broker(
    key: Option<makler::protocol::seal::Key>,
    first: Vec<SocketAddr>,
    forged: Vec<SocketAddr>,
    real: Vec<SocketAddr>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    use makler::protocol::seal::{Sealer, unix_ms, unseal};
    use makler::protocol::{Request, Response, binary};
    let fake = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    fake.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let at = fake.local_addr().unwrap();
    let player = std::thread::spawn(move || {
        let mut sealer = key.map(|key| Sealer::new(key, 0xfeed));
        let now_ms = || unix_ms(std::time::SystemTime::now());
        let mut send = |response: &Response, id: u32, to: SocketAddr, sealed: bool| {
            let mut out = Vec::new();
            binary::encode_response(id, response, &mut out);
            if let (true, Some(sealer)) = (sealed, &mut sealer) {
                sealer.seal_in_place(&mut out, now_ms());
            }
            fake.send_to(&out, to).unwrap();
        };
        // The balancer registers here too: only its watch is taken.
        let next_watch = || {
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = fake.recv_from(&mut buf).expect("the balancer's watch");
                let request = match &key {
                    Some(key) => match unseal(key, &buf[..n], now_ms()) {
                        Ok(unsealed) => unsealed.inner.to_vec(),
                        Err(_) => continue,
                    },
                    None => buf[..n].to_vec(),
                };
                if let Ok((id, Request::Watch { service: "web" } | Request::WatchMeta { service: "web", .. })) =
                    binary::decode_request(&request)
                {
                    break (id, from);
                }
            }
        };
        let (id, watcher) = next_watch();
        // An answer at once, as a broker older than cookies gives.
        let watching = Response::Watching { service: "web".into(), seq: 0, ttl_ms: 60_000, instances: first };
        // In this order: datagrams on loopback from one socket to another arrive as sent.
        send(&watching, id, watcher, true);
        send(&Response::Changed { service: "web".into(), seq: 1, instances: forged }, id, watcher, false);
        send(&Response::Changed { service: "web".into(), seq: 1, instances: real }, id, watcher, true);
        // A fence: a notification past a gap, which the watch answers by watching again. Once
        // that watch arrives, the watch has read the two before it, and handed on any it took.
        send(&Response::Changed { service: "web".into(), seq: 3, instances: Vec::new() }, id, watcher, true);
        next_watch();
    });
    (at, player)
}

#[test]
fn with_a_key_file_a_forged_unsealed_notification_adds_no_backend_and_without_one_it_does() {
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let sorted = |control: &Udp| {
        let mut seen: Vec<SocketAddr> = backends(control).into_keys().collect();
        seen.sort();
        seen
    };
    let path = std::env::temp_dir().join(format!("makler-feed-key-{}", std::process::id()));
    crate::common::write_key_file(&path, "the secret of the backends-from tests\n");
    let key = makler::protocol::seal::Key::load(&path).unwrap();
    for keyed in [true, false] {
        let (at, player) =
            play_broker(keyed.then_some(key), vec![addr(1)], vec![addr(1), addr(66)], vec![addr(1), addr(2)]);
        let mut args = vec!["--backends-from", "web"];
        if keyed {
            args.extend(["--key-file", path.to_str().unwrap()]);
        }
        let balancer = balancer("front", Some(at), &args);
        player.join().expect("the balancer watched");
        let control = Udp::new(balancer.addr("udp"));
        let (want, not) = match keyed {
            // Sealed: the forgery is dropped, the broker's notification taken.
            true => ([addr(1), addr(2)], addr(66)),
            // Unsealed: the forgery from the broker's address is taken (what the docs warn of),
            // and the real notification after it is a duplicate.
            false => ([addr(1), addr(66)], addr(2)),
        };
        wait_until(Duration::from_secs(30), "the backends of the notification taken", || {
            (sorted(&control) == want).then_some(())
        });
        // The player saw the fence: the other one was read before it, and not taken.
        assert!(!backends(&control).contains_key(&not), "keyed {keyed}: {:?}", sorted(&control));
    }
    let _ = std::fs::remove_file(&path);
}

/// A TCP service for the mDNS test, on the address `argv[1]` and port `argv[2]` until the file
/// `argv[3]` exists (at most 60 s): prints `LISTENING`, then answers each connection's first
/// line with `echo from <address>: <line>` (a health check's empty connection gets nothing).
const ECHO: &str = r#"
import os, socket, sys, time
addr, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((addr, port))
server.listen(64)
server.settimeout(0.1)
print("LISTENING", flush=True)
began = time.time()
while time.time() < began + 60 and not os.path.exists(stop):
    try:
        conn, _ = server.accept()
    except socket.timeout:
        continue
    conn.settimeout(2)
    try:
        line = conn.makefile("rb").readline()
        if line:
            conn.sendall(b"echo from " + addr.encode() + b": " + line)
    except OSError:
        pass
    conn.close()
"#;

/// Connects to `argv[1]` (`ip:port`), sends a line and prints the line that comes back (`-` for
/// none, or no connection).
const THROUGH: &str = r#"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    s = socket.create_connection((host, int(port)), timeout=2)
    s.sendall(b"through the balancer\n")
    print(s.makefile().readline().strip() or "-", flush=True)
except OSError as e:
    print("-", e, flush=True)
"#;

/// The whole way from the LAN into the balancer: a service a python-zeroconf announcer publishes
/// on the link (10.98.0.2), imported by a broker with `--mdns-import` (10.98.0.1), is a backend of
/// a `makler-balancer --backends-from` beside that broker, which forwards a connection to it; its
/// goodbye takes it out again. In two network namespaces (see [`crate::mdns_node`]).
#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_zeroconf), ignore = "python-zeroconf is not installed (python3 -m pip install zeroconf)")]
fn an_mdns_service_imported_by_the_broker_is_a_backend_the_balancer_forwards_to() {
    use crate::common::Process;
    use crate::mdns_node::{STOP, Script, address, announce, ask, files, log};
    let link = crate::mdns_peers::link("fb");
    let _files = files(&link);
    let mut echo = Script::run(&link, 'b', "echo", "python3", &["-c", ECHO, address('b'), "9090", STOP]);
    echo.wait_for("LISTENING", Duration::from_secs(30));
    let (_broker, log_path) = crate::mdns_node::broker(&link, 'a', &["--mdns-import", "_zc._tcp"]);
    let mut announcer = announce(&link, 'b', "zc-echo", "_zc._tcp", "9090");
    let broker = format!("{}:7000", address('a'));
    let listen = format!("{}:0", address('a'));
    let ns = link.ns('a');
    let balancer = Process::start(
        "ip",
        &[
            "netns",
            "exec",
            &ns,
            env!("CARGO_BIN_EXE_makler-balancer"),
            "--listen",
            &listen,
            "--control",
            &listen,
            "--broker",
            &broker,
            "--no-multicast",
            "--service",
            "front",
            "--backends-from",
            "zc",
        ],
    );
    let front = balancer.addr("tcp").to_string();
    let through = || {
        let output =
            link.spawn('a', "python3", &["-c", THROUGH, &front], &[]).wait_with_output().expect("python3 runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let answer = wait_until(Duration::from_secs(30), "a connection through the balancer is answered", || {
        let answer = through();
        (answer != "-" && !answer.starts_with("- ")).then_some(answer)
    });
    assert_eq!(answer, "echo from 10.98.0.2: through the balancer", "{}", log(&log_path));
    // The balancer, having a backend, offers itself at the broker.
    assert_eq!(ask(&link, 'a', &["query front"]), [front.as_str()]);

    // The announcer's goodbye: the instance leaves the broker's table, and the balancer's pool.
    std::fs::write(&announcer.stop, b"").unwrap();
    announcer.wait_for("UNREGISTERED", Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "the balancer stops offering itself", || {
        ask(&link, 'a', &["query front"])[0].starts_with("NOT FOUND").then_some(())
    });
    assert!(through().starts_with('-'), "no backend left");
    let log = log(&log_path);
    assert!(log.contains("mdns: imported zc 10.98.0.2:9090"), "{log}");
}
