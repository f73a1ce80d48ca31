//! Sending deltas: packing changes into datagrams, one numbered copy per peer, kept until
//! acknowledged and rebuilt from the table when sent again.
//!
//! [`Deltas`] owns what is still to be sent (new leases and removals at once, renewals
//! coalesced over the refresh window), each peer's next sequence number and unacknowledged
//! deltas, the retransmission timers, and the counters of what it sent. It writes its
//! datagrams into the replicator's queue; which peers are live is the replicator's
//! knowledge, handed in as `targets`. To a peer that reads slots (see [`slots`](super::slots))
//! leases go as `UpsertSlot`s and renewals by slot, one peer at a time, since what a peer has
//! confirmed differs from peer to peer; to the others, the same datagram goes to all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::mem::take;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::ReplicaConfig;
use super::slots::{Confirmed, mark};
use crate::core::Outbox;
use crate::node::Face;
use crate::protocol::Check;
use crate::protocol::RemoveReason;
use crate::protocol::peer::Lease;
use crate::protocol::peer::{self, CheckedLease, Entry, ListPacker, Peer, PeerFrame};
use crate::registry::{Change, ChangeKind, LeaseView, Registry};
use crate::timers::Timers;

/// A change to send: a lease by id (read from the table when sent), or a removal.
pub(super) type Item = (Uuid, Option<RemoveReason>);

/// Unacknowledged deltas kept at most per peer; older ones are given up.
const MAX_UNACKED: usize = 4096;

#[derive(Debug)]
struct Unacked {
    batch: Batch,
    tries: u8,
    due: Instant,
}

/// What one delta carries, to rebuild it and to learn from its acknowledgement.
#[derive(Debug, Clone, Default)]
struct Batch {
    items: Vec<Item>,
    /// Sent in the slot form (to one peer).
    slotted: bool,
    /// The `UpsertSlot`s in it: (slot, `slots::mark`), confirmed when it is acknowledged.
    confirms: Vec<(u32, u32)>,
}

/// Slots of one `Unknown` answered at the most: about 15 datagrams of whole leases.
const MAX_ASKED: usize = 256;

/// Slots answered to one peer's `Unknown`s per second at the most (16 full `Unknown`s): a peer
/// that asks faster (a broken one) is answered in part, and asks again at the next renewal.
const ASKED_PER_SECOND: u32 = 4096;

