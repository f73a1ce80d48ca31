//! Where the watches live: a few large blocks instead of several allocations per watch, so that a
//! watch costs well under 200 bytes and the memory goes back to the system when watches expire.
//!
//! # What each byte is (a watch on a service of its own, 100,000 of them: about 160 B each)
//!
//! - the watch, 56 B in a [`Chunks`] block: its address packed ([`Peer`], 24 B: the 16 bytes of
//!   the IP, the port, the family, the IPv6 scope), its service's number (4), the next and the
//!   previous watch of that service (4 + 4: the service's watchers are a list through the watches),
//!   the stamp of its last renewal (4), its form (8) and when it expires (8: nanoseconds since the
//!   first watch);
//! - its entry in the index by service and address, 16 B a bucket (a 64-bit keyed hash of the
//!   name and the address, and the watch's number; two keys with one hash, which takes 2^32
//!   watches to expect once, go to a second, exact map), at most 7/8 full: about 21 B;
//! - its expiry in a queue in deadline order (every watch lives the broker's TTL, so the
//!   deadlines arrive in order): the watch's number and the stamp, 8 B, once per renewal
//!   within a TTL (a stale entry is skipped when it comes up): 8–32 B;
//! - when the watch is the only one of its service: the service, 48 B in a [`Chunks`] block (the
//!   name inline up to 22 bytes, the sequence number, a 64-bit hash of the live set the watchers
//!   were last told instead of the set, the first watcher, whether it changed this turn), and its
//!   entry in the index by name, 16 B a bucket, about 21 B.
//!
//! Blocks hold [`CHUNK`] entries (about 100–115 kB), the queue's 64 kB and the indexes are in
//! [`SHARDS`](blocks::SHARDS) tables: every block stays under glibc's 128 kB threshold for `mmap`. A block over it
//! would be returned at once when freed, but its free would raise the threshold (and the heap
//! glibc keeps untrimmed) to its size; under it, the blocks freed together at the top of the heap
//! are trimmed down to glibc's 128 kB + 128 kB. No table is smaller than glibc's per-thread
//! cache takes (1,032 bytes; see `blocks::SMALLEST_TABLE_BYTES`): a small table outgrown while
//! the watches lived stayed in that cache high in the heap, never merged, and kept 0.4–0.8 MB
//! from being trimmed after a mass expiry. When the last watch goes, everything is freed
//! without an allocation meanwhile ([`Store::clear`]); when fewer than a quarter of the slots
//! are in use, and still are once every deadline held then has passed, everything is rebuilt at
//! its size ([`Store::rebuild`]): the hash maps never shrink by themselves.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use crate::protocol::Form;
pub(super) use blocks::CHUNK;
use blocks::{ByHash, Chunks, Queue};

mod blocks;

/// No watch, no service.
const NONE: u32 = u32::MAX;

/// A watcher's address, packed: 24 bytes instead of `SocketAddr`'s 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Peer {
    ip: [u8; 16],
    port: u16,
    v6: bool,
    scope: u32,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        match addr {
            SocketAddr::V4(a) => Peer { ip: a.ip().to_ipv6_mapped().octets(), port: a.port(), v6: false, scope: 0 },
            SocketAddr::V6(a) => Peer { ip: a.ip().octets(), port: a.port(), v6: true, scope: a.scope_id() },
        }
    }

    pub fn addr(self) -> SocketAddr {
        let ip = Ipv6Addr::from(self.ip);
        match (self.v6, ip.to_ipv4_mapped()) {
            (false, Some(v4)) => SocketAddr::new(IpAddr::V4(v4), self.port),
            _ => SocketAddr::V6(SocketAddrV6::new(ip, self.port, 0, self.scope)),
        }
    }
}

/// A service's name: inline when short (nearly always), else on the heap.
#[derive(Debug, Clone)]
enum Name {
    Short(u8, [u8; 22]),
    Long(Box<str>),
}

