//! The responder (RFC 6762): advertises makler's instances on one link.
//!
//! Sans-IO, as the node's other sub-machines: [`Responder::add`] and [`Responder::remove`] say
//! what to advertise, [`Responder::handle_datagram`] takes what arrives on the mDNS socket,
//! [`Responder::handle_timeout`] the time; [`Responder::poll_transmit`] gives datagrams to send
//! (to the group, or unicast to a querier), [`Responder::poll_timeout`] when to call again,
//! [`Responder::poll_event`] what the node may log. Random delays come from a seed in the
//! configuration, not from a generator read here.
//!
//! Per instance:
//!
//! 1. **Probing** (§8.1): after 0–250 ms, three probes 250 ms apart, each a query for the
//!    instance name (type ANY; the first with the unicast-response bit) with the proposed SRV
//!    and TXT in the authority section. A response holding a record of that name with other
//!    data is a conflict: the instance is renamed `<label> (2)`, `(3)`, … and probes again
//!    (§9). A simultaneous probe for the name (a query with authority records of that name) is
//!    settled by comparing both sets (§8.2): the lexicographically later one wins; the loser
//!    probes again after 1 s.
//! 2. **Announcing** (§8.3): three announcements of all its records, 1 s then 2 s apart.
//! 3. **Live**: it answers questions (§6): unicast to a question with the unicast-response bit
//!    (or from a port other than 5353: a legacy unicast reply, §6.7, with the query's id and
//!    TTLs of at most 10 s); otherwise multicast, at once when every answer is a unique record,
//!    after 20–120 ms when a shared record (PTR) is among them (400–500 ms for a truncated
//!    query), aggregated with other pending answers. Known answers in the query whose TTL is at
//!    least half ours are left out (§7.1), as are answers another responder multicast meanwhile
//!    (§7.4), and a record is multicast at most once a second (§6). A PTR answer carries the
//!    SRV, TXT and address as additional records (RFC 6763 §12). A response with other data for
//!    its SRV or TXT sends it back to probing (§9).
//!
//!    Work and replies are bounded per datagram: at most [`MAX_QUESTIONS`] distinct questions
//!    (repeats are ignored) and [`MAX_RECORDS`] records are read, each question visits only the
//!    instances that answer it (a by-name index, `index`), answers are de-duplicated by
//!    hashing, and a unicast reply (QU or legacy) is ONE packet (truncated; TC on a legacy reply),
//!    at most [`UNICAST_PER_SOURCE`] a second to one source address and [`UNICAST_TOTAL`] a
//!    second to all of them (counted when refused, [`Responder::unicast_dropped`]): a small query from a
//!    spoofed on-link source is not amplified.
//! 4. **Goodbye** (§10.1): when removed, its records with TTL 0 (the host record only if no
//!    other instance has that address, the service type only if no other instance has it).
//!
//! After 15 conflicts within 10 s, each further probing waits 5 s before it starts (§8.1). A
//! goodbye another host sends for one of its announced records is answered by announcing that
//! record again (as mDNSResponder does): two brokers handing an instance over advertise the same
//! records, and the old owner's goodbye must not take it off the link.
//!
//! Not done: sleep proxies, and answers through the additional records of other responders.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, Record, RecordType};

use super::records::{self, InstanceRecords, is_unique};
use super::wire;
use super::{PORT, names};

mod answer;
mod conflicts;
pub mod handover;
mod index;

