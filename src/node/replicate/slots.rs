//! Slot renewals: what keeps a peer's copy of a lease alive costs about a byte a renewal.
//!
//! # Why
//!
//! A heartbeat is news to every peer: without it the peer's copy runs out. Sent as a whole
//! lease (id, service, endpoint, source, time left, check: 40–60 bytes), with 10,000 instances
//! heartbeating every TTL/3, renewals are most of a cluster's traffic, and they grow with the
//! number of brokers. Most of those bytes say what the receiver already knows.
//!
//! # How
//!
//! - **Slots.** A lease's *slot* at a broker is where its table keeps it
//!   ([`Registry::slot_of`](crate::registry::Registry::slot_of)): a small number, dense, that
//!   the lease keeps for its whole life there, so the sender keeps nothing per lease to give
//!   it one. A lease goes to a peer that reads slots (it said so with `Peer::Features`) as an
//!   `Entry::UpsertSlot`: the lease and its slot. The receiver remembers, per sender, which of
//!   its own leases each slot names.
//! - **Renewals** to such a peer are `Entry::Renew { ttl_ms, slots }`: the time left, and the
//!   slots renewed in the refresh window, ascending, each as the varint of its distance from the
//!   previous one (a [slot list](crate::protocol::peer::encode_slots)). 10,000 leases renewed
//!   every 2 s give 1,000 slots per 200 ms window about 10 apart: one byte each, in one
//!   datagram, acknowledged like any delta. Leases of one window whose time left differs by
//!   more than 250 ms go in separate entries, each with the least time left of its leases, so
//!   a renewal never gives a peer's copy more time than the lease has here.
//! - **Only what the peer can map goes as a slot.** The sender renews a lease by slot only once
//!   the peer acknowledged the delta that carried that lease's `UpsertSlot` (it keeps, per
//!   peer, the mark of the lease each slot was confirmed for, see guard 2); otherwise the lease goes
//!   whole again. So a lost `UpsertSlot` costs another whole lease, not a renewal lost.
//! - **A slot the receiver cannot map** (it learned the lease from a catch-up page or a
//!   repair, it restarted, its copy expired or was removed meanwhile, even if a repair put it
//!   back since, elsewhere in its table) is asked for with
//!   `Peer::Unknown`; the sender forgets the confirmation and sends the lease whole. It heals
//!   itself, at the price of one lease per slot asked for.
//!
//! # A slot never renews the wrong lease
//!
//! A table reuses a slot as soon as its lease goes, so "slot 7" names different leases over
//! time. Three guards:
//!
//! 1. The receiver keeps, per slot, the place of its own copy and that copy's *generation* (a
//!    number each lease of its table gets when it is put there and keeps for its life, see
//!    `Registry::generation_at`), and renews at the mapped place only the lease of that
//!    generation: a place of its own table reused by another lease (the copy expired or was
//!    removed, and another took its place) is never renewed, and the slot is asked for. This
//!    is exact whatever the ids: a check by a fingerprint of the id, as it was, let a place
//!    reused by a lease whose id had the same fingerprint pass, which then was renewed in the
//!    copy's stead while the copy, put back elsewhere by a repair, was never renewed by that
//!    sender again (it ran out and came back once a TTL, for as long as the two lived).
//! 2. The sender renews by slot only a lease the peer confirmed *at that slot with that
//!    mark*: the lease's generation in the sender's table, with, to a peer that reads
//!    metadata, a hash of its metadata mixed in. A slot reused by a new lease goes whole
//!    (`UpsertSlot`, which remaps it) until the peer acknowledged the new mapping, whatever
//!    the ids (with a fingerprint of the id, a new lease whose id had the old one's
//!    fingerprint went as a `Renew` of the old one's copy, and never reached the peer by
//!    slot); so does a lease whose metadata changed. Two leases of one slot share a mark only
//!    if their metadata differ and the hashes make up for the generations, one in 2^32.
//! 3. Reordering: a `Renew` that left before a slot was remapped and arrives after the new
//!    `UpsertSlot` would renew the new lease, and a late `UpsertSlot` of the slot's earlier
//!    lease would take the slot back from the new one. Deltas are numbered per peer; the
//!    receiver keeps, with each mapping, the number of the delta that made it, ignores the slot
//!    in older deltas' `Renew`s, and never lets an older `UpsertSlot` undo a newer mapping. (A
//!    renewal by slot goes only after its mapping was acknowledged, so no legitimate `Renew` is
//!    older than its slot's mapping.) Numbers are compared with wrapping, which holds while a
//!    datagram in flight is less than 2^31 deltas old.
//!
//! A removal still travels as `Entry::Remove` by id at once, and tombstones still keep it from
//! being undone: a renewal by slot of a removed lease finds nothing to renew.
//!
//! # What it costs in memory
//!
//! The sender: 4 bytes per slot and peer (the confirmed mark). The receiver: 12 bytes per
//! slot of the sender's table (where its copy is, the copy's generation, and the number of the
//! delta that mapped it), in an array indexed by the sender's slot, never longer than the broker's
//! `--max-instances` (a slot past it is not mapped; its lease is asked for whole). With the
//! leases held at one broker that is 12 bytes per replicated lease; a sender's table holds the
//! leases it learned from others too, so with leases spread over several holders the arrays are
//! sparser (up to 12 bytes per lease of the cluster per holder).
//!
//! # Loss, partitions, restarts, moves
//!
//! - *Loss*: a `Renew` is acknowledged and resent (rebuilt from the table) like any delta.
//! - *Partition*: nothing changes while it lasts; copies run out on their own clocks as before,
//!   and anti-entropy repairs what differs after it, by whole leases.
//! - *Restart*: a peer with a new incarnation has forgotten its mappings, and the sender its
//!   confirmations for it; leases go whole once, then by slot again. Until a peer says
//!   `Features` (again), it gets whole leases.
//! - *A client moving its heartbeats to another broker*: that broker's renewals are its own
//!   changes, sent with its own slots (whole once, then by slot); the first holder stops
//!   renewing a lease it no longer hears heartbeats for.
//! - *Mixed versions*: an older broker never says `Features`, so it is sent what it always was.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::core::Outbox;
use crate::node::Face;
use crate::protocol::peer::{self, Peer, PeerFrame};
use crate::registry::{Cursor, Registry};

