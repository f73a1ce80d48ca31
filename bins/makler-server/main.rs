//! `makler-server`: example servers that register at a broker. See `makler-server --help`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use makler::cli::AddrList;
use makler::client::{Announcer, AnnouncerConfig, Registrar, RegistrarConfig, RegistrationState};
use makler::protocol::Check;
use makler::shutdown::Shutdown;

use server::Server;
use session::Service;

mod server;
mod session;

/// An example makler server: serves a small TCP service, registers it at a broker and keeps
/// the registration alive until it stops.
///
/// Services: `echo` returns each line, `upper` returns it in capitals, `time` returns the
/// current time (UTC, RFC 3339) for each line, `http` is a minimal HTTP/1.1 server
/// (keep-alive, Content-Length) whose body names the server that answered.
///
/// With --accept-proxy, every connection opens with a PROXY protocol header (behind
/// `makler-balancer --send-proxy` or HAProxy), and the services see the client it names.
///
/// The first line on stdout is `listening tcp=IP:PORT`. SIGINT or SIGTERM deregisters and stops;
/// SIGHUP reloads the log level (--log-level, --quiet) from the command line and --config file.
/// While no broker answers, or a broker has no room (`ERROR full`), the server serves and tries
/// again with backoff (up to 10 s and 30 s between tries).
///
/// Exit codes: 0 stopped by SIGTERM or SIGINT, 2 bad usage, 6 the broker refused the
/// registration for good (a bad name, its `--allow-register` policy: the one-line error says
/// which), 1 anything else.
#[derive(Debug, Parser)]
#[command(name = "makler-server", version = makler::version!(), max_term_width = 100)]
struct Args {
    /// What to serve: echo, upper, time or http.
    #[arg(long)]
    service: Service,

    /// TCP address to listen on, IP:PORT (a host name is resolved); port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = makler::cli::parse_addr)]
    listen: SocketAddr,

    /// Broker (or balancer control port) to register at; a comma-separated list fails over.
    /// Without it, the brokers are found on the multicast group (or, with --announce, the server
    /// only announces itself).
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    broker: Option<AddrList>,

    /// Announce the server on the multicast group (brokers listening there register it), and
    /// say goodbye when it stops. The announcements commit to a secret the goodbye reveals, so
    /// nobody else can say goodbye for it (brokers older than that ignore them: upgrade them
    /// first).
    #[arg(long)]
    announce: bool,

    /// Seconds between announcements after the first three; keep it well inside the brokers' TTL.
    #[arg(long, value_name = "SECONDS", default_value = "1.5", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
    announce_interval: Duration,

    #[command(flatten)]
    multicast: makler::cli::MulticastArgs,

    /// Register under this name instead of the service's.
    #[arg(long, value_name = "NAME")]
    register_as: Option<String>,

    /// The health check the registration declares, which the broker runs: tcp (a connect),
    /// http:PATH (a GET of PATH; 2xx and 3xx are healthy) or none (never probed; only
    /// heartbeats keep it). Default: http:/ for the http service, tcp for the others.
    #[arg(long, value_name = "CHECK", value_parser = makler::cli::parse_check)]
    check: Option<Check<Box<str>>>,

    /// A metadata pair the registration (and each --announce announcement) carries, KEY=VALUE
    /// (repeat for more, e.g. --meta path=/ --meta version=2): shown by `makler show`, in
    /// listings and watches, and served as the instance's DNS-SD TXT record. Keys are printable
    /// ASCII without '=' (check is reserved), values have no spaces; a pair is at most 255
    /// bytes, an instance holds at most 32 pairs and 1,024 bytes.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta_pair)]
    meta: Vec<String>,

    /// Simulated service time per request, in milliseconds (a worker is busy for that long).
    #[arg(long, value_name = "N", default_value_t = 0)]
    work_ms: u64,

    /// Worker threads, each serving many connections (was --workers).
    #[arg(long, alias = "workers", value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,

    /// Do not register at a broker (with --announce: only announce). --no-broker is the same.
    #[arg(long, alias = "no-broker")]
    no_register: bool,

