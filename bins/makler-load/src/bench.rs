//! The broker benchmark behind `makler-load udp`: a fresh broker process loaded with a table,
//! measured against a minimal UDP echo in a process of its own, in alternating rounds, over
//! several shapes of load (client threads × requests in flight); then its memory per instance.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::Measurement;
use crate::child::ChildProcess;
use crate::rounds::{Schedule, Shape, Target, TargetResult, alternate};
use crate::udp::{Driver, populate, rss_bytes, type_name};
use crate::wire::{BrokerLoad, EchoLoad, Form, Op, Table};

/// The service names' prefix in the broker benchmark (`type0`, `type1`, …).
pub const PREFIX: &str = "type";

/// Settings of the broker benchmark.
#[derive(Debug, Clone)]
pub struct BrokerBench {
    /// The `makler-broker` executable to start.
    pub broker_bin: PathBuf,
    /// The `makler-load` executable, started as `makler-load echo-server` for the reference.
    pub load_bin: PathBuf,
    /// Instances registered for the measured runs.
    pub instances: usize,
    /// Services they are spread over.
    pub types: usize,
    /// Instances registered for the memory measurement.
    pub rss_instances: usize,
    /// Services they are spread over.
    pub rss_types: usize,
    /// Only the memory measurement: no measured runs.
    pub memory_only: bool,
    /// Measured time per target and shape, and the rounds it is split into.
    pub schedule: Schedule,
    /// The shapes of load to measure, in order.
    pub shapes: Vec<Shape>,
}

/// The measured runs, in the order of their rows: the echo reference first.
pub const RUNS: [(&str, Option<(Form, Op)>); 7] = [
    ("udp echo", None),
    ("query binary", Some((Form::Binary, Op::Query))),
    ("query text", Some((Form::Text, Op::Query))),
    ("heartbeat binary", Some((Form::Binary, Op::Heartbeat))),
    ("heartbeat text", Some((Form::Text, Op::Heartbeat))),
    ("register binary", Some((Form::Binary, Op::Register))),
    ("register text", Some((Form::Text, Op::Register))),
];

/// What one shape of load measured: one result per entry of [`RUNS`].
#[derive(Debug, Clone)]
pub struct ShapeReport {
    /// Threads and window.
    pub shape: Shape,
    /// The runs, the echo reference first.
    pub results: Vec<TargetResult>,
}

/// What the broker benchmark measured.
#[derive(Debug, Clone)]
pub struct BrokerReport {
    /// Every shape's runs.
    pub shapes: Vec<ShapeReport>,
    /// The first registrations (new instances, binary, 1 thread, 8 in flight).
    pub populate: Measurement,
    /// The broker's resident memory just after it started.
    pub rss_empty: u64,
    /// The broker's resident memory with `rss_instances` registered.
    pub rss_full: u64,
    /// The most resident memory sampled (every 5 ms) while they were registered.
    pub rss_peak: u64,
    /// The resident memory after a text query for every service (queries should add nothing).
    pub rss_queried: u64,
}

/// Runs the broker benchmark. The broker and the echo server are child processes, killed at
/// the end whatever happens (an error, a panic).
pub fn bench_broker(config: &BrokerBench) -> io::Result<BrokerReport> {
    // Memory first, in a broker of its own: the measured runs below add leases (a register
    // from another source than the first is a lease of its own, the UUID being the
    // registrant's capability, and every client socket is a source).
    let memory = measure_memory(config)?;
    if config.memory_only {
        return Ok(BrokerReport { shapes: Vec::new(), populate: memory.1, ..memory.0 });
    }
    let (rss_empty, rss_full, rss_peak, rss_queried) =
        (memory.0.rss_empty, memory.0.rss_full, memory.0.rss_peak, memory.0.rss_queried);
    let echo = crate::echo::start_process(&config.load_bin)?;
    // Room for the leases of every register run.
    let mut broker = start_broker(&config.broker_bin, 10_000_000)?;
    let driver = Driver::new(broker.addr(), 8)?;
    let (ids, populate_run) = populate(&driver, PREFIX, 0, config.instances, config.types)?;
    let names = (0..config.types).map(|k| type_name(PREFIX, k)).collect();
    let table = Arc::new(Table { names, instances: config.instances, ids });

    let targets: Vec<Target> = RUNS
        .iter()
        .map(|&(label, run)| match run {
            None => Target {
                label: label.into(),
                addr: echo.addr(),
                workload: Box::new(EchoLoad::new(Arc::clone(&table))),
                server_pids: vec![echo.pid()],
            },
            Some((form, op)) => Target {
                label: label.into(),
                addr: broker.addr(),
                workload: Box::new(BrokerLoad::new(Arc::clone(&table), form, op)),
                server_pids: vec![broker.pid()],
            },
        })
        .collect();
    let mut shapes = Vec::new();
    for &shape in &config.shapes {
        let results = alternate(&targets, shape, config.schedule)?;
        if let Some(bad) = results.iter().find(|r| r.total.bad > 0) {
            return Err(io::Error::other(format!("{}: {} wrong answers", bad.label, bad.total.bad)));
        }
        shapes.push(ShapeReport { shape, results });
    }
    drop(echo);
    if !broker.is_running() {
        return Err(io::Error::other("the broker exited during the benchmark"));
    }
    Ok(BrokerReport { shapes, populate: populate_run, rss_empty, rss_full, rss_peak, rss_queried })
}

