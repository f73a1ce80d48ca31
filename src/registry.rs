//! The registry: which instances of which services are live, as a pure state machine.
//!
//! It owns no socket and reads no clock: every call takes `now`, and [`Registry::poll_timeout`]
//! tells the caller when the next registration expires. Ids come from a generator handed in at
//! construction. So expiry, refresh and rotation are tested to the nanosecond without sleeping.
//!
//! An instance is live while its last registration or heartbeat is younger than the TTL: with
//! the last one at `t`, it is live at every `now < t + ttl` and gone from `t + ttl` on.
//!
//! Costs: register, heartbeat and deregister are a hash lookup plus an update of an ordered
//! expiry index, O(log n); a query is a hash lookup plus the instances it returns. Expiry pops
//! the front of the deadline index, so it never scans the table.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use makler::registry::{Config, Registry};
//!
//! let mut ids = 0u128;
//! let mut registry = Registry::new(Config::default(), move || { ids += 1; uuid::Uuid::from_u128(ids) });
//! let t0 = Instant::now();
//! let ttl = Config::default().ttl;
//!
//! let id = registry.register(t0, "echo", "127.0.0.1:4000".parse().unwrap()).unwrap().id;
//! assert_eq!(registry.query(t0, "echo").unwrap().collect::<Vec<_>>(), ["127.0.0.1:4000".parse().unwrap()]);
//! assert!(registry.heartbeat(t0 + ttl / 2, id).is_ok());
//! assert!(registry.query(t0 + ttl / 2 + ttl, "echo").is_none());
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::protocol::Rejection;

/// The registry's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a registration lives after its last register or heartbeat.
    pub ttl: Duration,
    /// The limits on what may be registered.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config { ttl: Duration::from_secs(5), limits: Limits::default() }
    }
}

/// Limits on what may be registered, each reported with its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The longest service name, in bytes.
    pub max_name_len: usize,
    /// The characters a service name may hold besides ASCII letters and digits.
    pub name_punctuation: String,
    /// How many instances the table holds at most; beyond, registrations get `ERROR full`.
    pub max_instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_name_len: 64, name_punctuation: "-_.".to_owned(), max_instances: 100_000 }
    }
}

impl Limits {
    /// Checks a service name against the limits.
    pub fn check_name(&self, name: &str) -> Result<(), Rejection> {
        if name.len() > self.max_name_len {
            return Err(Rejection::NameTooLong { len: saturate(name.len()), max: saturate(self.max_name_len) });
        }
        if name.is_empty() {
            return Err(Rejection::BadName { name: String::new(), why: "it is empty".to_owned() });
        }
        if let Some(bad) = name.chars().find(|&c| !c.is_ascii_alphanumeric() && !self.name_punctuation.contains(c)) {
            return Err(Rejection::BadName {
                name: crate::protocol::excerpt(name, 40),
                why: format!("{bad:?} is not allowed; use ASCII letters, digits and {:?}", self.name_punctuation),
            });
        }
        Ok(())
    }
}

/// Checks that clients could connect to an endpoint: a real unicast address and a port.
pub fn check_endpoint(endpoint: SocketAddr) -> Result<(), Rejection> {
    let ip = endpoint.ip();
    let why = if endpoint.port() == 0 {
        return Err(Rejection::BadPort { port: "0".to_owned() });
    } else if ip.is_unspecified() {
        "it is the unspecified address"
    } else if ip.is_multicast() {
        "it is a multicast address"
    } else if ip == IpAddr::from([255, 255, 255, 255]) {
        "it is the broadcast address"
    } else {
        return Ok(());
    };
    Err(Rejection::UnusableIp { ip, why: why.to_owned() })
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The result of a successful [`Registry::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The registration's id; the same for every registration of the same (service, endpoint).
    pub id: Uuid,
    /// Whether this call created the entry (false: it refreshed an existing one).
    pub created: bool,
}

/// No live registration has that id: it never existed, expired, or was deregistered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no live registration with that id")]
pub struct NotFound;

/// What happened to an entry; the registry queues one per change for whoever announces or
/// replicates the table (see [`Registry::poll_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new entry.
    Registered,
    /// A register or heartbeat renewed an entry.
    Refreshed,
    /// An entry's TTL ran out.
    Expired,
    /// An entry was removed on request.
    Deregistered,
}

/// One change to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The entry's id.
    pub id: Uuid,
    /// The entry's service.
    pub service: Arc<str>,
    /// The entry's endpoint.
    pub endpoint: SocketAddr,
}

/// Where a slot or service index is kept; `u32` keeps the indexes small.
type Index = u32;

