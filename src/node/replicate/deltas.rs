//! Sending deltas: packing changes into datagrams, one numbered copy per peer, kept until
//! acknowledged and rebuilt from the table when sent again.
//!
//! [`Deltas`] owns what is still to be sent (new leases and removals at once, renewals
//! coalesced over the refresh window), each peer's next sequence number and unacknowledged
//! deltas, the retransmission timers, and the counters of what it sent. It writes its
//! datagrams into the replicator's queue; which peers are live is the replicator's
//! knowledge, handed in as `targets`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{ReplicaConfig, lease_of};
use crate::core::Outbox;
use crate::node::Face;
use crate::protocol::Check;
use crate::protocol::RemoveReason;
use crate::protocol::peer::{CheckedLease, Entry, ListPacker, Peer, PeerFrame};
use crate::registry::{Change, ChangeKind, LeaseView, Registry};
use crate::timers::Timers;

/// A change to send: a lease by id (read from the table when sent), or a removal.
pub(super) type Item = (Uuid, Option<RemoveReason>);

/// Unacknowledged deltas kept at most per peer; older ones are given up.
const MAX_UNACKED: usize = 4096;

#[derive(Debug)]
struct Unacked {
    items: Vec<Item>,
    tries: u8,
    due: Instant,
}

/// What is sent to one peer.
#[derive(Debug)]
struct Outgoing {
    next_seq: u32,
    unacked: BTreeMap<u32, Unacked>,
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing { next_seq: 1, unacked: BTreeMap::new() }
    }
}

/// Counters of the deltas sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DeltaStats {
    /// Entries sent (counted once per peer).
    pub sent: u64,
    /// Deltas resent for want of an acknowledgement.
    pub retransmits: u64,
    /// Deltas given up after the last retry.
    pub given_up: u64,
}

/// The outgoing side of replication. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Deltas {
    me: u64,
    refresh_batch: Duration,
    retransmit: Duration,
    retries: u8,
    /// Changes to send at once: new leases (by id, read from the table when sent) and removals.
    urgent: Vec<Item>,
    refreshed: Vec<Uuid>,
    refreshed_set: HashSet<Uuid>,
    refresh_due: Option<Instant>,
    peers: HashMap<SocketAddr, Outgoing>,
    retransmits: Timers<(SocketAddr, u32)>,
    stats: DeltaStats,
    scratch: Vec<u8>,
}

