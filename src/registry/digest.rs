//! A compact summary of the table, kept up to date as leases come and go, so that two brokers
//! can tell whether they hold the same leases without sending them (anti-entropy, see
//! `node::replicate::entropy`).
//!
//! A lease's identity across brokers is (service, endpoint, source): its id may differ or be
//! merged (see [`remote`](super::remote)), its remaining time always differs. Each lease is
//! summarised by [`element_hash`] of that identity, a fixed function (FNV-1a, then the
//! SplitMix64 finaliser) so that brokers built by different compilers agree. The elements fall
//! into [`BUCKETS`] buckets by the top bits of their hash; each bucket's hash is the XOR of its
//! elements', the root the XOR of all. Insert and remove update the bucket and the root:
//! nothing is rescanned when a digest is sent. The hash is a checksum between trusted peers,
//! not a defence against a forger.
//!
//! Memory: the buckets are 2 KB, and each bucket keeps the numbers of its leases (4 bytes a
//! lease, 4–8 with the vectors' room to grow), which is what a repair needs: to list a
//! bucket's element hashes ([`Registry::element_hashes`]) or find the leases behind some
//! ([`Registry::leases_by_hashes`]), the hashes of that bucket's leases (1/256 of the table)
//! are computed again, once, and sorted. The last [`CACHED`] buckets so computed are kept as
//! sorted (hash, lease) pairs (16 bytes a lease of those buckets: about 125 KB at 1,000,000
//! leases, whatever the table's size 1/128 of it, so 1/8 byte a lease), dropped when a lease
//! comes into or leaves their bucket: a bucket goes out in many `Elements` datagrams (23 at
//! 1,000,000 leases) and each is answered with pushes, so without them a repair cost (hashes
//! asked for) × (bucket size) hash computations (2.27 s to push a whole bucket at 1,000,000
//! leases), with them one bucket's. Repairs are rare and budgeted, so this costs less than the
//! ordered index of (hash, lease) pairs it replaces (a `BTreeSet`, about 25 bytes a lease).
//! Removing a lease finds it in its bucket's vector: a scan of 1/256 of the table (about 4,000
//! numbers, a microsecond, at 1,000,000 leases).

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use super::{Index, Registry, Source};

/// How many buckets the hashes fall into (by their top 8 bits).
pub const BUCKETS: usize = 256;

/// How many buckets' sorted (hash, lease) pairs are kept (see the [module documentation](self)):
/// the one whose `Elements` are being answered, and one more for the other side's `Want`s or
/// a second peer.
pub const CACHED: usize = 2;

#[cfg(test)]
thread_local! {
    /// How many element hashes of leases this thread computed ([`Registry::element_hash_of`]),
    /// for tests that check a repair's cost without timing it.
    pub(crate) static HASHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The element hash of a lease: FNV-1a 64 over the service's bytes, a 0xFF separator (never in
/// a name), the endpoint (IPv6 or IPv4-mapped, 16 bytes, then the port big-endian), and the
/// source (a tag byte 0 for a unicast address, then its 16 + 2 bytes; 1 for an announcer, then
/// its 16 address bytes and its origin little-endian); then SplitMix64's finaliser, so that
/// nearby inputs spread over all buckets.
pub fn element_hash(service: &str, endpoint: SocketAddr, source: Source) -> u64 {
    fn ip16(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            IpAddr::V6(ip) => ip.octets(),
        }
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(service.as_bytes());
    eat(&[0xFF]);
    eat(&ip16(endpoint.ip()));
    eat(&endpoint.port().to_be_bytes());
    match source {
        Source::Unicast(addr) => {
            eat(&[0]);
            eat(&ip16(addr.ip()));
            eat(&addr.port().to_be_bytes());
        }
        Source::Announcer { ip, origin } => {
            eat(&[1]);
            eat(&ip16(ip));
            eat(&origin.to_le_bytes());
        }
    }
    let mut z = hash;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bucket of an element hash.
pub fn bucket_of(hash: u64) -> usize {
    (hash >> 56) as usize
}

/// The range of element hashes in bucket `bucket`.
pub fn bucket_range(bucket: usize) -> (u64, u64) {
    let first = (bucket as u64) << 56;
    (first, first | ((1u64 << 56) - 1))
}

/// The table's summary. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Digest {
    buckets: Vec<u64>,
    root: u64,
    /// Each bucket's leases, in no order.
    members: Vec<Vec<Index>>,
    /// Up to [`CACHED`] buckets' leases with their hashes, most recently used first. Only
    /// read through `&Registry` (hence the cell; the registry is used by one thread at a time),
    /// and dropped by [`insert`](Self::insert) and [`remove`](Self::remove) into its bucket.
    sorted: RefCell<Vec<Sorted>>,
}

/// One bucket's (element hash, lease) pairs, ascending.
#[derive(Debug)]
struct Sorted {
    bucket: usize,
    pairs: Vec<(u64, Index)>,
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            buckets: vec![0; BUCKETS],
            root: 0,
            members: vec![Vec::new(); BUCKETS],
            sorted: RefCell::new(Vec::new()),
        }
    }
}

