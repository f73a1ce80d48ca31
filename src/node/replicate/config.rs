//! How brokers replicate: the replicator's settings.

use std::net::SocketAddr;
use std::time::Duration;

/// How brokers replicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The other brokers, by the address clients use (the broker's own address may be in the
    /// list; it is recognised and skipped).
    pub peers: Vec<SocketAddr>,
    /// Take brokers that say hello on the multicast group as peers too.
    pub discover: bool,
    /// How often to say hello to every peer.
    pub hello_interval: Duration,
    /// A peer unheard of for this long is down.
    pub peer_timeout: Duration,
    /// Renewals are collected for this long and sent together.
    pub refresh_batch: Duration,
    /// The first retransmission of an unacknowledged delta comes after this; then twice as long
    /// each time.
    pub retransmit: Duration,
    /// How often a delta is resent before it is given up (the next renewal repairs it).
    pub retries: u8,
    /// How long a starting broker waits for a complete peer before it takes itself as complete
    /// (it is the first, or its peers are starting too).
    pub catch_up_grace: Duration,
    /// Pages asked for at once while catching up.
    pub sync_pages: u8,
    /// Peers kept at most (configured ones count too).
    pub max_peers: usize,
    /// A peer found on the multicast group that is down and has been heard neither on the
    /// group nor directly for this long is forgotten (configured peers are kept).
    pub forget_after: Duration,
    /// How often a complete broker sends each live, complete peer a digest of its table (see
    /// [`entropy`](super::entropy)); zero: never (no anti-entropy).
    pub digest_interval: Duration,
    /// Send leases with slots and renewals by slot to peers that read them (see
    /// [`slots`](super::slots)); off: whole leases, as brokers before slots did (and do not
    /// announce that this one reads slots).
    pub slot_renewals: bool,
    /// Send leases with their metadata (`Entry::UpsertMeta`, `Peer::PageMeta`) to peers that
    /// read them, and announce that this one does; off: as brokers before metadata did (tests
    /// of mixed versions).
    pub metadata: bool,
    /// The network of the link this broker advertises on with mDNS (`--mdns`; `0.0.0.0/0` when
    /// not known), told to peers (`Peer::MdnsLink`) so that each instance's advertiser is chosen
    /// among the brokers of that link ([`Replicator::mdns_owner`](super::Replicator::mdns_owner));
    /// `None`: it does not advertise.
    pub mdns_link: Option<ipnet::Ipv4Net>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            peers: Vec::new(),
            discover: false,
            hello_interval: Duration::from_millis(500),
            peer_timeout: Duration::from_secs(2),
            refresh_batch: Duration::from_millis(200),
            retransmit: Duration::from_millis(100),
            retries: 4,
            catch_up_grace: Duration::from_secs(1),
            sync_pages: 16,
            max_peers: 32,
            forget_after: Duration::from_secs(30),
            digest_interval: Duration::from_secs(1),
            slot_renewals: true,
            metadata: true,
            mdns_link: None,
        }
    }
}
