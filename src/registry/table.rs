//! The table's internals: leases, their instances and services, and the indexes over them.
//! Every change goes through here, so every change is recorded in the change log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::members::{Endpoint, TextBlock};
use super::{Change, ChangeKind, Index, Lease, Member, NONE, Registry, Service, Source, Ticks, index_of, saturate};
use crate::protocol::{Check, Rejection};

impl Registry {
    /// `at` as [`Ticks`] (the epoch is set by the first `handle_timeout`, which every call that
    /// adds a lease makes first).
    pub(super) fn ticks(&self, at: Instant) -> Ticks {
        let epoch = self.epoch.unwrap_or(at);
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match at.checked_duration_since(epoch) {
            Some(after) => nanos(after),
            None => -nanos(epoch.duration_since(at)),
        }
    }

    /// The instant `ticks` stands for.
    pub(super) fn instant(&self, ticks: Ticks) -> Instant {
        let epoch = self.epoch.unwrap_or_else(|| unreachable!("a lease's time is after the epoch is set"));
        let span = Duration::from_nanos(ticks.unsigned_abs());
        if ticks >= 0 { epoch + span } else { epoch - span }
    }

    /// The lease with this id or alias.
    pub(super) fn find_id(&self, id: Uuid) -> Option<Index> {
        self.index.lease(&self.leases, id)
    }

    pub(super) fn lease(&self, index: Index) -> &Lease {
        self.leases.get(index as usize).unwrap_or_else(|| unreachable!("indexes point at live leases"))
    }

    pub(super) fn lease_mut(&mut self, index: Index) -> &mut Lease {
        self.leases.get_mut(index as usize).unwrap_or_else(|| unreachable!("indexes point at live leases"))
    }

    pub(super) fn service(&self, index: Index) -> &Service {
        self.services.get(index as usize).unwrap_or_else(|| unreachable!("indexes point at live services"))
    }

    pub(super) fn service_mut(&mut self, index: Index) -> &mut Service {
        self.services.get_mut(index as usize).unwrap_or_else(|| unreachable!("indexes point at live services"))
    }

    pub(super) fn check_room(&self) -> Result<(), Rejection> {
        if self.lease_count >= self.config.limits.max_instances {
            return Err(Rejection::Full { max: saturate(self.config.limits.max_instances) });
        }
        Ok(())
    }

    /// The first lease on an instance.
    pub(super) fn head_lease(&self, service: &str, endpoint: SocketAddr) -> Option<Index> {
        let service_index = self.by_name.get(&self.services, service)?;
        self.index.head(&self.leases, &self.services, service_index, Endpoint::new(endpoint))
    }

    /// The lease `source` holds on an instance.
    pub(super) fn find_lease(&self, service: &str, endpoint: SocketAddr, source: Source) -> Option<Index> {
        let mut lease = self.head_lease(service, endpoint)?;
        while lease != NONE {
            let entry = self.lease(lease);
            if entry.source == source {
                return Some(lease);
            }
            lease = entry.next;
        }
        None
    }

