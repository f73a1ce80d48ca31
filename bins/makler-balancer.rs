//! `makler-balancer`: TCP load balancer whose backends register with it. See `--help`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::builder::TypedValueParser;
use makler::balancer::{self, Balancer};
use makler::cli::AddrList;
use makler::shutdown::Shutdown;

/// The makler balancer: accepts TCP connections and forwards each to one of its backends, in
/// round-robin order or by --policy.
///
/// Backends register at the control address exactly as they would at a broker (`register`,
/// `heartbeat`, `deregister`, same TTL rules; `makler-server --broker CONTROL`). Once the first
/// backend is there the balancer registers itself at the broker under SERVICE, and it
/// deregisters when the last one is gone. `stats` on the control port shows every backend.
///
/// The first line on stdout is `listening tcp=IP:PORT udp=IP:PORT`. SIGINT or SIGTERM stops it
/// gracefully: it deregisters, stops accepting and lets the connections in flight finish (up to
/// --drain-timeout). SIGHUP (`systemctl reload`) reloads what can change at run time from the
/// command line and its --config file (who may register, rate limits, quotas, health checks,
/// --policy, timeouts, log level) without dropping a connection or a backend (OPERATIONS.md).
///
/// Socket activation: sockets passed by systemd (LISTEN_FDS, LISTEN_PID; LISTEN_FDNAMES names
/// them) replace --listen (TCP, or named `listen`), --control (UDP, or named `control`) and
/// --metrics (named `metrics`) and --http (named `http`). The socket then outlives the process: stopped, the balancer
/// leaves it with the manager, and the next one accepts what queued meanwhile, once it has a
/// backend (it waits up to --ttl for one). See OPERATIONS.md for upgrades that refuse nobody.
#[derive(Debug, Parser)]
#[command(name = "makler-balancer", version = makler::version!(), max_term_width = 100)]
struct Args {
    /// TCP address clients connect to.
    #[arg(long, value_name = "ADDR", default_value_t = balancer::DEFAULT_LISTEN, value_parser = makler::cli::parse_addr)]
    listen: SocketAddr,

    /// UDP address backends register at.
    #[arg(long, value_name = "ADDR", default_value_t = balancer::DEFAULT_CONTROL, value_parser = makler::cli::parse_addr)]
    control: SocketAddr,

    /// Broker to register the balancer at; a comma-separated list fails over. Without it, the
    /// balancer announces itself on the multicast group while it has backends (or, with
    /// --no-multicast, registers at 127.0.0.1:7000).
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    broker: Option<AddrList>,

    /// Do not register or announce anywhere (was --no-broker, which still works).
    #[arg(long, alias = "no-broker", conflicts_with = "broker")]
    no_register: bool,

    #[command(flatten)]
    multicast: makler::cli::MulticastArgs,

    /// The service name to register under.
    #[arg(long, value_name = "NAME")]
    service: String,

    /// Take backends from this service at --broker too: the balancer watches it there and
    /// keeps one backend per live instance, added and removed as the broker's table changes,
    /// beside the backends that register at --control; health checks and --policy apply to
    /// them alike. Each weighs what its metadata's weight=N says (makler-server --meta
    /// weight=3; 1 to 256, 1 without one; a bad value counts as 1 and is logged). With
    /// --mdns-import at the broker, a LAN's mDNS services (`_printer._tcp` as `printer`) can be
    /// balanced. It must differ from --service (the balancer registers there: a loop). Trust:
    /// without --key-file the watch is unsealed, and what arrives from the broker's address is
    /// taken, so a host that can forge that address can add backends; with --key-file (the
    /// brokers' key) the watch is sealed and only sealed notifications are taken.
    #[arg(long, value_name = "SERVICE", requires = "broker")]
    backends_from: Option<String>,

    /// Forwarding threads, each relaying many connections.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,

    /// Seconds a backend's registration lives after its last heartbeat.
    #[arg(long, value_name = "SECONDS", default_value = "5", allow_negative_numbers = true, value_parser = makler::cli::parse_ttl)]
    ttl: Duration,

