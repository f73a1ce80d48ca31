//! What the replicator tells the node: events about the peers, and its counters.

use std::net::SocketAddr;

use super::entropy::EntropyStats;

/// Something about the peers worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A peer came up (first heard, or back after being down).
    Joined(SocketAddr),
    /// A peer went down (silent for the peer timeout, or it said goodbye).
    Left(SocketAddr),
    /// A peer restarted (a new incarnation at the same address).
    Restarted(SocketAddr),
    /// A peer found on the group stayed down for the forget time: it is no longer a peer (it
    /// becomes one again when it says hello on the group).
    Forgotten(SocketAddr),
    /// This broker holds the whole table now: pulled `leases` from `from`, or from nobody
    /// because no complete peer answered within the grace time.
    CaughtUp {
        /// The peer the table came from.
        from: Option<SocketAddr>,
        /// How many leases the pages carried.
        leases: u64,
    },
}

/// Counters of replication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Entries sent in deltas (counted once per peer).
    pub sent: u64,
    /// Entries received in deltas and pages and applied.
    pub applied: u64,
    /// Deltas resent for want of an acknowledgement.
    pub retransmits: u64,
    /// Deltas given up after the last retry.
    pub given_up: u64,
    /// Peer datagrams dropped: from addresses that are not peers, malformed, or another version.
    pub rejected: u64,
    /// Anti-entropy's counters.
    pub entropy: EntropyStats,
}

/// What the node must act on for the replicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::node) enum ReplicaEvent {
    /// Something about the peers worth a log line.
    Peer(PeerEvent),
    /// A peer asks this broker to verify a reported instance (it owns its checks).
    Report { service: String, endpoint: SocketAddr },
    /// The live, complete brokers changed: who owns which checks moves (see
    /// [`Replicator::owner`](super::Replicator::owner)).
    OwnersChanged,
}