/// The probes' interval, and the most the first waits (§8.1).
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How many probes before a name is claimed.
const PROBES: u8 = 3;
/// How many announcements (§8.3: at least two).
const ANNOUNCEMENTS: u8 = 3;
/// A record is multicast at most this often (§6), except in probe defence.
const RATE_LIMIT: Duration = Duration::from_secs(1);
/// How long a probe that lost a simultaneous probe waits (§8.2).
const LOST_TIE: Duration = Duration::from_secs(1);
/// The TTL cap of a legacy unicast reply (§6.7).
const LEGACY_TTL: u32 = 10;
/// §8.1: after this many conflicts within [`CONFLICT_WINDOW`], each further probing waits
/// [`CONFLICT_BACKOFF`] before it starts, so that a host whose names are all taken (or a
/// peer that answers every probe) cannot make it flood the link with probes.
const CONFLICT_LIMIT: usize = 15;
/// See [`CONFLICT_LIMIT`].
const CONFLICT_WINDOW: Duration = Duration::from_secs(10);
/// See [`CONFLICT_LIMIT`].
const CONFLICT_BACKOFF: Duration = Duration::from_secs(5);
/// A record of ours another host said goodbye for is multicast again, at most this often.
const DEFEND_LIMIT: Duration = Duration::from_millis(250);

/// The most distinct questions of one query answered; the others are ignored. With
/// [`MAX_RECORDS`], this bounds the work one datagram costs: a datagram of thousands of repeated
/// questions is de-duplicated first, and at most this many are matched against the instances.
pub const MAX_QUESTIONS: usize = 32;
/// The most records of one datagram read: a query's known answers, a response's answers and
/// additional records (for conflicts and defence); the others are ignored.
pub const MAX_RECORDS: usize = 64;
/// The most unicast replies (QU or legacy) one source address gets per second:
/// a unicast reply goes to an address nobody checked (a spoofed on-link source), so it is
/// one packet at most, and a burst of queries gets only a few of them.
pub const UNICAST_PER_SOURCE: u32 = 4;
/// The most unicast replies all sources together get per second: a host that forges many
/// on-link source addresses, each within [`UNICAST_PER_SOURCE`], still draws at most this many
/// packets of at most [`super::MAX_PACKET`] bytes a second towards the link (about 92 kB).
pub const UNICAST_TOTAL: u32 = 64;
/// See [`UNICAST_PER_SOURCE`].
const UNICAST_WINDOW: Duration = Duration::from_secs(1);
/// The most sources whose unicast replies are counted at once; when full, the counts restart.
const UNICAST_SOURCES: usize = 1024;

/// What to advertise: an instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The service's name in makler (`web`): the type is `_web._tcp`.
    pub service: String,
    /// Where it listens.
    pub endpoint: SocketAddr,
    /// Its TXT strings (`key=value`), each at most 255 bytes; none makes one empty string.
    pub txt: Vec<Vec<u8>>,
}

/// The responder's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderConfig {
    /// Where multicast goes: [`super::GROUP_V4`] or [`super::GROUP_V6`] (or a test's group).
    pub group: SocketAddr,
    /// Seeds the random delays (probe start, shared answers), so that two responders started
    /// together do not probe in step.
    pub seed: u64,
}

/// Something the node may want to know (and log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponderEvent {
    /// The instance's name was taken on the link: it probes for `name` instead.
    Renamed {
        /// The service.
        service: String,
        /// The instance.
        endpoint: SocketAddr,
        /// The new instance label.
        label: String,
    },
    /// The instance's name is claimed and announced.
    Announced {
        /// The service.
        service: String,
        /// The instance.
        endpoint: SocketAddr,
        /// Its instance label.
        label: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `sent` probes so far; the next (or the claim) at `next`.
    Probing {
        sent: u8,
        next: Instant,
    },
    /// `sent` announcements so far; the next at `next`.
    Announcing {
        sent: u8,
        next: Instant,
    },
    Live,
}

#[derive(Debug, Clone)]
struct Instance {
    advert: Advert,
    /// Which claim of the name: 1 for the label itself, n for `label (n)`.
    claim: u32,
    label: String,
    records: InstanceRecords,
    state: State,
    /// Handed over to another responder (see [`Responder::hand_over`]): it answers until then,
    /// or until the new owner's announcement is heard, and goes without a goodbye only then.
    leaving: Option<Instant>,
}

