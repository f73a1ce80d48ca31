//! `makler-broker`: the UDP service broker. See `makler-broker --help` and `protocol.md`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::builder::TypedValueParser;
use makler::broker::{self, Broker};
use makler::registry::{self, Limits};
use makler::shutdown::Shutdown;

/// The makler service broker: servers register the services they offer, clients ask where a
/// service lives.
///
/// Speaks a text protocol (try `echo 'query echo' | socat -t0.2 - UDP:127.0.0.1:7000`) and a
/// binary one; protocol.md describes both. The first line on stdout is `listening udp=IP:PORT`
/// with the address really bound; logs go to stderr (RUST_LOG filters them, e.g.
/// `RUST_LOG=makler=debug`). SIGINT or SIGTERM stops it; SIGHUP (`systemctl reload`) reloads the
/// settings that can change at run time (peers, bridges, policies, quotas, rate limits, watch
/// caps, checks) from the command line and its files, keeping the table (OPERATIONS.md).
///
/// It also listens on a multicast group (on the loopback interface unless --multicast-if names
/// another): servers announce themselves there, clients ask there where the brokers are, and
/// brokers find each other there as peers.
///
/// Several brokers run as one redundant service: give each the others with --peers (or let them
/// find each other on the multicast group). They replicate their tables, a restarted broker
/// catches up from the others, and an instance reported dead (`report SERVICE IP:PORT`) is
/// checked and removed everywhere. Brokers of separate networks can be bridged (--bridge): each
/// keeps its own table and asks the others for what it does not have.
///
/// With --dns it also answers DNS (UDP and TCP on that address) from the same table, so that
/// HAProxy, nginx, dig and any resolver find makler services: `_<service>._tcp.<domain>` SRV
/// and `<service>.<domain>` A/AAAA; the first line then shows ` dns=IP:PORT`.
///
/// With --mdns it speaks the LAN's own discovery language, multicast DNS (Bonjour, Avahi,
/// python-zeroconf), on that interface's link: every live service is advertised as
/// `<ip-port>._<service>._tcp.local` (by one broker of several), and with --mdns-import the
/// link's instances of those types become leases; imported instances are never advertised back.
///
/// Socket activation: a UDP socket passed by systemd (LISTEN_FDS, LISTEN_PID) replaces
/// --listen, so that datagrams sent while the broker restarts wait in it (dist/systemd has the
/// .socket unit); TCP listeners named `metrics` and `http` (LISTEN_FDNAMES) replace --metrics
/// and --http.
#[derive(Debug, Parser)]
#[command(name = "makler-broker", version = makler::version!(), max_term_width = 100)]
struct Args {
    /// UDP address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value_t = broker::DEFAULT_LISTEN, value_parser = makler::cli::parse_addr)]
    listen: SocketAddr,

    /// Seconds a registration lives after its last register or heartbeat (decimals allowed).
    #[arg(long, value_name = "SECONDS", default_value = "5", allow_negative_numbers = true, value_parser = makler::cli::parse_ttl)]
    ttl: Duration,

