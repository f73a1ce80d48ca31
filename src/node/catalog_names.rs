//! The names of the services with live instances, in order, for `/v1/services`: so that an
//! answer of the first `limit` names costs what it lists, not a walk over the whole table (the
//! table keeps its services by hash, in no order).
//!
//! Built by the first listing that asks (one walk over the table), then kept up to date from
//! the table's change log at the end of every turn; a broker that is never asked keeps none
//! and pays nothing. A change log that dropped changes (see
//! [`Registry::changes_dropped`]) makes the next listing build it again.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::registry::{ChangeKind, Cursor, Registry};

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub(super) struct ServiceNames {
    /// `None` until a listing asks (or after changes were dropped).
    names: Option<BTreeSet<Arc<str>>>,
    /// [`Registry::changes_dropped`] when `names` was built.
    dropped: u64,
}

/// What [`ServiceNames::first`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct First {
    /// The first names with their numbers of live instances, at most the limit.
    pub services: Vec<(String, usize)>,
    /// Whether more services have live instances.
    pub truncated: bool,
    /// How many names were looked at: the work done, at most the limit and one more (and the
    /// names of services emptied in this turn, which the end of the turn drops).
    pub looked_at: usize,
}

impl ServiceNames {
    /// Follows one change of the table, taken at the end of a turn (when `registry` holds every
    /// change of the turn: whether the service has an instance left is read from it).
    pub(super) fn handle_change(&mut self, service: &Arc<str>, kind: ChangeKind, registry: &Registry) {
        let Some(names) = &mut self.names else { return };
        if kind == ChangeKind::Refreshed {
            return;
        }
        if registry.instance_count(service) > 0 {
            if !names.contains(service) {
                names.insert(Arc::clone(service));
            }
        } else {
            names.remove(service);
        }
    }

    /// The first `limit` services by name with their numbers of live instances, and whether
    /// there are more; builds the index first if it has none (or changes were dropped since).
    pub(super) fn first(&mut self, registry: &mut Registry, now: std::time::Instant, limit: usize) -> First {
        if self.names.is_none() || self.dropped != registry.changes_dropped() {
            self.build(registry, now);
        }
        let mut first = First { services: Vec::with_capacity(limit.min(1024)), truncated: false, looked_at: 0 };
        for name in self.names.iter().flatten() {
            first.looked_at += 1;
            // Emptied in this turn (expired as the listing looked): the end of the turn drops it.
            let count = registry.instance_count(name);
            if count == 0 {
                continue;
            }
            if first.services.len() == limit {
                first.truncated = true;
                break;
            }
            first.services.push((name.to_string(), count));
        }
        first
    }

