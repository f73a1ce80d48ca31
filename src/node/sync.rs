//! Catching up: a broker that starts while peers run pulls a complete peer's table, in pages
//! that fit a datagram, before it claims to be complete.
//!
//! 1. **Waiting** (with `--peers`): the broker says hello to its peers at once; a peer hearing a
//!    new incarnation answers at once. The first answer from a *complete* peer starts the pull.
//!    If none comes within the grace time (the broker is the first, or all its peers are
//!    starting too), the broker takes itself as complete. A broker with no configured peers
//!    (at most some to be found on the multicast group) is complete from the start, and still
//!    pulls, in the background, from the first complete peer it finds.
//! 2. **Pulling**: it asks that peer for a batch of pages from a cursor, applies each page's
//!    leases as it arrives (by the registry's merge rule, so pages and live deltas may come in
//!    any order), and asks for the next batch when the batch's last page is in. The live
//!    deltas flow meanwhile: the peer counts this broker as up from its first hello, before
//!    the first page is asked for, so nothing registered during the pull is missed. A page
//!    that does not come within the retry time is asked for again; a peer that goes down or
//!    restarts mid-pull sends the broker back to waiting, for another peer.
//! 3. **Done** when the page with no next cursor is applied.
//!
//! Cursors are slots of the serving peer's table (see `registry::remote::Cursor`), valid for
//! its incarnation only. While catching up, the broker answers what it knows; where it would
//! answer `NOT FOUND` it answers `NOT FOUND (catching up)` instead, so clients ask another
//! broker and servers do not register again (see `protocol.md`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::Face;
use super::replicate::{PeerEvent, ReplicaConfig, Replicator, lease_of};
use crate::core::Outbox;
use crate::protocol::peer::{self, ListPacker, Peer, PeerFrame};
use crate::registry::{Cursor, Registry};

/// Pages a peer sends for one request at the most.
const MAX_PAGES: u8 = 32;

/// How many times a page is asked for before the pull moves to another peer.
const MAX_ASKS: u32 = 5;

/// Where catching up stands.
#[derive(Debug)]
pub(super) enum CatchUp {
    /// Waiting for a complete peer since `since`.
    Waiting { since: Instant },
    /// Pulling from `peer`, incarnation `node`.
    Pulling {
        /// The broker counts as complete meanwhile (a pull from a peer found later).
        background: bool,
        peer: SocketAddr,
        node: u64,
        /// The cursor of the next page wanted.
        expected: u32,
        /// Pages of the current batch still to come.
        batch_left: u8,
        /// When the current batch was asked for.
        asked: Instant,
        /// How many times in a row it was asked for without progress.
        asks: u32,
        /// Leases received so far.
        leases: u64,
        /// Pages that came before the one expected: their cursor and next cursor.
        early: BTreeMap<u32, Option<u32>>,
    },
    /// The table is complete; `pulled` says whether it came from a peer.
    Done { pulled: bool },
}

impl CatchUp {
    /// When the catch-up needs a timeout next.
    pub fn deadline(&self, config: &ReplicaConfig) -> Option<Instant> {
        match *self {
            CatchUp::Waiting { since } => Some(since + config.catch_up_grace),
            CatchUp::Pulling { asked, .. } => Some(asked + config.retransmit * 4),
            CatchUp::Done { .. } => None,
        }
    }

    /// The peer at `addr` went down.
    pub fn peer_left(&mut self, addr: SocketAddr) {
        if let CatchUp::Pulling { peer, asked, background, .. } = *self {
            if peer == addr {
                *self = if background { CatchUp::Done { pulled: false } } else { CatchUp::Waiting { since: asked } };
            }
        }
    }

    /// Whether the broker holds the whole table.
    pub fn is_complete(&self) -> bool {
        matches!(self, CatchUp::Done { .. } | CatchUp::Pulling { background: true, .. })
    }
}

impl Replicator {
    /// Starts pulling from peer `index` if it is complete and the broker is waiting (or never
    /// pulled from anyone).
    pub(super) fn consider_sync(&mut self, now: Instant, index: usize, out: &mut Outbox<Face>) {
        let peer = &self.peers[index];
        let (true, Some(node)) = (peer.complete && peer.up, peer.node) else { return };
        let background = match self.catch_up {
            CatchUp::Waiting { .. } => false,
            CatchUp::Done { pulled: false } => true,
            _ => return,
        };
        let addr = peer.addr;
        self.catch_up = CatchUp::Pulling {
            background,
            peer: addr,
            node,
            expected: 0,
            batch_left: 0,
            asked: now,
            asks: 0,
            leases: 0,
            early: BTreeMap::new(),
        };
        self.ask_pages(now, out);
    }

