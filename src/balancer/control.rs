//! The balancer's control port as a sans-IO core: the registration protocol over the backend
//! table, the pool fed from the table's changes, health probes, and the `stats` answer.
//!
//! The balancer registers itself at the broker while it has a backend up; the core decides when
//! and says so with an [`Event`] (polled with [`Control::poll_event`], as quinn-proto's
//! connection reports its events), and the balancer's shell acts on it with the threads that
//! register and announce (`super::registration`). The core starts no thread and opens no
//! socket.

mod feed;
pub(crate) mod reload;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::health::Health;
use super::{Counters, Pool};
use crate::core::{ConnId, Core, ProbeCmd, ProbeId, ProbeOutcome, StreamStep};
use crate::limit::{RateLimit, ResponseLimiter};
use crate::node::WallClock;
use crate::probe::Verdict;
use crate::protocol::fit;
use crate::protocol::seal::{self, Key, ReplayGuard, Sealer};
use crate::protocol::{Check, Form, Response};
use crate::registry::{ChangeKind, Registry, SharedCheck};
use crate::service::policy::RequireKey;
use crate::service::{self, Service};

/// The control port's one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Face {
    Control,
    /// `GET /metrics` (see [`crate::metrics`]).
    Metrics,
    /// `--http`: `GET /metrics`, `/v1/backends` and the status page (see [`crate::http`]).
    Http,
}

/// What the control core tells its shell, besides datagrams and probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A backend is up and none was before (the first one, or the first back): the balancer
    /// has something to offer, so it registers at the broker and announces itself.
    FirstBackendUp,
    /// No backend is up any more (the last one gone or marked down): the balancer deregisters
    /// and stops announcing, so that clients are not sent where nothing answers.
    LastBackendGone,
}

/// The control core.
pub(crate) struct Control {
    registry: Registry,
    service: Service,
    pool: Arc<Pool>,
    counters: Arc<Counters>,
    /// How many services each backend endpoint is registered under; it stays while any is.
    names: HashMap<SocketAddr, usize>,
    /// Whether a backend was up when the pool was last looked at: what the last [`Event`] said.
    any_up: bool,
    events: VecDeque<Event>,
    health: Option<Health>,
    limiter: ResponseLimiter,
    /// Changes to the pool, published at the end of the turn (one new list per turn).
    /// Backends added, with their weights.
    staged_adds: Vec<(SocketAddr, u32)>,
    staged_removes: Vec<SocketAddr>,
    /// When to look again at how many backends are up (the forwarding threads mark them down).
    next_follow: Option<Instant>,
    /// When the pool was last published: staged changes wait for [`PUBLISH`] after it, so that
    /// backends registering one after another make one new list per interval, not one each.
    last_publish: Option<Instant>,
    log: bool,
    /// With a key: sealed requests are opened, and their replies sealed.
    keyed: Option<Keyed>,
    /// The settings a reload may change, as they are, and the forwarding threads' timeouts
    /// (see [`reload`]); `None` until set (a core of a test or the fuzzer).
    reloadable: Option<(reload::Reloadable, Arc<super::forward::Timeouts>)>,
    /// The service the balancer offers, as `/v1/backends` shows it (with the pool's policy).
    offer: String,
    /// `--backends-from`: the watched service's instances with their weights, as last told
    /// (see `feed`); each counts in `names` as one more name its endpoint is held under.
    watched: HashMap<SocketAddr, u32>,
}

/// The control port's key: as a broker's for its clients (see `crate::node` and
/// [`crate::protocol::seal`]).
#[derive(Debug)]
struct Keyed {
    sealer: Sealer,
    /// The backends' and tools' windows, bounded as a broker's clients' are.
    guard: ReplayGuard,
    wall: WallClock,
}

/// How often the core looks at whether any backend is up (for its [`Event`]s).
pub(crate) const FOLLOW: Duration = Duration::from_millis(500);

/// The least time between two publications of the pool.
const PUBLISH: Duration = Duration::from_millis(10);

impl Control {
    pub fn new(
        registry: Registry,
        pool: Arc<Pool>,
        counters: Arc<Counters>,
        health: Option<Health>,
        rate_limit: RateLimit,
        log: bool,
    ) -> Self {
        let service = Service::new(&registry, service::DEFAULT_MAX_DATAGRAM);
        let limiter = ResponseLimiter::new(rate_limit);
        Control {
            registry,
            service,
            pool,
            counters,
            names: HashMap::new(),
            any_up: false,
            events: VecDeque::new(),
            health,
            limiter,
            staged_adds: Vec::new(),
            staged_removes: Vec::new(),
            next_follow: None,
            last_publish: None,
            log,
            keyed: None,
            reloadable: None,
            offer: String::new(),
            watched: HashMap::new(),
        }
    }