impl Name {
    fn new(name: &str) -> Name {
        let mut bytes = [0; 22];
        match bytes.get_mut(..name.len()) {
            Some(room) => {
                room.copy_from_slice(name.as_bytes());
                Name::Short(name.len() as u8, bytes)
            }
            None => Name::Long(name.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied whole from a `&str` above, so never cut inside a character.
            Name::Short(len, bytes) => std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default(),
            Name::Long(name) => name,
        }
    }
}

/// One watch (see the [module documentation](self)).
#[derive(Debug, Clone)]
struct Slot {
    peer: Peer,
    /// Its service's number; [`NONE`] when the slot is free.
    service: u32,
    prev: u32,
    next: u32,
    stamp: u32,
    form: Form,
    /// Nanoseconds from the store's epoch.
    expires: i64,
}

/// A watched service.
#[derive(Debug, Clone)]
pub(super) struct Service {
    name: Name,
    /// The sequence number of its changes.
    pub seq: u64,
    /// A hash of the live set its watchers were last told.
    pub last: u64,
    /// Its first watcher; [`NONE`] when the slot is free.
    head: u32,
    /// Whether it is in the list of services to look at this turn.
    pub dirty: bool,
}

impl Service {
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// Every watch and watched service. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Store {
    hasher: RandomState,
    epoch: Option<Instant>,
    watches: Chunks<Slot>,
    /// The first free watch slot; the others follow through their `next`.
    free_watches: u32,
    services: Chunks<Service>,
    /// The first free service slot; the others follow through their `last`.
    free_services: u32,
    by_name: ByHash,
    name_clash: HashMap<Box<str>, u32>,
    by_key: ByHash,
    key_clash: HashMap<(u32, Peer), u32>,
    /// (watch, stamp) in deadline order.
    expiries: Queue<(u32, u32)>,
    stamp: u32,
    live: usize,
    services_live: usize,
    /// When the storage, found sparse, is rebuilt if it still is: the last deadline it held
    /// then, so that a mass expiry ends in [`clear`](Self::clear) rather than rebuilding its
    /// way down (each rebuild's blocks would land above the freed ones and keep the heap).
    rebuild_at: Option<i64>,
}

impl Store {
    pub fn new() -> Store {
        Store {
            hasher: RandomState::new(),
            epoch: None,
            watches: Chunks::new(),
            free_watches: NONE,
            services: Chunks::new(),
            free_services: NONE,
            by_name: ByHash::default(),
            name_clash: HashMap::new(),
            by_key: ByHash::default(),
            key_clash: HashMap::new(),
            expiries: Queue::default(),
            stamp: 0,
            live: 0,
            services_live: 0,
            rebuild_at: None,
        }
    }

    /// Watches.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Slots for watches and for services, used or free (for the tests of shrinking).
    #[cfg(test)]
    pub fn capacity(&self) -> (usize, usize) {
        (self.watches.capacity(), self.services.capacity())
    }

    /// The size in bytes of every table of the blocks (for the test that none is small enough
    /// for glibc's per-thread cache).
    #[cfg(test)]
    pub fn table_bytes(&self) -> Vec<usize> {
        use blocks::Tables;
        let tables: [&dyn Tables; 5] = [&self.watches, &self.services, &self.by_name, &self.by_key, &self.expiries];
        tables.iter().flat_map(|t| t.table_bytes()).collect()
    }

    /// `at` in nanoseconds from the epoch (the first instant seen), before it negative.
    fn nanos(&mut self, at: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(at);
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        if at >= epoch { nanos(at - epoch) } else { -nanos(epoch - at) }
    }

    /// The instant `nanos` from the epoch.
    fn instant(&self, nanos: i64) -> Option<Instant> {
        let epoch = self.epoch?;
        let d = Duration::from_nanos(nanos.unsigned_abs());
        if nanos >= 0 { epoch.checked_add(d) } else { epoch.checked_sub(d) }
    }

    fn key_hash(&self, service: &str, peer: Peer) -> u64 {
        self.hasher.hash_one((service, peer))
    }

    /// A keyed hash of a live set, to tell whether it changed.
    pub fn set_hash(&self, set: &[SocketAddr]) -> u64 {
        self.hasher.hash_one(set)
    }

    /// The number of the service named `name`.
    pub fn service_id(&self, name: &str) -> Option<u32> {
        let id = *self.by_name.get(&self.hasher.hash_one(name))?;
        if self.services.get(id).name() == name { Some(id) } else { self.name_clash.get(name).copied() }
    }

    pub fn service_mut(&mut self, id: u32) -> &mut Service {
        self.services.get_mut(id)
    }

