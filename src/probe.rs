//! Probing endpoints with TCP connects or HTTP checks, as a sans-IO state machine.
//!
//! A [`Prober`] owns no socket and reads no clock. Asked to probe an address (with a check: a
//! TCP connect, or an HTTP `GET` of a path), it queues a [`ProbeCmd::Start`] for the shell,
//! which connects without blocking, runs the check and reports the [`ProbeOutcome`]; the
//! prober keeps each probe's deadline (for the whole exchange) and aborts it when it passes. At
//! most one probe per address runs at a time (asking again while one runs joins it), and at most
//! `max_in_flight` run at once (more wait their turn), so a thousand reports of one endpoint
//! cost one connect, and a black-holed address costs one timeout, not one per caller. (A request
//! with another check while one runs joins it too: an address is probed once at a time.)
//!
//! A [`Schedule`] on top probes a set of targets periodically, each at its own phase of the
//! interval (so a large set is spread out, not probed in bursts), and turns results into
//! verdicts with hysteresis: a target is down after `fall` failures in a row and up again
//! after `rise` successes in a row (one unless [`Schedule::with_rise`] says otherwise; HAProxy's
//! `rise` and `fall`). The balancer's health checks and the broker's checks of registered
//! instances both use it.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use makler::probe::{Probe, Prober, ProberConfig};
//! use makler::core::{ProbeCmd, ProbeOutcome};
//!
//! let t0 = Instant::now();
//! let mut prober = Prober::new(ProberConfig { timeout: Duration::from_secs(1), max_in_flight: 8 });
//! let addr = "127.0.0.1:4000".parse().unwrap();
//! prober.probe(t0, addr);
//! prober.probe(t0, addr); // joins the first
//! let Some(ProbeCmd::Start { id, addr: target, .. }) = prober.poll_command() else { panic!() };
//! assert_eq!((target, prober.poll_command()), (addr, None));
//! prober.handle_outcome(t0, id, ProbeOutcome::Connected);
//! assert_eq!(prober.poll_result(), Some((addr, Probe::Alive)));
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::{ProbeCmd, ProbeId, ProbeOutcome};
use crate::protocol::Check;
use crate::protocol::check::SharedCheck;
use crate::timers::Timers;

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Something accepted the connection.
    Alive,
    /// The connection was refused or failed.
    Failed(io::ErrorKind),
    /// No answer before the deadline.
    TimedOut,
    /// This process could not try (out of file descriptors, say): no verdict on the target.
    Unknown,
}

impl Probe {
    /// Whether the probe says the target is dead.
    pub fn is_dead(self) -> bool {
        matches!(self, Probe::Failed(_) | Probe::TimedOut)
    }
}

/// A prober's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProberConfig {
    /// How long a connect may take before the target counts as dead.
    pub timeout: Duration,
    /// Probes running at once, at most.
    pub max_in_flight: usize,
}

impl Default for ProberConfig {
    fn default() -> Self {
        ProberConfig { timeout: Duration::from_secs(1), max_in_flight: 256 }
    }
}

/// Counters of a prober.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProberStats {
    /// Probes started.
    pub started: u64,
    /// Probes that found the target alive.
    pub alive: u64,
    /// Probes that found it dead (refused, failed or timed out).
    pub dead: u64,
    /// Requests that joined a probe already running or waiting for the same address.
    pub joined: u64,
}

/// The probe state machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Prober {
    config: ProberConfig,
    next_id: ProbeId,
    running: HashMap<ProbeId, (SocketAddr, Instant)>,
    by_addr: HashMap<SocketAddr, ProbeId>,
    deadlines: Timers<ProbeId>,
    waiting: VecDeque<(SocketAddr, SharedCheck)>,
    waiting_set: HashSet<SocketAddr>,
    commands: VecDeque<ProbeCmd>,
    results: VecDeque<(SocketAddr, Probe)>,
    stats: ProberStats,
    /// The TCP check [`Prober::probe`] runs.
    tcp: SharedCheck,
}