    /// Client connections open at once; more are closed at once and counted as refused.
    /// Default: as many as the open-file limit allows (two descriptors each), at most 20000.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// How a backend is chosen for each connection: round-robin (each in turn), least-conn (the
    /// fewest connections in flight), random-two (the less loaded of two drawn at random). Each
    /// honours the backends' weights (smooth weighted round robin, in flight ÷ weight).
    #[arg(long, value_name = "POLICY", default_value = "round-robin", value_parser = clap::builder::PossibleValuesParser::new(balancer::Policy::NAMES).map(|name| name.parse::<balancer::Policy>().unwrap_or_default()))]
    policy: balancer::Policy,

    /// Seconds a backend connect may take before the connection is redispatched: sent to
    /// another backend (at most 4 tried in all), and the backend marked down until its health
    /// checks pass again.
    #[arg(long, value_name = "SECONDS", default_value = "1", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
    connect_timeout: Duration,

    /// Seconds without traffic after which a connection is closed.
    #[arg(long, value_name = "SECONDS", default_value = "60", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
    idle_timeout: Duration,

    /// Seconds between health probes of every backend: a TCP connect, or the HTTP GET a backend
    /// declared when it registered (`check=http:PATH`; 2xx and 3xx are healthy), each within
    /// --connect-timeout; 0 turns them off.
    #[arg(long, value_name = "SECONDS", default_value = "2")]
    health_interval: f64,

    /// Health checks passed in a row that bring a backend marked down back (HAProxy's rise).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    rise: u32,

    /// Health checks failed in a row that mark a backend down (HAProxy's fall).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    fall: u32,

    /// Log only warnings and errors unless --log-level or RUST_LOG says otherwise (so not backend
    /// changes and the registration at the broker; those stay out even then).
    #[arg(long, short)]
    quiet: bool,

    // --config, --check-config, --log-level.
    #[command(flatten)]
    config: makler::cli::ConfigArgs,

    // --max-per-source, --allow-register, --foreign-ip: as the broker's, for backends.
    #[command(flatten)]
    register_policy: makler::cli::RegisterPolicyArgs,

    #[command(flatten)]
    rate_limit: makler::cli::RateLimitArgs,

    /// On SIGTERM or SIGINT: seconds the connections in flight may take to finish, after the
    /// balancer has deregistered and stopped accepting; 0 closes them at once. A second signal
    /// stops at once.
    #[arg(long, value_name = "SECONDS", default_value = "10", allow_negative_numbers = true,
          value_parser = parse_drain)]
    drain_timeout: Duration,

    /// Serve Prometheus metrics over HTTP on this TCP address (`GET /metrics`), e.g.
    /// 127.0.0.1:9101; port 0 picks a free port (the `listening` line shows it).
    #[arg(long, value_name = "ADDR", value_parser = makler::cli::parse_addr)]
    metrics: Option<SocketAddr>,

    /// Serve HTTP on this TCP address, e.g. 127.0.0.1:8501: `GET /metrics` (as --metrics), the
    /// backends as JSON (`/v1/backends`) and the status page at `/`; port 0 picks a free port
    /// (the `listening` line shows it as ` http=`).
    #[arg(long, value_name = "ADDR", value_parser = makler::cli::parse_addr)]
    http: Option<SocketAddr>,

    /// Write a PROXY protocol header (HAProxy's; v1 text or v2 binary) to each backend before the
    /// client's bytes, with the client's address and the address it connected to, so that
    /// backends see who the client is. The backends must expect it (`makler-server
    /// --accept-proxy`, HAProxy's `accept-proxy`, nginx's `proxy_protocol`).
    #[arg(long, value_name = "v1|v2")]
    send_proxy: Option<makler::proxy_protocol::Version>,
}

