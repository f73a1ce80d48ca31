//! Who holds a lease, and why one was removed early: the words registrations and replication
//! share.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Who holds a registration (a lease). Each source has its own lease on an endpoint, and only
/// that source learns the lease's id, which acts as its capability: a register from another
/// source for the same endpoint gets a lease (and an id) of its own rather than the first one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Source {
    /// A register request that came from this address (IP and port).
    Unicast(SocketAddr),
    /// An announcement on the multicast group from the process with this origin id, sent from
    /// `ip`.
    Announcer {
        /// The address the announcement came from.
        ip: IpAddr,
        /// The announcing process's origin id (see [`Multicast`](super::Multicast)).
        origin: u64,
    },
}

impl Source {
    /// The IP address the source sends from (what quotas count by).
    pub fn ip(&self) -> IpAddr {
        match *self {
            Source::Unicast(addr) => addr.ip(),
            Source::Announcer { ip, .. } => ip,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Unicast(addr) => write!(f, "{addr}"),
            Source::Announcer { ip, origin } => write!(f, "{ip} (announcer {origin:016x})"),
        }
    }
}

/// Why a registration was removed before its lease ran out. Travels between brokers with the
/// removal, so every broker logs the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RemoveReason {
    /// Its holder deregistered it.
    Deregistered,
    /// Its announcer said goodbye on the multicast group.
    Goodbye,
    /// A broker found the endpoint unreachable (a failed probe after a report or a health check).
    Unreachable,
}

impl std::fmt::Display for RemoveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RemoveReason::Deregistered => "deregistered",
            RemoveReason::Goodbye => "goodbye",
            RemoveReason::Unreachable => "unreachable",
        })
    }
}
