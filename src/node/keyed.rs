//! Sealed datagrams on the client face: a peer's, or a client's request (`--require-key`).
//!
//! With a key, a datagram that starts with the seal byte is opened with it first (key, tag,
//! time), and what is inside says who sent it: a peer frame goes to the replicator as before,
//! anything else is a client's request, which the router answers without `--require-key`'s
//! refusal ([`service::handle_sealed`]) and whose reply leaves sealed with the same key, so
//! that a client holding the key can tell this broker's replies from forged ones. What is
//! answered later to a client that asked sealed (a query asked at the bridges, a watch's
//! notifications) leaves sealed too ([`SealedTo`]).
//!
//! Replays are judged per sender, but in three tables: the peers' (as before), the clients'
//! ([`MAX_CLIENTS`]), and the multicast group's (announcers and discoveries: each a new sender
//! too, so they stay out of the peers' table as well). Every run of `makler-client` is a new sender; in one table, a burst of
//! them would fill it and leave no room, and a peer's window would have to wait for it (or be
//! forgotten while its datagrams could still be replayed). Apart, the peers' table never sees a
//! client, and the clients' table forgets only senders whose datagrams are all stale (older
//! than the 30 s window), refusing a newcomer while it is full of live ones: memory stays
//! bounded (about 160 bytes a client) and no replay gets through.
//!
//! A sealed datagram that does not open, or is a replay, is dropped without an answer and
//! counted (`sealed_dropped`); one that fails the key or the tag is also a dropped peer datagram
//! (`peer_rejected`) as before, with the same warning, since nothing tells whose it was.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Node, key_warn};
use crate::protocol::seal::Sealer;
use crate::protocol::{peer, seal};
use crate::service;

/// How many clients sealing requests within 30 s of one another a broker remembers at most
/// (about 2.6 MB of windows when all are there); more are dropped until older ones go stale.
pub const MAX_CLIENTS: usize = 16_384;

impl Node {
    /// A sealed datagram on the client face, with a key configured: returns whether `reply`
    /// holds an answer to send (sealed).
    pub(super) fn handle_sealed(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> bool {
        let Some(key) = self.sealer.as_ref().map(|sealer| *sealer.key()) else { return false };
        let now_ms = self.wall.unix_ms(now);
        let unsealed = match seal::unseal(&key, datagram, now_ms) {
            Ok(unsealed) => unsealed,
            Err(error) => {
                self.counters.sealed_dropped += 1;
                self.counters.peer_bytes_in += datagram.len() as u64;
                self.replicator.note_rejected();
                let trouble = key_warn::KeyTrouble::of(error);
                if let Some(warning) = trouble.and_then(|trouble| self.key_warnings.warning(now, from, trouble)) {
                    log::warn!("{warning}");
                }
                return false;
            }
        };
        if peer::is_peer(unsealed.inner) {
            self.counters.peer_bytes_in += datagram.len() as u64;
            if self.guard.admit(&unsealed, now_ms).is_err() {
                self.counters.sealed_dropped += 1;
                self.replicator.note_rejected();
                return false;
            }
            return self.handle_peer(now, from, datagram.len(), unsealed.inner);
        }
        if self.client_guard.admit(&unsealed, now_ms).is_err() {
            self.counters.sealed_dropped += 1;
            return false;
        }
        self.sealed_to.asking = true;
        let written = service::handle_sealed(self, now, from, unsealed.inner, reply);
        self.sealed_to.asking = false;
        let Some(written) = written else { return false };
        if !self.limit(now, from, written, datagram.len(), reply) {
            return false;
        }
        if let Some(sealer) = &mut self.sealer {
            sealer.seal_in_place(reply, now_ms);
        }
        true
    }
}

/// The clients that asked sealed for something answered later: a query asked at the bridges, a
/// watch's notifications. What the node sends them later leaves sealed too, or they would
/// ignore it. At most [`MAX_CLIENTS`] addresses; beyond, the set starts afresh (a client
/// forgotten so gets unsealed notifications until it watches again, which it does every
/// renewal).
#[derive(Debug, Default)]
pub(super) struct SealedTo {
    /// A sealed request is being answered now.
    pub(super) asking: bool,
    addrs: HashSet<SocketAddr>,
}

impl SealedTo {
    /// `from` asked, for something answered later: remember it if it asked sealed.
    pub(super) fn note(&mut self, from: SocketAddr) {
        if !self.asking {
            return;
        }
        if self.addrs.len() >= MAX_CLIENTS && !self.addrs.contains(&from) {
            self.addrs.clear();
        }
        self.addrs.insert(from);
    }

