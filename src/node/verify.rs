//! Checking instances: reports of dead instances, and periodic health checks.
//!
//! A report of a registered instance is answered at once; the broker that owns the instance's
//! checks (see `Replicator::owner`) then verifies it with the check the instance declared, and a
//! dead one is removed here and, through replication, everywhere. Health checks probe every
//! instance this broker owns once per interval, and remove one that fails twice in a row.
//!
//! Only declared checks run (Consul's rule): an instance registered without a check (or with
//! `check=none`) is never probed, and a report of it is counted (`reports_unchecked`) but not
//! verified. An endpoint is probed with the check its registrations declare: an HTTP check
//! when one of its services declares one, else a TCP connect when one declares that (one probe
//! per endpoint at a time); a failure removes it from the services that declared a check, never
//! from one that declared none. An instance's check is the one its latest registration or
//! renewal declared.
//!
//! How a report is verified (a refusal is proof, a timeout is only a hint):
//! - a connect that is refused, reset or unreachable is conclusive: the instance is removed at once;
//! - a connect that times out (after `probe_timeout`) is not: a slow or loaded server looks the
//!   same as a dead host for a moment. It is tried again after a backoff (`recheck_after`,
//!   doubling), and removed only when `report_timeouts` probes in a row timed out;
//! - a connect that succeeds keeps it, and reports of it are ignored for `report_cooldown`;
//! - reports that come while a verification runs (probing or waiting to re-check) join it: one
//!   probe at a time, however many reports.
//!
//! So with the defaults a server whose connect takes 1 s survives any number of reports, and a
//! black-holed one is gone `2 × probe_timeout + recheck_after` (7 s) after the first report.
//!
//! What keeps this from being a port scanner or a stall:
//! - only registered instances are probed (checked again when a forwarded report arrives);
//! - one probe per endpoint at a time, one verification per endpoint at a time (two probes at
//!   most) and none for a cooldown after one kept it, however many clients report it at however
//!   many brokers (reports are forwarded to the one owner);
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
use crate::protocol::Check;
use crate::registry::{Change, ChangeKind, SharedCheck};
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
    /// How long a connect may take before the probe counts as timed out (every probe: reports'
    /// and health checks'). Long enough for a loaded server whose first SYN was dropped.
    pub probe_timeout: Duration,
    /// Timed-out probes in a row before a report removes an instance (a refusal removes it at
    /// once).
    pub report_timeouts: u32,
    /// The wait before a reported instance whose probe timed out is probed again; it doubles
    /// with every further timeout.
    pub recheck_after: Duration,
}

/// The broker's default `--probe-timeout`: a server whose first SYN was dropped (a full accept
/// queue; the kernel retries after 1 s) still answers well within it.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            probe_interval: Some(Duration::from_secs(5)),
            fall: 2,
            report_cooldown: Duration::from_secs(2),
            reports_per_second: 20,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            report_timeouts: 2,
            recheck_after: Duration::from_secs(1),
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

/// Where the verification of a report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A probe of the endpoint runs (or waits its turn in the prober).
    Probing,
    /// The last probe timed out; the next starts at this time.
    Waiting(Instant),
}

/// A report being verified.
#[derive(Debug, Clone, Copy)]
struct Verification {
    /// Probes of it that timed out, in a row.
    timeouts: u32,
    step: Step,
}

/// Source buckets kept at most; beyond, idle ones are dropped first.
const MAX_BUCKETS: usize = 65_536;

/// Reports and health checks. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Verifier {
    config: VerifyConfig,
    prober: Prober,
    /// Endpoints a report's verification kept, and when: the cooldown.
    recent: HashMap<SocketAddr, Instant>,
    recent_timers: Timers<SocketAddr>,
    /// Reported endpoints being verified.
    checks: HashMap<SocketAddr, Verification>,
    /// When the re-checks of endpoints whose probe timed out are due.
    rechecks: Timers<SocketAddr>,
    buckets: HashMap<IpAddr, Bucket>,
    schedule: Option<Schedule>,
    /// The services of every live instance that declares a check, by endpoint, each with that
    /// check (the instances that declare none, the most, are not kept).
    services: HashMap<SocketAddr, Vec<(Arc<str>, SharedCheck)>>,
    events: VecDeque<VerifyEvent>,
    reports: u64,
    /// Reports of instances that declare no check: counted, not verified.
    reports_unchecked: u64,
    /// Reports that joined a verification already running.
    #[cfg_attr(not(test), allow(dead_code))]
    joined: u64,
}

