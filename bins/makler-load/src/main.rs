//! `makler-load`: load generator and benchmarks for makler. See `makler-load --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use std::io::Write;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use makler::shutdown::Shutdown;
use makler_load::bench::{self, BrokerBench};
use makler_load::compare::{self, TargetSpec};
use makler_load::echo::EchoServer;
use makler_load::rounds::{self, Schedule, Shape};
use makler_load::tcp::{self, Mode, Progress, Protocol, TcpLoad};
use makler_load::udp::{self, Driver};
use makler_load::{check_target, describe_binary, micros, report};

/// Load generator for makler: measures the broker, the balancer and their references.
///
/// Every run is bounded in time and count and stops by itself. Targets must be loopback
/// addresses unless --allow-remote is given.
#[derive(Debug, Parser)]
#[command(version = makler::version!(), max_term_width = 100)]
struct Args {
    /// Log only warnings and errors unless RUST_LOG says otherwise.
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP load: each connection sends `GET PATH` and waits for the response before the next
    /// (keep-alive), or opens a new connection per request (close).
    Http {
        #[command(flatten)]
        load: LoadArgs,
        /// The path to ask for.
        #[arg(long, default_value = "/")]
        path: String,
    },
    /// Line load: each connection sends `ping` and waits for a line back (an echo server).
    Tcp {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Opens CONNECTIONS idle connections, holds them for HOLD seconds, and reports the memory
    /// of process PID (the balancer) as they open and while they are held.
    Idle {
        /// Where to connect.
        #[arg(long, value_name = "ADDR")]
        target: SocketAddr,
        /// Connections to open.
        #[arg(long, short, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        connections: u32,
        /// Seconds to hold them.
        #[arg(long, value_name = "SECONDS", default_value = "5", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
        hold: Duration,
        /// The process whose resident memory to report.
        #[arg(long)]
        pid: Option<u32>,
        /// Allow a target that is not a loopback address.
        #[arg(long)]
        allow_remote: bool,
    },
    /// Broker benchmark: a fresh broker holding INSTANCES over TYPES, next to a minimal UDP echo
    /// server in a process of its own (the machine's limit for one socket and one thread), both
    /// given the same load in alternating rounds: queries, heartbeats and registrations in the
    /// binary and the text form, for every combination of --threads and --windows. Then the
    /// broker's memory per instance with RSS_INSTANCES registered.
    Udp {
        /// Instances registered for the measured runs.
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        /// Services the instances are spread over.
        #[arg(long, default_value_t = 1_000)]
        types: usize,
        /// Instances registered for the memory figure.
        #[arg(long, default_value_t = 100_000)]
        rss_instances: usize,
        /// Measured seconds per run and shape of load, split over the rounds.
        #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = makler::cli::parse_seconds)]
        duration: Duration,
        /// Requests in flight per client thread: a comma-separated list (`1,8,64`).
        #[arg(long, value_name = "N,N,…", default_value = "8", value_parser = bench::parse_list)]
        windows: std::vec::Vec<usize>,
        /// Client threads, each with its own socket: a comma-separated list (`1,4`).
        #[arg(long, value_name = "N,N,…", default_value = "1", value_parser = bench::parse_list)]
        threads: std::vec::Vec<usize>,
        /// How many times the runs alternate (each lasting DURATION / ROUNDS), so that the
        /// machine's changing speed affects all alike.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
        /// The makler-broker executable (default: the one next to this program).
        #[arg(long, value_name = "PATH")]
        broker_bin: Option<PathBuf>,
    },
    /// Redundant-brokers benchmark: three brokers with --peers on loopback; the time from a
    /// register at one to visible at the others, from a report of a dead instance to gone at all,
    /// the catch-up of a restarted broker at each table size, and the query rate of a broker
    /// while a peer takes HEARTBEATS a second, next to without.
    Peers {
        /// Table sizes at which a killed broker's catch-up is timed (the first is the base table).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        sizes: Vec<usize>,
        /// Services the instances are spread over.
        #[arg(long, default_value_t = 1_000)]
        types: usize,
        /// Samples of the visibility and report latencies.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Seconds of query load in all, split over the rounds.
        #[arg(long, value_name = "SECONDS", default_value = "6", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
        duration: Duration,
        /// Rounds the query runs (with and without heartbeats) alternate in.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
        /// Heartbeats a second sent to a peer during the loaded query rounds.
        #[arg(long, default_value_t = 10_000)]
        heartbeats: u32,
        /// The makler-broker executable (default: the one next to this program).
        #[arg(long, value_name = "PATH")]
        broker_bin: Option<PathBuf>,
    },
    /// Watch memory benchmark: a fresh broker with a short TTL is given SOCKETS x SERVICES
    /// confirmed watches (each socket on a loopback address of its own, its cookie echoed), which
    /// are then left to expire, CYCLES times; prints the broker's RSS before, with the watches
    /// (bytes per watch) and after they expired (the ratio to before).
    Watches {
        /// Sockets the watches come from (one file descriptor each).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=900))]
        sockets: u32,
        /// Services each socket watches.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        services: u32,
        /// The broker's TTL, the life of an unrenewed watch.
        #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = makler::cli::parse_seconds)]
        ttl: Duration,
        /// Times the watches come and go.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
        cycles: u32,
        /// The makler-broker executable (default: the one next to this program).
        #[arg(long, value_name = "PATH")]
        broker_bin: Option<PathBuf>,
    },
    /// Query load at one or more targets in alternating rounds, with the ratio of each to the
    /// first: the broker's binary and text queries and DNS SRV queries (`_NAME._tcp.ZONE.`) for
    /// the same service names, so that the broker can be compared with a DNS server.
    Query {
        /// `[LABEL:]PROTOCOL=ADDR[/PID,…]`, PROTOCOL one of dns, binary, text; repeat for more
        /// targets. The first is the reference the others are divided by. With PIDs, the CPU
        /// time of those processes per reply is reported.
        #[arg(long = "target", value_name = "TARGET", required = true)]
        targets: Vec<TargetSpec>,
        /// A file of service names, one per line, queried in turn.
        #[arg(long, value_name = "FILE")]
        names: PathBuf,
        /// The DNS zone the names are in.
        #[arg(long, default_value = "makler.test")]
        zone: String,
        /// Measured seconds per target, split over the rounds.
        #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = makler::cli::parse_seconds)]
        duration: Duration,
        /// How many times the targets alternate.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
        /// Requests in flight per client thread.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
        window: u32,
        /// Client threads, each with its own socket.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        threads: u32,
        /// Allow targets that are not loopback addresses.
        #[arg(long)]
        allow_remote: bool,
    },
    /// Registers INSTANCES over TYPES services named PREFIX0, PREFIX1, … at a broker, in the
    /// binary form (the table `makler-load udp` measures, and `zone` writes for DNS).
    Populate {
        /// The broker.
        #[arg(long, value_name = "ADDR")]
        target: SocketAddr,
        /// Instances to register.
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        /// Services they are spread over.
        #[arg(long, default_value_t = 1_000)]
        types: usize,
        /// The services' names: PREFIX then a number.
        #[arg(long, default_value = "svc")]
        prefix: String,
        /// Allow a target that is not a loopback address.
        #[arg(long)]
        allow_remote: bool,
    },
    /// Prints a DNS zone file holding the same table `populate` registers: one SRV record
    /// `_PREFIXk._tcp.ZONE.` per instance, and an A record per instance address.
    Zone {
        /// The zone.
        #[arg(long, default_value = "makler.test")]
        zone: String,
        /// Instances.
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        /// Services.
        #[arg(long, default_value_t = 1_000)]
        types: usize,
        /// The services' names: PREFIX then a number.
        #[arg(long, default_value = "svc")]
        prefix: String,
    },
    /// The reference for `udp`: a minimal UDP echo server, one thread, one socket, the broker's
    /// loop without the broker's work. Prints `listening udp=ADDR`.
    #[command(hide = true)]
    EchoServer {
        /// Where to listen.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Stop after this many seconds at the latest.
        #[arg(long, value_name = "SECONDS", default_value = "3600", value_parser = makler::cli::parse_seconds)]
        lifetime: Duration,
        /// Stop when standard input ends (the benchmark that started it is gone).
        #[arg(long)]
        stop_on_eof: bool,
    },
}

/// Settings shared by the TCP and HTTP loads.
#[derive(Debug, ClapArgs)]
struct LoadArgs {
    /// Where to connect.
    #[arg(long, value_name = "ADDR")]
    target: SocketAddr,
    /// Connections open at once.
    #[arg(long, short, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Seconds to run (at most an hour).
    #[arg(long, short, value_name = "SECONDS", default_value = "10", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
    duration: Duration,
    /// keepalive: many requests per connection; close: a new connection per request.
    #[arg(long, value_enum, default_value_t = ModeArg::Keepalive)]
    mode: ModeArg,
    /// Threads to spread the connections over.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// Stop after this many requests even if time is left.
    #[arg(long, default_value_t = 100_000_000)]
    max_requests: u64,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// A name for this run in the result (for tables of several runs).
    #[arg(long, default_value = "")]
    label: String,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Keepalive,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Csv,
}

fn main() -> ExitCode {
    let args = Args::parse();
    makler::cli::init_logging("makler-load", args.quiet);
    match args.command {
        Command::Http { load, path } => run_load(load, Protocol::Http { path }),
        Command::Tcp { load } => run_load(load, Protocol::Line),
        Command::Idle { target, connections, hold, pid, allow_remote } => {
            if let Err(e) = check_target(target, allow_remote) {
                eprintln!("makler-load: {e}");
                return ExitCode::from(2);
            }
            match makler_load::tcp::hold_idle(target, connections as usize, hold, pid, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("makler-load: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Peers { sizes, types, samples, duration, rounds, heartbeats, broker_bin } => {
            peers(sizes, types, samples, duration, rounds, heartbeats, broker_bin)
        }
        Command::Udp { instances, types, rss_instances, duration, windows, threads, rounds, broker_bin } => {
            run_udp(instances, types, rss_instances, duration, &windows, &threads, rounds, broker_bin)
        }
        Command::Watches { sockets, services, ttl, cycles, broker_bin } => {
            let broker_bin = match broker_bin.map_or_else(|| sibling("makler-broker"), Ok) {
                Ok(path) => path,
                Err(e) => return fail(1, format!("cannot find makler-broker: {e}")),
            };
            let config = makler_load::watches::WatchBench {
                broker_bin,
                sockets: sockets as usize,
                services: services as usize,
                ttl,
                cycles: cycles as usize,
            };
            println!("broker:    {}", describe_binary(&config.broker_bin));
            match makler_load::watches::bench_watches(&config, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }
        Command::Query { targets, names, zone, duration, rounds, window, threads, allow_remote } => {
            let schedule = Schedule { per_target: duration, rounds, warmup: warmup(duration, rounds) };
            let shape = Shape { threads: threads as usize, window: window as usize };
            run_query(&targets, &names, &zone, shape, schedule, allow_remote)
        }
        Command::Populate { target, instances, types, prefix, allow_remote } => {
            if let Err(e) = check_target(target, allow_remote) {
                return fail(2, e);
            }
            if types == 0 || instances < types {
                return fail(2, "need 0 < --types <= --instances");
            }
            let result = Driver::new(target, 8).and_then(|d| udp::populate(&d, &prefix, 0, instances, types));
            match result {
                Ok((_, m)) => {
                    let s = m.summary();
                    println!("registered {instances} instances over {types} types at {target}: {:.0}/s", s.rate);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, e),
            }
        }
        Command::Zone { zone, instances, types, prefix } => {
            if types == 0 || instances < types {
                return fail(2, "need 0 < --types <= --instances");
            }
            print!("{}", makler_load::dns::zone_file(&zone, &prefix, instances, types));
            ExitCode::SUCCESS
        }
        Command::EchoServer { listen, lifetime, stop_on_eof } => match run_echo(listen, lifetime, stop_on_eof) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        },
    }
}

fn peers(
    sizes: Vec<usize>,
    types: usize,
    samples: usize,
    duration: Duration,
    rounds: u32,
    heartbeats: u32,
    broker_bin: Option<PathBuf>,
) -> ExitCode {
    use makler_load::peers::{PeersBench, bench_peers};
    if types == 0 || sizes.is_empty() || sizes.iter().any(|&s| s < types) {
        eprintln!("makler-load: need 0 < --types <= each of --sizes");
        return ExitCode::from(2);
    }
    let broker_bin = match broker_bin.map_or_else(|| sibling("makler-broker"), Ok) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("makler-load: cannot find makler-broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = PeersBench { broker_bin, sizes, types, samples, duration, rounds, heartbeat_rate: heartbeats };
    println!("makler-load peers: 3 brokers on loopback, {} instances over {types} types", config.sizes[0]);
    let report = match bench_peers(&config) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("makler-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", makler_load::peers::report_text(&report, samples, heartbeats));
    ExitCode::SUCCESS
}
fn fail(code: u8, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("makler-load: {error}");
    ExitCode::from(code)
}

/// An unmeasured run per target before the rounds: one round's time, at most 0.2 s.
fn warmup(duration: Duration, rounds: u32) -> Duration {
    (duration / rounds.max(1)).min(Duration::from_millis(200))
}

fn sibling(name: &str) -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(name))
}

#[allow(clippy::too_many_arguments)]
fn run_udp(
    instances: usize,
    types: usize,
    rss_instances: usize,
    duration: Duration,
    windows: &[usize],
    threads: &[usize],
    rounds: u32,
    broker_bin: Option<PathBuf>,
) -> ExitCode {
    if types == 0 || instances < types || rss_instances < instances {
        return fail(2, "need 0 < --types <= --instances <= --rss-instances");
    }
    let (broker_bin, load_bin) =
        match (broker_bin.map_or_else(|| sibling("makler-broker"), Ok), std::env::current_exe()) {
            (Ok(broker), Ok(load)) => (broker, load),
            (Err(e), _) | (_, Err(e)) => return fail(1, format!("cannot find the executables: {e}")),
        };
    let config = BrokerBench {
        broker_bin,
        load_bin,
        instances,
        types,
        rss_instances,
        schedule: Schedule { per_target: duration, rounds, warmup: warmup(duration, rounds) },
        shapes: bench::shapes(threads, windows),
    };
    println!(
        "makler-load udp: broker with {instances} instances over {types} types; {:.1} s per run and shape in {rounds} alternating rounds",
        duration.as_secs_f64()
    );
    println!("broker:    {}", describe_binary(&config.broker_bin));
    println!("reference: {} echo-server", describe_binary(&config.load_bin));
    println!("machine:   {}", report::machine_note());
    println!("bytes: mean reply size; cli µs, srv µs: CPU time per reply of makler-load and of the server process");
    match bench::bench_broker(&config) {
        Ok(result) => {
            let mut out = std::io::stdout().lock();
            let written = report::write_broker_report(&mut out, &config, &result)
                .and_then(|()| writeln!(out, "machine after: {}", report::machine_note()));
            if let Err(e) = written {
                return fail(1, e);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

fn run_query(
    specs: &[TargetSpec],
    names: &std::path::Path,
    zone: &str,
    shape: Shape,
    schedule: Schedule,
    allow_remote: bool,
) -> ExitCode {
    if let Some(e) = specs.iter().find_map(|s| check_target(s.addr, allow_remote).err()) {
        return fail(2, e);
    }
    let names = match std::fs::read_to_string(names) {
        Ok(text) => compare::read_names(&text),
        Err(e) => return fail(2, format!("cannot read {}: {e}", names.display())),
    };
    let count = names.len();
    let targets = match compare::targets(specs, names, zone) {
        Ok(targets) => targets,
        Err(e) => return fail(2, e),
    };
    println!(
        "makler-load query: {count} names, {} client thread(s) × {} in flight, {:.1} s per target in {} alternating rounds",
        shape.threads,
        shape.window,
        schedule.per_target.as_secs_f64(),
        schedule.rounds
    );
    if let Ok(exe) = std::env::current_exe() {
        println!("generator: {}", describe_binary(&exe));
    }
    println!("machine:   {}", report::machine_note());
    match rounds::alternate(&targets, shape, schedule) {
        Ok(results) => {
            let mut out = std::io::stdout().lock();
            let written = report::write_header(&mut out, &targets[0].label)
                .and_then(|()| report::write_results(&mut out, &results))
                .and_then(|()| writeln!(out, "machine after: {}", report::machine_note()));
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }
        Err(e) => fail(1, e),
    }
}

fn run_echo(listen: SocketAddr, lifetime: Duration, stop_on_eof: bool) -> std::io::Result<()> {
    if !listen.ip().is_loopback() {
        return Err(std::io::Error::other(format!("{listen}: the echo server listens on loopback only")));
    }
    let server = EchoServer::bind(listen)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening udp={}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    if stop_on_eof {
        makler_load::echo::stop_on_stdin_eof(&shutdown)?;
    }
    server.run(&shutdown, lifetime)?;
    Ok(())
}

fn run_load(args: LoadArgs, protocol: Protocol) -> ExitCode {
    if let Err(e) = check_target(args.target, args.allow_remote) {
        eprintln!("makler-load: {e}");
        return ExitCode::from(2);
    }
    if args.duration > Duration::from_secs(3600) {
        eprintln!("makler-load: --duration is at most 3600 seconds");
        return ExitCode::from(2);
    }
    let mode = match args.mode {
        ModeArg::Keepalive => Mode::KeepAlive,
        ModeArg::Close => Mode::Close,
    };
    let load = TcpLoad {
        target: args.target,
        connections: args.connections as usize,
        duration: args.duration,
        mode,
        protocol,
        threads: args.threads.into(),
        max_requests: args.max_requests,
    };
    let progress = Arc::new(Progress::default());
    // The progress line is for a person at a terminal, redrawn in place: terminal output, not a
    // log line, so it stays on stderr as it is (and the result goes to stdout).
    let reporter = std::io::stderr().is_terminal().then(|| {
        let progress = Arc::clone(&progress);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut last = 0;
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_secs(1)) {
                let done = progress.completed.load(Relaxed);
                eprint!(
                    "\r{:6.1} s {:>10} requests/s {:>8} errors   ",
                    started.elapsed().as_secs_f64(),
                    done - last,
                    progress.errors.load(Relaxed)
                );
                last = done;
            }
            eprint!("\r{:60}\r", "");
        });
        (stop, thread)
    });
    let result = tcp::run(&load, &progress);
    if let Some((stop, thread)) = reporter {
        drop(stop);
        let _ = thread.join();
    }
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            eprintln!("makler-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(error) = &result.first_error {
        eprintln!("makler-load: {} connections failed; the first: {error}", result.errors);
    }
    let requests = result.measurement.latencies.count();
    let s = result.measurement.summary();
    let mode = match args.mode {
        ModeArg::Keepalive => "keepalive",
        ModeArg::Close => "close",
    };
    // The figures once; the formats only lay them out.
    let fields: [(&str, String); 11] = [
        ("label", args.label.clone()),
        ("target", args.target.to_string()),
        ("mode", mode.to_owned()),
        ("connections", args.connections.to_string()),
        ("duration_s", args.duration.as_secs_f64().to_string()),
        ("requests", requests.to_string()),
        ("rate", format!("{:.1}", s.rate)),
        ("p50_us", micros(s.p50)),
        ("p90_us", micros(s.p90)),
        ("p99_us", micros(s.p99)),
        ("errors", result.errors.to_string()),
    ];
    let value = |name: &str| fields.iter().find(|(k, _)| *k == name).map_or("", |(_, v)| v.as_str());
    match args.format {
        Format::Text => println!(
            "{}{} {mode} {} connections {} s: {:.0} requests/s, p50 {} µs, p90 {} µs, p99 {} µs, {requests} requests, {} errors",
            if args.label.is_empty() { String::new() } else { format!("{}: ", args.label) },
            args.target,
            args.connections,
            value("duration_s"),
            s.rate,
            value("p50_us"),
            value("p90_us"),
            value("p99_us"),
            result.errors
        ),
        Format::Json => {
            let pairs: Vec<String> = fields
                .iter()
                .map(|(k, v)| match *k {
                    "label" | "target" | "mode" => format!("\"{k}\":{}", json_string(v)),
                    _ => format!("{k:?}:{v}"),
                })
                .collect();
            println!("{{{}}}", pairs.join(","));
        }
        Format::Csv => {
            println!("{}", fields.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(","));
            println!("{}", fields.iter().map(|(_, v)| v.replace(',', " ")).collect::<Vec<_>>().join(","));
        }
    }
    ExitCode::SUCCESS
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
