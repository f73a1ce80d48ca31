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
//! - **Slot renewals** (see [`slots`]): to a peer that reads them, a lease travels once with
//!   a slot number, and renewals as lists of slots, about a byte each, so keeping replicas
//!   alive costs bytes rather than whole leases.
//! - **Catch-up** (see [`sync`]): a broker that starts while peers run pulls a
//!   complete peer's table page by page before it claims to be complete, applying live deltas
//!   meanwhile.
//! - **Anti-entropy** (see [`entropy`]): every digest interval, each complete broker sends each
//!   live, complete peer a summary of its table; a summary that differs twice in a row starts a
//!   repair that finds the differing leases by bucket and pushes them, so views converge after
//!   any loss without waiting for the TTL.
//! - **Ownership**: each instance is probed by one broker, chosen by rendezvous hashing of the
//!   endpoint over the live, complete brokers' incarnations, so every broker agrees without
//!   talking about it.
//!
//! Who owns what: [`Replicator`] (this file) owns the peer table, the hello clock, the counters of
//! what it applied and refused, and its queues; `deltas::Deltas` owns what is still to be sent and
//! each peer's unacknowledged deltas; `sync::CatchUp` owns where catching up stands. The table is
//! the node's, lent for each call that reads or changes it. The replicator speaks the node's
//! sub-machine convention (see the [node's documentation](super)): `handle_*` take peer datagrams,
//! the table's changes and the time; datagrams leave through
//! [`poll_transmit`](Replicator::poll_transmit), what the node must act on (a peer event to log, a
//! forwarded report, a change of the live brokers) through `poll_event`.

mod apply;
mod config;
mod deltas;
pub mod entropy;
mod events;
mod membership;
pub mod slots;
pub mod sync;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::Face;
use crate::core::{Outbox, Transmit};
use crate::protocol::peer::{self, CheckedLease, MetaLease, Peer, PeerFrame};
use crate::protocol::{Check, PeerStats, RemoveReason};
use crate::registry::{Change, Registry};
pub use config::ReplicaConfig;
use deltas::{Deltas, lease_of};
use entropy::Entropy;
pub(super) use events::ReplicaEvent;
pub use events::{PeerEvent, ReplicationStats};
use membership::{FEATURE_MDNS, PeerState, score};
use slots::SlotMaps;
use sync::CatchUp;

/// The replicator. See the [module documentation](self).
#[derive(Debug)]
pub struct Replicator {
    me: u64,
    addr: SocketAddr,
    config: ReplicaConfig,
    peers: Vec<PeerState>,
    next_hello: Option<Instant>,
    deltas: Deltas,
    catch_up: CatchUp,
    entropy: Entropy,
    /// What the peers' slots name here.
    slot_maps: SlotMaps,
    membership_changed: bool,
    events: VecDeque<ReplicaEvent>,
    /// Entries received in deltas and pages and applied.
    applied: u64,
    /// Peer datagrams dropped.
    rejected: u64,
    transmits: Outbox<Face>,
}

impl Replicator {
    /// A replicator for the broker of incarnation `me`, reached by clients at `addr`.
    pub fn new(me: u64, addr: SocketAddr, config: ReplicaConfig) -> Self {
        let mut replicator = Replicator {
            me,
            addr,
            peers: Vec::new(),
            next_hello: None,
            deltas: Deltas::new(me, &config),
            catch_up: CatchUp::new(me, &config),
            entropy: Entropy::new(me, config.digest_interval),
            slot_maps: SlotMaps::default(),
            membership_changed: false,
            events: VecDeque::new(),
            applied: 0,
            rejected: 0,
            transmits: Outbox::new(usize::MAX),
            config,
        };
        for addr in replicator.config.peers.clone() {
            replicator.add_peer(addr, None);
        }
        replicator
    }

    /// This broker's incarnation.
    #[cfg(test)]
    pub(super) fn incarnation(&self) -> u64 {
        self.me
    }

