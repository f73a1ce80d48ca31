//! The node's mDNS face (`--mdns`, `--mdns-import`): the [responder](crate::mdns::responder)
//! advertising the table's instances on the link, and the [browser](crate::mdns::browser)
//! importing the link's instances into the table, wired as the node's other sub-machines are
//! (`handle_*` in, `poll_transmit` / `poll_timeout` out, the table lent for the call that
//! changes it). Its datagrams use [`Face::Mdns`], one socket on port 5353
//! ([`crate::mdns::socket`]).
//!
//! # What is advertised
//!
//! Every live instance of the table that holds a lease of its own (registered here or at a
//! peer, not imported), whose endpoint is not a loopback address (meaningless to another host
//! of the link), whose service name makes a DNS label, and which this broker *owns* among the
//! brokers that advertise on the same link: the health checks' rendezvous hashing over those
//! brokers only ([`Replicator::mdns_owner`](super::replicate::Replicator::mdns_owner); peers say
//! where they advertise in their hellos, see [`advertised_link`]), so that with several brokers
//! on one link each instance is advertised once, and a broker without `--mdns` takes none off
//! it. When the owners change, the new owner takes the instance over (announced at once, no
//! probes) and the old one hands it over (it answers until the new owner's announcement is
//! heard, then goes without a goodbye; see [`crate::mdns::responder::handover`]), so browsers
//! see no gap. The TXT record holds the lease's metadata (`advert_metadata`, [`Metadata::to_txt`]).
//!
//! # What is imported, and the no-loop rule
//!
//! Each instance the browser finds of a type named in `--mdns-import` becomes a lease of the
//! service named by the type (`_printer._tcp` → `printer`), at the SRV port of its first
//! address, held by [`Source::Announcer`] with the address and [`IMPORT_ORIGIN`]. Its id is
//! derived from the service, the endpoint and a generation ([`import_id`]), so that brokers
//! importing the same instance make the same lease, and peers tell an imported lease by its id
//! ([`is_imported`]) with nothing more on the wire. It is renewed every third of the table's
//! TTL while the browser holds the instance (for its mDNS TTL, refreshed as mDNS refreshes
//! it), and deregistered when the browser says it is gone (a goodbye, or its records expired).
//! Its TXT record is read as the lease's metadata ([`Metadata::from_txt`], logged with the
//! import). A generation is skipped when its id is
//! tombstoned (the instance left and came back within
//! the tombstones' life); a tombstoned id is never registered, and a lease the announcer holds
//! already under another generation is renewed rather than doubled
//! ([`Registry::register_with_id`]). An imported lease is the link's to end: a client's
//! `deregister` or `heartbeat` of its id answers `NOT FOUND` (`crate::service`).
//!
//! The registration policy ([`Policy`]) applies to an import as to a `register`, with the
//! announcer (the source of the datagram that completed the instance) as the source; loopback,
//! unspecified, multicast and link-local endpoints are never imported.
//!
//! No loops: an imported lease is never advertised (here or by a peer: its id says what it
//! is), and an instance whose SRV target is under `makler.local.` (the host names every makler
//! responder gives the instances it advertises, [`host_name`](crate::mdns::records::host_name)) is never imported.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Face;
use crate::core::Transmit;
use crate::mdns::{Advert, Browser, BrowserConfig, BrowserEvent, Instance, Responder, ResponderConfig, ResponderEvent};
use crate::meta::Metadata;
use crate::registry::{Applied, Change, ChangeKind, Registry, RemoveReason, Source};
use crate::service::policy::Policy;

/// The origin id of the [`Source::Announcer`] that holds imported leases: `mdns` in ASCII.
pub const IMPORT_ORIGIN: u64 = u64::from_be_bytes(*b"\0\0\0\0mdns");

/// How many generations of an imported instance's id are tried (see [`import_id`]).
const GENERATIONS: u8 = 8;

/// The first two bytes of an imported lease's id.
const IMPORT_MARK: [u8; 2] = *b"md";

/// What the node's mDNS face does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// Where multicast goes: [`crate::mdns::GROUP_V4`] (a test may name another).
    pub group: SocketAddr,
    /// Advertise the table's instances (`--mdns`).
    pub advertise: bool,
    /// The service types to import (`--mdns-import`), as `_http._tcp`.
    pub import: Vec<String>,
    /// Seeds the responder's and the browser's random delays.
    pub seed: u64,
    /// The link's network: datagrams from other sources are dropped (RFC 6762 §11: answering
    /// them would reflect traffic for anyone who can route a datagram to port 5353). `None`:
    /// every source is taken (tests only: the broker refuses `--mdns` on an interface whose
    /// network it cannot read).
    pub link: Option<ipnet::Ipv4Net>,
    /// This host's address on the link (the `--mdns` interface's): datagrams from it are the
    /// broker's own multicast, looped back (see [`crate::mdns::responder::handover`]). `None`:
    /// not known (tests).
    pub own: Option<std::net::Ipv4Addr>,
}

