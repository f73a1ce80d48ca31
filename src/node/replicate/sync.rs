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
//!
//! `CatchUp` owns where catching up stands. It writes its page requests into the replicator's queue
//! and returns what is worth a log line; which peers are live and complete is the replicator's
//! knowledge, handed in. `serve_pages` is the serving side.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{PeerEvent, ReplicaConfig, lease_of};
use crate::core::Outbox;
use crate::node::Face;
use crate::protocol::peer::{self, CheckedLease, ListPacker, MetaLease, Peer, PeerFrame};
use crate::registry::{Cursor, LeaseView, Registry};

/// Pages a peer sends for one request at the most.
const MAX_PAGES: u8 = 32;

/// How many times a page is asked for before the pull moves to another peer.
const MAX_ASKS: u32 = 5;

/// Where catching up stands.
#[derive(Debug)]
enum State {
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

/// Catching up. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct CatchUp {
    me: u64,
    grace: Duration,
    /// A batch of pages not in after this is asked for again.
    retry: Duration,
    pages: u8,
    state: State,
}

impl CatchUp {
    /// Complete, until [`start`](Self::start).
    pub fn new(me: u64, config: &ReplicaConfig) -> Self {
        CatchUp {
            me,
            grace: config.catch_up_grace,
            retry: config.retransmit * 4,
            pages: config.sync_pages.clamp(1, MAX_PAGES),
            state: State::Done { pulled: false },
        }
    }

    /// The broker starts: with configured peers it waits for a complete one.
    pub fn start(&mut self, now: Instant, has_peers: bool) {
        self.state = if has_peers { State::Waiting { since: now } } else { State::Done { pulled: false } };
    }

    /// When the catch-up needs a timeout next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { since } => Some(since + self.grace),
            State::Pulling { asked, .. } => Some(asked + self.retry),
            State::Done { .. } => None,
        }
    }

    /// The peer at `addr` went down.
    pub fn peer_left(&mut self, addr: SocketAddr) {
        if let State::Pulling { peer, asked, background, .. } = self.state {
            if peer == addr {
                self.state = if background { State::Done { pulled: false } } else { State::Waiting { since: asked } };
            }
        }
    }

    /// Whether the broker holds the whole table.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Done { .. } | State::Pulling { background: true, .. })
    }

    /// A live, complete peer (`addr`, incarnation `node`) is there: pull from it if the broker
    /// is waiting (or never pulled from anyone).
    pub fn consider(&mut self, now: Instant, addr: SocketAddr, node: u64, out: &mut Outbox<Face>) {
        let background = match self.state {
            State::Waiting { .. } => false,
            State::Done { pulled: false } => true,
            _ => return,
        };
        self.state = State::Pulling {
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
        let pages = self.pages;
        let State::Pulling { peer, expected, batch_left, asked, asks, .. } = &mut self.state else { return };
        *batch_left = pages;
        *asked = now;
        *asks += 1;
        let frame = PeerFrame { node: self.me, body: Peer::SyncRequest { cursor: *expected, pages } };
        out.push(Face::Client, *peer, |bytes| peer::encode(&frame, bytes));
    }

    /// A page arrived from `from`, incarnation `node` (its leases are applied already).
    /// Returns what is worth a log line: the broker caught up.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_page(
        &mut self,
        now: Instant,
        from: SocketAddr,
        node: u64,
        cursor: u32,
        next: Option<u32>,
        leases: usize,
        out: &mut Outbox<Face>,
    ) -> Option<PeerEvent> {
        let State::Pulling {
            peer, node: pulling, expected, batch_left, asks, leases: total, early, background, ..
        } = &mut self.state
        else {
            return None;
        };
        if *peer != from || *pulling != node {
            return None;
        }
        *total += leases as u64;
        *batch_left = batch_left.saturating_sub(1);
        if cursor != *expected {
            // Ahead of the one expected (or a leftover of an earlier ask): its leases count, and
            // the walk goes on through it once the expected page is in.
            if cursor > *expected && early.len() < 4 * usize::from(MAX_PAGES) {
                early.insert(cursor, next);
            }
            return None;
        }
        *asks = 0;
        let mut next = next;
        loop {
            match next {
                None => {
                    let (leases, background) = (*total, *background);
                    self.state = State::Done { pulled: true };
                    if background {
                        // Complete all along: nothing a reader of the log needs to know.
                        log::debug!("pulled {leases} leases from peer {from}");
                        return None;
                    }
                    return Some(PeerEvent::CaughtUp { from: Some(from), leases });
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
        None
    }

    /// Gives up waiting, or asks again for pages that did not come; `ready` is the first live,
    /// complete peer (its address and incarnation), if any. Returns what is worth a log line.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        ready: Option<(SocketAddr, u64)>,
        out: &mut Outbox<Face>,
    ) -> Option<PeerEvent> {
        match self.state {
            State::Waiting { since } if since + self.grace <= now => match ready {
                Some((addr, node)) => self.consider(now, addr, node, out),
                None => {
                    self.state = State::Done { pulled: false };
                    return Some(PeerEvent::CaughtUp { from: None, leases: 0 });
                }
            },
            State::Pulling { asked, asks, background, .. } if asked + self.retry <= now => {
                if asks >= MAX_ASKS {
                    self.state = if background { State::Done { pulled: false } } else { State::Waiting { since: now } };
                    if let Some((addr, node)) = ready {
                        self.consider(now, addr, node, out);
                    }
                } else {
                    self.ask_pages(now, out);
                }
            }
            _ => {}
        }
        None
    }
}

/// Answers a sync request from broker `me`'s table with up to `pages` pages from `cursor`;
/// `meta`: the asker reads metadata, so the pages are [`Peer::PageMeta`]s.
pub(super) fn serve_pages(
    me: u64,
    now: Instant,
    to: SocketAddr,
    (cursor, pages, meta): (u32, u8, bool),
    registry: &mut Registry,
    out: &mut Outbox<Face>,
) {
    let mut at = Some(Cursor(cursor));
    let mut packer = ListPacker::default();
    let mut bytes = Vec::new();
    for _ in 0..pages.clamp(1, MAX_PAGES) {
        let Some(start) = at else { break };
        // A lease too large for an empty page with its metadata goes alone in a page that says
        // nothing of metadata (`PageChecked`), so that the asker keeps the pairs it holds
        // (`PageMeta` with none would clear them); its next renewal carries them.
        let mut alone = false;
        at = registry.page(now, start, |view| {
            if !meta {
                return packer.push(&checked_lease_of(&view));
            }
            if alone {
                return false;
            }
            let lease = MetaLease { lease: checked_lease_of(&view), meta: view.meta.unwrap_or_default() };
            if packer.push(&lease) {
                return true;
            }
            alone = packer.is_empty();
            alone && packer.push(&lease.lease)
        });
        let next = at.map(|c| c.0);
        let body = if meta && !alone {
            Peer::PageMeta { cursor: start.0, next, leases: Vec::new() }
        } else {
            Peer::PageChecked { cursor: start.0, next, leases: Vec::new() }
        };
        let frame = PeerFrame { node: me, body };
        packer.write(&frame, &mut bytes);
        packer.clear();
        out.push(Face::Client, to, |buf| buf.extend_from_slice(&bytes));
    }
}

/// A lease with its check, as a page carries it.
fn checked_lease_of<'a>(view: &LeaseView<'a>) -> CheckedLease<'a> {
    CheckedLease { lease: lease_of(view), check: view.check }
}
