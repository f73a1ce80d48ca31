//! Bridges to brokers of other networks: a query the local table cannot answer is asked there.
//!
//! Replication keeps the brokers of one network identical; a bridge is the opposite: networks
//! keep their own tables and only ask each other. On a local `NOT FOUND` for a query, the
//! broker sends a [`Peer::Query`] to each bridge that is up and answers the client later (from
//! its loop, without blocking it) with the first bridge's instances, or `NOT FOUND` when every
//! bridge said so or the bound (300 ms) passed. A bridged query is answered from the asked
//! broker's own table only, never bridged again, so two sites bridging to each other cannot
//! loop. Answers are cached briefly (positive and negative), never put in the table and never
//! replicated. A bridge that does not answer within the bound is down for a while, and queries
//! skip it (fail fast while every bridge is down).
//!
//! `Bridges` owns the bridges' states, the waiting queries, the cache and the counters. It speaks
//! the node's sub-machine convention (see the [node's documentation](super)): a client's query
//! comes in through `handle_query`, bridge datagrams through `handle_peer`, the bound through
//! `handle_timeout`; queries to bridges leave through `poll_transmit` (the node seals them like all
//! peer traffic), and what needs the node's rate limit or its reply encoding through `poll_event`.
//! The table is the node's, lent to answer a bridged query.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Face;
use crate::core::{Outbox, Transmit};
use crate::protocol::peer::{self, ListPacker, Peer, PeerFrame};
use crate::protocol::{BridgeStats, Form, Response, fit};
use crate::registry::Registry;
use crate::timers::Timers;

/// How bridges are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The remote brokers to ask.
    pub bridges: Vec<SocketAddr>,
    /// How long a bridged query may wait for its answers.
    pub bound: Duration,
    /// How long an answer is reused.
    pub cache_for: Duration,
    /// How long a bridge that did not answer is skipped.
    pub down_for: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            bridges: Vec::new(),
            bound: Duration::from_millis(300),
            cache_for: Duration::from_secs(1),
            down_for: Duration::from_secs(10),
        }
    }
}

/// A bridge, as `stats` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BridgeState {
    /// The remote broker.
    addr: SocketAddr,
    /// Until when it is skipped (it did not answer in time).
    down_until: Option<Instant>,
    /// Queries sent to it.
    asked: u64,
    /// Answers with instances.
    found: u64,
    /// Queries it did not answer within the bound.
    timeouts: u64,
}

impl BridgeState {
    /// Whether it is asked now.
    fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|until| until <= now)
    }
}

/// A client's query waiting for bridges.
#[derive(Debug)]
struct Pending {
    service: String,
    client: SocketAddr,
    form: Form,
    request_len: usize,
    /// The bridges asked that have not answered.
    waiting: Vec<SocketAddr>,
    deadline: Instant,
}

/// What the node must act on for the bridges: sends that pass its rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BridgeEvent {
    /// The deferred answer for a waiting client, in its form (unsealed, rate-limited like
    /// any reply).
    Answer { to: SocketAddr, form: Form, request_len: usize, response: Response },
    /// The answer to another network's query, a peer datagram (sealed with a key; sent when
    /// the rate limit lets it, judged by its sealed size).
    Serve { to: SocketAddr, request_len: usize, bytes: Vec<u8> },
    /// A bridge datagram refused (a bad name): counted as a rejected peer datagram.
    Rejected,
}

/// Cached answers kept at most.
const MAX_CACHED: usize = 4096;
/// Queries waiting at once, at most (more are answered `NOT FOUND` at once).
const MAX_PENDING: usize = 4096;

/// The bridges. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Bridges {
    config: BridgeConfig,
    /// This run's incarnation, on the bridge datagrams.
    me: u64,
    states: Vec<BridgeState>,
    pending: HashMap<u32, Pending>,
    deadlines: Timers<u32>,
    cache: HashMap<String, (Instant, Vec<SocketAddr>)>,
    next_id: u32,
    transmits: Outbox<Face>,
    events: VecDeque<BridgeEvent>,
    stats: Totals,
}

