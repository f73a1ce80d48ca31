//! The counters `stats` answers with: a broker's and a balancer's.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A balancer's counters and the state of each backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerStats {
    /// Client connections open now.
    pub active: u64,
    /// Client connections accepted since start.
    pub total: u64,
    /// Connections refused because the connection cap was reached.
    pub refused: u64,
    /// Connections closed because no backend accepted them.
    pub failed: u64,
    /// The backends (as many as fit in one reply; `backend_count` says how many there are).
    pub backends: Vec<BackendStats>,
    /// How many backends are registered.
    pub backend_count: u64,
    /// Connections each forwarding thread accepted (each accepts on its own listener).
    pub accepted_per_thread: Vec<u64>,
}

/// One backend as a balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it gets new connections (false after a failed connect or probe, until it proves
    /// alive again).
    pub up: bool,
    /// Connections forwarded to it that are open now.
    pub active: u64,
    /// Connections forwarded to it since it registered.
    pub total: u64,
    /// Bytes sent to it.
    pub bytes_to: u64,
    /// Bytes received from it.
    pub bytes_from: u64,
    /// Failed connects and probes.
    pub failures: u64,
}

/// Counters a broker keeps about itself, returned for [`Request::Stats`](super::Request::Stats).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStats {
    /// Live instances in the table.
    pub instances: u64,
    /// Services with at least one live instance.
    pub services: u64,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams answered with `ERROR`, or dropped because not even an error could be sent.
    pub rejected: u64,
    /// Registrations that expired because their heartbeats stopped.
    pub expired: u64,
    /// Replies that could not be sent (the socket's buffer was full).
    pub send_failures: u64,
    /// Announcements and goodbyes from the multicast group that changed or renewed the table.
    pub announcements: u64,
    /// Datagrams on the multicast group that were dropped: malformed, foreign (another
    /// protocol or version), refused (a bad name, say), or the broker's own.
    pub multicast_ignored: u64,
    /// The broker holds the whole table (false while it catches up from its peers).
    pub complete: bool,
    /// Lease changes sent to peers (once per peer).
    pub replicated_out: u64,
    /// Lease changes received from peers and applied.
    pub replicated_in: u64,
    /// Deltas resent to peers for want of an acknowledgement.
    pub retransmits: u64,
    /// Peer datagrams dropped (not from a peer, malformed, another version, refused).
    pub peer_rejected: u64,
    /// TCP probes started (reports and health checks).
    pub probes: u64,
    /// Probes that found their target dead.
    pub probes_dead: u64,
    /// Reports of dead instances received (from clients and peers).
    pub reports: u64,
    /// Instances removed because a probe found them unreachable.
    pub removed_unreachable: u64,
    /// Registrations refused because the table was full.
    pub refused_full: u64,
    /// Registrations refused by the per-source quota (`--max-per-source`).
    pub refused_quota: u64,
    /// Registrations refused by the registration policy (`--allow-register`, `--foreign-ip`).
    pub refused_policy: u64,
    /// Reports refused as too many from one source.
    pub refused_reports: u64,
    /// Replies not sent because their source was over the rate limit.
    pub rate_dropped: u64,
    /// Short `rate limited` answers sent instead of replies.
    pub rate_slipped: u64,
    /// How many peers the broker knows.
    pub peer_count: u64,
    /// How many of them are up.
    pub peers_up: u64,
    /// The peers (as many as fit in one reply).
    pub peers: Vec<PeerStats>,
    /// Queries for a service not held here that were asked at the bridges (`--bridge`).
    pub bridged: u64,
    /// Of those, how many a bridge answered with instances (from the cache or anew).
    pub bridged_found: u64,
    /// Queries from brokers of other networks answered from this broker's table.
    pub bridge_queries: u64,
    /// The bridges (as many as fit in one reply).
    pub bridges: Vec<BridgeStats>,
    /// Watches now (`watch`).
    pub watches: u64,
    /// Notifications sent to watchers.
    pub watch_notifications: u64,
    /// Notifications held back by the rate limit or a full queue (the watcher sees the gap).
    pub watch_dropped: u64,
}

/// One bridge (a broker of another network, `--bridge`) as a broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeStats {
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it is asked (it answered its last query in time, or its time out is over).
    pub up: bool,
    /// Queries sent to it.
    pub asked: u64,
    /// Its answers with instances.
    pub found: u64,
    /// Queries it did not answer in time.
    pub timeouts: u64,
}

/// One peer broker as a broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStats {
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it is live (heard from within the peer timeout).
    pub up: bool,
    /// Whether it holds the whole table.
    pub complete: bool,
    /// Its live instances, as it last said.
    pub instances: u64,
    /// Milliseconds since it was last heard from (`None`: never).
    pub last_heard_ms: Option<u64>,
}
