//! The node's part in the multicast group: announcements and goodbyes change the table like
//! `register` and `deregister`, a discovery gets the node's unicast address, and brokers say
//! hello there periodically, which is how they find each other as peers.
//!
//! [`Group`] owns the group's configuration, the hello clock and the group's counters. It
//! speaks the node's sub-machine convention (see the [node's documentation](super)):
//! [`handle_datagram`](Group::handle_datagram) and [`handle_timeout`](Group::handle_timeout)
//! take input, hellos leave through [`poll_transmit`](Group::poll_transmit) (the node seals
//! them), other brokers' hellos through [`poll_event`](Group::poll_event). The table is the
//! node's: it is lent for the one call that changes it.
//!
//! # Goodbyes that cannot be forged
//!
//! A goodbye removes only a lease this broker heard announced, by the same announcer (address
//! and origin), within the TTL. An announcement that commits to a secret
//! ([`Multicast::AnnounceCommitted`]) is taken with the commitment of the first one heard for
//! its lease (a later one that differs renews the lease but does not replace it), and its lease
//! is removed only by a goodbye that reveals the secret ([`Multicast::GoodbyeRevealed`]): a
//! goodbye copied from a sniffed announcement, sent from the server's address, does nothing.
//! An announcement without a commitment (from an announcer older than commitments) still
//! takes a plain goodbye from the same source, as before.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::{Face, GroupConfig};
use crate::core::{Outbox, Transmit};
use crate::protocol::{Check, DEFAULT_CLUSTER, Multicast, RemoveReason, Response, Source, binary, goodbye_commitment};
use crate::registry::Registry;
use crate::service::policy::Policy;

/// What the node must act on after a group datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GroupEvent {
    /// Another broker said hello from `addr`: a peer, when discovery is on.
    Hello(SocketAddr),
    /// A broker of another cluster said hello from `addr` (first heard): ignored, worth a log
    /// line.
    Foreign {
        /// Its unicast address.
        addr: SocketAddr,
        /// Its cluster's name.
        cluster: String,
    },
}

/// How many brokers of other clusters are remembered, so that each is logged once (more are
/// still ignored and counted, not logged).
const FOREIGN_LOGGED: usize = 64;

/// Counters of the group face.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct GroupStats {
    /// Announcements and goodbyes taken.
    pub announcements: u64,
    /// Datagrams dropped: malformed, foreign, refused, or the node's own.
    pub ignored: u64,
    /// Hellos from brokers of another cluster, ignored.
    pub foreign: u64,
}

/// A lease announced on the group: its announcer, service and instance.
type Announced = (Source, String, SocketAddr);

/// What a broker remembers of an announced lease, to judge its goodbye.
#[derive(Debug, Clone, Copy)]
struct Heard {
    /// The commitment of its first announcement, if that had one.
    commitment: Option<[u8; 32]>,
    /// A TTL after the last announcement heard: the lease lives as long.
    until: Instant,
}

/// The node's part in the group (none when `config` is `None`: every datagram is ignored).
#[derive(Debug)]
pub(super) struct Group {
    config: Option<GroupConfig>,
    /// The node's unicast address, for discovery answers and hellos.
    unicast: SocketAddr,
    /// The cluster's name: hellos of other names are ignored.
    cluster: String,
    /// Brokers of other clusters already logged.
    foreign: HashSet<SocketAddr>,
    next_hello: Option<Instant>,
    stats: GroupStats,
    transmits: Outbox<Face>,
    events: VecDeque<GroupEvent>,
    /// The leases announced within the TTL (see the [module documentation](self)); swept at
    /// every hello.
    heard: HashMap<Announced, Heard>,
}

impl Group {
    /// The node's unicast address.
    pub fn unicast(&self) -> SocketAddr {
        self.unicast
    }

    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn new(config: Option<GroupConfig>, unicast: SocketAddr, cluster: String) -> Self {
        Group {
            config,
            unicast,
            cluster,
            foreign: HashSet::new(),
            next_hello: None,
            stats: GroupStats::default(),
            transmits: Outbox::new(usize::MAX),
            events: VecDeque::new(),
            heard: HashMap::new(),
        }
    }

