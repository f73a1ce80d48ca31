//! Load generation and measurement: the code behind `makler-load`.
//!
//! A package of its own in makler's workspace (never published), not part of the makler
//! library's API: `cargo build` and `cargo test` at the top build and test it, and
//! `cargo install --path .` installs makler's programs without it. Its programs find makler's
//! (`makler-broker`) beside their own executable, where the workspace builds them.
//!
//! Every load loop here is bounded by a duration and a request count, and stops by itself.
//! Targets must be loopback addresses unless the caller explicitly allows others
//! ([`check_target`]).
//!
//! - [`udp`]: request/response load over UDP with a window in flight, from one or several
//!   threads, for any [`udp::Workload`]; [`wire`] (the broker's binary and text forms),
//!   [`dns`] (SRV queries with `hickory-proto`) and the echo reference are workloads.
//! - [`rounds`]: several targets measured in alternating rounds, with ratios round by round.
//! - [`bench`](mod@bench): `makler-load udp`, the broker against a minimal echo in a process of its own
//!   ([`echo`], started and stopped by a [`child`] guard), reported by [`report`].
//! - [`compare`]: `makler-load query`, the broker's queries next to a DNS server's.
//! - [`peers`]: `makler-load peers`, three brokers replicating on loopback.
//! - [`cluster`]: `makler-load cluster`, peer traffic, convergence and catch-up at 3 to 15
//!   brokers: real processes on loopback ([`cluster_real`]), and the library's nodes on a
//!   simulated network ([`cluster_sim`]).
//! - [`tcp`]: TCP and HTTP load with connections.

pub mod bench;
pub mod child;
pub mod cluster;
pub mod cluster_real;
pub mod cluster_sim;
pub mod compare;
pub mod dns;
pub mod echo;
pub mod peers;
pub mod report;
pub mod rounds;
pub mod tcp;
pub mod udp;
pub mod watches;
pub mod wire;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Refuses targets off this host unless `allow_remote` is set, so a mistyped address cannot
/// turn a benchmark into a flood on somebody else's network.
pub fn check_target(target: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if target.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!("{target} is not a loopback address; pass --allow-remote to load it anyway"))
    }
}

/// Latencies of completed requests, summarised as rates and percentiles.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    /// Records one request's latency.
    pub fn record(&mut self, latency: Duration) {
        self.samples.push(latency);
    }

    /// How many requests completed.
    pub fn count(&self) -> usize {
        self.samples.len()
    }

    /// Summarises the samples taken over `elapsed`.
    pub fn summary(mut self, elapsed: Duration, lost: u64) -> Summary {
        self.samples.sort_unstable();
        let pick = |p: f64| -> Duration {
            if self.samples.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((p * self.samples.len() as f64).ceil() as usize).clamp(1, self.samples.len());
            self.samples[rank - 1]
        };
        Summary {
            completed: self.samples.len() as u64,
            lost,
            rate: self.samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50: pick(0.50),
            p90: pick(0.90),
            p99: pick(0.99),
        }
    }
}

/// The raw result of one or more load runs: every latency, the time they took, the losses.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// Latencies of the answered requests.
    pub latencies: Latencies,
    /// Time spent running.
    pub elapsed: Duration,
    /// Requests given up on.
    pub lost: u64,
    /// Replies that came back but were wrong (an error, a refusal, a malformed answer).
    pub bad: u64,
    /// Bytes of all the good replies.
    pub reply_bytes: u64,
}

impl Measurement {
    /// Adds a later run's figures, as if the runs had been one (the times add up).
    pub fn add(&mut self, other: Measurement) {
        self.elapsed += other.elapsed;
        self.merge_counts(other);
    }

    /// Adds the figures of a run that went on at the same time (another client thread): the
    /// time is the longer of the two.
    pub fn add_parallel(&mut self, other: Measurement) {
        self.elapsed = self.elapsed.max(other.elapsed);
        self.merge_counts(other);
    }

    fn merge_counts(&mut self, other: Measurement) {
        self.latencies.samples.extend(other.latencies.samples);
        self.lost += other.lost;
        self.bad += other.bad;
        self.reply_bytes += other.reply_bytes;
    }

    /// Good replies per second.
    pub fn rate(&self) -> f64 {
        self.latencies.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Mean size of a good reply, in bytes.
    pub fn mean_reply_bytes(&self) -> f64 {
        self.reply_bytes as f64 / self.latencies.count().max(1) as f64
    }

    /// Rates and percentiles.
    pub fn summary(self) -> Summary {
        self.latencies.summary(self.elapsed, self.lost)
    }
}

/// What one load run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Requests answered.
    pub completed: u64,
    /// Requests given up on after their timeout.
    pub lost: u64,
    /// Answered requests per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 90th percentile latency.
    pub p90: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Formats a duration in microseconds with one decimal.
pub fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// The median of `values` and their range (lowest, highest); zeros for an empty list.
pub fn median_range(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    (median, sorted[0], sorted[n - 1])
}

/// CPU time (user and system) this process has used so far, from `/proc/self/stat`, in clock
/// ticks of 10 ms; `None` where there is no such file.
pub fn cpu_time() -> Option<Duration> {
    process_cpu_time("self")
}

/// CPU time (user and system) process `pid` has used so far, from `/proc/PID/stat`.
pub fn process_cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces; the fields after it are numbers.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Says which executable is measured: its path, size, modification time and the git commit of
/// the work tree it lies in (with `+changes` when files tracked there differ from it), so that
/// a figure can be traced to the code that produced it. The commit is the work tree's: an
/// executable built before a later commit says so only by its age, so build before measuring.
pub fn describe_binary(path: &Path) -> String {
    let meta = std::fs::metadata(path);
    let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let age = meta
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or_else(|| "?".to_owned(), |d| format!("{:.0} s ago", d.as_secs_f64()));
    let dir = path.parent().unwrap_or(Path::new("."));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit =
        match (git(&["rev-parse", "--short=12", "HEAD"]), git(&["status", "--porcelain", "--untracked-files=no"])) {
            (Some(commit), Some(changes)) if !changes.is_empty() => format!("work tree at commit {commit}+changes"),
            (Some(commit), _) => format!("work tree at commit {commit}"),
            (None, _) => "no git work tree".to_owned(),
        };
    format!("{} ({size} bytes, built {age}; {commit})", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut l = Latencies::default();
        for us in 1..=100 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary(Duration::from_secs(2), 3);
        assert_eq!((s.completed, s.lost), (100, 3));
        assert_eq!(s.rate, 50.0);
        assert_eq!(s.p50, Duration::from_micros(50));
        assert_eq!(s.p90, Duration::from_micros(90));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(Latencies::default().summary(Duration::from_secs(1), 0).p99, Duration::ZERO);
    }

    #[test]
    fn median_and_range() {
        assert_eq!(median_range(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_range(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(median_range(&[]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_time().is_some());
    }

    #[test]
    fn only_loopback_targets_unless_allowed() {
        assert!(check_target("127.0.0.1:1".parse().unwrap(), false).is_ok());
        assert!(check_target("[::1]:1".parse().unwrap(), false).is_ok());
        assert!(check_target("10.0.0.1:1".parse().unwrap(), false).is_err());
        assert!(check_target("10.0.0.1:1".parse().unwrap(), true).is_ok());
    }
}
