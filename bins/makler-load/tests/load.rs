//! The benchmark program runs end to end in a small configuration (figures are not checked:
//! speed is measured by running it for real, not asserted in tests).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A program of the main package (`makler-broker`, `makler-server`). Cargo names only this
/// package's programs to its tests; the workspace builds the others into the same directory
/// (`cargo build`, or `cargo test` at the top; `cargo test -p makler-load` alone does not).
fn makler_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_makler-load")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build` or `cargo test` at the top)",
        path.display()
    );
    path
}

/// The value of column `column` (0: the first after the label) in the row for `run`.
fn column(stdout: &str, run: &str, column: usize) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(run) && l.as_bytes().get(run.len()) == Some(&b' '))
        .unwrap_or_else(|| panic!("no {run:?} row:\n{stdout}"));
    line[run.len()..].split_whitespace().nth(column).unwrap().parse().unwrap()
}

#[test]
fn the_udp_benchmark_runs_and_reports_every_figure() {
    let output = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["udp", "--duration", "0.2", "--instances", "200", "--types", "20", "--rss-instances", "400"])
        .args(["--rounds", "2", "--windows", "1,4", "--threads", "1,2"])
        .arg("--broker-bin")
        .arg(makler_bin("makler-broker"))
        .output()
        .expect("makler-load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("commit ") || stdout.contains("no git work tree"), "{stdout}");
    for shape in ["1 client thread × 1 in flight", "2 client threads × 4 in flight (8 in all)"] {
        assert!(stdout.contains(shape), "{stdout}");
    }
    for run in ["udp echo", "query binary", "query text", "heartbeat binary", "heartbeat text", "register text"] {
        assert!(column(&stdout, run, 0) > 0.0, "{run}: {stdout}");
        // No lost and no wrong replies on loopback in such a small run.
        assert_eq!(column(&stdout, run, 5), 0.0, "{run}: {stdout}");
    }
    assert!(stdout.contains("requests/s by client threads × requests in flight per thread"), "{stdout}");
    assert!(stdout.contains("query binary / echo at 1×1: "), "{stdout}");
    assert!(stdout.contains("bytes/instance"), "{stdout}");
}

#[test]
fn the_echo_reference_is_a_child_process_that_is_stopped() {
    let bin = Path::new(env!("CARGO_BIN_EXE_makler-load"));
    let echo = makler_load::echo::start_process(bin).expect("the echo server starts");
    let pid = echo.pid();
    assert_ne!(pid, std::process::id(), "the echo runs in a process of its own");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    client.connect(echo.addr()).unwrap();
    client.send(b"hello").unwrap();
    let mut buf = [0u8; 16];
    let len = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"hello");
    drop(echo);
    // Killed and reaped: no process with that id is left (ids are not reused this soon).
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the echo server {pid} still runs");

    // A panic in the benchmark stops it too: the guard is dropped while unwinding.
    let started = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let echo = makler_load::echo::start_process(bin).unwrap();
        *started.lock().unwrap() = Some(echo.pid());
        panic!("the benchmark failed");
    });
    assert!(result.is_err());
    let pid = started.lock().unwrap().expect("it started");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the echo server {pid} still runs");
}

