//! The two lookups every request makes: a lease by its id, an instance by (service, endpoint).
//!
//! Each is a [`hashbrown::HashTable`] of 4-byte lease numbers whose hashes are computed from
//! the leases themselves (the id; the service and the member's endpoint), so a table costs 5
//! bytes a slot (the number and a control byte), about 6–11 bytes a lease with the table's
//! free slots, where a `HashMap<Uuid, u32>` kept the 16-byte key beside the value (21 bytes a
//! slot) and a `HashMap<(u32, SocketAddr), u32>` 41. The hasher is std's [`RandomState`], the
//! one `HashMap` uses, so that ids and endpoints sent by others cannot be chosen to collide.
//!
//! Aliases (the other ids of a lease two brokers merged, see [`remote`](super::remote)) are
//! rare, so they live in a side map instead of in every lease.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;
use uuid::Uuid;

use super::members::Endpoint;
use super::{Index, Lease, Service};

/// See the [module documentation](self).
#[derive(Default)]
pub(super) struct Indexes {
    hasher: RandomState,
    /// Every lease, by its id.
    ids: HashTable<Index>,
    /// Every instance: the number of its first lease, by (service, endpoint).
    instances: HashTable<Index>,
    /// Every alias to its lease.
    alias_ids: HashMap<Uuid, Index>,
    /// The aliases of the leases that have some.
    aliases: HashMap<Index, Vec<Uuid>>,
}

fn lease(leases: &Slab<Lease>, index: Index) -> &Lease {
    leases.get(index as usize).unwrap_or_else(|| unreachable!("indexes point at live leases"))
}

fn endpoint_of(leases: &Slab<Lease>, services: &Slab<Service>, head: Index) -> (Index, Endpoint) {
    let lease = lease(leases, head);
    let service = services.get(lease.service as usize).unwrap_or_else(|| unreachable!("live services"));
    (lease.service, service.members[lease.position as usize].endpoint)
}

impl Indexes {
    fn id_hash(&self, id: Uuid) -> u64 {
        self.hasher.hash_one(id.as_u128())
    }

    fn instance_hash(&self, service: Index, endpoint: Endpoint) -> u64 {
        self.hasher.hash_one((service, endpoint))
    }

    /// The lease with this id or alias.
    pub(super) fn lease(&self, leases: &Slab<Lease>, id: Uuid) -> Option<Index> {
        let found = self.ids.find(self.id_hash(id), |&index| lease(leases, index).id == id);
        found.copied().or_else(|| self.alias_ids.get(&id).copied())
    }

    /// Indexes the lease at `index` by its id (it is in `leases` already).
    pub(super) fn insert_id(&mut self, leases: &Slab<Lease>, index: Index) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(lease(leases, index).id.as_u128());
        self.ids.insert_unique(hash, index, |&other| hasher.hash_one(lease(leases, other).id.as_u128()));
    }

    /// Forgets the lease at `index`, known by `id`, under that id (not its aliases).
    pub(super) fn remove_id(&mut self, id: Uuid, index: Index) {
        if let Ok(entry) = self.ids.find_entry(self.id_hash(id), |&other| other == index) {
            entry.remove();
        }
    }

    /// The aliases of the lease at `index`.
    pub(super) fn aliases(&self, index: Index) -> &[Uuid] {
        self.aliases.get(&index).map_or(&[], Vec::as_slice)
    }

    /// Adds an alias to the lease at `index`.
    pub(super) fn add_alias(&mut self, index: Index, alias: Uuid) {
        self.aliases.entry(index).or_default().push(alias);
        self.alias_ids.insert(alias, index);
    }

    /// Forgets the aliases of the lease at `index`, returning them.
    pub(super) fn take_aliases(&mut self, index: Index) -> Vec<Uuid> {
        let aliases = self.aliases.remove(&index).unwrap_or_default();
        for alias in &aliases {
            self.alias_ids.remove(alias);
        }
        aliases
    }

    /// The first lease on the instance (service, endpoint).
    pub(super) fn head(
        &self,
        leases: &Slab<Lease>,
        services: &Slab<Service>,
        service: Index,
        endpoint: Endpoint,
    ) -> Option<Index> {
        let hash = self.instance_hash(service, endpoint);
        self.instances.find(hash, |&head| endpoint_of(leases, services, head) == (service, endpoint)).copied()
    }

    /// Indexes a new instance by its first lease (in `leases`, its member in `services`).
    pub(super) fn insert_instance(&mut self, leases: &Slab<Lease>, services: &Slab<Service>, head: Index) {
        let hasher = &self.hasher;
        let hash_of = |head: Index| hasher.hash_one(endpoint_of(leases, services, head));
        self.instances.insert_unique(hash_of(head), head, |&other| hash_of(other));
    }

    /// The instance (service, endpoint) has another first lease.
    pub(super) fn move_head(&mut self, service: Index, endpoint: Endpoint, from: Index, to: Index) {
        if let Some(head) = self.instances.find_mut(self.instance_hash(service, endpoint), |&head| head == from) {
            *head = to;
        }
    }

    /// Forgets the instance (service, endpoint), whose first lease is `head`.
    pub(super) fn remove_instance(&mut self, service: Index, endpoint: Endpoint, head: Index) {
        if let Ok(entry) = self.instances.find_entry(self.instance_hash(service, endpoint), |&other| other == head) {
            entry.remove();
        }
    }
}
