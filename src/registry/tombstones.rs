//! Ids of leases removed on purpose, remembered for a while so that no late message brings them
//! back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::timers::Timers;

/// A bounded set of ids, each forgotten `ttl` after it was added. When full, the oldest goes
/// first: the bound is the table's size, so one can only be pushed out by as many removals as
/// the table holds leases.
#[derive(Debug)]
pub(super) struct Tombstones {
    ttl: Duration,
    capacity: usize,
    /// Id to when it was forgotten (its key in `timers`).
    ids: HashMap<Uuid, Instant>,
    timers: Timers<Uuid>,
}

impl Tombstones {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Tombstones { ttl, capacity: capacity.max(1), ids: HashMap::new(), timers: Timers::new() }
    }

    /// Remembers `id` from `now` on.
    pub fn insert(&mut self, now: Instant, id: Uuid) {
        let until = now + self.ttl;
        if let Some(old) = self.ids.insert(id, until) {
            self.timers.remove(old, id);
        } else if self.ids.len() > self.capacity {
            if let Some((at, oldest)) = self.timers.first() {
                self.timers.remove(at, oldest);
                self.ids.remove(&oldest);
            }
        }
        self.timers.insert(until, id);
    }

    pub fn contains(&self, id: Uuid) -> bool {
        self.ids.contains_key(&id)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.timers.pop_due(now) {
            self.ids.remove(&id);
        }
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}