    /// Asks the peer being pulled from for the next batch of pages.
    fn ask_pages(&mut self, now: Instant, out: &mut Outbox<Face>) {
        let pages = self.config.sync_pages.clamp(1, MAX_PAGES);
        let CatchUp::Pulling { peer, expected, batch_left, asked, asks, .. } = &mut self.catch_up else { return };
        *batch_left = pages;
        *asked = now;
        *asks += 1;
        let frame = PeerFrame { node: self.me, body: Peer::SyncRequest { cursor: *expected, pages } };
        out.push(Face::Client, *peer, |bytes| peer::encode(&frame, bytes));
    }

    /// A page arrived (its leases are applied already).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_page(
        &mut self,
        now: Instant,
        from: SocketAddr,
        node: u64,
        cursor: u32,
        next: Option<u32>,
        leases: usize,
        out: &mut Outbox<Face>,
    ) {
        let CatchUp::Pulling {
            peer, node: pulling, expected, batch_left, asks, leases: total, early, background, ..
        } = &mut self.catch_up
        else {
            return;
        };
        if *peer != from || *pulling != node {
            return;
        }
        *total += leases as u64;
        *batch_left = batch_left.saturating_sub(1);
        if cursor != *expected {
            // Ahead of the one expected (or a leftover of an earlier ask): its leases count, and
            // the walk goes on through it once the expected page is in.
            if cursor > *expected && early.len() < 4 * usize::from(MAX_PAGES) {
                early.insert(cursor, next);
            }
            return;
        }
        *asks = 0;
        let mut next = next;
        loop {
            match next {
                None => {
                    let (leases, background) = (*total, *background);
                    self.catch_up = CatchUp::Done { pulled: true };
                    if background {
                        // Complete all along: nothing a reader of the log needs to know.
                        log::debug!("pulled {leases} leases from peer {from}");
                    } else {
                        self.events.push_back(PeerEvent::CaughtUp { from: Some(from), leases });
                    }
                    return;
                }
                Some(cursor) => {
                    *expected = cursor;
                    match early.remove(&cursor) {
                        Some(after) => next = after,
                        None => break,
                    }
                }
            }
        }
        early.retain(|&cursor, _| cursor > *expected);
        if *batch_left == 0 {
            self.ask_pages(now, out);
        }
    }

    /// Gives up waiting, or asks again for pages that did not come.
    pub(super) fn catch_up_timeout(&mut self, now: Instant, out: &mut Outbox<Face>) {
        match self.catch_up {
            CatchUp::Waiting { since } if since + self.config.catch_up_grace <= now => {
                let ready = self.peers.iter().position(|p| p.up && p.complete);
                match ready {
                    Some(index) => self.consider_sync(now, index, out),
                    None => {
                        self.catch_up = CatchUp::Done { pulled: false };
                        self.events.push_back(PeerEvent::CaughtUp { from: None, leases: 0 });
                    }
                }
            }
            CatchUp::Pulling { asked, asks, background, .. } if asked + self.config.retransmit * 4 <= now => {
                if asks >= MAX_ASKS {
                    self.catch_up =
                        if background { CatchUp::Done { pulled: false } } else { CatchUp::Waiting { since: now } };
                    let ready = self.peers.iter().position(|p| p.up && p.complete);
                    if let Some(index) = ready {
                        self.consider_sync(now, index, out);
                    }
                } else {
                    self.ask_pages(now, out);
                }
            }
            _ => {}
        }
    }

    /// Answers a sync request with up to `pages` pages of the table from `cursor`.
    pub(super) fn serve_pages(
        &mut self,
        now: Instant,
        to: SocketAddr,
        cursor: u32,
        pages: u8,
        registry: &mut Registry,
        out: &mut Outbox<Face>,
    ) {
        let mut at = Some(Cursor(cursor));
        let mut packer = ListPacker::default();
        let mut bytes = Vec::new();
        for _ in 0..pages.clamp(1, MAX_PAGES) {
            let Some(start) = at else { break };
            at = registry.page(now, start, |view| packer.push(&lease_of(&view)));
            let frame = PeerFrame {
                node: self.me,
                body: Peer::Page { cursor: start.0, next: at.map(|c| c.0), leases: Vec::new() },
            };
            packer.write(&frame, &mut bytes);
            packer.clear();
            out.push(Face::Client, to, |buf| buf.extend_from_slice(&bytes));
        }
    }
}