    /// The watch of `addr` on `service`.
    pub fn find(&self, service: &str, addr: SocketAddr) -> Option<u32> {
        let peer = Peer::new(addr);
        let id = *self.by_key.get(&self.key_hash(service, peer))?;
        let slot = self.watches.get(id);
        if slot.peer == peer && self.services.get(slot.service).name() == service {
            Some(id)
        } else {
            self.key_clash.get(&(self.service_id(service)?, peer)).copied()
        }
    }

    /// `watch`'s service's sequence number.
    pub fn seq_of(&self, watch: u32) -> u64 {
        self.services.get(self.watches.get(watch).service).seq
    }

    /// Renews `watch` until `expires`, in `form`.
    pub fn renew(&mut self, watch: u32, form: Form, expires: Instant) {
        let expires = self.nanos(expires);
        self.stamp = self.stamp.wrapping_add(1);
        let stamp = self.stamp;
        let slot = self.watches.get_mut(watch);
        slot.form = form;
        slot.expires = expires;
        slot.stamp = stamp;
        self.expiries.push_back((watch, stamp));
        self.settle();
    }

    /// A new watch of `addr` on `service` (which is not watched by `addr`) until `expires`;
    /// a new service's last told set hashes to `last`. Returns its service's sequence number.
    pub fn insert(&mut self, service: &str, addr: SocketAddr, form: Form, expires: Instant, last: u64) -> u64 {
        let expires = self.nanos(expires);
        let sid = match self.service_id(service) {
            Some(sid) => sid,
            None => self.add_service(service, last),
        };
        self.stamp = self.stamp.wrapping_add(1);
        let peer = Peer::new(addr);
        let head = self.services.get(sid).head;
        let slot = Slot { peer, service: sid, prev: NONE, next: head, stamp: self.stamp, form, expires };
        let id = match self.free_watches {
            NONE => self.watches.push(slot),
            id => {
                self.free_watches = self.watches.get(id).next;
                *self.watches.get_mut(id) = slot;
                id
            }
        };
        if head != NONE {
            self.watches.get_mut(head).prev = id;
        }
        self.services.get_mut(sid).head = id;
        let hash = self.key_hash(service, peer);
        if !self.by_key.insert_new(hash, id) {
            self.key_clash.insert((sid, peer), id);
        }
        self.expiries.push_back((id, self.stamp));
        self.live += 1;
        self.services.get(sid).seq
    }

    fn add_service(&mut self, name: &str, last: u64) -> u32 {
        let service = Service { name: Name::new(name), seq: 0, last, head: NONE, dirty: false };
        let id = match self.free_services {
            NONE => self.services.push(service),
            id => {
                self.free_services = self.services.get(id).last as u32;
                *self.services.get_mut(id) = service;
                id
            }
        };
        let hash = self.hasher.hash_one(name);
        if !self.by_name.insert_new(hash, id) {
            self.name_clash.insert(name.into(), id);
        }
        self.services_live += 1;
        id
    }

    /// Ends `watch`; returns its address. Its service goes with its last watcher.
    pub fn remove(&mut self, watch: u32) -> SocketAddr {
        let slot = self.watches.get(watch).clone();
        // No allocation here: one made while the watches go could pin the heap above them.
        let name = self.services.get(slot.service).name();
        let hash = self.key_hash(name, slot.peer);
        let name_hash = self.hasher.hash_one(name);
        if self.by_key.get(&hash) == Some(&watch) {
            self.by_key.remove(&hash);
        } else {
            self.key_clash.remove(&(slot.service, slot.peer));
        }
        if slot.prev != NONE {
            self.watches.get_mut(slot.prev).next = slot.next;
        } else {
            self.services.get_mut(slot.service).head = slot.next;
        }
        if slot.next != NONE {
            self.watches.get_mut(slot.next).prev = slot.prev;
        }
        let free = self.watches.get_mut(watch);
        free.service = NONE;
        free.next = self.free_watches;
        self.free_watches = watch;
        self.live -= 1;
        if self.services.get(slot.service).head == NONE {
            if self.by_name.get(&name_hash) == Some(&slot.service) {
                self.by_name.remove(&name_hash);
            } else {
                self.name_clash.remove(self.services.get(slot.service).name());
            }
            self.services.get_mut(slot.service).last = u64::from(self.free_services);
            self.free_services = slot.service;
            self.services_live -= 1;
        }
        self.settle();
        if self.live == 0 {
            self.clear();
        }
        slot.peer.addr()
    }