impl Prober {
    /// Probes started from now on may take `timeout` (a reload); running ones keep theirs.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.config.timeout = timeout;
    }

    /// A prober with nothing to do.
    pub fn new(config: ProberConfig) -> Self {
        Prober {
            config,
            next_id: 1,
            running: HashMap::new(),
            by_addr: HashMap::new(),
            deadlines: Timers::new(),
            waiting: VecDeque::new(),
            waiting_set: HashSet::new(),
            commands: VecDeque::new(),
            results: VecDeque::new(),
            stats: ProberStats::default(),
            tcp: SharedCheck::new(Check::Tcp),
        }
    }

    /// Probes `addr` with a TCP connect (or joins the probe of it that is running or waiting).
    /// Returns false when it joined.
    pub fn probe(&mut self, now: Instant, addr: SocketAddr) -> bool {
        let tcp = SharedCheck::clone(&self.tcp);
        self.probe_checked(now, addr, tcp)
    }

    /// Probes `addr` with `check` (or joins the probe of it that is running or waiting, whatever
    /// its check). Returns false when it joined.
    pub fn probe_checked(&mut self, now: Instant, addr: SocketAddr, check: SharedCheck) -> bool {
        if self.by_addr.contains_key(&addr) || self.waiting_set.contains(&addr) {
            self.stats.joined += 1;
            return false;
        }
        if self.running.len() < self.config.max_in_flight {
            self.start(now, addr, check);
        } else {
            self.waiting.push_back((addr, check));
            self.waiting_set.insert(addr);
        }
        true
    }

    /// Whether a probe of `addr` runs or waits.
    pub fn is_probing(&self, addr: SocketAddr) -> bool {
        self.by_addr.contains_key(&addr) || self.waiting_set.contains(&addr)
    }

    /// The next command for the shell.
    pub fn poll_command(&mut self) -> Option<ProbeCmd> {
        self.commands.pop_front()
    }

    /// The shell reports how probe `id` ended. Outcomes of probes that were aborted or never
    /// started are ignored.
    pub fn handle_outcome(&mut self, now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        let Some((addr, deadline)) = self.running.remove(&id) else { return };
        self.by_addr.remove(&addr);
        self.deadlines.remove(deadline, id);
        let probe = match outcome {
            ProbeOutcome::Connected => Probe::Alive,
            ProbeOutcome::Failed(kind) => Probe::Failed(kind),
            ProbeOutcome::Local(_) => Probe::Unknown,
        };
        self.finish(now, addr, probe);
    }

    /// Aborts the probes whose deadline has passed: their targets timed out.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.deadlines.pop_due(now) {
            if let Some((addr, _)) = self.running.remove(&id) {
                self.by_addr.remove(&addr);
                self.commands.push_back(ProbeCmd::Abort { id });
                self.finish(now, addr, Probe::TimedOut);
            }
        }
    }

    /// The next probe deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// The next finished probe.
    pub fn poll_result(&mut self) -> Option<(SocketAddr, Probe)> {
        self.results.pop_front()
    }

    /// Probes running now.
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// The counters.
    pub fn stats(&self) -> ProberStats {
        self.stats
    }

    fn start(&mut self, now: Instant, addr: SocketAddr, check: SharedCheck) {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = now + self.config.timeout;
        self.running.insert(id, (addr, deadline));
        self.by_addr.insert(addr, id);
        self.deadlines.insert(deadline, id);
        self.commands.push_back(ProbeCmd::Start { id, addr, check });
        self.stats.started += 1;
    }

    fn finish(&mut self, now: Instant, addr: SocketAddr, probe: Probe) {
        match probe {
            Probe::Alive => self.stats.alive += 1,
            Probe::Failed(_) | Probe::TimedOut => self.stats.dead += 1,
            Probe::Unknown => {}
        }
        self.results.push_back((addr, probe));
        while self.running.len() < self.config.max_in_flight {
            let Some((next, check)) = self.waiting.pop_front() else { break };
            self.waiting_set.remove(&next);
            self.start(now, next, check);
        }
    }
}

/// A change of a target's state, from [`Schedule::on_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It failed `fall` probes in a row.
    Down,
    /// It answered `rise` probes in a row after being down.
    Up,
}

#[derive(Debug, Clone)]
struct Target {
    next_at: Instant,
    failures: u32,
    /// Successes in a row while down.
    successes: u32,
    down: bool,
    check: SharedCheck,
}

/// Periodic probes of a set of targets, with hysteresis. See the [module documentation](self).
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    fall: u32,
    rise: u32,
    targets: HashMap<SocketAddr, Target>,
    timers: Timers<SocketAddr>,
    /// The check [`Schedule::add`] runs.
    tcp: SharedCheck,
}

impl Schedule {
    /// Probes each target every `interval`; `fall` failures in a row make it down.
    pub fn new(interval: Duration, fall: u32) -> Self {
        Schedule {
            interval,
            fall: fall.max(1),
            rise: 1,
            targets: HashMap::new(),
            timers: Timers::new(),
            tcp: SharedCheck::new(Check::Tcp),
        }
    }

    /// `rise` successes in a row (at least one) bring a target that is down up again.
    pub fn with_rise(mut self, rise: u32) -> Self {
        self.rise = rise.max(1);
        self
    }

