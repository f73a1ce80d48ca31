//! The backends a balancer forwards to, shared by the control loop (which adds and removes
//! them), the forwarding threads (which pick one per connection, by the [`Policy`]) and the
//! health checker.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::policy::{Draw, Policy, Weighted};
use crate::protocol::BackendStats;

/// One backend and its counters.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    up: AtomicBool,
    /// Its share of connections beside the others' (1 unless it registered with a weight).
    weight: AtomicU32,
    /// Connections assigned to it and not yet ended, connects in progress included: what
    /// least-conn and random-two compare.
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
            weight: AtomicU32::new(1),
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

    /// Counts a failed probe that does not (yet) take it out of rotation.
    pub fn count_failure(&self) {
        self.failures.fetch_add(1, Relaxed);
    }

    /// Counts a failed connect or probe and takes it out of rotation until it proves alive;
    /// returns whether it was up.
    pub fn mark_failed(&self) -> bool {
        self.failures.fetch_add(1, Relaxed);
        self.up.swap(false, Relaxed)
    }

    /// Counts a connection whose connect to it succeeded (its [`Lease`] counts it in flight).
    pub fn connected(&self) {
        self.total.fetch_add(1, Relaxed);
    }

    /// Its weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Connections in flight to it.
    fn load(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Whether it carries less load than `other` for its weight (in flight ÷ weight, compared
    /// without division).
    fn lighter_than(&self, other: &Backend) -> bool {
        u128::from(self.load()) * u128::from(other.weight()) < u128::from(other.load()) * u128::from(self.weight())
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

/// A connection assigned to a backend: counted among its connections in flight from the pick
/// until the lease is dropped, however the connection ends (a failed connect, a timeout, either
/// side closing, the balancer stopping).
#[derive(Debug)]
pub struct Lease(Arc<Backend>);

impl Lease {
    fn new(backend: &Arc<Backend>) -> Lease {
        backend.active.fetch_add(1, Relaxed);
        Lease(Arc::clone(backend))
    }
}

impl std::ops::Deref for Lease {
    type Target = Backend;

    fn deref(&self) -> &Backend {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
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
    /// The [`Policy`] (its index in [`Policy::NAMES`]): an atomic, so that a reload changes it
    /// under the forwarding threads' picks, each of which reads it once.
    policy: AtomicU8,
}

#[derive(Debug, Default)]
struct Members {
    /// Every backend in the pool. An address added again keeps its backend, so the one here is
    /// the one listed.
    by_addr: HashMap<SocketAddr, Member>,
    next_chunk: u64,
    /// How many members weigh other than 1: while none does, a list needs no weighted order
    /// (and publishing one costs nothing per backend).
    weighted: usize,
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
    /// The weighted order, when the backends do not all weigh the same.
    weighted: Option<Weighted>,
}

impl List {
    fn get(&self, i: usize) -> &Arc<Backend> {
        let chunk = self.starts.partition_point(|&start| start <= i) - 1;
        &self.chunks[chunk].backends[i - self.starts[chunk]]
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.chunks.iter().flat_map(|chunk| chunk.backends.iter())
    }

    /// The list of `chunks`; with `weighted`, its weighted order too (time linear in the list).
    fn from_chunks(chunks: Vec<Arc<Chunk>>, weighted: bool) -> List {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut len = 0;
        for chunk in &chunks {
            starts.push(len);
            len += chunk.backends.len();
        }
        let mut list = List { chunks, starts, len, weighted: None };
        if weighted {
            let weights: Vec<u32> = list.iter().map(|b| b.weight()).collect();
            list.weighted = Weighted::new(&weights);
        }
        list
    }

    /// The list index of the `k`-th pick of the (weighted) round robin.
    fn round_robin_index(&self, k: usize) -> usize {
        match &self.weighted {
            Some(weighted) => weighted.nth(k),
            None => k % self.len,
        }
    }

    /// From the `k`-th round-robin position on: the first backend that is up and not tried,
    /// else the first not tried.
    fn round_robin(&self, k: usize, tried: &[SocketAddr]) -> Option<&Arc<Backend>> {
        let steps = match &self.weighted {
            Some(weighted) => usize::try_from(weighted.total()).unwrap_or(usize::MAX),
            None => self.len,
        };
        let mut fallback = None;
        for step in 0..steps {
            let backend = self.get(self.round_robin_index(k.wrapping_add(step)));
            if tried.contains(&backend.addr) {
                continue;
            }
            if backend.is_up() {
                return Some(backend);
            }
            fallback.get_or_insert(backend);
        }
        fallback
    }

    /// The backend up and not tried with the fewest connections in flight for its weight; of
    /// equals, the one at the `k`-th position of their weights, so that equally loaded backends
    /// (idle ones, say) share by weight as the round robin would. When none is up, the same among
    /// the down ones not tried: while every backend is down (until `rise` checks bring one
    /// back) the connections that give them a chance spread over them, not all on the first.
    fn least_conn(&self, k: usize, tried: &[SocketAddr]) -> Option<&Arc<Backend>> {
        self.least_loaded(k, tried, true).or_else(|| self.least_loaded(k, tried, false))
    }

    /// [`least_conn`](Self::least_conn) among the backends not tried that are up (`up`) or down.
    fn least_loaded(&self, k: usize, tried: &[SocketAddr], up: bool) -> Option<&Arc<Backend>> {
        let mut best: Option<&Arc<Backend>> = None;
        // The weights of the backends as light as the best so far.
        let mut ties = 0u64;
        let candidate = |b: &&Arc<Backend>| b.is_up() == up && !tried.contains(&b.addr);
        for backend in self.iter().filter(candidate) {
            let weight = u64::from(backend.weight());
            match best {
                Some(b) if backend.lighter_than(b) => (best, ties) = (Some(backend), weight),
                Some(b) if !b.lighter_than(backend) => ties += weight,
                Some(_) => {}
                None => (best, ties) = (Some(backend), weight),
            }
        }
        let best = best?;
        if ties == u64::from(best.weight()) {
            return Some(best);
        }
        // Loads may have moved since (other threads): then the first found stands.
        let mut position = k as u64 % ties;
        let equal = |b: &&Arc<Backend>| !b.lighter_than(best) && !best.lighter_than(b);
        for backend in self.iter().filter(candidate).filter(equal) {
            let weight = u64::from(backend.weight());
            if position < weight {
                return Some(backend);
            }
            position -= weight;
        }
        Some(best)
    }

    /// Two distinct backends drawn at random (by weight), the less loaded for its weight; of
    /// equals, the first drawn. `None` when neither is up and not tried.
    fn random_two(&self, draw: &mut Draw, tried: &[SocketAddr]) -> Option<&Arc<Backend>> {
        let (a, b) = match (&self.weighted, self.len) {
            (_, 1) => (0, 0),
            (None, n) => {
                let a = draw.below(n as u64) as usize;
                let b = draw.below(n as u64 - 1) as usize;
                (a, if b >= a { b + 1 } else { b })
            }
            (Some(weighted), n) => {
                let a = weighted.at(draw.below(weighted.total()));
                // Drawn again until another comes (a few times: a heavy backend is likely).
                let b = (0..8).map(|_| weighted.at(draw.below(weighted.total()))).find(|&b| b != a);
                (a, b.unwrap_or((a + 1) % n))
            }
        };
        let usable = |backend: &Arc<Backend>| backend.is_up() && !tried.contains(&backend.addr);
        let (a, b) = (self.get(a), self.get(b));
        match (usable(a), usable(b)) {
            (true, true) if b.lighter_than(a) => Some(b),
            (true, _) => Some(a),
            (false, true) => Some(b),
            (false, false) => None,
        }
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
    /// An empty pool, round robin.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pool that picks by `policy`.
    pub fn with_policy(policy: Policy) -> Self {
        let pool = Self::default();
        pool.set_policy(policy);
        pool
    }

    /// How backends are chosen.
    pub fn policy(&self) -> Policy {
        match self.policy.load(Relaxed) {
            1 => Policy::LeastConn,
            2 => Policy::RandomTwo,
            _ => Policy::RoundRobin,
        }
    }

    /// Picks from now on follow `policy` (a reload); the backends and their counts in flight
    /// stay as they are.
    pub fn set_policy(&self, policy: Policy) {
        let index = match policy {
            Policy::RoundRobin => 0,
            Policy::LeastConn => 1,
            Policy::RandomTwo => 2,
        };
        self.policy.store(index, Relaxed);
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
        self.update_weighted(adds.into_iter().map(|addr| (addr, 1)), removes)
    }

    /// As [`update`](Self::update), each backend added with its weight (1 to
    /// [`MAX_WEIGHT`](super::policy::MAX_WEIGHT)); one there already takes the weight given.
    pub fn update_weighted(
        &self,
        adds: impl IntoIterator<Item = (SocketAddr, u32)>,
        removes: impl IntoIterator<Item = SocketAddr>,
    ) -> (usize, usize) {
        // The lock makes this the only writer: the list loaded here is the one replaced.
        let mut guard = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let members = &mut *guard;
        let mut added = Vec::new();
        let mut reweighted = false;
        for (addr, weight) in adds {
            let weight = weight.clamp(1, super::policy::MAX_WEIGHT);
            match members.by_addr.get(&addr) {
                Some(existing) => {
                    existing.backend.mark_up();
                    let old = existing.backend.weight.swap(weight, Relaxed);
                    if old != weight {
                        reweighted = true;
                        members.weighted = members.weighted + usize::from(weight != 1) - usize::from(old != 1);
                    }
                }
                None => {
                    let backend = Arc::new(Backend::new(addr));
                    backend.weight.store(weight, Relaxed);
                    members.weighted += usize::from(weight != 1);
                    members.by_addr.insert(addr, Member { backend: Arc::clone(&backend), chunk: 0 });
                    added.push(backend);
                }
            }
        }
        // The chunks holding what goes (a backend added in this batch is in none yet).
        let mut touched = HashSet::new();
        for addr in removes {
            if let Some(member) = members.by_addr.remove(&addr) {
                members.weighted -= usize::from(member.backend.weight() != 1);
                if member.chunk != 0 {
                    touched.insert(member.chunk);
                }
            }
        }
        added.retain(|b| members.by_addr.contains_key(&b.addr));
        if added.is_empty() && touched.is_empty() && !reweighted {
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
        self.list.store(Arc::new(List::from_chunks(chunks, members.weighted > 0)));
        (count, removed)
    }

    /// Gives the backend at `addr` another weight (1 to [`MAX_WEIGHT`](super::policy::MAX_WEIGHT)),
    /// leaving its state as it is; returns whether it changed. Publishes a new list (the same
    /// chunks, the weighted order computed again).
    pub fn reweight(&self, addr: SocketAddr, weight: u32) -> bool {
        let weight = weight.clamp(1, super::policy::MAX_WEIGHT);
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(member) = members.by_addr.get(&addr) else { return false };
        let old = member.backend.weight.swap(weight, Relaxed);
        if old == weight {
            return false;
        }
        members.weighted = members.weighted + usize::from(weight != 1) - usize::from(old != 1);
        let chunks = self.list.load().chunks.clone();
        self.list.store(Arc::new(List::from_chunks(chunks, members.weighted > 0)));
        true
    }

    /// The backend at `addr`, if it is in the pool.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Backend>> {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.by_addr.get(&addr).map(|member| Arc::clone(&member.backend))
    }

    /// A backend for a new connection, by the pool's [`Policy`], among those up and not in
    /// `tried`; counted in flight until the lease is dropped. When every such backend is down, a
    /// down one not yet tried is given a chance rather than failing the connection outright,
    /// chosen by the policy too (the next in turn, or the least loaded with ties rotating).
    /// `draw` is the calling thread's generator (random-two draws from it).
    pub fn pick(&self, tried: &[SocketAddr], draw: &mut Draw) -> Option<Lease> {
        let list = self.list.load();
        if list.len == 0 {
            return None;
        }
        let backend = match self.policy() {
            Policy::RoundRobin => list.round_robin(self.next.fetch_add(1, Relaxed), tried),
            Policy::LeastConn => list.least_conn(self.next.fetch_add(1, Relaxed), tried),
            Policy::RandomTwo => match list.random_two(draw, tried) {
                Some(backend) => Some(backend),
                None => list.least_conn(self.next.fetch_add(1, Relaxed), tried),
            },
        };
        backend.map(Lease::new)
    }

    /// Every backend's counters.
    pub fn stats(&self) -> Vec<BackendStats> {
        self.snapshot().iter().map(|b| b.stats()).collect()
    }
}

#[cfg(test)]
mod tests;