    /// The watchers of service `id`, with their forms.
    pub fn watchers(&self, id: u32) -> Vec<(SocketAddr, Form)> {
        let mut out = Vec::new();
        let mut at = self.services.get(id).head;
        while at != NONE {
            let slot = self.watches.get(at);
            out.push((slot.peer.addr(), slot.form));
            at = slot.next;
        }
        out
    }

    /// Drops the stale entries at the queue's front: its first is then a live deadline.
    fn settle(&mut self) {
        while let Some(&(id, stamp)) = self.expiries.front() {
            let slot = self.watches.get(id);
            if slot.service != NONE && slot.stamp == stamp {
                return;
            }
            self.expiries.pop_front();
        }
    }

    /// The earliest deadline.
    pub fn next_expiry(&self) -> Option<Instant> {
        // Stale entries are dropped after every change, so the first is live.
        let &(id, _) = self.expiries.front()?;
        self.instant(self.watches.get(id).expires)
    }

    /// Ends the first watch due by `now`; returns its address.
    pub fn pop_due(&mut self, now: Instant) -> Option<SocketAddr> {
        self.settle();
        let now = self.nanos(now);
        let &(id, _) = self.expiries.front()?;
        if self.watches.get(id).expires > now {
            return None;
        }
        self.expiries.pop_front();
        Some(self.remove(id))
    }

    /// Rebuilds everything at its size when fewer than a quarter of the slots have been in use
    /// since the last deadline held when that was first seen. Called on each turn of expiries
    /// and with each new watch.
    pub fn maintain(&mut self, now: Instant) {
        let (watches, services) = (self.watches.capacity(), self.services.capacity());
        let sparse = |live: usize, cap: usize| cap > CHUNK && live < cap / 4;
        if !(sparse(self.live, watches) || sparse(self.services_live, services)) {
            self.rebuild_at = None;
            return;
        }
        let now = self.nanos(now);
        match self.rebuild_at {
            None => {
                let last = self.expiries.back().map(|&(id, _)| self.watches.get(id).expires);
                self.rebuild_at = Some(last.unwrap_or(now));
            }
            Some(at) if now >= at => self.rebuild(),
            Some(_) => {}
        }
    }

    /// No watch: every block freed, and nothing allocated meanwhile (a new allocation would
    /// land above the freed blocks and keep glibc from returning them).
    fn clear(&mut self) {
        self.watches = Chunks::new();
        self.services = Chunks::new();
        (self.free_watches, self.free_services) = (NONE, NONE);
        self.by_name.clear();
        self.by_key.clear();
        self.name_clash = HashMap::new();
        self.key_clash = HashMap::new();
        self.expiries = Queue::default();
        (self.live, self.services_live) = (0, 0);
        self.rebuild_at = None;
    }

    /// The same watches, services and deadlines, in storage of their size.
    pub fn rebuild(&mut self) {
        self.settle();
        let mut fresh = Store { hasher: self.hasher.clone(), epoch: self.epoch, ..Store::new() };
        // At their size at once: no trail of outgrown tables in the heap.
        fresh.by_key.reserve_for(self.live);
        fresh.by_name.reserve_for(self.services_live);
        // In deadline order: the queue stays in order.
        for &(id, stamp) in self.expiries.iter() {
            let slot = self.watches.get(id);
            if slot.service == NONE || slot.stamp != stamp {
                continue;
            }
            let old = self.services.get(slot.service);
            let Some(expires) = self.instant(slot.expires) else { continue };
            fresh.insert(old.name(), slot.peer.addr(), slot.form, expires, old.last);
            if let Some(sid) = fresh.service_id(old.name()) {
                let new = fresh.services.get_mut(sid);
                new.seq = old.seq;
                new.dirty = old.dirty;
            }
        }
        *self = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_and_a_service_take_the_bytes_the_documentation_says() {
        assert_eq!(std::mem::size_of::<Peer>(), 24);
        assert_eq!(std::mem::size_of::<Slot>(), 56);
        assert_eq!(std::mem::size_of::<Service>(), 48);
        assert_eq!(std::mem::size_of::<(u64, u32)>(), 16, "a bucket of an index");
    }
}
