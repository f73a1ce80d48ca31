//! Metadata in the table ([`crate::meta`]): a side map by lease, as aliases are kept, so that a
//! lease without metadata costs nothing more. A local register with pairs replaces the lease's
//! (the last register wins); a peer's copy does so only when it lasts longer than the lease
//! here (see [`remote`](super::remote)). An instance shows the metadata of its lease with the
//! smallest id that carries some, the same on every broker.

use std::net::SocketAddr;
use std::time::Instant;

use uuid::Uuid;

use super::{Index, Metadata, NONE, Registration, Registry, SharedCheck, Source, canonical};
use crate::protocol::{Check, Rejection};

impl Registry {
    /// [`Registry::register_checked`] with the lease's metadata. A refresh replaces the
    /// metadata with this (none: the lease carries none any more): the last register of the
    /// source that holds the lease wins.
    pub fn register_meta(
        &mut self,
        now: Instant,
        service: &str,
        endpoint: SocketAddr,
        source: Source,
        check: Check<&str>,
        meta: Metadata,
    ) -> Result<Registration, Rejection> {
        self.register_with(now, service, endpoint, source, check, Some(meta))
    }

    /// Adds a local lease with its metadata: set before the change is recorded, so that
    /// whoever follows the change log sees it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_with_meta(
        &mut self,
        id: Uuid,
        service: &str,
        endpoint: SocketAddr,
        source: Source,
        deadline: Instant,
        check: SharedCheck,
        meta: Option<Metadata>,
    ) -> Index {
        self.pending_meta = meta.filter(|meta| !meta.is_empty());
        self.insert(id, service, endpoint, source, deadline, false, check)
    }

    /// Sets the metadata of the lease at `index`; returns whether it changed.
    pub(super) fn set_meta(&mut self, index: Index, meta: Metadata) -> bool {
        if meta.is_empty() {
            return self.meta.remove(&index).is_some();
        }
        if self.meta.get(&index) == Some(&meta) {
            return false;
        }
        self.meta.insert(index, meta);
        true
    }

    /// The metadata of the lease with this id (or alias); empty when it carries none.
    pub fn meta_of(&self, id: Uuid) -> Option<&Metadata> {
        self.find_id(id).and_then(|index| self.meta.get(&index))
    }

    /// The metadata of a live instance: that of its lease with the smallest id among those
    /// that carry some (the same on every broker, whatever order the leases arrived in), or
    /// `None` when none does or the instance is not live. Served as its DNS-SD TXT record.
    pub fn metadata(&self, service: &str, endpoint: SocketAddr) -> Option<&Metadata> {
        if self.meta.is_empty() {
            return None;
        }
        let head = self.head_lease(service, canonical(endpoint))?;
        self.instance_meta(head)
    }

    /// [`Registry::metadata`] from the instance's first lease.
    pub(crate) fn instance_meta(&self, head: Index) -> Option<&Metadata> {
        let mut best: Option<(Uuid, &Metadata)> = None;
        let mut at = head;
        while at != NONE {
            let lease = self.lease(at);
            if let Some(meta) = self.meta.get(&at)
                && best.is_none_or(|(id, _)| lease.id < id)
            {
                best = Some((lease.id, meta));
            }
            at = lease.next;
        }
        best.map(|(_, meta)| meta)
    }

    /// How many leases carry metadata.
    pub fn meta_count(&self) -> usize {
        self.meta.len()
    }
}
