//! The balancer's health checks, and the bound on how many of them go toward one address.
//!
//! Every backend is probed with a TCP connect each interval (the [`Schedule`] spreads them over
//! it; the [`Prober`] runs them). Backends are registered by whoever reaches the control port, so
//! without a bound 3,000 "backends" registered at one victim's address, each at another port,
//! would make the balancer a SYN source toward it (1,500 connects a second at the default
//! interval). So at most [`MAX_PROBES_PER_IP`] probes a second go toward any one IP address: a
//! probe beyond is not sent, is counted (`probes_skipped`), and gives no verdict, so its backend
//! stays as it was until a later round's probe gets through. A legitimate host of backends is
//! far below the bound (200 backends on one address at the default 2 s interval reach it).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::core::{ProbeCmd, ProbeOutcome};
use crate::probe::{Prober, ProberConfig, Schedule};

/// Health probes toward one IP address, at most, per second ([`WINDOW`]).
pub(crate) const MAX_PROBES_PER_IP: u32 = 100;

/// The window [`MAX_PROBES_PER_IP`] counts in.
const WINDOW: Duration = Duration::from_secs(1);

/// Addresses whose windows are kept before the stale ones are dropped.
const KEEP_WINDOWS: usize = 4096;

/// How often, at most, a warning says that probes are being skipped.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Health checks: every backend probed each interval (a TCP connect, or the HTTP `GET` it
/// declared, 2xx or 3xx healthy); `fall` failures in a row take it out of rotation, `rise`
/// successes in a row bring it back (HAProxy's semantics). A backend the forwarding threads
/// marked down (a failed connect) needs `rise` successes too.
pub(crate) struct Health {
    pub prober: Prober,
    pub schedule: Schedule,
    /// Probes sent toward each address in its current window: (window start, count).
    windows: HashMap<IpAddr, (Instant, u32)>,
    /// The prober's commands that passed the bound, for the shell.
    ready: VecDeque<ProbeCmd>,
    /// Probes not sent because of the bound, since start.
    skipped: u64,
    warned_at: Option<Instant>,
    /// Written before every HTTP check's `GET`: the PROXY `LOCAL` header under `--send-proxy`.
    pub preamble: Vec<u8>,
}

impl Health {
    /// Checks every `interval`, each given `timeout` (at most the interval); `rise` checks in a
    /// row bring a backend marked down up, `fall` failed ones mark it down.
    pub fn new(interval: Duration, timeout: Duration, rise: u32, fall: u32) -> Self {
        let prober = Prober::new(ProberConfig { timeout: timeout.min(interval), max_in_flight: 1024 });
        Health {
            prober,
            schedule: Schedule::new(interval, fall).with_rise(rise),
            windows: HashMap::new(),
            ready: VecDeque::new(),
            skipped: 0,
            warned_at: None,
            preamble: Vec::new(),
        }
    }

    /// Passes the prober's new commands on to the shell, except probes toward an address that
    /// has had [`MAX_PROBES_PER_IP`] in the current second: those end at once with no verdict
    /// (a local outcome), which may start probes that were waiting, judged in turn. Call it after
    /// anything that may make the prober start probes. Returns how many were skipped.
    pub fn gate(&mut self, now: Instant) -> u64 {
        let mut skipped = 0;
        while let Some(command) = self.prober.poll_command() {
            match command {
                ProbeCmd::Start { id, addr, .. } if !self.allow(now, addr.ip()) => {
                    skipped += 1;
                    self.prober.handle_outcome(now, id, ProbeOutcome::Local(std::io::ErrorKind::WouldBlock));
                    if self.warned_at.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
                        self.warned_at = Some(now);
                        log::warn!(
                            "health checks toward {} exceed {MAX_PROBES_PER_IP} a second: skipping the rest (counted \
                             in probes_skipped; too many backends registered at one address?)",
                            addr.ip()
                        );
                    }
                }
                command => self.ready.push_back(command),
            }
        }
        self.skipped += skipped;
        skipped
    }

    /// The next command for the shell.
    pub fn poll_command(&mut self) -> Option<ProbeCmd> {
        self.ready.pop_front()
    }

    /// Probes not sent because of the bound, since start.
    #[cfg(test)]
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether one more probe may go toward `ip` now; counts it if so.
    fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.windows.len() >= KEEP_WINDOWS && !self.windows.contains_key(&ip) {
            self.windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = self.windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= MAX_PROBES_PER_IP {
            return false;
        }
        *count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    /// 3,000 backends at one address, probed every 2 s: at most 100 connects a second reach it,
    /// the rest are counted as skipped, and backends at another address are not held back.
    #[test]
    fn probes_toward_one_address_are_bounded_per_second() {
        let t0 = Instant::now();
        let mut health = Health::new(Duration::from_secs(2), Duration::from_millis(500), 1, 1);
        let victim = |port: u16| SocketAddr::from(([10, 0, 0, 66], port));
        for port in 1..=3000 {
            health.schedule.add(t0, victim(port));
        }
        let other = SocketAddr::from(([10, 0, 0, 7], 80));
        health.schedule.add(t0, other);
        let mut sent_per_second = vec![0u32; 10];
        let mut other_probed = 0;
        let mut now = t0;
        // Ten seconds in steps of 10 ms; every probe is refused at once.
        while now < t0 + Duration::from_secs(10) {
            health.prober.handle_timeout(now);
            health.schedule.handle_timeout(now, &mut health.prober);
            health.gate(now);
            while let Some(command) = health.poll_command() {
                if let ProbeCmd::Start { id, addr, .. } = command {
                    if addr == other {
                        other_probed += 1;
                    } else {
                        sent_per_second[now.duration_since(t0).as_secs() as usize] += 1;
                    }
                    health.prober.handle_outcome(now, id, ProbeOutcome::Failed(std::io::ErrorKind::ConnectionRefused));
                    health.gate(now);
                }
            }
            while health.prober.poll_result().is_some() {}
            now += Duration::from_millis(10);
        }
        assert!(sent_per_second.iter().all(|&n| n <= MAX_PROBES_PER_IP), "{sent_per_second:?}");
        assert!(sent_per_second.iter().all(|&n| n >= MAX_PROBES_PER_IP / 2), "still probed: {sent_per_second:?}");
        let sent: u64 = sent_per_second.iter().map(|&n| u64::from(n)).sum();
        // 1,500 due a second for ten seconds (less the few whose fifth round falls in the last
        // step): what was not sent was counted.
        let due = sent + health.skipped();
        assert!((14_900..=15_000).contains(&due), "sent {sent}, skipped {}", health.skipped());
        assert_eq!(other_probed, 5, "the other address is probed every round");
    }
}
