//! Sending deltas: packing changes into datagrams, one numbered copy per peer, kept until
//! acknowledged and rebuilt from the table when sent again.

use std::net::SocketAddr;
use std::time::Instant;

use super::Face;
use super::replicate::{Item, MAX_UNACKED, Replicator, Unacked, lease_of};
use crate::core::Outbox;
use crate::protocol::peer::{Entry, ListPacker, Peer, PeerFrame};
use crate::registry::Registry;

impl Replicator {
    /// Packs changes (a lease, read from the table by id when sent, or a removal) into deltas
    /// and sends each to every live peer.
    pub(super) fn send_entries(
        &mut self,
        now: Instant,
        items: impl Iterator<Item = Item>,
        registry: &Registry,
        out: &mut Outbox<Face>,
    ) {
        let targets: Vec<SocketAddr> = self.peers.iter().filter(|p| p.up && !p.is_self).map(|p| p.addr).collect();
        if !targets.is_empty() {
            self.send_items(now, items, registry, out, &targets, 0);
        }
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
                    Some(view) => Entry::Upsert(lease_of(&view)),
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
        let due = now + self.config.retransmit * (1u32 << tries.min(16));
        for peer in self.peers.iter_mut().filter(|p| targets.contains(&p.addr)) {
            let seq = peer.next_seq;
            peer.next_seq = peer.next_seq.wrapping_add(1);
            packer
                .write(&PeerFrame { node: self.me, body: Peer::Delta { seq, entries: Vec::new() } }, &mut self.scratch);
            let to = peer.addr;
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
    pub(super) fn retransmit(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        seq: u32,
        registry: &Registry,
        out: &mut Outbox<Face>,
    ) {
        let Some(peer) = self.peers.iter_mut().find(|p| p.addr == addr) else { return };
        let Some(unacked) = peer.unacked.remove(&seq) else { return };
        if unacked.tries >= self.config.retries {
            self.stats.given_up += 1;
            return;
        }
        self.send_items(now, unacked.items.into_iter(), registry, out, &[addr], unacked.tries + 1);
    }
}
