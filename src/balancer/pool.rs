//! The backends a balancer forwards to, shared by the control loop (which adds and removes
//! them), the forwarding threads (which pick one per connection) and the health checker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

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
/// Readers take a snapshot (an `Arc` of the list) under a read lock held for a pointer copy.
/// The control thread changes the pool in batches ([`update`](Self::update)), each making a new
/// list that shares what did not change with the old one: the list is held in chunks of
/// [`CHUNK`] backends, so a batch of adds copies the chunk pointers and the last chunk, not
/// every backend, and registering backends one at a time stays linear in their number. A
/// batch with removals builds the list again (time linear in the pool).
#[derive(Debug, Default)]
pub struct Pool {
    inner: RwLock<Inner>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Inner {
    /// In the order they came: the round robin's order.
    list: Arc<List>,
    by_addr: HashMap<SocketAddr, Arc<Backend>>,
}

/// Backends per chunk of a [`List`].
const CHUNK: usize = 256;

/// A list of backends in chunks of [`CHUNK`]; every chunk but the last is full. Chunks are
/// shared between the lists of successive batches.
#[derive(Debug, Default)]
struct List {
    chunks: Vec<Arc<Vec<Arc<Backend>>>>,
    len: usize,
}

impl List {
    fn get(&self, i: usize) -> &Arc<Backend> {
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// A list of `backends` in order.
    fn collect(backends: impl Iterator<Item = Arc<Backend>>) -> List {
        let mut list = List::default();
        list.extend(backends);
        list
    }

    /// This list with `added` at its end: the full chunks are shared, the last one copied.
    fn appended(&self, added: impl Iterator<Item = Arc<Backend>>) -> List {
        let mut list = List { chunks: self.chunks.clone(), len: self.len };
        list.extend(added);
        list
    }

    fn extend(&mut self, backends: impl Iterator<Item = Arc<Backend>>) {
        for backend in backends {
            if self.len % CHUNK == 0 {
                self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
            }
            if let Some(last) = self.chunks.last_mut() {
                // Copied on the first push when another list shares it; in place after that.
                Arc::make_mut(last).push(backend);
            }
            self.len += 1;
        }
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backends now.
    fn snapshot(&self) -> Arc<List> {
        Arc::clone(&self.inner.read().unwrap_or_else(PoisonError::into_inner).list)
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.snapshot().len
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
    /// marked up. Time linear in the batch and in the number of chunks, and with removals
    /// linear in the pool.
    pub fn update(
        &self,
        adds: impl IntoIterator<Item = SocketAddr>,
        removes: impl IntoIterator<Item = SocketAddr>,
    ) -> (usize, usize) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut added = Vec::new();
        for addr in adds {
            match inner.by_addr.get(&addr) {
                Some(existing) => {
                    existing.mark_up();
                }
                None => {
                    let backend = Arc::new(Backend::new(addr));
                    inner.by_addr.insert(addr, Arc::clone(&backend));
                    added.push(backend);
                }
            }
        }
        let mut any_removed = false;
        for addr in removes {
            any_removed |= inner.by_addr.remove(&addr).is_some();
        }
        if added.is_empty() && !any_removed {
            return (0, 0);
        }
        let by_addr = &inner.by_addr;
        let kept = |b: &&Arc<Backend>| by_addr.get(&b.addr).is_some_and(|current| Arc::ptr_eq(current, b));
        let (list, kept_old) = if any_removed {
            let mut list = List::collect(inner.list.iter().filter(kept).cloned());
            let kept_old = list.len;
            list.extend(added.iter().filter(kept).cloned());
            (list, kept_old)
        } else {
            // Nothing left: every backend listed stays, and every one added is new.
            (inner.list.appended(added.into_iter()), inner.list.len)
        };
        let counts = (list.len - kept_old, inner.list.len - kept_old);
        inner.list = Arc::new(list);
        counts
    }

    /// The backend at `addr`, if it is in the pool.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Backend>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).by_addr.get(&addr).cloned()
    }

    /// The next backend in round-robin order that is up and not in `tried`. When every such
    /// backend is down, a down one not yet tried is given a chance rather than failing the
    /// connection outright.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Backend>> {
        let list = self.snapshot();
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

    #[test]
    fn backends_added_one_at_a_time_share_all_but_the_last_chunk() {
        let pool = Pool::new();
        for i in 0..20_000 {
            assert!(pool.add(ten(i)));
        }
        let before = pool.snapshot();
        assert_eq!(before.len, 20_000);
        assert_eq!(before.chunks.len(), 20_000usize.div_ceil(CHUNK));
        let (last, full) = before.chunks.split_last().unwrap();
        assert!(full.iter().all(|chunk| chunk.len() == CHUNK) && last.len() == 20_000 % CHUNK);
        assert!(before.iter().map(|b| b.addr).eq((0..20_000).map(ten)), "in the order they came");

        // One more: only the last chunk is copied, so an add costs the same at any size.
        assert!(pool.add(ten(20_000)));
        let after = pool.snapshot();
        let shared = before.chunks.iter().zip(&after.chunks).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert_eq!(shared, before.chunks.len() - 1);
        assert_eq!(before.len, 20_000, "a reader's snapshot does not change");

        // Round robin over all of them: each once per cycle.
        let mut seen = HashMap::new();
        for _ in 0..2 * 20_001 {
            *seen.entry(pool.pick(&[]).unwrap().addr).or_insert(0) += 1;
        }
        assert!(seen.len() == 20_001 && seen.values().all(|&n| n == 2));
    }

    #[test]
    fn removals_in_batches_keep_the_order_and_the_chunks_full() {
        let pool = Pool::new();
        let addrs: Vec<SocketAddr> = (0..20_000).map(ten).collect();
        // One batch per turn of the control loop: a turn takes up to 1,024 datagrams.
        for batch in addrs.chunks(1024) {
            pool.update(batch.iter().copied(), []);
        }
        assert_eq!(pool.len(), 20_000);
        for batch in addrs.chunks(1024).step_by(2) {
            assert_eq!(pool.update([], batch.iter().copied()), (0, batch.len()));
        }
        let left: Vec<SocketAddr> = addrs.chunks(1024).skip(1).step_by(2).flatten().copied().collect();
        let list = pool.snapshot();
        assert_eq!(list.len, left.len());
        assert!(list.iter().map(|b| b.addr).eq(left.iter().copied()));
        let (_, full) = list.chunks.split_last().unwrap();
        assert!(full.iter().all(|chunk| chunk.len() == CHUNK));
        assert_eq!(pool.get(left[0]).map(|b| b.addr), Some(left[0]));
        assert!(pool.get(addrs[0]).is_none());
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
