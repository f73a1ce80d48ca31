//! The messages on the multicast group ([`Multicast`]), the cluster names brokers say hello
//! with, and the commitment that makes a server's goodbye its own.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::Check;

/// A message on the multicast group, in the binary form only: the version byte, then a
/// [`Frame`](super::Frame) whose body is this. Every message names its `origin`, a random id per sending
/// process, so that a process (which hears its own datagrams on the group) can drop them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Multicast<'a> {
    /// A server offers an instance: brokers register it, or refresh it, exactly as a
    /// [`Request::Register`](super::Request::Register) would (same TTL). Without an `ip`, the datagram's source address.
    Announce {
        /// The sending process.
        origin: u64,
        /// The service's name.
        service: &'a str,
        /// The instance's address; `None`: the datagram's source address.
        ip: Option<IpAddr>,
        /// The instance's port.
        port: u16,
    },
    /// A server stops offering an instance: brokers drop it at once.
    Goodbye {
        /// The sending process.
        origin: u64,
        /// The service's name.
        service: &'a str,
        /// The instance's address; `None`: the datagram's source address.
        ip: Option<IpAddr>,
        /// The instance's port.
        port: u16,
    },
    /// Who are the brokers? Every broker answers the sender, unicast, with
    /// [`Response::BrokerHere`](super::Response::BrokerHere) carrying the frame's id.
    Discover {
        /// The sending process.
        origin: u64,
    },
    /// A broker has started, and says where (sent to the group when it starts).
    BrokerHello {
        /// The sending broker.
        origin: u64,
        /// Its unicast address, as in [`Response::BrokerHere`](super::Response::BrokerHere).
        addr: SocketAddr,
    },
    /// A broker says where it is, and of which cluster (`--cluster`): the hello brokers send
    /// since clusters were named. Brokers take the sender as a peer only when the name is
    /// theirs, so a test broker on the same group does not merge its table into production. A
    /// [`Multicast::BrokerHello`] (from a broker older than names) is of cluster
    /// [`DEFAULT_CLUSTER`].
    ClusterHello {
        /// The sending broker.
        origin: u64,
        /// Its unicast address, as in [`Response::BrokerHere`](super::Response::BrokerHere).
        addr: SocketAddr,
        /// Its cluster's name (see [`check_cluster_name`]).
        cluster: &'a str,
    },
    /// [`Multicast::Announce`] that commits to a secret its goodbye will reveal, so that only
    /// the announcer can say goodbye, key or no key: a goodbye copied from a sniffed
    /// announcement cannot know the secret. Brokers keep the commitment of the first
    /// announcement they hear for a lease, for as long as the lease lives.
    AnnounceCommitted {
        /// The sending process.
        origin: u64,
        /// The service's name.
        service: &'a str,
        /// The instance's address; `None`: the datagram's source address.
        ip: Option<IpAddr>,
        /// The instance's port.
        port: u16,
        /// [`goodbye_commitment`] of the secret, new for each announcer's lifetime.
        commitment: [u8; 32],
        /// How the instance may be checked, as `register … check=` declares it.
        #[serde(borrow)]
        check: Check<&'a str>,
    },
    /// [`Multicast::Goodbye`] that reveals the secret its announcements committed to: brokers
    /// drop the instance only when the secret's [`goodbye_commitment`] is the one they hold.
    GoodbyeRevealed {
        /// The sending process.
        origin: u64,
        /// The service's name.
        service: &'a str,
        /// The instance's address; `None`: the datagram's source address.
        ip: Option<IpAddr>,
        /// The instance's port.
        port: u16,
        /// The secret.
        secret: [u8; 32],
    },
    /// [`Multicast::AnnounceCommitted`] with the instance's metadata pairs, as a
    /// [`Request::RegisterMeta`](super::Request::RegisterMeta) carries them (same rules: a
    /// broker takes the announcement without them when they break one). A server with
    /// metadata sends it just before each `AnnounceCommitted`, which brokers older than this
    /// variant take (dropping this one as malformed): they hold the instance without its pairs;
    /// newer brokers take both, the second as a renewal that keeps the pairs.
    AnnounceMeta {
        /// The sending process.
        origin: u64,
        /// The service's name.
        service: &'a str,
        /// The instance's address; `None`: the datagram's source address.
        ip: Option<IpAddr>,
        /// The instance's port.
        port: u16,
        /// As in [`Multicast::AnnounceCommitted`].
        commitment: [u8; 32],
        /// How the instance may be checked, as `register … check=` declares it.
        #[serde(borrow)]
        check: Check<&'a str>,
        /// The pairs, `(key, value)`, in order.
        #[serde(borrow)]
        meta: Vec<(&'a str, &'a str)>,
    },
}

/// The commitment an announcement carries ([`Multicast::AnnounceCommitted`]) to the secret its
/// goodbye reveals ([`Multicast::GoodbyeRevealed`]): the BLAKE3 hash of a context string and the
/// secret, which tells nothing of the secret.
///
/// ```
/// let secret = [7u8; 32];
/// let commitment = makler::protocol::goodbye_commitment(&secret);
/// assert_ne!(commitment, secret);
/// assert_eq!(commitment, makler::protocol::goodbye_commitment(&secret));
/// ```
pub fn goodbye_commitment(secret: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"makler goodbye commitment v1");
    hasher.update(secret);
    *hasher.finalize().as_bytes()
}

/// The cluster a broker belongs to unless `--cluster` names another.
pub const DEFAULT_CLUSTER: &str = "makler";

/// The longest cluster name, in bytes.
pub const MAX_CLUSTER_NAME: usize = 64;

/// Checks a cluster name: 1 to [`MAX_CLUSTER_NAME`] ASCII letters, digits, `-`, `_` or `.`, so
/// that it reads the same in every log line and flag.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CLUSTER_NAME {
        return Err(format!("a cluster name has 1 to {MAX_CLUSTER_NAME} characters"));
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Some(bad) => Err(format!("a cluster name holds ASCII letters, digits, '-', '_' and '.' only, not {bad:?}")),
        None => Ok(()),
    }
}
