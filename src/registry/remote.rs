//! Leases that come from peer brokers, and pages of the table for a peer that catches up.
//!
//! # The merge rule
//!
//! A remote lease arrives with its id, its source and the time it has *left* (so the hosts'
//! clocks need not agree; the lease here runs out that long after `now`, capped at this
//! broker's own TTL, so no peer can make a lease live longer than a local one would).
//! [`Registry::apply_remote`] then does the first of these that applies:
//!
//! 1. **The id, or one of its aliases, is tombstoned** (removed on purpose here or at a peer
//!    recently): ignored, so a late or reordered renewal cannot undo a removal, whichever of
//!    the lease's names it arrives under ([`Applied::Tombstoned`]).
//! 2. **The id is known**: the deadline becomes the later of the two; never earlier, so
//!    renewals may arrive in any order ([`Applied::Refreshed`] or [`Applied::Unchanged`]).
//! 3. **The same source holds another lease on the same instance** (it registered at two
//!    brokers before either heard of the other's lease): the two are one lease. The smaller id
//!    names it, the other stays valid as an alias (heartbeats and deregisters with either id
//!    work), and the deadline is the later one. Every broker picks the same id whatever order
//!    the two arrive in, so they converge without flapping ([`Applied::Merged`]).
//! 4. Otherwise the lease is **inserted** with its id, if the name and endpoint pass this
//!    broker's limits and the table has room ([`Applied::Inserted`] or [`Applied::Refused`]).
//!
//! Another source's lease on the same instance is not a conflict: leases of different sources
//! coexist, each with its own id, and the instance is listed once while any of them lives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{ChangeKind, Index, Metadata, Registry, RemoveReason, Source, check_endpoint};
use crate::protocol::{Check, Rejection};

/// A lease as it travels between brokers: everything but the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseView<'a> {
    /// The lease's id.
    pub id: Uuid,
    /// Its service.
    pub service: &'a str,
    /// Its endpoint.
    pub endpoint: SocketAddr,
    /// Who holds it.
    pub source: Source,
    /// How long it has left.
    pub ttl_left: Duration,
    /// Other ids it is known by (see the merge rule).
    pub aliases: &'a [Uuid],
    /// The health check its holder declared.
    pub check: Check<&'a str>,
    /// Its metadata as a block ([`Metadata::as_block`], empty: none), or `None` when the
    /// sender does not say (a peer too old to carry metadata): then the lease keeps what it has.
    pub meta: Option<&'a [u8]>,
}

/// What [`Registry::apply_remote`] did with a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A new lease.
    Inserted,
    /// A known lease now lasts longer.
    Refreshed,
    /// A known lease already lasted as long or longer.
    Unchanged,
    /// The same source's lease under another id: merged into one (rule 3).
    Merged,
    /// The id was removed on purpose recently; nothing changed.
    Tombstoned,
    /// The lease has no time left; nothing changed.
    Expired,
    /// The id names a lease on another instance here (ids collide, or a peer is broken);
    /// nothing changed.
    Conflict,
    /// The lease breaks this broker's limits, or the table is full.
    Refused(Rejection),
}

/// Where a walk through the table ([`Registry::page`]) goes on. Positions are slots, which a
/// lease keeps for its whole life: a lease that lives through the whole walk is visited exactly
/// once, and one added or removed meanwhile at most once (the live changes, sent meanwhile,
/// cover those).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cursor(pub u32);

impl Cursor {
    /// The start of the table.
    pub const START: Cursor = Cursor(0);
}

/// How many aliases a lease keeps at most: one per broker that gave the same source's
/// registration an id of its own is the most a sane cluster makes.
const MAX_ALIASES: usize = 8;

/// How many slots one [`Registry::page`] call looks at, at the most, so that a table with many
/// free slots cannot make one call long.
const SCAN_LIMIT: usize = 4096;