/// Counters over all bridges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    /// Client queries handed to the bridges.
    pub bridged: u64,
    /// Of those, answered with instances.
    pub found: u64,
    /// Queries from other networks' brokers answered from this table.
    pub answered: u64,
}

impl Bridges {
    pub fn new(config: BridgeConfig, me: u64) -> Self {
        let states = config
            .bridges
            .iter()
            .map(|&addr| BridgeState { addr, down_until: None, asked: 0, found: 0, timeouts: 0 })
            .collect();
        Bridges {
            config,
            me,
            states,
            pending: HashMap::new(),
            deadlines: Timers::new(),
            cache: HashMap::new(),
            next_id: 1,
            transmits: Outbox::new(usize::MAX),
            events: VecDeque::new(),
            stats: Totals::default(),
        }
    }

    /// The bridges are now `bridges` (a reload, at `now`): the kept ones keep their state and
    /// counters, the new ones start up, the removed ones are asked nothing more and heard no
    /// more: a query waiting on one waits no longer for it (its client is answered `NOT FOUND`,
    /// uncached, when only removed bridges were left to answer), and a late answer from one is
    /// ignored. The cache is emptied, since it may hold a removed bridge's answers.
    pub fn set_bridges(&mut self, now: Instant, bridges: &[SocketAddr]) {
        let mut states = Vec::with_capacity(bridges.len());
        for &addr in bridges {
            let kept = self.states.iter().find(|b| b.addr == addr).copied();
            states.push(kept.unwrap_or(BridgeState { addr, down_until: None, asked: 0, found: 0, timeouts: 0 }));
        }
        self.states = states;
        self.cache.clear();
        self.config.bridges = bridges.to_vec();
        let mut done = Vec::new();
        for (&id, pending) in &mut self.pending {
            pending.waiting.retain(|addr| bridges.contains(addr));
            if pending.waiting.is_empty() {
                done.push(id);
            }
        }
        done.sort_unstable();
        for id in done {
            self.finish(now, id, Vec::new(), false);
        }
    }

    /// The configured bridges.
    pub fn bridges(&self) -> &[SocketAddr] {
        &self.config.bridges
    }

    /// Whether any bridge is configured.
    pub fn is_on(&self) -> bool {
        !self.states.is_empty()
    }

    /// The counters over all bridges.
    pub fn totals(&self) -> Totals {
        self.stats
    }

    /// A client's query for `service`, which has no live instance here (see
    /// [`Context::bridging`](crate::service::Context::bridging)): asked at the
    /// bridges. Returns the answer to give at once (from the cache, or `NOT FOUND` when no
    /// bridge is up), or `None`: the answer comes later, through
    /// [`poll_event`](Self::poll_event), when the bridges answered or the bound passed.
    pub fn handle_query(
        &mut self,
        now: Instant,
        service: &str,
        client: SocketAddr,
        form: Form,
        request_len: usize,
    ) -> Option<Response> {
        self.ask(now, service, client, form, request_len).map(|instances| client_answer(form, instances))
    }