/// Leases of one window whose time left differs by less than this share a `Renew` entry.
const RENEW_GRAIN_MS: u32 = 250;

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
    /// Per peer: since when, and how many slots of its `Unknown`s were answered
    /// ([`ASKED_PER_SECOND`]).
    asked: HashMap<SocketAddr, (Instant, u32)>,
    /// Peers that read slots.
    slotted: HashSet<SocketAddr>,
    /// Peers that read metadata (`UpsertMeta`; only those that read slots are sent them).
    reads_meta: HashSet<SocketAddr>,

    confirmed: Confirmed,
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
            asked: HashMap::new(),
            slotted: HashSet::new(),
            reads_meta: HashSet::new(),
            confirmed: Confirmed::default(),
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
            // New metadata goes at once; whole, since its confirmation (see `send_slotted`) is
            // for the metadata it had.
            ChangeKind::Refreshed if change.meta_changed => self.urgent.push((change.id, None)),
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
        let urgent = take(&mut self.urgent);
        self.send_all(now, &urgent, registry, out, targets);
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
            let ids: Vec<Item> = self.refreshed.drain(..).map(|id| (id, None)).collect();
            self.refreshed_set.clear();
            self.send_all(now, &ids, registry, out, targets);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.refresh_due, self.retransmits.next()].into_iter().flatten().min()
    }

    /// `from` acknowledged delta `seq`: the slots it mapped are confirmed.
    pub fn handle_ack(&mut self, from: SocketAddr, seq: u32) {
        if let Some(unacked) = self.peers.get_mut(&from).and_then(|p| p.unacked.remove(&seq)) {
            self.retransmits.remove(unacked.due, (from, seq));
            for &(slot, print) in &unacked.batch.confirms {
                self.confirmed.confirm(from, slot, print);
            }
        }
    }

    /// Whether the peer at `addr` reads slots (it said so in its `Features`, since its last
    /// restart).
    pub fn set_slotted(&mut self, addr: SocketAddr, slotted: bool) {
        if slotted {
            self.slotted.insert(addr);
        } else if self.slotted.remove(&addr) {
            self.confirmed.forget(addr);
        }
    }

    /// Whether the peer at `addr` reads metadata (it said so in its `Features`).
    pub fn set_reads_meta(&mut self, addr: SocketAddr, reads: bool) {
        if reads {
            self.reads_meta.insert(addr);
        } else {
            self.reads_meta.remove(&addr);
        }
    }

    /// Whether the peer at `addr` said it reads metadata.
    pub fn reads_meta(&self, addr: SocketAddr) -> bool {
        self.reads_meta.contains(&addr)
    }

    /// `to` asked for leases it could not map from their slots: they go whole.
    pub fn send_slots_to(
        &mut self,
        now: Instant,
        to: SocketAddr,
        slots: impl Iterator<Item = u32>,
        registry: &Registry,
        out: &mut Outbox<Face>,
    ) {
        if !self.slotted.contains(&to) {
            return;
        }
        let mut items = Vec::new();
        // A peer that asks for more (a broken one, or one that lost everything) is answered
        // in part; it asks again at the next renewal.
        let (since, used) = self.asked.entry(to).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= Duration::from_secs(1) {
            (*since, *used) = (now, 0);
        }
        let room = ASKED_PER_SECOND.saturating_sub(*used).min(MAX_ASKED as u32);
        let mut answered = 0;
        for slot in slots.take(room as usize) {
            answered += 1;
            self.confirmed.unconfirm(to, slot);
            if let Some(view) = registry.view_at(now, crate::registry::Cursor(slot)) {
                items.push((view.id, None));
            }
        }
        *used += answered;
        self.send_slotted(now, to, &items, registry, out, 0);
    }

    /// Sends `items` to every target: one datagram for all that do not read slots, and the
    /// slot form to each that does.
    fn send_all(
        &mut self,
        now: Instant,
        items: &[Item],
        registry: &Registry,
        out: &mut Outbox<Face>,
        targets: &[SocketAddr],
    ) {
        if items.is_empty() {
            return;
        }
        let (slotted, plain): (Vec<SocketAddr>, Vec<SocketAddr>) =
            targets.iter().partition(|t| self.slotted.contains(t));
        if !plain.is_empty() {
            self.send_items(now, items.iter().copied(), registry, out, &plain, 0);
        }
        for to in slotted {
            self.send_slotted(now, to, items, registry, out, 0);
        }
    }

    /// The peer at `addr` will never acknowledge what it was sent (it is down, restarted, or
    /// is this broker): nothing is sent to it again.
    pub fn drop_unacked(&mut self, addr: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else { return };
        for (seq, unacked) in take(&mut peer.unacked) {
            self.retransmits.remove(unacked.due, (addr, seq));
        }
        self.confirmed.forget(addr);
    }

    /// The peer at `addr` is forgotten: a peer at that address later starts anew.
    pub fn forget(&mut self, addr: SocketAddr) {
        self.peers.remove(&addr);
        self.asked.remove(&addr);
        self.slotted.remove(&addr);
        self.reads_meta.remove(&addr);
        self.confirmed.forget(addr);
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
        let mut batch = Batch::default();
        // One peer that reads metadata (an anti-entropy repair, a removal sent back): a lease
        // with metadata goes with them, at its slot, so that a peer that missed the
        // registration gets the pairs with the repair. Its slot is not taken as confirmed
        // (nothing waits for this delta's ack to confirm it): its next renewal goes whole.
        let meta_to = matches!(targets, &[to] if self.reads_meta.contains(&to) && self.slotted.contains(&to));
        for (id, removal) in items {
            let entry = match removal {
                Some(reason) => Entry::Remove { id, reason },
                // Gone already (its removal follows), or expired: nothing to renew.
                None => match registry.view(now, id) {
                    Some(view) if meta_to => upsert_with_meta(&view, registry.slot_of(id).map(|s| s.0)),
                    Some(view) => upsert_of(&view),
                    None => continue,
                },
            };
            if !packer.push(&entry) {
                self.send_delta(now, &mut packer, take(&mut batch), out, targets, tries);
                let added = packer.push(&entry);
                debug_assert!(added, "one entry always fits an empty datagram");
            }
            batch.items.push((id, removal));
        }
        self.send_delta(now, &mut packer, batch, out, targets, tries);
    }

    /// Sends `items` to one peer that reads slots: removals by id, leases it has confirmed at
    /// their slots as `Renew` entries, the others whole as `UpsertSlot`s.
    fn send_slotted(
        &mut self,
        now: Instant,
        to: SocketAddr,
        items: &[Item],
        registry: &Registry,
        out: &mut Outbox<Face>,
        tries: u8,
    ) {
        let mut packer = ListPacker::default();
        let mut batch = Batch { slotted: true, ..Batch::default() };
        // (time left in grains, slot, id) of the leases renewed by slot.
        let mut renewed: Vec<(u32, u32, Uuid)> = Vec::new();
        for &(id, removal) in items {
            let mut confirm = None;
            let entry = match removal {
                Some(reason) => Entry::Remove { id, reason },
                None => {
                    let (Some(view), Some(slot)) = (registry.view(now, id), registry.slot_of(id)) else { continue };
                    // A slot is confirmed for the lease in it (its generation here), and, to a
                    // peer that reads metadata, with the metadata it was sent: another lease in
                    // the slot, or other metadata (a re-registration), goes whole until that is
                    // acknowledged, retransmissions included.
                    let Some(generation) = registry.generation_at(slot) else { continue };
                    let print = mark(generation, view.meta.filter(|_| self.reads_meta.contains(&to)));
                    let ttl_ms = u32::try_from(view.ttl_left.as_millis()).unwrap_or(u32::MAX);
                    if self.confirmed.is_confirmed(to, slot.0, print) {
                        renewed.push((ttl_ms / RENEW_GRAIN_MS, slot.0, id));
                        continue;
                    }
                    confirm = Some((slot.0, print));
                    let lease = CheckedLease { lease: lease_of(&view), check: view.check };
                    let meta = view.meta.filter(|_| self.reads_meta.contains(&to));
                    match meta.map(|meta| Entry::UpsertMeta { slot: slot.0, lease: lease.clone(), meta }) {
                        // A lease too large for one datagram with its metadata goes without.
                        Some(entry) if ListPacker::default().push(&entry) => entry,
                        _ => Entry::UpsertSlot { slot: slot.0, lease },
                    }
                }
            };
            if !packer.push(&entry) {
                self.send_delta(now, &mut packer, take(&mut batch), out, &[to], tries);
                batch.slotted = true;
                let added = packer.push(&entry);
                debug_assert!(added, "one entry always fits an empty datagram");
            }
            batch.items.push((id, removal));
            batch.confirms.extend(confirm);
        }
        // Longest time left first, then by slot: each run of one grain is one entry (or more,
        // when it does not fit what is left of a datagram).
        renewed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut list = Vec::new();
        let mut at = 0;
        while at < renewed.len() {
            // An entry's own bytes: the variant, the time left and the list's length.
            if packer.room() < 16 {
                self.send_delta(now, &mut packer, take(&mut batch), out, &[to], tries);
                batch.slotted = true;
            }
            let room = packer.room() - 10;
            let grain = renewed[at].0;
            list.clear();
            let mut previous = None;
            while let Some(&(g, slot, id)) = renewed.get(at) {
                if g != grain {
                    break;
                }
                if previous == Some(slot) {
                    // Two names of one lease.
                    batch.items.push((id, None));
                    at += 1;
                    continue;
                }
                if list.len() + peer::slot_size(previous, slot) > room {
                    break;
                }
                peer::push_slot(&mut list, previous, slot);
                previous = Some(slot);
                batch.items.push((id, None));
                at += 1;
            }
            let entry = Entry::Renew { ttl_ms: grain * RENEW_GRAIN_MS, slots: &list };
            let added = packer.push(&entry);
            debug_assert!(added, "the list was cut to the room left");
        }
        self.send_delta(now, &mut packer, batch, out, &[to], tries);
    }

    /// Sends the packed entries as one delta to each of `targets`, each with its own number.
    fn send_delta(
        &mut self,
        now: Instant,
        packer: &mut ListPacker,
        batch: Batch,
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
            peer.unacked.insert(seq, Unacked { batch: batch.clone(), tries, due });
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
        let tries = unacked.tries + 1;
        if unacked.batch.slotted && self.slotted.contains(&addr) {
            self.send_slotted(now, addr, &unacked.batch.items, registry, out, tries);
        } else {
            self.send_items(now, unacked.batch.items.into_iter(), registry, out, &[addr], tries);
        }
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

/// A lease as a peer that reads metadata is sent it outside slot renewals: an
/// [`Entry::UpsertMeta`] at its slot when it has metadata and fits one datagram with them, else
/// as [`upsert_of`] says.
fn upsert_with_meta<'a>(view: &LeaseView<'a>, slot: Option<u32>) -> Entry<'a> {
    let (Some(meta), Some(slot)) = (view.meta, slot) else { return upsert_of(view) };
    let entry = Entry::UpsertMeta { slot, lease: CheckedLease { lease: lease_of(view), check: view.check }, meta };
    if ListPacker::default().push(&entry) { entry } else { upsert_of(view) }
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