impl Registry {
    /// Takes a lease from a peer broker, by the merge rule of the [module docs](self).
    pub fn apply_remote(&mut self, now: Instant, lease: LeaseView<'_>) -> Applied {
        let lease = LeaseView { endpoint: super::canonical(lease.endpoint), ..lease };
        self.handle_timeout(now);
        // A lease known by an id removed on purpose here is that removal's, whichever of its
        // names it arrives under.
        if self.tombstones.contains(lease.id) || lease.aliases.iter().any(|&alias| self.tombstones.contains(alias)) {
            return Applied::Tombstoned;
        }
        let ttl = lease.ttl_left.min(self.config.ttl);
        if ttl.is_zero() {
            return Applied::Expired;
        }
        // A peer is held to the rules a client is: a check's path goes into a request line.
        if let Err(rejection) = lease.check.validate() {
            return Applied::Refused(rejection);
        }
        let deadline = now + ttl;
        // A block a peer cannot have built is taken as no word on metadata.
        let meta = lease.meta.and_then(|block| Metadata::from_block(block).ok());
        if let Some(index) = self.find_id(lease.id) {
            let known = self.lease(index);
            let service = self.service(known.service);
            if &*service.name != lease.service
                || service.members[known.position as usize].endpoint.get() != lease.endpoint
            {
                return Applied::Conflict;
            }
            self.adopt_aliases(index, lease.id, lease.aliases);
            let before = self.lease(index).deadline;
            // Only a newer renewal says what the lease declares now; a late one is stale.
            if self.ticks(deadline) > before {
                self.set_check(index, lease.check);
                if let Some(meta) = meta {
                    // Recorded with the renewal, for watchers here (peers are not sent it).
                    self.meta_changed = self.set_meta(index, meta);
                }
            }
            self.renew(index, deadline, true);
            return if self.lease(index).deadline > before { Applied::Refreshed } else { Applied::Unchanged };
        }
        if let Err(rejection) =
            self.config.limits.check_name(lease.service).and_then(|()| check_endpoint(lease.endpoint))
        {
            return Applied::Refused(rejection);
        }
        if let Some(index) = self.find_lease(lease.service, lease.endpoint, lease.source) {
            self.merge(index, lease.id);
            self.adopt_aliases(index, lease.id, lease.aliases);
            if self.ticks(deadline) > self.lease(index).deadline {
                self.set_check(index, lease.check);
                if let Some(meta) = meta {
                    self.meta_changed = self.set_meta(index, meta);
                }
            }
            self.renew(index, deadline, true);
            return Applied::Merged;
        }
        if let Err(rejection) = self.check_room() {
            return Applied::Refused(rejection);
        }
        let check = self.common_checks.share(lease.check, None);
        self.pending_meta = meta.filter(|meta| !meta.is_empty());
        let index = self.insert(lease.id, lease.service, lease.endpoint, lease.source, deadline, true, check);
        let since = self.ticks(now);
        self.lease_mut(index).since = since;
        self.adopt_aliases(index, lease.id, lease.aliases);
        Applied::Inserted
    }

    /// Registers `endpoint` for `service` under an id the caller chose, or renews the lease
    /// with that id: for instances imported from mDNS (`node::mdns`), whose id every broker
    /// that imports them derives alike, so that their leases are one lease. Declares no check;
    /// `meta` (the instance's TXT record) replaces the lease's metadata, as a local register's does;
    /// `None` says nothing of it (a renewal: the lease keeps its pairs, a new one has none).
    /// A tombstoned id ([`Registry::is_tombstoned`]) is refused ([`Applied::Tombstoned`]): peers
    /// would refuse it. When `source` holds a lease on the instance under another id already,
    /// that lease is renewed and takes `id` as an alias ([`Applied::Merged`]) rather than a second
    /// lease being made. Otherwise returns [`Applied::Inserted`], [`Applied::Refreshed`],
    /// [`Applied::Conflict`] (the id names another instance) or [`Applied::Refused`].
    pub fn register_with_id(
        &mut self,
        now: Instant,
        id: Uuid,
        service: &str,
        endpoint: SocketAddr,
        source: Source,
        meta: Option<Metadata>,
    ) -> Applied {
        let endpoint = super::canonical(endpoint);
        if let Err(rejection) = self.config.limits.check_name(service).and_then(|()| check_endpoint(endpoint)) {
            return Applied::Refused(rejection);
        }
        self.handle_timeout(now);
        if let Some(index) = self.find_id(id) {
            let known = self.lease(index);
            let entry = self.service(known.service);
            if &*entry.name != service || entry.members[known.position as usize].endpoint.get() != endpoint {
                return Applied::Conflict;
            }
            self.meta_changed = meta.is_some_and(|meta| self.set_meta(index, meta));
            self.renew(index, now + self.config.ttl, false);
            self.meta_changed = false;
            return Applied::Refreshed;
        }
        // Removed on purpose: peers would refuse it (and bounce it back as a removal).
        if self.tombstones.contains(id) {
            return Applied::Tombstoned;
        }
        // The same source's lease under another id (a restarted broker picking generation 0
        // while its peers hold generation 1): renewed and merged into one, as peers do (rule 3).
        if let Some(index) = self.find_lease(service, endpoint, source) {
            self.merge(index, id);
            self.meta_changed = meta.is_some_and(|meta| self.set_meta(index, meta));
            self.renew(index, now + self.config.ttl, false);
            self.meta_changed = false;
            return Applied::Merged;
        }
        let ip = source.ip();
        if let Err(rejection) = self
            .check_room()
            .and_then(|()| self.config.limits.admit(self.lease_count, self.source_count(ip), self.network_count(ip)))
        {
            return Applied::Refused(rejection);
        }
        let check = self.common_checks.share(Check::None, None);
        self.insert_with_meta(id, service, endpoint, source, now + self.config.ttl, check, meta);
        Applied::Inserted
    }

    /// Takes a removal from a peer broker: the lease goes (with its aliases), and its id is
    /// tombstoned even when this broker has not heard of it yet, so that the registration,
    /// should it arrive after the removal, is refused. Returns whether a lease went.
    pub fn apply_remote_removal(&mut self, now: Instant, id: Uuid, reason: RemoveReason) -> bool {
        self.handle_timeout(now);
        match self.find_id(id) {
            Some(index) => {
                self.remove(now, index, ChangeKind::Removed(reason), true);
                true
            }
            None => {
                self.tombstones.insert(now, id);
                false
            }
        }
    }

