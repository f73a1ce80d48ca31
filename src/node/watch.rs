//! Watches: the callback variant of the broker. A client that sends `watch <service>` is told
//! the service's live instances and a sequence number at once ([`Response::Watching`]), and
//! then a datagram ([`Response::Changed`]) each time the live set changes: a registration, an
//! expiry, a deregistration, a removal after a report or a health check, or any of these
//! arriving from a peer broker. Each change adds one to the sequence number, so a watcher that
//! sees a gap knows it missed a datagram and sends `watch` again.
//!
//! A watch is a lease like a registration: it lives for the broker's TTL and is renewed by
//! sending `watch` again. Watches are capped per source address and in total. Notifications
//! go out from the node's loop, one datagram per watcher (linear in the watchers), in the
//! watcher's form, through the response-rate limit like any reply larger than its request.
//!
//! `Watches` owns every watch, its lease and its sequence number, and the counters. It speaks the
//! node's sub-machine convention (see the [node's documentation](super)): requests come in through
//! `handle_watch` and `handle_unwatch`, the table's changes through `handle_change` and, once per
//! turn, `flush`; notifications leave through `poll_transmit`, and the node tells it which ones the
//! rate limit or a full queue held back (`note_sent`). The table is the node's, lent for the calls
//! that read it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Face;
use crate::core::{Outbox, Transmit};
use crate::protocol::fit::{self, Room};
use crate::protocol::{self, Form, Rejection, Response};
use crate::registry::Registry;
use crate::timers::Timers;

/// The caps on watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// Watches one source address may hold; 0: no cap.
    pub max_per_source: usize,
    /// Watches in all.
    pub max_total: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig { max_per_source: 1024, max_total: 100_000 }
    }
}

/// Counters of the watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct WatchStats {
    /// Notifications sent.
    pub sent: u64,
    /// Notifications held back by the rate limit or a full queue.
    pub dropped: u64,
}

#[derive(Debug)]
struct Watcher {
    id: u64,
    form: Form,
    expires: Instant,
}

/// A watched service: its sequence number, the live set its watchers were last told, and
/// the watchers.
#[derive(Debug, Default)]
struct Watched {
    seq: u64,
    last: Vec<SocketAddr>,
    dirty: bool,
    watchers: HashMap<SocketAddr, Watcher>,
}

/// Every watch. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Watches {
    config: WatchConfig,
    services: HashMap<String, Watched>,
    per_source: HashMap<IpAddr, usize>,
    total: usize,
    /// Watch id -> (service, watcher), for the expiry timers.
    ids: HashMap<u64, (String, SocketAddr)>,
    expiries: Timers<u64>,
    next_id: u64,
    dirty: Vec<String>,
    /// Notifications to send.
    transmits: Outbox<Face>,
    stats: WatchStats,
}

impl Watches {
    pub fn new(config: WatchConfig) -> Self {
        Watches {
            config,
            services: HashMap::new(),
            per_source: HashMap::new(),
            total: 0,
            ids: HashMap::new(),
            expiries: Timers::new(),
            next_id: 0,
            dirty: Vec::new(),
            transmits: Outbox::new(usize::MAX),
            stats: WatchStats::default(),
        }
    }

    /// Watches now.
    pub fn len(&self) -> usize {
        self.total
    }

    /// The counters.
    pub fn stats(&self) -> WatchStats {
        self.stats
    }