#[derive(Debug)]
struct Slot {
    id: Uuid,
    deadline: Instant,
    service: Index,
    /// Position in the service's `members`, where the endpoint is kept.
    position: Index,
}

/// An instance as its service lists it. The endpoint lives here rather than in the [`Slot`], so
/// a query reads one contiguous array instead of a slot per instance scattered over the table.
#[derive(Debug)]
struct Member {
    endpoint: SocketAddr,
    slot: Index,
}

#[derive(Debug)]
struct Service {
    name: Arc<str>,
    members: Vec<Member>,
    /// Where the next query starts.
    cursor: usize,
}

/// The table of live registrations. See the [module documentation](self).
pub struct Registry {
    config: Config,
    new_id: Box<dyn FnMut() -> Uuid + Send>,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<Index>,
    services: Vec<Option<Service>>,
    free_services: Vec<Index>,
    by_name: HashMap<Arc<str>, Index>,
    by_id: HashMap<Uuid, Index>,
    by_endpoint: HashMap<(Index, SocketAddr), Index>,
    /// Every live slot, ordered by deadline: the front expires first.
    expiry: BTreeSet<(Instant, Index)>,
    events: VecDeque<Event>,
    record_events: bool,
    expired_total: u64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .field("instances", &self.len())
            .field("services", &self.by_name.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Creates an empty registry. `new_id` is called once for every new entry; the broker passes
    /// [`Uuid::new_v4`], tests a counter.
    pub fn new(config: Config, new_id: impl FnMut() -> Uuid + Send + 'static) -> Self {
        Registry {
            config,
            new_id: Box::new(new_id),
            slots: Vec::new(),
            free_slots: Vec::new(),
            services: Vec::new(),
            free_services: Vec::new(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            by_endpoint: HashMap::new(),
            expiry: BTreeSet::new(),
            events: VecDeque::new(),
            record_events: false,
            expired_total: 0,
        }
    }

    /// The registry's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Turns the event queue on or off. Off (the default) nothing is queued, so a registry
    /// nobody reads events from does not grow.
    pub fn record_events(&mut self, on: bool) {
        self.record_events = on;
        if !on {
            self.events.clear();
        }
    }

    /// How many live instances the table holds (as of the last call that took `now`).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many services have at least one live instance.
    pub fn service_count(&self) -> usize {
        self.by_name.len()
    }

    /// How many entries have expired since the registry was made.
    pub fn expired_total(&self) -> u64 {
        self.expired_total
    }

    /// Registers `endpoint` for `service`, or refreshes it when it is registered already (then
    /// the id is the same as before, so a retransmitted register creates no duplicate).
    pub fn register(&mut self, now: Instant, service: &str, endpoint: SocketAddr) -> Result<Registration, Rejection> {
        self.config.limits.check_name(service)?;
        check_endpoint(endpoint)?;
        self.handle_timeout(now);

        let existing = self.by_name.get(service).copied();
        if let Some(&slot) = existing.and_then(|s| self.by_endpoint.get(&(s, endpoint))) {
            let id = self.refresh(now, slot);
            return Ok(Registration { id, created: false });
        }
        if self.len() >= self.config.limits.max_instances {
            return Err(Rejection::Full { max: saturate(self.config.limits.max_instances) });
        }

        let id = loop {
            let id = (self.new_id)();
            if !self.by_id.contains_key(&id) {
                break id;
            }
        };
        let service_index = existing.unwrap_or_else(|| self.add_service(service));
        let deadline = now + self.config.ttl;
        let slot_index = match self.free_slots.pop() {
            Some(index) => index,
            None => {
                self.slots.push(None);
                index_of(self.slots.len() - 1)
            }
        };
        let Some(service_entry) = self.services[service_index as usize].as_mut() else {
            unreachable!("by_name points at a live service")
        };
        let position = index_of(service_entry.members.len());
        service_entry.members.push(Member { endpoint, slot: slot_index });
        let name = Arc::clone(&service_entry.name);
        self.slots[slot_index as usize] = Some(Slot { id, deadline, service: service_index, position });
        self.by_id.insert(id, slot_index);
        self.by_endpoint.insert((service_index, endpoint), slot_index);
        self.expiry.insert((deadline, slot_index));
        self.emit(EventKind::Registered, id, name, endpoint);
        Ok(Registration { id, created: true })
    }

    /// Renews the registration with this id.
    pub fn heartbeat(&mut self, now: Instant, id: Uuid) -> Result<(), NotFound> {
        self.handle_timeout(now);
        let &slot = self.by_id.get(&id).ok_or(NotFound)?;
        self.refresh(now, slot);
        Ok(())
    }

    /// Removes the registration with this id at once.
    pub fn deregister(&mut self, now: Instant, id: Uuid) -> Result<(), NotFound> {
        self.handle_timeout(now);
        let &slot = self.by_id.get(&id).ok_or(NotFound)?;
        self.remove(slot, EventKind::Deregistered);
        Ok(())
    }

    /// The live instances of `service`, starting one further on than the previous query did, or
    /// `None` when it has none. The caller may take only a prefix: every instance comes first
    /// in turn, so all of them are handed out over successive queries.
    pub fn query(&mut self, now: Instant, service: &str) -> Option<impl ExactSizeIterator<Item = SocketAddr> + '_> {
        self.handle_timeout(now);
        let &service_index = self.by_name.get(service)?;
        let entry = self.services[service_index as usize].as_mut()?;
        let len = entry.members.len();
        let start = entry.cursor % len;
        entry.cursor = (start + 1) % len;
        let members = &entry.members;
        Some((0..len).map(move |k| members[(start + k) % len].endpoint))
    }

    /// The id a live endpoint is registered under.
    pub fn lookup(&self, service: &str, endpoint: SocketAddr) -> Option<Uuid> {
        let &service_index = self.by_name.get(service)?;
        let &slot = self.by_endpoint.get(&(service_index, endpoint))?;
        self.slots[slot as usize].as_ref().map(|s| s.id)
    }

    /// Removes every entry whose TTL has run out by `now`. Every other call does this first, so
    /// calling it is needed only to see expiries (events) when nothing else happens.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, slot)) = self.expiry.first() {
            if deadline > now {
                break;
            }
            self.remove(slot, EventKind::Expired);
            self.expired_total += 1;
        }
    }

    /// When the next entry expires, if any: the caller should call
    /// [`handle_timeout`](Self::handle_timeout) then (or act on any other input before).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.first().map(|&(deadline, _)| deadline)
    }

    /// The next queued change, when [`record_events`](Self::record_events) is on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn refresh(&mut self, now: Instant, slot_index: Index) -> Uuid {
        let deadline = now + self.config.ttl;
        let Some(slot) = self.slots[slot_index as usize].as_mut() else { unreachable!("indexes point at live slots") };
        self.expiry.remove(&(slot.deadline, slot_index));
        slot.deadline = deadline;
        self.expiry.insert((deadline, slot_index));
        let (id, service, position) = (slot.id, slot.service, slot.position);
        if self.record_events {
            if let Some(entry) = self.services[service as usize].as_ref() {
                let (name, endpoint) = (Arc::clone(&entry.name), entry.members[position as usize].endpoint);
                self.emit(EventKind::Refreshed, id, name, endpoint);
            }
        }
        id
    }

    fn remove(&mut self, slot_index: Index, kind: EventKind) {
        let Some(slot) = self.slots[slot_index as usize].take() else { unreachable!("indexes point at live slots") };
        self.free_slots.push(slot_index);
        self.by_id.remove(&slot.id);
        self.expiry.remove(&(slot.deadline, slot_index));

        let Some(service) = self.services[slot.service as usize].as_mut() else {
            unreachable!("slots point at live services")
        };
        let Member { endpoint, .. } = service.members.swap_remove(slot.position as usize);
        self.by_endpoint.remove(&(slot.service, endpoint));
        if let Some(moved) = service.members.get(slot.position as usize) {
            if let Some(moved) = self.slots[moved.slot as usize].as_mut() {
                moved.position = slot.position;
            }
        }
        let name = Arc::clone(&service.name);
        if service.members.is_empty() {
            self.by_name.remove(&name);
            self.services[slot.service as usize] = None;
            self.free_services.push(slot.service);
        }
        self.emit(kind, slot.id, name, endpoint);
    }

    fn add_service(&mut self, name: &str) -> Index {
        let service = Service { name: Arc::from(name), members: Vec::new(), cursor: 0 };
        let name = Arc::clone(&service.name);
        let index = match self.free_services.pop() {
            Some(index) => {
                self.services[index as usize] = Some(service);
                index
            }
            None => {
                self.services.push(Some(service));
                index_of(self.services.len() - 1)
            }
        };
        self.by_name.insert(name, index);
        index
    }

    fn emit(&mut self, kind: EventKind, id: Uuid, service: Arc<str>, endpoint: SocketAddr) {
        if self.record_events {
            self.events.push_back(Event { kind, id, service, endpoint });
        }
    }
}

/// Converts a table position to an [`Index`]. Tables are bounded by `max_instances`, which the
/// configuration keeps below `u32::MAX`.
fn index_of(position: usize) -> Index {
    Index::try_from(position).unwrap_or_else(|_| unreachable!("tables hold fewer than 2^32 entries"))
}

#[cfg(test)]
mod tests;
