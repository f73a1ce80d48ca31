//! Load generation and measurement: the code behind `makler-load`.
//!
//! Every load loop here is bounded by a duration and a request count, and stops by itself.
//! Targets must be loopback addresses unless the caller explicitly allows others
//! ([`check_target`]).

pub mod peers;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
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
}

impl Measurement {
    /// Adds another run's figures, as if the runs had been one.
    pub fn add(&mut self, other: Measurement) {
        self.latencies.samples.extend(other.latencies.samples);
        self.elapsed += other.elapsed;
        self.lost += other.lost;
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
    fn only_loopback_targets_unless_allowed() {
        assert!(check_target("127.0.0.1:1".parse().unwrap(), false).is_ok());
        assert!(check_target("[::1]:1".parse().unwrap(), false).is_ok());
        assert!(check_target("10.0.0.1:1".parse().unwrap(), false).is_err());
        assert!(check_target("10.0.0.1:1".parse().unwrap(), true).is_ok());
    }
}