impl Deltas {
    pub fn new(me: u64, config: &ReplicaConfig) -> Self {
        Deltas {
            me,
            refresh_batch: config.refresh_batch,
            retransmit: config.retransmit,
            retries: config.retries,
            urgent: Vec::new(),
            refreshed: Vec::new(),
            refreshed_set: HashSet::new(),
            refresh_due: None,
            peers: HashMap::new(),
            retransmits: Timers::new(),
            stats: DeltaStats::default(),
            scratch: Vec::new(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> DeltaStats {
        self.stats
    }

    /// Follows a change of this broker's own: new leases and removals go at the end of the
    /// turn, renewals at the end of the refresh window.
    pub fn handle_change(&mut self, now: Instant, change: &Change) {
        match change.kind {
            ChangeKind::Registered => self.urgent.push((change.id, None)),
            ChangeKind::Refreshed => {
                if self.refreshed_set.insert(change.id) {
                    self.refreshed.push(change.id);
                    self.refresh_due.get_or_insert(now + self.refresh_batch);
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

    /// Whether changes wait to go at once (see [`flush`](Self::flush)).
    pub fn has_urgent(&self) -> bool {
        !self.urgent.is_empty()
    }

    /// Sends the changes waiting to go at once (new leases, removals), in as few datagrams as
    /// they fit, to each of `targets`.
    pub fn flush(&mut self, now: Instant, targets: &[SocketAddr], registry: &Registry, out: &mut Outbox<Face>) {
        if self.urgent.is_empty() {
            return;
        }
        let urgent = std::mem::take(&mut self.urgent);
        if !targets.is_empty() {
            self.send_items(now, urgent.iter().copied(), registry, out, targets, 0);
        }
        self.urgent = urgent;
        self.urgent.clear();
    }

    /// Retransmissions, then the renewals collected over the refresh window (to `targets`).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        targets: &[SocketAddr],
        registry: &Registry,
        out: &mut Outbox<Face>,
    ) {
        while let Some((addr, seq)) = self.retransmits.pop_due(now) {
            self.retransmit(now, addr, seq, registry, out);
        }
        if self.refresh_due.is_some_and(|at| at <= now) {
            self.refresh_due = None;
            let ids = std::mem::take(&mut self.refreshed);
            self.refreshed_set.clear();
            if !targets.is_empty() {
                self.send_items(now, ids.iter().map(|&id| (id, None)), registry, out, targets, 0);
            }
            self.refreshed = ids;
            self.refreshed.clear();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.refresh_due, self.retransmits.next()].into_iter().flatten().min()
    }

    /// `from` acknowledged delta `seq`.
    pub fn handle_ack(&mut self, from: SocketAddr, seq: u32) {
        if let Some(unacked) = self.peers.get_mut(&from).and_then(|p| p.unacked.remove(&seq)) {
            self.retransmits.remove(unacked.due, (from, seq));
        }
    }

    /// The peer at `addr` will never acknowledge what it was sent (it is down, restarted, or
    /// is this broker): nothing is sent to it again.
    pub fn drop_unacked(&mut self, addr: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else { return };
        for (seq, unacked) in std::mem::take(&mut peer.unacked) {
            self.retransmits.remove(unacked.due, (addr, seq));
        }
    }

    /// The peer at `addr` is forgotten: a peer at that address later starts anew.
    pub fn forget(&mut self, addr: SocketAddr) {
        self.peers.remove(&addr);
    }

    /// Sends leases (by id, read from the table now) and removals to one peer, as deltas kept
    /// until acknowledged like any other: what anti-entropy repairs.
    pub fn send_to(
        &mut self,
        now: Instant,
        to: SocketAddr,
        items: impl Iterator<Item = Item>,
        registry: &Registry,
        out: &mut Outbox<Face>,
    ) {
        self.send_items(now, items, registry, out, &[to], 0);
    }

    /// Sends `items` as deltas to `targets`, each delta remembered until acknowledged. A
    /// renewal is read from the table now, so a delta sent again carries the time left then,
    /// not when it was first sent.
    fn send_items(
        &mut self,
        now: Instant,
        items: impl Iterator<Item = Item>,
        registry: &Registry,
        out: &mut Outbox<Face>,
        targets: &[SocketAddr],
        tries: u8,
    ) {
        let mut packer = ListPacker::default();
        let mut batch = Vec::new();
        for (id, removal) in items {
            let entry = match removal {
                Some(reason) => Entry::Remove { id, reason },
                // Gone already (its removal follows), or expired: nothing to renew.
                None => match registry.view(now, id) {
                    Some(view) => upsert_of(&view),
                    None => continue,
                },
            };
            if !packer.push(&entry) {
                self.send_delta(now, &mut packer, std::mem::take(&mut batch), out, targets, tries);
                let added = packer.push(&entry);
                debug_assert!(added, "one entry always fits an empty datagram");
            }
            batch.push((id, removal));
        }
        self.send_delta(now, &mut packer, batch, out, targets, tries);
    }

    /// Sends the packed entries as one delta to each of `targets`, each with its own number.
    fn send_delta(
        &mut self,
        now: Instant,
        packer: &mut ListPacker,
        batch: Vec<Item>,
        out: &mut Outbox<Face>,
        targets: &[SocketAddr],
        tries: u8,
    ) {
        if packer.is_empty() {
            return;
        }
        let count = packer.len() as u64;
        let due = now + self.retransmit * (1u32 << tries.min(16));
        for &to in targets {
            let peer = self.peers.entry(to).or_default();
            let seq = peer.next_seq;
            peer.next_seq = peer.next_seq.wrapping_add(1);
            packer
                .write(&PeerFrame { node: self.me, body: Peer::Delta { seq, entries: Vec::new() } }, &mut self.scratch);
            out.push(Face::Client, to, |bytes| bytes.extend_from_slice(&self.scratch));
            if peer.unacked.len() >= MAX_UNACKED {
                if let Some((old, unacked)) = peer.unacked.pop_first() {
                    self.retransmits.remove(unacked.due, (to, old));
                    self.stats.given_up += 1;
                }
            }
            peer.unacked.insert(seq, Unacked { items: batch.clone(), tries, due });
            self.retransmits.insert(due, (to, seq));
            if tries == 0 {
                self.stats.sent += count;
            } else {
                self.stats.retransmits += 1;
            }
        }
        packer.clear();
    }

    /// Sends an unacknowledged delta again (rebuilt from the table), or gives it up.
    fn retransmit(&mut self, now: Instant, addr: SocketAddr, seq: u32, registry: &Registry, out: &mut Outbox<Face>) {
        let Some(unacked) = self.peers.get_mut(&addr).and_then(|p| p.unacked.remove(&seq)) else { return };
        if unacked.tries >= self.retries {
            self.stats.given_up += 1;
            return;
        }
        self.send_items(now, unacked.items.into_iter(), registry, out, &[addr], unacked.tries + 1);
    }
}

/// A lease as a delta carries it: an [`Entry::Upsert`] when it declares no check, so that
/// such leases travel as they always did.
fn upsert_of<'a>(view: &LeaseView<'a>) -> Entry<'a> {
    match view.check {
        Check::None => Entry::Upsert(lease_of(view)),
        check => Entry::UpsertChecked(CheckedLease { lease: lease_of(view), check }),
    }
}
