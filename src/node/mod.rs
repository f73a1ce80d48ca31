//! The broker's sans-IO core: everything a broker does, with no socket and no clock.
//!
//! A [`Node`] owns the [`Registry`] and everything that works on it. The
//! [`Shell`](crate::shell::Shell) feeds it datagrams, bytes and probe outcomes on its
//! [`Face`]s and the time, and polls it for datagrams to send, probes to run and its next
//! timeout (see [`Core`](crate::core::Core)).
//!
//! # Who owns what
//!
//! - The node (this file, its settings in `config.rs`) owns the shared state: the table
//!   ([`Registry`]), the registration protocol ([`Service`]), the response-rate limiter, the
//!   key that seals peer and group datagrams and the replay guards (the peers', the clients'
//!   for sealed requests: `keyed.rs`, and the group's), the two outgoing queues (peer and group
//!   datagrams, sealed when they leave; deferred answers to clients, sealed only to clients that
//!   asked sealed), and the counters of what it decides itself (send failures, removals).
//! - Each sub-machine owns its own state, every field private:
//!   [`Replicator`](replicate::Replicator) (the peers, [deltas](replicate) and
//!   [catch-up](replicate::sync)), the verifier of reports and health checks ([`verify`], which
//!   owns the [`Prober`](crate::probe::Prober)), the [bridges](bridge), the [watches](watch),
//!   the multicast group (`group.rs`), the DNS face (`dns_face.rs`, answering with
//!   [`dns`]) and the mDNS face ([`mdns`]).
//! - Reloads (SIGHUP) are in [`reload`]: which settings a running node takes anew, and what
//!   becomes of what is already there.
//! - The node's glue is in `dispatch.rs`: how an input is routed between the sub-machines,
//!   where their output is drained, and the [`Core`](crate::core::Core) implementation.
//!
//! # One convention
//!
//! Every sub-machine speaks as quinn-proto's connection does: `handle_*` methods take input
//! (with `now` when time matters), and output leaves through `poll_transmit` (a datagram with
//! its face and destination), `poll_timeout` (when to call `handle_timeout` next) and
//! `poll_event` (something only the node can act on: a broker heard on the group, a forwarded
//! report, a change of the live brokers, an endpoint to remove, an answer that must pass the
//! rate limit). No sub-machine writes into the node's queues: the node drains each one's
//! output in one place (`Node::drain`), right after the input that produced it, so
//! datagrams leave in the order they were decided, and seals peer and group datagrams when
//! they leave. The table is lent (`&mut Registry`) for the one call that reads or changes it.
//!
//! After every input the node drains the registry's change log once and hands each change to
//! everything that follows the table: the log, the replicator, the verifier, the watches.
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
mod catalog;
mod catalog_names;
#[cfg(test)]
mod check_tests;
mod config;
mod dispatch;
pub mod dns;
mod dns_face;
#[cfg(test)]
mod entropy_sim_tests;
mod group;
mod key_warn;
mod keyed;
mod logging;
pub mod mdns;
#[cfg(test)]
mod mdns_tests;
#[cfg(test)]
mod meta_sim_tests;
#[cfg(test)]
mod random_cluster_tests;
pub mod reload;
#[cfg(test)]
mod reload_tests;
pub mod replicate;
#[cfg(test)]
mod replicate_tests;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod slot_sim_tests;
mod stats;
#[cfg(test)]
mod tests;
pub mod verify;
#[cfg(test)]
mod verify_tests;
pub mod watch;
#[cfg(test)]
mod watch_tests;

use std::net::SocketAddr;
use std::time::Instant;

use uuid::Uuid;

use crate::core::Outbox;
use crate::limit::ResponseLimiter;
use crate::protocol::fit;
use crate::protocol::peer::{self, Peer};
use crate::protocol::seal::{self, ReplayGuard, Sealer};
use crate::protocol::{BrokerStats, Form, Rejection, Response};
use crate::registry::Registry;
use crate::service::{self, Service};

pub use bridge::BridgeConfig;
pub use config::{Face, GroupConfig, NodeConfig, WallClock};
pub use dns::DnsConfig;
pub use dns_face::DNS_TCP_LIMITS;
pub use keyed::MAX_CLIENTS;
pub use mdns::MdnsConfig;
pub use reload::{Change, Command, Reloadable};
pub use replicate::{PeerEvent, ReplicaConfig, ReplicationStats};
pub use verify::VerifyConfig;
pub use watch::WatchConfig;

