//! Applying what peers send: a delta's entries and the leases of pages, each merged into the
//! table by the registry's rule (`registry::remote`), with its check and, from a peer that
//! sends them, its metadata.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Replicator;
use crate::protocol::Check;
use crate::protocol::peer::{CheckedLease, Entry, Lease};
use crate::registry::{Applied, LeaseView, Registry};

impl Replicator {
    /// Applies a delta's entry (delta `seq` from `from`); returns the id of a lease sent that
    /// was removed here on purpose (tombstoned). Slots renewed that name nothing here go to
    /// `unknown`.
    pub(super) fn apply(
        &mut self,
        now: Instant,
        (from, seq): (SocketAddr, u32),
        entry: &Entry<'_>,
        registry: &mut Registry,
        unknown: &mut Vec<u32>,
    ) -> Option<uuid::Uuid> {
        match entry {
            Entry::UpsertSlot { slot, lease: CheckedLease { lease, check } } => {
                self.apply_slotted(now, (from, seq), *slot, lease, *check, None, registry)
            }
            Entry::UpsertMeta { slot, lease: CheckedLease { lease, check }, meta } => {
                self.apply_slotted(now, (from, seq), *slot, lease, *check, Some(meta), registry)
            }
            Entry::Renew { ttl_ms, slots } => {
                let ttl = Duration::from_millis(u64::from(*ttl_ms));
                self.applied += self.slot_maps.renew(now, (from, seq), ttl, slots, registry, unknown);
                None
            }
            Entry::Upsert(lease) => {
                (self.apply_lease(now, lease, Check::None, registry) == Applied::Tombstoned).then_some(lease.id)
            }
            Entry::UpsertChecked(CheckedLease { lease, check }) => {
                (self.apply_lease(now, lease, *check, registry) == Applied::Tombstoned).then_some(lease.id)
            }
            Entry::Remove { id, reason } => {
                registry.apply_remote_removal(now, *id, *reason);
                self.applied += 1;
                None
            }
        }
    }

    /// Applies a lease sent with its slot (and its metadata, from a peer that sends them).
    #[allow(clippy::too_many_arguments)]
    fn apply_slotted(
        &mut self,
        now: Instant,
        (from, seq): (SocketAddr, u32),
        slot: u32,
        lease: &Lease<'_>,
        check: Check<&str>,
        meta: Option<&[u8]>,
        registry: &mut Registry,
    ) -> Option<uuid::Uuid> {
        match self.apply_lease_meta(now, lease, check, meta, registry) {
            Applied::Tombstoned => return Some(lease.id),
            // The id names a lease of another instance here (or the lease was refused):
            // its slot must renew nothing.
            Applied::Conflict | Applied::Refused(_) => {}
            _ => self.slot_maps.map_lease((from, seq), slot, lease.id, registry),
        }
        None
    }

    pub(super) fn apply_lease(
        &mut self,
        now: Instant,
        lease: &Lease<'_>,
        check: Check<&str>,
        registry: &mut Registry,
    ) -> Applied {
        self.apply_lease_meta(now, lease, check, None, registry)
    }

    /// Applies a lease; `meta`: its metadata block, `None` when the message carries none
    /// (then the lease keeps what it has here).
    pub(super) fn apply_lease_meta(
        &mut self,
        now: Instant,
        lease: &Lease<'_>,
        check: Check<&str>,
        meta: Option<&[u8]>,
        registry: &mut Registry,
    ) -> Applied {
        let view = LeaseView {
            id: lease.id,
            service: lease.service,
            endpoint: lease.endpoint,
            source: lease.source,
            ttl_left: Duration::from_millis(u64::from(lease.ttl_ms)),
            aliases: &lease.aliases,
            check,
            meta,
        };
        let applied = registry.apply_remote(now, view);
        match applied {
            Applied::Refused(_) | Applied::Conflict => self.rejected += 1,
            _ => self.applied += 1,
        }
        applied
    }
}
