//! When leases run out: a min-heap of (deadline, lease, generation) entries, 16 bytes each,
//! where a renewal moves nothing.
//!
//! A lease's entry may be *early*: a renewal only moves the lease's deadline, and the entry is
//! moved when it reaches the front and is found early (once per TTL for a lease that is renewed
//! every third of it, where an ordered index moved it at every renewal). A removed lease
//! leaves its entry behind, an *orphan*: the generation (a number every new lease gets, kept in
//! the lease) tells it from the entry of a newer lease in the same slot, and it is dropped when
//! it reaches the front (within a TTL). The registry settles the front after every change
//! ([`Registry::settle_expiry`]): then the front is exact, no entry is later than its lease's
//! deadline, and so the front's deadline is the earliest of all, to the nanosecond, as the
//! ordered index it replaces (a `BTreeSet<(Instant, u32)>`, about 44 bytes a lease with its
//! nodes' free room) gave it. Ties expire in lease order, as before.
//!
//! Orphans are counted: when they outnumber the live leases (by more than [`SLACK`]), as many
//! removals with a long TTL can make them, the heap is rebuilt with the live entries only, so
//! it never holds more than about twice the leases (amortized O(1) a removal).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::{Index, Registry, Ticks};

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub(super) struct Expiry {
    heap: BinaryHeap<Reverse<(Ticks, Index, u32)>>,
    next_generation: u32,
    /// Entries of removed leases still in the heap.
    orphans: usize,
    /// No lease runs out before this instant (the front's deadline when the registry last
    /// looked, cleared by every [`push`](Self::push), the only way an earlier one can come): a
    /// query's expiry check is one comparison, not a conversion of `now` to ticks and a look
    /// at the heap (about 110 instructions of a binary query's 1,750).
    quiet_until: Option<Instant>,
}

/// How many orphans more than live leases the heap holds before it is rebuilt.
const SLACK: usize = 1024;

impl Expiry {
    /// A generation for a new lease; never 0 (replication's slot maps take 0 for nothing).
    pub(super) fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        self.next_generation
    }

    /// Adds an entry.
    pub(super) fn push(&mut self, deadline: Ticks, lease: Index, generation: u32) {
        self.quiet_until = None;
        self.heap.push(Reverse((deadline, lease, generation)));
    }

    /// Whether no lease can run out by `now` (see `quiet_until`).
    pub(super) fn quiet_at(&self, now: Instant) -> bool {
        self.quiet_until.is_some_and(|until| now < until)
    }

    /// No lease runs out before `until` (`None`: unknown, or no lease).
    pub(super) fn set_quiet_until(&mut self, until: Option<Instant>) {
        self.quiet_until = until;
    }

    /// The earliest entry (exact once settled).
    pub(super) fn front(&self) -> Option<(Ticks, Index, u32)> {
        self.heap.peek().map(|entry| entry.0)
    }

    fn pop(&mut self) {
        self.heap.pop();
    }

    /// A lease was removed: its entry is an orphan now.
    pub(super) fn orphaned(&mut self) {
        self.orphans += 1;
    }

    /// How many entries of removed leases the heap holds.
    #[cfg(test)]
    pub(super) fn orphans(&self) -> usize {
        self.orphans
    }
}

impl Registry {
    /// Drops orphans from the front of the expiry heap and moves early entries to their
    /// leases' deadlines, until the front is a lease's own entry at its deadline.
    pub(super) fn settle_expiry(&mut self) {
        while let Some((at, index, generation)) = self.expiry.front() {
            match self.leases.get(index as usize) {
                Some(lease) if lease.generation == generation => {
                    if lease.deadline <= at {
                        return;
                    }
                    let deadline = lease.deadline;
                    self.expiry.pop();
                    self.expiry.push(deadline, index, generation);
                }
                _ => {
                    self.expiry.pop();
                    self.expiry.orphans = self.expiry.orphans.saturating_sub(1);
                }
            }
        }
    }

    /// Rebuilds the heap without its orphans when they outnumber the live leases.
    pub(super) fn compact_expiry(&mut self) {
        if self.expiry.orphans <= self.lease_count + SLACK {
            return;
        }
        let leases = &self.leases;
        self.expiry.heap.retain(|Reverse((_, index, generation))| {
            leases.get(*index as usize).is_some_and(|lease| lease.generation == *generation)
        });
        self.expiry.orphans = 0;
    }

    /// The lease that runs out first, with its deadline (the heap must be settled).
    pub(super) fn first_expiry(&self) -> Option<(Ticks, Index)> {
        self.expiry.front().map(|(at, index, _)| (at, index))
    }
}
