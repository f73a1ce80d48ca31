//! `makler-server`: example servers that register at a broker. See `makler-server --help`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use makler::cli::AddrList;
use makler::client::{Announcer, AnnouncerConfig, Registrar, RegistrarConfig};
use makler::server::{self, Server, Service};
use makler::shutdown::Shutdown;

/// An example makler server: serves a small TCP service, registers it at a broker and keeps
/// the registration alive until it stops.
///
/// Services: `echo` returns each line, `upper` returns it in capitals, `time` returns the
/// current time (UTC, RFC 3339) for each line, `http` is a minimal HTTP/1.1 server
/// (keep-alive, Content-Length) whose body names the server that answered.
///
/// The first line on stdout is `listening tcp=IP:PORT`. SIGINT or SIGTERM deregisters and stops.
#[derive(Debug, Parser)]
#[command(version = makler::version!(), max_term_width = 100)]
struct Args {
    /// What to serve: echo, upper, time or http.
    #[arg(long)]
    service: Service,

    /// TCP address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Broker (or balancer control port) to register at; a comma-separated list fails over.
    /// Without it, the brokers are found on the multicast group (or, with --announce, the server
    /// only announces itself).
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    broker: Option<AddrList>,

    /// Announce the server on the multicast group (brokers listening there register it), and
    /// say goodbye when it stops.
    #[arg(long)]
    announce: bool,

    /// Seconds between announcements after the first three; keep it well inside the brokers' TTL.
    #[arg(long, value_name = "SECONDS", default_value = "1.5", value_parser = makler::cli::parse_seconds)]
    announce_interval: Duration,

    #[command(flatten)]
    multicast: makler::cli::MulticastArgs,

    /// Register under this name instead of the service's.
    #[arg(long, value_name = "NAME")]
    register_as: Option<String>,

    /// Simulated service time per request, in milliseconds (a worker is busy for that long).
    #[arg(long, value_name = "N", default_value_t = 0)]
    work_ms: u64,

    /// Worker threads, each serving many connections.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,

    /// Serve without registering anywhere.
    #[arg(long)]
    no_register: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    makler::cli::init_logging("makler-server", false);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("makler-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = server::Config {
        listen: args.listen,
        service: args.service,
        workers: args.workers.into(),
        work: Duration::from_millis(args.work_ms),
        ..server::Config::default()
    };
    let server = Server::bind(config).map_err(|e| format!("cannot listen on tcp {}: {e}", args.listen))?;
    let addr = server.local_addr();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening tcp={addr}")?;
    stdout.flush()?;
    drop(stdout);

    let shutdown = Shutdown::new();
    shutdown.on_signals()?;

    let name = args.register_as.unwrap_or_else(|| args.service.name().to_owned());
    // A wildcard listen address is no address to give clients: let the broker take the address
    // this process's datagrams come from.
    let ip = Some(addr.ip()).filter(|ip| !ip.is_unspecified());
    let multicast = args.multicast.config();
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
            let config = AnnouncerConfig { multicast, interval: args.announce_interval };
            log::info!("announcing {name} on multicast group {} on {}", multicast.group, multicast.interface);
            Some(Announcer::start(config, &name, ip, addr.port())?)
        }
    };
    let registered = if args.no_register || (args.announce && args.broker.is_none()) {
        None
    } else {
        let brokers = makler::cli::brokers_or_discover(args.broker.as_ref(), multicast.as_ref())?;
        let registrar = Registrar::start(&brokers, RegistrarConfig { log: true, ..RegistrarConfig::default() })?;
        let registration = registrar.register(&name, ip, addr.port())?;
        Some((registrar, registration))
    };

    server.run(&shutdown)?;
    if let Some(announcer) = announcer {
        announcer.stop();
        log::info!("said goodbye for {name}");
    }
    if let Some((registrar, registration)) = registered {
        drop(registration);
        registrar.shutdown();
        log::info!("deregistered {name}");
    }
    log::info!("stopped");
    Ok(())
}
