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
/// The control thread changes the pool in batches ([`update`](Self::update)): one new list per
/// batch, built in time linear in the pool plus the batch, and an index by address, so adding
/// 20,000 backends costs a few list copies, not 20,000.
#[derive(Debug, Default)]
pub struct Pool {
    inner: RwLock<Inner>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Inner {
    /// In the order they came: the round robin's order.
    list: Arc<Vec<Arc<Backend>>>,
    by_addr: HashMap<SocketAddr, Arc<Backend>>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backends now.
    pub fn snapshot(&self) -> Arc<Vec<Arc<Backend>>> {
        Arc::clone(&self.inner.read().unwrap_or_else(PoisonError::into_inner).list)
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many backends are up.
    pub fn up_count(&self) -> usize {
        self.snapshot().iter().filter(|b| b.is_up()).count()
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
    /// marked up. Time linear in the pool and the batch.
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
        let mut list: Vec<Arc<Backend>> = inner.list.iter().filter(kept).cloned().collect();
        let kept_old = list.len();
        list.extend(added.iter().filter(kept).cloned());
        list.shrink_to_fit();
        let counts = (list.len() - kept_old, inner.list.len() - kept_old);
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
        if list.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed);
        let candidates = (0..list.len()).map(|k| &list[(start + k) % list.len()]).filter(|b| !tried.contains(&b.addr));
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

    #[test]
    fn twenty_thousand_backends_in_batches_are_quick() {
        let pool = Pool::new();
        let addrs: Vec<SocketAddr> =
            (0..20_000u32).map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80))).collect();
        // One batch per turn of the control loop: a turn takes up to 1,024 datagrams.
        for batch in addrs.chunks(1024) {
            pool.update(batch.iter().copied(), []);
        }
        assert_eq!(pool.len(), 20_000);
        for batch in addrs.chunks(1024).step_by(2) {
            pool.update([], batch.iter().copied());
        }
        assert_eq!(pool.len(), 20_000 - 10 * 1024);
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
