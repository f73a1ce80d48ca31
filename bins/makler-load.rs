//! `makler-load`: load generator and benchmarks for makler. See `makler-load --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use makler::load::udp::{BrokerBench, BrokerReport, bench_broker};
use makler::load::{Summary, micros};

/// Load generator for makler: measures the broker (and, side by side, a reference) on loopback.
///
/// Every run is bounded in time and count and stops by itself.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Broker benchmark: queries/s, p50/p99 and heartbeats/s against a fresh broker holding
    /// INSTANCES over TYPES, next to a plain UDP echo server given the same datagrams; then the
    /// broker's memory per instance with RSS_INSTANCES registered.
    Udp {
        /// Instances registered for the query and heartbeat runs.
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        /// Services the instances are spread over.
        #[arg(long, default_value_t = 1_000)]
        types: usize,
        /// Instances registered for the memory figure.
        #[arg(long, default_value_t = 100_000)]
        rss_instances: usize,
        /// Seconds each run lasts.
        #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = makler::cli::parse_seconds)]
        duration: Duration,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// How many times the echo and query runs alternate (each lasting DURATION / ROUNDS), so
        /// that the machine's changing speed affects both alike.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
        /// The makler-broker executable (default: the one next to this program).
        #[arg(long, value_name = "PATH")]
        broker_bin: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Udp { instances, types, rss_instances, duration, window, rounds, broker_bin } => {
            if types == 0 || instances < types || rss_instances < instances {
                eprintln!("makler-load: need 0 < --types <= --instances <= --rss-instances");
                return ExitCode::from(2);
            }
            let broker_bin = match broker_bin.map_or_else(sibling_broker, Ok) {
                Ok(path) => path,
                Err(e) => {
                    eprintln!("makler-load: cannot find makler-broker: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let config = BrokerBench { broker_bin, instances, types, rss_instances, duration, window, rounds };
            println!(
                "makler-load udp: broker with {instances} instances over {types} types, window {window}, {:.1} s per run",
                duration.as_secs_f64()
            );
            match bench_broker(&config) {
                Ok(report) => {
                    print_report(&config, &report);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("makler-load: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn sibling_broker() -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("makler-broker"))
}

fn print_report(config: &BrokerBench, r: &BrokerReport) {
    println!("{:<18} {:>12} {:>9} {:>9} {:>9} {:>6}", "run", "requests/s", "p50 µs", "p90 µs", "p99 µs", "lost");
    let row = |name: &str, s: &Summary| {
        println!(
            "{name:<18} {:>12.0} {:>9} {:>9} {:>9} {:>6}",
            s.rate,
            micros(s.p50),
            micros(s.p90),
            micros(s.p99),
            s.lost
        );
    };
    row("udp echo", &r.echo);
    row("broker query", &r.query);
    row("broker heartbeat", &r.heartbeat);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let ratio = r.ratio();
    println!("query/echo ratio {ratio:.2} (target >= 0.80: {})", verdict(ratio >= 0.8));
    let p99 = r.query.p99;
    println!("query p99 {} µs (target < 1000 µs: {})", micros(p99), verdict(p99 < Duration::from_millis(1)));
    println!("heartbeats {:.0}/s (target >= 100000/s: {})", r.heartbeat.rate, verdict(r.heartbeat.rate >= 100_000.0));
    let per_instance = r.rss_full.saturating_sub(r.rss_empty) as f64 / config.rss_instances as f64;
    println!(
        "broker RSS {:.1} MiB empty, {:.1} MiB with {} instances: {per_instance:.0} bytes/instance (target <= 256: {})",
        r.rss_empty as f64 / 1048576.0,
        r.rss_full as f64 / 1048576.0,
        config.rss_instances,
        verdict(per_instance <= 256.0)
    );
}