    /// The service the balancer offers (`--service`), for the HTTP catalog (which reads the
    /// policy from the pool, where a reload changes it).
    pub fn set_offer(&mut self, service: String) {
        self.offer = service;
    }

    /// Opens requests sealed with `key` (and seals their replies), and refuses the unsealed
    /// requests `require` names (`--require-key`). `wall` is the time at one instant.
    pub fn set_key(&mut self, key: Key, require: RequireKey, wall: WallClock) {
        let guard = ReplayGuard::with_capacity(crate::node::MAX_CLIENTS);
        self.keyed = Some(Keyed { sealer: Sealer::new(key, crate::random::u64()), guard, wall });
        self.service.set_require_key(require);
    }

    /// A sealed datagram: the reply (sealed) in `reply`, or `None` when it is dropped.
    fn handle_sealed(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> Option<service::Written> {
        let keyed = self.keyed.as_mut()?;
        let now_ms = keyed.wall.unix_ms(now);
        let opened = seal::unseal(keyed.sealer.key(), datagram, now_ms)
            .and_then(|unsealed| keyed.guard.admit(&unsealed, now_ms).map(|()| unsealed.inner));
        let Ok(request) = opened else {
            self.counters.sealed_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        };
        service::handle_sealed(self, now, from, request, reply)
    }

    /// Registrations from now on follow `policy` (the broker's rules and replies).
    pub fn set_policy(&mut self, policy: service::policy::Policy) {
        self.service.set_policy(policy);
    }

    /// Feeds the table's changes to the health checks and stages them for the pool.
    fn drain_changes(&mut self, now: Instant) {
        while let Some(change) = self.registry.poll_change() {
            let endpoint = change.endpoint;
            match change.kind {
                ChangeKind::Registered if change.instance_changed => {
                    let weight = declared_weight(&self.registry, &change);
                    let names = self.names.entry(endpoint).or_insert(0);
                    *names += 1;
                    if *names == 1 {
                        // Perhaps staged to leave in this same window (the watch let it go, or
                        // a registration before): it stays.
                        self.staged_removes.retain(|addr| *addr != endpoint);
                        self.staged_adds.push((endpoint, weight));
                    } else {
                        // Held already (watched, or registered under another name): it weighs
                        // what the registration declares, and a backend a check took out stays
                        // out (an add would mark it up); without checks, this is a heartbeat.
                        self.follow_weight(endpoint, weight);
                        if self.health.is_none()
                            && let Some(backend) = self.pool.get(endpoint)
                        {
                            backend.mark_up();
                        }
                    }
                    if let Some(health) = &mut self.health {
                        follow_check(health, now, endpoint, &change.check);
                    }
                }
                // A heartbeat says the backend's registrar lives, not that it accepts
                // connections: with health checks, only a probe or a connect brings a backend
                // that failed one back (a hung server that heartbeats stays out). Without them,
                // the heartbeat is all there is to go by.
                ChangeKind::Registered | ChangeKind::Refreshed => {
                    // Registered again: perhaps with another weight (a refresh whose metadata changed too).
                    if matches!(change.kind, ChangeKind::Registered) || change.meta_changed {
                        self.follow_weight(endpoint, declared_weight(&self.registry, &change));
                    }
                    match &mut self.health {
                        // The backend may declare another check now (the change carries what
                        // it declares after it).
                        Some(health) => follow_check(health, now, endpoint, &change.check),
                        None => {
                            if let Some(backend) = self.pool.get(endpoint) {
                                backend.mark_up();
                            }
                        }
                    }
                }
                ChangeKind::Expired | ChangeKind::Removed(_) if change.instance_changed => {
                    let left = self.names.get_mut(&endpoint).map(|n| {
                        *n -= 1;
                        *n
                    });
                    if left == Some(0) {
                        self.names.remove(&endpoint);
                        self.staged_removes.push(endpoint);
                        if let Some(health) = &mut self.health {
                            health.schedule.remove(endpoint);
                        }
                    } else if let Some(weight) = self.watched_only(endpoint) {
                        // Held by the watch alone now: it weighs what the watched service says,
                        // and is checked as a watched backend is (a connect), not as the
                        // registration asked.
                        self.follow_weight(endpoint, weight);
                        if let Some(health) = &mut self.health {
                            health.schedule.add(now, endpoint);
                        }
                    }
                }
                // One lease of several went: what the others declare is checked now, and
                // weighed (the weight came from the lowest-id lease with metadata, perhaps this).
                ChangeKind::Expired | ChangeKind::Removed(_) => {
                    self.follow_weight(endpoint, declared_weight(&self.registry, &change));
                    if let Some(health) = &mut self.health {
                        follow_check(health, now, endpoint, &change.check);
                    }
                }
            }
        }
    }

    /// A backend registered again with `weight`: the pool takes it when it differs (without
    /// marking the backend up), or the staged add does when the pool does not have it yet.
    fn follow_weight(&mut self, endpoint: SocketAddr, weight: u32) {
        if let Some(staged) = self.staged_adds.iter_mut().find(|(addr, _)| *addr == endpoint) {
            staged.1 = weight;
        } else if self.pool.get(endpoint).is_some_and(|b| b.weight() != weight) {
            self.pool.reweight(endpoint, weight);
        }
    }

    /// Publishes the staged changes to the pool in one batch, and looks at whether any backend
    /// is up: when that changed, an [`Event`] says so.
    fn publish(&mut self, now: Instant) {
        if !self.staged_adds.is_empty() || !self.staged_removes.is_empty() {
            let (adds, removes) = (std::mem::take(&mut self.staged_adds), std::mem::take(&mut self.staged_removes));
            let (added, removed) = self.pool.update_weighted(adds.iter().copied(), removes.iter().copied());
            if self.log {
                if added + removed <= 8 {
                    for (endpoint, weight) in adds.iter().filter(|(a, _)| !removes.contains(a)) {
                        match weight {
                            1 => log::info!("backend {endpoint} registered"),
                            _ => log::info!("backend {endpoint} registered, weight {weight}"),
                        }
                    }
                    for endpoint in &removes {
                        log::info!("backend {endpoint} gone");
                    }
                } else {
                    log::info!("{added} backends registered, {removed} gone");
                }
            }
        }
        self.next_follow = Some(now + FOLLOW);
        self.last_publish = Some(now);
        let any_up = self.pool.any_up();
        if any_up != self.any_up {
            self.any_up = any_up;
            self.events.push_back(if any_up { Event::FirstBackendUp } else { Event::LastBackendGone });
        }
    }

    /// The next thing the shell should act on: whether the balancer should be registered.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When staged changes may be published next, if there are any.
    fn publish_due(&self) -> Option<Instant> {
        let staged = !self.staged_adds.is_empty() || !self.staged_removes.is_empty();
        // Before the first publication: at once (the loop's start, or any time after).
        staged.then(|| self.last_publish.map(|at| at + PUBLISH).or(self.next_follow)).flatten()
    }
    /// The balancer's counters, with as many backends as fit in one reply in `form`. Linear in
    /// the number of backends: each one's size is counted once.
    fn stats(&self, form: Form) -> Response {
        Response::BalancerStats(fit::balancer_stats(form, self.counters.stats(&self.pool)))
    }
}

/// The control port answers `stats` besides the registration protocol.
impl service::Context for Control {
    fn parts(&mut self) -> (&mut Service, &mut Registry) {
        (&mut self.service, &mut self.registry)
    }