    /// A bridge datagram from a broker of another network: a query, answered from this
    /// table only (never bridged again), or an answer to one of this broker's queries.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request_len: usize,
        body: Peer<'_>,
        registry: &mut Registry,
    ) {
        match body {
            Peer::Query { id, service } => self.serve(now, from, request_len, id, service, registry),
            Peer::Answer { id, instances } => self.on_answer(now, from, id, instances),
            _ => {}
        }
    }

    fn serve(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request_len: usize,
        id: u32,
        service: &str,
        registry: &mut Registry,
    ) {
        if registry.config().limits.check_name(service).is_err() {
            self.events.push_back(BridgeEvent::Rejected);
            return;
        }
        self.stats.answered += 1;
        let mut packer = ListPacker::default();
        if let Some(instances) = registry.query(now, service) {
            for instance in instances {
                if !packer.push(&instance) {
                    break;
                }
            }
        }
        let frame = PeerFrame { node: self.me, body: Peer::Answer { id, instances: Vec::new() } };
        let mut bytes = Vec::new();
        packer.write(&frame, &mut bytes);
        self.events.push_back(BridgeEvent::Serve { to: from, request_len, bytes });
    }

    /// The next query to send to a bridge, its bytes moved into `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<Transmit<Face>> {
        self.transmits.pop(out)
    }

    /// The next thing the node must act on.
    pub fn poll_event(&mut self) -> Option<BridgeEvent> {
        self.events.pop_front()
    }

    /// Asks the bridges that are up for `service`, for `client`. Returns the instances to
    /// answer with at once, or `None`: the answer comes later.
    fn ask(
        &mut self,
        now: Instant,
        service: &str,
        client: SocketAddr,
        form: Form,
        request_len: usize,
    ) -> Option<&[SocketAddr]> {
        self.stats.bridged += 1;
        if self.cache.get(service).is_some_and(|(until, _)| *until > now) {
            let instances = &self.cache[service].1;
            self.stats.found += u64::from(!instances.is_empty());
            return Some(instances);
        }
        let up: Vec<SocketAddr> = self.states.iter().filter(|b| b.is_up(now)).map(|b| b.addr).collect();
        if up.is_empty() || self.pending.len() >= MAX_PENDING {
            return Some(&[]);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        for state in self.states.iter_mut().filter(|b| up.contains(&b.addr)) {
            state.asked += 1;
        }
        let frame = PeerFrame { node: self.me, body: Peer::Query { id, service } };
        for &to in &up {
            self.transmits.push(Face::Client, to, |out| peer::encode(&frame, out));
        }
        let deadline = now + self.config.bound;
        self.pending
            .insert(id, Pending { service: service.to_owned(), client, form, request_len, waiting: up, deadline });
        self.deadlines.insert(deadline, id);
        None
    }

    /// A bridge answered.
    fn on_answer(&mut self, now: Instant, from: SocketAddr, id: u32, instances: Vec<SocketAddr>) {
        let Some(pending) = self.pending.get_mut(&id) else { return };
        let Some(position) = pending.waiting.iter().position(|&b| b == from) else { return };
        pending.waiting.swap_remove(position);
        if let Some(state) = self.states.iter_mut().find(|b| b.addr == from) {
            state.down_until = None;
            if !instances.is_empty() {
                state.found += 1;
            }
        }
        if !instances.is_empty() || pending.waiting.is_empty() {
            self.finish(now, id, instances, true);
        }
    }

    /// Queries past their bound: the bridges that did not answer go down for a while, and the
    /// clients are told `NOT FOUND`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.deadlines.pop_due(now) {
            let Some(pending) = self.pending.get(&id) else { continue };
            for &silent in &pending.waiting {
                if let Some(state) = self.states.iter_mut().find(|b| b.addr == silent) {
                    state.timeouts += 1;
                    state.down_until = Some(now + self.config.down_for);
                    log::warn!(
                        "bridge {silent} did not answer within {:?}: skipped for {:?}",
                        self.config.bound,
                        self.config.down_for
                    );
                }
            }
            // Not cached: the silence says nothing about the service.
            self.finish(now, id, Vec::new(), false);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    fn finish(&mut self, now: Instant, id: u32, instances: Vec<SocketAddr>, cache: bool) {
        let Some(pending) = self.pending.remove(&id) else { return };
        self.deadlines.remove(pending.deadline, id);
        self.stats.found += u64::from(!instances.is_empty());
        if cache {
            if self.cache.len() >= MAX_CACHED {
                self.cache.retain(|_, (until, _)| *until > now);
            }
            if self.cache.len() < MAX_CACHED {
                self.cache.insert(pending.service, (now + self.config.cache_for, instances.clone()));
            }
        }
        let Pending { client, form, request_len, .. } = pending;
        let response = client_answer(form, &instances);
        self.events.push_back(BridgeEvent::Answer { to: client, form, request_len, response });
    }

    /// The bridges as `stats` shows them.
    pub fn stats(&self, now: Instant) -> Vec<BridgeStats> {
        self.states
            .iter()
            .map(|b| BridgeStats {
                addr: b.addr,
                up: b.is_up(now),
                asked: b.asked,
                found: b.found,
                timeouts: b.timeouts,
            })
            .collect()
    }
}