impl MdnsConfig {
    /// Advertising on the IPv4 group, importing `import`.
    pub fn new(import: Vec<String>, seed: u64) -> Self {
        MdnsConfig { group: crate::mdns::GROUP_V4, advertise: true, import, seed, link: None, own: None }
    }
}

/// The link this broker advertises on, as peers are told it ([`Peer::MdnsLink`](crate::protocol::peer::Peer::MdnsLink)):
/// `None` without advertising, `0.0.0.0/0` when its network is not known (tests).
pub fn advertised_link(config: Option<&MdnsConfig>) -> Option<ipnet::Ipv4Net> {
    let config = config.filter(|c| c.advertise)?;
    Some(config.link.unwrap_or_default())
}

/// An instance imported from the link.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Imported {
    service: String,
    endpoint: SocketAddr,
    id: Uuid,
    /// Its TXT record read as metadata (RFC 6763 §6.4: invalid strings skipped).
    meta: Metadata,
    /// Who announced it: the source of the datagram that completed it.
    announcer: IpAddr,
    /// Whether `meta` went into the lease since this broker last saw it change. Renewals then
    /// say nothing of metadata, so that two brokers importing one instance, one of them with a
    /// stale TXT record, do not overwrite each other's pairs every renewal (each write a change
    /// to every watcher and balancer); the last broker whose view changed wins, everywhere.
    written: bool,
}

/// The node's mDNS face. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Mdns {
    on: bool,
    responder: Responder,
    browser: Option<Browser>,
    /// The ids of the leases (not imported) that hold each instance.
    native: HashMap<(Arc<str>, SocketAddr), HashSet<Uuid>>,
    /// The instances the responder advertises.
    advertised: HashSet<(Arc<str>, SocketAddr)>,
    /// The imported instances, by type and instance label.
    imported: HashMap<(String, String), Imported>,
    /// When imported leases are renewed next.
    renew_at: Option<Instant>,
    advertise: bool,
    /// The types to browse, until the browser starts.
    import: Vec<String>,
    group: SocketAddr,
    seed: u64,
    link: Option<ipnet::Ipv4Net>,
    /// The source of the datagram being handled (the announcer of what it completes).
    from: Option<IpAddr>,
    /// Announcements refused by the policy or for their endpoint (see [`Mdns::import`]).
    refused: u64,
    /// The refused instances logged already (each is logged once), at most [`REFUSED_LOGGED`].
    refused_logged: HashSet<(String, SocketAddr)>,
}

/// How many refused instances are remembered so as to log each once.
const REFUSED_LOGGED: usize = 1024;

impl Mdns {
    /// The face (off without a configuration); it browses from [`handle_start`](Self::handle_start).
    pub fn new(config: Option<&MdnsConfig>) -> Self {
        let (group, seed) = config.map_or((crate::mdns::GROUP_V4, 0), |c| (c.group, c.seed));
        let mut responder = Responder::new(ResponderConfig { group, seed });
        if let Some(own) = config.and_then(|c| c.own) {
            responder.set_own_address(own.into());
        }
        Mdns {
            on: config.is_some(),
            responder,
            browser: None,
            import: config.map(|c| c.import.clone()).unwrap_or_default(),
            native: HashMap::new(),
            advertised: HashSet::new(),
            imported: HashMap::new(),
            renew_at: None,
            advertise: config.is_some_and(|c| c.advertise),
            group,
            seed,
            link: config.and_then(|c| c.link),
            from: None,
            refused: 0,
            refused_logged: HashSet::new(),
        }
    }

    /// The node starts: the browser's first queries go out soon after `now`.
    pub fn handle_start(&mut self, now: Instant) {
        if self.on && !self.import.is_empty() {
            let config =
                BrowserConfig { group: self.group, types: self.import.clone(), seed: self.seed.rotate_left(17) };
            self.browser = Some(Browser::new(now, config));
        }
    }