    fn answer_stats(&mut self, now: Instant, form: Form) -> Response {
        // What the table holds, the pool shows: staged changes go out first.
        self.drain_changes(now);
        self.publish(now);
        self.stats(form)
    }
}

impl Core for Control {
    type Face = Face;
    type Command = reload::Command;

    fn handle_command(&mut self, now: Instant, command: reload::Command) {
        match command {
            reload::Command::Reload { settings, reply } => {
                let changes = self.reconfigure(*settings, now);
                // A sender that gave up waiting logged only that: the changes made are logged
                // here, so that none goes untold.
                if let Err(unsent) = reply.send(changes) {
                    crate::reload::log_changes(&unsent.0);
                }
            }
            reload::Command::Watched(instances) => self.set_watched(now, instances),
        }
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        _face: Face,
        from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> Option<Face> {
        // Never `None` unsealed: the control port has no bridges.
        let sealed = self.keyed.is_some() && seal::is_sealed(datagram);
        let written = match sealed {
            true => self.handle_sealed(now, from, datagram, reply),
            false => service::handle(self, now, from, datagram, reply),
        };
        self.drain_changes(now);
        // The binary `stats` answer is the largest for the smallest request: limited like a
        // broker's replies.
        let service::Written { form, kind } = written?;
        let send = self.limiter.limit_reply(now, from.ip(), form, datagram.len(), reply, kind);
        let limited = self.limiter.stats();
        self.counters.rate_dropped.store(limited.dropped, std::sync::atomic::Ordering::Relaxed);
        self.counters.acks_dropped.store(limited.acks_dropped, std::sync::atomic::Ordering::Relaxed);
        if send && sealed {
            if let Some(keyed) = &mut self.keyed {
                keyed.sealer.seal_in_place(reply, keyed.wall.unix_ms(now));
            }
        }
        send.then_some(Face::Control)
    }

    fn handle_stream(
        &mut self,
        _now: Instant,
        face: Face,
        _conn: ConnId,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> StreamStep {
        match face {
            Face::Metrics => crate::metrics::serve_http(input, output, || {
                crate::metrics::balancer(&self.counters.metrics(&self.pool))
            }),
            Face::Http => crate::http::serve(input, output, &mut catalog::ControlCatalog(self)),
            Face::Control => StreamStep { consumed: input.len(), close: true },
        }
    }

    fn poll_probe(&mut self) -> Option<ProbeCmd> {
        self.health.as_mut()?.poll_command()
    }

    fn probe_preamble(&self) -> &[u8] {
        self.health.as_ref().map_or(&[], |health| &health.preamble)
    }

    fn handle_probe(&mut self, now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        if let Some(health) = &mut self.health {
            health.prober.handle_outcome(now, id, outcome);
        }
        self.gate_probes(now);
        self.take_probe_results();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let health = self.health.as_ref().map(|h| [h.prober.poll_timeout(), h.schedule.poll_timeout()]);
        [self.registry.poll_timeout(), self.next_follow, self.publish_due()]
            .into_iter()
            .chain(health.into_iter().flatten())
            .flatten()
            .min()
    }

    fn handle_start(&mut self, now: Instant) {
        self.next_follow = Some(now);
    }

    fn handle_turn_end(&mut self, now: Instant) {
        if self.publish_due().is_some_and(|at| at <= now) {
            self.publish(now);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.registry.handle_timeout(now);
        if let Some(health) = &mut self.health {
            health.prober.handle_timeout(now);
            health.schedule.handle_timeout(now, &mut health.prober);
        }
        self.gate_probes(now);
        self.take_probe_results();
        self.drain_changes(now);
        if self.next_follow.is_none_or(|at| at <= now) || self.publish_due().is_some_and(|at| at <= now) {
            self.publish(now);
        }
    }
}

impl Control {
    /// Holds back the probes beyond the bound toward one address (see [`super::health`]) and
    /// counts them.
    fn gate_probes(&mut self, now: Instant) {
        if let Some(health) = &mut self.health {
            let skipped = health.gate(now);
            self.counters.probes_skipped.fetch_add(skipped, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn take_probe_results(&mut self) {
        let Some(health) = &mut self.health else { return };
        while let Some((addr, probe)) = health.prober.poll_result() {
            let Some(backend) = self.pool.get(addr) else { continue };
            // The forwarding threads mark backends down on a failed connect (and, without
            // checks, up on one that succeeds): the verdicts count from the pool's state.
            health.schedule.set_down(addr, !backend.is_up());
            match health.schedule.on_result(addr, probe) {
                Some(Verdict::Down) if backend.mark_failed() => {
                    log::warn!("backend {addr} marked down: health check {probe:?}");
                }
                Some(Verdict::Up) if backend.mark_up() => {
                    log::info!("backend {addr} up again: its health checks passed");
                }
                Some(_) => {}
                None if probe.is_dead() => backend.count_failure(),
                None => {}
            }
        }
    }
}

/// The weight a registration declares: its instance's `weight=N` pair (issue 23's metadata,
/// see [`Registry::metadata`](crate::registry::Registry::metadata)), 1 without one.
fn declared_weight(registry: &crate::registry::Registry, change: &crate::registry::Change) -> u32 {
    weight_of(registry.metadata(&change.service, change.endpoint).and_then(|meta| meta.get("weight")))
}

/// A backend's weight from the value of its registration's `weight` pair (`Some(None)`: the key
/// alone): 1 to [`MAX_WEIGHT`](super::policy::MAX_WEIGHT), 1 when absent; a value that is no
/// weight counts as 1 and is logged (the registration itself stands).
fn weight_of(value: Option<Option<&[u8]>>) -> u32 {
    super::policy::declared_weight(value).unwrap_or_else(|e| {
        log::warn!("a backend's weight= ignored: {e}");
        1
    })
}

/// Checks a backend as it declares: a TCP connect, unless it declared an HTTP check (the
/// balancer forwards TCP, so a backend that declared none is still checked with a connect).
/// Changing nothing when the check is the one already scheduled.
fn follow_check(health: &mut Health, now: Instant, endpoint: SocketAddr, check: &SharedCheck) {
    match &**check {
        Check::Http(_) => health.schedule.add_checked(now, endpoint, Arc::clone(check)),
        Check::None | Check::Tcp => health.schedule.add(now, endpoint),
    }
}

mod catalog;
#[cfg(test)]
mod tests;