/// The answer a client gets for a bridge's instances: as many as fit one reply, or
/// `NOT FOUND`.
fn client_answer(form: Form, instances: &[SocketAddr]) -> Response {
    if instances.is_empty() {
        return Response::NotFound;
    }
    let mut list = Vec::new();
    fit::instances(form, instances.iter().copied(), &mut list);
    Response::Instances(list)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_REPLY_LEN;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 9)), 5000);

    fn bridges(n: u16) -> Bridges {
        Bridges::new(BridgeConfig { bridges: (1..=n).map(addr).collect(), ..BridgeConfig::default() }, 1)
    }

    fn asks(b: &mut Bridges) -> Vec<(SocketAddr, u32)> {
        let mut out = Vec::new();
        let mut asked = Vec::new();
        while let Some(transmit) = b.poll_transmit(&mut out) {
            match peer::decode(&out).map(|frame| frame.body) {
                Ok(Peer::Query { id, .. }) => asked.push((transmit.to, id)),
                other => panic!("not a query: {other:?}"),
            }
        }
        asked
    }

    /// The events queued, and a check that nothing is left to send.
    fn events(b: &mut Bridges) -> Vec<BridgeEvent> {
        assert_eq!(b.poll_transmit(&mut Vec::new()), None);
        std::iter::from_fn(|| b.poll_event()).collect()
    }

    fn answer(instances: Vec<SocketAddr>) -> BridgeEvent {
        let response = client_answer(Form::Text, &instances);
        BridgeEvent::Answer { to: CLIENT, form: Form::Text, request_len: 10, response }
    }

    #[test]
    fn the_first_bridge_with_instances_answers_and_the_answer_is_cached() {
        let t0 = Instant::now();
        let mut b = bridges(2);
        assert_eq!(b.ask(t0, "echo", CLIENT, Form::Text, 10), None);
        let sent = asks(&mut b);
        assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), [addr(1), addr(2)]);
        let id = sent[0].1;
        b.on_answer(t0, addr(1), id, Vec::new());
        assert!(events(&mut b).is_empty(), "one bridge has not answered yet");
        b.on_answer(t0, addr(2), id, vec![addr(4000)]);
        assert_eq!(events(&mut b), [answer(vec![addr(4000)])]);
        assert_eq!(b.ask(t0, "echo", CLIENT, Form::Text, 10), Some(&[addr(4000)][..]), "cached");
        assert!(events(&mut b).is_empty());
        assert_eq!(b.ask(t0 + Duration::from_secs(1), "echo", CLIENT, Form::Text, 10), None, "the cache expired");
        // A late answer, or one from an address that was not asked, changes nothing.
        b.on_answer(t0, addr(3), id, vec![addr(1)]);
        b.on_answer(t0, addr(1), id, vec![addr(1)]);
        assert_eq!(b.stats(t0).iter().map(|s| (s.asked, s.found)).collect::<Vec<_>>(), [(2, 0), (2, 1)]);
        assert_eq!(b.stats, Totals { bridged: 3, found: 2, answered: 0 });
    }

    #[test]
    fn a_silent_bridge_costs_the_bound_once_then_fails_fast() {
        let t0 = Instant::now();
        let mut b = bridges(1);
        assert_eq!(b.ask(t0, "echo", CLIENT, Form::Text, 10), None);
        asks(&mut b);
        assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_millis(300)));
        b.handle_timeout(t0 + Duration::from_millis(299));
        assert!(events(&mut b).is_empty());
        b.handle_timeout(t0 + Duration::from_millis(300));
        assert_eq!(events(&mut b), [answer(Vec::new())]);
        assert_eq!(b.poll_timeout(), None);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(b.ask(later, "echo", CLIENT, Form::Text, 10), Some(&[][..]), "fails fast, not cached");
        assert_eq!(b.ask(later, "other", CLIENT, Form::Text, 10), Some(&[][..]));
        assert!(!b.stats(later)[0].up);
        assert_eq!(b.ask(t0 + Duration::from_secs(11), "echo", CLIENT, Form::Text, 10), None, "asked again later");
        assert_eq!(b.stats(later)[0].timeouts, 1);
    }

    #[test]
    fn an_answer_brings_a_bridge_back_and_negative_answers_are_cached() {
        let t0 = Instant::now();
        let mut b = bridges(1);
        b.ask(t0, "echo", CLIENT, Form::Text, 10);
        let id = asks(&mut b)[0].1;
        b.on_answer(t0, addr(1), id, Vec::new());
        assert_eq!(events(&mut b), [answer(Vec::new())]);
        assert_eq!(b.ask(t0, "echo", CLIENT, Form::Text, 10), Some(&[][..]), "cached NOT FOUND");
        assert!(events(&mut b).is_empty());
    }

    #[test]
    fn waiting_queries_are_bounded() {
        let t0 = Instant::now();
        let mut b = bridges(1);
        for k in 0..MAX_PENDING {
            assert_eq!(b.ask(t0, &format!("s{k}"), CLIENT, Form::Text, 10), None);
        }
        assert_eq!(b.ask(t0, "one-more", CLIENT, Form::Text, 10), Some(&[][..]), "NOT FOUND at once");
        b.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(asks(&mut b).len(), MAX_PENDING, "a query each");
        assert_eq!(events(&mut b).len(), MAX_PENDING, "then an answer each");
        assert!(b.pending.is_empty());
    }

    #[test]
    fn a_removed_bridge_is_waited_for_and_heard_no_more() {
        let t0 = Instant::now();
        let mut b = bridges(2);
        b.ask(t0, "echo", CLIENT, Form::Text, 10);
        let first = asks(&mut b)[0].1;
        b.on_answer(t0, addr(1), first, Vec::new());
        b.ask(t0, "other", CLIENT, Form::Text, 10);
        let second = asks(&mut b)[0].1;
        assert!(events(&mut b).is_empty());
        // Bridge 2 goes: the query only it had left to answer ends at once, uncached; the
        // other still waits on bridge 1.
        b.set_bridges(t0, &[addr(1)]);
        assert_eq!(events(&mut b), [answer(Vec::new())]);
        assert_eq!(b.pending.len(), 1);
        b.on_answer(t0, addr(2), second, vec![addr(4000)]);
        assert!(events(&mut b).is_empty(), "a removed bridge's late answer is ignored");
        b.on_answer(t0, addr(1), second, vec![addr(4001)]);
        assert_eq!(events(&mut b), [answer(vec![addr(4001)])]);
        assert_eq!(b.ask(t0, "echo", CLIENT, Form::Text, 10), None, "the NOT FOUND was not cached");
    }

    #[test]
    fn a_client_answer_fits_one_reply() {
        let many: Vec<SocketAddr> =
            (0..1000).map(|k| SocketAddr::from(([10, 1, (k / 250) as u8, k as u8], 40000))).collect();
        for form in [Form::Text, Form::Binary { request_id: 7 }] {
            let response = client_answer(form, &many);
            let mut out = Vec::new();
            crate::protocol::encode_reply(form, &response, &mut out);
            assert!(out.len() <= MAX_REPLY_LEN, "{form:?}: {}", out.len());
            assert!(matches!(response, Response::Instances(list) if list.len() > 50));
        }
        assert_eq!(client_answer(Form::Text, &[]), Response::NotFound);
    }
}
