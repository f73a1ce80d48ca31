//! The blocks the watches' store is made of: a slab in fixed-size blocks, a queue in blocks,
//! and an index by keyed hash in shards, each block under glibc's 128 kB threshold for `mmap`
//! (see the [store's documentation](super)).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Entries per block of [`Chunks`].
pub(in crate::node::watch) const CHUNK: usize = 2048;

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
        let shard = self.shard(hash);
        match self.shards[shard].entry(hash) {
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
