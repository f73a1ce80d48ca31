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
//! bucket's element hashes ([`Registry::element_hashes`]) or find the lease behind one
//! ([`Registry::leases_by_hash`]), the hashes of that bucket's leases (1/256 of the table) are
//! computed again. Repairs are rare and budgeted, so this costs less than the ordered index of
//! (hash, lease) pairs it replaces (a `BTreeSet`, about 25 bytes a lease). Removing a lease
//! finds it in its bucket's vector: a scan of 1/256 of the table (about 4,000 numbers, a
//! microsecond, at 1,000,000 leases).

use std::net::{IpAddr, SocketAddr};

use super::{Index, Registry, Source};

/// How many buckets the hashes fall into (by their top 8 bits).
pub const BUCKETS: usize = 256;

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
}

impl Default for Digest {
    fn default() -> Self {
        Digest { buckets: vec![0; BUCKETS], root: 0, members: vec![Vec::new(); BUCKETS] }
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
        self.buckets[bucket_of(hash)] ^= hash;
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
    /// Computes the hashes of the buckets' leases that the range touches, and sorts them.
    pub fn element_hashes(&self, from: u64, to: u64) -> impl Iterator<Item = u64> + '_ {
        let mut hashes = Vec::new();
        if from <= to {
            for bucket in bucket_of(from)..=bucket_of(to) {
                let all = self.digest.members[bucket].iter().map(|&lease| self.element_hash_of(lease));
                hashes.extend(all.filter(|hash| (from..=to).contains(hash)));
            }
        }
        hashes.sort_unstable();
        hashes.into_iter()
    }

    /// The ids of the leases whose element hash is `hash` (one, but for a collision).
    pub fn leases_by_hash(&self, hash: u64) -> impl Iterator<Item = uuid::Uuid> + '_ {
        let bucket = &self.digest.members[bucket_of(hash)];
        bucket.iter().filter(move |&&lease| self.element_hash_of(lease) == hash).map(|&lease| self.lease(lease).id)
    }

    /// The element hash of the lease at `index`.
    pub(super) fn element_hash_of(&self, index: Index) -> u64 {
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
                prop_assert_eq!(registry.element_hashes(0, u64::MAX).collect::<Vec<_>>(), hashes);
            }
        }
    }
}
