//! Replication between the brokers of one redundant service, as a sans-IO state machine.
//!
//! Every broker sends every other one (a full mesh: `--peers`, or found on the multicast group)
//! what changed in its own table, and nothing it learned from a peer, since that peer tells
//! everyone itself:
//!
//! - **Hellos** every hello interval keep peers alive; a peer unheard of for the peer timeout is
//!   down (no more deltas), and is taken back when it speaks again. A hello from a new
//!   incarnation (a restarted broker) is answered at once, so it learns of its peers in one
//!   round trip.
//! - **Deltas**: a new lease or a removal is sent at once (batched per turn of the loop);
//!   renewals are coalesced over the refresh window and sent together. Every delta is
//!   acknowledged and resent a few times with backoff until it is, so a lost datagram costs a
//!   retransmission, not a TTL. Leases travel with their remaining time; the receiver merges
//!   them by the registry's rule (`registry::remote`), which makes every delta idempotent and
//!   order-free, and tombstones keep a removal from being undone by a late renewal.
//! - **Catch-up** (see [`sync`](super::sync)): a broker that starts while peers run pulls a
//!   complete peer's table page by page before it claims to be complete, applying live deltas
//!   meanwhile.
//! - **Ownership**: each instance is probed by one broker, chosen by rendezvous hashing of the
//!   endpoint over the live, complete brokers' incarnations, so every broker agrees without
//!   talking about it.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Face;
use super::sync::CatchUp;
use crate::core::Outbox;
use crate::protocol::peer::{self, Entry, Lease, Peer, PeerFrame};
use crate::protocol::{PeerStats, RemoveReason};
use crate::registry::{Applied, Change, ChangeKind, LeaseView, Registry};
use crate::timers::Timers;

/// How brokers replicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The other brokers, by the address clients use (the broker's own address may be in the
    /// list; it is recognised and skipped).
    pub peers: Vec<SocketAddr>,
    /// Take brokers that say hello on the multicast group as peers too.
    pub discover: bool,
    /// How often to say hello to every peer.
    pub hello_interval: Duration,
    /// A peer unheard of for this long is down.
    pub peer_timeout: Duration,
    /// Renewals are collected for this long and sent together.
    pub refresh_batch: Duration,
    /// The first retransmission of an unacknowledged delta comes after this; then twice as long
    /// each time.
    pub retransmit: Duration,
    /// How often a delta is resent before it is given up (the next renewal repairs it).
    pub retries: u8,
    /// How long a starting broker waits for a complete peer before it takes itself as complete
    /// (it is the first, or its peers are starting too).
    pub catch_up_grace: Duration,
    /// Pages asked for at once while catching up.
    pub sync_pages: u8,
    /// Peers kept at most (configured ones count too).
    pub max_peers: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            peers: Vec::new(),
            discover: false,
            hello_interval: Duration::from_millis(500),
            peer_timeout: Duration::from_secs(2),
            refresh_batch: Duration::from_millis(200),
            retransmit: Duration::from_millis(100),
            retries: 4,
            catch_up_grace: Duration::from_secs(1),
            sync_pages: 16,
            max_peers: 32,
        }
    }
}

/// Something about the peers worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A peer came up (first heard, or back after being down).
    Joined(SocketAddr),
    /// A peer went down (silent for the peer timeout, or it said goodbye).
    Left(SocketAddr),
    /// A peer restarted (a new incarnation at the same address).
    Restarted(SocketAddr),
    /// This broker holds the whole table now: pulled `leases` from `from`, or from nobody
    /// because no complete peer answered within the grace time.
    CaughtUp {
        /// The peer the table came from.
        from: Option<SocketAddr>,
        /// How many leases the pages carried.
        leases: u64,
    },
}

/// Counters of replication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Entries sent in deltas (counted once per peer).
    pub sent: u64,
    /// Entries received in deltas and pages and applied.
    pub applied: u64,
    /// Deltas resent for want of an acknowledgement.
    pub retransmits: u64,
    /// Deltas given up after the last retry.
    pub given_up: u64,
    /// Peer datagrams dropped: from addresses that are not peers, malformed, or another version.
    pub rejected: u64,
}

