//! A simulated network of broker nodes on a virtual clock, for deterministic tests.
//!
//! Nodes are [`Node`]s driven exactly as the shell drives them, but every datagram travels
//! through a virtual network that delays (uniformly in a range, which reorders), loses,
//! duplicates and partitions, decided by a seeded generator; probes connect to a virtual set of
//! listening, refusing and black-holed endpoints. Time jumps to the next delivery or timer, so
//! minutes of simulated traffic take milliseconds, and a failing seed replays exactly.
//!
//! Other endpoints (clients, servers) are plain addresses with an inbox.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::{Core, ProbeCmd, ProbeId, ProbeOutcome};
use crate::node::{Face, Node};

/// A small, fast, seeded generator (SplitMix64): the simulation's only source of chance.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = u64::try_from(hi.saturating_sub(lo).as_nanos()).unwrap_or(u64::MAX);
        lo + Duration::from_nanos(self.below(span.saturating_add(1)))
    }
}

/// How the virtual network treats datagrams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetConfig {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub loss: f64,
    pub duplicate: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            min_delay: Duration::from_micros(100),
            max_delay: Duration::from_millis(2),
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

#[derive(Debug)]
enum Event {
    Datagram { from: SocketAddr, to: SocketAddr, bytes: Vec<u8> },
    ProbeDone { node: usize, id: ProbeId, outcome: ProbeOutcome },
}

/// What a node received, for tests that replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub at: Instant,
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
    pub reply: Option<Vec<u8>>,
}

pub(crate) struct SimNode {
    pub addr: SocketAddr,
    /// `None` while the node is down.
    pub core: Option<Node>,
    pub trace: Vec<Received>,
}

/// The simulation. See the [module documentation](self).
pub(crate) struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub rng: Rng,
    pub net: NetConfig,
    pub nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: HashMap<u64, Event>,
    next_event: u64,
    /// Directed pairs that cannot reach each other.
    blocked: HashSet<(SocketAddr, SocketAddr)>,
    inboxes: HashMap<SocketAddr, VecDeque<(SocketAddr, Vec<u8>)>>,
    /// Endpoints where probes connect; black holes never answer; everything else refuses.
    pub listening: HashSet<SocketAddr>,
    pub black_holes: HashSet<SocketAddr>,
    /// Listening endpoints whose connect takes this long (a loaded server).
    pub slow: HashMap<SocketAddr, Duration>,
    aborted: HashSet<(usize, ProbeId)>,
    pub keep_traces: bool,
    /// The multicast group's address: a datagram sent there reaches every node that is up (its
    /// sender included) on [`Face::Group`], unless a partition cuts the pair off.
    pub group: Option<SocketAddr>,
    pub sent: u64,
    pub lost: u64,
}

impl Sim {
    pub fn new(seed: u64, net: NetConfig) -> Sim {
        let start = Instant::now();
        Sim {
            start,
            now: start,
            rng: Rng::new(seed),
            net,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_event: 0,
            blocked: HashSet::new(),
            inboxes: HashMap::new(),
            listening: HashSet::new(),
            black_holes: HashSet::new(),
            slow: HashMap::new(),
            aborted: HashSet::new(),
            keep_traces: false,
            group: None,
            sent: 0,
            lost: 0,
        }
    }

    /// Adds a node at `addr` and starts it; returns its index.
    pub fn add_node(&mut self, addr: SocketAddr, core: Node) -> usize {
        self.nodes.push(SimNode { addr, core: Some(core), trace: Vec::new() });
        let index = self.nodes.len() - 1;
        self.start(index);
        index
    }

    fn start(&mut self, node: usize) {
        let now = self.now;
        if let Some(core) = self.nodes[node].core.as_mut() {
            core.handle_start(now);
        }
        self.flush(node);
    }

    /// Takes a node down: it loses its state, and datagrams to it are lost.
    pub fn crash(&mut self, node: usize) {
        self.nodes[node].core = None;
    }

    /// Brings a node back with a fresh core.
    pub fn restart(&mut self, node: usize, core: Node) {
        self.nodes[node].core = Some(core);
        self.start(node);
    }

    /// Whether the node is up.
    pub fn is_up(&self, node: usize) -> bool {
        self.nodes[node].core.is_some()
    }

    /// The node's core (it must be up).
    #[track_caller]
    pub fn node(&mut self, node: usize) -> &mut Node {
        self.nodes[node].core.as_mut().expect("the node is up")
    }

