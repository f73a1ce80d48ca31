//! Listing the table for people: the services with their instance counts, and one service's
//! instances with their age and sources, a page at a time.
//!
//! Pages are walked by a [`Cursor`] over the table's slots (services) or over a service's list
//! of instances, so a page costs what it returns, never a scan or a sort of the whole table. A
//! listing taken while the table changes may miss or repeat an entry that moved; each page is
//! exact as of its own `now`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Cursor, NONE, NotFound, Registry, Source};
use crate::protocol::Check;

/// How many slots one [`Registry::services_page`] call looks at, at the most, so that a table
/// with many free slots cannot make one call long.
const SCAN_LIMIT: usize = 4096;

/// One instance as a listing shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceView<'a> {
    /// Where it listens.
    pub endpoint: SocketAddr,
    /// How long this registry has held it (its oldest lease's age).
    pub age: Duration,
    /// How long until it expires unless renewed (its longest-lived lease's time left).
    pub ttl_left: Duration,
    /// How many leases hold it (one per source that registered or announced it).
    pub leases: usize,
    /// The source of its oldest lease.
    pub source: Source,
    /// The health check its oldest lease declares.
    pub check: Check<&'a str>,
    /// Its metadata ([`Registry::metadata`]), if any.
    pub meta: Option<&'a crate::meta::Metadata>,
}

impl Registry {
    /// Hands `take` each service with its number of live instances, from `cursor` on, until
    /// `take` returns false (that service is not taken) or the table ends. Returns where the
    /// next page starts, or `None` when the table has been walked to its end.
    pub fn services_page(
        &mut self,
        now: Instant,
        cursor: Cursor,
        mut take: impl FnMut(&str, usize) -> bool,
    ) -> Option<Cursor> {
        self.handle_timeout(now);
        let start = cursor.0 as usize;
        let end = self.service_slots.min(start.saturating_add(SCAN_LIMIT));
        for slot in start..end {
            let Some(service) = self.services.get(slot) else { continue };
            if !take(&service.name, service.members.len()) {
                return Some(Cursor(super::index_of(slot)));
            }
        }
        (end < self.service_slots).then(|| Cursor(super::index_of(end)))
    }

    /// Hands `take` each live instance of `service` from `cursor` on, until `take` returns
    /// false (that instance is not taken) or the list ends. Returns where the next page starts
    /// (`None`: at the end), or [`NotFound`] when the service has no live instance.
    pub fn instances_page(
        &mut self,
        now: Instant,
        service: &str,
        cursor: Cursor,
        mut take: impl FnMut(InstanceView<'_>) -> bool,
    ) -> Result<Option<Cursor>, NotFound> {
        self.handle_timeout(now);
        let index = self.by_name.get(&self.services, service).ok_or(NotFound)?;
        let members = &self.service(index).members;
        for (position, member) in members.iter().enumerate().skip(cursor.0 as usize) {
            let mut lease = member.head;
            let mut view = InstanceView {
                endpoint: member.endpoint.get(),
                age: Duration::ZERO,
                ttl_left: Duration::ZERO,
                leases: 0,
                source: self.lease(lease).source,
                check: self.lease(lease).check.as_deref(),
                meta: self.instance_meta(lease),
            };
            let mut oldest = None;
            while lease != NONE {
                let entry = self.lease(lease);
                view.leases += 1;
                view.ttl_left = view.ttl_left.max(self.instant(entry.deadline).saturating_duration_since(now));
                if oldest.is_none_or(|since| entry.since < since) {
                    oldest = Some(entry.since);
                    view.source = entry.source;
                    view.check = entry.check.as_deref();
                }
                lease = entry.next;
            }
            view.age = oldest.map_or(Duration::ZERO, |since| now.saturating_duration_since(self.instant(since)));
            if !take(view) {
                return Ok(Some(Cursor(super::index_of(position))));
            }
        }
        Ok(None)
    }

    /// The names of the services with live instances as of `now`, in no order: the table's own
    /// (an index kept beside the table, such as the HTTP catalog's ordered one, holds them
    /// without a copy of each name). A walk over the whole table.
    pub fn live_service_names(&mut self, now: Instant) -> impl Iterator<Item = &std::sync::Arc<str>> {
        self.handle_timeout(now);
        self.services.iter().filter(|(_, service)| !service.members.is_empty()).map(|(_, service)| &service.name)
    }

    /// How many live instances `service` has (0: none, or no such service).
    pub fn instance_count(&self, service: &str) -> usize {
        self.by_name.get(&self.services, service).map_or(0, |index| self.service(index).members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Config;

    fn registry() -> Registry {
        let mut ids = 0u128;
        Registry::new(Config::default(), move || {
            ids += 1;
            uuid::Uuid::from_u128(ids)
        })
    }

    fn source(port: u16) -> Source {
        Source::Unicast(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn endpoint(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn services_come_in_pages_with_their_counts() {
        let (mut r, t0) = (registry(), Instant::now());
        for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            for k in 0..=i as u16 {
                r.register(t0, name, endpoint(4000 + k), source(50000)).unwrap();
            }
        }
        let mut seen = Vec::new();
        let mut cursor = Some(Cursor::START);
        let mut pages = 0;
        while let Some(at) = cursor {
            let mut room = 2;
            cursor = r.services_page(t0, at, |name, n| {
                if room == 0 {
                    return false;
                }
                room -= 1;
                seen.push((name.to_owned(), n));
                true
            });
            pages += 1;
        }
        assert_eq!(pages, 3);
        seen.sort();
        let want: Vec<(String, usize)> =
            ["a", "b", "c", "d", "e"].iter().zip(1..).map(|(n, c)| (n.to_string(), c)).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn an_instance_shows_its_age_leases_and_oldest_source() {
        let (mut r, t0) = (registry(), Instant::now());
        let ttl = r.config().ttl;
        r.register(t0, "echo", endpoint(4000), source(50000)).unwrap();
        let later = t0 + Duration::from_secs(1);
        r.register(later, "echo", endpoint(4000), source(50001)).unwrap();
        r.register(later, "echo", endpoint(4001), source(50001)).unwrap();
        let now = t0 + Duration::from_secs(2);
        let mut views = Vec::new();
        let next = r.instances_page(now, "echo", Cursor::START, |v| {
            views.push(InstanceView { check: crate::protocol::Check::None, meta: None, ..v });
            true
        });
        assert_eq!(next, Ok(None));
        views.sort_by_key(|v| v.endpoint);
        assert_eq!(views[0].age, Duration::from_secs(2));
        assert_eq!(views[0].leases, 2);
        assert_eq!(views[0].source, source(50000));
        assert_eq!(views[0].ttl_left, ttl - Duration::from_secs(1));
        assert_eq!(views[1].age, Duration::from_secs(1));
        assert_eq!(views[1].leases, 1);
        assert_eq!(r.instance_count("echo"), 2);

        // A page that takes one stops at the second instance.
        let next = r.instances_page(now, "echo", Cursor::START, |_| false).unwrap();
        assert_eq!(next, Some(Cursor(0)));
        assert_eq!(r.instances_page(now, "time", Cursor::START, |_| true), Err(NotFound));
        // Expired instances are not listed.
        assert_eq!(r.instances_page(t0 + ttl * 3, "echo", Cursor::START, |_| true), Err(NotFound));
    }
}