#[derive(Debug)]
pub(super) struct PeerState {
    pub addr: SocketAddr,
    pub configured: bool,
    /// The incarnation last heard from.
    pub node: Option<u64>,
    pub up: bool,
    pub last_heard: Option<Instant>,
    pub complete: bool,
    pub instances: u64,
    /// The address is this broker's own (it heard its own hello).
    pub is_self: bool,
    pub next_seq: u32,
    pub unacked: BTreeMap<u32, Unacked>,
}

/// A change to send: a lease by id (read from the table when sent), or a removal.
pub(super) type Item = (Uuid, Option<RemoveReason>);

#[derive(Debug)]
pub(super) struct Unacked {
    pub items: Vec<Item>,
    pub tries: u8,
    pub due: Instant,
}

/// An unacknowledged delta at most per peer is kept this many; older ones are given up.
pub(super) const MAX_UNACKED: usize = 4096;

/// The replicator. See the [module documentation](self).
#[derive(Debug)]
pub struct Replicator {
    pub(super) me: u64,
    addr: SocketAddr,
    pub(super) config: ReplicaConfig,
    pub(super) peers: Vec<PeerState>,
    /// Changes to send at once: new leases (by id, read from the table when sent) and removals.
    urgent: Vec<(Uuid, Option<RemoveReason>)>,
    refreshed: Vec<Uuid>,
    refreshed_set: HashSet<Uuid>,
    refresh_due: Option<Instant>,
    next_hello: Option<Instant>,
    pub(super) retransmits: Timers<(SocketAddr, u32)>,
    pub(super) catch_up: CatchUp,
    membership_changed: bool,
    pub(super) events: VecDeque<PeerEvent>,
    pub(super) stats: ReplicationStats,
    pub(super) scratch: Vec<u8>,
}

impl Replicator {
    /// A replicator for the broker of incarnation `me`, reached by clients at `addr`.
    pub fn new(me: u64, addr: SocketAddr, config: ReplicaConfig) -> Self {
        let mut replicator = Replicator {
            me,
            addr,
            peers: Vec::new(),
            urgent: Vec::new(),
            refreshed: Vec::new(),
            refreshed_set: HashSet::new(),
            refresh_due: None,
            next_hello: None,
            retransmits: Timers::new(),
            catch_up: CatchUp::Done { pulled: false },
            membership_changed: false,
            events: VecDeque::new(),
            stats: ReplicationStats::default(),
            scratch: Vec::new(),
            config,
        };
        for addr in replicator.config.peers.clone() {
            replicator.add_peer(addr, true);
        }
        replicator
    }

    /// Starts the clock: the first hellos go out, and catching up begins when peers are
    /// configured (see [`sync`](super::sync)).
    pub fn start(&mut self, now: Instant) {
        self.next_hello = Some(now);
        self.catch_up =
            if self.peers.is_empty() { CatchUp::Done { pulled: false } } else { CatchUp::Waiting { since: now } };
    }

    /// Follows a change of the table: this broker's own changes are sent to the peers.
    pub fn on_change(&mut self, now: Instant, change: &Change) {
        if change.by_peer {
            return;
        }
        match change.kind {
            ChangeKind::Registered => self.urgent.push((change.id, None)),
            ChangeKind::Refreshed => {
                if self.refreshed_set.insert(change.id) {
                    self.refreshed.push(change.id);
                    self.refresh_due.get_or_insert(now + self.config.refresh_batch);
                }
            }
            ChangeKind::Removed(reason) => {
                for &id in std::iter::once(&change.id).chain(&change.aliases) {
                    self.urgent.push((id, Some(reason)));
                }
            }
            // Every broker expires leases on its own clock.
            ChangeKind::Expired => {}
        }
    }