    /// `watch <service>` from `from`: starts or renews the watch for the table's TTL, and
    /// answers with the live set and the sequence number.
    pub fn handle_watch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        form: Form,
        service: &str,
        registry: &mut Registry,
    ) -> Response {
        if let Err(rejection) = registry.config().limits.check_name(service) {
            return Response::Error(rejection);
        }
        let mut current: Vec<SocketAddr> = registry.members(now, service).collect();
        current.sort_unstable();
        let ttl = registry.config().ttl;
        match self.watch(now, from, form, service, ttl, current.clone()) {
            Ok(seq) => Response::Watching {
                service: service.to_owned(),
                seq,
                ttl_ms: u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX),
                instances: fit(form, service, current),
            },
            Err(rejection) => Response::Error(rejection),
        }
    }

    /// `unwatch <service>` from `from`.
    pub fn handle_unwatch(&mut self, from: SocketAddr, service: &str) -> Response {
        if self.unwatch(from, service) { Response::Ok } else { Response::NotFound }
    }

    /// End of a turn: the watchers of every service whose live set changed in it are told,
    /// through [`poll_transmit`](Self::poll_transmit).
    pub fn flush(&mut self, now: Instant, registry: &mut Registry) {
        // Called after every input: nearly always nothing changed that anyone watches.
        if self.dirty.is_empty() {
            return;
        }
        for service in self.take_dirty() {
            let mut current: Vec<SocketAddr> = registry.members(now, &service).collect();
            current.sort_unstable();
            let Some((seq, watchers)) = self.changed(&service, current.clone()) else { continue };
            let instances = fit(Form::Binary { request_id: u32::MAX }, &service, current);
            let response = Response::Changed { service, seq, instances };
            for (to, form) in watchers {
                self.transmits.push(Face::Client, to, |bytes| protocol::encode_reply(form, &response, bytes));
            }
        }
    }

    /// The next notification to send, its bytes moved into `out`. Unasked for, so the node
    /// judges it by the rate limit as a reply to an empty request.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<Transmit<Face>> {
        self.transmits.pop(out)
    }

    /// Counts a notification taken from [`poll_transmit`](Self::poll_transmit): sent, or held
    /// back by the rate limit or a full queue.
    pub fn note_sent(&mut self, sent: bool) {
        if sent {
            self.stats.sent += 1;
        } else {
            self.stats.dropped += 1;
        }
    }

    /// Starts or renews `source`'s watch on `service` until `now + ttl`; `current` is the
    /// service's live set now, sorted. Returns the sequence number to tell the watcher.
    fn watch(
        &mut self,
        now: Instant,
        source: SocketAddr,
        form: Form,
        service: &str,
        ttl: Duration,
        current: Vec<SocketAddr>,
    ) -> Result<u64, Rejection> {
        let expires = now + ttl;
        if let Some(watched) = self.services.get_mut(service) {
            if let Some(watcher) = watched.watchers.get_mut(&source) {
                self.expiries.reschedule(watcher.expires, expires, watcher.id);
                watcher.expires = expires;
                watcher.form = form;
                return Ok(watched.seq);
            }
        }
        let ip = source.ip().to_canonical();
        let held = self.per_source.get(&ip).copied().unwrap_or(0);
        if self.config.max_per_source > 0 && held >= self.config.max_per_source {
            return Err(Rejection::TooManyWatches {
                scope: " from this address".into(),
                max: saturate(self.config.max_per_source),
            });
        }
        if self.total >= self.config.max_total {
            return Err(Rejection::TooManyWatches { scope: String::new(), max: saturate(self.config.max_total) });
        }
        let id = self.next_id;
        self.next_id += 1;
        let watched =
            self.services.entry(service.to_owned()).or_insert_with(|| Watched { last: current, ..Watched::default() });
        watched.watchers.insert(source, Watcher { id, form, expires });
        self.ids.insert(id, (service.to_owned(), source));
        self.expiries.insert(expires, id);
        *self.per_source.entry(ip).or_default() += 1;
        self.total += 1;
        Ok(watched.seq)
    }

    /// Ends `source`'s watch on `service`; returns whether there was one.
    fn unwatch(&mut self, source: SocketAddr, service: &str) -> bool {
        let Some(watcher) = self.services.get_mut(service).and_then(|w| w.watchers.remove(&source)) else {
            return false;
        };
        self.expiries.remove(watcher.expires, watcher.id);
        self.forget(watcher.id, service, source);
        true
    }

    fn forget(&mut self, id: u64, service: &str, source: SocketAddr) {
        self.ids.remove(&id);
        self.total -= 1;
        let ip = source.ip().to_canonical();
        if let Some(held) = self.per_source.get_mut(&ip) {
            *held -= 1;
            if *held == 0 {
                self.per_source.remove(&ip);
            }
        }
        if self.services.get(service).is_some_and(|w| w.watchers.is_empty()) {
            self.services.remove(service);
        }
    }

    /// The table changed for `service`: its watchers are told at the end of the turn (see
    /// [`flush`](Self::flush)), if its live set is different.
    pub fn handle_change(&mut self, service: &str) {
        if let Some(watched) = self.services.get_mut(service) {
            if !watched.dirty {
                watched.dirty = true;
                self.dirty.push(service.to_owned());
            }
        }
    }

    /// The services that changed since the last call.
    fn take_dirty(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty)
    }

    /// `service`'s live set is `current` (sorted): when it differs from what its watchers
    /// were told, the new sequence number and the watchers to tell.
    fn changed(&mut self, service: &str, current: Vec<SocketAddr>) -> Option<(u64, Vec<(SocketAddr, Form)>)> {
        let watched = self.services.get_mut(service)?;
        watched.dirty = false;
        if watched.last == current {
            return None;
        }
        watched.last = current;
        watched.seq += 1;
        Some((watched.seq, watched.watchers.iter().map(|(&addr, w)| (addr, w.form)).collect()))
    }

    /// Ends the watches that were not renewed in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.expiries.pop_due(now) {
            let Some((service, source)) = self.ids.get(&id).cloned() else { continue };
            if let Some(watched) = self.services.get_mut(&service) {
                watched.watchers.remove(&source);
            }
            self.forget(id, &service, source);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.next()
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// As many of `instances` as fit in one reply naming `service`, in either form.
fn fit(form: Form, service: &str, mut instances: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut room = Room::after(fit::instances_header(form) + service.len() + WATCH_RESERVE);
    // The longer of the two forms, so that one list fits both.
    let cost = |&instance: &SocketAddr| {
        fit::instance_len(Form::Text, instance).max(fit::instance_len(Form::Binary { request_id: 0 }, instance))
    };
    let keep = room.fit(instances.iter().copied(), cost);
    instances.truncate(keep);
    instances
}