/// Counters of the node beyond the registration protocol's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    send_failures: u64,
    removed_unreachable: u64,
    /// Peer datagrams sent and received (bridges' included), bytes as on the wire (sealed).
    peer_bytes_out: u64,
    peer_bytes_in: u64,
    /// Sealed datagrams on the client face that did not open (another key, forged, stale,
    /// replayed), peers' and clients' alike.
    sealed_dropped: u64,
}

/// How many datagrams may wait to be sent; more are dropped and counted.
const OUTBOX_CAPACITY: usize = 65_536;

/// The broker's core. See the [module documentation](self).
#[derive(Debug)]
pub struct Node {
    /// The table: the node's, lent to a sub-machine for the call that reads or changes it.
    registry: Registry,
    service: Service,
    // The sub-machines: each owns its state; the node drains their output (see `drain`).
    group: group::Group,
    replicator: replicate::Replicator,
    verifier: verify::Verifier,
    bridges: bridge::Bridges,
    watches: watch::Watches,
    /// Peer and group datagrams (sealed with a key when they leave).
    outbox: Outbox<Face>,
    /// Where a sub-machine's datagram passes on its way to a queue.
    scratch: Vec<u8>,
    /// Deferred answers to clients (bridged queries) and watch notifications: sealed only to
    /// clients that asked sealed (see [`keyed`]).
    replies: Outbox<Face>,
    limiter: ResponseLimiter,
    /// With a key: seals what the node sends to peers and the group, and opens what they send.
    sealer: Option<Sealer>,
    guard: ReplayGuard,
    /// The replay windows of clients' sealed requests: apart from the peers', so that many
    /// short-lived clients cannot push a peer's window out (see [`keyed`]).
    client_guard: ReplayGuard,
    /// The replay windows of what arrives on the multicast group (announcers, discoveries,
    /// brokers' hellos): apart from the peers' too, since every announcer and every discovery
    /// is a new sender.
    group_guard: ReplayGuard,
    /// Clients whose deferred answers and watch notifications leave sealed (see [`keyed`]).
    sealed_to: keyed::SealedTo,
    /// Rate-limited warnings about datagrams that do not open with the key.
    key_warnings: key_warn::KeyWarnings,
    wall: WallClock,
    counters: Counters,
    log_changes: bool,
    /// Whether the last end of a turn ([`after_input`](Self::after_input)) left every
    /// sub-machine with nothing to say: then an input that touched only the table and the
    /// reply (`quiet_input`) needs no end of turn unless the table logged a change.
    settled: bool,
    /// Set only when the protocol answered a client's request from the table alone (a query:
    /// [`service::Context::answered_from_table`]), cleared before every client request.
    quiet_input: bool,
    started: Option<Instant>,
    /// The DNS face.
    dns: dns_face::DnsFace,
    /// Advertising on and importing from the link (`--mdns`).
    mdns: mdns::Mdns,
    /// The services' names in order, for `/v1/services` (built when first asked).
    service_names: catalog_names::ServiceNames,
}