fn main() -> ExitCode {
    // First, before any thread: it clears LISTEN_FDS and LISTEN_PID.
    let activated = makler::activation::Activated::from_env();
    // Next, so that a SIGHUP during start-up (`systemctl reload` at once) is kept for the
    // reload rather than end the process.
    let sighup = match makler::reload::Sighup::catch() {
        Ok(sighup) => sighup,
        Err(e) => {
            eprintln!("makler-balancer: cannot catch SIGHUP: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Args = makler::cli::parse();
    // The log filter the start takes: a reload compares the file's with it.
    let filter = makler::cli::log_filter(args.quiet, args.config.log_level.as_deref());
    makler::cli::init_logging_at("makler-balancer", &filter);
    let problems = problems(&args);
    if args.config.check_config {
        // What a start finds out only once it uses the group: an interface address this host
        // lacks, when the balancer announces itself there (every announcement would fail).
        let announces = args.broker.is_none() && !args.no_register;
        let bind_problems = announces.then(|| args.multicast.interface_problem()).flatten();
        let problems: Vec<String> = problems.iter().cloned().chain(bind_problems).collect();
        return makler::cli::config::report_check("makler-balancer", &problems);
    }
    let mut activated = match activated {
        Ok(activated) => activated,
        Err(e) => {
            eprintln!("makler-balancer: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before the connection cap is worked out from it.
    if let Err(e) = balancer::raise_descriptor_limit() {
        log::debug!("could not raise the open-file limit to its hard limit: {e}");
    }
    if let Some(problem) = problems.first() {
        eprintln!("makler-balancer: {problem}");
        return ExitCode::from(makler::cli::exit::USAGE);
    }
    let config = match balancer_config(args, default_cap) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("makler-balancer: {e}");
            return ExitCode::from(makler::cli::exit::USAGE);
        }
    };
    match run(config, &mut activated, (sighup, filter)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("makler-balancer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The balancer's settings from its flags (and config file): at start, and again on every
/// reload (SIGHUP), so that a reload reads them exactly as a start does. `default_cap` gives
/// the connection cap when `--max-connections` is not given (from the open-file limit).
fn balancer_config(args: Args, default_cap: impl FnOnce(bool, bool) -> usize) -> Result<balancer::Config, String> {
    if let Some(problem) = problems(&args).into_iter().next() {
        return Err(problem);
    }
    // Both checked among the problems above.
    let health_interval = health_interval(args.health_interval).unwrap_or_default();
    let require_key = args.register_policy.require_key(args.multicast.key_file.as_ref()).unwrap_or_default();
    Ok(balancer::Config {
        listen: args.listen,
        control: args.control,
        brokers: match (&args.broker, args.no_register, args.multicast.config()) {
            (Some(list), _, _) => list.0.clone(),
            (None, false, None) => vec![makler::broker::DEFAULT_LISTEN],
            _ => Vec::new(),
        },
        announce: match (&args.broker, args.no_register, args.multicast.config()) {
            (None, false, Some(multicast)) => {
                if multicast.key.is_none() && !multicast.interface.is_loopback() {
                    log::warn!(
                        "announcing beyond this host without --key-file: anyone on the network can announce or say \
                     goodbye in this balancer's name"
                    );
                }
                Some(makler::client::AnnouncerConfig { multicast, ..Default::default() })
            }
            _ => None,
        },
        service: args.service,
        backends_from: args.backends_from,
        threads: args.threads.into(),
        registry: {
            let mut registry = makler::balancer::control_registry(args.ttl);
            registry.limits.max_per_source = args.register_policy.max_per_source;
            registry
        },
        policy: args.register_policy.policy(),
        key: args.multicast.key_file,
        require_key,
        max_connections: args
            .max_connections
            .unwrap_or_else(|| default_cap(args.metrics.is_some(), args.http.is_some())),
        balance: args.policy,
        connect_timeout: args.connect_timeout,
        idle_timeout: args.idle_timeout,
        health_interval,
        rise: args.rise,
        fall: args.fall,
        log: !args.quiet,
        rate_limit: args.rate_limit.config(),
        metrics: args.metrics,
        http: args.http,
        drain_timeout: args.drain_timeout,
        send_proxy: args.send_proxy,
    })
}

/// What is wrong with the settings beyond what each flag's parser checks, before any socket is
/// bound: what `--check-config` reports, and what stops a start.
fn problems(args: &Args) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = health_interval(args.health_interval) {
        problems.push(format!("--health-interval {e}"));
    }
    if let Err(e) = args.register_policy.require_key(args.multicast.key_file.as_ref()) {
        problems.push(e);
    }
    if args.backends_from.as_ref().is_some_and(|from| *from == args.service) {
        problems.push(format!(
            "--backends-from {0} with --service {0}: the balancer registers at the broker under the service it \
             takes its backends from, and would become its own backend (a loop); give another --service",
            args.service
        ));
    }
    problems
}

/// `--health-interval`: seconds, or 0 for no health checks.
fn health_interval(seconds: f64) -> Result<Option<Duration>, String> {
    match seconds {
        0.0 => Ok(None),
        seconds => makler::cli::parse_seconds(&seconds.to_string()).map(Some),
    }
}

/// A number of seconds, or 0 for "do not wait".
fn parse_drain(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        _ => makler::cli::parse_seconds(text),
    }
}

/// Each forwarded connection holds two descriptors (client and backend); keep some for the
/// listener, the control socket and the probes, and, with `--metrics` and `--http`, for those
/// listeners' connections. The limit is read after `main` raised the soft limit to the hard
/// one, so the warning comes only when even the hard limit leaves fewer than
/// [`FEW_CONNECTIONS`].
fn default_cap(metrics: bool, http: bool) -> usize {
    let limit = makler::net::descriptor_limit().unwrap_or(1024);
    let metrics = if metrics { makler::broker::METRICS_MAX_CONNECTIONS as u64 } else { 0 }
        + if http { makler::http::MAX_CONNECTIONS as u64 } else { 0 };
    let cap = (limit.saturating_sub(64 + metrics) / 2).min(20_000) as usize;
    if cap < FEW_CONNECTIONS {
        log::warn!(
            "at most {cap} connections (the open-file limit is {limit}, the hard limit; raise it with `ulimit -Hn` \
             or LimitNOFILE= in the unit for more)"
        );
    }
    cap
}

/// Fewer connections than this by default is worth a warning at start: a busy LAN service can
/// reach it. A hard limit of 4096 (a common default) gives about 2000, and no warning.
const FEW_CONNECTIONS: usize = 1000;

/// `sighup`: SIGHUP caught since the start, and the log filter the start took.
fn run(
    config: balancer::Config,
    activated: &mut makler::activation::Activated,
    sighup: (makler::reload::Sighup, String),
) -> std::io::Result<()> {
    let passed = !activated.is_empty();
    let started = config.clone();
    let balancer = Balancer::bind_with(config, activated)?;
    if passed {
        log::info!("took the sockets the service manager passed (their addresses replace --listen and --control)");
    }
    for name in activated.unused() {
        log::warn!("a passed socket named {name:?} is not used (names: listen, control, metrics, http)");
    }
    // Before the listening line: a SIGTERM sent as soon as it is read stops the balancer as
    // any other SIGTERM does, rather than kill it unlogged, and a SIGHUP reloads it.
    reload_on_sighup(sighup, started, balancer.reloader())?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "listening tcp={} udp={}", balancer.local_addr(), balancer.control_addr())?;
    if let Some(metrics) = balancer.metrics_addr() {
        write!(stdout, " metrics={metrics}")?;
    }
    if let Some(http) = balancer.http_addr() {
        write!(stdout, " http={http}")?;
    }
    writeln!(stdout)?;
    stdout.flush()?;
    drop(stdout);
    balancer.run(&shutdown)?;
    log::info!("stopped");
    Ok(())
}

/// Reloads on every SIGHUP (see [`reload`]).
fn reload_on_sighup(
    (sighup, filter): (makler::reload::Sighup, String),
    started: balancer::Config,
    reloader: balancer::Reloader,
) -> std::io::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // What the start chose (not the file read again now: it may have changed since).
    let mut level = makler::reload::LogLevel::new(filter);
    sighup.on_reload(move || reload(&argv, &started, &mut level, &reloader))
}

/// SIGHUP: reads the command line and the `--config` file again, as a start would, and hands
/// the running balancer what may change at run time; says which settings differ that cannot
/// (compared with `started`: those never change). A bad file or value changes nothing.
fn reload(
    argv: &[std::ffi::OsString],
    started: &balancer::Config,
    level: &mut makler::reload::LogLevel,
    reloader: &balancer::Reloader,
) {
    let new = makler::cli::config::reparse::<Args>(argv).and_then(|args| {
        let filter = makler::cli::log_filter(args.quiet, args.config.log_level.as_deref());
        let level_change = level.change_to(&filter)?;
        Ok((filter, level_change, balancer_config(args, |_, _| started.max_connections)?))
    });
    let (filter, level_change, new) = match new {
        Ok(new) => new,
        Err(e) => return makler::reload::log_refused(&e),
    };
    for line in started.fixed_differences(&new) {
        log::warn!("reload: {line}");
    }
    // The log level switches now even when the control port takes the rest late.
    reloader.reload_and_log(new.reloadable(), Duration::from_secs(10), level, filter, level_change);
}
