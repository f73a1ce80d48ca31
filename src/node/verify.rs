//! Checking instances: reports of dead instances, and periodic health checks.
//!
//! A report of a registered instance is answered at once; the broker that owns the instance's
//! checks (see `Replicator::owner`) then probes it with a TCP connect, and a dead one is removed
//! here and, through replication, everywhere. Health checks probe every instance this broker
//! owns once per interval, and remove one that fails twice in a row.
//!
//! What keeps this from being a port scanner or a stall:
//! - only registered instances are probed (checked again when a forwarded report arrives);
//! - one probe per endpoint at a time, and at most one per endpoint per cooldown for reports,
//!   however many clients report it at however many brokers (reports are forwarded to the one
//!   owner);
//! - reports per source address are capped by a token bucket;
//! - probes are non-blocking connects in the event loop with a deadline (see [`crate::probe`]).
//!
//! `Verifier` owns the [`Prober`], the health-check schedule, the report cooldowns and buckets, and
//! which services each live endpoint is in. It speaks the node's sub-machine convention (see the
//! [node's documentation](super)): `handle_*` take reports, the table's changes, moves of
//! ownership, probe outcomes and the time; the probes to run leave through `poll_probe` (the
//! prober's commands, for the shell), what the node must do about a result (remove an endpoint, or
//! log that it was kept) through `poll_event`. Who owns an endpoint's checks is the replicator's
//! knowledge: the node hands it in as `owned`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use crate::core::{ProbeCmd, ProbeId, ProbeOutcome};
use crate::probe::{Probe, Prober, ProberConfig, ProberStats, Schedule, Verdict};
use crate::registry::{Change, ChangeKind};
use crate::timers::Timers;

/// How instances are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyConfig {
    /// Probe every owned instance this often (`None`: no health checks; reports still work).
    pub probe_interval: Option<Duration>,
    /// Failed probes in a row before a health check removes an instance.
    pub fall: u32,
    /// A reported endpoint is probed at most once per this time.
    pub report_cooldown: Duration,
    /// Reports per second taken from one source address (the bucket holds twice as many).
    pub reports_per_second: u32,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            probe_interval: Some(Duration::from_secs(5)),
            fall: 2,
            report_cooldown: Duration::from_secs(2),
            reports_per_second: 20,
        }
    }
}

/// What a probe result asks the node to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum VerifyEvent {
    /// Remove the endpoint from these services: it is unreachable.
    Remove { endpoint: SocketAddr, services: Vec<Arc<str>>, why: &'static str },
    /// A reported endpoint answered: it stays.
    Kept { endpoint: SocketAddr },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Source buckets kept at most; beyond, idle ones are dropped first.
const MAX_BUCKETS: usize = 65_536;

/// Reports and health checks. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Verifier {
    config: VerifyConfig,
    prober: Prober,
    /// Endpoints probed because of a report, and when: the cooldown.
    recent: HashMap<SocketAddr, Instant>,
    recent_timers: Timers<SocketAddr>,
    /// Reported endpoints whose probe runs.
    reported: HashMap<SocketAddr, ()>,
    buckets: HashMap<IpAddr, Bucket>,
    schedule: Option<Schedule>,
    /// The services of every live instance, by endpoint.
    services: HashMap<SocketAddr, Vec<Arc<str>>>,
    events: VecDeque<VerifyEvent>,
    reports: u64,
}

impl Verifier {
    pub fn new(config: VerifyConfig, prober: ProberConfig) -> Self {
        Verifier {
            prober: Prober::new(prober),
            schedule: config.probe_interval.map(|interval| Schedule::new(interval, config.fall)),
            config,
            recent: HashMap::new(),
            recent_timers: Timers::new(),
            reported: HashMap::new(),
            buckets: HashMap::new(),
            services: HashMap::new(),
            events: VecDeque::new(),
            reports: 0,
        }
    }

    /// Reports taken (verified, or joined to a probe or a cooldown).
    pub fn reports(&self) -> u64 {
        self.reports
    }

    /// The prober's counters.
    pub fn prober_stats(&self) -> ProberStats {
        self.prober.stats()
    }