impl Node {
    /// A node with an empty table; `new_id` makes the ids of new registrations.
    pub fn new(config: NodeConfig, new_id: impl FnMut() -> Uuid + Send + 'static) -> Self {
        let mut replica = config.replica;
        replica.discover &= config.group.is_some();
        replica.mdns_link = mdns::advertised_link(config.mdns.as_ref());
        let registry = Registry::new(config.registry, new_id);
        let mut service = Service::new(&registry, config.max_datagram);
        service.set_policy(config.policy);
        service.set_require_key(config.require_key);
        let bridges = bridge::Bridges::new(config.bridges, config.incarnation);
        Node {
            registry,
            service,
            group: group::Group::new(config.group, config.unicast, config.cluster),
            replicator: replicate::Replicator::new(config.incarnation, config.unicast, replica),
            verifier: verify::Verifier::new(config.verify, config.prober),
            bridges,
            watches: watch::Watches::new(config.watches, config.watch_key),
            outbox: Outbox::new(OUTBOX_CAPACITY),
            scratch: Vec::new(),
            replies: Outbox::new(OUTBOX_CAPACITY),
            limiter: ResponseLimiter::new(config.rate_limit),
            sealer: config.key.map(|key| Sealer::new(key, config.incarnation)),
            guard: ReplayGuard::new(),
            client_guard: ReplayGuard::with_capacity(keyed::MAX_CLIENTS),
            group_guard: ReplayGuard::with_capacity(keyed::MAX_CLIENTS),
            sealed_to: keyed::SealedTo::default(),
            key_warnings: key_warn::KeyWarnings::default(),
            wall: config.wall,
            counters: Counters::default(),
            log_changes: config.log_changes,
            settled: false,
            quiet_input: false,
            started: None,
            dns: dns_face::DnsFace::new(
                config.dns.as_ref(),
                config
                    .key
                    .filter(|_| config.require_key == crate::service::policy::RequireKey::All)
                    .filter(|_| config.dns.as_ref().is_some_and(|dns| !dns.unsealed))
                    .map(|key| dns::tsig::Tsig::new(&key)),
                config.wall,
            ),
            mdns: mdns::Mdns::new(config.mdns.as_ref()),
            service_names: catalog_names::ServiceNames::default(),
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

    /// The counters, as `stats` reports them, at `now` (the table is in `stats.rs`).
    pub fn stats(&self, now: Instant) -> BrokerStats {
        stats::collect(self, now)
    }

    /// Every counter `stats` reports, in the order of its text line: what the counters are,
    /// for documentation and tests.
    pub fn counter_defs() -> impl Iterator<Item = &'static crate::protocol::stats::Def> {
        stats::COUNTERS.iter().map(|row| &row.def)
    }

    /// What the metrics page shows, at `now`.
    pub fn metrics(&self, now: Instant) -> crate::metrics::BrokerMetrics {
        crate::metrics::BrokerMetrics {
            counters: stats::values(self, now).collect(),
            peers: self.replicator.peer_stats(now),
            bridges: self.bridges.stats(now),
            requests: self.service.counters().requests,
        }
    }

    /// A datagram on the client face: a peer's, or a request. Returns whether `reply` holds an
    /// answer to send.
    fn handle_client(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], reply: &mut Vec<u8>) -> bool {
        if seal::is_sealed(datagram) && self.sealer.is_some() {
            let answered = self.handle_sealed(now, from, datagram, reply);
            // A sealed request always ends its turn (its replay guard and sealing state).
            self.quiet_input = false;
            return answered;
        }
        if peer::is_peer(datagram) || seal::is_sealed(datagram) {
            self.counters.peer_bytes_in += datagram.len() as u64;
            // With a key, peers' datagrams come sealed, and only so.
            let Some(inner) = self.open(now, from, datagram) else {
                self.replicator.note_rejected();
                return false;
            };
            return self.handle_peer(now, from, datagram.len(), inner);
        }
        self.quiet_input = false;
        match service::handle(self, now, from, datagram, reply) {
            Some(written) => self.limit(now, from, written, datagram.len(), reply),
            None => false,
        }
    }

    /// A peer's datagram (`inner`, opened if it came sealed, `len` bytes on the wire).
    fn handle_peer(&mut self, now: Instant, from: SocketAddr, len: usize, inner: &[u8]) -> bool {
        let Ok(frame) = peer::decode(inner) else {
            self.replicator.note_rejected();
            return false;
        };
        if let Peer::Query { .. } | Peer::Answer { .. } = frame.body {
            self.handle_bridge(now, from, len, frame.body);
            return false;
        }
        self.replicator.handle_datagram(now, from, frame, &mut self.registry);
        false
    }

