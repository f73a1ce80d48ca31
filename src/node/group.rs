//! The node's part in the multicast group: announcements and goodbyes change the table like
//! `register` and `deregister`, a discovery gets the node's unicast address, and brokers say
//! hello there periodically, which is how they find each other as peers.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Face, GroupConfig, Node};
use crate::protocol::{Multicast, RemoveReason, Response, Source, binary};

/// What the node knows to take part in the group.
#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    config: GroupConfig,
    /// The node's unicast address, for discovery answers and hellos.
    unicast: SocketAddr,
    next_hello: Option<Instant>,
}

impl Group {
    pub fn new(config: GroupConfig, unicast: SocketAddr) -> Self {
        Group { config, unicast, next_hello: None }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_hello
    }
}

impl Node {
    /// Handles one datagram from the group; returns whether `reply` holds an answer to send
    /// to `from` (from the unicast socket). Everything else (malformed or foreign datagrams,
    /// refused announcements, goodbyes for leases the announcer does not hold, and the node's
    /// own datagrams) is dropped and counted. Never panics, whatever the bytes.
    pub(super) fn handle_group(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> bool {
        let Some(Group { config: GroupConfig { origin: own, .. }, unicast, .. }) = self.group else {
            self.counters.multicast_ignored += 1;
            return false;
        };
        // With a key, the group's datagrams come sealed, and only so.
        let Some(datagram) = self.open(now, datagram) else {
            self.counters.multicast_ignored += 1;
            return false;
        };
        let frame = match binary::decode::<Multicast<'_>>(datagram) {
            Ok(frame) if origin(&frame.body) != own => frame,
            _ => {
                self.counters.multicast_ignored += 1;
                return false;
            }
        };
        let ip = from.ip().to_canonical();
        match frame.body {
            Multicast::Announce { origin, service, ip: named, port } => {
                let endpoint = SocketAddr::new(named.map_or(ip, |named| named.to_canonical()), port);
                let registered =
                    self.service.policy().check(ip, endpoint.ip()).and_then(|()| {
                        self.registry.register(now, service, endpoint, Source::Announcer { ip, origin })
                    });
                match registered {
                    Ok(_) => self.counters.announcements += 1,
                    Err(_) => self.counters.multicast_ignored += 1,
                }
                false
            }
            Multicast::Goodbye { origin, service, ip: named, port } => {
                let endpoint = SocketAddr::new(named.unwrap_or(ip), port);
                let source = Source::Announcer { ip, origin };
                match self.registry.remove_owned(now, service, endpoint, source, RemoveReason::Goodbye) {
                    Ok(_) => self.counters.announcements += 1,
                    Err(_) => self.counters.multicast_ignored += 1,
                }
                false
            }
            Multicast::Discover { .. } => {
                reply.clear();
                binary::encode_response(frame.id, &Response::BrokerHere { addr: unicast }, reply);
                if let Some(sealer) = &mut self.sealer {
                    sealer.seal_in_place(reply, self.wall.unix_ms(now));
                }
                // The answer is larger than the question: rate-limited like any such reply.
                self.limiter.check(now, from.ip(), datagram.len(), reply.len()) == crate::limit::Verdict::Send
            }
            // Another broker: a peer, when discovery is on.
            Multicast::BrokerHello { addr, .. } => {
                let addr = if addr.ip().is_unspecified() { SocketAddr::new(ip, addr.port()) } else { addr };
                self.replicator.discovered(addr, &self.registry, &mut self.outbox);
                false
            }
        }
    }

    /// Says hello on the group when it is time.
    pub(super) fn group_timeout(&mut self, now: Instant) {
        let Some(group) = &mut self.group else { return };
        if group.next_hello.is_some_and(|at| at > now) {
            return;
        }
        group.next_hello = Some(now + group.config.hello_interval);
        let hello = Multicast::BrokerHello { origin: group.config.origin, addr: group.unicast };
        self.outbox.push(Face::GroupOut, group.config.group, |bytes| binary::encode(0, &hello, bytes));
    }
}

fn origin(message: &Multicast<'_>) -> u64 {
    match message {
        Multicast::Announce { origin, .. }
        | Multicast::Goodbye { origin, .. }
        | Multicast::Discover { origin }
        | Multicast::BrokerHello { origin, .. } => *origin,
    }
}
