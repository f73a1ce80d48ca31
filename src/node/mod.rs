//! The broker's sans-IO core: everything a broker does, with no socket and no clock.
//!
//! A [`Node`] owns the [`Registry`] and everything that works on it: the registration protocol
//! ([`Service`]), the multicast group, replication with peer brokers ([`replicate`]), catching
//! up ([`sync`]), and checks of instances ([`verify`], on the [`Prober`]). The
//! [`Shell`](crate::shell::Shell) feeds it datagrams and probe outcomes on its [`Face`]s and
//! the time, and polls it for datagrams to send, probes to run and its next timeout (see
//! [`Core`]). After every input the node drains the registry's change log once and hands each
//! change to everything that follows the table: the log, the replicator, the verifier.
//!
//! ```
//! use std::time::Instant;
//! use makler::node::{Face, Node, NodeConfig};
//! use makler::core::Core;
//!
//! let mut node = Node::new(NodeConfig::default(), uuid::Uuid::new_v4);
//! let (server, client) = ("127.0.0.1:40000".parse().unwrap(), "127.0.0.1:40001".parse().unwrap());
//! let (now, mut reply) = (Instant::now(), Vec::new());
//! node.handle_start(now);
//! assert_eq!(node.handle_datagram(now, Face::Client, server, b"register echo 4000", &mut reply), Some(Face::Client));
//! reply.clear();
//! node.handle_datagram(now, Face::Client, client, b"query echo", &mut reply);
//! assert_eq!(reply, b"127.0.0.1:4000\n");
//! ```

pub mod bridge;
#[cfg(test)]
mod bridge_tests;
mod deltas;
pub mod dns;
mod dns_face;
mod group;
mod logging;
pub mod replicate;
#[cfg(test)]
mod replicate_tests;
#[cfg(test)]
mod sim_tests;
pub mod sync;
#[cfg(test)]
mod tests;
pub mod verify;
pub mod watch;
#[cfg(test)]
mod watch_tests;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use logging::{log_change, log_peer_event};

use crate::core::{ConnId, Core, Outbox, ProbeCmd, ProbeId, ProbeOutcome, StreamStep, Transmit};
use crate::limit::{RateLimit, ResponseLimiter};
use crate::probe::{Prober, ProberConfig};
use crate::protocol::peer::{self, Peer};
use crate::protocol::seal::{self, Key, ReplayGuard, Sealer};
use crate::protocol::{self, BrokerStats, Form, MAX_REPLY_LEN, Rejection, RemoveReason, Request, Response};
use crate::registry::{self, ChangeKind, Registry};
use crate::service::policy::Policy;
use crate::service::{self, Handled, Service};

pub use bridge::BridgeConfig;
pub use dns::DnsConfig;
pub use dns_face::DNS_TCP_LIMITS;
pub use replicate::{PeerEvent, ReplicaConfig, ReplicationStats};
pub use verify::VerifyConfig;
pub use watch::WatchConfig;

/// The broker's sockets, as the node names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Face {
    /// The unicast socket clients, servers and peers talk to.
    Client,
    /// The multicast group socket, receive only (answers to discovery leave from
    /// [`Face::Client`]).
    Group,
    /// The socket the node's hellos to the group leave from.
    GroupOut,
    /// The DNS face's UDP socket (see [`dns`]).
    Dns,
    /// The DNS face's TCP listener, on the same address.
    DnsTcp,
    /// A TCP listener answering `GET /metrics` (see [`crate::metrics`]).
    Metrics,
}

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// TTL and limits of the table.
    pub registry: registry::Config,
    /// The longest request datagram accepted, in bytes.
    pub max_datagram: usize,
    /// Log registrations, removals and expiries (at info level).
    pub log_changes: bool,
    /// The node's unicast address, as clients and peers know it.
    pub unicast: SocketAddr,
    /// The node's part in the multicast group (`None`: none).
    pub group: Option<GroupConfig>,
    /// This run's incarnation: a random id, new at every start.
    pub incarnation: u64,
    /// Replication with peer brokers.
    pub replica: ReplicaConfig,
    /// Reports and health checks.
    pub verify: VerifyConfig,
    /// How probes run.
    pub prober: ProberConfig,
    /// Response-rate limiting of replies larger than their request.
    pub rate_limit: RateLimit,
    /// Who may register what.
    pub policy: Policy,
    /// With a key, peer and group datagrams are sealed with it, and unsealed ones are dropped
    /// (see [`crate::protocol::seal`]).
    pub key: Option<Key>,
    /// The wall clock at one instant, for the sealed envelopes' send times: the node reads no
    /// clock, so the shell tells it once what time it is.
    pub wall: WallClock,
    /// The DNS face's zone (`None`: no DNS face; datagrams on [`Face::Dns`] are dropped).
    pub dns: Option<DnsConfig>,
    /// Brokers of other networks asked for services this one does not have.
    pub bridges: BridgeConfig,
    /// The caps on watches.
    pub watches: WatchConfig,
}