    /// Walks the table from `cursor`, handing each live lease to `take` until it returns false
    /// (the page is full; that lease is not taken and comes first next time). Returns where to
    /// go on, or `None` when the walk has reached the end of the table. Looks at a bounded
    /// number of slots per call, so a page may be short (even empty) and still not the last.
    pub fn page(
        &mut self,
        now: Instant,
        cursor: Cursor,
        mut take: impl FnMut(LeaseView<'_>) -> bool,
    ) -> Option<Cursor> {
        self.handle_timeout(now);
        let start = cursor.0 as usize;
        let end = self.lease_slots.min(start.saturating_add(SCAN_LIMIT));
        for slot in start..end {
            let Some(lease) = self.leases.get(slot) else { continue };
            let service = self.service(lease.service);
            let view = LeaseView {
                id: lease.id,
                service: &service.name,
                endpoint: service.members[lease.position as usize].endpoint.get(),
                source: lease.source,
                ttl_left: self.instant(lease.deadline).saturating_duration_since(now),
                aliases: self.index.aliases(super::index_of(slot)),
                check: lease.check.as_deref(),
                meta: Some(self.meta.get(&super::index_of(slot)).map_or(&[][..], Metadata::as_block)),
            };
            if !take(view) {
                return Some(Cursor(super::index_of(slot)));
            }
        }
        (end < self.lease_slots).then(|| Cursor(super::index_of(end)))
    }

    /// The lease with this id (or alias) as a peer would be sent it.
    pub fn view(&self, now: Instant, id: Uuid) -> Option<LeaseView<'_>> {
        let index = self.find_id(id)?;
        let lease = self.lease(index);
        let service = self.service(lease.service);
        Some(LeaseView {
            id: lease.id,
            service: &service.name,
            endpoint: service.members[lease.position as usize].endpoint.get(),
            source: lease.source,
            ttl_left: self.instant(lease.deadline).saturating_duration_since(now),
            aliases: self.index.aliases(index),
            check: lease.check.as_deref(),
            meta: Some(self.meta.get(&index).map_or(&[][..], Metadata::as_block)),
        })
        .filter(|view| !view.ttl_left.is_zero())
    }

    /// Where the lease with this id (or alias) is kept: its slot, which it keeps for its whole
    /// life (replication names leases by it, see `node::replicate::slots`).
    pub fn slot_of(&self, id: Uuid) -> Option<Cursor> {
        self.find_id(id).map(Cursor)
    }

    /// The lease kept at `slot`, as a peer would be sent it.
    pub fn view_at(&self, now: Instant, slot: Cursor) -> Option<LeaseView<'_>> {
        let lease = self.leases.get(slot.0 as usize)?;
        self.view(now, lease.id)
    }

    /// Which lease is kept at `slot`: a number the lease got when it was put there and keeps
    /// for its whole life, which the next lease in that slot does not share (numbers repeat
    /// only after 2^32 leases), never 0. With the slot, it names one lease exactly, whatever
    /// the ids are (see `node::replicate::slots`). `None` when the slot is free.
    pub fn generation_at(&self, slot: Cursor) -> Option<u32> {
        self.leases.get(slot.0 as usize).map(|lease| lease.generation)
    }

    /// A peer's renewal of the lease kept at `slot`, if it is still the lease of `generation`
    /// ([`generation_at`](Self::generation_at); the slot may hold another lease by now): it
    /// gets the later of its deadline and `ttl_left` from now (at most the TTL), as
    /// [`apply_remote`](Self::apply_remote) would give it. Returns whether the lease was there.
    pub fn renew_at(&mut self, now: Instant, slot: Cursor, generation: u32, ttl_left: Duration) -> bool {
        self.handle_timeout(now);
        if self.generation_at(slot) != Some(generation) {
            return false;
        }
        let ttl = ttl_left.min(self.config.ttl);
        if !ttl.is_zero() {
            self.renew(slot.0, now + ttl, true);
        }
        true
    }

    /// Makes `other` a name of the lease at `index` too; the smaller of the two ids becomes the
    /// lease's id, the other an alias.
    fn merge(&mut self, index: Index, other: Uuid) {
        if self.index.aliases(index).len() >= MAX_ALIASES {
            return;
        }
        let id = self.lease(index).id;
        if other < id {
            // The id table finds a lease by its id's hash: out under the old id, in under the new.
            self.index.remove_id(id, index);
            self.lease_mut(index).id = other;
            self.index.insert_id(&self.leases, index);
            self.index.add_alias(index, id);
        } else {
            self.index.add_alias(index, other);
        }
    }

    /// Takes the aliases a peer knows for a lease (those not known here and not tombstoned).
    fn adopt_aliases(&mut self, index: Index, id: Uuid, aliases: &[Uuid]) {
        for &alias in aliases {
            if alias != id && self.find_id(alias).is_none() && !self.tombstones.contains(alias) {
                self.merge(index, alias);
            }
        }
    }
}