    /// Forgets what every peer's slots name here, as a broker that lost them would (a test of
    /// the healing).
    #[cfg(test)]
    pub(super) fn forget_slots(&mut self) {
        for peer in &self.peers {
            self.slot_maps.forget(peer.addr);
        }
    }

    /// Starts the clock: the first hellos go out, and catching up begins when peers are
    /// configured (see [`sync`]).
    pub fn handle_start(&mut self, now: Instant) {
        self.next_hello = Some(now);
        self.catch_up.start(now, !self.peers.is_empty());
        self.entropy.start(now);
    }

    /// Follows a change of the table: this broker's own changes are sent to the peers.
    pub fn handle_change(&mut self, now: Instant, change: &Change) {
        if !change.by_peer {
            self.deltas.handle_change(now, change);
        }
    }

    /// A broker of this cluster said hello on the multicast group: take it as a peer (when
    /// discovery is on), and say hello to it at once, so it knows this broker within a round
    /// trip. A peer found so is kept while it speaks, here or on the group.
    pub fn handle_discovered(&mut self, now: Instant, addr: SocketAddr, registry: &Registry) {
        if !self.config.discover || addr == self.addr {
            return;
        }
        if let Some(peer) = self.peers.iter_mut().find(|p| p.addr == addr) {
            if !peer.configured() {
                peer.seen_on_group = Some(now);
            }
            return;
        }
        self.add_peer(addr, Some(now));
        if self.peers.iter().any(|p| p.addr == addr) {
            self.send_hello(addr, registry);
        }
    }

    /// The configured peers are now `peers` (a reload): a new one is said hello to at once and
    /// from then on replicated with as a restarted broker is (its hello answered, then a digest
    /// and repairs, or pages if one of the two is catching up); one no longer named goes down
    /// and is forgotten (a broker it is also found on the group as is taken again by
    /// discovery). Peers found on the group are left as they are.
    pub fn set_peers(&mut self, peers: &[SocketAddr], registry: &Registry) {
        let mut index = 0;
        while index < self.peers.len() {
            let peer = &self.peers[index];
            if peer.configured() && !peers.contains(&peer.addr) {
                self.remove_peer(index);
            } else {
                index += 1;
            }
        }
        for &addr in peers {
            if let Some(peer) = self.peers.iter_mut().find(|p| p.addr == addr) {
                // Found on the group before: configured from now on, so kept.
                peer.seen_on_group = None;
                continue;
            }
            if self.peers.len() >= self.config.max_peers {
                // Full of peers found on the group: a configured one goes before them (as at
                // start, where the configured ones come first); the group finds them again.
                let found = self.peers.iter().position(|p| p.seen_on_group.is_some() && !p.up);
                if let Some(index) = found.or_else(|| self.peers.iter().position(|p| p.seen_on_group.is_some())) {
                    self.remove_peer(index);
                }
            }
            self.add_peer(addr, None);
            if self.peers.iter().any(|p| p.addr == addr) {
                self.send_hello(addr, registry);
            }
        }
        self.config.peers = peers.to_vec();
    }

    /// Takes peer `index` down and forgets it (a reload).
    fn remove_peer(&mut self, index: usize) {
        let addr = self.peers[index].addr;
        self.down(index);
        self.peers.remove(index);
        self.deltas.forget(addr);
        self.entropy.forget(addr);
        self.slot_maps.forget(addr);
    }

    /// The configured peers (`--peers`).
    pub fn configured_peers(&self) -> &[SocketAddr] {
        &self.config.peers
    }

    /// Whether the broker holds the whole table (it is not catching up).
    pub fn is_complete(&self) -> bool {
        self.catch_up.is_complete()
    }

