//! Tables of results, as `makler-load udp` and `makler-load query` print them.

use std::io::{self, Write};
use std::time::Duration;

use crate::bench::{BrokerBench, BrokerReport, headline};
use crate::micros;
use crate::rounds::TargetResult;

/// The machine's state, for the header of a benchmark's output: cores and load average (the
/// other work that shares the machine).
pub fn machine_note() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores, load average {load} (1, 5, 15 min)")
}

fn cpu(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e6))
}

/// The header of [`write_results`].
pub fn write_header(out: &mut dyn Write, reference: &str) -> io::Result<()> {
    writeln!(
        out,
        "{:<18} {:>11} {:>8} {:>8} {:>8} {:>6} {:>5} {:>6} {:>8} {:>8}  ÷ {reference} (median of rounds, range)",
        "run", "requests/s", "p50 µs", "p90 µs", "p99 µs", "lost", "bad", "bytes", "cli µs", "srv µs"
    )
}

/// One row per result: rate, latency percentiles, losses, wrong replies, mean reply size, CPU
/// per reply of the generator (cli) and of the answering process (srv), and the ratio to the
/// first result, round by round.
pub fn write_results(out: &mut dyn Write, results: &[TargetResult]) -> io::Result<()> {
    let Some(reference) = results.first() else { return Ok(()) };
    for r in results {
        let s = r.total.clone().summary();
        let (median, low, high) = r.ratio_to(reference);
        writeln!(
            out,
            "{:<18} {:>11.0} {:>8} {:>8} {:>8} {:>6} {:>5} {:>6.0} {:>8} {:>8}  {median:.2} ({low:.2}–{high:.2})",
            r.label,
            s.rate,
            micros(s.p50),
            micros(s.p90),
            micros(s.p99),
            s.lost,
            r.total.bad,
            r.total.mean_reply_bytes(),
            cpu(r.client_cpu_per_reply),
            cpu(r.server_cpu_per_reply),
        )?;
    }
    Ok(())
}

/// The whole report of `makler-load udp`.
pub fn write_broker_report(out: &mut dyn Write, config: &BrokerBench, report: &BrokerReport) -> io::Result<()> {
    for shape in &report.shapes {
        let s = shape.shape;
        writeln!(
            out,
            "\n{} client thread{} × {} in flight ({} in all):",
            s.threads,
            if s.threads == 1 { "" } else { "s" },
            s.window,
            s.in_flight()
        )?;
        write_header(out, "echo")?;
        write_results(out, &shape.results)?;
    }
    if report.shapes.len() > 1 {
        writeln!(out, "\nrequests/s by client threads × requests in flight per thread:")?;
        write!(out, "{:<18}", "run")?;
        for shape in &report.shapes {
            write!(out, " {:>9}", format!("{}×{}", shape.shape.threads, shape.shape.window))?;
        }
        writeln!(out)?;
        for (i, first) in report.shapes[0].results.iter().enumerate() {
            write!(out, "{:<18}", first.label)?;
            for shape in &report.shapes {
                write!(out, " {:>9.0}", shape.results[i].total.rate())?;
            }
            writeln!(out)?;
        }
    }

    // With --memory-only, no table was registered for measured runs.
    if !config.memory_only {
        let p = report.populate.clone().summary();
        writeln!(
            out,
            "\nfirst registrations ({} new instances, binary, 1 thread × 8 in flight): {:.0}/s, p99 {} µs",
            config.instances,
            p.rate,
            micros(p.p99)
        )?;
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if let Some(h) = headline(report) {
        let find = |label: &str| h.results.iter().find(|r| r.label == label);
        let shape = format!("{}×{}", h.shape.threads, h.shape.window);
        if let (Some(echo), Some(query)) = (find("udp echo"), find("query binary")) {
            let (ratio, low, high) = query.ratio_to(echo);
            writeln!(
                out,
                "query binary / echo at {shape}: {ratio:.2} ({low:.2}–{high:.2}) (target >= 0.80: {})",
                verdict(ratio >= 0.8)
            )?;
            let p99 = query.total.clone().summary().p99;
            writeln!(
                out,
                "query p99 {} µs (target < 1000 µs: {})",
                micros(p99),
                verdict(p99 < Duration::from_millis(1))
            )?;
        }
        for label in ["heartbeat binary", "heartbeat text"] {
            if let Some(r) = find(label) {
                let rate = r.total.rate();
                writeln!(out, "{label} {rate:.0}/s at {shape} (target >= 100000/s: {})", verdict(rate >= 100_000.0))?;
            }
        }
    }
    let per = |rss: u64| rss.saturating_sub(report.rss_empty) as f64 / config.rss_instances as f64;
    let per_instance = per(report.rss_full);
    writeln!(
        out,
        "broker RSS {:.1} MiB empty, {:.1} MiB with {} instances over {} services: {per_instance:.0} bytes/instance (target <= 250: {})",
        report.rss_empty as f64 / 1048576.0,
        report.rss_full as f64 / 1048576.0,
        config.rss_instances,
        config.rss_types,
        verdict(per_instance <= 250.0)
    )?;
    let peak = report.rss_peak as f64 / report.rss_full.max(1) as f64;
    writeln!(
        out,
        "broker RSS at its peak while registering {:.1} MiB ({:.0} bytes/instance): {peak:.3} × steady (target <= 1.1: {})",
        report.rss_peak as f64 / 1048576.0,
        per(report.rss_peak),
        verdict(peak <= 1.1)
    )?;
    writeln!(
        out,
        "broker RSS after a text query per service {:.1} MiB ({:.0} bytes/instance): {:+.1} MiB (queries add nothing: {})",
        report.rss_queried as f64 / 1048576.0,
        per(report.rss_queried),
        (report.rss_queried as f64 - report.rss_full as f64) / 1048576.0,
        // Within a page or two per thousand services of the allocator's rounding.
        verdict(report.rss_queried <= report.rss_full + 64 * 1024)
    )
}