impl Digest {
    /// A lease came in.
    pub fn insert(&mut self, hash: u64, lease: Index) {
        self.members[bucket_of(hash)].push(lease);
        self.flip(hash);
    }

    /// A lease went (removed, expired).
    pub fn remove(&mut self, hash: u64, lease: Index) {
        let bucket = &mut self.members[bucket_of(hash)];
        if let Some(at) = bucket.iter().position(|&other| other == lease) {
            bucket.swap_remove(at);
            self.flip(hash);
        }
    }

    fn flip(&mut self, hash: u64) {
        let bucket = bucket_of(hash);
        self.sorted.get_mut().retain(|sorted| sorted.bucket != bucket);
        self.buckets[bucket] ^= hash;
        self.root ^= hash;
    }
}

impl Registry {
    /// The table's summary: how many leases it holds and the XOR of their element hashes.
    pub fn digest(&self) -> (u64, u64) {
        (self.lease_count as u64, self.digest.root)
    }

    /// Each bucket's hash (the XOR of its elements'), [`BUCKETS`] of them.
    pub fn bucket_hashes(&self) -> &[u64] {
        &self.digest.buckets
    }

    /// The element hashes in `from..=to`, ascending (a hash two leases share comes twice).
    ///
    /// Takes them from the sorted pairs of each bucket the range touches, computed when the
    /// bucket is not among the [`CACHED`] ones (see the [module documentation](self)).
    pub fn element_hashes(&self, from: u64, to: u64) -> impl Iterator<Item = u64> + '_ {
        let mut hashes = Vec::new();
        if from <= to {
            for bucket in bucket_of(from)..=bucket_of(to) {
                self.with_sorted(bucket, |pairs| {
                    let first = pairs.partition_point(|&(hash, _)| hash < from);
                    let last = pairs.partition_point(|&(hash, _)| hash <= to);
                    hashes.extend(pairs[first..last].iter().map(|&(hash, _)| hash));
                });
            }
        }
        hashes.into_iter()
    }

    /// The ids of the leases whose element hash is one of `hashes` (one a hash, but for a
    /// collision), by ascending hash, handed to `each` until it returns false.
    ///
    /// The wanted hashes are sorted and grouped by bucket; each bucket's sorted pairs are
    /// computed at most once (none when cached) and searched for each, and `each` is asked
    /// before the next bucket is looked at, so a caller out of budget stops the lookups too.
    pub fn leases_by_hashes(&self, hashes: &[u64], mut each: impl FnMut(uuid::Uuid) -> bool) {
        let mut wanted = hashes.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut ids = Vec::new();
        for group in wanted.chunk_by(|a, b| bucket_of(*a) == bucket_of(*b)) {
            ids.clear();
            self.with_sorted(bucket_of(group[0]), |pairs| {
                for &hash in group {
                    let first = pairs.partition_point(|&(other, _)| other < hash);
                    let same = pairs[first..].iter().take_while(|&&(other, _)| other == hash);
                    ids.extend(same.map(|&(_, lease)| self.lease(lease).id));
                }
            });
            // Handed out with the cache released, so that `each` may read the registry freely.
            for &id in &ids {
                if !each(id) {
                    return;
                }
            }
        }
    }

    /// Calls `f` with bucket `bucket`'s (hash, lease) pairs, ascending, computing them unless
    /// they are cached, and keeps them as the most recently used.
    fn with_sorted<R>(&self, bucket: usize, f: impl FnOnce(&[(u64, Index)]) -> R) -> R {
        let mut cache = self.digest.sorted.borrow_mut();
        let sorted = match cache.iter().position(|sorted| sorted.bucket == bucket) {
            Some(at) => cache.remove(at),
            None => {
                let leases = &self.digest.members[bucket];
                let mut pairs: Vec<(u64, Index)> =
                    leases.iter().map(|&lease| (self.element_hash_of(lease), lease)).collect();
                pairs.sort_unstable();
                Sorted { bucket, pairs }
            }
        };
        cache.truncate(CACHED - 1);
        cache.insert(0, sorted);
        f(&cache[0].pairs)
    }

    /// The element hash of the lease at `index`.
    pub(super) fn element_hash_of(&self, index: Index) -> u64 {
        #[cfg(test)]
        HASHED.with(|hashed| hashed.set(hashed.get() + 1));
        let lease = self.lease(index);
        let service = self.service(lease.service);
        element_hash(&service.name, service.members[lease.position as usize].endpoint.get(), lease.source)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;
    use crate::registry::{Config, Cursor, LeaseView, RemoveReason};

    /// The summary recomputed from every lease the table lists.
    fn recomputed(registry: &mut Registry, now: Instant) -> (u64, u64, Vec<u64>, Vec<u64>) {
        let mut hashes = Vec::new();
        let mut cursor = Some(Cursor::START);
        while let Some(at) = cursor {
            cursor = registry.page(now, at, |view| {
                hashes.push(element_hash(view.service, view.endpoint, view.source));
                true
            });
        }
        hashes.sort_unstable();
        let mut buckets = vec![0u64; BUCKETS];
        for &hash in &hashes {
            buckets[bucket_of(hash)] ^= hash;
        }
        let root = hashes.iter().fold(0, |root, hash| root ^ hash);
        (hashes.len() as u64, root, buckets, hashes)
    }

    /// The ids [`Registry::leases_by_hashes`] gives for `hashes`, sorted.
    fn by_hashes(registry: &Registry, hashes: &[u64]) -> Vec<uuid::Uuid> {
        let mut ids = Vec::new();
        registry.leases_by_hashes(hashes, |id| {
            ids.push(id);
            true
        });
        ids.sort_unstable();
        ids
    }

    /// The ids of the leases with element hash `hash`, by a scan of its bucket (the lookup
    /// before the cache), sorted.
    fn by_scan(registry: &Registry, hash: u64) -> Vec<uuid::Uuid> {
        let bucket = &registry.digest.members[bucket_of(hash)];
        let mut ids: Vec<_> = bucket
            .iter()
            .filter(|&&lease| registry.element_hash_of(lease) == hash)
            .map(|&lease| registry.lease(lease).id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// How many element hashes `f` computes.
    fn hashed<R>(f: impl FnOnce() -> R) -> (R, u64) {
        let before = HASHED.with(|hashed| hashed.get());
        let result = f();
        (result, HASHED.with(|hashed| hashed.get()) - before)
    }

    fn lease_k(k: u32) -> (SocketAddr, Source) {
        let [_, a, b, c] = k.to_be_bytes();
        (SocketAddr::from(([10, a, b, c], 4000)), Source::Unicast(SocketAddr::from(([10, a, b, c], 5000))))
    }

    /// A registry with `count` leases in bucket `bucket` and as many elsewhere, and the
    /// first ones' hashes and ids.
    fn with_bucket(bucket: usize, count: usize) -> (Registry, Vec<(u64, uuid::Uuid)>, Instant) {
        let mut next = 0u128;
        let mut registry = Registry::new(Config::default(), move || {
            next += 1;
            uuid::Uuid::from_u128(next)
        });
        let now = Instant::now();
        let (mut inside, mut outside) = (Vec::new(), 0);
        for k in 0.. {
            let (endpoint, source) = lease_k(k);
            let hash = element_hash("s", endpoint, source);
            if bucket_of(hash) == bucket && inside.len() < count {
                inside.push((hash, registry.register(now, "s", endpoint, source).unwrap().id));
            } else if bucket_of(hash) != bucket && outside < count {
                registry.register(now, "s", endpoint, source).unwrap();
                outside += 1;
            } else if inside.len() == count && outside == count {
                break;
            }
        }
        inside.sort_unstable();
        (registry, inside, now)
    }

    #[test]
    fn a_bucket_is_hashed_once_however_many_datagrams_and_hashes_ask() {
        let (registry, inside, _) = with_bucket(5, 300);
        let (first, last) = bucket_range(5);
        // The bucket's elements, in ten ranges (as ten `Elements` datagrams): hashed once.
        let cuts: Vec<u64> = (0..=10).map(|k| first + (last - first) / 10 * k).collect();
        let (hashes, count) = hashed(|| {
            let mut hashes = Vec::new();
            for pair in cuts.windows(2) {
                let to = if pair[1] == cuts[10] { last } else { pair[1] - 1 };
                hashes.extend(registry.element_hashes(pair[0], to));
            }
            hashes
        });
        assert_eq!(hashes, inside.iter().map(|&(hash, _)| hash).collect::<Vec<_>>());
        assert_eq!(count, 300, "one computation a lease of the bucket");
        // Pushing the whole bucket: found by the cached pairs, nothing hashed again.
        let (ids, count) = hashed(|| by_hashes(&registry, &hashes));
        let mut expected: Vec<_> = inside.iter().map(|&(_, id)| id).collect();
        expected.sort_unstable();
        assert_eq!((ids, count), (expected.clone(), 0));
        // Uncached (two other buckets looked at since), the same push hashes the bucket once,
        // not once a wanted hash (300 × 300 = 90,000 before).
        let others = [bucket_range(6).0, bucket_range(7).0];
        registry.element_hashes(others[0], bucket_range(7).1).count();
        let (ids, count) = hashed(|| by_hashes(&registry, &hashes));
        assert_eq!(ids, expected);
        assert_eq!(count, 300);
        // Hashes of three buckets, shuffled and repeated: each bucket hashed once.
        let sizes: u64 = [5, 6, 7].iter().map(|&b| registry.digest.members[b].len() as u64).sum();
        registry.element_hashes(bucket_range(8).0, bucket_range(9).1).count();
        let mut mixed: Vec<u64> = hashes.iter().rev().chain(&hashes).copied().collect();
        mixed.extend(registry.element_hashes(bucket_range(6).0, bucket_range(7).1).collect::<Vec<_>>());
        registry.element_hashes(bucket_range(8).0, bucket_range(9).1).count();
        let (_, count) = hashed(|| by_hashes(&registry, &mixed));
        assert_eq!(count, sizes);
    }

    #[test]
    fn a_lookup_stops_when_told() {
        let (registry, inside, _) = with_bucket(5, 50);
        let hashes: Vec<u64> = inside.iter().map(|&(hash, _)| hash).collect();
        let mut ids = Vec::new();
        registry.leases_by_hashes(&hashes, |id| {
            ids.push(id);
            ids.len() < 7
        });
        // By ascending hash.
        assert_eq!(ids, inside[..7].iter().map(|&(_, id)| id).collect::<Vec<_>>());
    }

    #[test]
    fn a_bucket_that_changes_between_two_datagrams_is_listed_as_it_is_now() {
        let (mut registry, inside, now) = with_bucket(5, 40);
        let (first, last) = bucket_range(5);
        let middle = first + (last - first) / 2;
        let before: Vec<u64> = registry.element_hashes(first, middle).collect();
        assert_eq!(before, inside.iter().map(|&(hash, _)| hash).filter(|&hash| hash <= middle).collect::<Vec<_>>());
        assert!(by_hashes(&registry, &[inside[0].0]) == [inside[0].1]);
        // One lease of the bucket goes, another comes (in the slot the first left).
        registry.deregister(now, inside[0].1).unwrap();
        let mut k = 1 << 20;
        let (endpoint, source) = loop {
            let (endpoint, source) = lease_k(k);
            if bucket_of(element_hash("s", endpoint, source)) == 5 {
                break (endpoint, source);
            }
            k += 1;
        };
        let new = registry.register(now, "s", endpoint, source).unwrap().id;
        let new_hash = element_hash("s", endpoint, source);
        let (count, root, _, hashes) = recomputed(&mut registry, now);
        assert_eq!(registry.digest(), (count, root));
        let in_bucket: Vec<u64> = hashes.iter().copied().filter(|&hash| bucket_of(hash) == 5).collect();
        let listed: Vec<u64> =
            registry.element_hashes(first, middle).chain(registry.element_hashes(middle + 1, last)).collect();
        assert_eq!(listed, in_bucket);
        assert!(!listed.contains(&inside[0].0) && listed.contains(&new_hash));
        assert!(by_hashes(&registry, &[inside[0].0]).is_empty());
        assert_eq!(by_hashes(&registry, &[new_hash]), [new]);
        assert_eq!(by_hashes(&registry, &[inside[1].0]), [inside[1].1]);
    }

    #[test]
    fn colliding_hashes_are_listed_twice_and_both_found() {
        // Two leases with one hash cannot be made by registering (it would take an FNV-1a
        // collision): the cache's pairs are set as a collision would leave them.
        let (registry, inside, _) = with_bucket(5, 10);
        let (a, b) = (inside[2], inside[3]);
        let leases: Vec<Index> = registry.digest.members[5].clone();
        let index_of = |id| leases.iter().copied().find(|&lease| registry.lease(lease).id == id).unwrap();
        let mut pairs: Vec<(u64, Index)> =
            leases.iter().map(|&lease| (registry.element_hash_of(lease), lease)).collect();
        for pair in &mut pairs {
            if pair.1 == index_of(b.1) {
                pair.0 = a.0;
            }
        }
        pairs.sort_unstable();
        *registry.digest.sorted.borrow_mut() = vec![Sorted { bucket: 5, pairs }];
        let (first, last) = bucket_range(5);
        let listed: Vec<u64> = registry.element_hashes(first, last).collect();
        assert_eq!(listed.iter().filter(|&&hash| hash == a.0).count(), 2);
        assert!(!listed.contains(&b.0));
        let mut both = vec![a.1, b.1];
        both.sort_unstable();
        assert_eq!(by_hashes(&registry, &[a.0]), both);
        assert_eq!(by_hashes(&registry, &[a.0, a.0, inside[4].0]).len(), 3);
    }

    #[test]
    fn the_registry_with_its_cache_is_still_send() {
        fn send<T: Send>() {}
        send::<Registry>();
    }

    #[test]
    fn the_hash_is_fixed() {
        // Brokers of any build must agree: this value is part of the peer protocol.
        let source = Source::Unicast("127.0.0.1:50000".parse().unwrap());
        assert_eq!(element_hash("echo", "127.0.0.1:4000".parse().unwrap(), source), 0x0ba4_ae25_e355_1888);
        let (first, last) = bucket_range(3);
        assert_eq!((bucket_of(first), bucket_of(last), bucket_of(last + 1)), (3, 3, 4));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Register { service: u8, port: u8, source: u8 },
        Deregister(usize),
        Remote { id: u8, service: u8, port: u8, source: u8, ttl: u8 },
        RemoteRemoval(u8),
        Wait(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3u8, 0..4u8, 0..3u8).prop_map(|(service, port, source)| Op::Register { service, port, source }),
            any::<usize>().prop_map(Op::Deregister),
            (any::<u8>(), 0..3u8, 0..4u8, 0..3u8, 1..8u8).prop_map(|(id, service, port, source, ttl)| Op::Remote {
                id,
                service,
                port,
                source,
                ttl
            }),
            any::<u8>().prop_map(Op::RemoteRemoval),
            (0..4u8).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Registers, deregisters, merges of peers' leases (the same source under another id),
        /// removals and expiries keep the summary equal to one recomputed from the table.
        #[test]
        fn the_summary_is_always_a_recomputation(ops in proptest::collection::vec(op(), 1..120)) {
            let mut next = 0u128;
            let mut registry = Registry::new(Config::default(), move || { next += 1; uuid::Uuid::from_u128(next) });
            let mut now = Instant::now();
            let mut ids = Vec::new();
            for op in ops {
                match op {
                    Op::Register { service, port, source } => {
                        let source = Source::Unicast(SocketAddr::from(([10, 0, 0, source], 5000)));
                        let endpoint = SocketAddr::from(([10, 0, 1, 1], 4000 + u16::from(port)));
                        if let Ok(registration) = registry.register(now, &format!("s{service}"), endpoint, source) {
                            ids.push(registration.id);
                        }
                    }
                    Op::Deregister(k) if !ids.is_empty() => {
                        let _ = registry.deregister(now, ids[k % ids.len()]);
                    }
                    Op::Deregister(_) => {}
                    Op::Remote { id, service, port, source, ttl } => {
                        let name = format!("s{service}");
                        let view = LeaseView {
                            id: uuid::Uuid::from_u128(1000 + u128::from(id)),
                            service: &name,
                            endpoint: SocketAddr::from(([10, 0, 1, 1], 4000 + u16::from(port))),
                            source: Source::Unicast(SocketAddr::from(([10, 0, 0, source], 5000))),
                            ttl_left: Duration::from_secs(u64::from(ttl)),
                            aliases: &[],
                            check: crate::protocol::Check::None,
                            meta: None,
                        };
                        registry.apply_remote(now, view);
                    }
                    Op::RemoteRemoval(id) => {
                        registry.apply_remote_removal(now, uuid::Uuid::from_u128(1000 + u128::from(id)), RemoveReason::Deregistered);
                    }
                    Op::Wait(secs) => {
                        now += Duration::from_millis(700 * u64::from(secs));
                        registry.handle_timeout(now);
                    }
                }
                let (count, root, buckets, hashes) = recomputed(&mut registry, now);
                prop_assert_eq!(registry.digest(), (count, root));
                prop_assert_eq!(registry.bucket_hashes(), &buckets[..]);
                prop_assert_eq!(registry.element_hashes(0, u64::MAX).collect::<Vec<_>>(), hashes.clone());
                // The lookup, through whatever the changes left cached, finds what a scan does.
                for &hash in &hashes {
                    prop_assert_eq!(by_hashes(&registry, &[hash]), by_scan(&registry, hash));
                }
            }
        }
    }
}