    /// Walks the whole table once for the names of its services with live instances.
    fn build(&mut self, registry: &mut Registry, now: std::time::Instant) {
        let mut names = BTreeSet::new();
        let mut cursor = Some(Cursor::START);
        while let Some(at) = cursor {
            cursor = registry.services_page(now, at, |name, instances| {
                if instances > 0 {
                    names.insert(Arc::from(name));
                }
                true
            });
        }
        self.names = Some(names);
        self.dropped = registry.changes_dropped();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::protocol::{RemoveReason, Source};
    use crate::registry::Config;

    fn registry(ttl: Duration) -> Registry {
        let mut ids = 0u128;
        let config = Config { ttl, ..Config::default() };
        Registry::new(config, move || {
            ids += 1;
            uuid::Uuid::from_u128(ids)
        })
    }

    fn endpoint(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn source(port: u16) -> Source {
        Source::Unicast(SocketAddr::from(([127, 0, 0, 2], port)))
    }

    /// The end of a turn, as the node's: every change to the index.
    fn follow(names: &mut ServiceNames, registry: &mut Registry) {
        while let Some(change) = registry.poll_change() {
            names.handle_change(&change.service, change.kind, registry);
        }
    }

    /// The first `limit` as a walk over the whole table finds them.
    fn walked(registry: &mut Registry, now: Instant, limit: usize) -> (Vec<(String, usize)>, bool) {
        let mut all = Vec::new();
        let mut cursor = Some(Cursor::START);
        while let Some(at) = cursor {
            cursor = registry.services_page(now, at, |name, n| {
                if n > 0 {
                    all.push((name.to_owned(), n));
                }
                true
            });
        }
        all.sort();
        let truncated = all.len() > limit;
        all.truncate(limit);
        (all, truncated)
    }

    #[test]
    fn listing_the_first_names_looks_at_no_more_of_them() {
        let (mut r, t0) = (registry(Duration::from_secs(60)), Instant::now());
        r.set_quotas(0, 0);
        for i in 0..5000u16 {
            r.register(t0, &format!("s{i:05}"), endpoint(1000 + i), source(1)).unwrap();
        }
        let mut names = ServiceNames::default();
        follow(&mut names, &mut r);
        let first = names.first(&mut r, t0, 10);
        assert_eq!((first.services.len(), first.truncated), (10, true));
        assert_eq!(first.services[0], ("s00000".to_owned(), 1));
        assert_eq!(first.looked_at, 11, "the ten listed and one to know there are more");
        // Kept up from the changes: a new first name, with no walk.
        r.register(t0, "a", endpoint(999), source(1)).unwrap();
        follow(&mut names, &mut r);
        let first = names.first(&mut r, t0, 2);
        assert_eq!(first.services, [("a".to_owned(), 1), ("s00000".to_owned(), 1)]);
        assert_eq!(first.looked_at, 3);
        let all = names.first(&mut r, t0, 10_000);
        assert_eq!((all.services.len(), all.truncated, all.looked_at), (5001, false, 5001));
    }

    #[test]
    fn the_index_follows_registrations_removals_and_expiries() {
        let (mut r, t0) = (registry(Duration::from_secs(5)), Instant::now());
        let mut names = ServiceNames::default();
        // Built before anything is registered, then kept up.
        assert_eq!(names.first(&mut r, t0, 10), First { services: vec![], truncated: false, looked_at: 0 });
        for (i, name) in ["web", "db", "cache", "api"].into_iter().enumerate() {
            for k in 0..=i as u16 {
                r.register(t0, name, endpoint(2000 + 10 * i as u16 + k), source(k)).unwrap();
            }
        }
        follow(&mut names, &mut r);
        for limit in [0, 1, 3, 4, 5] {
            let first = names.first(&mut r, t0, limit);
            assert_eq!((first.services, first.truncated), walked(&mut r, t0, limit), "limit {limit}");
        }
        // One of two instances of db goes: db stays; cache's three go: cache goes.
        r.remove_instance(t0, "db", endpoint(2010), RemoveReason::Unreachable);
        for k in 0..3 {
            r.remove_instance(t0, "cache", endpoint(2020 + k), RemoveReason::Deregistered);
        }
        follow(&mut names, &mut r);
        let first = names.first(&mut r, t0, 10);
        assert_eq!((first.services.clone(), first.truncated), walked(&mut r, t0, 10));
        assert_eq!(first.services, [("api".to_owned(), 4), ("db".to_owned(), 1), ("web".to_owned(), 1)]);
        // Renewed web alone; the others expire. Listed in the same turn as the expiry (the
        // change not yet followed), the expired names are skipped already.
        let t1 = t0 + Duration::from_secs(3);
        r.register(t1, "web", endpoint(2000), source(0)).unwrap();
        follow(&mut names, &mut r);
        let t2 = t0 + Duration::from_secs(6);
        r.handle_timeout(t2);
        let first = names.first(&mut r, t2, 10);
        assert_eq!((first.services, first.truncated), (vec![("web".to_owned(), 1)], false));
        follow(&mut names, &mut r);
        assert_eq!(names.first(&mut r, t2, 10).looked_at, 1, "the expired names are gone from the index");
    }
}