    /// The next datagram to send to a peer, its bytes moved into `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<Transmit<Face>> {
        self.transmits.pop(out)
    }

    /// The next thing the node must act on: events in the order they happened, then a change
    /// of the live brokers (once, however many changes led to it).
    pub(super) fn poll_event(&mut self) -> Option<ReplicaEvent> {
        self.events
            .pop_front()
            .or_else(|| std::mem::take(&mut self.membership_changed).then_some(ReplicaEvent::OwnersChanged))
    }

    /// Counts a peer datagram dropped before it got here (unsealed, a wrong key, a replay).
    pub fn note_rejected(&mut self) {
        self.rejected += 1;
    }

    /// The counters.
    pub fn stats(&self) -> ReplicationStats {
        let deltas = self.deltas.stats();
        ReplicationStats {
            sent: deltas.sent,
            applied: self.applied,
            retransmits: deltas.retransmits,
            given_up: deltas.given_up,
            rejected: self.rejected,
            entropy: self.entropy.stats(),
        }
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

    /// The broker that advertises `endpoint` with mDNS on this broker's link: `None` for this
    /// one, else the peer's address. The same rendezvous hashing as [`owner`](Self::owner), over
    /// this broker and the live, complete peers that said they advertise on the same link
    /// (`Peer::MdnsLink`): a broker without `--mdns`, on another link, or older than the
    /// `Features` bit never owns an advertisement here, so every instance has an advertiser on
    /// every link where some broker runs `--mdns`. Without `--mdns` here, [`owner`](Self::owner).
    pub fn mdns_owner(&self, endpoint: SocketAddr) -> Option<SocketAddr> {
        let Some(link) = self.config.mdns_link else { return self.owner(endpoint) };
        let mut best = (score(self.me, endpoint), None);
        let same_link = |p: &&PeerState| p.up && p.complete && !p.is_self && p.mdns == Some(link);
        for peer in self.peers.iter().filter(same_link) {
            let Some(node) = peer.node else { continue };
            let candidate = (score(node, endpoint), Some(peer.addr));
            if candidate.0 > best.0 {
                best = candidate;
            }
        }
        best.1
    }

    /// The peer that will advertise `endpoint` on this broker's link once this broker is gone
    /// ([`mdns_owner`](Self::mdns_owner) without this broker), if any: at shutdown, what it will
    /// take over goes without a goodbye.
    pub fn mdns_successor(&self, endpoint: SocketAddr) -> Option<SocketAddr> {
        let link = self.config.mdns_link?;
        let same_link = |p: &&PeerState| p.up && p.complete && !p.is_self && p.mdns == Some(link);
        let scored =
            self.peers.iter().filter(same_link).filter_map(|p| p.node.map(|node| (score(node, endpoint), p.addr)));
        scored.max_by_key(|&(score, _)| score).map(|(_, addr)| addr)
    }

    /// Handles a peer datagram from `from`. A report a peer forwarded comes out as
    /// `ReplicaEvent::Report`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, frame: PeerFrame<'_>, registry: &mut Registry) {
        // Peers are the configured ones and those found on the multicast group (whose hello
        // also makes this broker say hello to them): nobody becomes a peer by saying hello to
        // the unicast port, so a spoofed source cannot be made a peer and sent pages.
        let Some(index) = self.peers.iter().position(|p| p.addr == from) else {
            self.rejected += 1;
            return;
        };
        if frame.node == self.me {
            // Our own address is in the peer list.
            self.peers[index].is_self = true;
            self.deltas.drop_unacked(from);
            return;
        }
        let was_ready = self.peers[index].up && self.peers[index].complete;
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
                    self.send_hello(from, registry);
                }
                let peer = &self.peers[index];
                if !was_ready && peer.complete && peer.up && self.is_complete() {
                    // Back (or new) and complete: compare at once, not at the next tick, since
                    // deltas to it may have been given up meanwhile.
                    self.entropy.send_digest(from, registry, &mut self.transmits);
                }
                let peer = &self.peers[index];
                if let (true, Some(node)) = (peer.complete && peer.up, peer.node) {
                    self.catch_up.consider(now, peer.addr, node, &mut self.transmits);
                }
            }
            Peer::Delta { seq, entries } => {
                let mut buried = Vec::new();
                let mut unknown = Vec::new();
                for entry in &entries {
                    if let Some(id) = self.apply(now, (from, seq), entry, registry, &mut unknown) {
                        buried.push((id, Some(RemoveReason::Deregistered)));
                    }
                }
                let ack = PeerFrame { node: self.me, body: Peer::Ack { seq } };
                self.transmits.push(Face::Client, from, |bytes| peer::encode(&ack, bytes));
                slots::ask_for(self.me, from, unknown, &mut self.transmits);
                if !buried.is_empty() {
                    // Removed here on purpose, still held there (a partition, a lost removal):
                    // the removal goes back.
                    self.entropy.note_removed(buried.len() as u64);
                    self.deltas.send_to(now, from, buried.into_iter(), registry, &mut self.transmits);
                }
            }
            Peer::Ack { seq } => self.deltas.handle_ack(from, seq),
            Peer::SyncRequest { cursor, pages } => {
                let meta = self.deltas.reads_meta(from);
                sync::serve_pages(self.me, now, from, (cursor, pages, meta), registry, &mut self.transmits);
            }
            Peer::Page { cursor, next, leases } => {
                for lease in &leases {
                    self.apply_lease(now, lease, Check::None, registry);
                }
                let caught_up =
                    self.catch_up.handle_page(now, from, frame.node, cursor, next, leases.len(), &mut self.transmits);
                self.events.extend(caught_up.map(ReplicaEvent::Peer));
            }
            Peer::PageChecked { cursor, next, leases } => {
                for CheckedLease { lease, check } in &leases {
                    self.apply_lease(now, lease, *check, registry);
                }
                let caught_up =
                    self.catch_up.handle_page(now, from, frame.node, cursor, next, leases.len(), &mut self.transmits);
                self.events.extend(caught_up.map(ReplicaEvent::Peer));
            }
            Peer::PageMeta { cursor, next, leases } => {
                for MetaLease { lease: CheckedLease { lease, check }, meta } in &leases {
                    self.apply_lease_meta(now, lease, *check, Some(meta), registry);
                }
                let caught_up =
                    self.catch_up.handle_page(now, from, frame.node, cursor, next, leases.len(), &mut self.transmits);
                self.events.extend(caught_up.map(ReplicaEvent::Peer));
            }
            Peer::Report { service, endpoint } => {
                self.events.push_back(ReplicaEvent::Report { service: service.to_owned(), endpoint });
            }
            Peer::Bye => self.down(index),
            Peer::Features { bits } => {
                let slotted = self.config.slot_renewals && bits & slots::FEATURE_SLOTS != 0;
                self.deltas.set_slotted(from, slotted);
                self.deltas.set_reads_meta(from, self.config.metadata && bits & slots::FEATURE_META != 0);
                if bits & FEATURE_MDNS == 0 {
                    self.set_mdns_link(index, None);
                }
            }
            Peer::MdnsLink { network, prefix } => {
                // A prefix over 32 is no network: taken as not advertising.
                self.set_mdns_link(index, ipnet::Ipv4Net::new(network, prefix).ok().map(|net| net.trunc()));
            }
            Peer::Unknown { slots } => {
                self.deltas.send_slots_to(now, from, peer::decode_slots(slots), registry, &mut self.transmits);
            }
            // Anti-entropy is off here.
            Peer::Digest { .. } | Peer::Buckets { .. } | Peer::Elements { .. } | Peer::Want { .. }
                if !self.entropy.is_on() => {}
            Peer::Digest { leases, root } => {
                let peer = &self.peers[index];
                let comparable = peer.up && peer.complete && self.catch_up.is_complete();
                self.entropy.handle_digest(from, comparable, (leases, root), registry, &mut self.transmits);
            }
            Peer::Buckets { first, hashes } if self.is_complete() => {
                self.entropy.handle_buckets(from, first, &hashes, registry, &mut self.transmits);
            }
            Peer::Elements { from: start, to: end, hashes } if self.is_complete() => {
                let (entropy, deltas) = (&mut self.entropy, &mut self.deltas);
                entropy.handle_elements(now, from, (start, end), &hashes, registry, deltas, &mut self.transmits);
            }
            Peer::Want { hashes } => {
                let (entropy, deltas) = (&mut self.entropy, &mut self.deltas);
                entropy.handle_want(now, from, &hashes, registry, deltas, &mut self.transmits);
            }
            // Repairs wait until this broker is complete.
            Peer::Buckets { .. } | Peer::Elements { .. } => {}
            // Bridge traffic is the node's, not the replicator's.
            Peer::Query { .. } | Peer::Answer { .. } => self.rejected += 1,
        }
    }

    /// End of a turn: sends the changes waiting to go at once (new leases, removals), in as
    /// few datagrams as they fit, to every live peer.
    pub fn flush(&mut self, now: Instant, registry: &Registry) {
        if !self.deltas.has_urgent() {
            // The common case (a query, a renewal): no list of targets to make.
            return;
        }
        let targets = self.targets();
        self.deltas.flush(now, &targets, registry, &mut self.transmits);
    }

    /// Hellos, peers going down, retransmissions, coalesced renewals, catch-up.
    pub fn handle_timeout(&mut self, now: Instant, registry: &mut Registry) {
        if self.next_hello.is_some_and(|at| at <= now) {
            self.next_hello = Some(now + self.config.hello_interval);
            for index in 0..self.peers.len() {
                if !self.peers[index].is_self {
                    self.send_hello(self.peers[index].addr, registry);
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
        let targets = self.targets();
        self.deltas.handle_timeout(now, &targets, registry, &mut self.transmits);
        let ready = self.peers.iter().find(|p| p.up && p.complete).and_then(|p| p.node.map(|node| (p.addr, node)));
        let caught_up = self.catch_up.handle_timeout(now, ready, &mut self.transmits);
        self.events.extend(caught_up.map(ReplicaEvent::Peer));
        let complete: Vec<SocketAddr> =
            self.peers.iter().filter(|p| p.up && p.complete && !p.is_self).map(|p| p.addr).collect();
        let is_complete = self.is_complete();
        self.entropy.handle_timeout(now, is_complete, &complete, registry, &mut self.transmits);
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
        [self.next_hello, self.deltas.poll_timeout(), down, self.catch_up.poll_timeout(), self.entropy.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Asks `owner` to verify a reported instance.
    pub fn forward_report(&mut self, owner: SocketAddr, service: &str, endpoint: SocketAddr) {
        let frame = PeerFrame { node: self.me, body: Peer::Report { service, endpoint } };
        self.transmits.push(Face::Client, owner, |bytes| peer::encode(&frame, bytes));
    }

    /// Tells every live peer this broker is going.
    pub fn handle_close(&mut self) {
        let frame = PeerFrame { node: self.me, body: Peer::Bye };
        for peer in self.peers.iter().filter(|p| p.up && !p.is_self) {
            self.transmits.push(Face::Client, peer.addr, |bytes| peer::encode(&frame, bytes));
        }
    }

    /// The peers deltas go to: the live ones, in the order of the peer table.
    fn targets(&self) -> Vec<SocketAddr> {
        self.peers.iter().filter(|p| p.up && !p.is_self).map(|p| p.addr).collect()
    }

    /// Adds a peer: a configured one (`seen_on_group` `None`) or one found on the group then.
    fn add_peer(&mut self, addr: SocketAddr, seen_on_group: Option<Instant>) {
        if (addr == self.addr && !addr.ip().is_unspecified()) || self.peers.len() >= self.config.max_peers {
            return;
        }
        if self.peers.iter().any(|p| p.addr == addr) {
            return;
        }
        self.peers.push(PeerState {
            addr,
            node: None,
            up: false,
            last_heard: None,
            complete: false,
            instances: 0,
            is_self: false,
            seen_on_group,
            mdns: None,
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
                self.events.push_back(ReplicaEvent::Peer(PeerEvent::Restarted(peer.addr)));
            }
            peer.node = Some(node);
            peer.complete = false;
            peer.mdns = None;
            // The old incarnation will never acknowledge, and its slots mean nothing now.
            self.deltas.drop_unacked(peer.addr);
            self.deltas.set_slotted(peer.addr, false);
            self.slot_maps.forget(peer.addr);
            self.entropy.forget(peer.addr);
            self.membership_changed = true;
        }
        if !peer.up {
            peer.up = true;
            self.events.push_back(ReplicaEvent::Peer(PeerEvent::Joined(peer.addr)));
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
        self.deltas.drop_unacked(peer.addr);
        self.entropy.forget(peer.addr);
        self.events.push_back(ReplicaEvent::Peer(PeerEvent::Left(peer.addr)));
        self.membership_changed = true;
        let addr = peer.addr;
        self.catch_up.peer_left(addr);
    }

    /// Peers found on the group that are down and have been heard neither directly nor on the
    /// group for the forget time are forgotten (one that was never heard directly, too), so
    /// `stats` stops listing brokers that are gone. Configured peers are kept.
    fn forget_silent_discoveries(&mut self, now: Instant) {
        let limit = self.config.forget_after;
        let (deltas, events, entropy) = (&mut self.deltas, &mut self.events, &mut self.entropy);
        let slot_maps = &mut self.slot_maps;
        self.peers.retain(|p| {
            let Some(seen) = p.seen_on_group else { return true };
            let last = p.last_heard.map_or(seen, |heard| heard.max(seen));
            let keep = p.up || p.is_self || last + limit > now;
            if !keep {
                deltas.forget(p.addr);
                entropy.forget(p.addr);
                slot_maps.forget(p.addr);
                events.push_back(ReplicaEvent::Peer(PeerEvent::Forgotten(p.addr)));
            }
            keep
        });
    }

    /// Notes the link peer `index` advertises on with mDNS: a change moves advertisements
    /// (see [`mdns_owner`](Self::mdns_owner)), as a change of the live brokers does.
    fn set_mdns_link(&mut self, index: usize, link: Option<ipnet::Ipv4Net>) {
        let peer = &mut self.peers[index];
        if peer.mdns != link {
            peer.mdns = link;
            self.membership_changed = true;
        }
    }

    fn send_hello(&mut self, to: SocketAddr, registry: &Registry) {
        let frame = PeerFrame {
            node: self.me,
            body: Peer::Hello { addr: self.addr, complete: self.is_complete(), instances: registry.len() as u64 },
        };
        self.transmits.push(Face::Client, to, |bytes| peer::encode(&frame, bytes));
        let bits = if self.config.slot_renewals { slots::FEATURE_SLOTS } else { 0 }
            | if self.config.metadata { slots::FEATURE_META } else { 0 }
            | if self.config.mdns_link.is_some() { FEATURE_MDNS } else { 0 };
        if bits != 0 {
            let frame = PeerFrame { node: self.me, body: Peer::Features { bits } };
            self.transmits.push(Face::Client, to, |bytes| peer::encode(&frame, bytes));
        }
        if let Some(link) = self.config.mdns_link {
            let frame = PeerFrame {
                node: self.me,
                body: Peer::MdnsLink { network: link.network(), prefix: link.prefix_len() },
            };
            self.transmits.push(Face::Client, to, |bytes| peer::encode(&frame, bytes));
        }
    }
}
