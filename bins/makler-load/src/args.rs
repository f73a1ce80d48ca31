//! The command line of `makler-load`: its subcommands and their settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use makler_load::bench;
use makler_load::compare::TargetSpec;

/// Load generator for makler: measures the broker, the balancer and their references.
///
/// Every run is bounded in time and count and stops by itself. Targets must be loopback
/// addresses unless --allow-remote is given.
#[derive(Debug, Parser)]
#[command(name = "makler-load", version = makler::version!(), max_term_width = 100)]
pub(crate) struct Args {
    /// Log only warnings and errors unless RUST_LOG says otherwise.
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
        #[arg(long, value_name = "ADDR", value_parser = makler::cli::parse_addr)]
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
        /// Services the memory figure's instances are spread over (default: --types).
        #[arg(long)]
        rss_types: Option<usize>,
        /// Only the memory figure: no measured runs.
        #[arg(long)]
        memory_only: bool,
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
    /// Cluster benchmark: INSTANCES registered at the first of N brokers and heartbeated there
    /// every TTL/3; per N and size, the peer bytes per broker per second, the keep-alive bytes
    /// per instance per TTL at each other broker, a register's and a removal's convergence
    /// (p50/p99) and a restarted broker's catch-up, as a table, then per-broker traffic
    /// against 3 brokers. Real broker processes on loopback for --brokers, the library's nodes
    /// on a simulated network and clock for --sim-brokers.
    Cluster {
        /// Cluster sizes run as real makler-broker processes on loopback (`none`: none).
        #[arg(long, value_name = "N,N,…", default_value = "3,5", value_parser = makler_load::cluster::parse_brokers)]
        brokers: std::vec::Vec<usize>,
        /// Cluster sizes simulated (`none`: none).
        #[arg(long, value_name = "N,N,…", default_value = "3,5,9,15", value_parser = makler_load::cluster::parse_brokers)]
        sim_brokers: std::vec::Vec<usize>,
        /// Table sizes.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        sizes: Vec<usize>,
        /// Services the instances are spread over.
        #[arg(long, default_value_t = 1_000)]
        types: usize,
        /// The brokers' TTL; instances heartbeat every third of it.
        #[arg(long, value_name = "SECONDS", default_value = "6", value_parser = makler::cli::parse_seconds)]
        ttl: Duration,
        /// Seconds of heartbeats before the traffic is measured.
        #[arg(long, value_name = "SECONDS", default_value = "6", value_parser = makler::cli::parse_seconds)]
        settle: Duration,
        /// Seconds over which the traffic is measured.
        #[arg(long, value_name = "SECONDS", default_value = "12", value_parser = makler::cli::parse_seconds)]
        window: Duration,
        /// Samples of each convergence (a register, then its removal).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        samples: u32,
        /// The simulation's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
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
        /// `[LABEL:]PROTOCOL=ADDR[/PID,…]`, PROTOCOL one of dns, binary, text, echo (a `makler-load echo-server`, judged as in `makler-load udp`); repeat for more
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
        #[arg(long, value_name = "ADDR", value_parser = makler::cli::parse_addr)]
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
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = makler::cli::parse_addr)]
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
pub(crate) struct LoadArgs {
    /// Where to connect.
    #[arg(long, value_name = "ADDR", value_parser = makler::cli::parse_addr)]
    pub(crate) target: SocketAddr,
    /// Connections open at once.
    #[arg(long, short, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) connections: u32,
    /// Seconds to run (at most an hour).
    #[arg(long, short, value_name = "SECONDS", default_value = "10", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
    pub(crate) duration: Duration,
    /// keepalive: many requests per connection; close: a new connection per request.
    #[arg(long, value_enum, default_value_t = ModeArg::Keepalive)]
    pub(crate) mode: ModeArg,
    /// Threads to spread the connections over.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) threads: u16,
    /// Stop after this many requests even if time is left.
    #[arg(long, default_value_t = 100_000_000)]
    pub(crate) max_requests: u64,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// A name for this run in the result (for tables of several runs).
    #[arg(long, default_value = "")]
    pub(crate) label: String,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub(crate) allow_remote: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ModeArg {
    Keepalive,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Csv,
}