    /// A datagram on the mDNS socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        registry: &mut Registry,
        policy: &Policy,
    ) {
        // RFC 6762 §17: an mDNS message is at most 9000 bytes; a larger one is dropped unread.
        if !self.on || datagram.len() > crate::mdns::MAX_DATAGRAM || !self.on_link(from) {
            return;
        }
        self.responder.handle_datagram(now, from, datagram);
        if let Some(browser) = &mut self.browser {
            browser.handle_datagram(now, from, datagram);
        }
        self.from = Some(from.ip().to_canonical());
        self.take_events(now, registry, policy);
        self.from = None;
    }

    /// Whether `from` is on the link (see [`MdnsConfig::link`]).
    fn on_link(&self, from: SocketAddr) -> bool {
        match (self.link, from.ip()) {
            (None, _) => true,
            (Some(link), std::net::IpAddr::V4(ip)) => link.contains(&ip),
            (Some(_), std::net::IpAddr::V6(_)) => false,
        }
    }

    /// A change of the table: what it holds of its own is advertised by its owner (a renewal
    /// may bring new metadata: the TXT record follows).
    pub fn handle_change(
        &mut self,
        now: Instant,
        change: &Change,
        registry: &Registry,
        owns: impl Fn(SocketAddr) -> bool,
    ) {
        if !self.advertise || is_imported(change.id) {
            return;
        }
        let key = (Arc::clone(&change.service), change.endpoint);
        match change.kind {
            ChangeKind::Registered | ChangeKind::Refreshed => {
                self.native.entry(key.clone()).or_default().insert(change.id);
            }
            ChangeKind::Expired | ChangeKind::Removed(_) => {
                if let Some(ids) = self.native.get_mut(&key) {
                    ids.remove(&change.id);
                    for alias in &change.aliases {
                        ids.remove(alias);
                    }
                    if ids.is_empty() {
                        self.native.remove(&key);
                    }
                }
            }
        }
        self.sync(now, key, registry, &owns, true);
    }

    /// The live brokers changed: advertise what this broker owns now, and say goodbye for what
    /// it no longer does.
    pub fn handle_owners_changed(&mut self, now: Instant, registry: &Registry, owns: impl Fn(SocketAddr) -> bool) {
        let keys: HashSet<_> = self.native.keys().chain(&self.advertised).cloned().collect();
        for key in keys {
            self.sync(now, key, registry, &owns, false);
        }
    }

    /// Unicast replies the responder did not send for its caps (per source, in all).
    pub fn unicast_dropped(&self) -> u64 {
        self.responder.unicast_dropped()
    }

    /// How many announcements were not imported (policy or endpoint; see [`Mdns::import`]).
    #[cfg(test)]
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Sends what is due, and renews the imported leases.
    pub fn handle_timeout(&mut self, now: Instant, registry: &mut Registry, policy: &Policy) {
        if !self.on {
            return;
        }
        self.responder.handle_timeout(now);
        if let Some(browser) = &mut self.browser {
            browser.handle_timeout(now);
        }
        self.take_events(now, registry, policy);
        if self.renew_at.is_some_and(|at| at <= now) {
            let imported: Vec<(String, String)> = self.imported.keys().cloned().collect();
            for key in imported {
                self.hold(now, key, registry);
            }
            self.renew_at = (!self.imported.is_empty()).then(|| now + renew_interval(registry));
        }
    }

    /// The broker stops: what a peer of the link takes over (`successor`, told by this
    /// broker's `Bye`; it announces at once) goes without a goodbye, so browsers see no gap;
    /// goodbyes for the rest.
    pub fn handle_close(&mut self, now: Instant, successor: impl Fn(SocketAddr) -> bool) {
        for (service, endpoint) in std::mem::take(&mut self.advertised) {
            if successor(endpoint) {
                self.responder.withdraw(&service, endpoint);
            }
        }
        self.responder.remove_all(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let browser = self.browser.as_ref().and_then(Browser::poll_timeout);
        [self.responder.poll_timeout(), browser, self.renew_at].into_iter().flatten().min()
    }

    /// The next datagram to send, from [`Face::Mdns`].
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<Transmit<Face>> {
        if let Some(to) = self.responder.poll_transmit(out) {
            return Some(Transmit { face: Face::Mdns, to });
        }
        let to = self.browser.as_mut()?.poll_transmit(out)?;
        Some(Transmit { face: Face::Mdns, to })
    }

    /// Advertises or withdraws one instance, as the table and the owners say now; with
    /// `update`, an advertised one's TXT record follows its metadata.
    fn sync(
        &mut self,
        now: Instant,
        key: (Arc<str>, SocketAddr),
        registry: &Registry,
        owns: &impl Fn(SocketAddr) -> bool,
        update: bool,
    ) {
        let endpoint = key.1;
        let held = self.native.contains_key(&key) && !endpoint.ip().is_loopback();
        let want = held && owns(endpoint);
        let advertised = self.advertised.contains(&key);
        if want && (!advertised || update) {
            let advert = Advert {
                service: key.0.to_string(),
                endpoint,
                txt: advert_metadata(registry, &key.0, endpoint).to_txt(),
            };
            // Advertised already: only a changed TXT record is announced again. An instance
            // the table held already, whose owner changed, is taken over from the old owner
            // (announced at once, no probes: see `crate::mdns::responder::handover`).
            let added = if update { self.responder.add(now, advert) } else { self.responder.take_over(now, advert) };
            if added {
                self.advertised.insert(key);
            }
        } else if !want && advertised {
            if held {
                // Still in the table, owned by another broker of the link now: it answers
                // until the new owner's announcement is heard, and goes without a goodbye.
                self.responder.hand_over(now, &key.0, endpoint);
            } else {
                self.responder.remove(now, &key.0, endpoint);
            }
            self.advertised.remove(&key);
        } else if !held {
            // Gone from the table while being handed over: its goodbye goes now.
            self.responder.remove(now, &key.0, endpoint);
        }
    }

    fn take_events(&mut self, now: Instant, registry: &mut Registry, policy: &Policy) {
        while let Some(event) = self.responder.poll_event() {
            match event {
                ResponderEvent::Renamed { service, endpoint, label } => {
                    log::info!("mdns: the name of {service} {endpoint} is taken on the link: claiming \"{label}\"");
                }
                ResponderEvent::Announced { service, endpoint, label } => {
                    log::info!("mdns: advertising {service} {endpoint} as \"{label}\"");
                }
            }
        }
        while let Some(event) = self.browser.as_mut().and_then(Browser::poll_event) {
            match event {
                BrowserEvent::Found(instance) | BrowserEvent::Changed(instance) => {
                    self.import(now, &instance, registry, policy);
                }
                BrowserEvent::Gone { service_type, label } => self.forget(now, &(service_type, label), registry),
            }
        }
    }

    /// An instance the browser found or saw change: imported, unless makler advertises it, or
    /// the registration policy refuses its announcer (the source of the datagram that completed
    /// it) for its endpoint as it would refuse a `register`, or its endpoint is loopback,
    /// unspecified, multicast or link-local (meaningless as another host's service). Refused
    /// ones are counted and each logged once.
    fn import(&mut self, now: Instant, instance: &Instance, registry: &mut Registry, policy: &Policy) {
        let key = (instance.service_type.clone(), instance.label.clone());
        let service = service_of_type(&instance.service_type);
        let endpoint = instance.addresses.first().map(|&ip| SocketAddr::new(ip, instance.port));
        let (Some(service), Some(endpoint), false) = (service, endpoint, is_makler_host(&instance.host)) else {
            self.forget(now, &key, registry);
            return;
        };
        let announcer = self.from.or_else(|| self.imported.get(&key).map(|old| old.announcer));
        let allowed = match announcer {
            None => Err("its announcer is not known".to_owned()),
            Some(_) if !is_usable(endpoint.ip()) => {
                Err("a loopback, unspecified, multicast or link-local address".into())
            }
            Some(ip) => policy.check(ip, endpoint.ip().to_canonical()).map_err(|r| r.to_string()),
        };
        if let Err(why) = allowed {
            self.refused += 1;
            if self.refused_logged.len() < REFUSED_LOGGED && self.refused_logged.insert((service.clone(), endpoint)) {
                log::warn!("mdns: not importing {service} {endpoint} (\"{}\"): {why}", key.1);
            }
            self.forget(now, &key, registry);
            return;
        }
        let announcer = announcer.unwrap_or(endpoint.ip());
        let meta = Metadata::from_txt(&instance.txt);
        if let Some(old) = self.imported.get_mut(&key) {
            if old.service == service && old.endpoint == endpoint {
                if old.meta != meta {
                    log::info!("mdns: {service} {endpoint} (\"{}\") now has {meta}", key.1);
                    old.meta = meta;
                    old.written = false;
                }
                return;
            }
            self.forget(now, &key, registry);
        }
        let id = pick_id(registry, &service, endpoint);
        let pairs = if meta.is_empty() { String::new() } else { format!(" {meta}") };
        log::info!("mdns: imported {service} {endpoint} (\"{}\"){pairs}", key.1);
        self.imported.insert(key.clone(), Imported { service, endpoint, id, meta, announcer, written: false });
        self.hold(now, key, registry);
        self.renew_at.get_or_insert_with(|| now + renew_interval(registry));
    }

    /// Registers or renews an imported instance's lease.
    fn hold(&mut self, now: Instant, key: (String, String), registry: &mut Registry) {
        let Some(imported) = self.imported.get_mut(&key) else { return };
        if registry.is_tombstoned(imported.id) {
            // Removed on purpose meanwhile (by a peer's import seeing a goodbye this one missed,
            // say): the link still has it, so it comes back under the next generation.
            imported.id = pick_id(registry, &imported.service, imported.endpoint);
            imported.written = false;
        }
        let source = Source::Announcer { ip: imported.endpoint.ip(), origin: IMPORT_ORIGIN };
        let meta = (!imported.written).then(|| imported.meta.clone());
        let mut applied =
            registry.register_with_id(now, imported.id, &imported.service, imported.endpoint, source, meta);
        if imported.written && applied == Applied::Inserted {
            // The lease had gone (expired, say): it takes the pairs again.
            let meta = Some(imported.meta.clone());
            applied = registry.register_with_id(now, imported.id, &imported.service, imported.endpoint, source, meta);
        }
        match applied {
            Applied::Inserted | Applied::Refreshed | Applied::Merged => imported.written = true,
            other => {
                log::warn!("mdns: cannot import {} {}: {other:?}", imported.service, imported.endpoint);
                self.imported.remove(&key);
            }
        }
    }

    /// An imported instance that left the link: its lease goes.
    fn forget(&mut self, now: Instant, key: &(String, String), registry: &mut Registry) {
        let Some(imported) = self.imported.remove(key) else { return };
        let source = Source::Announcer { ip: imported.endpoint.ip(), origin: IMPORT_ORIGIN };
        if registry.remove_owned(now, &imported.service, imported.endpoint, source, RemoveReason::Goodbye).is_ok() {
            log::info!("mdns: {} {} left the link", imported.service, imported.endpoint);
        }
        if self.imported.is_empty() {
            self.renew_at = None;
        }
    }
}