    /// Whether the node takes part in a group.
    pub fn is_on(&self) -> bool {
        self.config.is_some()
    }

    /// The counters.
    pub fn stats(&self) -> GroupStats {
        self.stats
    }

    /// Counts a datagram dropped before it got here (with a key: unsealed, a wrong key, a
    /// replay).
    pub fn note_ignored(&mut self) {
        self.stats.ignored += 1;
    }

    /// Handles one datagram from the group (opened already, when sealed); returns whether
    /// `reply` holds an answer to send to `from` (from the unicast socket; the node seals it
    /// and judges it by the rate limit). Everything else (malformed or foreign datagrams,
    /// refused announcements, goodbyes for leases the announcer does not hold, and the node's
    /// own datagrams) is dropped and counted. Never panics, whatever the bytes.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        registry: &mut Registry,
        policy: &Policy,
        reply: &mut Vec<u8>,
    ) -> bool {
        let Some(GroupConfig { origin: own, .. }) = self.config else {
            self.stats.ignored += 1;
            return false;
        };
        let frame = match binary::decode::<Multicast<'_>>(datagram) {
            Ok(frame) if origin(&frame.body) != own => frame,
            _ => {
                self.stats.ignored += 1;
                return false;
            }
        };
        let ip = from.ip().to_canonical();
        match frame.body {
            Multicast::Announce { origin, service, ip: named, port } => {
                self.announce(now, (ip, origin), (service, named, port, Check::None), (None, None), registry, policy);
                false
            }
            Multicast::AnnounceCommitted { origin, service, ip: named, port, commitment, check } => {
                let what = (service, named, port, check);
                self.announce(now, (ip, origin), what, (Some(commitment), None), registry, policy);
                false
            }
            Multicast::AnnounceMeta { origin, service, ip: named, port, commitment, check, meta } => {
                // Pairs that break a rule: the announcement is taken without them, as an older
                // broker takes the `AnnounceCommitted` that follows.
                let meta = crate::protocol::check::check_meta(&meta)
                    .ok()
                    .and_then(|()| crate::meta::Metadata::from_pairs(meta.iter().copied()).ok());
                let what = (service, named, port, check);
                self.announce(now, (ip, origin), what, (Some(commitment), meta), registry, policy);
                false
            }
            Multicast::Goodbye { origin, service, ip: named, port } => {
                self.goodbye(now, (ip, origin), service, named, port, None, registry);
                false
            }
            Multicast::GoodbyeRevealed { origin, service, ip: named, port, secret } => {
                self.goodbye(now, (ip, origin), service, named, port, Some(&secret), registry);
                false
            }
            Multicast::Discover { .. } => {
                reply.clear();
                binary::encode_response(frame.id, &Response::BrokerHere { addr: self.unicast }, reply);
                true
            }
            Multicast::BrokerHello { addr, .. } => {
                self.hello(ip, addr, DEFAULT_CLUSTER);
                false
            }
            Multicast::ClusterHello { addr, cluster, .. } => {
                self.hello(ip, addr, cluster);
                false
            }
        }
    }

    /// An announcement from `announcer` (its address and origin): registers or renews, as a
    /// `register` would (with `meta`, as a `register` with pairs: they replace the lease's), and
    /// remembers the lease (with the first commitment) for its goodbye.
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &mut self,
        now: Instant,
        (ip, origin): (IpAddr, u64),
        (service, named, port, check): (&str, Option<IpAddr>, u16, Check<&str>),
        (commitment, meta): (Option<[u8; 32]>, Option<crate::meta::Metadata>),
        registry: &mut Registry,
        policy: &Policy,
    ) {
        let endpoint = SocketAddr::new(named.map_or(ip, |named| named.to_canonical()), port);
        let source = Source::Announcer { ip, origin };
        let key = (source, service.to_owned(), endpoint);
        if self
            .heard
            .get(&key)
            .is_some_and(|heard| heard.until > now && heard.commitment.is_some_and(|c| commitment != Some(c)))
        {
            // Not the announcer that committed first (one who sniffed its announcements): it may
            // not change what the lease declares (its check, say) any more than say goodbye.
            self.stats.ignored += 1;
            return;
        }
        let registered = policy.check(ip, endpoint.ip()).and_then(|()| match meta {
            Some(meta) => registry.register_meta(now, service, endpoint, source, check, meta).map(drop),
            None => registry.register_checked(now, service, endpoint, source, check).map(drop),
        });
        if registered.is_err() {
            self.stats.ignored += 1;
            return;
        }
        self.stats.announcements += 1;
        let until = now + registry.config().ttl;
        let heard = self.heard.entry(key).or_insert(Heard { commitment, until });
        if heard.until <= now {
            // Its lease ran out since: a new lifetime, with this announcement's commitment.
            heard.commitment = commitment;
        }
        heard.until = until;
    }

    /// A goodbye from `announcer`: removes the lease if this broker heard it announced by the
    /// same announcer within the TTL and, when that announcement committed to a secret, only
    /// with the secret.
    #[allow(clippy::too_many_arguments)]
    fn goodbye(
        &mut self,
        now: Instant,
        (ip, origin): (IpAddr, u64),
        service: &str,
        named: Option<IpAddr>,
        port: u16,
        secret: Option<&[u8; 32]>,
        registry: &mut Registry,
    ) {
        let endpoint = SocketAddr::new(named.map_or(ip, |named| named.to_canonical()), port);
        let source = Source::Announcer { ip, origin };
        let key = (source, service.to_owned(), endpoint);
        let shown = match self.heard.get(&key) {
            Some(heard) if heard.until > now => match (heard.commitment, secret) {
                (None, _) => true,
                (Some(commitment), Some(secret)) => goodbye_commitment(secret) == commitment,
                (Some(_), None) => false,
            },
            _ => false,
        };
        if !shown {
            self.stats.ignored += 1;
            return;
        }
        self.heard.remove(&key);
        match registry.remove_owned(now, service, endpoint, source, RemoveReason::Goodbye) {
            Ok(_) => self.stats.announcements += 1,
            Err(_) => self.stats.ignored += 1,
        }
    }

    /// Another broker's hello: a peer when of this cluster, else ignored and counted (and
    /// logged the first time).
    fn hello(&mut self, ip: std::net::IpAddr, addr: SocketAddr, cluster: &str) {
        let addr = if addr.ip().is_unspecified() { SocketAddr::new(ip, addr.port()) } else { addr };
        if cluster == self.cluster {
            self.events.push_back(GroupEvent::Hello(addr));
            return;
        }
        self.stats.foreign += 1;
        if self.foreign.len() < FOREIGN_LOGGED && self.foreign.insert(addr) {
            self.events.push_back(GroupEvent::Foreign { addr, cluster: cluster.to_owned() });
        }
    }

    /// Says hello on the group when it is time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(config) = &self.config else { return };
        if self.next_hello.is_some_and(|at| at > now) {
            return;
        }
        self.heard.retain(|_, heard| heard.until > now);
        self.next_hello = Some(now + config.hello_interval);
        let hello = Multicast::ClusterHello { origin: config.origin, addr: self.unicast, cluster: &self.cluster };
        self.transmits.push(Face::GroupOut, config.group, |bytes| binary::encode(0, &hello, bytes));
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_hello
    }

    /// The next datagram to send (a hello), its bytes moved into `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<Transmit<Face>> {
        self.transmits.pop(out)
    }

    /// The next thing the node must act on.
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }
}

