//! The blocks the watches' store is made of: a slab in fixed-size blocks, a queue in blocks,
//! and an index by keyed hash in shards, each block under glibc's 128 kB threshold for `mmap`
//! (see the [store's documentation](super)).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Entries per block of [`Chunks`].
pub(in crate::node::watch) const CHUNK: usize = 2048;

/// The fewest bytes of any table here (the lists of blocks, the shards of an index): more than
/// the largest chunk glibc keeps in its per-thread cache (1,032 bytes). A table outgrown while
/// the watches lived is freed high in the heap; from that cache it would never be merged with
/// the blocks freed around it, and one such chunk pins the whole heap beneath it when the
/// watches expire (the small first tables of a growing list or shard did: 0.4–0.8 MB kept).
/// Larger, it goes to glibc's bins and is merged and trimmed with the rest.
const SMALLEST_TABLE_BYTES: usize = 1536;

/// Entries of `T` in a first table of [`SMALLEST_TABLE_BYTES`].
const fn first_table<T>() -> usize {
    SMALLEST_TABLE_BYTES.div_ceil(std::mem::size_of::<T>())
}

/// A slab in blocks of [`CHUNK`] entries: no copy of the whole when it grows, and the last
/// blocks freed when it is rebuilt smaller.
#[derive(Debug, Clone)]
pub(in crate::node::watch) struct Chunks<T> {
    blocks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Chunks<T> {
    pub(super) fn new() -> Self {
        Chunks { blocks: Vec::new(), len: 0 }
    }

    pub(super) fn push(&mut self, value: T) -> u32 {
        if self.len == self.blocks.len() * CHUNK {
            if self.blocks.capacity() == 0 {
                self.blocks.reserve_exact(first_table::<Vec<T>>());
            }
            self.blocks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(block) = self.blocks.last_mut() {
            block.push(value);
        }
        self.len += 1;
        (self.len - 1) as u32
    }

    pub(super) fn get(&self, k: u32) -> &T {
        &self.blocks[k as usize / CHUNK][k as usize % CHUNK]
    }

    pub(super) fn get_mut(&mut self, k: u32) -> &mut T {
        &mut self.blocks[k as usize / CHUNK][k as usize % CHUNK]
    }

    /// Slots, used and free.
    pub(super) fn capacity(&self) -> usize {
        self.blocks.len() * CHUNK
    }
}

/// The hasher of maps whose keys are already keyed hashes.
#[derive(Debug, Default, Clone, Copy)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Entries per block of [`Queue`]: 64 kB.
const QUEUE_BLOCK: usize = 8192;

/// A queue in blocks of [`QUEUE_BLOCK`] entries, for the same reason as [`ByHash`]'s shards.
#[derive(Debug, Default)]
pub(super) struct Queue<T> {
    blocks: VecDeque<VecDeque<T>>,
}

impl<T: Copy> Queue<T> {
    pub(super) fn push_back(&mut self, value: T) {
        if self.blocks.back().is_none_or(|block| block.len() == QUEUE_BLOCK) {
            if self.blocks.capacity() == 0 {
                self.blocks.reserve_exact(first_table::<VecDeque<T>>());
            }
            self.blocks.push_back(VecDeque::with_capacity(QUEUE_BLOCK));
        }
        if let Some(block) = self.blocks.back_mut() {
            block.push_back(value);
        }
    }

    pub(super) fn front(&self) -> Option<&T> {
        self.blocks.front()?.front()
    }

    pub(super) fn back(&self) -> Option<&T> {
        self.blocks.back()?.back()
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        let block = self.blocks.front_mut()?;
        let value = block.pop_front();
        if block.is_empty() {
            self.blocks.pop_front();
        }
        value
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.blocks.iter().flatten()
    }
}

/// Every table's size in bytes, at least (for the tests: see [`SMALLEST_TABLE_BYTES`]).
#[cfg(test)]
pub(super) trait Tables {
    /// The capacity in bytes of each table that holds memory.
    fn table_bytes(&self) -> Vec<usize>;
}

#[cfg(test)]
impl<T> Tables for Chunks<T> {
    fn table_bytes(&self) -> Vec<usize> {
        let outer = self.blocks.capacity() * std::mem::size_of::<Vec<T>>();
        let inner = self.blocks.iter().map(|block| block.capacity() * std::mem::size_of::<T>());
        std::iter::once(outer).chain(inner).filter(|&bytes| bytes > 0).collect()
    }
}

#[cfg(test)]
impl<T> Tables for Queue<T> {
    fn table_bytes(&self) -> Vec<usize> {
        let outer = self.blocks.capacity() * std::mem::size_of::<VecDeque<T>>();
        let inner = self.blocks.iter().map(|block| block.capacity() * std::mem::size_of::<T>());
        std::iter::once(outer).chain(inner).filter(|&bytes| bytes > 0).collect()
    }
}

#[cfg(test)]
impl Tables for ByHash {
    fn table_bytes(&self) -> Vec<usize> {
        // hashbrown: a power of two of buckets at least 8/7 of the capacity, 16 bytes each,
        // and a control byte each with 16 more.
        let buckets = |capacity: usize| (capacity * 8).div_ceil(7).next_power_of_two();
        let bytes = |buckets: usize| buckets * 17 + 16;
        self.shards.iter().filter(|shard| shard.capacity() > 0).map(|shard| bytes(buckets(shard.capacity()))).collect()
    }
}

/// Shards of an index by keyed hash ([`SHARDS`]).
pub(super) const SHARDS: usize = 64;

/// An index from keyed 64-bit hashes to numbers, in [`SHARDS`] maps chosen by the hash's middle
/// bits: no single table passes 128 kB below about 450,000 watches, so no large block's free
/// raises glibc's threshold for `mmap` (and with it the heap it keeps).
#[derive(Debug)]
pub(super) struct ByHash {
    shards: Vec<HashMap<u64, u32, BuildHasherDefault<Prehashed>>>,
}

impl Default for ByHash {
    fn default() -> Self {
        ByHash { shards: (0..SHARDS).map(|_| HashMap::default()).collect() }
    }
}

impl ByHash {
    /// Middle bits: the table takes a bucket from the low ones and a tag from the top seven, which
    /// must vary within a shard.
    fn shard(&self, hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
    }

    pub(super) fn get(&self, hash: &u64) -> Option<&u32> {
        self.shards[self.shard(*hash)].get(hash)
    }

    /// Inserts `hash` unless it is taken; returns whether it was.
    pub(super) fn insert_new(&mut self, hash: u64, id: u32) -> bool {
        let index = self.shard(hash);
        let shard = &mut self.shards[index];
        if shard.capacity() == 0 {
            // A table of 64 buckets (16 bytes and a control byte each): 1,104 bytes.
            shard.reserve(56);
        }
        match shard.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(id);
                true
            }
        }
    }

    pub(super) fn remove(&mut self, hash: &u64) {
        let shard = self.shard(*hash);
        self.shards[shard].remove(hash);
    }
}

impl ByHash {
    /// Empties every shard, freeing its table, with no allocation.
    pub(super) fn clear(&mut self) {
        for shard in &mut self.shards {
            *shard = HashMap::default();
        }
    }

    /// Room in every shard for its part of `n` entries, and a quarter more.
    pub(super) fn reserve_for(&mut self, n: usize) {
        let per_shard = n.div_ceil(SHARDS) + n.div_ceil(SHARDS) / 4;
        for shard in &mut self.shards {
            shard.reserve(per_shard);
        }
    }
}
