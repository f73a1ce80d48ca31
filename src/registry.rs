//! The registry: which instances of which services are live, as a pure state machine.
//!
//! It owns no socket and reads no clock: every call takes `now`, and [`Registry::poll_timeout`]
//! tells the caller when the next lease expires. Ids come from a generator handed in at
//! construction. So expiry, refresh and rotation are tested to the nanosecond without sleeping.
//!
//! # Leases and instances
//!
//! A **lease** is one source's registration of an endpoint for a service: it has an id (the
//! UUID the source got back), a [`Source`], and a deadline. An **instance** is a (service,
//! endpoint) pair with at least one live lease; queries list instances, each once, however
//! many leases hold it. A register from the same source refreshes that source's lease (and
//! returns its id again, so a retransmission creates nothing new); a register from another
//! source gets a lease of its own. So the id is a capability: only the source that registered
//! learns it, and nobody else can deregister it. A lease is live while its last renewal is
//! younger than the TTL: renewed at `t`, it is live at every `now < t + ttl`.
//!
//! # What replication builds on
//!
//! - **The change log** ([`Registry::poll_change`]) is always on and bounded: every change
//!   carries a sequence number, so a consumer that finds a gap knows it missed some (the log
//!   drops its oldest changes only when nobody drained it for
//!   [`Config::change_log_capacity`] changes).
//! - **Tombstones**: the id of a lease removed on purpose (deregistered, said goodbye, found
//!   unreachable) is remembered for [`Config::tombstone_ttl`] or the TTL, whichever is longer
//!   (at most as many ids as the table holds leases), so that a late or reordered message from
//!   a peer, or a peer that still held the lease during a partition, cannot bring it back. Expiry leaves no tombstone: a peer that still
//!   has time left on the lease heard a renewal this broker did not.
//! - **Remote leases** ([`Registry::apply_remote`]) arrive with their id and *remaining* time,
//!   so hosts need not agree on the clock. The merge rule is in [`remote`].
//! - **Pages** ([`Registry::page`]) walk the table in a stable order for a peer catching up.
//! - **A digest** ([`Registry::digest`], see [`digest`]): per-bucket XORs of the leases'
//!   identities, kept up to date as they come and go, for comparing tables cheaply.
//! - **Per-source and per-network counts** ([`Registry::source_count`],
//!   [`Registry::network_count`]) for quotas.
//!
//! Costs: register and deregister are a hash lookup or two plus a push on the expiry heap,
//! O(log n); a heartbeat is a hash lookup (its lease's expiry entry moves once per TTL, when
//! it reaches the heap's front, not at every renewal); a query is a hash lookup plus the
//! instances it returns, and a text or binary query two copies from the service's text or
//! binary block (`registry::block`). Expiry pops the front of the heap, so it never scans the
//! table.
//!
//! # Memory
//!
//! What the table keeps per instance (one lease each), in bytes, and where:
//!
//! | what | bytes | where |
//! |---|---|---|
//! | the lease (id 16, deadline and first-held time as 8-byte `Ticks`, service, position, next lease, expiry generation 4 each, source 40, shared check 8) | 96 | `leases`, a slab |
//! | its member: the endpoint, its first lease | 36 | the service's array (`registry::members`) |
//! | its text form and where it starts | ~19 | the service's text block (`registry::members`) |
//! | its postcard form and where it starts, once its service was queried in binary | 0 or ~11 | the service's binary block (`registry::block`) |
//! | lookups by id and by instance: a lease number and a control byte per slot | 10–20 | `registry::index` |
//! | its expiry heap entry (deadline, lease, generation) | 16 | `registry::expiry` |
//! | its number in its digest bucket | 4 | [`digest`] |
//!
//! with each array's room to grow on top (up to 2× for the last doubling). Aliases (rare) are
//! in a side map; so is metadata ([`crate::meta`]): a lease without any costs nothing more, one
//! with some an entry in the side map (its lease number and the 16-byte box, about 24 bytes
//! with the map's control byte and spare room) and the block on the heap (its TXT bytes, at
//! most 1,024). Services, per-source and per-network counts are per service or source.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use makler::protocol::Source;
//! use makler::registry::{Config, Registry};
//!
//! let mut ids = 0u128;
//! let mut registry = Registry::new(Config::default(), move || { ids += 1; uuid::Uuid::from_u128(ids) });
//! let t0 = Instant::now();
//! let ttl = Config::default().ttl;
//! let server = Source::Unicast("127.0.0.1:50000".parse().unwrap());
//!
//! let id = registry.register(t0, "echo", "127.0.0.1:4000".parse().unwrap(), server).unwrap().id;
//! assert_eq!(registry.query(t0, "echo").unwrap().collect::<Vec<_>>(), ["127.0.0.1:4000".parse().unwrap()]);
//! assert!(registry.heartbeat(t0 + ttl / 2, id).is_ok());
//! assert!(registry.query(t0 + ttl / 2 + ttl, "echo").is_none());
//! ```

