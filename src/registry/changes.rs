//! The change log: every change to the table, in order, numbered, for whoever follows it (the
//! node hands each to replication, watches and the log).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use super::{RemoveReason, Source};

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new lease.
    Registered,
    /// A register or heartbeat renewed a lease (or a peer's renewal extended it).
    Refreshed,
    /// A lease's TTL ran out.
    Expired,
    /// A lease was removed before its TTL ran out, for this reason.
    Removed(RemoveReason),
}

/// One change to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The change's number: one more than the previous change's. A consumer that sees a jump
    /// missed changes (the log dropped them; see [`Registry::changes_dropped`]).
    ///
    /// [`Registry::changes_dropped`]: super::Registry::changes_dropped
    pub seq: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// The lease's id.
    pub id: Uuid,
    /// The lease's service.
    pub service: Arc<str>,
    /// The lease's endpoint.
    pub endpoint: SocketAddr,
    /// Who holds the lease.
    pub source: Source,
    /// When the lease runs out (for removals: when it would have).
    pub deadline: Instant,
    /// The change came from a peer broker ([`Registry::apply_remote`]), not from a request to
    /// this one.
    ///
    /// [`Registry::apply_remote`]: super::Registry::apply_remote
    pub by_peer: bool,
    /// The instance (service, endpoint) appeared with this change (for `Registered`) or
    /// disappeared with it (for `Expired` and `Removed`): what a balancer or a watcher cares
    /// about. False when other leases held the instance already or still do.
    pub instance_changed: bool,
    /// For removals: the other ids the lease was known by, which are gone with it.
    pub aliases: Vec<Uuid>,
    /// The health check the instance declares after this change: the strongest any of its
    /// live leases declares (an HTTP check, then a TCP connect, then none), so that leases of
    /// two sources declaring different checks do not make it flip with each renewal. For a
    /// removal that took the instance away, the removed lease's.
    pub check: super::SharedCheck,
    /// A refresh that changed the lease's metadata (see [`crate::meta`]): peers must be sent
    /// the lease whole, not only its new deadline.
    pub meta_changed: bool,
}

/// A bounded queue of changes that numbers them.
#[derive(Debug)]
pub(super) struct ChangeLog {
    queue: VecDeque<Change>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
}

impl ChangeLog {
    pub fn new(capacity: usize) -> Self {
        ChangeLog { queue: VecDeque::new(), capacity: capacity.max(1), next_seq: 1, dropped: 0 }
    }

    /// Numbers `change` and queues it, dropping the oldest when the log is full.
    pub fn push(&mut self, mut change: Change) {
        change.seq = self.next_seq;
        self.next_seq += 1;
        if self.queue.len() >= self.capacity {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(change);
    }

    pub fn pop(&mut self) -> Option<Change> {
        self.queue.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}