    /// Adds a lease (the caller checked that there is room and that the id is new).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert(
        &mut self,
        id: Uuid,
        service: &str,
        endpoint: SocketAddr,
        source: Source,
        deadline: Instant,
        by_peer: bool,
        check: super::SharedCheck,
    ) -> Index {
        let service_index = match self.by_name.get(&self.services, service) {
            Some(index) => index,
            None => self.add_service(service),
        };
        let packed = Endpoint::new(endpoint);
        // The key the lease will be inserted at, once its place on its instance is known.
        let index = index_of(self.leases.vacant_key());
        let (position, next, new_instance) = match self.index.head(&self.leases, &self.services, service_index, packed)
        {
            Some(head) => {
                let position = self.lease(head).position;
                self.service_mut(service_index).members[position as usize].head = index;
                self.index.move_head(service_index, packed, head, index);
                (position, head, false)
            }
            None => {
                let entry = self.service_mut(service_index);
                let position = index_of(entry.members.len());
                entry.members.push(Member { endpoint: packed, head: index });
                entry.text.push(endpoint);
                if let Some(binary) = &mut entry.binary {
                    binary.push(endpoint);
                }
                self.instance_count += 1;
                (position, NONE, true)
            }
        };
        // A local lease is inserted when it is registered, a full TTL before its deadline; a
        // peer's lease gets its arrival time from `apply_remote`.
        let since = deadline.checked_sub(self.config.ttl).unwrap_or(deadline);
        let (deadline_ticks, since) = (self.ticks(deadline), self.ticks(since));
        let generation = self.expiry.generation();
        let key = self.leases.insert(Lease {
            id,
            deadline: deadline_ticks,
            since,
            service: service_index,
            position,
            next,
            generation,
            source,
            check,
        });
        debug_assert_eq!(key, index as usize);
        if let Some(meta) = self.pending_meta.take() {
            self.meta.insert(index, meta);
        }
        if new_instance {
            self.index.insert_instance(&self.leases, &self.services, index);
        }
        self.lease_slots = self.lease_slots.max(key + 1);
        self.digest.insert(super::digest::element_hash(service, endpoint, source), index);
        self.index.insert_id(&self.leases, index);
        self.expiry.push(deadline_ticks, index, generation);
        *self.per_source.entry(source.ip()).or_insert(0) += 1;
        *self.per_network.entry(super::network(source.ip())).or_insert(0) += 1;
        self.lease_count += 1;
        self.record(ChangeKind::Registered, index, by_peer, new_instance, Vec::new());
        index
    }

    /// Moves a lease's deadline to `deadline` unless it is later already; returns its id.
    /// Local renewals are always recorded (a heartbeat is news to peers even when a peer's
    /// renewal got here first), a peer's only when they extend the lease.
    pub(super) fn renew(&mut self, index: Index, deadline: Instant, by_peer: bool) -> Uuid {
        let ticks = self.ticks(deadline);
        let lease = self.lease_mut(index);
        let (old, id) = (lease.deadline, lease.id);
        if ticks > old {
            // Its expiry entry stays where it is, early, until it reaches the front.
            lease.deadline = ticks;
            self.settle_expiry();
        } else if by_peer {
            return id;
        }
        self.record(ChangeKind::Refreshed, index, by_peer, false, Vec::new());
        id
    }

    /// Takes a lease out, with its instance when it was the last lease on it, and its service
    /// when that was the last instance.
    pub(super) fn remove(&mut self, now: Instant, index: Index, kind: ChangeKind, by_peer: bool) {
        self.digest.remove(self.element_hash_of(index), index);
        let lease =
            self.leases.try_remove(index as usize).unwrap_or_else(|| unreachable!("indexes point at live leases"));
        self.index.remove_id(lease.id, index);
        let aliases = self.index.take_aliases(index);
        if !self.meta.is_empty() {
            self.meta.remove(&index);
        }
        let deadline = self.instant(lease.deadline);
        // Its expiry entry is left behind, and dropped when it reaches the front.
        self.expiry.orphaned();
        self.settle_expiry();
        self.compact_expiry();
        if let Some(count) = self.per_source.get_mut(&lease.source.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&lease.source.ip());
            }
        }
        let network = super::network(lease.source.ip());
        if let Some(count) = self.per_network.get_mut(&network) {
            *count -= 1;
            if *count == 0 {
                self.per_network.remove(&network);
            }
        }
        self.lease_count -= 1;

        // Unlink it from its instance's list.
        let position = lease.position as usize;
        let head = self.service(lease.service).members[position].head;
        let packed = self.service(lease.service).members[position].endpoint;
        if head == index {
            self.service_mut(lease.service).members[position].head = lease.next;
            if lease.next != NONE {
                self.index.move_head(lease.service, packed, index, lease.next);
            }
        } else {
            let mut previous = head;
            while self.lease(previous).next != index {
                previous = self.lease(previous).next;
            }
            self.lease_mut(previous).next = lease.next;
        }
        let endpoint = packed.get();
        let remaining = self.service(lease.service).members[position].head;
        let instance_gone = remaining == NONE;
        // What the instance declares now: the other leases' check, or (gone) the lease's own.
        let check = if instance_gone { lease.check } else { self.instance_check(remaining) };
        if instance_gone {
            self.instance_count -= 1;
            self.index.remove_instance(lease.service, packed, index);
            let service = self.service_mut(lease.service);
            service.members.swap_remove(position);
            service.text.swap_remove(position);
            if let Some(binary) = &mut service.binary {
                binary.swap_remove(position);
            }
            if let Some(moved) = service.members.get(position) {
                let mut moved_lease = moved.head;
                while moved_lease != NONE {
                    let entry = self.lease_mut(moved_lease);
                    entry.position = lease.position;
                    moved_lease = entry.next;
                }
            }
        }
        let name = Arc::clone(&self.service(lease.service).name);
        if self.service(lease.service).members.is_empty() {
            self.by_name.remove(&name, lease.service);
            self.services.remove(lease.service as usize);
        }
        if let ChangeKind::Removed(_) = kind {
            self.tombstones.insert(now, lease.id);
            for &alias in &aliases {
                self.tombstones.insert(now, alias);
            }
        }
        self.changes.push(Change {
            seq: 0,
            kind,
            id: lease.id,
            service: name,
            endpoint,
            source: lease.source,
            deadline,
            by_peer,
            instance_changed: instance_gone,
            aliases,
            check,
            meta_changed: false,
        });
    }

    /// The check an instance declares, from the first of its leases (`head`): the strongest
    /// any of them declares (an HTTP check, then a TCP connect, then none), so that two sources
    /// declaring different checks on one instance do not make it flip with each renewal.
    pub(super) fn instance_check(&self, head: Index) -> super::SharedCheck {
        let mut best = None::<&super::SharedCheck>;
        let mut at = head;
        while at != NONE {
            let lease = self.lease(at);
            let rank = |check: &Check<Box<str>>| match check {
                Check::Http(_) => 2,
                Check::Tcp => 1,
                Check::None => 0,
            };
            if best.is_none_or(|best| rank(&lease.check) > rank(best)) {
                best = Some(&lease.check);
            }
            at = lease.next;
        }
        best.map_or_else(|| Arc::clone(&self.common_checks.none), Arc::clone)
    }

    pub(super) fn record(
        &mut self,
        kind: ChangeKind,
        index: Index,
        by_peer: bool,
        instance_changed: bool,
        aliases: Vec<Uuid>,
    ) {
        let lease = self.lease(index);
        let service = self.service(lease.service);
        let member = &service.members[lease.position as usize];
        let check = self.instance_check(member.head);
        let change = Change {
            seq: 0,
            kind,
            id: lease.id,
            service: Arc::clone(&service.name),
            endpoint: service.members[lease.position as usize].endpoint.get(),
            source: lease.source,
            deadline: self.instant(lease.deadline),
            by_peer,
            instance_changed,
            aliases,
            check,
            meta_changed: std::mem::take(&mut self.meta_changed),
        };
        self.changes.push(change);
    }

    pub(super) fn add_service(&mut self, name: &str) -> Index {
        let service =
            Service { name: Arc::from(name), members: Vec::new(), text: TextBlock::default(), binary: None, cursor: 0 };
        let key = self.services.insert(service);
        self.service_slots = self.service_slots.max(key + 1);
        let index = index_of(key);
        self.by_name.insert(&self.services, index);
        index
    }
}