    /// A broker said hello on the multicast group: take it as a peer (when discovery is on),
    /// and say hello to it at once, so it knows this broker within a round trip.
    pub fn discovered(&mut self, addr: SocketAddr, registry: &Registry, out: &mut Outbox<Face>) {
        if self.config.discover && addr != self.addr && !self.peers.iter().any(|p| p.addr == addr) {
            self.add_peer(addr, false);
            if self.peers.iter().any(|p| p.addr == addr) {
                self.send_hello(addr, registry, out);
            }
        }
    }

    /// Whether the broker holds the whole table (it is not catching up).
    pub fn is_complete(&self) -> bool {
        self.catch_up.is_complete()
    }

    /// Whether the live brokers changed since the last call (ownership of probes moves).
    pub fn take_membership_changed(&mut self) -> bool {
        std::mem::take(&mut self.membership_changed)
    }

    /// The next thing worth logging about the peers.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// Counts a peer datagram dropped before it got here (unsealed, a wrong key, a replay).
    pub fn note_rejected(&mut self) {
        self.stats.rejected += 1;
    }

    /// The counters.
    pub fn stats(&self) -> ReplicationStats {
        self.stats
    }

    /// Every peer as `stats` shows it.
    pub fn peer_stats(&self, now: Instant) -> Vec<PeerStats> {
        self.peers
            .iter()
            .filter(|p| !p.is_self)
            .map(|p| PeerStats {
                addr: p.addr,
                up: p.up,
                complete: p.complete,
                instances: p.instances,
                last_heard_ms: p
                    .last_heard
                    .map(|at| u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)),
            })
            .collect()
    }

    /// The broker that checks `endpoint`: `None` for this one, else the peer's address.
    /// Rendezvous hashing over the incarnations of this broker and every live, complete peer.
    pub fn owner(&self, endpoint: SocketAddr) -> Option<SocketAddr> {
        let mut best = (score(self.me, endpoint), None);
        for peer in self.peers.iter().filter(|p| p.up && p.complete && !p.is_self) {
            let Some(node) = peer.node else { continue };
            let candidate = (score(node, endpoint), Some(peer.addr));
            if candidate.0 > best.0 {
                best = candidate;
            }
        }
        best.1
    }

    /// Handles a peer datagram from `from`. Returns a report to verify, when a peer forwarded
    /// one.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frame: PeerFrame<'_>,
        registry: &mut Registry,
        out: &mut Outbox<Face>,
    ) -> Option<(String, SocketAddr)> {
        // Peers are the configured ones and those found on the multicast group (whose hello
        // also makes this broker say hello to them): nobody becomes a peer by saying hello to
        // the unicast port, so a spoofed source cannot be made a peer and sent pages.
        let Some(index) = self.peers.iter().position(|p| p.addr == from) else {
            self.stats.rejected += 1;
            return None;
        };
        if frame.node == self.me {
            // Our own address is in the peer list.
            let peer = &mut self.peers[index];
            peer.is_self = true;
            peer.unacked.clear();
            return None;
        }
        let fresh = self.heard(now, index, frame.node);
        match frame.body {
            Peer::Hello { complete, instances, .. } => {
                let peer = &mut self.peers[index];
                if peer.complete != complete {
                    self.membership_changed = true;
                }
                peer.complete = complete;
                peer.instances = instances;
                if fresh {
                    // A new incarnation: tell it about us at once.
                    self.send_hello(from, registry, out);
                }
                self.consider_sync(now, index, out);
            }
            Peer::Delta { seq, entries } => {
                for entry in &entries {
                    self.apply(now, entry, registry);
                }
                let ack = PeerFrame { node: self.me, body: Peer::Ack { seq } };
                out.push(Face::Client, from, |bytes| peer::encode(&ack, bytes));
            }
            Peer::Ack { seq } => {
                if let Some(unacked) = self.peers[index].unacked.remove(&seq) {
                    self.retransmits.remove(unacked.due, (from, seq));
                }
            }
            Peer::SyncRequest { cursor, pages } => self.serve_pages(now, from, cursor, pages, registry, out),
            Peer::Page { cursor, next, leases } => {
                for lease in &leases {
                    self.apply_lease(now, lease, registry);
                }
                self.on_page(now, from, frame.node, cursor, next, leases.len(), out);
            }
            Peer::Report { service, endpoint } => return Some((service.to_owned(), endpoint)),
            Peer::Bye => self.down(index),
            // Bridge traffic is the node's, not the replicator's.
            Peer::Query { .. } | Peer::Answer { .. } => self.stats.rejected += 1,
        }
        None
    }

    /// Sends the changes waiting to go at once (new leases, removals), in as few datagrams as
    /// they fit, to every live peer.
    pub fn flush(&mut self, now: Instant, registry: &Registry, out: &mut Outbox<Face>) {
        if self.urgent.is_empty() {
            return;
        }
        let urgent = std::mem::take(&mut self.urgent);
        let entries = urgent.iter().map(|&(id, removal)| (id, removal));
        self.send_entries(now, entries, registry, out);
        self.urgent = urgent;
        self.urgent.clear();
    }

    /// Hellos, peers going down, retransmissions, coalesced renewals, catch-up.
    pub fn handle_timeout(&mut self, now: Instant, registry: &mut Registry, out: &mut Outbox<Face>) {
        if self.next_hello.is_some_and(|at| at <= now) {
            self.next_hello = Some(now + self.config.hello_interval);
            for index in 0..self.peers.len() {
                if !self.peers[index].is_self {
                    self.send_hello(self.peers[index].addr, registry, out);
                }
            }
            self.forget_silent_discoveries(now);
        }
        for index in 0..self.peers.len() {
            let peer = &self.peers[index];
            if peer.up && peer.last_heard.is_some_and(|at| at + self.config.peer_timeout <= now) {
                self.down(index);
            }
        }
        while let Some((addr, seq)) = self.retransmits.pop_due(now) {
            self.retransmit(now, addr, seq, registry, out);
        }
        if self.refresh_due.is_some_and(|at| at <= now) {
            self.refresh_due = None;
            let ids = std::mem::take(&mut self.refreshed);
            self.refreshed_set.clear();
            self.send_entries(now, ids.iter().map(|&id| (id, None)), registry, out);
            self.refreshed = ids;
            self.refreshed.clear();
        }
        self.catch_up_timeout(now, out);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let down = self
            .peers
            .iter()
            .filter(|p| p.up)
            .filter_map(|p| p.last_heard)
            .min()
            .map(|at| at + self.config.peer_timeout);
        [self.next_hello, self.refresh_due, self.retransmits.next(), down, self.catch_up.deadline(&self.config)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Asks `owner` to verify a reported instance.
    pub fn forward_report(&mut self, owner: SocketAddr, service: &str, endpoint: SocketAddr, out: &mut Outbox<Face>) {
        let frame = PeerFrame { node: self.me, body: Peer::Report { service, endpoint } };
        out.push(Face::Client, owner, |bytes| peer::encode(&frame, bytes));
    }

    /// Tells every live peer this broker is going.
    pub fn bye(&mut self, out: &mut Outbox<Face>) {
        let frame = PeerFrame { node: self.me, body: Peer::Bye };
        for peer in self.peers.iter().filter(|p| p.up && !p.is_self) {
            out.push(Face::Client, peer.addr, |bytes| peer::encode(&frame, bytes));
        }
    }

    fn add_peer(&mut self, addr: SocketAddr, configured: bool) {
        if (addr == self.addr && !addr.ip().is_unspecified()) || self.peers.len() >= self.config.max_peers {
            return;
        }
        if self.peers.iter().any(|p| p.addr == addr) {
            return;
        }
        self.peers.push(PeerState {
            addr,
            configured,
            node: None,
            up: false,
            last_heard: None,
            complete: false,
            instances: 0,
            is_self: false,
            next_seq: 1,
            unacked: BTreeMap::new(),
        });
    }

    /// Notes that peer `index` spoke as incarnation `node`; returns whether that incarnation is
    /// new to us.
    fn heard(&mut self, now: Instant, index: usize, node: u64) -> bool {
        let peer = &mut self.peers[index];
        peer.last_heard = Some(now);
        let fresh = peer.node != Some(node);
        if fresh {
            if peer.node.is_some() {
                self.events.push_back(PeerEvent::Restarted(peer.addr));
            }
            peer.node = Some(node);
            peer.complete = false;
            // The old incarnation will never acknowledge.
            for (seq, unacked) in std::mem::take(&mut peer.unacked) {
                self.retransmits.remove(unacked.due, (peer.addr, seq));
            }
            self.membership_changed = true;
        }
        if !peer.up {
            peer.up = true;
            self.events.push_back(PeerEvent::Joined(peer.addr));
            self.membership_changed = true;
        }
        fresh
    }

    fn down(&mut self, index: usize) {
        let peer = &mut self.peers[index];
        if !peer.up {
            return;
        }
        peer.up = false;
        peer.complete = false;
        for (seq, unacked) in std::mem::take(&mut peer.unacked) {
            self.retransmits.remove(unacked.due, (peer.addr, seq));
        }
        self.events.push_back(PeerEvent::Left(peer.addr));
        self.membership_changed = true;
        let addr = peer.addr;
        self.catch_up.peer_left(addr);
    }

    /// Peers found on the group that have not spoken for a long time are forgotten.
    fn forget_silent_discoveries(&mut self, now: Instant) {
        let limit = self.config.peer_timeout * 15;
        self.peers.retain(|p| {
            p.configured || p.up || p.last_heard.is_some_and(|at| at + limit > now) || p.last_heard.is_none()
        });
    }

    fn send_hello(&mut self, to: SocketAddr, registry: &Registry, out: &mut Outbox<Face>) {
        let frame = PeerFrame {
            node: self.me,
            body: Peer::Hello { addr: self.addr, complete: self.is_complete(), instances: registry.len() as u64 },
        };
        out.push(Face::Client, to, |bytes| peer::encode(&frame, bytes));
    }

    fn apply(&mut self, now: Instant, entry: &Entry<'_>, registry: &mut Registry) {
        match entry {
            Entry::Upsert(lease) => self.apply_lease(now, lease, registry),
            Entry::Remove { id, reason } => {
                registry.apply_remote_removal(now, *id, *reason);
                self.stats.applied += 1;
            }
        }
    }

    pub(super) fn apply_lease(&mut self, now: Instant, lease: &Lease<'_>, registry: &mut Registry) {
        let view = LeaseView {
            id: lease.id,
            service: lease.service,
            endpoint: lease.endpoint,
            source: lease.source,
            ttl_left: Duration::from_millis(u64::from(lease.ttl_ms)),
            aliases: &lease.aliases,
        };
        match registry.apply_remote(now, view) {
            Applied::Refused(_) | Applied::Conflict => self.stats.rejected += 1,
            _ => self.stats.applied += 1,
        }
    }
}

/// A lease as a peer is sent it.
pub(super) fn lease_of<'a>(view: &LeaseView<'a>) -> Lease<'a> {
    Lease {
        id: view.id,
        service: view.service,
        endpoint: view.endpoint,
        source: view.source,
        ttl_ms: u32::try_from(view.ttl_left.as_millis()).unwrap_or(u32::MAX),
        aliases: view.aliases.to_vec(),
    }
}

/// A broker's rendezvous score for an endpoint: FNV-1a over both, mixed.
fn score(node: u64, endpoint: SocketAddr) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let ip = match endpoint.ip() {
        std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(ip) => ip.octets(),
    };
    for byte in node.to_le_bytes().into_iter().chain(ip).chain(endpoint.port().to_be_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    // A final mix, so nearby inputs spread over the whole range.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}