/// The wall clock at one [`Instant`]: the node derives the Unix time of any later instant from
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// The instant.
    pub at: Instant,
    /// Unix time then, in milliseconds.
    pub unix_ms: u64,
}

impl WallClock {
    /// The wall clock now (read by the caller, a shell).
    pub fn now() -> Self {
        WallClock { at: Instant::now(), unix_ms: seal::unix_ms(std::time::SystemTime::now()) }
    }

    /// Unix time at `now`, in milliseconds.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        self.unix_ms + u64::try_from(since).unwrap_or(u64::MAX)
    }
}

/// What a node needs to take part in the multicast group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// The group's address and port.
    pub group: SocketAddr,
    /// The id on the node's own datagrams, to tell them from others'.
    pub origin: u64,
    /// How often to say hello on the group (brokers find each other by it).
    pub hello_interval: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            registry: registry::Config::default(),
            max_datagram: service::DEFAULT_MAX_DATAGRAM,
            log_changes: false,
            unicast: crate::protocol::DEFAULT_BROKER,
            group: None,
            incarnation: 0,
            replica: ReplicaConfig::default(),
            verify: VerifyConfig { probe_interval: None, ..VerifyConfig::default() },
            prober: ProberConfig::default(),
            rate_limit: RateLimit::default(),
            policy: Policy::default(),
            key: None,
            wall: WallClock::now(),
            dns: None,
            bridges: BridgeConfig::default(),
            watches: WatchConfig::default(),
        }
    }
}

/// Counters of the node beyond the registration protocol's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    send_failures: u64,
    announcements: u64,
    multicast_ignored: u64,
    removed_unreachable: u64,
}

/// How many datagrams may wait to be sent; more are dropped and counted.
const OUTBOX_CAPACITY: usize = 65_536;

/// The broker's core. See the [module documentation](self).
#[derive(Debug)]
pub struct Node {
    registry: Registry,
    service: Service,
    group: Option<group::Group>,
    replicator: replicate::Replicator,
    verifier: verify::Verifier,
    bridges: bridge::Bridges,
    watches: watch::Watches,
    /// Peer and group datagrams (sealed with a key).
    outbox: Outbox<Face>,
    /// Deferred answers to clients (bridged queries): never sealed.
    replies: Outbox<Face>,
    /// This run's incarnation, on the node's peer datagrams.
    incarnation: u64,
    prober: Prober,
    limiter: ResponseLimiter,
    /// With a key: seals what the node sends to peers and the group, and opens what they send.
    sealer: Option<Sealer>,
    guard: ReplayGuard,
    wall: WallClock,
    counters: Counters,
    log_changes: bool,
    started: Option<Instant>,
    /// The zone the DNS face answers for.
    dns: Option<dns::Zone>,
}