impl Instance {
    fn answers(&self) -> bool {
        !matches!(self.state, State::Probing { .. })
    }
}

/// A multicast response waiting for its delay (§6), aggregating the answers decided meanwhile.
#[derive(Debug, Clone)]
struct Pending {
    at: Instant,
    answers: Vec<Record>,
    additionals: Vec<Record>,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Responder {
    config: ResponderConfig,
    rng: u64,
    instances: BTreeMap<(String, SocketAddr), Instance>,
    pending: Option<Pending>,
    /// When each record (by name, type, data) was last multicast.
    multicast_at: HashMap<(String, RecordType, Vec<u8>), Instant>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<ResponderEvent>,
    /// When the conflicts of the last [`CONFLICT_WINDOW`] happened (§8.1's rate limit).
    conflicts: VecDeque<Instant>,
    /// Unicast replies per source in the current [`UNICAST_WINDOW`] (see [`UNICAST_PER_SOURCE`]).
    unicast_sent: HashMap<IpAddr, (Instant, u32)>,
    /// The records compared while handling the last datagram: what the caps bound.
    work: usize,
    /// This host's address on the link, if known: datagrams from it are our own, looped back.
    own: Option<IpAddr>,
    /// Which instances answer each name (see [`index`]).
    index: index::NameIndex,
    /// Unicast replies in the current [`UNICAST_WINDOW`], from every source (see
    /// [`UNICAST_TOTAL`]).
    unicast_total: (Option<Instant>, u32),
    /// Unicast replies not sent for a cap (per source or in all).
    unicast_dropped: u64,
}

impl Responder {
    /// A responder advertising nothing yet.
    pub fn new(config: ResponderConfig) -> Responder {
        let rng = config.seed | 1;
        Responder {
            config,
            rng,
            instances: BTreeMap::new(),
            pending: None,
            multicast_at: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            conflicts: VecDeque::new(),
            unicast_sent: HashMap::new(),
            work: 0,
            own: None,
            index: index::NameIndex::default(),
            unicast_total: (None, 0),
            unicast_dropped: 0,
        }
    }

    /// Names this host's address on the link: a datagram from it is our own multicast, looped
    /// back, never another responder's (see [`handover`]).
    pub fn set_own_address(&mut self, own: IpAddr) {
        self.own = Some(own);
    }

    /// Advertises `advert` (probing first), or, when it is advertised already, updates its TXT
    /// (announced again). Returns false when its service's name makes no DNS label.
    pub fn add(&mut self, now: Instant, advert: Advert) -> bool {
        self.add_as(now, advert, false)
    }

    /// [`add`](Self::add), or, with `claimed`, [`take_over`](Self::take_over).
    fn add_as(&mut self, now: Instant, advert: Advert, claimed: bool) -> bool {
        let key = (advert.service.clone(), advert.endpoint);
        if let Some(instance) = self.instances.get_mut(&key) {
            // Owned again before the handover ended: it stays, as it is.
            instance.leaving = None;
            if instance.advert.txt != advert.txt {
                instance.advert.txt = advert.txt;
                // Same names: the index does not change.
                instance.records = build(&instance.advert, &instance.label).unwrap_or(instance.records.clone());
                if instance.state == State::Live {
                    instance.state = State::Announcing { sent: 0, next: now };
                }
            }
            return true;
        }
        let label = names::instance_label(advert.endpoint);
        let Some(records) = build(&advert, &label) else { return false };
        let state = if claimed {
            State::Announcing { sent: 0, next: now }
        } else {
            State::Probing { sent: 0, next: now + self.jitter(PROBE_INTERVAL) }
        };
        self.index.insert(&key, &records);
        self.instances.insert(key, Instance { advert, claim: 1, label, records, state, leaving: None });
        true
    }

