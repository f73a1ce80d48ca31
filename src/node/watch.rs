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
//! # Watches cannot be aimed
//!
//! A watch starts (or is renewed) only when the watcher has shown that it receives at the
//! address it sends from: `watch <service>` is answered with a cookie, and only
//! `watch <service> <cookie>` from the same address and port watches. The cookie is a keyed
//! BLAKE3 hash of that address and a time slot ([`COOKIE_SLOT`]; taken in its slot and the next),
//! under a key drawn at the broker's start, so the broker keeps nothing for a watch that was
//! never confirmed, and the cookie reply is never larger than three times its request (see
//! [`MAX_UNCONFIRMED_GAIN`](crate::service::MAX_UNCONFIRMED_GAIN)): a watch sent from a forged
//! address draws at most three times its bytes. Whatever the number of watches, one IP address
//! is sent at most [`NOTIFY_BYTES_PER_SECOND`] of notifications a second; what is over is
//! dropped and counted with the rate limit's drops (`watch_dropped`).
//!
//! The cookie ends a watch too: `unwatch <service> <cookie>` from the watcher's address and port,
//! with a cookie a `watch` would take there now. A bare `unwatch <service>`, or one with a wrong or
//! old cookie, is refused (and counted with the other `ERROR` replies, `rejected`), so that nobody
//! can stop another's notifications from a forged address.
//!
//! `Watches` owns every watch, its lease and its sequence number, and the counters. It speaks the
//! node's sub-machine convention (see the [node's documentation](super)): requests come in through
//! `handle_watch` and `handle_unwatch`, the table's changes through `handle_change` and, once per
//! turn, `flush`; notifications leave through `poll_transmit`, and the node tells it which ones the
//! rate limit or a full queue held back (`note_sent`). The table is the node's, lent for the calls
//! that read it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Face;
use crate::core::{Outbox, Transmit};
use crate::protocol::fit::{self, Room};
use crate::protocol::{self, Form, Rejection, Response};
use crate::registry::{Refusal, Registry, network};
use store::Store;

mod store;

/// The caps on watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// Watches one source address may hold; 0: no cap.
    pub max_per_source: usize,
    /// Watches in all.
    pub max_total: usize,
    /// Watches the addresses of one network (a /24 in IPv4, a /56 in IPv6) may hold together;
    /// 0: no cap.
    pub max_per_network: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            max_per_source: 1024,
            max_total: 100_000,
            max_per_network: crate::registry::DEFAULT_MAX_PER_NETWORK,
        }
    }
}

/// How long a cookie's time slot lasts. A cookie is taken in the slot it was made in and in
/// the next, so for one to two slots: more than the renewal interval (a third of the TTL) of
/// any TTL up to three minutes.
pub const COOKIE_SLOT: Duration = Duration::from_secs(60);

/// The most bytes of notifications sent to one IP address in a second, whatever the number of
/// its watches: about 180 full notifications, many more small ones (near the 280 kB a second the
/// default rate limit lets through; for loopback and exempt networks, the only bound).
pub const NOTIFY_BYTES_PER_SECOND: usize = 256 * 1024;

/// Notification bytes sent to one address in the second that started at `since`.
#[derive(Debug, Clone, Copy)]
struct Spent {
    since: Instant,
    bytes: usize,
}

/// Counters of the watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct WatchStats {
    /// Notifications sent.
    pub sent: u64,
    /// Notifications held back by the rate limit or a full queue.
    pub dropped: u64,
}

/// Every watch. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Watches {
    config: WatchConfig,
    /// The watches, their services and their deadlines.
    store: Store,
    per_source: HashMap<IpAddr, usize>,
    /// Watches per network ([`network`]).
    per_network: HashMap<IpAddr, usize>,
    dirty: Vec<String>,
    /// Notifications to send.
    transmits: Outbox<Face>,
    stats: WatchStats,
    /// The key of the cookies.
    key: [u8; 32],
    /// When the first cookie's slot started: slots count from it.
    epoch: Option<Instant>,
    /// Notification bytes per IP address this second (see [`NOTIFY_BYTES_PER_SECOND`]).
    spent: HashMap<IpAddr, Spent>,
    /// When `spent` was last swept of past seconds.
    swept: Option<Instant>,
    /// Where a notification is written before it is counted.
    buffer: Vec<u8>,
    /// The watches started with `WatchMeta` (by address and service), told each instance's
    /// metadata: a side set, so that the others cost nothing more. Swept of watches that ended
    /// once a second ([`Watches::handle_timeout`]).
    meta_watchers: HashSet<(SocketAddr, Box<str>)>,
    meta_swept: Option<Instant>,
}