    /// Adds a target checked with TCP connects (nothing when it is there). Its first probe
    /// comes at its own phase of the interval, from a hash of the address, so targets added
    /// together are spread out.
    pub fn add(&mut self, now: Instant, addr: SocketAddr) {
        let tcp = SharedCheck::clone(&self.tcp);
        self.add_checked(now, addr, tcp);
    }

    /// Adds a target checked with `check`, or changes the check of one that is there (its
    /// failures so far are forgotten then: they were another check's).
    pub fn add_checked(&mut self, now: Instant, addr: SocketAddr, check: SharedCheck) {
        if let Some(target) = self.targets.get_mut(&addr) {
            if target.check != check {
                target.check = check;
                target.failures = 0;
            }
            return;
        }
        let next_at = now + self.phase(addr);
        self.targets.insert(addr, Target { next_at, failures: 0, successes: 0, down: false, check });
        self.timers.insert(next_at, addr);
    }

    /// Stops probing a target.
    pub fn remove(&mut self, addr: SocketAddr) {
        if let Some(target) = self.targets.remove(&addr) {
            self.timers.remove(target.next_at, addr);
        }
    }

    /// Whether `addr` is a target.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.targets.contains_key(&addr)
    }

    /// The failures in a row of the target `addr` (`None`: not a target), for people to see
    /// (the HTTP catalog's `check_state`).
    pub fn failures(&self, addr: SocketAddr) -> Option<u32> {
        self.targets.get(&addr).map(|target| target.failures)
    }

    /// How many targets there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Asks `prober` to probe every target that is due, and schedules its next probe.
    pub fn handle_timeout(&mut self, now: Instant, prober: &mut Prober) {
        while let Some(addr) = self.timers.pop_due(now) {
            let Some(target) = self.targets.get_mut(&addr) else { continue };
            // The next round keeps the phase; a loop that woke late does not probe twice.
            while target.next_at <= now {
                target.next_at += self.interval;
            }
            self.timers.insert(target.next_at, addr);
            prober.probe_checked(now, addr, SharedCheck::clone(&target.check));
        }
    }

    /// When the next target is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Takes a probe's result for `addr`; returns a verdict when the target's state changes.
    /// Results for addresses that are not targets are ignored.
    pub fn on_result(&mut self, addr: SocketAddr, probe: Probe) -> Option<Verdict> {
        let target = self.targets.get_mut(&addr)?;
        match probe {
            Probe::Alive => {
                target.failures = 0;
                if !target.down {
                    return None;
                }
                target.successes += 1;
                (target.successes >= self.rise).then(|| {
                    (target.down, target.successes) = (false, 0);
                    Verdict::Up
                })
            }
            Probe::Failed(_) | Probe::TimedOut => {
                target.successes = 0;
                target.failures += 1;
                (target.failures >= self.fall && !std::mem::replace(&mut target.down, true)).then_some(Verdict::Down)
            }
            Probe::Unknown => None,
        }
    }

    /// Takes a target as down or up because something else said so (a balancer's failed
    /// connect, say): from then on its verdicts count from that state, `rise` successes or
    /// `fall` failures in a row. Nothing when it is so already.
    pub fn set_down(&mut self, addr: SocketAddr, down: bool) {
        if let Some(target) = self.targets.get_mut(&addr) {
            if target.down != down {
                (target.down, target.failures, target.successes) = (down, 0, 0);
            }
        }
    }

    /// Probes every `interval` from now on, with new `rise` and `fall` (a reload): each target
    /// keeps its check, its state and its counts, and is next probed at its own phase of the
    /// new interval. With the same interval, each target keeps its time too (a reload of `rise`
    /// or `fall` alone moves no probe).
    pub fn retime(&mut self, now: Instant, interval: Duration, rise: u32, fall: u32) {
        (self.rise, self.fall) = (rise.max(1), fall.max(1));
        if interval == self.interval {
            return;
        }
        self.interval = interval;
        let addrs: Vec<SocketAddr> = self.targets.keys().copied().collect();
        for addr in addrs {
            let next_at = now + self.phase(addr);
            if let Some(target) = self.targets.get_mut(&addr) {
                self.timers.remove(target.next_at, addr);
                target.next_at = next_at;
                self.timers.insert(next_at, addr);
            }
        }
    }

    /// Whether a target is down now.
    pub fn is_down(&self, addr: SocketAddr) -> bool {
        self.targets.get(&addr).is_some_and(|t| t.down)
    }

    /// Where in the interval `addr` is probed: FNV-1a over the address, scaled to the interval.
    fn phase(&self, addr: SocketAddr) -> Duration {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(ip) => ip.octets(),
        };
        for byte in bytes.into_iter().chain(addr.port().to_be_bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        let nanos = u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(hash % nanos)
    }
}

#[cfg(test)]
mod tests;