    /// Log only warnings and errors unless --log-level or RUST_LOG says otherwise.
    #[arg(long, short)]
    quiet: bool,

    // --config, --check-config, --log-level.
    #[command(flatten)]
    config: makler::cli::ConfigArgs,

    /// Expect a PROXY protocol header (HAProxy's, v1 or v2) at the start of every connection, as
    /// `makler-balancer --send-proxy` or HAProxy's `send-proxy`/`send-proxy-v2` write it: the
    /// client it names is the one the services see (the http service's answer says `for client
    /// IP:PORT`). A connection without one, or with one malformed or longer than 1024 bytes,
    /// is closed, counted and logged; so is one whose header has not come within
    /// --proxy-timeout. The default --check becomes tcp, since a broker's HTTP check sends no
    /// header; `--check http:/…` suits a server only a `makler-balancer --send-proxy` checks
    /// (its checks carry a `LOCAL` or `UNKNOWN` header, as HAProxy's do).
    #[arg(long)]
    accept_proxy: bool,

    /// With --accept-proxy: seconds a new connection has to send its PROXY header.
    #[arg(long, value_name = "SECONDS", default_value = "3", requires = "accept_proxy", value_parser = makler::cli::parse_seconds)]
    proxy_timeout: Duration,
}

fn main() -> ExitCode {
    // First, so that a SIGHUP during start-up (`systemctl reload` at once) is kept for the
    // reload rather than end the process.
    let sighup = match makler::reload::Sighup::catch() {
        Ok(sighup) => sighup,
        Err(e) => {
            eprintln!("makler-server: cannot catch SIGHUP: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut args: Args = makler::cli::parse();
    // What the start takes: a reload compares the file's with it.
    let (quiet, log_level) = (args.quiet, args.config.log_level.take());
    args.quiet = false;
    let fixed = format!("{args:?}");
    (args.quiet, args.config.log_level) = (quiet, log_level);
    let filter = makler::cli::log_filter(args.quiet, args.config.log_level.as_deref());
    makler::cli::init_logging_at("makler-server", &filter);
    let problems = problems(&args);
    if args.config.check_config {
        // What a start finds out only once it uses the group: an interface address this host
        // lacks, when the server announces itself there (exit 1) or looks for brokers there (in
        // vain, every 2 s).
        let uses_group = args.announce || (args.broker.is_none() && !args.no_register);
        let bind_problems = uses_group.then(|| args.multicast.interface_problem()).flatten();
        let problems: Vec<String> = problems.iter().cloned().chain(bind_problems).collect();
        return makler::cli::config::report_check("makler-server", &problems);
    }
    // Refused before anything is bound, with the code --check-config gives them.
    if let Some(problem) = problems.first() {
        eprintln!("makler-server: {problem}");
        return ExitCode::from(makler::cli::exit::USAGE);
    }
    match run(args, (sighup, filter, fixed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("makler-server: {e}");
            if e.is::<Refused>() { ExitCode::from(REFUSED) } else { ExitCode::FAILURE }
        }
    }
}

/// What is wrong with the settings beyond what each flag's parser checks: what
/// `--check-config` reports, and what stops a start before it binds (exit 2).
fn problems(args: &Args) -> Vec<String> {
    let mut problems = Vec::new();
    if args.announce && args.multicast.no_multicast {
        problems.push("--announce needs multicast (drop --no-multicast)".to_owned());
    }
    if let Err(e) = makler::meta::Metadata::parse_words(args.meta.iter().map(String::as_str)) {
        problems.push(format!("--meta: {e}"));
    }
    problems
}

/// The exit code when the broker refused the registration for good: the code every program
/// gives for a refusal.
const REFUSED: u8 = makler::cli::exit::REFUSED;

/// The broker refused the registration for good: the server stops rather than serve
/// unregistered.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// `sighup`: SIGHUP caught since the start, the log filter the start took and its other
/// settings (as [`split`] gives them).
fn run(args: Args, sighup: (makler::reload::Sighup, String, String)) -> Result<(), Box<dyn std::error::Error>> {
    let config = server::Config {
        listen: args.listen,
        service: args.service,
        workers: args.threads.into(),
        work: Duration::from_millis(args.work_ms),
        accept_proxy: args.accept_proxy.then_some(args.proxy_timeout),
        ..server::Config::default()
    };
    let server = Server::bind(config).map_err(|e| format!("cannot listen on tcp {}: {e}", args.listen))?;
    let addr = server.local_addr();
    // Before the listening line, so that a SIGTERM sent as soon as it is read stops the server
    // as any other does, and a SIGHUP reloads it rather than ending it.
    reload_on_sighup(sighup)?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening tcp={addr}")?;
    stdout.flush()?;
    drop(stdout);

    let name = args.register_as.unwrap_or_else(|| args.service.name().to_owned());
    // A wildcard listen address is no address to give clients: let the broker take the address
    // this process's datagrams come from.
    let ip = Some(addr.ip()).filter(|ip| !ip.is_unspecified());
    let multicast = args.multicast.config();
    // What the broker may check: the registration and the announcements declare the same.
    let check = args.check.clone().unwrap_or(match args.service {
        // A checker's GET would come without a PROXY header and be refused.
        _ if args.accept_proxy => Check::Tcp,
        Service::Http => Check::Http("/".into()),
        Service::Echo | Service::Upper | Service::Time => Check::Tcp,
    });
    let meta = makler::meta::Metadata::parse_words(args.meta.iter().map(String::as_str))
        .map_err(|e| format!("--meta: {e}"))?;
    let announcer = match (args.announce, multicast) {
        (false, _) => None,
        (true, None) => return Err("--announce needs multicast (drop --no-multicast)".into()),
        (true, Some(multicast)) => {
            if multicast.key.is_none() && !multicast.interface.is_loopback() {
                log::warn!(
                    "announcing beyond this host without --key-file: anyone on the network can announce or say \
                     goodbye in this server's name"
                );
            }
            let config = AnnouncerConfig {
                multicast,
                interval: args.announce_interval,
                check: check.clone(),
                meta: meta.clone(),
            };
            log::info!("announcing {name} on multicast group {} on {}", multicast.group, multicast.interface);
            let announcer = Announcer::start(config, &name, ip, addr.port())
                .map_err(|e| format!("cannot announce: {}", makler::multicast::explain(e, &multicast)))?;
            Some(announcer)
        }
    };
    let registering = if args.no_register || (args.announce && args.broker.is_none()) {
        None
    } else {
        let (given, stop, name) = (args.broker.clone(), shutdown.clone(), name.clone());
        let port = addr.port();
        // It watches the registration and says a later refusal in its exit line itself; with a
        // key, its requests are sealed (for brokers with --require-key).
        let key = args.multicast.key_file;
        let config =
            RegistrarConfig { log: true, quiet_refusals: true, check, meta, key, ..RegistrarConfig::default() };
        // In the background, so that the server serves while it looks for a broker.
        Some(std::thread::spawn(move || register(given.as_ref(), multicast.as_ref(), &stop, &name, ip, port, config)))
    };

    server.run(&shutdown)?;
    if let Some(announcer) = announcer {
        announcer.stop();
        log::info!("said goodbye for {name}");
    }
    if let Some(registering) = registering {
        match registering.join() {
            Ok(Err(refused)) => return Err(refused.into()),
            Ok(Ok(Some((registrar, registration)))) => {
                let was_registered = registration.id().is_some();
                drop(registration);
                registrar.shutdown();
                if was_registered {
                    log::info!("deregistered {name}");
                } else {
                    log::info!("{name} was never registered: no broker answered");
                }
            }
            Ok(Ok(None)) => log::info!("{name} was never registered: no broker was found"),
            Err(_) => log::error!("the registering thread panicked"),
        }
    }
    log::info!("stopped");
    Ok(())
}

/// How long to wait between two searches for a broker on the multicast group.
const DISCOVER_AGAIN: Duration = Duration::from_secs(2);

/// How often the registering thread looks whether the registration was refused since.
const WATCH_REFUSAL: Duration = Duration::from_secs(1);

/// Finds the brokers (given, or on the multicast group: searched again and again until one
/// answers or the server stops) and registers there, then watches the registration until the
/// server stops. `None`: stopped before a broker was found. A refusal for good, at once or
/// later (a broker restarted with another policy), stops the server and is the error.
fn register(
    given: Option<&AddrList>,
    multicast: Option<&makler::multicast::MulticastConfig>,
    stop: &Shutdown,
    name: &str,
    ip: Option<std::net::IpAddr>,
    port: u16,
    config: RegistrarConfig,
) -> Result<Option<(Registrar, makler::client::Registration)>, Refused> {
    let stopped = stop.stopped();
    let mut said = false;
    let brokers = loop {
        match makler::cli::brokers_or_discover(given, multicast) {
            Ok(brokers) => break brokers,
            Err(e) => {
                if !said {
                    log::warn!("{e}; looking again every {}s", DISCOVER_AGAIN.as_secs());
                    said = true;
                }
                // Returns at once when the server stops.
                let _ = stopped.recv_timeout(DISCOVER_AGAIN);
                if stop.is_requested() {
                    return Ok(None);
                }
            }
        }
    };
    if said {
        let list: Vec<String> = brokers.iter().map(ToString::to_string).collect();
        log::info!("found broker {}", list.join(","));
    }
    let started = Registrar::start(&brokers, config)
        .and_then(|registrar| registrar.register(name, ip, port).map(|registration| (registrar, registration)));
    let (registrar, registration) = match started {
        Ok(registered) => registered,
        Err(e @ makler::client::ClientError::Rejected(_)) => {
            stop.request();
            return Err(Refused(format!("cannot register {name}: {e}")));
        }
        Err(e) => {
            log::error!("cannot register {name}: {e}");
            return Ok(None);
        }
    };
    // Returns at once when the server stops.
    while stopped.recv_timeout(WATCH_REFUSAL).is_err() && !stop.is_requested() {
        if let RegistrationState::Refused(why) = registration.state() {
            stop.request();
            return Err(Refused(format!("{name} is no longer registered: the broker refused it: {why}")));
        }
    }
    Ok(Some((registrar, registration)))
}

/// One `--meta KEY=VALUE`: a metadata pair as the broker takes it (`check` is reserved).
fn parse_meta_pair(text: &str) -> Result<String, String> {
    let (key, value) = makler::meta::parse_pair(text).map_err(|e| e.to_string())?;
    if !text.contains('=') {
        return Err(format!("{text:?}: expected KEY=VALUE"));
    }
    makler::protocol::check::check_meta(&[(key, value)]).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// On SIGHUP, reads the command line and the `--config` file again and takes the log level
/// (`--log-level`, `--quiet`): the one thing a server changes at run time. Any other setting
/// that differs is named as kept (the service, its address and its registration are the
/// server's identity: a restart re-registers cleanly).
fn reload_on_sighup((sighup, level, fixed): (makler::reload::Sighup, String, String)) -> std::io::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // What the start took (not the file read again now: it may have changed since).
    let mut level = makler::reload::LogLevel::new(level);
    sighup.on_reload(move || {
        let (filter, now) = match makler::cli::config::reparse::<Args>(&argv).map(split) {
            Ok(new) => new,
            Err(e) => return makler::reload::log_refused(&e),
        };
        if now != fixed {
            log::warn!(
                "reload: makler-server takes only --log-level and --quiet at run time: its other settings are kept \
                 (restart to apply)"
            );
        }
        let change = match level.change_to(&filter) {
            Ok(change) => change,
            Err(e) => return makler::reload::log_refused(&e),
        };
        makler::reload::log_changes(&change.into_iter().collect::<Vec<_>>());
        if let Err(e) = level.switch(filter) {
            log::warn!("reload: --log-level: {e}");
        }
    })
}

/// The log filter `args` choose, and the rest of them (to tell whether anything else changed).
fn split(mut args: Args) -> (String, String) {
    let filter = makler::cli::log_filter(args.quiet, args.config.log_level.as_deref());
    args.quiet = false;
    args.config.log_level = None;
    (filter, format!("{args:?}"))
}