/// `Peer::Features` bit: this broker reads `Entry::UpsertSlot` and `Entry::Renew`.
pub(super) const FEATURE_SLOTS: u32 = 1;

/// `Peer::Features` bit: this broker reads `Entry::UpsertMeta` and `Peer::PageMeta`.
pub(super) const FEATURE_META: u32 = 2;

/// What the sender confirms a slot for (guard 2): the lease's `generation` in its table
/// (never 0), with `meta`'s hash (FNV-1a) mixed in when the peer is sent metadata and there
/// are some; never 0, which marks a slot confirmed for nothing.
pub(super) fn mark(generation: u32, meta: Option<&[u8]>) -> u32 {
    match meta {
        Some(meta) if !meta.is_empty() => {
            let hash = meta.iter().fold(0x811c_9dc5_u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
            (generation ^ hash).max(1)
        }
        _ => generation.max(1),
    }
}

/// The sender's side: per peer, the [`mark`] of the lease each slot was confirmed for.
#[derive(Debug, Default)]
pub(super) struct Confirmed {
    peers: HashMap<SocketAddr, Vec<u32>>,
}

impl Confirmed {
    /// Whether `peer` acknowledged the lease of mark `mark` at `slot`.
    pub fn is_confirmed(&self, peer: SocketAddr, slot: u32, mark: u32) -> bool {
        self.peers.get(&peer).and_then(|slots| slots.get(slot as usize)) == Some(&mark)
    }

    /// `peer` acknowledged an `UpsertSlot`.
    pub fn confirm(&mut self, peer: SocketAddr, slot: u32, mark: u32) {
        let slots = self.peers.entry(peer).or_default();
        let at = slot as usize;
        if slots.len() <= at {
            slots.resize(at + 1, 0);
        }
        slots[at] = mark;
    }

    /// `peer` asked for `slot`: it goes whole until confirmed again.
    pub fn unconfirm(&mut self, peer: SocketAddr, slot: u32) {
        if let Some(entry) = self.peers.get_mut(&peer).and_then(|slots| slots.get_mut(slot as usize)) {
            *entry = 0;
        }
    }

    /// `peer` restarted or is gone.
    pub fn forget(&mut self, peer: SocketAddr) {
        self.peers.remove(&peer);
    }
}

/// Where a sender's slot points in this broker's table. 12 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Mapped {
    /// The slot of the copy here.
    local: u32,
    /// The copy's generation here (guard 1); 0: nothing.
    generation: u32,
    /// The delta that mapped it (guard 3).
    seq: u32,
}