/// Whether `ip` may be an imported instance's address: not loopback, unspecified, multicast
/// or link-local (169.254/16, fe80::/10), which mean nothing as another host's service.
fn is_usable(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local)
}

/// An advertised instance's TXT record: the table's metadata of the instance (see
/// [`Registry::metadata`]); one empty string on the wire when it has none.
fn advert_metadata(registry: &Registry, service: &str, endpoint: SocketAddr) -> Metadata {
    registry.metadata(service, endpoint).cloned().unwrap_or_default()
}

/// How often imported leases are renewed: three times per TTL of the table, so that one late
/// turn of the loop does not let them lapse.
fn renew_interval(registry: &Registry) -> Duration {
    (registry.config().ttl / 3).max(Duration::from_millis(100))
}

/// The makler service a type is imported as: `_printer._tcp` → `printer`. `None` for a type
/// that is not `_<name>._tcp` or `_<name>._udp`.
pub fn service_of_type(service_type: &str) -> Option<String> {
    let name = service_type.trim_end_matches('.');
    let name = name.strip_suffix("._tcp").or_else(|| name.strip_suffix("._udp"))?;
    let name = name.strip_prefix('_')?;
    (!name.is_empty() && !name.contains('.')).then(|| name.to_ascii_lowercase())
}

/// Whether a host name is one a makler responder gives the instances it advertises (under
/// `makler.local.`): such instances are never imported.
pub fn is_makler_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host.ends_with(".makler.local") || host == "makler.local"
}