    /// Stops advertising an instance: its goodbye (TTL 0) goes at once if it was announced.
    pub fn remove(&mut self, now: Instant, service: &str, endpoint: SocketAddr) {
        let key = (service.to_owned(), endpoint);
        let Some(instance) = self.instances.remove(&key) else { return };
        self.index.remove(&key, &instance.records);
        if instance.answers() {
            let records = self.goodbye_records(&instance);
            self.multicast(now, records, Vec::new());
        }
    }

    /// Goodbyes for every announced instance, as when the broker stops.
    pub fn remove_all(&mut self, now: Instant) {
        let keys: Vec<_> = self.instances.keys().cloned().collect();
        for (service, endpoint) in keys {
            self.remove(now, &service, endpoint);
        }
    }

    /// The instance label `endpoint` of `service` is advertised under now (after renames).
    pub fn label(&self, service: &str, endpoint: SocketAddr) -> Option<&str> {
        self.instances.get(&(service.to_owned(), endpoint)).map(|i| i.label.as_str())
    }

    /// Takes a datagram that arrived on the mDNS socket from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.work = 0;
        let Some(mut message) = wire::decode(bytes) else { return };
        message.answers.truncate(MAX_RECORDS);
        message.additionals.truncate(MAX_RECORDS.saturating_sub(message.answers.len()));
        message.authorities.truncate(MAX_RECORDS);
        match message.message_type {
            // §11: responses from another port are not mDNS responses.
            MessageType::Response if from.port() == PORT => self.handle_response(now, from, &message),
            MessageType::Response => {}
            MessageType::Query => {
                self.settle_probes(now, &message);
                self.answer(now, from, &message);
            }
        }
    }

