//! What the replicator knows of each peer, and who owns an endpoint: rendezvous hashing of the
//! endpoint over the live, complete brokers' incarnations (see the [replicator](super)); for
//! mDNS advertising, over those of them that advertise on this broker's link.

use std::net::SocketAddr;
use std::time::Instant;

/// A peer as the replicator knows it: given with `--peers` or found on the group.
#[derive(Debug)]
pub(super) struct PeerState {
    pub(super) addr: SocketAddr,
    /// The incarnation last heard from.
    pub(super) node: Option<u64>,
    pub(super) up: bool,
    pub(super) last_heard: Option<Instant>,
    pub(super) complete: bool,
    pub(super) instances: u64,
    /// The address is this broker's own (it heard its own hello).
    pub(super) is_self: bool,
    /// For a peer found on the group: when it last said hello there.
    pub(super) seen_on_group: Option<Instant>,
    /// The link it advertises on with mDNS (`Peer::MdnsLink`), since its last `Features` with
    /// [`FEATURE_MDNS`]; `None`: it does not (or it is older than the bit).
    pub(super) mdns: Option<ipnet::Ipv4Net>,
}

/// `Peer::Features` bit: this broker advertises with mDNS; its link follows in a
/// `Peer::MdnsLink`.
pub(super) const FEATURE_MDNS: u32 = 4;

impl PeerState {
    /// Given with `--peers` (never forgotten), not found on the group.
    pub(super) fn configured(&self) -> bool {
        self.seen_on_group.is_none()
    }
}

/// A broker's rendezvous score for an endpoint: FNV-1a over both, mixed.
pub(super) fn score(node: u64, endpoint: SocketAddr) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let ip = match endpoint.ip() {
        std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(ip) => ip.octets(),
    };
    for byte in node.to_le_bytes().into_iter().chain(ip).chain(endpoint.port().to_be_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    // A final mix, so nearby inputs spread over the whole range.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}
