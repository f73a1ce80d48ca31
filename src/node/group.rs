//! The node's part in the multicast group: announcements and goodbyes change the table like
//! `register` and `deregister`, and a discovery gets the node's unicast address.

use std::net::SocketAddr;
use std::time::Instant;

use super::Node;
use crate::protocol::{Multicast, RemoveReason, Response, Source, binary};

/// What the node knows to take part in the group.
#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    /// The id on the node's own datagrams, so it can tell them from others'.
    origin: u64,
    /// The node's unicast address, for discovery answers.
    unicast: SocketAddr,
}

impl Group {
    pub fn new(origin: u64, unicast: SocketAddr) -> Self {
        Group { origin, unicast }
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
        let Some(group) = self.group else {
            self.counters.multicast_ignored += 1;
            return false;
        };
        let frame = match binary::decode::<Multicast<'_>>(datagram) {
            Ok(frame) if origin(&frame.body) != group.origin => frame,
            _ => {
                self.counters.multicast_ignored += 1;
                return false;
            }
        };
        let ip = from.ip().to_canonical();
        match frame.body {
            Multicast::Announce { origin, service, ip: named, port } => {
                let endpoint = SocketAddr::new(named.unwrap_or(ip), port);
                match self.registry.register(now, service, endpoint, Source::Announcer { ip, origin }) {
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
                binary::encode_response(frame.id, &Response::BrokerHere { addr: group.unicast }, reply);
                true
            }
            // Another broker starting: nothing for this one to do.
            Multicast::BrokerHello { .. } => false,
        }
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