    /// Cuts `a` and `b` off from each other, both ways.
    pub fn partition(&mut self, a: SocketAddr, b: SocketAddr) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Sends a datagram through the network as if `from` had.
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.sent += 1;
        if self.blocked.contains(&(from, to)) || self.rng.chance(self.net.loss) {
            self.lost += 1;
            return;
        }
        if self.rng.chance(self.net.duplicate) {
            let at = self.now + self.rng.between(self.net.min_delay, self.net.max_delay);
            self.schedule(at, Event::Datagram { from, to, bytes: bytes.clone() });
        }
        let at = self.now + self.rng.between(self.net.min_delay, self.net.max_delay);
        self.schedule(at, Event::Datagram { from, to, bytes });
    }

    /// Takes everything that arrived at `addr` (an endpoint that is not a node).
    pub fn take_inbox(&mut self, addr: SocketAddr) -> Vec<(SocketAddr, Vec<u8>)> {
        self.inboxes.remove(&addr).map(Vec::from).unwrap_or_default()
    }

    /// Sends `bytes` from `from` to `to` and runs until an answer arrives at `from` or a
    /// virtual second passes; returns the answer.
    pub fn request(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        self.send(from, to, bytes.to_vec());
        let deadline = self.now + Duration::from_secs(1);
        loop {
            if let Some(inbox) = self.inboxes.get_mut(&from) {
                if let Some(position) = inbox.iter().position(|(source, _)| *source == to) {
                    return inbox.remove(position).map(|(_, bytes)| bytes);
                }
            }
            if !self.step_until(deadline) {
                return None;
            }
        }
    }

    /// Runs every event and timer up to `until`, then sets the clock there.
    pub fn run_until(&mut self, until: Instant) {
        while self.step_until(until) {}
        self.now = self.now.max(until);
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Handles the next event or timer if it is due by `until`; returns false when none is.
    pub fn step_until(&mut self, until: Instant) -> bool {
        let next_event = self.queue.peek().map(|Reverse((at, _))| *at);
        let next_timer = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.core.as_ref().and_then(Core::poll_timeout).map(|at| (at, i)))
            .min();
        let event_first = match (next_event, next_timer) {
            (Some(e), Some((t, _))) => e <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return false,
        };
        if event_first {
            let at = next_event.unwrap_or(self.now);
            if at > until {
                return false;
            }
            let Some(Reverse((at, key))) = self.queue.pop() else { return false };
            self.now = self.now.max(at);
            if let Some(event) = self.events.remove(&key) {
                self.deliver(event);
            }
        } else {
            let Some((at, node)) = next_timer else { return false };
            if at > until {
                return false;
            }
            self.now = self.now.max(at);
            let now = self.now;
            if let Some(core) = self.nodes[node].core.as_mut() {
                core.handle_timeout(now);
            }
            self.flush(node);
        }
        true
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        let key = self.next_event;
        self.next_event += 1;
        self.events.insert(key, event);
        self.queue.push(Reverse((at, key)));
    }

    fn deliver(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Datagram { from, to, bytes } if Some(to) == self.group => {
                for index in 0..self.nodes.len() {
                    let node = self.nodes[index].addr;
                    let Some(core) = self.nodes[index].core.as_mut() else { continue };
                    if self.blocked.contains(&(from, node)) {
                        continue;
                    }
                    let mut reply = Vec::new();
                    if core.handle_datagram(now, Face::Group, from, &bytes, &mut reply).is_some() && !reply.is_empty() {
                        self.send(node, from, reply);
                    }
                    self.flush(index);
                }
            }
            Event::Datagram { from, to, bytes } => {
                let Some(index) = self.nodes.iter().position(|n| n.addr == to) else {
                    self.inboxes.entry(to).or_default().push_back((from, bytes));
                    return;
                };
                let Some(core) = self.nodes[index].core.as_mut() else { return };
                let mut reply = Vec::new();
                let answered = core.handle_datagram(now, Face::Client, from, &bytes, &mut reply).is_some();
                if self.keep_traces {
                    let reply = answered.then(|| reply.clone());
                    self.nodes[index].trace.push(Received { at: now, from, bytes, reply });
                }
                if answered && !reply.is_empty() {
                    self.send(to, from, reply);
                }
                self.flush(index);
            }
            Event::ProbeDone { node, id, outcome } => {
                if self.aborted.remove(&(node, id)) {
                    return;
                }
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.handle_probe(now, id, outcome);
                }
                self.flush(node);
            }
        }
    }

    /// Lets a node act on what was done to its state directly (a test that drives its
    /// registry without requests): runs its timers now and sends what it queued.
    pub fn poke(&mut self, node: usize) {
        let now = self.now;
        if let Some(core) = self.nodes[node].core.as_mut() {
            core.handle_timeout(now);
        }
        self.flush(node);
    }

    /// Sends what a node queued and runs the probes it asked for.
    fn flush(&mut self, node: usize) {
        let from = self.nodes[node].addr;
        let mut transmits = Vec::new();
        let mut probes = Vec::new();
        if let Some(core) = self.nodes[node].core.as_mut() {
            let mut out = Vec::new();
            while let Some(transmit) = core.poll_transmit(self.now, &mut out) {
                transmits.push((transmit.to, std::mem::take(&mut out)));
            }
            while let Some(command) = core.poll_probe() {
                probes.push(command);
            }
        }
        for (to, bytes) in transmits {
            self.send(from, to, bytes);
        }
        for command in probes {
            match command {
                ProbeCmd::Start { id, addr, .. } => {
                    if self.black_holes.contains(&addr) || self.blocked.contains(&(from, addr)) {
                        continue;
                    }
                    let outcome = if self.listening.contains(&addr) {
                        ProbeOutcome::Connected
                    } else {
                        ProbeOutcome::Failed(io::ErrorKind::ConnectionRefused)
                    };
                    let slow = self.slow.get(&addr).copied().unwrap_or_default();
                    let at = self.now + slow + self.rng.between(self.net.min_delay, self.net.max_delay);
                    self.schedule(at, Event::ProbeDone { node, id, outcome });
                }
                ProbeCmd::Abort { id } => {
                    self.aborted.insert((node, id));
                }
            }
        }
    }
}

/// A node for the simulation: ids from a counter in `node`'s own range, so runs replay.
pub(crate) fn node_with(node: u64, config: crate::node::NodeConfig) -> Node {
    let mut next = u128::from(node) << 64;
    Node::new(config, move || {
        next += 1;
        uuid::Uuid::from_u128(next)
    })
}