impl Node {
    /// A node with an empty table; `new_id` makes the ids of new registrations.
    pub fn new(config: NodeConfig, new_id: impl FnMut() -> Uuid + Send + 'static) -> Self {
        let mut replica = config.replica;
        replica.discover &= config.group.is_some();
        let registry = Registry::new(config.registry, new_id);
        let mut service = Service::new(&registry, config.max_datagram);
        service.set_policy(config.policy);
        let bridges = bridge::Bridges::new(config.bridges);
        service.set_bridging(bridges.is_on());
        Node {
            registry,
            service,
            group: config.group.map(|group| group::Group::new(group, config.unicast)),
            replicator: replicate::Replicator::new(config.incarnation, config.unicast, replica),
            verifier: verify::Verifier::new(config.verify),
            bridges,
            watches: watch::Watches::new(config.watches),
            outbox: Outbox::new(OUTBOX_CAPACITY),
            replies: Outbox::new(OUTBOX_CAPACITY),
            incarnation: config.incarnation,
            prober: Prober::new(config.prober),
            limiter: ResponseLimiter::new(config.rate_limit),
            sealer: config.key.map(|key| Sealer::new(key, config.incarnation)),
            guard: ReplayGuard::new(),
            wall: config.wall,
            counters: Counters::default(),
            log_changes: config.log_changes,
            started: None,
            dns: config
                .dns
                .as_ref()
                .and_then(|dns| dns::Zone::new(dns).inspect_err(|e| log::error!("no DNS face: {e}")).ok()),
        }
    }

    /// The table.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether the node holds the whole table (it is not catching up from peers).
    pub fn is_complete(&self) -> bool {
        self.replicator.is_complete()
    }

    /// The counters, as `stats` reports them, at `now`.
    pub fn stats(&self, now: Instant) -> BrokerStats {
        let service = self.service.counters();
        let replication = self.replicator.stats();
        let probes = self.prober.stats();
        let peers = self.replicator.peer_stats(now);
        let limited = self.limiter.stats();
        BrokerStats {
            instances: self.registry.len() as u64,
            services: self.registry.service_count() as u64,
            received: service.received,
            rejected: service.rejected,
            expired: self.registry.expired_total(),
            send_failures: self.counters.send_failures + self.outbox.dropped() + self.replies.dropped(),
            announcements: self.counters.announcements,
            multicast_ignored: self.counters.multicast_ignored,
            complete: self.is_complete(),
            replicated_out: replication.sent,
            replicated_in: replication.applied,
            retransmits: replication.retransmits,
            peer_rejected: replication.rejected,
            probes: probes.started,
            probes_dead: probes.dead,
            reports: self.verifier.reports,
            removed_unreachable: self.counters.removed_unreachable,
            refused_full: service.full,
            refused_quota: service.quota,
            refused_policy: service.not_allowed,
            refused_reports: service.too_many,
            rate_dropped: limited.dropped,
            rate_slipped: limited.slipped,
            peer_count: peers.len() as u64,
            peers_up: peers.iter().filter(|p| p.up).count() as u64,
            peers,
            bridged: self.bridges.stats.bridged,
            bridged_found: self.bridges.stats.found,
            bridge_queries: self.bridges.stats.answered,
            bridges: self.bridges.stats(now),
            watches: self.watches.len() as u64,
            watch_notifications: self.watches.stats.sent,
            watch_dropped: self.watches.stats.dropped,
        }
    }

    /// What the metrics page shows, at `now`.
    pub fn metrics(&self, now: Instant) -> crate::metrics::BrokerMetrics {
        crate::metrics::BrokerMetrics { stats: self.stats(now), requests: self.service.counters().requests }
    }