impl Watches {
    /// No watches; `key` makes the cookies (drawn at random by the shell).
    pub fn new(config: WatchConfig, key: [u8; 32]) -> Self {
        Watches {
            config,
            store: Store::new(),
            per_source: HashMap::new(),
            per_network: HashMap::new(),
            dirty: Vec::new(),
            transmits: Outbox::new(usize::MAX),
            stats: WatchStats::default(),
            key,
            epoch: None,
            spent: HashMap::new(),
            swept: None,
            buffer: Vec::new(),
            meta_watchers: HashSet::new(),
            meta_swept: None,
        }
    }

    /// The caps on watches (`--max-watches`, …).
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// New caps (a reload): they apply to watches started from now on; the watches held are
    /// kept, even beyond a lowered cap (a renewal of a held watch is not a new one).
    pub fn set_config(&mut self, config: WatchConfig) {
        self.config = config;
    }

    /// Watches now.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// The counters.
    pub fn stats(&self) -> WatchStats {
        self.stats
    }

    /// `watch <service>` from `from`, with the `cookie` it echoes: with the right one, starts or
    /// renews the watch for the table's TTL, and answers with the live set and the sequence
    /// number; without (or with a wrong or old one), answers with the cookie to echo. `meta`: a
    /// `WatchMeta`, whose replies and notifications carry each instance's metadata.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_watch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        form: Form,
        service: &str,
        cookie: Option<u64>,
        meta: bool,
        registry: &mut Registry,
    ) -> Response {
        if !cookie.is_some_and(|cookie| self.cookie_shown(now, from, cookie)) {
            let slot = self.slot(now);
            return Response::WatchCookie { cookie: self.cookie(slot, from) };
        }
        if let Err(rejection) = registry.config().limits.check_name(service) {
            return Response::Error(rejection);
        }
        let mut current: Vec<SocketAddr> = registry.members(now, service).collect();
        current.sort_unstable();
        let ttl = registry.config().ttl;
        let ttl_ms = u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX);
        let meta_hash = meta_hash(registry, service, &current);
        match self.watch_hashed(now, from, form, service, ttl, (current.clone(), meta_hash)) {
            Ok(seq) if meta => {
                self.meta_watchers.insert((from, service.into()));
                let (instances, meta) = fit_meta(service, current, registry);
                Response::WatchingMeta { service: service.to_owned(), seq, ttl_ms, instances, meta }
            }
            Ok(seq) => {
                if !self.meta_watchers.is_empty() {
                    self.meta_watchers.remove(&(from, service.into()));
                }
                Response::Watching { service: service.to_owned(), seq, ttl_ms, instances: fit(form, service, current) }
            }
            Err(rejection) => Response::Error(rejection),
        }
    }

    /// `unwatch <service> <cookie>` from `from`: ends the watch only with a cookie a `watch`
    /// from `from` would take now (so only from whoever receives at the watcher's address);
    /// without one ([`Rejection::CookieRequired`]) or with a wrong or old one
    /// ([`Rejection::BadCookie`]), refused, and the watch is kept.
    pub fn handle_unwatch(&mut self, now: Instant, from: SocketAddr, service: &str, cookie: Option<u64>) -> Response {
        let Some(cookie) = cookie else { return Response::Error(Rejection::CookieRequired) };
        if !self.cookie_shown(now, from, cookie) {
            return Response::Error(Rejection::BadCookie);
        }
        if !self.meta_watchers.is_empty() {
            self.meta_watchers.remove(&(from, service.into()));
        }
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
            let meta_hash = meta_hash(registry, &service, &current);
            let Some((seq, watchers)) = self.changed_hashed(&service, current.clone(), meta_hash) else { continue };
            // Made only when a watcher of the service asked for metadata.
            let mut with_meta = None;
            let instances = fit(Form::Binary { request_id: u32::MAX }, &service, current.clone());
            let response = Response::Changed { service: service.clone(), seq, instances };
            for (to, form) in watchers {
                let wants_meta =
                    !self.meta_watchers.is_empty() && self.meta_watchers.contains(&(to, service.as_str().into()));
                let response = if wants_meta {
                    with_meta.get_or_insert_with(|| {
                        let (instances, meta) = fit_meta(&service, current.clone(), registry);
                        Response::ChangedMeta { service: service.clone(), seq, instances, meta }
                    })
                } else {
                    &response
                };
                protocol::encode_reply(form, response, &mut self.buffer);
                if !self.spend(now, to.ip().to_canonical(), self.buffer.len()) {
                    self.stats.dropped += 1;
                    continue;
                }
                let bytes = &self.buffer;
                self.transmits.push(Face::Client, to, |out| out.extend_from_slice(bytes));
            }
        }
    }

    /// Whether `cookie` is `from`'s, made in the slot of `now` or the one before.
    fn cookie_shown(&mut self, now: Instant, from: SocketAddr, cookie: u64) -> bool {
        let slot = self.slot(now);
        cookie == self.cookie(slot, from) || (slot > 0 && cookie == self.cookie(slot - 1, from))
    }

    /// The time slot of `now`, for the cookies.
    fn slot(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs() / COOKIE_SLOT.as_secs()
    }

    /// The cookie of `from` in `slot`: the first 8 bytes of a keyed BLAKE3 hash of the slot
    /// and the address (IPv4 as IPv6-mapped, so that both spellings of one address agree).
    fn cookie(&self, slot: u64, from: SocketAddr) -> u64 {
        let ip = match from.ip().to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(b"makler watch cookie v1");
        hasher.update(&slot.to_le_bytes());
        hasher.update(&ip);
        hasher.update(&from.port().to_le_bytes());
        let hash = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }

    /// Whether `bytes` more of notifications may go to `ip` this second (and counts them).
    fn spend(&mut self, now: Instant, ip: IpAddr, bytes: usize) -> bool {
        const SECOND: Duration = Duration::from_secs(1);
        if self.swept.is_none_or(|swept| now >= swept + SECOND) {
            self.spent.retain(|_, spent| now < spent.since + SECOND);
            self.swept = Some(now);
        }
        let spent = self.spent.entry(ip).or_insert(Spent { since: now, bytes: 0 });
        if now >= spent.since + SECOND {
            *spent = Spent { since: now, bytes: 0 };
        }
        if spent.bytes + bytes > NOTIFY_BYTES_PER_SECOND {
            return false;
        }
        spent.bytes += bytes;
        true
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
    #[cfg(test)]
    fn watch(
        &mut self,
        now: Instant,
        source: SocketAddr,
        form: Form,
        service: &str,
        ttl: Duration,
        current: Vec<SocketAddr>,
    ) -> Result<u64, Rejection> {
        self.watch_hashed(now, source, form, service, ttl, (current, 0))
    }

    /// [`watch`](Self::watch) with the hash of the instances' metadata ([`meta_hash`]).
    fn watch_hashed(
        &mut self,
        now: Instant,
        source: SocketAddr,
        form: Form,
        service: &str,
        ttl: Duration,
        (current, meta_hash): (Vec<SocketAddr>, u64),
    ) -> Result<u64, Rejection> {
        let expires = now + ttl;
        self.store.maintain(now);
        if let Some(watch) = self.store.find(service, source) {
            self.store.renew(watch, form, expires);
            return Ok(self.store.seq_of(watch));
        }
        let ip = source.ip().to_canonical();
        let total = self.store.len();
        if total >= self.config.max_total {
            return Err(Rejection::TooManyWatches { scope: String::new(), max: saturate(self.config.max_total) });
        }
        let held = self.per_source.get(&ip).copied().unwrap_or(0);
        let network_held = self.per_network.get(&network(ip)).copied().unwrap_or(0);
        let config = &self.config;
        Refusal::check(config.max_per_source, config.max_per_network, config.max_total, total, held, network_held)
            .map_err(|refusal| {
                let (scope, max) = match refusal {
                    Refusal::Source(max) => (" from this address", max),
                    Refusal::Network(max) => (" from this network", max),
                    Refusal::NearlyFull(max) => (" from this address or network while nearly full", max),
                };
                Rejection::TooManyWatches { scope: scope.into(), max: saturate(max) }
            })?;
        let last = self.store.set_hash(&current) ^ meta_hash;
        let seq = self.store.insert(service, source, form, expires, last);
        for (map, key) in [(&mut self.per_source, ip), (&mut self.per_network, network(ip))] {
            if map.capacity() == 0 {
                // Never a table small enough for glibc's per-thread cache (see the store's
                // blocks): outgrown high in the heap, it would keep the heap from shrinking.
                map.reserve(FIRST_COUNTS);
            }
            *map.entry(key).or_default() += 1;
        }
        Ok(seq)
    }

    /// Ends `source`'s watch on `service`; returns whether there was one.
    fn unwatch(&mut self, source: SocketAddr, service: &str) -> bool {
        let Some(watch) = self.store.find(service, source) else { return false };
        let source = self.store.remove(watch);
        self.forget(source);
        true
    }

    /// Counts a watch of `source` gone.
    fn forget(&mut self, source: SocketAddr) {
        let ip = source.ip().to_canonical();
        for (map, key) in [(&mut self.per_source, ip), (&mut self.per_network, network(ip))] {
            if let Some(held) = map.get_mut(&key) {
                *held -= 1;
                if *held == 0 {
                    map.remove(&key);
                    // A map never shrinks by itself. Freed when empty, shrunk when sparse and
                    // large; not below, as a new small table could land above the watches'
                    // blocks in the heap and keep it from being trimmed when they go.
                    if map.is_empty() {
                        *map = HashMap::new();
                    } else if map.capacity() > 4096 && map.len() < map.capacity() / 4 {
                        map.shrink_to(FIRST_COUNTS);
                    }
                }
            }
        }
    }

    /// The table changed for `service`: its watchers are told at the end of the turn (see
    /// [`flush`](Self::flush)), if its live set is different.
    pub fn handle_change(&mut self, service: &str) {
        if let Some(id) = self.store.service_id(service) {
            let watched = self.store.service_mut(id);
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
    #[cfg(test)]
    fn changed(&mut self, service: &str, current: Vec<SocketAddr>) -> Option<(u64, Vec<(SocketAddr, Form)>)> {
        self.changed_hashed(service, current, 0)
    }

    /// [`changed`](Self::changed) with the hash of the instances' metadata ([`meta_hash`]).
    fn changed_hashed(
        &mut self,
        service: &str,
        current: Vec<SocketAddr>,
        meta_hash: u64,
    ) -> Option<(u64, Vec<(SocketAddr, Form)>)> {
        let id = self.store.service_id(service)?;
        let last = self.store.set_hash(&current) ^ meta_hash;
        let watched = self.store.service_mut(id);
        watched.dirty = false;
        if watched.last == last {
            return None;
        }
        watched.last = last;
        watched.seq += 1;
        let seq = watched.seq;
        Some((seq, self.store.watchers(id)))
    }

    /// Ends the watches that were not renewed in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(source) = self.store.pop_due(now) {
            self.forget(source);
        }
        self.store.maintain(now);
        if !self.meta_watchers.is_empty() && self.meta_swept.is_none_or(|at| now >= at + Duration::from_secs(1)) {
            self.meta_swept = Some(now);
            let store = &self.store;
            self.meta_watchers.retain(|(addr, service)| store.find(service, *addr).is_some());
        }
    }

    /// When the next watch expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.store.next_expiry()
    }
}

