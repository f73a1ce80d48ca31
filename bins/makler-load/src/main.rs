//! `makler-load`: load generator and benchmarks for makler. See `makler-load --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use std::io::Write;

use clap::Parser;
use makler::shutdown::Shutdown;
use makler_load::bench::{self, BrokerBench};
use makler_load::compare::{self, TargetSpec};
use makler_load::echo::EchoServer;
use makler_load::rounds::{self, Schedule, Shape};
use makler_load::tcp::{self, Mode, Progress, Protocol, TcpLoad};
use makler_load::udp::{self, Driver};
use makler_load::{check_target, describe_binary, micros, report};

mod args;

use args::{Args, Command, Format, LoadArgs, ModeArg};

fn main() -> ExitCode {
    let args = Args::parse();
    // The cluster benchmark's simulated brokers log as real ones do: only their warnings.
    let quiet = args.quiet || matches!(args.command, Command::Cluster { .. });
    makler::cli::init_logging("makler-load", quiet);
    match args.command {
        Command::Http { load, path } => run_load(load, Protocol::Http { path }),
        Command::Tcp { load } => run_load(load, Protocol::Line),
        Command::Idle { target, connections, hold, pid, allow_remote } => {
            if let Err(e) = check_target(target, allow_remote) {
                eprintln!("makler-load: {e}");
                return ExitCode::from(makler::cli::exit::USAGE);
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
        Command::Cluster { brokers, sim_brokers, sizes, types, ttl, settle, window, samples, seed, broker_bin } => {
            let plan = makler_load::cluster::Plan {
                real: brokers,
                simulated: sim_brokers,
                sizes,
                types,
                ttl,
                settle,
                window,
                samples: samples as usize,
                seed,
            };
            cluster(&plan, broker_bin)
        }
        Command::Udp {
            instances,
            types,
            rss_instances,
            rss_types,
            memory_only,
            duration,
            windows,
            threads,
            rounds,
            broker_bin,
        } => {
            let memory = Memory { instances: rss_instances, types: rss_types.unwrap_or(types), only: memory_only };
            run_udp(instances, types, memory, duration, &windows, &threads, rounds, broker_bin)
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
        return ExitCode::from(makler::cli::exit::USAGE);
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
fn cluster(plan: &makler_load::cluster::Plan, broker_bin: Option<PathBuf>) -> ExitCode {
    if plan.types == 0 || plan.sizes.iter().any(|&s| s < plan.types) {
        return fail(2, "need 0 < --types <= each of --sizes");
    }
    let broker_bin = match broker_bin.map_or_else(|| sibling("makler-broker"), Ok) {
        Ok(path) => path,
        Err(e) => return fail(1, format!("cannot find makler-broker: {e}")),
    };
    println!(
        "makler-load cluster: instances registered at the first broker, heartbeated there every {:.1} s (TTL {:.1} s); \
         {:.0} s settle, {:.0} s measured; {} convergence samples",
        plan.ttl.as_secs_f64() / 3.0,
        plan.ttl.as_secs_f64(),
        plan.settle.as_secs_f64(),
        plan.window.as_secs_f64(),
        plan.samples
    );
    if !plan.real.is_empty() {
        println!("broker:  {}", describe_binary(&broker_bin));
    }
    println!("machine: {}", report::machine_note());
    println!(
        "B/broker/s: peer bytes sent+received per broker per second (mean); busiest: the most of one broker; \
         keep B/i/TTL/p: bytes received per live instance per TTL at each broker not heartbeated (with what it sends); \
         reg, rm: ms from a register (deregister) at the first broker until every other answers it (none does); \
         catch-up: a killed broker restarted until complete with the table; alive: instances at the first at the end; \
         sim: the library's nodes on a simulated network (delay 0.1-0.5 ms, no CPU or bandwidth modelled)"
    );
    let mut out = std::io::stdout().lock();
    match makler_load::cluster::run(plan, &broker_bin, &mut out) {
        Ok((_, failed)) => {
            let _ = writeln!(out, "machine after: {}", report::machine_note());
            if failed > 0 { fail(1, format!("{failed} configuration(s) failed")) } else { ExitCode::SUCCESS }
        }
        Err(e) => fail(1, e),
    }
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

/// The memory figure's settings of `makler-load udp`.
struct Memory {
    instances: usize,
    types: usize,
    only: bool,
}

#[allow(clippy::too_many_arguments)]
fn run_udp(
    instances: usize,
    types: usize,
    memory: Memory,
    duration: Duration,
    windows: &[usize],
    threads: &[usize],
    rounds: u32,
    broker_bin: Option<PathBuf>,
) -> ExitCode {
    if types == 0 || instances < types || memory.instances < instances || memory.types == 0 {
        return fail(2, "need 0 < --types <= --instances <= --rss-instances, and --rss-types > 0");
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
        rss_instances: memory.instances,
        rss_types: memory.types,
        memory_only: memory.only,
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
        return ExitCode::from(makler::cli::exit::USAGE);
    }
    if args.duration > Duration::from_secs(3600) {
        eprintln!("makler-load: --duration is at most 3600 seconds");
        return ExitCode::from(makler::cli::exit::USAGE);
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