/// What a sender's slot names here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// The copy's slot here and the generation the lease there must have.
    Known(Cursor, u32),
    /// Nothing: ask the sender.
    Unknown,
    /// The delta is older than the slot's mapping: skip it (guard 3).
    Stale,
}

/// The receiver's side: per sender, its slots mapped to this table.
#[derive(Debug, Default)]
pub(super) struct SlotMaps {
    senders: HashMap<SocketAddr, Vec<Mapped>>,
}

/// Whether delta `seq` left before delta `than` (numbers wrap).
fn older(seq: u32, than: u32) -> bool {
    (seq.wrapping_sub(than) as i32) < 0
}

impl SlotMaps {
    /// `sender`'s delta `seq` gave `slot` to the lease kept here at `local`, of generation
    /// `generation`. Slots at or past `limit` are not mapped (a broken or hostile peer cannot
    /// make the array large); a delta older than the slot's mapping does not change it.
    pub fn map(&mut self, sender: SocketAddr, seq: u32, slot: u32, local: Cursor, generation: u32, limit: usize) {
        if slot as usize >= limit {
            return;
        }
        let slots = self.senders.entry(sender).or_default();
        let at = slot as usize;
        if slots.len() <= at {
            slots.resize(at + 1, Mapped::default());
        }
        let before = slots[at];
        if before.generation != 0 && older(seq, before.seq) {
            return;
        }
        slots[at] = Mapped { local: local.0, generation, seq };
    }

    /// What `sender`'s `slot` names, for its delta `seq`.
    pub fn lookup(&self, sender: SocketAddr, seq: u32, slot: u32) -> Lookup {
        match self.senders.get(&sender).and_then(|slots| slots.get(slot as usize)) {
            Some(mapped) if mapped.generation != 0 && older(seq, mapped.seq) => Lookup::Stale,
            Some(mapped) if mapped.generation != 0 => Lookup::Known(Cursor(mapped.local), mapped.generation),
            _ => Lookup::Unknown,
        }
    }

    /// `sender`'s delta `seq` gave `slot` to the lease `id`, just applied here.
    pub fn map_lease(&mut self, (sender, seq): (SocketAddr, u32), slot: u32, id: Uuid, registry: &Registry) {
        let Some(local) = registry.slot_of(id) else { return };
        if let Some(generation) = registry.generation_at(local) {
            let limit = registry.config().limits.max_instances;
            self.map(sender, seq, slot, local, generation, limit);
        }
    }

    /// Applies a `Renew` of `sender`'s delta `seq`: every slot it names here is renewed to
    /// `ttl`; the others go to `unknown`. Returns how many were renewed.
    pub fn renew(
        &self,
        now: Instant,
        (sender, seq): (SocketAddr, u32),
        ttl: Duration,
        list: &[u8],
        registry: &mut Registry,
        unknown: &mut Vec<u32>,
    ) -> u64 {
        let mut renewed = 0;
        for slot in peer::decode_slots(list) {
            match self.lookup(sender, seq, slot) {
                Lookup::Known(local, generation) => {
                    if registry.renew_at(now, local, generation, ttl) {
                        renewed += 1;
                    } else {
                        unknown.push(slot);
                    }
                }
                Lookup::Unknown => unknown.push(slot),
                Lookup::Stale => {}
            }
        }
        renewed
    }

    /// `sender` restarted or is gone: its slots mean nothing any more.
    pub fn forget(&mut self, sender: SocketAddr) {
        self.senders.remove(&sender);
    }
}