mod block;
mod changes;
pub mod digest;
mod expiry;
mod index;
mod limits;
mod listing;
mod members;
mod meta;
mod names;
pub mod remote;
mod rotation;
mod table;
mod tombstones;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;
use uuid::Uuid;

pub use changes::{Change, ChangeKind};
pub use limits::{
    DEFAULT_MAX_PER_NETWORK, DEFAULT_MAX_PER_SOURCE, Limits, NEARLY_FULL_PERCENT, NEARLY_FULL_SHARE, Refusal,
    canonical, check_endpoint, network,
};
pub use listing::InstanceView;
pub use remote::{Applied, Cursor, LeaseView};

pub use crate::meta::Metadata;
pub use crate::protocol::check::SharedCheck;
use crate::protocol::{Check, Rejection};
pub use crate::protocol::{RemoveReason, Source};
use block::BinaryBlock;
use members::{Member, TextBlock};

/// The registry's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a lease lives after its last register or heartbeat.
    pub ttl: Duration,
    /// The limits on what may be registered.
    pub limits: Limits,
    /// How long the id of a lease removed on purpose is remembered (see the module docs), at
    /// least: a tombstone lasts the longer of this and [`ttl`](Self::ttl), so that it outlives
    /// any copy of the lease it buries that a peer cut off by a partition may still hold.
    pub tombstone_ttl: Duration,
    /// How many changes the change log holds before it drops the oldest.
    pub change_log_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: Duration::from_secs(5),
            limits: Limits::default(),
            tombstone_ttl: Duration::from_secs(30),
            change_log_capacity: 1 << 16,
        }
    }
}

/// The result of a successful [`Registry::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The lease's id; the same for every register of the same (service, endpoint) from the
    /// same source.
    pub id: Uuid,
    /// Whether this call created the lease (false: it refreshed the source's existing one).
    pub created: bool,
}

/// No live lease has that id: it never existed, expired, or was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no live registration with that id")]
pub struct NotFound;

/// Where a lease or service is kept; `u32` keeps the indexes small.
type Index = u32;

/// The end of a list of leases.
const NONE: Index = Index::MAX;

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A point in time as nanoseconds from the registry's epoch (the first `now` it was given):
/// 8 bytes where an `Instant` takes 16, exact to the nanosecond for ±292 years.
type Ticks = i64;

/// A lease: 96 bytes. Its other ids, when two brokers' leases were
/// merged (see [`remote`]), are rare and live in a side map ([`index`]).
#[derive(Debug)]
struct Lease {
    id: Uuid,
    deadline: Ticks,
    /// When this registry first held it (a local register, or the peer's lease arriving).
    since: Ticks,
    service: Index,
    /// Position of the instance in the service's `members`.
    position: Index,
    /// The next lease on the same instance, or [`NONE`].
    next: Index,
    /// Tells its entry in the expiry heap from an earlier lease's in the same slot ([`expiry`]).
    generation: u32,
    source: Source,
    /// The health check its holder declared (8 bytes: shared, see [`SharedCheck`]).
    check: SharedCheck,
}

/// The shared [`SharedCheck`]s of the checks without a path: every lease that declares no
/// check or `tcp` points at one of these, so only an `http` check costs an allocation of its
/// own.
#[derive(Debug)]
struct CommonChecks {
    none: SharedCheck,
    tcp: SharedCheck,
}

impl CommonChecks {
    fn new() -> Self {
        CommonChecks { none: Arc::new(Check::None), tcp: Arc::new(Check::Tcp) }
    }