    /// Seals `datagram` (in place) when it goes to a client that asked sealed.
    pub(super) fn seal(&self, to: SocketAddr, sealer: &mut Option<Sealer>, now_ms: u64, datagram: &mut Vec<u8>) {
        if let Some(sealer) = sealer.as_mut().filter(|_| self.addrs.contains(&to)) {
            sealer.seal_in_place(datagram, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::Core;
    use crate::node::{Face, NodeConfig, WallClock};
    use crate::protocol::peer::{Peer, PeerFrame};
    use crate::protocol::seal::{Key, Sealer};

    fn key() -> Key {
        Key::from_secret(b"the keyed node tests' secret").unwrap()
    }

    #[test]
    fn many_short_lived_clients_neither_push_out_a_peers_window_nor_grow_the_table() {
        let wall = WallClock { at: Instant::now(), unix_ms: 1_800_000_000_000 };
        let config = NodeConfig { key: Some(key()), wall, ..NodeConfig::default() };
        let mut node = Node::new(config, uuid::Uuid::new_v4);
        let now = wall.at;
        node.handle_start(now);
        let (peer, client) = ("127.0.0.1:7001".parse().unwrap(), "127.0.0.1:40000".parse().unwrap());
        let mut hello = Vec::new();
        let body = Peer::Hello { addr: peer, complete: true, instances: 0 };
        peer::encode(&PeerFrame { node: 9, body }, &mut hello);
        let mut sealed_hello = Vec::new();
        Sealer::new(key(), 1).seal(&hello, wall.unix_ms(now), &mut sealed_hello);
        let mut reply = Vec::new();
        node.handle_datagram(now, Face::Client, peer, &sealed_hello, &mut reply);
        assert_eq!(node.stats(now)["sealed_dropped"], 0);

        // A client per request, as many as the table holds and one more.
        let mut sealed = Vec::new();
        for sender in 0..=MAX_CLIENTS as u64 {
            Sealer::new(key(), 1_000 + sender).seal(b"query echo", wall.unix_ms(now), &mut sealed);
            reply.clear();
            let answered = node.handle_datagram(now, Face::Client, client, &sealed, &mut reply).is_some();
            assert_eq!(answered, sender < MAX_CLIENTS as u64, "client {sender}");
        }
        assert_eq!(node.client_guard.len(), MAX_CLIENTS);
        assert_eq!(node.stats(now)["sealed_dropped"], 1, "the one over, while every window is live");
        // The peer's window is where it was: its datagram replayed is still a replay.
        node.handle_datagram(now, Face::Client, peer, &sealed_hello, &mut reply);
        assert_eq!(node.stats(now)["sealed_dropped"], 2);

        // Once the clients' datagrams are stale, a newcomer takes a place.
        let later = now + Duration::from_secs(31);
        Sealer::new(key(), 7).seal(b"query echo", wall.unix_ms(later), &mut sealed);
        assert!(node.handle_datagram(later, Face::Client, client, &sealed, &mut reply).is_some());
        assert_eq!(node.client_guard.len(), 1);
    }

    #[test]
    fn announcers_and_discoveries_stay_out_of_the_peers_table() {
        let wall = WallClock { at: Instant::now(), unix_ms: 1_800_000_000_000 };
        let group = super::super::GroupConfig {
            group: "239.255.77.1:7077".parse().unwrap(),
            origin: 1,
            hello_interval: Duration::from_secs(2),
        };
        let config = NodeConfig { key: Some(key()), wall, group: Some(group), ..NodeConfig::default() };
        let mut node = Node::new(config, uuid::Uuid::new_v4);
        let now = wall.at;
        node.handle_start(now);
        // A hundred keyed discoveries, each a sender of its own, each answered.
        let from: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let (mut datagram, mut sealed, mut reply) = (Vec::new(), Vec::new(), Vec::new());
        for sender in 0..100u64 {
            datagram.clear();
            let discover = crate::protocol::Multicast::Discover { origin: 50 + sender };
            crate::protocol::binary::encode(0, &discover, &mut datagram);
            Sealer::new(key(), 5_000 + sender).seal(&datagram, wall.unix_ms(now), &mut sealed);
            reply.clear();
            assert!(node.handle_datagram(now, Face::Group, from, &sealed, &mut reply).is_some(), "{sender}");
        }
        assert_eq!((node.group_guard.len(), node.guard.len()), (100, 0), "the peers' table saw none");
        // The group's windows still refuse a replay.
        reply.clear();
        assert!(node.handle_datagram(now, Face::Group, from, &sealed, &mut reply).is_none());
    }
}
