//! The broker's sans-IO core: everything a broker does, with no socket and no clock.
//!
//! A [`Node`] owns the [`Registry`] and everything that works on it: the registration protocol
//! ([`Service`]), the multicast group, and the prober. The [`Shell`](crate::shell::Shell) feeds
//! it datagrams and probe outcomes on its [`Face`]s and the time, and polls it for datagrams to
//! send, probes to run and its next timeout (see [`Core`]). After every input the node drains
//! the registry's change log once and hands each change to whatever follows the table (today
//! the log; replication and watches take theirs from the same place).
//!
//! ```
//! use std::time::Instant;
//! use makler::node::{Face, Node, NodeConfig};
//! use makler::shell::Core;
//!
//! let mut node = Node::new(NodeConfig::default(), uuid::Uuid::new_v4);
//! let (server, client) = ("127.0.0.1:40000".parse().unwrap(), "127.0.0.1:40001".parse().unwrap());
//! let (now, mut reply) = (Instant::now(), Vec::new());
//! assert_eq!(node.handle_datagram(now, Face::Client, server, b"register echo 4000", &mut reply), Some(Face::Client));
//! reply.clear();
//! node.handle_datagram(now, Face::Client, client, b"query echo", &mut reply);
//! assert_eq!(reply, b"127.0.0.1:4000\n");
//! ```

mod group;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use uuid::Uuid;

use crate::probe::{Prober, ProberConfig};
use crate::protocol::{BrokerStats, Rejection, Request, Response};
use crate::registry::{self, Change, ChangeKind, Registry};
use crate::service::{self, Handled, Service};
use crate::shell::{Core, Outbox, ProbeCmd, ProbeId, ProbeOutcome, Transmit};

/// The broker's sockets, as the node names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Face {
    /// The unicast socket clients, servers and peers talk to.
    Client,
    /// The multicast group socket (receive only; answers leave from [`Face::Client`]).
    Group,
}

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// TTL and limits of the table.
    pub registry: registry::Config,
    /// The longest request datagram accepted, in bytes.
    pub max_datagram: usize,
    /// Log registrations, removals and expiries (at info level).
    pub log_changes: bool,
    /// The node's unicast address, as a discovery answer names it.
    pub unicast: SocketAddr,
    /// The origin id of the node's own datagrams on the multicast group (`None`: the node
    /// takes no part in the group).
    pub group_origin: Option<u64>,
    /// How probes run.
    pub prober: ProberConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            registry: registry::Config::default(),
            max_datagram: service::DEFAULT_MAX_DATAGRAM,
            log_changes: false,
            unicast: crate::broker::DEFAULT_LISTEN,
            group_origin: None,
            prober: ProberConfig::default(),
        }
    }
}

/// Counters of the node beyond the registration protocol's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    send_failures: u64,
    announcements: u64,
    multicast_ignored: u64,
}

/// How many datagrams may wait to be sent; more are dropped and counted.
const OUTBOX_CAPACITY: usize = 65_536;

/// The broker's core. See the [module documentation](self).
#[derive(Debug)]
pub struct Node {
    registry: Registry,
    service: Service,
    group: Option<group::Group>,
    outbox: Outbox<Face>,
    prober: Prober,
    counters: Counters,
    log_changes: bool,
}

impl Node {
    /// A node with an empty table; `new_id` makes the ids of new registrations.
    pub fn new(config: NodeConfig, new_id: impl FnMut() -> Uuid + Send + 'static) -> Self {
        let registry = Registry::new(config.registry, new_id);
        let service = Service::new(&registry, config.max_datagram);
        Node {
            registry,
            service,
            group: config.group_origin.map(|origin| group::Group::new(origin, config.unicast)),
            outbox: Outbox::new(OUTBOX_CAPACITY),
            prober: Prober::new(config.prober),
            counters: Counters::default(),
            log_changes: config.log_changes,
        }
    }

    /// The table.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The counters, as `stats` reports them.
    pub fn stats(&self) -> BrokerStats {
        let service = self.service.counters();
        BrokerStats {
            instances: self.registry.len() as u64,
            services: self.registry.service_count() as u64,
            received: service.received,
            rejected: service.rejected,
            expired: self.registry.expired_total(),
            send_failures: self.counters.send_failures + self.outbox.dropped(),
            announcements: self.counters.announcements,
            multicast_ignored: self.counters.multicast_ignored,
        }
    }

    /// A datagram on the client face.
    fn handle_client(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], reply: &mut Vec<u8>) {
        let (form, request) = match self.service.handle(&mut self.registry, now, from, datagram, reply) {
            Handled::Replied => return,
            Handled::Other { form, request } => (form, request),
        };
        let response = match request {
            Request::Stats => Response::Stats(self.stats()),
            other => Response::Error(Rejection::Unsupported { what: format!("{other:?}") }),
        };
        self.service.reply(form, &response, reply);
    }

    /// Hands every change since the last call to whatever follows the table.
    fn drain_changes(&mut self) {
        while let Some(change) = self.registry.poll_change() {
            if self.log_changes {
                log_change(&change);
            }
        }
    }
}

impl Core for Node {
    type Face = Face;

    fn handle_datagram(
        &mut self,
        now: Instant,
        face: Face,
        from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> Option<Face> {
        let out = match face {
            Face::Client => {
                self.handle_client(now, from, datagram, reply);
                Some(Face::Client)
            }
            Face::Group => self.handle_group(now, from, datagram, reply).then_some(Face::Client),
        };
        self.drain_changes();
        out
    }

    fn poll_transmit(&mut self, _now: Instant, out: &mut Vec<u8>) -> Option<Transmit<Face>> {
        self.outbox.pop(out)
    }

    fn poll_probe(&mut self) -> Option<ProbeCmd> {
        self.prober.poll_command()
    }

    fn handle_probe(&mut self, now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        self.prober.handle_outcome(now, id, outcome);
        // Nothing asks for probes yet; their results are dropped.
        while self.prober.poll_result().is_some() {}
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.registry.poll_timeout(), self.prober.poll_timeout()].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.registry.handle_timeout(now);
        self.prober.handle_timeout(now);
        while self.prober.poll_result().is_some() {}
        self.drain_changes();
    }

    fn handle_send_error(&mut self, _face: Face, _to: SocketAddr, _error: &io::Error) {
        // A full send buffer or an unroutable source: the client retransmits.
        self.counters.send_failures += 1;
    }
}

/// Logs a change to the table (renewals are too many to log).
fn log_change(change: &Change) {
    let what = match change.kind {
        ChangeKind::Registered => "registered",
        ChangeKind::Refreshed => return,
        ChangeKind::Expired => "expired",
        ChangeKind::Removed(reason) => match reason {
            registry::RemoveReason::Deregistered => "deregistered",
            registry::RemoveReason::Goodbye => "said goodbye",
            registry::RemoveReason::Unreachable => "removed as unreachable",
        },
    };
    let peer = if change.by_peer { " (from a peer)" } else { "" };
    log::info!("{what} {} {} id={} source={}{peer}", change.service, change.endpoint, change.id, change.source);
}