/// The id of an imported instance of `service` at `endpoint`, in its `generation`: the same on
/// every broker. A UUID of version 8 (custom) whose first two bytes are `md` and whose others
/// are a BLAKE3 hash of the three.
pub fn import_id(service: &str, endpoint: SocketAddr, generation: u8) -> Uuid {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"makler mdns import\0");
    hasher.update(service.as_bytes());
    hasher.update(b"\0");
    hasher.update(endpoint.to_string().as_bytes());
    hasher.update(&[0, generation]);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    bytes[..2].copy_from_slice(&IMPORT_MARK);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Whether a lease's id is an imported instance's ([`import_id`]). Registered leases have
/// random (version 4) ids.
pub fn is_imported(id: Uuid) -> bool {
    id.get_version_num() == 8 && id.as_bytes()[..2] == IMPORT_MARK
}

/// The id to import an instance under: the first generation held already or not tombstoned.
fn pick_id(registry: &Registry, service: &str, endpoint: SocketAddr) -> Uuid {
    let ids = (0..GENERATIONS).map(|g| import_id(service, endpoint, g));
    ids.clone()
        .find(|&id| registry.check_of(id).is_some() || !registry.is_tombstoned(id))
        .unwrap_or_else(|| import_id(service, endpoint, 0))
}
