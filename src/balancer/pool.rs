//! The backends a balancer forwards to, shared by the control loop (which adds and removes
//! them), the forwarding threads (which pick one per connection) and the health checker.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::protocol::BackendStats;

/// One backend and its counters.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    up: AtomicBool,
    active: AtomicU64,
    total: AtomicU64,
    bytes_to: AtomicU64,
    bytes_from: AtomicU64,
    failures: AtomicU64,
}

impl Backend {
    fn new(addr: SocketAddr) -> Self {
        Backend {
            addr,
            up: AtomicBool::new(true),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            bytes_to: AtomicU64::new(0),
            bytes_from: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Whether it gets new connections.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Marks it alive (a connect or probe succeeded, or it heartbeated); returns whether it
    /// was down.
    pub fn mark_up(&self) -> bool {
        !self.up.swap(true, Relaxed)
    }

    /// Counts a failed connect or probe and takes it out of rotation until it proves alive;
    /// returns whether it was up.
    pub fn mark_failed(&self) -> bool {
        self.failures.fetch_add(1, Relaxed);
        self.up.swap(false, Relaxed)
    }

    /// Counts a connection forwarded to it, open from now on.
    pub fn opened(&self) {
        self.active.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
    }

    /// Counts the end of a connection [`opened`](Self::opened) before.
    pub fn closed(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// Counts bytes sent to it and received from it.
    pub fn transferred(&self, to: u64, from: u64) {
        if to > 0 {
            self.bytes_to.fetch_add(to, Relaxed);
        }
        if from > 0 {
            self.bytes_from.fetch_add(from, Relaxed);
        }
    }

    /// Its counters.
    pub fn stats(&self) -> BackendStats {
        BackendStats {
            addr: self.addr,
            up: self.is_up(),
            active: self.active.load(Relaxed),
            total: self.total.load(Relaxed),
            bytes_to: self.bytes_to.load(Relaxed),
            bytes_from: self.bytes_from.load(Relaxed),
            failures: self.failures.load(Relaxed),
        }
    }
}

/// The live backends and the round-robin index over them.
///
/// Readers (a forwarding thread per pick) load the list from an [`ArcSwap`]: no lock and no
/// count on the list to raise and lower, so the threads no longer write to one lock word and
/// one reference count for every connection, as they did with a read lock and a cloned `Arc`
/// (what is shared per pick is the round-robin index and the picked backend). The control thread
/// changes the pool in batches ([`update`](Self::update)), each storing a new list that shares
/// what did not change with the old one: the list is held in chunks of up to 256 backends, and
/// a batch copies the chunk pointers and the chunks it changes (the last one for adds, the
/// ones holding what it removes), not every backend. So registering or removing backends one
/// at a time stays linear in their number. A reader that loaded the old list finishes its pick
/// on it.
#[derive(Debug, Default)]
pub struct Pool {
    /// In the order they came: the round robin's order.
    list: ArcSwap<List>,
    /// What only changes of the pool use, behind a lock only they (and [`get`](Self::get)) take.
    members: Mutex<Members>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Members {
    /// Every backend in the pool. An address added again keeps its backend, so the one here is
    /// the one listed.
    by_addr: HashMap<SocketAddr, Member>,
    next_chunk: u64,
}

/// A backend in the pool, and the id of the chunk that lists it (0 until one does).
#[derive(Debug)]
struct Member {
    backend: Arc<Backend>,
    chunk: u64,
}

/// Backends per chunk of a [`List`], at most.
const CHUNK: usize = 256;

/// Part of a [`List`], shared by the lists of successive batches until a batch changes it.
#[derive(Debug, Clone)]
struct Chunk {
    /// Names the chunk within the pool, so that a removal finds the chunk to change.
    id: u64,
    backends: Vec<Arc<Backend>>,
}

/// The backends in order, in chunks of 1 to [`CHUNK`] backends.
#[derive(Debug, Default)]
struct List {
    chunks: Vec<Arc<Chunk>>,
    /// Where each chunk starts in the list.
    starts: Vec<usize>,
    len: usize,
}

impl List {
    fn get(&self, i: usize) -> &Arc<Backend> {
        let chunk = self.starts.partition_point(|&start| start <= i) - 1;
        &self.chunks[chunk].backends[i - self.starts[chunk]]
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.chunks.iter().flat_map(|chunk| chunk.backends.iter())
    }

    fn from_chunks(chunks: Vec<Arc<Chunk>>) -> List {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut len = 0;
        for chunk in &chunks {
            starts.push(len);
            len += chunk.backends.len();
        }
        List { chunks, starts, len }
    }
}

impl Members {
    /// Appends `backend` to `chunks`: into the last chunk while it has room (copied first if
    /// the old list shares it), else into a new one.
    fn push(&mut self, chunks: &mut Vec<Arc<Chunk>>, backend: Arc<Backend>) {
        if chunks.last().is_none_or(|last| last.backends.len() >= CHUNK) {
            chunks.push(Arc::new(Chunk { id: self.new_chunk_id(), backends: Vec::with_capacity(CHUNK) }));
        }
        if let Some(last) = chunks.last_mut() {
            let last = Arc::make_mut(last);
            if let Some(member) = self.by_addr.get_mut(&backend.addr) {
                member.chunk = last.id;
            }
            last.backends.push(backend);
        }
    }

    fn new_chunk_id(&mut self) -> u64 {
        self.next_chunk += 1;
        self.next_chunk
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backends now, to go through them all (the forwarding threads' picks only borrow).
    fn snapshot(&self) -> Arc<List> {
        self.list.load_full()
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.list.load().len
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many backends are up.
    pub fn up_count(&self) -> usize {
        self.snapshot().iter().filter(|b| b.is_up()).count()
    }

    /// Whether any backend is up (stops at the first that is).
    pub fn any_up(&self) -> bool {
        self.snapshot().iter().any(|b| b.is_up())
    }

    /// Adds a backend (up), or marks it up when it is there already. Returns whether it is new.
    pub fn add(&self, addr: SocketAddr) -> bool {
        self.update([addr], []).0 == 1
    }

    /// Removes a backend; connections already forwarded to it go on. Returns whether it was
    /// there.
    pub fn remove(&self, addr: SocketAddr) -> bool {
        self.update([], [addr]).1 == 1
    }

    /// Adds and removes backends in one step (a backend both added and removed is removed);
    /// returns how many were added and removed. Added backends that are there already are
    /// marked up. Time linear in the batch, in the number of chunks and in the size of the
    /// chunks it changes.
    pub fn update(
        &self,
        adds: impl IntoIterator<Item = SocketAddr>,
        removes: impl IntoIterator<Item = SocketAddr>,
    ) -> (usize, usize) {
        // The lock makes this the only writer: the list loaded here is the one replaced.
        let mut guard = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let members = &mut *guard;
        let mut added = Vec::new();
        for addr in adds {
            match members.by_addr.get(&addr) {
                Some(existing) => {
                    existing.backend.mark_up();
                }
                None => {
                    let backend = Arc::new(Backend::new(addr));
                    members.by_addr.insert(addr, Member { backend: Arc::clone(&backend), chunk: 0 });
                    added.push(backend);
                }
            }
        }
        // The chunks holding what goes (a backend added in this batch is in none yet).
        let mut touched = HashSet::new();
        for addr in removes {
            if let Some(member) = members.by_addr.remove(&addr) {
                if member.chunk != 0 {
                    touched.insert(member.chunk);
                }
            }
        }
        added.retain(|b| members.by_addr.contains_key(&b.addr));
        if added.is_empty() && touched.is_empty() {
            return (0, 0);
        }
        let old = self.list.load_full();
        let mut chunks = Vec::with_capacity(old.chunks.len() + 1);
        let mut removed = 0;
        for chunk in &old.chunks {
            if !touched.contains(&chunk.id) {
                chunks.push(Arc::clone(chunk));
                continue;
            }
            let backends: Vec<Arc<Backend>> =
                chunk.backends.iter().filter(|b| members.by_addr.contains_key(&b.addr)).cloned().collect();
            removed += chunk.backends.len() - backends.len();
            if !backends.is_empty() {
                // Kept under its id: its backends' entries stay right.
                chunks.push(Arc::new(Chunk { id: chunk.id, backends }));
            }
        }
        let count = added.len();
        for backend in added {
            members.push(&mut chunks, backend);
        }
        // Removals leave chunks part empty: when there are twice as many as full ones would
        // need, pack them again (a cost linear in the pool, once per as many changes).
        let len = old.len - removed + count;
        if chunks.len() > 2 * len.div_ceil(CHUNK) + 1 {
            let all: Vec<Arc<Backend>> = chunks.iter().flat_map(|c| c.backends.iter().cloned()).collect();
            chunks.clear();
            for backend in all {
                members.push(&mut chunks, backend);
            }
        }
        self.list.store(Arc::new(List::from_chunks(chunks)));
        (count, removed)
    }

    /// The backend at `addr`, if it is in the pool.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Backend>> {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.by_addr.get(&addr).map(|member| Arc::clone(&member.backend))
    }

    /// The next backend in round-robin order that is up and not in `tried`. When every such
    /// backend is down, a down one not yet tried is given a chance rather than failing the
    /// connection outright.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Backend>> {
        let list = self.list.load();
        if list.len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed);
        let candidates = (0..list.len).map(|k| list.get((start + k) % list.len)).filter(|b| !tried.contains(&b.addr));
        let mut fallback = None;
        for backend in candidates {
            if backend.is_up() {
                return Some(Arc::clone(backend));
            }
            fallback.get_or_insert(backend);
        }
        fallback.cloned()
    }

    /// Every backend's counters.
    pub fn stats(&self) -> Vec<BackendStats> {
        self.snapshot().iter().map(|b| b.stats()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn round_robin_is_even() {
        let pool = Pool::new();
        for port in 1..=3 {
            assert!(pool.add(addr(port)));
        }
        assert!(!pool.add(addr(2)));
        let mut counts = HashMap::new();
        for _ in 0..300 {
            *counts.entry(pool.pick(&[]).unwrap().addr).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n == 100), "{counts:?}");
    }

    #[test]
    fn down_and_tried_backends_are_skipped() {
        let pool = Pool::new();
        for port in 1..=3 {
            pool.add(addr(port));
        }
        pool.get(addr(2)).unwrap().mark_failed();
        for _ in 0..10 {
            let picked = pool.pick(&[addr(1)]).unwrap().addr;
            assert_eq!(picked, addr(3));
        }
        // Only down or tried backends left: a down one gets a chance.
        assert_eq!(pool.pick(&[addr(1), addr(3)]).unwrap().addr, addr(2));
        assert!(pool.pick(&[addr(1), addr(2), addr(3)]).is_none());
        // A heartbeat (add again) or a probe brings it back.
        pool.add(addr(2));
        assert!(pool.get(addr(2)).unwrap().is_up());
        assert_eq!(pool.get(addr(2)).unwrap().stats().failures, 1);
    }

    #[test]
    fn a_batch_adds_and_removes_at_once_keeping_the_order() {
        let pool = Pool::new();
        assert_eq!(pool.update((1..=5).map(addr), []), (5, 0));
        assert_eq!(pool.update([addr(6), addr(2)], [addr(3), addr(6), addr(9)]), (0, 1));
        let order: Vec<u16> = pool.snapshot().iter().map(|b| b.addr.port()).collect();
        assert_eq!(order, [1, 2, 4, 5], "added and removed in one batch: removed; the rest keep their order");
        assert_eq!(pool.get(addr(4)).map(|b| b.addr), Some(addr(4)));
        assert!(pool.get(addr(3)).is_none());
        pool.get(addr(1)).unwrap().mark_failed();
        assert_eq!(pool.up_count(), 3);
    }

    fn ten(i: u32) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80))
    }

    fn listed(pool: &Pool) -> Vec<SocketAddr> {
        pool.snapshot().iter().map(|b| b.addr).collect()
    }

    fn shared(a: &List, b: &List) -> usize {
        a.chunks.iter().filter(|x| b.chunks.iter().any(|y| Arc::ptr_eq(x, y))).count()
    }

    #[test]
    fn a_change_copies_only_the_chunks_it_changes() {
        let pool = Pool::new();
        for i in 0..20_000 {
            assert!(pool.add(ten(i)));
        }
        let before = pool.snapshot();
        assert_eq!(before.len, 20_000);
        assert_eq!(before.chunks.len(), 20_000usize.div_ceil(CHUNK));
        assert!(listed(&pool).into_iter().eq((0..20_000).map(ten)), "in the order they came");

        // One more: only the last chunk is copied, so an add costs the same at any size.
        assert!(pool.add(ten(20_000)));
        let after = pool.snapshot();
        assert_eq!(shared(&before, &after), before.chunks.len() - 1);
        assert_eq!(before.len, 20_000, "a reader's snapshot does not change");

        // One fewer, from the middle: only its chunk is copied.
        assert!(pool.remove(ten(10_000)));
        let removed = pool.snapshot();
        assert_eq!(shared(&after, &removed), after.chunks.len() - 1);
        assert_eq!(removed.len, 20_000);
        assert!(!listed(&pool).contains(&ten(10_000)));

        // Round robin over all of them: each once per cycle.
        let mut seen = HashMap::new();
        for _ in 0..2 * 20_000 {
            *seen.entry(pool.pick(&[]).unwrap().addr).or_insert(0) += 1;
        }
        assert!(seen.len() == 20_000 && seen.values().all(|&n| n == 2));
    }

    #[test]
    fn churn_keeps_the_order_the_round_robin_and_few_chunks() {
        let pool = Pool::new();
        let mut model: Vec<SocketAddr> = Vec::new();
        let mut next = 0u32;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        for step in 0..1_500 {
            // Batches like the control loop's: some adds, some removes (one unknown, now and
            // then one of the batch's own adds).
            let mut adds = Vec::new();
            for _ in 0..random(40) {
                next += 1;
                adds.push(ten(next));
            }
            let mut removes: Vec<SocketAddr> = Vec::new();
            for _ in 0..random(30) {
                if let Some(&addr) = model.get(random(model.len())) {
                    removes.push(addr);
                }
            }
            removes.push(ten(u32::MAX));
            if step % 7 == 0 && !adds.is_empty() {
                removes.push(adds[0]);
            }
            removes.sort();
            removes.dedup();
            let before = model.len();
            model.extend(adds.iter().copied());
            model.retain(|a| !removes.contains(a));
            let added = adds.iter().filter(|a| !removes.contains(a)).count();
            let expected = (added, before + added - model.len());
            assert_eq!(pool.update(adds.iter().copied(), removes.iter().copied()), expected, "step {step}");
            let list = pool.snapshot();
            assert_eq!(list.len, model.len());
            assert!(list.iter().map(|b| b.addr).eq(model.iter().copied()), "step {step}");
            assert!(list.chunks.iter().all(|c| !c.backends.is_empty() && c.backends.len() <= CHUNK));
            let most = 2 * model.len().div_ceil(CHUNK) + 1;
            assert!(list.chunks.len() <= most, "step {step}: {} chunks", list.chunks.len());
        }
        assert!(model.len() > 1_000, "{}", model.len());
        let mut seen = HashMap::new();
        for _ in 0..3 * model.len() {
            *seen.entry(pool.pick(&[]).unwrap().addr).or_insert(0) += 1;
        }
        assert!(seen.len() == model.len() && seen.values().all(|&n| n == 3));
        for addr in &model {
            assert_eq!(pool.get(*addr).map(|b| b.addr), Some(*addr));
        }
    }

    #[test]
    fn removal_keeps_the_others() {
        let pool = Pool::new();
        assert!(pool.pick(&[]).is_none());
        pool.add(addr(1));
        pool.add(addr(2));
        let held = pool.get(addr(1)).unwrap();
        assert!(pool.remove(addr(1)));
        assert!(!pool.remove(addr(1)));
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.pick(&[]).unwrap().addr, addr(2));
        held.opened();
        assert_eq!(held.stats().active, 1, "a removed backend's counters live on with its connections");
    }
}