/// The first capacity of the counts per address and per network: 64 buckets of 32 bytes, more
/// than the largest chunk glibc keeps in its per-thread cache.
const FIRST_COUNTS: usize = 56;

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

/// A hash of the metadata of `current`'s instances (0 when none has any), mixed into the hash of
/// the set its watchers were told, so that a change of metadata is a change.
fn meta_hash(registry: &Registry, service: &str, current: &[SocketAddr]) -> u64 {
    if registry.meta_count() == 0 {
        return 0;
    }
    let mut hash = 0u64;
    for (k, &endpoint) in current.iter().enumerate() {
        if let Some(meta) = registry.metadata(service, endpoint) {
            let block = meta
                .as_block()
                .iter()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
            hash ^= block.rotate_left((k % 64) as u32) ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    hash
}

/// `instances` and their metadata cut to what fits one reply of a `WatchMeta` in either form:
/// each instance's `meta` line in text or its pairs in binary, whichever is longer, counted too.
///
/// The endpoints come first, as many as a plain watch lists ([`fit`]), so that metadata never
/// hides a live instance; then the metadata, in order, while it fits. The first instance whose
/// metadata does not fit carries the attribute [`meta::TRUNCATED`](crate::meta::TRUNCATED)
/// instead, and the ones after it none, so that a watcher tells "left out" from "has none"
/// (room for that marker is kept, at the cost of the last endpoints only when the list alone
/// nearly fills a reply).
fn fit_meta(
    service: &str,
    instances: Vec<SocketAddr>,
    registry: &Registry,
) -> (Vec<SocketAddr>, Vec<protocol::listing::MetaPairs>) {
    let room = Room::after(fit::instances_header(Form::Text) + service.len() + WATCH_RESERVE + fit::LIST_LEN);
    let endpoint = |&instance: &SocketAddr| {
        fit::instance_len(Form::Text, instance).max(fit::instance_len(Form::Binary { request_id: 0 }, instance))
    };
    let meta_len = |instance: SocketAddr, meta: &crate::meta::Metadata, pairs: &protocol::listing::MetaPairs| {
        let text = if meta.is_empty() { 0 } else { 7 + instance.to_string().len() + meta.to_string().len() };
        text.max(fit::binary_len(pairs))
    };
    let marker = crate::meta::Metadata::new().truncated(0);
    let marker_pairs = protocol::listing::pairs_of(&marker);
    // No more than a plain watch lists are looked at (a service may have thousands).
    let mut instances = instances;
    let mut plain = room;
    instances.truncate(plain.fit(instances.iter(), |instance| endpoint(instance)));
    let metas_of: Vec<_> =
        instances.iter().map(|&instance| registry.metadata(service, instance).cloned().unwrap_or_default()).collect();
    // First without room for the marker; again with it when some metadata is left out.
    let attempt = |reserve: usize| {
        let mut room = room;
        if !room.take(reserve) {
            return None;
        }
        let kept = room.fit(instances.iter(), |instance| endpoint(instance));
        let mut metas = Vec::with_capacity(kept);
        for (&instance, meta) in instances[..kept].iter().zip(&metas_of) {
            let pairs = protocol::listing::pairs_of(meta);
            if !room.take(meta_len(instance, meta, &pairs)) {
                break;
            }
            metas.push(pairs);
        }
        Some((kept, metas))
    };
    let reserve = instances.iter().map(|&i| meta_len(i, &marker, &marker_pairs)).max().unwrap_or(0);
    let (kept, mut metas) = match attempt(0) {
        Some((kept, metas)) if metas.len() == kept => (kept, metas),
        _ => attempt(reserve).unwrap_or_default(),
    };
    if metas.len() < kept {
        metas.push(marker_pairs);
        metas.resize(kept, Vec::new());
    }
    instances.truncate(kept);
    (instances, metas)
}

/// Room kept in a watch's reply for the verb, the sequence number and the TTL, besides the
/// name and a query reply's header. More than they take in either form (at most 52 bytes in
/// text, 17 in binary), and kept as it was so that watchers get the same lists.
const WATCH_RESERVE: usize = 64;

#[cfg(test)]
mod tests;