fn origin(message: &Multicast<'_>) -> u64 {
    match message {
        Multicast::Announce { origin, .. }
        | Multicast::AnnounceCommitted { origin, .. }
        | Multicast::AnnounceMeta { origin, .. }
        | Multicast::Goodbye { origin, .. }
        | Multicast::GoodbyeRevealed { origin, .. }
        | Multicast::Discover { origin }
        | Multicast::BrokerHello { origin, .. }
        | Multicast::ClusterHello { origin, .. } => *origin,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::registry;

    const UNICAST: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 7000);

    fn group() -> Group {
        let config = GroupConfig {
            group: "239.255.77.1:7077".parse().unwrap(),
            origin: 1,
            hello_interval: Duration::from_secs(2),
        };
        Group::new(Some(config), UNICAST, "prod".into())
    }

    #[test]
    fn hellos_leave_through_poll_transmit_once_per_interval() {
        let t0 = Instant::now();
        let mut g = group();
        let mut out = Vec::new();
        g.handle_timeout(t0);
        let hello = g.poll_transmit(&mut out).unwrap();
        assert_eq!((hello.face, hello.to), (Face::GroupOut, "239.255.77.1:7077".parse().unwrap()));
        assert_eq!(
            binary::decode::<Multicast<'_>>(&out).unwrap().body,
            Multicast::ClusterHello { origin: 1, addr: UNICAST, cluster: "prod" }
        );
        assert_eq!(g.poll_transmit(&mut out), None);
        g.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(g.poll_transmit(&mut out), None, "not yet");
        assert_eq!(g.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        g.handle_timeout(t0 + Duration::from_secs(2));
        assert!(g.poll_transmit(&mut out).is_some());
        let mut off = Group::new(None, UNICAST, DEFAULT_CLUSTER.into());
        off.handle_timeout(t0);
        assert_eq!((off.poll_transmit(&mut out), off.poll_timeout()), (None, None));
    }

    #[test]
    fn another_brokers_hello_is_an_event_and_a_discovery_is_answered() {
        let t0 = Instant::now();
        let mut g = group();
        let mut registry = Registry::new(registry::Config::default(), uuid::Uuid::new_v4);
        let (from, mut reply, mut datagram) = ("10.0.0.2:9999".parse().unwrap(), Vec::new(), Vec::new());
        let hello = Multicast::ClusterHello { origin: 2, addr: "0.0.0.0:7000".parse().unwrap(), cluster: "prod" };
        binary::encode(0, &hello, &mut datagram);
        assert!(!g.handle_datagram(t0, from, &datagram, &mut registry, &Policy::default(), &mut reply));
        assert_eq!(g.poll_event(), Some(GroupEvent::Hello("10.0.0.2:7000".parse().unwrap())), "its source address");
        assert_eq!(g.poll_event(), None);
        datagram.clear();
        binary::encode(9, &Multicast::Discover { origin: 2 }, &mut datagram);
        assert!(g.handle_datagram(t0, from, &datagram, &mut registry, &Policy::default(), &mut reply));
        assert_eq!(binary::decode_response(&reply).unwrap(), (9, Response::BrokerHere { addr: UNICAST }));
        assert!(!g.handle_datagram(t0, from, b"junk", &mut registry, &Policy::default(), &mut reply));
        assert_eq!(g.stats(), GroupStats { announcements: 0, ignored: 1, foreign: 0 });
    }

    #[test]
    fn a_broker_of_another_cluster_is_ignored_counted_and_logged_once() {
        let t0 = Instant::now();
        let mut g = group();
        let mut registry = Registry::new(registry::Config::default(), uuid::Uuid::new_v4);
        let (from, mut reply, mut datagram) = ("10.0.0.3:9999".parse().unwrap(), Vec::new(), Vec::new());
        let hello = Multicast::ClusterHello { origin: 3, addr: "10.0.0.3:7000".parse().unwrap(), cluster: "test" };
        binary::encode(0, &hello, &mut datagram);
        for _ in 0..3 {
            g.handle_datagram(t0, from, &datagram, &mut registry, &Policy::default(), &mut reply);
        }
        let foreign = GroupEvent::Foreign { addr: "10.0.0.3:7000".parse().unwrap(), cluster: "test".into() };
        assert_eq!((g.poll_event(), g.poll_event()), (Some(foreign), None), "logged once, never a peer");
        assert_eq!(g.stats(), GroupStats { announcements: 0, ignored: 0, foreign: 3 });
        // A hello from a broker older than names is of the default cluster.
        datagram.clear();
        binary::encode(0, &Multicast::BrokerHello { origin: 4, addr: "10.0.0.4:7000".parse().unwrap() }, &mut datagram);
        g.handle_datagram(t0, from, &datagram, &mut registry, &Policy::default(), &mut reply);
        assert!(matches!(g.poll_event(), Some(GroupEvent::Foreign { cluster, .. }) if cluster == DEFAULT_CLUSTER));
    }

    #[test]
    fn an_announcement_with_metadata_registers_them_and_the_plain_one_after_it_keeps_them() {
        let t0 = Instant::now();
        let mut g = group();
        let mut registry = Registry::new(registry::Config::default(), uuid::Uuid::new_v4);
        let server: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let endpoint: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let mut send = |registry: &mut Registry, message: &Multicast<'_>| {
            let (mut datagram, mut reply) = (Vec::new(), Vec::new());
            binary::encode(0, message, &mut datagram);
            g.handle_datagram(t0, server, &datagram, registry, &Policy::default(), &mut reply);
        };
        let commitment = goodbye_commitment(&[1; 32]);
        let (service, check) = ("web", Check::Tcp);
        let with = |meta| Multicast::AnnounceMeta { origin: 9, service, ip: None, port: 8080, commitment, check, meta };
        let plain = Multicast::AnnounceCommitted { origin: 9, service, ip: None, port: 8080, commitment, check };
        let pairs = |registry: &Registry| registry.metadata("web", endpoint).map(ToString::to_string);
        send(&mut registry, &with(vec![("path", "/"), ("version", "2")]));
        assert_eq!(pairs(&registry).as_deref(), Some("path=/ version=2"));
        send(&mut registry, &plain);
        assert_eq!(pairs(&registry).as_deref(), Some("path=/ version=2"), "the plain announcement keeps them");
        send(&mut registry, &with(vec![("path", "/v2")]));
        assert_eq!(pairs(&registry).as_deref(), Some("path=/v2"), "new pairs replace them");
        // Pairs that break a rule: taken as an announcement without them.
        send(&mut registry, &with(vec![("check", "x")]));
        assert_eq!(pairs(&registry).as_deref(), Some("path=/v2"));
        assert_eq!(registry.members(t0, "web").count(), 1);
    }

    #[test]
    fn only_the_revealed_secret_says_goodbye_to_a_committed_announcement() {
        let t0 = Instant::now();
        let ttl = registry::Config::default().ttl;
        let mut g = group();
        let mut registry = Registry::new(registry::Config::default(), uuid::Uuid::new_v4);
        let server: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let send = |g: &mut Group, registry: &mut Registry, now, from: SocketAddr, message: &Multicast<'_>| {
            let (mut datagram, mut reply) = (Vec::new(), Vec::new());
            binary::encode(0, message, &mut datagram);
            g.handle_datagram(now, from, &datagram, registry, &Policy::default(), &mut reply);
        };
        let live = |registry: &mut Registry, now| registry.members(now, "web").count();
        let (secret, forged_secret) = ([1u8; 32], [2u8; 32]);
        let commitment = goodbye_commitment(&secret);
        let announce = Multicast::AnnounceCommitted {
            origin: 9,
            service: "web",
            ip: None,
            port: 8080,
            commitment,
            check: Check::Tcp,
        };
        send(&mut g, &mut registry, t0, server, &announce);
        assert_eq!(live(&mut registry, t0), 1);

        // What one who sniffed the announcement can send, from the server's address, any port.
        let spoofed: SocketAddr = "10.0.0.5:1".parse().unwrap();
        let plain = Multicast::Goodbye { origin: 9, service: "web", ip: None, port: 8080 };
        send(&mut g, &mut registry, t0, spoofed, &plain);
        let guessed =
            Multicast::GoodbyeRevealed { origin: 9, service: "web", ip: None, port: 8080, secret: forged_secret };
        send(&mut g, &mut registry, t0, spoofed, &guessed);
        // Its own commitment, then its own secret: the first commitment stands.
        let own = goodbye_commitment(&forged_secret);
        let hijack = Multicast::AnnounceCommitted {
            origin: 9,
            service: "web",
            ip: None,
            port: 8080,
            commitment: own,
            check: Check::Tcp,
        };
        send(&mut g, &mut registry, t0, spoofed, &hijack);
        send(&mut g, &mut registry, t0, spoofed, &guessed);
        // Nor does revealing the commitment itself.
        let echoed = Multicast::GoodbyeRevealed { origin: 9, service: "web", ip: None, port: 8080, secret: commitment };
        send(&mut g, &mut registry, t0, spoofed, &echoed);
        assert_eq!(live(&mut registry, t0), 1, "no forged goodbye removed it");
        assert_eq!(g.stats().ignored, 5, "three goodbyes, the other commitment's announcement and its goodbye");

        let goodbye = Multicast::GoodbyeRevealed { origin: 9, service: "web", ip: None, port: 8080, secret };
        send(&mut g, &mut registry, t0, server, &goodbye);
        assert_eq!(live(&mut registry, t0), 0, "the announcer's goodbye removes it at once");

        // An announcer without a commitment still takes a plain goodbye from its own source; a
        // goodbye for what was never announced here (or too long ago) is ignored.
        let old = Multicast::Announce { origin: 10, service: "web", ip: None, port: 8081 };
        send(&mut g, &mut registry, t0, server, &old);
        let old_goodbye = Multicast::Goodbye { origin: 10, service: "web", ip: None, port: 8081 };
        send(&mut g, &mut registry, t0, server, &old_goodbye);
        assert_eq!(live(&mut registry, t0), 0);
        send(&mut g, &mut registry, t0, server, &old);
        g.handle_timeout(t0 + ttl);
        send(&mut g, &mut registry, t0 + ttl, server, &old_goodbye);
        assert!(g.heard.is_empty(), "swept");
        // A new lifetime takes the commitment of its first announcement.
        let t1 = t0 + ttl * 2;
        send(&mut g, &mut registry, t1, server, &hijack);
        send(&mut g, &mut registry, t1, server, &guessed);
        assert_eq!(live(&mut registry, t1), 0);
    }

    #[test]
    fn an_announcement_declares_its_check_and_only_its_announcer_changes_it() {
        let t0 = Instant::now();
        let mut g = group();
        let mut registry = Registry::new(registry::Config::default(), uuid::Uuid::new_v4);
        let server: SocketAddr = "10.0.0.6:40000".parse().unwrap();
        let send = |g: &mut Group, registry: &mut Registry, message: &Multicast<'_>| {
            let (mut datagram, mut reply) = (Vec::new(), Vec::new());
            binary::encode(0, message, &mut datagram);
            g.handle_datagram(t0, server, &datagram, registry, &Policy::default(), &mut reply);
        };
        let check_of = |registry: &Registry| {
            let source = Source::Announcer { ip: server.ip(), origin: 9 };
            let id = registry.lease_id("web", "10.0.0.6:8080".parse().unwrap(), source).expect("announced");
            registry.check_of(id).map(|check| check.as_deref().to_owned_check())
        };
        let announce = |commitment, check| Multicast::AnnounceCommitted {
            origin: 9,
            service: "web",
            ip: None,
            port: 8080,
            commitment,
            check,
        };
        let own = goodbye_commitment(&[1u8; 32]);
        send(&mut g, &mut registry, &announce(own, Check::Http("/health")));
        assert_eq!(check_of(&registry), Some(Check::Http("/health".into())));
        // One who sniffed it cannot make the broker check something that fails.
        send(&mut g, &mut registry, &announce(goodbye_commitment(&[2u8; 32]), Check::Http("/nothing-here")));
        send(&mut g, &mut registry, &Multicast::Announce { origin: 9, service: "web", ip: None, port: 8080 });
        assert_eq!(check_of(&registry), Some(Check::Http("/health".into())));
        assert_eq!(g.stats().ignored, 2);
        // The announcer itself may.
        send(&mut g, &mut registry, &announce(own, Check::Tcp));
        assert_eq!(check_of(&registry), Some(Check::Tcp));
    }
}