/// Asks `to` (from incarnation `me`) for the leases of slots it renewed that name nothing
/// here, in as few `Unknown`s as they fit.
pub(super) fn ask_for(me: u64, to: SocketAddr, mut unknown: Vec<u32>, out: &mut Outbox<Face>) {
    unknown.sort_unstable();
    unknown.dedup();
    let mut send = |list: &[u8]| {
        let frame = PeerFrame { node: me, body: Peer::Unknown { slots: list } };
        out.push(Face::Client, to, |bytes| peer::encode(&frame, bytes));
    };
    let mut list = Vec::new();
    let mut previous = None;
    for slot in unknown {
        if list.len() + 5 > peer::MAX_DATAGRAM - peer::FRAME_OVERHEAD {
            send(&list);
            (list, previous) = (Vec::new(), None);
        }
        peer::push_slot(&mut list, previous, slot);
        previous = Some(slot);
    }
    if !list.is_empty() {
        send(&list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.0.0.1:7000".parse().unwrap()
    }

    #[test]
    fn an_older_delta_neither_renews_nor_remaps_a_slot() {
        let mut maps = SlotMaps::default();
        maps.map(addr(), 2, 7, Cursor(2), 0x01, 100);
        maps.map(addr(), 10, 7, Cursor(3), 0x11, 100);
        assert_eq!(maps.lookup(addr(), 11, 7), Lookup::Known(Cursor(3), 0x11));
        assert_eq!(maps.lookup(addr(), 9, 7), Lookup::Stale, "a renewal that left before the slot was reused");
        maps.map(addr(), 8, 7, Cursor(4), 0x21, 100);
        assert_eq!(maps.lookup(addr(), 12, 7), Lookup::Known(Cursor(3), 0x11), "a late UpsertSlot is ignored");
        maps.map(addr(), 12, 7, Cursor(3), 0x11, 100);
        assert_eq!(maps.lookup(addr(), 12, 8), Lookup::Unknown);
        maps.map(addr(), 5, 1_000, Cursor(4), 0x21, 100);
        assert_eq!(maps.lookup(addr(), 12, 1_000), Lookup::Unknown, "past the limit: not mapped");
        maps.forget(addr());
        assert_eq!(maps.lookup(addr(), 30, 7), Lookup::Unknown);
    }

    #[test]
    fn a_late_upsert_of_an_earlier_lease_does_not_take_a_first_mapping_back() {
        // The reviewer's case: X at slot 7 expired at the sender (no removal travels for an
        // expiry), Y took the slot in delta 11, and a delayed copy of delta 10 (X) arrives last.
        let mut maps = SlotMaps::default();
        maps.map(addr(), 11, 7, Cursor(3), 0x22, 100);
        maps.map(addr(), 10, 7, Cursor(4), 0x11, 100);
        assert_eq!(maps.lookup(addr(), 13, 7), Lookup::Known(Cursor(3), 0x22), "Y's renewals still renew Y");
        assert_eq!(maps.lookup(addr(), 10, 7), Lookup::Stale);
        // Numbers wrap: delta 1 after delta u32::MAX is newer.
        maps.map(addr(), u32::MAX, 8, Cursor(5), 0x33, 100);
        maps.map(addr(), 1, 8, Cursor(6), 0x44, 100);
        assert_eq!(maps.lookup(addr(), 2, 8), Lookup::Known(Cursor(6), 0x44));
    }

    #[test]
    fn confirmations_are_per_peer_slot_and_lease() {
        let mut confirmed = Confirmed::default();
        confirmed.confirm(addr(), 4, 0x11);
        assert!(confirmed.is_confirmed(addr(), 4, 0x11));
        assert!(!confirmed.is_confirmed(addr(), 4, 0x21), "another lease at the same slot");
        assert!(!confirmed.is_confirmed("10.0.0.2:7000".parse().unwrap(), 4, 0x11));
        confirmed.unconfirm(addr(), 4);
        assert!(!confirmed.is_confirmed(addr(), 4, 0x11));
        assert_eq!(std::mem::size_of::<Mapped>(), 12);
    }
}