#[test]
fn the_echo_server_stops_when_its_parent_is_gone() {
    // Its stdin is the benchmark's pipe; closing it is what the benchmark's death does.
    let mut child = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["echo-server", "--listen", "127.0.0.1:0", "--stop-on-eof"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("listening udp=127.0.0.1:"), "{line}");
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the echo server did not stop within 10 s of its stdin closing");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn zone_populate_and_query_compare_the_same_table() {
    let zone = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["zone", "--instances", "30", "--types", "3", "--prefix", "svc"])
        .output()
        .unwrap();
    assert!(zone.status.success());
    let zone = String::from_utf8(zone.stdout).unwrap();
    assert_eq!(zone.lines().filter(|l| l.starts_with("_svc1._tcp.makler.test. IN SRV ")).count(), 10, "{zone}");

    let broker = makler_load::child::ChildProcess::start(
        &makler_bin("makler-broker"),
        &["--listen", "127.0.0.1:0", "--quiet", "--no-multicast", "--ttl", "600"],
    )
    .expect("the broker starts");
    let addr = broker.addr().to_string();

    let populate = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["populate", "--target", &addr, "--instances", "30", "--types", "3", "--prefix", "svc"])
        .output()
        .unwrap();
    assert!(populate.status.success(), "{}", String::from_utf8_lossy(&populate.stderr));

    let names = std::env::temp_dir().join(format!("makler-names-{}", std::process::id()));
    std::fs::write(&names, "svc0\nsvc1\nsvc2\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["query", "--target", &format!("binary={addr}"), "--target", &format!("plain:text={addr}")])
        .args(["--names", names.to_str().unwrap(), "--duration", "0.2", "--rounds", "2"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&names);
    drop(broker);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("÷ binary"), "{stdout}");
    for run in ["binary", "plain"] {
        assert!(column(&stdout, run, 0) > 0.0, "{stdout}");
        assert_eq!(column(&stdout, run, 5), 0.0, "no wrong replies: {stdout}");
    }
    // Every text reply lists the 10 instances of a service: "127.x.y.z:40nn" times 10.
    assert!(column(&stdout, "plain", 6) > 100.0, "{stdout}");
}

#[test]
fn the_cluster_benchmark_runs_real_and_simulated_brokers() {
    let output = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["cluster", "--brokers", "3", "--sim-brokers", "3,5", "--sizes", "300", "--types", "10"])
        .args(["--ttl", "3", "--settle", "0.5", "--window", "1", "--samples", "3"])
        .arg("--broker-bin")
        .arg(makler_bin("makler-broker"))
        .output()
        .expect("makler-load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for run in ["real    3     300", "sim     3     300", "sim     5     300"] {
        let row = stdout.lines().find(|l| l.starts_with(run)).unwrap_or_else(|| panic!("no {run:?} row:\n{stdout}"));
        // Every instance alive at the end: heartbeats every TTL/3 kept them.
        assert!(row.ends_with(" 300"), "{row}");
    }
    assert!(stdout.contains("sim      300 instances, N=5 : B/broker/s ratio"), "{stdout}");
}

#[test]
fn inconsistent_sizes_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["udp", "--instances", "10", "--types", "20"])
        .output()
        .expect("makler-load runs");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn http_load_reports_json_and_csv() {
    let server = Command::new(makler_bin("makler-server"))
        .args(["--service", "http", "--no-register"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Kill(server);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.0.stdout.take().unwrap()), &mut line).unwrap();
    let target = line.trim().strip_prefix("listening tcp=").unwrap().to_owned();

    let run = |format: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_makler-load"))
            .args(["http", "--target", &target, "--duration", "0.3", "--connections", "3", "--max-requests", "300"])
            .args(["--format", format, "--label", "say \"hi\"\tnow"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let json = run("json");
    assert!(json.starts_with("{\"label\":\"say \\\"hi\\\"\\u0009now\",\"target\":\""), "{json}");
    assert!(json.contains(",\"requests\":300,") && json.trim_end().ends_with(",\"errors\":0}"), "{json}");
    let csv = run("csv");
    let lines: Vec<_> = csv.lines().collect();
    assert_eq!(lines[0], "label,target,mode,connections,duration_s,requests,rate,p50_us,p90_us,p99_us,errors");
    assert_eq!(lines[1].split(',').nth(5), Some("300"), "{csv}");

    let refused = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["http", "--target", "10.0.0.1:80", "--duration", "0.1"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "non-loopback targets need --allow-remote");
}

#[test]
fn it_names_itself_and_takes_host_names_and_exits_2_on_bad_flags() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_makler-load")).args(args).output().expect("runs");
    let version = run(&["--version"]);
    let stdout = String::from_utf8_lossy(&version.stdout);
    assert!(stdout.starts_with(&format!("makler-load {} (commit ", env!("CARGO_PKG_VERSION"))), "{stdout}");
    // A host name is taken (a port nobody listens on: the run itself fails, exit 1, not 2).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = format!("localhost:{port}");
    let named = run(&["tcp", "--target", &target, "--duration", "0.2", "--connections", "1"]);
    let stderr = String::from_utf8_lossy(&named.stderr);
    assert_ne!(named.status.code(), Some(2), "{stderr}");
    let bad = run(&["tcp", "--target", "7000"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected IP:PORT"), "{stderr}");
}