/// The memory figures, in a broker of its own: resident memory empty, at its peak while the
/// table is registered (sampled by a thread every 5 ms), full, and after one text query per
/// service.
fn measure_memory(config: &BrokerBench) -> io::Result<(BrokerReport, Measurement)> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let broker = start_broker(&config.broker_bin, config.rss_instances)?;
    let pid = broker.pid();
    let rss_empty = rss_bytes(pid)?;
    let (done, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(rss_empty)));
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(rss) = rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let driver = Driver::new(broker.addr(), 8)?;
    // A registration lost on a busy machine is sent again: registering the table again from
    // the same source refreshes what is there and adds what was lost.
    let mut populated = populate(&driver, PREFIX, 0, config.rss_instances, config.rss_types);
    for _ in 0..6 {
        if populated.is_ok() {
            break;
        }
        populated = populate(&driver, PREFIX, 0, config.rss_instances, config.rss_types);
    }
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (_, run) = populated?;
    let rss_full = rss_bytes(pid)?;
    let rss_peak = peak.load(Ordering::Relaxed).max(rss_full);
    text_query_each(broker.addr(), config.rss_types)?;
    let rss_queried = rss_bytes(pid)?;
    let report = BrokerReport { shapes: Vec::new(), populate: run.clone(), rss_empty, rss_full, rss_peak, rss_queried };
    Ok((report, run))
}

/// One text query for each of the first `types` services, one at a time.
fn text_query_each(broker: std::net::SocketAddr, types: usize) -> io::Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(broker)?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut reply = [0u8; 2048];
    for k in 0..types {
        socket.send(format!("query {}\n", type_name(PREFIX, k)).as_bytes())?;
        socket.recv(&mut reply)?;
    }
    Ok(())
}

/// A broker for the benchmark with room for `max` leases: one source registers every instance,
/// nothing listens on them, and the load comes from one address: no quota, no health checks, no
/// rate limit.
fn start_broker(bin: &std::path::Path, max: usize) -> io::Result<ChildProcess> {
    let max = max.to_string();
    let mut args = vec!["--listen", "127.0.0.1:0", "--quiet", "--no-multicast", "--ttl", "3600"];
    args.extend(["--max-instances", &max, "--max-per-source", "0", "--probe-interval", "0", "--rate-limit", "0"]);
    // A build older than per-network quotas (`--broker-bin`) neither knows the flag nor limits.
    let help = std::process::Command::new(bin).arg("--help").output()?;
    if String::from_utf8_lossy(&help.stdout).contains("--max-per-network") {
        args.extend(["--max-per-network", "0"]);
    }
    ChildProcess::start(bin, &args)
}

/// The shape the targets are checked at: 1 thread and 8 in flight when measured, else the first.
pub fn headline(report: &BrokerReport) -> Option<&ShapeReport> {
    let wanted = Shape { threads: 1, window: 8 };
    report.shapes.iter().find(|s| s.shape == wanted).or(report.shapes.first())
}

/// Parses a comma-separated list of positive numbers (`1,8,64`).
pub fn parse_list(text: &str) -> Result<Vec<usize>, String> {
    let list = text
        .split(',')
        .map(|item| match item.trim().parse::<usize>() {
            Ok(n) if (1..=4096).contains(&n) => Ok(n),
            _ => Err(format!("{item:?}: expected a number from 1 to 4096")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() { Err("expected at least one number".into()) } else { Ok(list) }
}

/// Every combination of `threads` and `windows`, threads outermost.
pub fn shapes(threads: &[usize], windows: &[usize]) -> Vec<Shape> {
    threads.iter().flat_map(|&t| windows.iter().map(move |&w| Shape { threads: t, window: w })).collect()
}

/// The default measured time per target and shape.
pub const DEFAULT_PER_TARGET: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_shapes() {
        assert_eq!(parse_list("1, 8,64"), Ok(vec![1, 8, 64]));
        assert!(parse_list("0").is_err());
        assert!(parse_list("1,x").is_err());
        let all = shapes(&[1, 4], &[1, 8]);
        assert_eq!(all.len(), 4);
        assert_eq!(all[2], Shape { threads: 4, window: 1 });
        assert_eq!(all[3].in_flight(), 32);
    }
}