    /// `check` as a lease keeps it; `current` (the lease's check so far) is kept when it says
    /// the same, so a refresh allocates nothing.
    fn share(&self, check: Check<&str>, current: Option<&SharedCheck>) -> SharedCheck {
        match check {
            Check::None => Arc::clone(&self.none),
            Check::Tcp => Arc::clone(&self.tcp),
            Check::Http(path) => match current {
                Some(current) if current.as_deref() == check => Arc::clone(current),
                _ => Arc::new(Check::Http(path.into())),
            },
        }
    }
}

#[derive(Debug)]
struct Service {
    name: Arc<str>,
    members: Vec<Member>,
    /// The members' text forms, for text answers.
    text: TextBlock,
    /// The members' postcard encodings, for binary answers: built at the first binary query,
    /// then kept up to date with `text` (see `registry::block`).
    binary: Option<Box<BinaryBlock>>,
    /// Where the next query starts.
    cursor: usize,
}

/// The table of live leases. See the [module documentation](self).
pub struct Registry {
    config: Config,
    new_id: Box<dyn FnMut() -> Uuid + Send>,
    leases: Slab<Lease>,
    services: Slab<Service>,
    /// Slots the two slabs have ever used (they never shrink): where a walk by slot
    /// ([`Registry::page`], [`Registry::services_page`]) ends.
    lease_slots: usize,
    service_slots: usize,
    by_name: names::Names,
    /// Leases by id (aliases included) and instances by (service, endpoint).
    index: index::Indexes,
    /// What [`Ticks`] count from: the first `now` the registry was given.
    epoch: Option<Instant>,
    /// Every live lease by deadline: the front expires first ([`expiry`]).
    expiry: expiry::Expiry,
    tombstones: tombstones::Tombstones,
    /// The table's summary for anti-entropy.
    digest: digest::Digest,
    changes: changes::ChangeLog,
    per_source: HashMap<IpAddr, u32>,
    /// Leases per source network ([`network`]), for the per-network quota.
    per_network: HashMap<IpAddr, u32>,
    lease_count: usize,
    instance_count: usize,
    expired_total: u64,
    common_checks: CommonChecks,
    /// Metadata for the lease [`Registry::insert`] adds next (set by a register).
    pending_meta: Option<Metadata>,
    /// Set while a refresh whose metadata changed is recorded ([`Change::meta_changed`]).
    meta_changed: bool,
    /// The metadata of the leases that carry some, by lease (a side map: most carry none).
    meta: HashMap<Index, Metadata>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .field("instances", &self.len())
            .field("leases", &self.lease_count)
            .field("services", &self.by_name.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Creates an empty registry. `new_id` is called once for every new lease; the broker
    /// passes [`Uuid::new_v4`], tests a counter.
    pub fn new(config: Config, new_id: impl FnMut() -> Uuid + Send + 'static) -> Self {
        Registry {
            tombstones: tombstones::Tombstones::new(config.tombstone_ttl.max(config.ttl), config.limits.max_instances),
            digest: digest::Digest::default(),
            changes: changes::ChangeLog::new(config.change_log_capacity),
            config,
            new_id: Box::new(new_id),
            leases: Slab::new(),
            services: Slab::new(),
            lease_slots: 0,
            service_slots: 0,
            by_name: names::Names::default(),
            index: index::Indexes::default(),
            epoch: None,
            expiry: expiry::Expiry::default(),
            per_source: HashMap::new(),
            per_network: HashMap::new(),
            lease_count: 0,
            instance_count: 0,
            expired_total: 0,
            common_checks: CommonChecks::new(),
            meta: HashMap::new(),
            pending_meta: None,
            meta_changed: false,
        }
    }

    /// The registry's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// New quotas per source and per network (a reload): they apply to registrations from now
    /// on; the leases held are kept, even beyond a lowered quota, until they lapse.
    pub fn set_quotas(&mut self, max_per_source: usize, max_per_network: usize) {
        self.config.limits.max_per_source = max_per_source;
        self.config.limits.max_per_network = max_per_network;
    }

    /// How many live instances (distinct endpoints per service) the table holds, as of the
    /// last call that took `now`.
    pub fn len(&self) -> usize {
        self.instance_count
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.instance_count == 0
    }

    /// How many live leases the table holds (at least one per instance).
    pub fn lease_count(&self) -> usize {
        self.lease_count
    }

    /// How many services have at least one live instance.
    pub fn service_count(&self) -> usize {
        self.by_name.len()
    }

    /// How many leases have expired since the registry was made.
    pub fn expired_total(&self) -> u64 {
        self.expired_total
    }

    /// How many live leases were registered from `ip` (by any of its ports or announcers).
    pub fn source_count(&self, ip: IpAddr) -> usize {
        self.per_source.get(&ip).map_or(0, |&n| n as usize)
    }

    /// How many live leases were registered from `ip`'s network ([`network`]).
    pub fn network_count(&self, ip: IpAddr) -> usize {
        self.per_network.get(&network(ip)).map_or(0, |&n| n as usize)
    }

    /// Registers `endpoint` for `service` on behalf of `source`, or refreshes the lease that
    /// `source` holds on it already (then the id is the same as before). Declares no check:
    /// [`Registry::register_checked`] with [`Check::None`].
    pub fn register(
        &mut self,
        now: Instant,
        service: &str,
        endpoint: SocketAddr,
        source: Source,
    ) -> Result<Registration, Rejection> {
        self.register_checked(now, service, endpoint, source, Check::None)
    }

    /// [`Registry::register`] with the health check the source declares. A refresh with
    /// another check than before changes the lease's check. Keeps the lease's metadata (see
    /// [`Registry::register_meta`]).
    pub fn register_checked(
        &mut self,
        now: Instant,
        service: &str,
        endpoint: SocketAddr,
        source: Source,
        check: Check<&str>,
    ) -> Result<Registration, Rejection> {
        self.register_with(now, service, endpoint, source, check, None)
    }

    pub(super) fn register_with(
        &mut self,
        now: Instant,
        service: &str,
        endpoint: SocketAddr,
        source: Source,
        check: Check<&str>,
        meta: Option<Metadata>,
    ) -> Result<Registration, Rejection> {
        let endpoint = canonical(endpoint);
        self.config.limits.check_name(service)?;
        check_endpoint(endpoint)?;
        check.validate()?;
        self.handle_timeout(now);
        if let Some(lease) = self.find_lease(service, endpoint, source) {
            self.set_check(lease, check);
            let changed = meta.is_some_and(|meta| self.set_meta(lease, meta));
            self.meta_changed = changed;
            let id = self.renew(lease, now + self.config.ttl, false);
            self.meta_changed = false;
            return Ok(Registration { id, created: false });
        }
        self.check_room()?;
        let ip = source.ip();
        self.config.limits.admit(self.lease_count, self.source_count(ip), self.network_count(ip))?;
        let id = loop {
            let id = (self.new_id)();
            if self.find_id(id).is_none() && !self.tombstones.contains(id) {
                break id;
            }
        };
        let check = self.common_checks.share(check, None);
        self.insert_with_meta(id, service, endpoint, source, now + self.config.ttl, check, meta);
        Ok(Registration { id, created: true })
    }

    /// Sets the check of the lease at `index` (a refresh that declares another one).
    fn set_check(&mut self, index: Index, check: Check<&str>) {
        if self.lease(index).check.as_deref() != check {
            let shared = self.common_checks.share(check, None);
            self.lease_mut(index).check = shared;
        }
    }

    /// The check declared for the lease with this id (or alias).
    pub fn check_of(&self, id: Uuid) -> Option<&SharedCheck> {
        self.find_id(id).map(|index| &self.lease(index).check)
    }

    /// Renews the lease with this id.
    pub fn heartbeat(&mut self, now: Instant, id: Uuid) -> Result<(), NotFound> {
        self.handle_timeout(now);
        let lease = self.find_id(id).ok_or(NotFound)?;
        self.renew(lease, now + self.config.ttl, false);
        Ok(())
    }

    /// Removes the lease with this id at once (its instance goes when no other lease holds it).
    pub fn deregister(&mut self, now: Instant, id: Uuid) -> Result<(), NotFound> {
        self.handle_timeout(now);
        let lease = self.find_id(id).ok_or(NotFound)?;
        self.remove(now, lease, ChangeKind::Removed(RemoveReason::Deregistered), false);
        Ok(())
    }

    /// Removes the lease that `source` holds on `endpoint` of `service` (a goodbye removes what
    /// the same announcer announced, nothing else). Returns its id.
    pub fn remove_owned(
        &mut self,
        now: Instant,
        service: &str,
        endpoint: SocketAddr,
        source: Source,
        reason: RemoveReason,
    ) -> Result<Uuid, NotFound> {
        let endpoint = canonical(endpoint);
        self.handle_timeout(now);
        let lease = self.find_lease(service, endpoint, source).ok_or(NotFound)?;
        let id = self.lease(lease).id;
        self.remove(now, lease, ChangeKind::Removed(reason), false);
        Ok(id)
    }

    /// Removes an instance with every lease on it (it was found unreachable, say). Returns how
    /// many leases went.
    pub fn remove_instance(
        &mut self,
        now: Instant,
        service: &str,
        endpoint: SocketAddr,
        reason: RemoveReason,
    ) -> usize {
        self.handle_timeout(now);
        let mut removed = 0;
        while let Some(lease) = self.head_lease(service, endpoint) {
            self.remove(now, lease, ChangeKind::Removed(reason), false);
            removed += 1;
        }
        removed
    }

    /// Whether `endpoint` is a live instance of `service`.
    pub fn contains(&mut self, now: Instant, service: &str, endpoint: SocketAddr) -> bool {
        let endpoint = canonical(endpoint);
        self.handle_timeout(now);
        self.head_lease(service, endpoint).is_some()
    }

    /// Whether `service` has a live instance.
    pub fn has_service(&mut self, now: Instant, service: &str) -> bool {
        self.handle_timeout(now);
        self.by_name.get(&self.services, service).is_some_and(|index| self.services.contains(index as usize))
    }

    /// The id of the lease `source` holds on `endpoint` of `service`.
    pub fn lease_id(&self, service: &str, endpoint: SocketAddr, source: Source) -> Option<Uuid> {
        self.find_lease(service, canonical(endpoint), source).map(|lease| self.lease(lease).id)
    }

    /// Removes every lease whose TTL has run out by `now`, and forgets tombstones that are old
    /// enough. Every other call that takes `now` does this first, so calling it is needed only
    /// to see expiries (changes) when nothing else happens.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.expiry.quiet_at(now) {
            self.epoch.get_or_insert(now);
            let now_ticks = self.ticks(now);
            while let Some((deadline, lease)) = self.first_expiry() {
                if deadline > now_ticks {
                    break;
                }
                self.remove(now, lease, ChangeKind::Expired, false);
                self.expired_total += 1;
            }
            // Deadlines only move later (a renewal never shortens one), so the front's is the
            // earliest until the next entry is pushed.
            let next = self.next_expiry();
            self.expiry.set_quiet_until(next);
        }
        self.tombstones.handle_timeout(now);
    }

    /// When the next lease expires or the next tombstone is forgotten, if ever: the caller
    /// should call [`handle_timeout`](Self::handle_timeout) then (or act on any other input
    /// before).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_expiry(), self.tombstones.next_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the next lease expires, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.first_expiry().map(|(at, _)| self.instant(at))
    }

    /// The oldest change not taken yet. The log is always on; see [`Change::seq`] for gaps.
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop()
    }

    /// Whether a change waits to be taken: the node's end of a turn has nothing to hand on
    /// when none does (checked after every query).
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// How many changes the log dropped because nobody took them in time.
    pub fn changes_dropped(&self) -> u64 {
        self.changes.dropped()
    }

    /// Whether `id` was removed on purpose recently (see the module docs).
    pub fn is_tombstoned(&self, id: Uuid) -> bool {
        self.tombstones.contains(id)
    }
}

/// Converts a table position to an [`Index`]. Tables are bounded by `max_instances`, which the
/// configuration keeps below `u32::MAX`.
fn index_of(position: usize) -> Index {
    Index::try_from(position).unwrap_or_else(|_| unreachable!("tables hold fewer than 2^32 entries"))
}

#[cfg(test)]
mod check_tests;
#[cfg(test)]
mod meta_tests;
#[cfg(test)]
mod quota_tests;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod tests;