    /// Most instances the table holds; more registrations get `ERROR full`.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_instances,
          value_parser = clap::value_parser!(u32).range(1..=50_000_000).map(|n| n as usize))]
    max_instances: usize,

    /// Longest service name, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_name_len,
          value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from))]
    max_name_len: usize,

    /// Characters allowed in service names besides ASCII letters and digits.
    #[arg(long, value_name = "CHARS", default_value_t = Limits::default().name_punctuation)]
    name_chars: String,

    /// Longest request datagram accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = broker::DEFAULT_MAX_DATAGRAM,
          value_parser = clap::value_parser!(u16).range(64..=65507).map(usize::from))]
    max_datagram: usize,

    /// The other brokers of this redundant service, by the address clients use (this broker's
    /// own address may be in the list: the same list can go to every broker).
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    peers: Option<makler::cli::AddrList>,

    /// This broker's cluster: brokers on the multicast group take each other as peers only when
    /// their names match, so a test broker on the same network does not merge into production.
    /// Brokers given with --peers are peers whatever their name.
    #[arg(long, value_name = "NAME", default_value = makler::protocol::DEFAULT_CLUSTER,
          value_parser = parse_cluster)]
    cluster: String,

    /// Brokers of other networks (another site, another LAN) to ask for a service this broker
    /// does not have: a query that finds nothing here is passed to them (one hop, never further)
    /// and answered with their instances, or `NOT FOUND` after at most 300 ms. Their tables are
    /// not replicated: see protocol.md on bridges, and on which addresses such answers can be
    /// used from.
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    bridge: Option<makler::cli::AddrList>,

    /// Most watches (`watch SERVICE`: changes pushed to the watcher) in all. A watch starts only
    /// once the watcher echoes the cookie the broker answered with (so nobody can aim one at
    /// another address), and one address gets at most 256 KiB of notifications a second.
    #[arg(long, value_name = "N", default_value_t = makler::node::WatchConfig::default().max_total)]
    max_watches: usize,

    /// Most watches one source address may hold; 0: no limit.
    #[arg(long, value_name = "N", default_value_t = makler::node::WatchConfig::default().max_per_source)]
    max_watches_per_source: usize,

    /// Seconds between health checks of each registered instance that declares one
    /// (`check=tcp`: a connect; `check=http:<path>`: a GET, 2xx/3xx healthy; an instance
    /// registered without a check is never probed). Each instance is checked by one broker of
    /// the service; two failures in a row remove it everywhere. 0 turns them off.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_interval)]
    probe_interval: f64,

    /// Seconds a probe may take (a connect, and for an HTTP check its answer; health checks'
    /// and reports'). A reported instance whose connect is refused (or whose HTTP answer is not
    /// 2xx/3xx) is removed at once; one whose probe times out is
    /// probed again after 1 s and removed only if that times out too, so a black-holed instance
    /// goes 2 × this + 1 s after the report (7 s by default), and a slow one stays.
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = makler::cli::parse_seconds)]
    probe_timeout: Duration,

    // --max-per-source, --allow-register, --foreign-ip: shared with the balancer's control port.
    #[command(flatten)]
    register_policy: makler::cli::RegisterPolicyArgs,

    /// Most instances, and most watches, the addresses of one network (a /24 in IPv4, a /56 in
    /// IPv6) may hold together, so many addresses of one network cannot fill the table; 0: no
    /// limit. Once the table (or the watches) is 90% full, a source holding a sixteenth of its
    /// quota or more, or a network holding a sixteenth of this, is refused before a newcomer.
    #[arg(long, value_name = "N", default_value_t = makler::registry::DEFAULT_MAX_PER_NETWORK)]
    max_per_network: usize,

    /// Answer DNS on this address, over UDP and TCP (off unless given; e.g. 127.0.0.1:8600,
    /// Consul's port). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR", value_parser = makler::cli::parse_addr)]
    dns: Option<SocketAddr>,

    /// With --require-key all: answer unsigned DNS queries on --dns anyway. Without it, `all`
    /// holds on the DNS face too: only queries signed with TSIG (HMAC-SHA256, a secret derived
    /// from the key file, which `makler key dns --key-file PATH` prints for `dig -y`) are
    /// answered, and unsigned ones get REFUSED.
    #[arg(long, requires = "dns")]
    dns_unsealed: bool,

    /// The zone the DNS face answers for; names outside it are REFUSED.
    #[arg(long, value_name = "DOMAIN", default_value = makler::node::dns::DEFAULT_DOMAIN,
          value_parser = makler::node::dns::check_domain)]
    dns_domain: String,

    /// The TTL of DNS records, in seconds: 0 (the default, as Consul's) keeps resolvers from
    /// caching what changes within seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    dns_ttl: u32,

    #[command(flatten)]
    rate_limit: makler::cli::RateLimitArgs,

    /// Log only warnings and errors unless --log-level or RUST_LOG says otherwise (so not
    /// registrations, deregistrations and expiries; those stay out even then).
    #[arg(long, short)]
    quiet: bool,

    // --config, --check-config, --log-level.
    #[command(flatten)]
    config: makler::cli::ConfigArgs,

    #[command(flatten)]
    multicast: makler::cli::MulticastArgs,

    /// Advertise every live service on the link of this interface (an IPv4 address or a name)
    /// with mDNS (DNS-SD), as `<ip-port>._<service>._tcp.local`, so that Bonjour, Avahi and
    /// python-zeroconf browsers see them; with several brokers each instance is advertised by
    /// one (the one that checks it).
    #[arg(long, value_name = "IP|NAME", value_parser = makler::cli::parse_interface)]
    mdns: Option<std::net::Ipv4Addr>,

    /// Import these DNS-SD service types from the --mdns link (e.g. `_http._tcp,_ipp._tcp`):
    /// each instance found is a lease of the service named by its type (`_ipp._tcp` → `ipp`)
    /// for as long as mDNS holds it. Instances makler advertises are never imported.
    #[arg(long = "mdns-import", value_name = "TYPE[,TYPE…]", requires = "mdns",
          value_parser = makler::cli::parse_service_types)]
    mdns_import: Option<makler::cli::ServiceTypes>,

    /// Serve Prometheus metrics over HTTP on this TCP address (`GET /metrics`), e.g.
    /// 127.0.0.1:9100; port 0 picks a free port (the `listening` line shows it).
    #[arg(long, value_name = "ADDR", value_parser = makler::cli::parse_addr)]
    metrics: Option<SocketAddr>,

    /// Serve HTTP on this TCP address, e.g. 127.0.0.1:8500: `GET /metrics` (as --metrics), the
    /// JSON catalog (`/v1/services`, `/v1/services/NAME`, `/v1/peers`) and the status page at
    /// `/`; port 0 picks a free port (the `listening` line shows it as ` http=`).
    #[arg(long, value_name = "ADDR", value_parser = makler::cli::parse_addr)]
    http: Option<SocketAddr>,
}