    /// Takes a report from `source` if its bucket has a token; the most it takes per second
    /// otherwise.
    pub fn admit(&mut self, now: Instant, source: IpAddr) -> Result<(), u32> {
        let rate = f64::from(self.config.reports_per_second.max(1));
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&source) {
            // Drop the buckets that have refilled: they hold no state worth keeping.
            self.buckets
                .retain(|_, b| b.tokens + rate * now.saturating_duration_since(b.last).as_secs_f64() < 2.0 * rate);
            if self.buckets.len() >= MAX_BUCKETS {
                return Err(self.config.reports_per_second);
            }
        }
        let bucket = self.buckets.entry(source).or_insert(Bucket { tokens: 2.0 * rate, last: now });
        bucket.tokens =
            (bucket.tokens + rate * now.saturating_duration_since(bucket.last).as_secs_f64()).min(2.0 * rate);
        bucket.last = now;
        if bucket.tokens < 1.0 {
            return Err(self.config.reports_per_second);
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// Probes a reported endpoint, unless it was probed for a report within the cooldown (or
    /// a probe of it runs, which the report joins). The caller checked it is registered.
    pub fn handle_report(&mut self, now: Instant, endpoint: SocketAddr) {
        self.reports += 1;
        let prober = &mut self.prober;
        if prober.is_probing(endpoint) {
            self.reported.insert(endpoint, ());
            prober.probe(now, endpoint);
            return;
        }
        if self.recent.get(&endpoint).is_some_and(|&at| at + self.config.report_cooldown > now) {
            return;
        }
        if let Some(old) = self.recent.insert(endpoint, now) {
            self.recent_timers.remove(old + self.config.report_cooldown, endpoint);
        }
        self.recent_timers.insert(now + self.config.report_cooldown, endpoint);
        self.reported.insert(endpoint, ());
        prober.probe(now, endpoint);
    }

    /// Follows the table: which services each endpoint is in, and which endpoints this broker
    /// checks (`owned` says whether it owns one).
    pub fn handle_change(&mut self, now: Instant, change: &Change, owned: impl Fn(SocketAddr) -> bool) {
        if !change.instance_changed {
            return;
        }
        let endpoint = change.endpoint;
        match change.kind {
            ChangeKind::Registered => {
                let services = self.services.entry(endpoint).or_default();
                if !services.contains(&change.service) {
                    services.push(Arc::clone(&change.service));
                }
                if let Some(schedule) = &mut self.schedule {
                    if owned(endpoint) {
                        schedule.add(now, endpoint);
                    }
                }
            }
            ChangeKind::Expired | ChangeKind::Removed(_) => {
                if let Some(services) = self.services.get_mut(&endpoint) {
                    services.retain(|s| *s != change.service);
                    if services.is_empty() {
                        self.services.remove(&endpoint);
                        if let Some(schedule) = &mut self.schedule {
                            schedule.remove(endpoint);
                        }
                    }
                }
            }
            ChangeKind::Refreshed => {}
        }
    }

    /// The live brokers changed: checks move to their new owners.
    pub fn handle_owners_changed(&mut self, now: Instant, owned: impl Fn(SocketAddr) -> bool) {
        let Some(schedule) = &mut self.schedule else { return };
        for &endpoint in self.services.keys() {
            match (owned(endpoint), schedule.contains(endpoint)) {
                (true, false) => schedule.add(now, endpoint),
                (false, true) => schedule.remove(endpoint),
                _ => {}
            }
        }
    }

    /// The shell tells how probe `id` ended.
    pub fn handle_probe(&mut self, now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        self.prober.handle_outcome(now, id, outcome);
        self.take_results();
    }

    /// The next probe for the shell to start or abort.
    pub fn poll_probe(&mut self) -> Option<ProbeCmd> {
        self.prober.poll_command()
    }

    /// The next thing the node must do about a result.
    pub fn poll_event(&mut self) -> Option<VerifyEvent> {
        self.events.pop_front()
    }

    /// Turns the prober's finished probes into events.
    fn take_results(&mut self) {
        while let Some((endpoint, probe)) = self.prober.poll_result() {
            if let Some(event) = self.on_result(endpoint, probe) {
                self.events.push_back(event);
            }
        }
    }

    /// Turns a probe's result into what to do.
    fn on_result(&mut self, endpoint: SocketAddr, probe: Probe) -> Option<VerifyEvent> {
        let reported = self.reported.remove(&endpoint).is_some();
        let verdict = self.schedule.as_mut().and_then(|s| s.on_result(endpoint, probe));
        let services = || self.services.get(&endpoint).cloned().unwrap_or_default();
        if reported && probe.is_dead() {
            // Removed: whatever registers there next is a new life, and its reports count anew.
            if let Some(at) = self.recent.remove(&endpoint) {
                self.recent_timers.remove(at + self.config.report_cooldown, endpoint);
            }
            return Some(VerifyEvent::Remove { endpoint, services: services(), why: "reported, and a probe failed" });
        }
        if verdict == Some(Verdict::Down) {
            return Some(VerifyEvent::Remove { endpoint, services: services(), why: "health checks failed" });
        }
        (reported && probe == Probe::Alive).then_some(VerifyEvent::Kept { endpoint })
    }

    /// Runs due health checks, forgets cooldowns that are over, and gives up probes past
    /// their deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(schedule) = &mut self.schedule {
            schedule.handle_timeout(now, &mut self.prober);
        }
        while let Some(endpoint) = self.recent_timers.pop_due(now) {
            self.recent.remove(&endpoint);
        }
        self.prober.handle_timeout(now);
        self.take_results();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.schedule.as_ref().and_then(Schedule::poll_timeout), self.recent_timers.next(), self.prober.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}