    /// A datagram on the client face: a peer's, or a request. Returns whether `reply` holds an
    /// answer to send.
    fn handle_client(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], reply: &mut Vec<u8>) -> bool {
        if peer::is_peer(datagram) || seal::is_sealed(datagram) {
            // With a key, peers' datagrams come sealed, and only so.
            let Some(inner) = self.open(now, datagram) else {
                self.replicator.note_rejected();
                return false;
            };
            let Ok(frame) = peer::decode(inner) else {
                self.replicator.note_rejected();
                return false;
            };
            if let Peer::Query { .. } | Peer::Answer { .. } = frame.body {
                self.handle_bridge(now, from, datagram.len(), frame.body);
                return false;
            }
            let report = self.replicator.handle(now, from, frame, &mut self.registry, &mut self.outbox);
            if let Some((service, endpoint)) = report {
                // Forwarded by a peer: verify it if it is registered here too.
                if self.registry.contains(now, &service, endpoint) {
                    self.verifier.verify(now, endpoint, &mut self.prober);
                }
            }
            return false;
        }
        self.service.set_catching_up(!self.replicator.is_complete());
        let form = match self.service.handle(&mut self.registry, now, from, datagram, reply) {
            Handled::Replied(form) => form,
            Handled::Other { form, request: Request::Query { service } } => {
                if !self.bridge_query(now, from, form, datagram.len(), service, reply) {
                    return false;
                }
                form
            }
            Handled::Other { form, request } => {
                let response = match request {
                    Request::Stats => {
                        self.stats_reply(now, form, reply);
                        return self.limit(now, from, form, datagram.len(), reply);
                    }
                    Request::Report { service, endpoint } => self.report(now, from, service, endpoint),
                    Request::Watch { service } => self.watch(now, from, form, service),
                    Request::Unwatch { service } => self.unwatch(from, service),
                    other => Response::Error(Rejection::Unsupported { what: format!("{other:?}") }),
                };
                self.service.reply(form, &response, reply);
                form
            }
        };
        self.limit(now, from, form, datagram.len(), reply)
    }

    /// The datagram inside a sealed one, when a key is configured (and it opens); the datagram
    /// itself when none is and it is not sealed. `None`: drop it.
    fn open<'a>(&mut self, now: Instant, datagram: &'a [u8]) -> Option<&'a [u8]> {
        match &self.sealer {
            Some(sealer) => self.guard.open(sealer.key(), datagram, self.wall.unix_ms(now)).ok(),
            None => (!seal::is_sealed(datagram)).then_some(datagram),
        }
    }

    /// Response-rate limiting (see [`crate::limit`]): whether to send `reply` (or the short
    /// answer it was replaced by) to `from`.
    fn limit(&mut self, now: Instant, from: SocketAddr, form: Form, request_len: usize, reply: &mut Vec<u8>) -> bool {
        self.limiter.limit_reply(now, from.ip(), form, request_len, reply)
    }

    /// A client reports an instance dead: `OK` at once when it is registered; then it is
    /// verified by the broker that owns its checks.
    fn report(&mut self, now: Instant, from: SocketAddr, service: &str, endpoint: SocketAddr) -> Response {
        if let Err(rejection) = self.registry.config().limits.check_name(service) {
            return Response::Error(rejection);
        }
        if let Err(max) = self.verifier.admit(now, from.ip().to_canonical()) {
            return Response::Error(Rejection::TooMany { what: "reports".into(), max });
        }
        if !self.registry.contains(now, service, endpoint) {
            return self.service.not_found();
        }
        match self.replicator.owner(endpoint) {
            None => self.verifier.verify(now, endpoint, &mut self.prober),
            Some(owner) => self.replicator.forward_report(owner, service, endpoint, &mut self.outbox),
        }
        Response::Ok
    }

    /// The `stats` answer, with as many peers as fit in one reply. Expired leases go first, so
    /// the counts are of live instances only.
    fn stats_reply(&mut self, now: Instant, form: Form, reply: &mut Vec<u8>) {
        self.registry.handle_timeout(now);
        let mut stats = self.stats(now);
        loop {
            protocol::encode_reply(form, &Response::Stats(Box::new(stats.clone())), reply);
            if reply.len() <= MAX_REPLY_LEN || (stats.peers.pop().is_none() && stats.bridges.pop().is_none()) {
                return;
            }
        }
    }

    /// Hands every change since the last call to everything that follows the table, sends what
    /// must go at once, and moves checks when the live brokers changed.
    fn after_input(&mut self, now: Instant) {
        while let Some(change) = self.registry.poll_change() {
            if self.log_changes {
                log_change(&change);
            }
            self.replicator.on_change(now, &change);
            let replicator = &self.replicator;
            self.verifier.on_change(now, &change, |endpoint| replicator.owner(endpoint).is_none());
            if change.kind != ChangeKind::Refreshed {
                self.watches.on_change(&change.service);
            }
        }
        self.flush_watches(now);
        self.replicator.flush(now, &self.registry, &mut self.outbox);
        if self.replicator.take_membership_changed() {
            let replicator = &self.replicator;
            self.verifier.rebalance(now, |endpoint| replicator.owner(endpoint).is_none());
        }
        while let Some(event) = self.replicator.poll_event() {
            log_peer_event(&event);
        }
    }

    /// Acts on finished probes.
    fn take_probe_results(&mut self, now: Instant) {
        while let Some((endpoint, probe)) = self.prober.poll_result() {
            match self.verifier.on_result(endpoint, probe) {
                Some(verify::Action::Remove { endpoint, services, why }) => {
                    for service in services {
                        let removed = self.registry.remove_instance(now, &service, endpoint, RemoveReason::Unreachable);
                        if removed > 0 {
                            self.counters.removed_unreachable += 1;
                            log::warn!("{service} {endpoint} is unreachable ({why}): removed everywhere");
                        }
                    }
                }
                Some(verify::Action::Kept { endpoint }) => {
                    log::info!("{endpoint} was reported dead but answers: kept");
                }
                None => {}
            }
        }
    }
}