impl Verifier {
    /// A verifier whose prober runs `prober.max_in_flight` probes at once, each for
    /// `config.probe_timeout` at most.
    pub fn new(config: VerifyConfig, prober: ProberConfig) -> Self {
        Verifier {
            prober: Prober::new(ProberConfig { timeout: config.probe_timeout, ..prober }),
            schedule: config.probe_interval.map(|interval| Schedule::new(interval, config.fall)),
            config,
            recent: HashMap::new(),
            recent_timers: Timers::new(),
            checks: HashMap::new(),
            rechecks: Timers::new(),
            buckets: HashMap::new(),
            services: HashMap::new(),
            events: VecDeque::new(),
            reports: 0,
            reports_unchecked: 0,
            joined: 0,
        }
    }

    /// Reports taken (verified, or joined to a probe or a cooldown).
    pub fn reports(&self) -> u64 {
        self.reports
    }

    /// Reports of instances that declare no check, which are not verified.
    pub fn reports_unchecked(&self) -> u64 {
        self.reports_unchecked
    }

    /// The check `endpoint` is probed with: an HTTP check when one of its services declares
    /// one, else TCP when one declares that; `None` when none declares a check.
    fn check_of(&self, endpoint: SocketAddr) -> Option<SharedCheck> {
        let services = self.services.get(&endpoint)?;
        let find = |http: bool| {
            services
                .iter()
                .map(|(_, check)| check)
                .find(|check| matches!(***check, Check::Http(_)) == http && !check.is_none())
        };
        find(true).or_else(|| find(false)).cloned()
    }

    /// The failures in a row of `endpoint`'s health checks, when this broker checks it
    /// (`None`: it does not, or checks are off).
    pub fn check_failures(&self, endpoint: SocketAddr) -> Option<u32> {
        self.schedule.as_ref()?.failures(endpoint)
    }

    /// Whether a report of `service` at `endpoint` is verified: whether that instance declares
    /// a check. Counts the report as unchecked when it is not.
    pub fn is_checked(&mut self, service: &str, endpoint: SocketAddr) -> bool {
        let checked = self
            .services
            .get(&endpoint)
            .and_then(|services| services.iter().find(|(name, _)| &**name == service))
            .is_some_and(|(_, check)| !check.is_none());
        if !checked {
            self.reports += 1;
            self.reports_unchecked += 1;
        }
        checked
    }

