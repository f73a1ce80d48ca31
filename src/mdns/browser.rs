//! The browser (RFC 6762 §5.2, RFC 6763 §4-§6): finds the instances of given service types on
//! the link, for import.
//!
//! Sans-IO as the [responder](super::responder): datagrams and time in, queries and events out.
//!
//! - **Continuous querying**: a PTR query per type, the first after 20–120 ms, then 1 s later,
//!   the interval doubling up to 60 minutes (§5.2), each carrying the PTR records already known
//!   with more than half their TTL left as known answers (§7.1).
//! - **A cache** of every record heard on the link that belongs to a browsed type: its PTRs,
//!   and the SRV, TXT and A/AAAA of the instances they name. A record lives for its TTL from
//!   when it was heard; a goodbye (TTL 0) leaves it 1 s more (§10.1); a unique record with the
//!   cache-flush bit replaces those of its name and type heard more than 1 s before (§10.2).
//!   It holds at most [`MAX_RECORDS`].
//! - **Refreshing**: a record still wanted is asked again at 80, 85, 90 and 95 % of its TTL
//!   (§5.2); missing SRV, TXT or addresses of an instance are asked for, at most once a
//!   second.
//! - **Events**: an instance is [found](BrowserEvent::Found) once it has a PTR, an SRV and at
//!   least one address, [changed](BrowserEvent::Changed) when any of that (or its TXT) changes,
//!   and [gone](BrowserEvent::Gone) when its PTR or SRV expires or its addresses all do.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{MessageType, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::wire::{self, same_record};

/// The first query's interval; each next one doubles it up to [`MAX_INTERVAL`].
const FIRST_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval between two continuous queries (§5.2).
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// How long a goodbye (TTL 0) leaves a record (§10.1), and how old a record must be for a
/// cache-flush to remove it (§10.2).
const GRACE: Duration = Duration::from_secs(1);
/// The percentages of a record's TTL at which it is asked again.
const REFRESH_AT: [u32; 4] = [80, 85, 90, 95];
/// How often a missing record of an instance is asked for.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(1);
/// The most records the cache holds (about 200 instances of five records each): a link that
/// sends more (a flood of instance names) gets the rest ignored until some expire, so memory
/// and the cost of a packet stay bounded. Storing a record scans the cache (a `Vec`); an index
/// by name would let this grow.
pub const MAX_RECORDS: usize = 1024;

/// The browser's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserConfig {
    /// Where queries go: [`super::GROUP_V4`] or [`super::GROUP_V6`].
    pub group: SocketAddr,
    /// The types to browse, as `_http._tcp` (`.local.` is added).
    pub types: Vec<String>,
    /// Seeds the first query's random delay.
    pub seed: u64,
}

/// An instance as the link describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its type, as configured (`_http._tcp`).
    pub service_type: String,
    /// Its instance label (the first label of its name), e.g. `Living Room Printer`.
    pub label: String,
    /// Its SRV target host, e.g. `printer.local.`.
    pub host: String,
    /// The target's addresses, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// The SRV port.
    pub port: u16,
    /// Its TXT strings, as sent (see [`Instance::pairs`]).
    pub txt: Vec<Vec<u8>>,
    /// The TTL of its PTR record, in seconds.
    pub ttl: u32,
}

impl Instance {
    /// The TXT strings as `key=value` pairs (RFC 6763 §6.3-6.4): the key before the first `=`
    /// (a string without `=` is a key with no value); empty strings are left out.
    pub fn pairs(&self) -> Vec<(String, Option<Vec<u8>>)> {
        self.txt
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| match s.iter().position(|&b| b == b'=') {
                Some(eq) => (String::from_utf8_lossy(&s[..eq]).into_owned(), Some(s[eq + 1..].to_vec())),
                None => (String::from_utf8_lossy(s).into_owned(), None),
            })
            .collect()
    }
}

/// What the browser saw change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowserEvent {
    /// A new instance, complete.
    Found(Instance),
    /// An instance whose target, port, addresses or TXT changed.
    Changed(Instance),
    /// An instance that left (goodbye) or expired.
    Gone {
        /// Its type.
        service_type: String,
        /// Its instance label.
        label: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    record: Record,
    heard: Instant,
    /// When it expires (its TTL after `heard`, or 1 s after a goodbye).
    expires: Instant,
    /// How many refresh queries were sent for it.
    refreshed: usize,
}

impl Entry {
    fn refresh_at(&self) -> Option<Instant> {
        let pct = REFRESH_AT.get(self.refreshed)?;
        Some(self.heard + Duration::from_secs(u64::from(self.record.ttl)) * *pct / 100)
    }
}

