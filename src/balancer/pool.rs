//! The backends a balancer forwards to, shared by the control loop (which adds and removes
//! them), the forwarding threads (which pick one per connection) and the health checker.

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

    /// Marks it alive (a connect or probe succeeded, or it heartbeated); logs when it was down.
    pub fn mark_up(&self) {
        if !self.up.swap(true, Relaxed) {
            log::info!("backend {} is up again: it gets new connections", self.addr);
        }
    }

    /// Counts a failed connect or probe and takes it out of rotation until it proves alive;
    /// logs when it was up.
    pub fn mark_failed(&self) {
        self.failures.fetch_add(1, Relaxed);
        if self.up.swap(false, Relaxed) {
            log::warn!(
                "backend {} marked down: a connect or probe failed; no new connections until it answers",
                self.addr
            );
        }
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
/// Readers take a snapshot (an `Arc` of the list) under a read lock held for a pointer copy;
/// the control thread replaces the list when a backend comes or goes, which is rare.
#[derive(Debug, Default)]
pub struct Pool {
    backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    next: AtomicUsize,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backends now.
    pub fn snapshot(&self) -> Arc<Vec<Arc<Backend>>> {
        Arc::clone(&self.backends.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a backend (up), or marks it up when it is there already. Returns whether it is new.
    pub fn add(&self, addr: SocketAddr) -> bool {
        let mut list = self.backends.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = list.iter().find(|b| b.addr == addr) {
            existing.mark_up();
            return false;
        }
        let mut new = Vec::clone(&list);
        new.push(Arc::new(Backend::new(addr)));
        *list = Arc::new(new);
        true
    }

    /// Removes a backend; connections already forwarded to it go on. Returns whether it was
    /// there.
    pub fn remove(&self, addr: SocketAddr) -> bool {
        let mut list = self.backends.write().unwrap_or_else(PoisonError::into_inner);
        if !list.iter().any(|b| b.addr == addr) {
            return false;
        }
        *list = Arc::new(list.iter().filter(|b| b.addr != addr).cloned().collect());
        true
    }

    /// The backend at `addr`, if it is in the pool.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Backend>> {
        self.snapshot().iter().find(|b| b.addr == addr).cloned()
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