impl Core for Node {
    type Face = Face;

    fn handle_datagram(
        &mut self,
        now: Instant,
        face: Face,
        from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> Option<Face> {
        let out = match face {
            Face::Client => self.handle_client(now, from, datagram, reply).then_some(Face::Client),
            Face::Group => self.handle_group(now, from, datagram, reply).then_some(Face::Client),
            Face::Dns => self.handle_dns(now, from, datagram, reply).then_some(Face::Dns),
            // Nothing is sent to it but stray replies: ignored.
            Face::GroupOut | Face::DnsTcp | Face::Metrics => None,
        };
        self.after_input(now);
        out
    }

    fn handle_stream(
        &mut self,
        now: Instant,
        face: Face,
        _conn: ConnId,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> StreamStep {
        let step = match face {
            Face::DnsTcp => self.handle_dns_stream(now, input, output),
            Face::Metrics => crate::metrics::serve_http(input, output, || crate::metrics::broker(&self.metrics(now))),
            _ => StreamStep { consumed: input.len(), close: true },
        };
        self.after_input(now);
        step
    }

    fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Transmit<Face>> {
        if let Some(reply) = self.replies.pop(out) {
            return Some(reply);
        }
        let transmit = self.outbox.pop(out)?;
        // Everything queued goes to peers or the group: sealed, with a key.
        if let Some(sealer) = &mut self.sealer {
            sealer.seal_in_place(out, self.wall.unix_ms(now));
        }
        Some(transmit)
    }

    fn poll_probe(&mut self) -> Option<ProbeCmd> {
        self.prober.poll_command()
    }

    fn handle_probe(&mut self, now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        self.prober.handle_outcome(now, id, outcome);
        self.take_probe_results(now);
        self.after_input(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.registry.poll_timeout(),
            self.prober.poll_timeout(),
            self.replicator.poll_timeout(),
            self.verifier.poll_timeout(),
            self.group.as_ref().and_then(group::Group::poll_timeout),
            self.bridges.poll_timeout(),
            self.watches.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.registry.handle_timeout(now);
        self.replicator.handle_timeout(now, &mut self.registry, &mut self.outbox);
        self.verifier.handle_timeout(now, &mut self.prober);
        self.prober.handle_timeout(now);
        self.take_probe_results(now);
        self.group_timeout(now);
        self.bridges.handle_timeout(now);
        self.flush_bridges(now);
        self.after_input(now);
        // After the changes due by now were told: a watch live when they happened hears of them.
        self.watches.handle_timeout(now);
    }

    fn handle_send_error(&mut self, _face: Face, _to: SocketAddr, _error: &io::Error) {
        // A full send buffer or an unroutable source: the client retransmits.
        self.counters.send_failures += 1;
    }

    fn handle_start(&mut self, now: Instant) {
        self.started = Some(now);
        self.replicator.start(now);
        self.group_timeout(now);
        self.after_input(now);
    }

    fn handle_close(&mut self, _now: Instant) {
        self.replicator.bye(&mut self.outbox);
    }
}