#[derive(Debug, Clone)]
struct Browsed {
    label: String,
    name: Name,
    next: Instant,
    interval: Duration,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Browser {
    config: BrowserConfig,
    types: Vec<Browsed>,
    cache: Vec<Entry>,
    /// The complete instances last reported, by type and instance name.
    known: BTreeMap<(String, String), Instance>,
    asked: HashMap<(String, RecordType), Instant>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<BrowserEvent>,
}

impl Browser {
    /// A browser that starts querying at `now` (after 20–120 ms). Types whose name does not
    /// parse are left out.
    pub fn new(now: Instant, config: BrowserConfig) -> Browser {
        let mut rng = config.seed | 1;
        let types = config
            .types
            .iter()
            .filter_map(|label| {
                let name = Name::from_ascii(format!("{}.local.", label.trim_end_matches('.'))).ok()?;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let next = now + Duration::from_millis(20 + rng % 101);
                Some(Browsed { label: label.clone(), name: name.to_lowercase(), next, interval: FIRST_INTERVAL })
            })
            .collect();
        Browser {
            config,
            types,
            cache: Vec::new(),
            known: BTreeMap::new(),
            asked: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The complete instances known now.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.known.values()
    }

    /// Takes a datagram that arrived on the mDNS socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(message) = wire::decode(bytes) else { return };
        if message.message_type != MessageType::Response || from.port() != super::PORT {
            return;
        }
        for record in message.answers.iter().chain(&message.additionals) {
            if wire::is_in(record.dns_class) && self.relevant(record) {
                self.store(now, record);
            }
        }
        self.update(now);
    }

    /// Sends the queries due at `now` and lets records expire.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.cache.retain(|e| e.expires > now);
        let mut query = wire::query();
        // The questions asked, to ask each once: a set, so that many refreshes due at once
        // cost what they are, not their square.
        let mut questions: HashSet<(Name, RecordType)> = HashSet::new();
        for browsed in &mut self.types {
            if browsed.next > now {
                continue;
            }
            query.queries.push(Query::query(browsed.name.clone(), RecordType::PTR));
            browsed.next = now + browsed.interval;
            browsed.interval = (browsed.interval * 2).min(MAX_INTERVAL);
        }
        for entry in &mut self.cache {
            if entry.refresh_at().is_some_and(|at| at <= now) {
                entry.refreshed += 1;
                while entry.refresh_at().is_some_and(|at| at <= now) {
                    entry.refreshed += 1;
                }
                if questions.insert((entry.record.name.clone(), entry.record.record_type())) {
                    query.queries.push(Query::query(entry.record.name.clone(), entry.record.record_type()));
                }
            }
        }
        self.update(now);
        for (name, qtype) in self.missing() {
            let key = (name.to_lowercase().to_ascii(), qtype);
            if self.asked.get(&key).is_some_and(|at| now.saturating_duration_since(*at) < RESOLVE_INTERVAL) {
                continue;
            }
            self.asked.insert(key, now);
            if questions.insert((name.clone(), qtype)) {
                query.queries.push(Query::query(name, qtype));
            }
        }
        self.asked.retain(|_, at| now.saturating_duration_since(*at) < RESOLVE_INTERVAL);
        if query.queries.is_empty() {
            return;
        }
        // Known answers: the PTRs asked about with more than half their TTL left (§7.1).
        for entry in &self.cache {
            let asked = self.types.iter().any(|t| t.name == entry.record.name)
                && query.queries.iter().take(self.types.len()).any(|q| q.name() == &entry.record.name);
            let left = entry.expires.saturating_duration_since(now);
            if asked && entry.record.record_type() == RecordType::PTR && left * 2 > ttl(&entry.record) {
                let mut known = entry.record.clone();
                known.ttl = u32::try_from(left.as_secs()).unwrap_or(u32::MAX);
                query.answers.push(known);
            }
        }
        self.out.extend(wire::encode(&query).into_iter().map(|bytes| (self.config.group, bytes)));
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let queries = self.types.iter().map(|t| t.next);
        let cache = self.cache.iter().flat_map(|e| [Some(e.expires), e.refresh_at()]).flatten();
        let resolve = self.asked.values().map(|at| *at + RESOLVE_INTERVAL);
        queries.chain(cache).chain(resolve).min()
    }

    /// The next query to send: its bytes into `out`, and where to.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<SocketAddr> {
        let (to, bytes) = self.out.pop_front()?;
        out.clear();
        out.extend_from_slice(&bytes);
        Some(to)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<BrowserEvent> {
        self.events.pop_front()
    }

    /// Whether a record belongs to a browsed type: a PTR of the type, or a record of a name
    /// under one (an instance), or an address or SRV of a host some SRV targets.
    fn relevant(&self, record: &Record) -> bool {
        let name = &record.name;
        if self.types.iter().any(|t| t.name.zone_of(name)) {
            return true;
        }
        self.cache.iter().any(|e| matches!(&e.record.data, RData::SRV(srv) if srv.target == *name))
    }

