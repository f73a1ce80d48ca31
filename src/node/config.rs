//! The node's settings and the names of its sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::limit::RateLimit;
use crate::probe::ProberConfig;
use crate::protocol::seal::{self, Key};
use crate::registry;
use crate::service::{
    self,
    policy::{Policy, RequireKey},
};

use super::{BridgeConfig, DnsConfig, MdnsConfig, ReplicaConfig, VerifyConfig, WatchConfig};

/// The broker's sockets, as the node names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Face {
    /// The unicast socket clients, servers and peers talk to.
    Client,
    /// The multicast group socket, receive only (answers to discovery leave from
    /// [`Face::Client`]).
    Group,
    /// The socket the node's hellos to the group leave from.
    GroupOut,
    /// The DNS face's UDP socket (see [`dns`](super::dns)).
    Dns,
    /// The DNS face's TCP listener, on the same address.
    DnsTcp,
    /// A TCP listener answering `GET /metrics` (see [`crate::metrics`]).
    Metrics,
    /// A TCP listener answering `GET /metrics`, the JSON catalog and the status page (`--http`,
    /// see [`crate::http`]).
    Http,
    /// The mDNS socket (`--mdns`, see [`mdns`](super::mdns)).
    Mdns,
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
    /// The node's unicast address, as clients and peers know it.
    pub unicast: SocketAddr,
    /// The node's part in the multicast group (`None`: none).
    pub group: Option<GroupConfig>,
    /// This run's incarnation: a random id, new at every start.
    pub incarnation: u64,
    /// Replication with peer brokers.
    pub replica: ReplicaConfig,
    /// Reports and health checks.
    pub verify: VerifyConfig,
    /// How probes run: how many at once (its `timeout` is replaced by `verify.probe_timeout`).
    pub prober: ProberConfig,
    /// Response-rate limiting of replies larger than their request.
    pub rate_limit: RateLimit,
    /// Who may register what.
    pub policy: Policy,
    /// Which requests must come sealed with [`key`](Self::key) (`--require-key`; needs a key).
    pub require_key: RequireKey,
    /// With a key, peer and group datagrams are sealed with it, and unsealed ones are dropped
    /// (see [`crate::protocol::seal`]).
    pub key: Option<Key>,
    /// The wall clock at one instant, for the sealed envelopes' send times: the node reads no
    /// clock, so the shell tells it once what time it is.
    pub wall: WallClock,
    /// The DNS face's zone (`None`: no DNS face; datagrams on [`Face::Dns`] are dropped).
    pub dns: Option<DnsConfig>,
    /// Brokers of other networks asked for services this one does not have.
    pub bridges: BridgeConfig,
    /// The caps on watches.
    pub watches: WatchConfig,
    /// The key of the watches' cookies (see [`watch`](super::watch)): drawn at random at every
    /// start (`crate::random`), so that nobody can make a cookie for an address they do not
    /// receive at. All zeros by default, for tests.
    pub watch_key: [u8; 32],
    /// The cluster's name (`--cluster`): brokers on the group that say hello with another name
    /// are not taken as peers.
    pub cluster: String,
    /// Advertising on and importing from the link with mDNS (`--mdns`, `--mdns-import`;
    /// `None`: neither).
    pub mdns: Option<MdnsConfig>,
}

/// The wall clock at one [`Instant`]: the node derives the Unix time of any later instant from
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// The instant.
    pub at: Instant,
    /// Unix time then, in milliseconds.
    pub unix_ms: u64,
}

impl WallClock {
    /// The wall clock now (read by the caller, a shell).
    pub fn now() -> Self {
        WallClock { at: Instant::now(), unix_ms: seal::unix_ms(std::time::SystemTime::now()) }
    }

    /// Unix time at `now`, in milliseconds.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        self.unix_ms + u64::try_from(since).unwrap_or(u64::MAX)
    }
}

/// What a node needs to take part in the multicast group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// The group's address and port.
    pub group: SocketAddr,
    /// The id on the node's own datagrams, to tell them from others'.
    pub origin: u64,
    /// How often to say hello on the group (brokers find each other by it).
    pub hello_interval: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            registry: registry::Config::default(),
            max_datagram: service::DEFAULT_MAX_DATAGRAM,
            log_changes: false,
            unicast: crate::protocol::DEFAULT_BROKER,
            group: None,
            incarnation: 0,
            replica: ReplicaConfig::default(),
            verify: VerifyConfig { probe_interval: None, ..VerifyConfig::default() },
            prober: ProberConfig::default(),
            rate_limit: RateLimit::default(),
            policy: Policy::default(),
            require_key: RequireKey::No,
            key: None,
            wall: WallClock::now(),
            dns: None,
            bridges: BridgeConfig::default(),
            watches: WatchConfig::default(),
            watch_key: [0; 32],
            cluster: crate::protocol::DEFAULT_CLUSTER.to_owned(),
            mdns: None,
        }
    }
}
