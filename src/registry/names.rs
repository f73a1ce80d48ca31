//! The services by name: the lookup every query, registration and listing starts with.
//!
//! A [`HashTable`] of 4-byte service numbers whose hashes are computed from the names the
//! services keep (as [`index`](super::index) does for leases), where a `HashMap<Arc<str>, u32>`
//! kept a second pointer to each name beside it (24 bytes a slot against 4).
//!
//! The hash is SipHash-1-3, the function of std's `HashMap`, under a key drawn at random for each
//! table from the operating system's random source ([`crate::random`], the crate's one source of
//! randomness; no key is fixed, in tests or release): names come from the network, and without the key nobody can choose names
//! that collide, which would turn every lookup into a walk over all of them. What changes is
//! only how it is called: one pass over the name's bytes ([`sip13`]) instead of std's streaming
//! `Hasher`, which buffers each write and hashes a `str` as its bytes and a separator, about 200
//! instructions for a short name against about 110 here. Faster hashes were not taken: foldhash
//! says itself that it is not for programs whose random state could be learnt by studying their
//! behaviour over a long time (a broker runs for months and answers anyone), and ahash's
//! fallback without AES is the same kind of folded multiply.

use hashbrown::HashTable;
use slab::Slab;

use super::{Index, Service};

/// See the [module documentation](self).
pub(super) struct Names {
    key: (u64, u64),
    table: HashTable<Index>,
}

impl Default for Names {
    fn default() -> Self {
        Names { key: (crate::random::u64(), crate::random::u64()), table: HashTable::new() }
    }
}

impl Names {
    /// The number of the service called `name`.
    pub(super) fn get(&self, services: &Slab<Service>, name: &str) -> Option<Index> {
        let hash = sip13(self.key, name.as_bytes());
        self.table.find(hash, |&i| services.get(i as usize).is_some_and(|s| *s.name == *name)).copied()
    }

    /// Adds `index`, a service in `services` that is not here yet, under its name.
    pub(super) fn insert(&mut self, services: &Slab<Service>, index: Index) {
        let key = self.key;
        let hash_of = |i: &Index| services.get(*i as usize).map_or(0, |s| sip13(key, s.name.as_bytes()));
        let hash = hash_of(&index);
        self.table.insert_unique(hash, index, hash_of);
    }

    /// Removes `index`, called `name`.
    pub(super) fn remove(&mut self, name: &str, index: Index) {
        if let Ok(entry) = self.table.find_entry(sip13(self.key, name.as_bytes()), |&i| i == index) {
            entry.remove();
        }
    }

    /// How many services there are.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
}

/// SipHash-1-3 of `bytes` under `key`, in one pass (Aumasson and Bernstein's SipHash with one
/// compression round per 8-byte word and three finalization rounds, as std's `HashMap` uses).
fn sip13(key: (u64, u64), bytes: &[u8]) -> u64 {
    siphash::<1, 3>(key, bytes)
}

/// SipHash-c-d: `C` compression rounds, `D` finalization rounds.
fn siphash<const C: usize, const D: usize>((k0, k1): (u64, u64), bytes: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let m = u64::from_le_bytes(word.try_into().unwrap_or_default());
        compress::<C>(&mut v, m);
    }
    let tail = words.remainder();
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    let m = u64::from_le_bytes(last) | ((bytes.len() as u64) << 56);
    compress::<C>(&mut v, m);
    v[2] ^= 0xff;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn compress<const C: usize>(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    for _ in 0..C {
        round(v);
    }
    v[0] ^= m;
}

fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same rounds as SipHash-2-4 give std's (deprecated, still stable) `SipHasher`'s
    /// output for every length around the word boundaries, under several keys: the rounds, the
    /// word order and the last word's length byte are right, so SipHash-1-3 is too.
    #[test]
    #[allow(deprecated)]
    fn the_rounds_are_siphash() {
        use std::hash::{Hasher, SipHasher};
        let bytes: Vec<u8> = (0..40u8).map(|b| b.wrapping_mul(37).wrapping_add(11)).collect();
        for key in [(0, 0), (1, 2), (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908), (u64::MAX, 42)] {
            for len in 0..bytes.len() {
                let mut std = SipHasher::new_with_keys(key.0, key.1);
                std.write(&bytes[..len]);
                assert_eq!(siphash::<2, 4>(key, &bytes[..len]), std.finish(), "key {key:?}, {len} bytes");
            }
        }
        // The reference paper's test vector (key 00..0f, message 00..0e).
        let message: Vec<u8> = (0..15).collect();
        assert_eq!(siphash::<2, 4>((0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908), &message), 0xa129_ca61_49be_45e5);
    }

    /// The one pass is std's own SipHash-1-3 (`DefaultHasher`, whose key is (0, 0)) given the
    /// name's bytes in one write, for every length around the word boundaries.
    #[test]
    fn sip13_is_std_siphash_1_3() {
        use std::hash::{DefaultHasher, Hasher};
        let bytes: Vec<u8> = (0..40u8).map(|b| b.wrapping_mul(101).wrapping_add(3)).collect();
        for len in 0..bytes.len() {
            let mut std = DefaultHasher::new();
            std.write(&bytes[..len]);
            assert_eq!(sip13((0, 0), &bytes[..len]), std.finish(), "{len} bytes");
        }
    }

    fn service(name: &str) -> Service {
        Service { name: name.into(), members: Vec::new(), text: Default::default(), binary: None, cursor: 0 }
    }

    #[test]
    fn names_are_found_until_removed_through_growth() {
        let mut services = Slab::new();
        let mut names = Names::default();
        for k in 0..2000 {
            let index = services.insert(service(&format!("svc{k}"))) as Index;
            names.insert(&services, index);
        }
        assert_eq!(names.len(), 2000);
        for k in (0..2000).step_by(3) {
            let name = format!("svc{k}");
            let index = names.get(&services, &name).unwrap();
            names.remove(&name, index);
            services.remove(index as usize);
        }
        for k in 0..2000 {
            let found = names.get(&services, &format!("svc{k}"));
            assert_eq!(found.is_some(), k % 3 != 0, "svc{k}");
            if let Some(index) = found {
                assert_eq!(&*services[index as usize].name, format!("svc{k}"));
            }
        }
        assert_eq!(names.get(&services, "svc"), None);
        assert_eq!(names.len(), 2000 - 667);
    }

    /// Services removed and others added in their slots, round after round (the slab reuses
    /// numbers, the table leaves tombstones and rehashes in place or grows): every live name is
    /// found under its own number, and no removed one is.
    #[test]
    fn numbers_reused_under_other_names_are_found_by_their_new_names() {
        let mut services = Slab::new();
        let mut names = Names::default();
        let mut live: Vec<(String, Index)> = Vec::new();
        for round in 0..20 {
            for k in 0..500 {
                let name = format!("r{round}-s{k}");
                let index = services.insert(service(&name)) as Index;
                names.insert(&services, index);
                live.push((name, index));
            }
            // Remove every other live service (the older ones first).
            let mut kept = Vec::new();
            for (n, (name, index)) in live.drain(..).enumerate() {
                if n % 2 == 0 {
                    names.remove(&name, index);
                    services.remove(index as usize);
                    assert_eq!(names.get(&services, &name), None, "{name} removed");
                } else {
                    kept.push((name, index));
                }
            }
            live = kept;
            assert_eq!(names.len(), live.len());
            for (name, index) in &live {
                assert_eq!(names.get(&services, name), Some(*index), "{name}");
            }
        }
        assert_eq!(names.get(&services, "r0-s0"), None);
    }

    /// A million names (`cargo test --release --lib -- --ignored a_million`): the table grows
    /// through every size and finds each name under its number.
    #[test]
    #[ignore = "a million services take a while in a debug build"]
    fn a_million_names() {
        let mut services = Slab::new();
        let mut names = Names::default();
        for k in 0..1_000_000 {
            let index = services.insert(service(&format!("service-{k}"))) as Index;
            names.insert(&services, index);
        }
        assert_eq!(names.len(), 1_000_000);
        for k in (0..1_000_000).step_by(7) {
            let index = names.get(&services, &format!("service-{k}")).unwrap();
            assert_eq!(&*services[index as usize].name, format!("service-{k}"));
        }
        assert_eq!(names.get(&services, "service-1000000"), None);
    }

    #[test]
    fn two_processes_hash_alike_only_by_chance() {
        let (a, b) = (Names::default(), Names::default());
        assert_ne!(a.key, b.key);
        assert_ne!(sip13(a.key, b"echo"), sip13(b.key, b"echo"));
    }
}