    /// Reports that joined a verification already running.
    #[cfg(test)]
    pub fn joined(&self) -> u64 {
        self.joined
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

    /// Verifies a reported endpoint, unless a verification of it runs (which the report joins)
    /// or one kept it within the cooldown. The caller checked that it is registered, and that
    /// the reported instance declares a check ([`Verifier::is_checked`]).
    pub fn handle_report(&mut self, now: Instant, endpoint: SocketAddr) {
        let Some(check) = self.check_of(endpoint) else { return };
        self.reports += 1;
        if self.checks.contains_key(&endpoint) {
            self.joined += 1;
            return;
        }
        if self.recent.get(&endpoint).is_some_and(|&at| at + self.config.report_cooldown > now) {
            return;
        }
        self.checks.insert(endpoint, Verification { timeouts: 0, step: Step::Probing });
        // Joins a health check's probe of it, if one runs: its result counts.
        self.prober.probe_checked(now, endpoint, check);
    }

    /// Ends the verification of `endpoint`, if one runs, and cancels its re-check.
    fn end_check(&mut self, endpoint: SocketAddr) -> Option<Verification> {
        let check = self.checks.remove(&endpoint)?;
        if let Step::Waiting(at) = check.step {
            self.rechecks.remove(at, endpoint);
        }
        Some(check)
    }

    /// Starts the cooldown of an endpoint a verification kept.
    fn cool_down(&mut self, now: Instant, endpoint: SocketAddr) {
        if let Some(old) = self.recent.insert(endpoint, now) {
            self.recent_timers.remove(old + self.config.report_cooldown, endpoint);
        }
        self.recent_timers.insert(now + self.config.report_cooldown, endpoint);
    }

    /// Removes the cooldown of an endpoint that goes: whatever registers there next is a new
    /// life, and its reports count anew.
    fn forget(&mut self, endpoint: SocketAddr) {
        self.end_check(endpoint);
        if let Some(at) = self.recent.remove(&endpoint) {
            self.recent_timers.remove(at + self.config.report_cooldown, endpoint);
        }
    }

    /// Follows the table: which services each endpoint is in with which check, and which
    /// endpoints this broker checks (`owned` says whether it owns one).
    pub fn handle_change(&mut self, now: Instant, change: &Change, owned: impl Fn(SocketAddr) -> bool) {
        let endpoint = change.endpoint;
        let removed = matches!(change.kind, ChangeKind::Expired | ChangeKind::Removed(_));
        if removed && change.instance_changed {
            if let Some(services) = self.services.get_mut(&endpoint) {
                services.retain(|(s, _)| *s != change.service);
                if services.is_empty() {
                    self.services.remove(&endpoint);
                    // No longer registered: not probed again.
                    self.end_check(endpoint);
                }
                self.reschedule(now, endpoint, owned(endpoint));
            }
            return;
        }
        // A lease came, was renewed, or went while others hold the instance: the check the
        // instance declares (the change carries it) may have changed. An instance that declares
        // none is neither probed nor verified, so it is not kept here: most declare none, and
        // an entry costs about a hundred bytes.
        if change.check.is_none() {
            if let Some(services) = self.services.get_mut(&endpoint) {
                let before = services.len();
                services.retain(|(s, _)| *s != change.service);
                if services.len() != before {
                    if services.is_empty() {
                        self.services.remove(&endpoint);
                    }
                    self.reschedule(now, endpoint, owned(endpoint));
                }
            }
            return;
        }
        let services = self.services.entry(endpoint).or_default();
        match services.iter_mut().find(|(name, _)| *name == change.service) {
            // A renewal that declares what it declared before: nothing to do (the common case,
            // a heartbeat, compares two pointers).
            Some((_, check)) if Arc::ptr_eq(check, &change.check) || *check == change.check => return,
            Some((_, check)) => *check = Arc::clone(&change.check),
            None => services.push((Arc::clone(&change.service), Arc::clone(&change.check))),
        }
        self.reschedule(now, endpoint, owned(endpoint));
    }

    /// Puts `endpoint` on the health-check schedule with its check when this broker owns it
    /// and it declares one, and takes it off otherwise.
    fn reschedule(&mut self, now: Instant, endpoint: SocketAddr, owned: bool) {
        let check = if owned { self.check_of(endpoint) } else { None };
        let Some(schedule) = &mut self.schedule else { return };
        match check {
            Some(check) => schedule.add_checked(now, endpoint, check),
            None => schedule.remove(endpoint),
        }
    }

    /// The live brokers changed: checks move to their new owners.
    pub fn handle_owners_changed(&mut self, now: Instant, owned: impl Fn(SocketAddr) -> bool) {
        if self.schedule.is_none() {
            return;
        }
        let endpoints: Vec<SocketAddr> = self.services.keys().copied().collect();
        for endpoint in endpoints {
            let owned = owned(endpoint);
            let scheduled = self.schedule.as_ref().is_some_and(|s| s.contains(endpoint));
            if owned != scheduled {
                self.reschedule(now, endpoint, owned);
            }
        }
    }

    /// The shell tells how probe `id` ended.
    pub fn handle_probe(&mut self, now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        self.prober.handle_outcome(now, id, outcome);
        self.take_results(now);
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
    fn take_results(&mut self, now: Instant) {
        while let Some((endpoint, probe)) = self.prober.poll_result() {
            if let Some(event) = self.on_result(now, endpoint, probe) {
                self.events.push_back(event);
            }
        }
    }

    /// Turns a probe's result into what to do.
    /// Any probe of a reported endpoint counts for its verification, a health check's too.
    fn on_result(&mut self, now: Instant, endpoint: SocketAddr, probe: Probe) -> Option<VerifyEvent> {
        let verdict = self.schedule.as_mut().and_then(|s| s.on_result(endpoint, probe));
        let report = self.on_report_result(now, endpoint, probe);
        let why = match (report, verdict) {
            (Some(Ok(why)), _) => why,
            (_, Some(Verdict::Down)) => "health checks failed",
            (Some(Err(())), _) => return Some(VerifyEvent::Kept { endpoint }),
            _ => return None,
        };
        self.forget(endpoint);
        // The services that declared a check; one that declared none stays.
        let services = self.services.get(&endpoint).map_or_else(Vec::new, |services| {
            services.iter().filter(|(_, check)| !check.is_none()).map(|(name, _)| Arc::clone(name)).collect()
        });
        Some(VerifyEvent::Remove { endpoint, services, why })
    }

    /// Moves the verification of `endpoint` on: `Ok(why)` when the result removes it, `Err(())`
    /// when it keeps it, `None` when there is no verification or no verdict yet.
    fn on_report_result(
        &mut self,
        now: Instant,
        endpoint: SocketAddr,
        probe: Probe,
    ) -> Option<Result<&'static str, ()>> {
        let check = self.checks.get_mut(&endpoint)?;
        match probe {
            Probe::Alive => {
                self.end_check(endpoint);
                self.cool_down(now, endpoint);
                Some(Err(()))
            }
            Probe::Failed(_) => Some(Ok("reported, and a probe failed")),
            Probe::TimedOut => {
                check.timeouts += 1;
                if check.timeouts >= self.config.report_timeouts.max(1) {
                    return Some(Ok("reported, and its probes timed out"));
                }
                if let Step::Waiting(at) = check.step {
                    // A health check's probe timed out while the re-check waited.
                    self.rechecks.remove(at, endpoint);
                }
                let backoff = self.config.recheck_after.saturating_mul(1 << (check.timeouts - 1).min(16));
                check.step = Step::Waiting(now + backoff);
                self.rechecks.insert(now + backoff, endpoint);
                None
            }
            Probe::Unknown => {
                // This process could not try: no verdict, and the next report tries again. (A
                // health check's such result while the re-check waits changes nothing.)
                if check.step == Step::Probing {
                    self.end_check(endpoint);
                }
                None
            }
        }
    }

    /// Runs due health checks and re-checks of reported endpoints, forgets cooldowns that are
    /// over, and gives up probes past their deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(schedule) = &mut self.schedule {
            schedule.handle_timeout(now, &mut self.prober);
        }
        while let Some(endpoint) = self.recent_timers.pop_due(now) {
            self.recent.remove(&endpoint);
        }
        while let Some(endpoint) = self.rechecks.pop_due(now) {
            let check = self.check_of(endpoint);
            if let (Some(verification), Some(check)) = (self.checks.get_mut(&endpoint), check) {
                verification.step = Step::Probing;
                self.prober.probe_checked(now, endpoint, check);
            }
        }
        self.prober.handle_timeout(now);
        self.take_results(now);
    }

    /// Runs the timers due up to `at`, in order.
    #[cfg(test)]
    pub fn run_for_test(&mut self, at: Instant) {
        while let Some(due) = self.poll_timeout().filter(|&due| due <= at) {
            self.handle_timeout(due);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.schedule.as_ref().and_then(Schedule::poll_timeout),
            self.recent_timers.next(),
            self.rechecks.next(),
            self.prober.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
