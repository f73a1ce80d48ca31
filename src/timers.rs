//! An ordered set of deadlines, the timer structure the state machines here use.
//!
//! The registry's tombstones, the prober's deadlines and the replicator's peer timers all need
//! the same three things: add a deadline for a key, take it away again, and pop whatever is due
//! by `now`. A `BTreeSet<(Instant, K)>` does all three in O(log n), and its first element is
//! the next wake-up (see quinn-proto's timer table and mini-redis's expiry index for the same
//! idea). The registry's leases, the most numerous and renewed all the time, have a lazier
//! heap of their own (`registry::expiry`), which a renewal does not touch.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use makler::timers::Timers;
//!
//! let t0 = Instant::now();
//! let mut timers = Timers::new();
//! timers.insert(t0 + Duration::from_secs(2), 'b');
//! timers.insert(t0 + Duration::from_secs(1), 'a');
//! assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
//! assert_eq!(timers.pop_due(t0 + Duration::from_secs(1)), Some('a'));
//! assert_eq!(timers.pop_due(t0 + Duration::from_secs(1)), None);
//! ```

use std::collections::BTreeSet;
use std::time::Instant;

/// Keys ordered by deadline. A key may hold several deadlines; callers that want one per key
/// remove the old one first (they know it).
#[derive(Debug, Clone)]
pub struct Timers<K> {
    set: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Timers { set: BTreeSet::new() }
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// No deadlines.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a deadline for `key`.
    pub fn insert(&mut self, at: Instant, key: K) {
        self.set.insert((at, key));
    }

    /// Removes the deadline `at` of `key`; returns whether it was there.
    pub fn remove(&mut self, at: Instant, key: K) -> bool {
        self.set.remove(&(at, key))
    }

    /// Moves `key`'s deadline from `from` to `to`.
    pub fn reschedule(&mut self, from: Instant, to: Instant, key: K) {
        self.set.remove(&(from, key));
        self.set.insert((to, key));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _)| at)
    }

    /// The earliest deadline with its key.
    pub fn first(&self) -> Option<(Instant, K)> {
        self.set.first().copied()
    }

    /// Removes and returns the key of the earliest deadline if it is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        match self.set.first() {
            Some(&(at, _)) if at <= now => self.set.pop_first().map(|(_, key)| key),
            _ => None,
        }
    }

    /// How many deadlines are set.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn due_keys_come_out_in_deadline_order_and_ties_by_key() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        for (ms, key) in [(30, 3), (10, 2), (10, 1), (20, 4)] {
            timers.insert(t0 + Duration::from_millis(ms), key);
        }
        timers.reschedule(t0 + Duration::from_millis(20), t0 + Duration::from_millis(40), 4);
        assert!(!timers.remove(t0, 9));
        let due: Vec<_> = std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_millis(35))).collect();
        assert_eq!(due, [1, 2, 3]);
        assert_eq!(timers.first(), Some((t0 + Duration::from_millis(40), 4)));
        assert_eq!(timers.len(), 1);
    }
}