fn main() -> ExitCode {
    // First, before any thread: it clears LISTEN_FDS and LISTEN_PID.
    let activated = makler::activation::Activated::from_env();
    // Next, so that a SIGHUP during start-up (`systemctl reload` at once) is kept for the
    // reload rather than end the process.
    let sighup = match makler::reload::Sighup::catch() {
        Ok(sighup) => sighup,
        Err(e) => {
            eprintln!("makler-broker: cannot catch SIGHUP: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Args = makler::cli::parse();
    // The log filter the start takes: a reload compares the file's with it.
    let filter = makler::cli::log_filter(args.quiet, args.config.log_level.as_deref());
    makler::cli::init_logging_at("makler-broker", &filter);
    let problems = problems(&args);
    if args.config.check_config {
        let problems: Vec<String> = problems.iter().cloned().chain(bind_problems(&args)).collect();
        return makler::cli::config::report_check("makler-broker", &problems);
    }
    // The broker's passed sockets: UDP for clients and servers (named `listen`, or any name),
    // TCP named `metrics` and `http`.
    let passed = match activated.and_then(|mut activated| {
        let passed = broker::Passed::take(&mut activated)?;
        for name in activated.unused() {
            log::warn!(
                "a passed socket named {name:?} is not used: the broker takes one UDP socket, and TCP listeners \
                 named metrics and http"
            );
        }
        Ok(passed)
    }) {
        Ok(passed) => passed,
        Err(e) => {
            eprintln!("makler-broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(problem) = problems.first() {
        eprintln!("makler-broker: {problem}");
        return ExitCode::from(makler::cli::exit::USAGE);
    }
    let config = match broker_config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("makler-broker: {e}");
            return ExitCode::from(makler::cli::exit::USAGE);
        }
    };
    match run(config, passed, (sighup, filter)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("makler-broker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The broker's settings from its flags (and config file): at start, and again on every
/// reload (SIGHUP), so that a reload reads them exactly as a start does.
fn broker_config(args: Args) -> Result<broker::Config, String> {
    if let Some(problem) = problems(&args).into_iter().next() {
        return Err(problem);
    }
    // Checked among the problems above.
    let require_key = args.register_policy.require_key(args.multicast.key_file.as_ref()).unwrap_or_default();
    Ok(broker::Config {
        listen: args.listen,
        registry: registry::Config {
            ttl: args.ttl,
            limits: Limits {
                max_name_len: args.max_name_len,
                name_punctuation: args.name_chars,
                max_instances: args.max_instances,
                max_per_source: args.register_policy.max_per_source,
                max_per_network: args.max_per_network,
            },
            ..registry::Config::default()
        },
        max_datagram: args.max_datagram,
        log_changes: !args.quiet,
        multicast: args.multicast.config(),
        replica: broker::ReplicaConfig {
            peers: args.peers.map(|list| list.0).unwrap_or_default(),
            discover: true,
            ..broker::ReplicaConfig::default()
        },
        rate_limit: args.rate_limit.config(),
        cluster: args.cluster,
        key: args.multicast.key_file,
        require_key,
        policy: args.register_policy.policy(),
        verify: broker::VerifyConfig {
            probe_interval: (args.probe_interval > 0.0).then(|| Duration::from_secs_f64(args.probe_interval)),
            probe_timeout: args.probe_timeout,
            ..broker::VerifyConfig::default()
        },
        dns_listen: args.dns,
        dns: broker::DnsConfig { domain: args.dns_domain, ttl: args.dns_ttl, unsealed: args.dns_unsealed },
        metrics: args.metrics,
        http: args.http,
        watches: makler::node::WatchConfig {
            max_total: args.max_watches,
            max_per_source: args.max_watches_per_source,
            max_per_network: args.max_per_network,
        },
        bridges: makler::node::BridgeConfig {
            bridges: args.bridge.map(|list| list.0).unwrap_or_default(),
            ..makler::node::BridgeConfig::default()
        },
        mdns: args.mdns,
        mdns_import: args.mdns_import.map(|types| types.0).unwrap_or_default(),
    })
}

/// What is wrong with the settings beyond what each flag's parser checks, before any socket is
/// bound: what `--check-config` reports, and what stops a start.
fn problems(args: &Args) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(bad) = args.name_chars.chars().find(|c| c.is_whitespace() || c.is_control()) {
        problems.push(format!("--name-chars may not hold white space or control characters ({bad:?})"));
    }
    if let Err(e) = args.register_policy.require_key(args.multicast.key_file.as_ref()) {
        problems.push(e);
    }
    problems
}

/// For `--check-config`: what `Broker::bind` refuses (exit 1) once it has opened its socket,
/// about this host's interfaces.
fn bind_problems(args: &Args) -> Vec<String> {
    let mut problems = Vec::new();
    problems.extend(args.multicast.interface_problem());
    if let Some(interface) = args.mdns {
        if makler::mdns::socket::link_network(interface).is_none() {
            problems.push(format!(
                "cannot use mDNS on {interface}: no interface has that address (its netmask is unknown)"
            ));
        }
    }
    problems
}

/// A number of seconds, or 0 for "off".
fn parse_interval(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(0.0) => Ok(0.0),
        _ => makler::cli::parse_seconds(text).map(|d| d.as_secs_f64()),
    }
}

/// `sighup`: SIGHUP caught since the start, and the log filter the start took.
fn run(
    config: broker::Config,
    passed: broker::Passed,
    sighup: (makler::reload::Sighup, String),
) -> std::io::Result<()> {
    let ttl = config.registry.ttl;
    if passed.udp.is_some() {
        log::info!("took the UDP socket the service manager passed (its address replaces --listen)");
    }
    for (name, taken) in [("metrics", passed.metrics.is_some()), ("http", passed.http.is_some())] {
        if taken {
            log::info!("took the TCP listener named {name} the service manager passed (it replaces --{name})");
        }
    }
    let mut broker = Broker::bind_with(config.clone(), passed)?;
    // Before the listening line, so that a SIGTERM sent as soon as it is read stops the broker
    // as any other does, and a SIGHUP reloads it rather than ending it.
    reload_on_sighup(sighup, config.clone(), broker.commands())?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let mut stdout = std::io::stdout().lock();
    let mut line = format!("listening udp={}", broker.local_addr());
    if let Some(dns) = broker.dns_addr() {
        line.push_str(&format!(" dns={dns}"));
    }
    if let Some(metrics) = broker.metrics_addr() {
        line.push_str(&format!(" metrics={metrics}"));
    }
    if let Some(http) = broker.http_addr() {
        line.push_str(&format!(" http={http}"));
    }
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    drop(stdout);
    log::info!("ttl {}s, at most {} instances", ttl.as_secs_f64(), config.registry.limits.max_instances);
    if let Some(dns) = broker.dns_addr() {
        log::info!("answering DNS for {} on udp and tcp {dns}, ttl {}s", config.dns.domain, config.dns.ttl);
        if config.require_key == makler::service::policy::RequireKey::All {
            if config.dns.unsealed {
                log::warn!("--require-key all, but the DNS face answers unsigned queries too (--dns-unsealed)");
            } else {
                log::info!(
                    "the DNS face answers only queries signed with TSIG key {} (makler key dns prints it for dig -y)",
                    makler::node::dns::tsig::KEY_NAME
                );
            }
        }
    }
    if let Some(multicast) = &config.multicast {
        log::info!("listening on multicast group {} on {}", multicast.group, multicast.interface);
        if config.cluster != makler::protocol::DEFAULT_CLUSTER {
            log::info!("cluster {}: brokers of other clusters on the group are ignored", config.cluster);
        }
    }
    let beyond_loopback = !broker.local_addr().ip().is_loopback()
        || config.multicast.as_ref().is_some_and(|m| !m.interface.is_loopback());
    if config.key.is_none() && beyond_loopback {
        log::warn!(
            "reachable beyond this host and no --key-file: anyone on the network can talk to this broker as a \
             peer and announce or say goodbye on the group"
        );
    }
    if !config.replica.peers.is_empty() {
        let peers: Vec<String> = config.replica.peers.iter().map(ToString::to_string).collect();
        log::info!("peers {}", peers.join(","));
    }
    if let Some(interface) = config.mdns {
        let import = if config.mdns_import.is_empty() { "nothing".to_owned() } else { config.mdns_import.join(",") };
        log::info!("mdns on {interface}: advertising this table's services, importing {import}");
    }
    if !config.bridges.bridges.is_empty() {
        let bridges: Vec<String> = config.bridges.bridges.iter().map(ToString::to_string).collect();
        log::info!("bridges {}", bridges.join(","));
    }

    broker.run(&shutdown)?;
    log::info!("stopped");
    Ok(())
}

/// Reloads on every SIGHUP (see [`reload`]).
fn reload_on_sighup(
    (sighup, filter): (makler::reload::Sighup, String),
    started: broker::Config,
    commands: makler::shell::Commands<makler::node::Command>,
) -> std::io::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // What the start chose (not the file read again now: it may have changed since).
    let mut level = makler::reload::LogLevel::new(filter);
    sighup.on_reload(move || reload(&argv, &started, &mut level, &commands))
}

/// SIGHUP: reads the command line and the `--config` file again, as a start would, and hands
/// the running broker what may change at run time; says which settings differ that cannot
/// (compared with `started`: those never change). A bad file or value changes nothing.
fn reload(
    argv: &[std::ffi::OsString],
    started: &broker::Config,
    level: &mut makler::reload::LogLevel,
    commands: &makler::shell::Commands<makler::node::Command>,
) {
    let new = makler::cli::config::reparse::<Args>(argv).and_then(|args| {
        let filter = makler::cli::log_filter(args.quiet, args.config.log_level.as_deref());
        let level_change = level.change_to(&filter)?;
        Ok((filter, level_change, broker_config(args)?))
    });
    let (filter, level_change, new) = match new {
        Ok(new) => new,
        Err(e) => return makler::reload::log_refused(&e),
    };
    for line in started.fixed_differences(&new) {
        log::warn!("reload: {line}");
    }
    let (reply, changes) = crossbeam_channel::bounded(1);
    let settings = Box::new(new.reloadable());
    if let Err(e) = commands.send(makler::node::Command::Reload { settings, reply: Some(reply) }) {
        return log::warn!("reload: {e}");
    }
    let taken = match changes.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(changes) => Some(changes),
        // The loop applies and logs them when it takes them; the log level, this thread's to
        // change, changes now all the same (see `LogLevel::finish`).
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            log::warn!("reload: the broker did not take the settings within 10 s");
            None
        }
        // SIGTERM came first: the loop ended with the command unread.
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            return log::warn!("reload: the broker stopped before it took the settings");
        }
    };
    level.finish(taken, filter, level_change);
}

/// `--cluster`: a name that reads the same in every log line.
fn parse_cluster(name: &str) -> Result<String, String> {
    makler::protocol::check_cluster_name(name).map(|()| name.to_owned())
}