/// Room kept in a watch's reply for the verb, the sequence number and the TTL, besides the
/// name and a query reply's header. More than they take in either form (at most 52 bytes in
/// text, 17 in binary), and kept as it was so that watchers get the same lists.
const WATCH_RESERVE: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_REPLY_LEN;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn a_watch_is_renewed_by_watching_again_and_expires_otherwise() {
        let t0 = Instant::now();
        let mut w = Watches::new(WatchConfig::default());
        assert_eq!(w.watch(t0, addr(1), Form::Text, "echo", TTL, vec![]), Ok(0));
        assert_eq!(w.watch(t0 + TTL / 2, addr(1), Form::Text, "echo", TTL, vec![]), Ok(0), "renewed");
        assert_eq!(w.len(), 1);
        w.handle_timeout(t0 + TTL);
        assert_eq!(w.len(), 1, "the renewal moved the expiry");
        assert_eq!(w.poll_timeout(), Some(t0 + TTL / 2 + TTL));
        w.handle_timeout(t0 + TTL / 2 + TTL);
        assert_eq!(w.len(), 0);
        assert!(w.services.is_empty() && w.per_source.is_empty() && w.ids.is_empty());
    }

    #[test]
    fn only_a_different_live_set_is_a_change() {
        let t0 = Instant::now();
        let mut w = Watches::new(WatchConfig::default());
        w.watch(t0, addr(1), Form::Text, "echo", TTL, vec![addr(4000)]).unwrap();
        w.handle_change("echo");
        w.handle_change("echo");
        w.handle_change("other");
        assert_eq!(w.take_dirty(), ["echo"], "once per turn, watched services only");
        assert_eq!(w.changed("echo", vec![addr(4000)]), None, "a renewal or a second lease changes no set");
        w.handle_change("echo");
        w.take_dirty();
        assert_eq!(w.changed("echo", vec![addr(4000), addr(4001)]), Some((1, vec![(addr(1), Form::Text)])));
        assert_eq!(w.watch(t0, addr(2), Form::Text, "echo", TTL, vec![]), Ok(1), "a new watcher gets the current seq");
    }

    #[test]
    fn caps_per_source_and_in_total_give_clear_errors() {
        let t0 = Instant::now();
        let mut w = Watches::new(WatchConfig { max_per_source: 2, max_total: 3 });
        let at = |ip: u8, port: u16| SocketAddr::from(([10, 0, 0, ip], port));
        assert!(w.watch(t0, at(1, 1), Form::Text, "a", TTL, vec![]).is_ok());
        assert!(w.watch(t0, at(1, 2), Form::Text, "a", TTL, vec![]).is_ok());
        let refused = w.watch(t0, at(1, 3), Form::Text, "a", TTL, vec![]).unwrap_err();
        assert_eq!(refused.to_string(), "too many watches from this address: at most 2");
        assert!(w.watch(t0, at(1, 1), Form::Text, "a", TTL, vec![]).is_ok(), "a renewal is not a new watch");
        assert!(w.watch(t0, at(2, 1), Form::Text, "b", TTL, vec![]).is_ok());
        let refused = w.watch(t0, at(3, 1), Form::Text, "b", TTL, vec![]).unwrap_err();
        assert_eq!(refused.to_string(), "too many watches: at most 3");
        assert!(w.unwatch(at(1, 1), "a"));
        assert!(!w.unwatch(at(1, 1), "a"));
        assert!(w.watch(t0, at(3, 1), Form::Text, "b", TTL, vec![]).is_ok(), "room again");
    }

    #[test]
    fn a_notification_fits_one_reply_in_both_forms() {
        let many: Vec<SocketAddr> =
            (0..500).map(|k| SocketAddr::from(([10, 1, (k / 250) as u8, k as u8], 40000 + k))).collect();
        let name = "s".repeat(64);
        let instances = fit(Form::Text, &name, many);
        assert!(instances.len() > 30);
        for form in [Form::Text, Form::Binary { request_id: u32::MAX }] {
            let response = Response::Changed { service: name.clone(), seq: u64::MAX, instances: instances.clone() };
            let mut out = Vec::new();
            crate::protocol::encode_reply(form, &response, &mut out);
            assert!(out.len() <= MAX_REPLY_LEN, "{form:?}: {}", out.len());
            let watching = Response::Watching {
                service: name.clone(),
                seq: u64::MAX,
                ttl_ms: u32::MAX,
                instances: instances.clone(),
            };
            crate::protocol::encode_reply(form, &watching, &mut out);
            assert!(out.len() <= MAX_REPLY_LEN, "{form:?}: {}", out.len());
        }
    }
}