    /// Sends what is due at `now`: probes, announcements, delayed answers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut probes = wire::query();
        let mut announce = Vec::new();
        let mut announced = Vec::new();
        for instance in self.instances.values_mut() {
            match instance.state {
                State::Probing { sent, next } if next <= now => {
                    if sent == PROBES {
                        instance.state = State::Announcing { sent: 0, next: now };
                    } else {
                        let mut question = Query::query(instance.records.srv.name.clone(), RecordType::ANY);
                        question.set_mdns_unicast_response(sent == 0);
                        probes.queries.push(question);
                        // No cache-flush bit in a probe's authority section (§10.2).
                        for record in [&instance.records.srv, &instance.records.txt] {
                            let mut record = record.clone();
                            record.mdns_cache_flush = false;
                            probes.authorities.push(record);
                        }
                        instance.state = State::Probing { sent: sent + 1, next: now + PROBE_INTERVAL };
                    }
                }
                _ => {}
            }
            if let State::Announcing { sent, next } = instance.state
                && next <= now
            {
                announce.extend(instance.records.all().into_iter().cloned());
                let sent = sent + 1;
                instance.state = if sent == ANNOUNCEMENTS {
                    State::Live
                } else {
                    State::Announcing { sent, next: now + RATE_LIMIT * u32::from(sent) }
                };
                if sent == 1 {
                    announced.push(ResponderEvent::Announced {
                        service: instance.advert.service.clone(),
                        endpoint: instance.advert.endpoint,
                        label: instance.label.clone(),
                    });
                }
            }
        }
        if !probes.queries.is_empty() {
            self.send(self.config.group, &probes);
        }
        if !announce.is_empty() {
            dedup(&mut announce);
            let mut message = wire::response();
            message.answers = announce;
            self.stamp(now, &message.answers);
            self.send(self.config.group, &message);
        }
        self.events.extend(announced);
        self.end_handovers(now);
        if let Some(pending) = self.pending.take_if(|p| p.at <= now) {
            self.multicast(now, pending.answers, pending.additionals);
        }
        self.multicast_at.retain(|_, at| now.saturating_duration_since(*at) < RATE_LIMIT);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let states = self.instances.values().filter_map(|i| match i.state {
            State::Probing { next, .. } | State::Announcing { next, .. } => Some(next),
            State::Live => None,
        });
        let leaving = self.instances.values().filter_map(|i| i.leaving);
        states.chain(leaving).chain(self.pending.as_ref().map(|p| p.at)).min()
    }

    /// The next datagram to send: its bytes into `out` (cleared first), and where to.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<SocketAddr> {
        let (to, bytes) = self.out.pop_front()?;
        out.clear();
        out.extend_from_slice(&bytes);
        Some(to)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ResponderEvent> {
        self.events.pop_front()
    }

    fn jitter(&mut self, max: Duration) -> Duration {
        // xorshift64: deterministic from the seed, good enough to spread delays.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(self.rng % (millis + 1))
    }

    fn send(&mut self, to: SocketAddr, message: &Message) {
        self.out.extend(wire::encode(message).into_iter().map(|bytes| (to, bytes)));
    }

    /// Unicast replies not sent because their source had [`UNICAST_PER_SOURCE`] this second,
    /// or all sources [`UNICAST_TOTAL`] (`stats`: `mdns_unicast_dropped`).
    pub fn unicast_dropped(&self) -> u64 {
        self.unicast_dropped
    }

    /// How many names the by-name index holds (tests).
    #[cfg(test)]
    pub(crate) fn index_len(&self) -> usize {
        self.index.len()
    }

    /// The records compared while handling the last datagram (tests bound it).
    #[cfg(test)]
    pub(crate) fn work(&self) -> usize {
        self.work
    }

    /// Multicasts answers now, noting when each was sent.
    fn multicast(&mut self, now: Instant, answers: Vec<Record>, additionals: Vec<Record>) {
        if answers.is_empty() {
            return;
        }
        let mut message = wire::response();
        message.answers = answers;
        message.additionals = additionals;
        self.stamp(now, &message.answers);
        self.send(self.config.group, &message);
    }

    fn stamp(&mut self, now: Instant, records: &[Record]) {
        for record in records {
            self.multicast_at.insert(key(record), now);
        }
    }

    /// The goodbye of an instance being removed (it is no longer in the table).
    fn goodbye_records(&self, instance: &Instance) -> Vec<Record> {
        let r = &instance.records;
        let mut records = vec![r.ptr.clone(), r.srv.clone(), r.txt.clone()];
        let others = || self.instances.values().filter(|i| i.answers());
        if !others().any(|i| i.advert.endpoint.ip() == instance.advert.endpoint.ip()) {
            records.push(r.host.clone());
        }
        if !others().any(|i| i.advert.service == instance.advert.service) {
            records.push(r.types_ptr.clone());
        }
        for record in &mut records {
            record.ttl = 0;
        }
        records
    }
}

/// The records of `advert` under `label`, or `None` when the names cannot be made.
fn build(advert: &Advert, label: &str) -> Option<InstanceRecords> {
    let type_name = records::type_name(&advert.service)?;
    let name: Name = records::instance_name(&advert.service, label)?;
    Some(InstanceRecords::new(&type_name, &name, advert.endpoint, &advert.txt))
}

fn key(record: &Record) -> (String, RecordType, Vec<u8>) {
    (record.name.to_lowercase().to_ascii(), record.record_type(), wire::rdata_bytes(&record.data))
}

/// Leaves one of each record (the first), in linear time.
fn dedup(records: &mut Vec<Record>) {
    let mut seen = HashSet::with_capacity(records.len());
    records.retain(|record| seen.insert(key(record)));
}

/// The largest TTL given for each record among `records` (known answers, another responder's
/// answers).
fn known_ttls(records: &[Record]) -> HashMap<(String, RecordType, Vec<u8>), u32> {
    let mut ttls = HashMap::with_capacity(records.len());
    for record in records {
        let ttl = ttls.entry(key(record)).or_insert(0);
        *ttl = (*ttl).max(record.ttl);
    }
    ttls
}