    fn store(&mut self, now: Instant, record: &Record) {
        if record.mdns_cache_flush {
            self.cache.retain(|e| {
                !(e.record.name == record.name
                    && e.record.record_type() == record.record_type()
                    && now.saturating_duration_since(e.heard) > GRACE)
            });
        }
        let expires = if record.ttl == 0 { now + GRACE } else { now + ttl(record) };
        let full = self.cache.len() >= MAX_RECORDS;
        match self.cache.iter_mut().find(|e| same_record(&e.record, record)) {
            Some(entry) if record.ttl == 0 => entry.expires = entry.expires.min(expires),
            Some(entry) => *entry = Entry { record: record.clone(), heard: now, expires, refreshed: 0 },
            None if record.ttl == 0 || full => {}
            None => self.cache.push(Entry { record: record.clone(), heard: now, expires, refreshed: 0 }),
        }
    }

    /// The questions that would complete an instance: SRV and TXT of a PTR's target, the
    /// addresses of an SRV's target.
    fn missing(&self) -> Vec<(Name, RecordType)> {
        let index = self.index(None);
        let has = |name: &Name, qtype: RecordType| {
            index.get(name).is_some_and(|entries| entries.iter().any(|e| e.record.record_type() == qtype))
        };
        let mut wanted = Vec::new();
        for ptr in self.records(RecordType::PTR) {
            let RData::PTR(target) = &ptr.data else { continue };
            for qtype in [RecordType::SRV, RecordType::TXT] {
                if !has(&target.0, qtype) {
                    wanted.push((target.0.clone(), qtype));
                }
            }
        }
        for srv in self.records(RecordType::SRV) {
            let RData::SRV(srv) = &srv.data else { continue };
            if !has(&srv.target, RecordType::A) && !has(&srv.target, RecordType::AAAA) {
                wanted.push((srv.target.clone(), RecordType::A));
                wanted.push((srv.target.clone(), RecordType::AAAA));
            }
        }
        wanted
    }

    /// The cache's live records (not goodbyes; at `now` when given, unexpired) by name, in the
    /// order heard: one pass, so that a packet costs what the cache holds, not its square.
    fn index(&self, now: Option<Instant>) -> HashMap<&Name, Vec<&Entry>> {
        let mut index: HashMap<&Name, Vec<&Entry>> = HashMap::new();
        for entry in &self.cache {
            if entry.record.ttl > 0 && now.is_none_or(|now| entry.expires > now) {
                index.entry(&entry.record.name).or_default().push(entry);
            }
        }
        index
    }

    fn records(&self, qtype: RecordType) -> impl Iterator<Item = &Record> {
        self.cache.iter().map(|e| &e.record).filter(move |r| r.record_type() == qtype && r.ttl > 0)
    }

    /// The complete instances now, compared with those last reported: the events.
    fn update(&mut self, now: Instant) {
        let index = self.index(Some(now));
        let mut current = BTreeMap::new();
        for browsed in &self.types {
            for ptr in index.get(&browsed.name).into_iter().flatten() {
                let RData::PTR(name) = &ptr.record.data else { continue };
                let of_name =
                    |qtype| index.get(&name.0).into_iter().flatten().filter(move |e| e.record.record_type() == qtype);
                let Some(RData::SRV(srv)) = of_name(RecordType::SRV).next_back().map(|e| &e.record.data) else {
                    continue;
                };
                let mut addresses: Vec<IpAddr> =
                    index.get(&srv.target).into_iter().flatten().filter_map(|e| e.record.data.ip_addr()).collect();
                if addresses.is_empty() {
                    continue;
                }
                addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
                addresses.dedup();
                let txt = match of_name(RecordType::TXT).next_back().map(|e| &e.record.data) {
                    Some(RData::TXT(txt)) => txt.txt_data.iter().map(|s| s.to_vec()).collect(),
                    _ => Vec::new(),
                };
                let label = name.0.iter().next().map(|l| String::from_utf8_lossy(l).into_owned()).unwrap_or_default();
                let instance = Instance {
                    service_type: browsed.label.clone(),
                    label,
                    host: srv.target.to_ascii(),
                    addresses,
                    port: srv.port,
                    txt,
                    ttl: ptr.record.ttl,
                };
                current.insert((browsed.label.clone(), name.0.to_lowercase().to_ascii()), instance);
            }
        }
        for (key, old) in &self.known {
            if !current.contains_key(key) {
                self.events
                    .push_back(BrowserEvent::Gone { service_type: old.service_type.clone(), label: old.label.clone() });
            }
        }
        for (key, new) in &current {
            match self.known.get(key) {
                None => self.events.push_back(BrowserEvent::Found(new.clone())),
                Some(old) if Instance { ttl: new.ttl, ..old.clone() } != *new => {
                    self.events.push_back(BrowserEvent::Changed(new.clone()))
                }
                Some(_) => {}
            }
        }
        self.known = current;
    }
}

fn ttl(record: &Record) -> Duration {
    Duration::from_secs(u64::from(record.ttl))
}