    /// The datagram inside a sealed one, when a key is configured (and it opens); the datagram
    /// itself when none is and it is not sealed. `None`: drop it; when the key is the likely
    /// reason (brokers given different key files, or one none), a warning naming `from` is
    /// logged, at most once a minute per source.
    fn open<'a>(&mut self, now: Instant, from: SocketAddr, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let trouble = match &self.sealer {
            Some(sealer) => match self.group_guard.open(sealer.key(), datagram, self.wall.unix_ms(now)) {
                Ok(inner) => return Some(inner),
                Err(error) => key_warn::KeyTrouble::of(error),
            },
            None if !seal::is_sealed(datagram) => return Some(datagram),
            None => Some(key_warn::KeyTrouble::NoKey),
        };
        if let Some(warning) = trouble.and_then(|trouble| self.key_warnings.warning(now, from, trouble)) {
            log::warn!("{warning}");
        }
        None
    }

    /// Response-rate limiting (see [`crate::limit`]): whether to send `reply` (or the short
    /// answer it was replaced by) to `from`.
    fn limit(
        &mut self,
        now: Instant,
        from: SocketAddr,
        written: service::Written,
        request_len: usize,
        reply: &mut Vec<u8>,
    ) -> bool {
        self.limiter.limit_reply(now, from.ip(), written.form, request_len, reply, written.kind)
    }

    /// A client reports an instance dead: `OK` at once when it is registered; then, if it
    /// declares a check, it is verified by the broker that owns its checks.
    fn report(&mut self, now: Instant, from: SocketAddr, service: &str, endpoint: SocketAddr) -> Response {
        if let Err(rejection) = self.registry.config().limits.check_name(service) {
            return Response::Error(rejection);
        }
        if let Err(max) = self.verifier.admit(now, from.ip().to_canonical()) {
            return Response::Error(Rejection::TooMany { what: "reports".into(), max });
        }
        if !self.registry.contains(now, service, endpoint) {
            return service::not_found(!self.is_complete());
        }
        // An instance that declares no check is never probed: the report is only counted.
        if !self.verifier.is_checked(service, endpoint) {
            return Response::Ok;
        }
        match self.replicator.owner(endpoint) {
            None => self.verifier.handle_report(now, endpoint),
            Some(owner) => self.replicator.forward_report(owner, service, endpoint),
        }
        Response::Ok
    }

    /// The `stats` answer in `form`, fitted to one reply ([`fit::broker_stats`]). Expired
    /// leases go first, so the counts are of live instances only.
    fn stats_reply(&mut self, now: Instant, form: Form) -> Response {
        self.registry.handle_timeout(now);
        Response::Stats(Box::new(fit::broker_stats(form, self.stats(now))))
    }
}

/// The requests only the broker answers, for the registration protocol's router (see
/// [`service::handle`]).
impl service::Context for Node {
    fn parts(&mut self) -> (&mut Service, &mut Registry) {
        (&mut self.service, &mut self.registry)
    }

    fn answered_from_table(&mut self) {
        self.quiet_input = true;
    }

    fn catching_up(&self) -> bool {
        !self.is_complete()
    }

    fn bridging(&self) -> bool {
        self.bridges.is_on()
    }

    fn answer_bridged(
        &mut self,
        now: Instant,
        from: SocketAddr,
        form: Form,
        request_len: usize,
        service: &str,
    ) -> Option<Response> {
        self.sealed_to.note(from);
        // From the cache, or `NOT FOUND` with no bridge up; else answered when the bridges have.
        let answer = self.bridges.handle_query(now, service, from, form, request_len);
        self.drain(now);
        answer
    }

    fn answer_stats(&mut self, now: Instant, form: Form) -> Response {
        self.stats_reply(now, form)
    }

    fn answer_report(&mut self, now: Instant, from: SocketAddr, service: &str, endpoint: SocketAddr) -> Response {
        self.report(now, from, service, endpoint)
    }

    fn answer_watch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        form: Form,
        service: &str,
        cookie: Option<u64>,
    ) -> Response {
        self.sealed_to.note(from);
        self.watches.handle_watch(now, from, form, service, cookie, false, &mut self.registry)
    }

    fn answer_watch_meta(
        &mut self,
        now: Instant,
        from: SocketAddr,
        form: Form,
        service: &str,
        cookie: u64,
    ) -> Response {
        self.sealed_to.note(from);
        self.watches.handle_watch(now, from, form, service, Some(cookie), true, &mut self.registry)
    }

    fn answer_unwatch(&mut self, now: Instant, from: SocketAddr, service: &str, cookie: Option<u64>) -> Response {
        self.watches.handle_unwatch(now, from, service, cookie)
    }
}
