//! The simulated half of `makler-load cluster`: N brokers' nodes on a virtual network and a
//! virtual clock, for the cluster sizes that real processes on a 2-core machine cannot show
//! (9 and 15 brokers), and for the smaller ones beside the real runs.
//!
//! Each broker is the library's own [`Node`], the sans-IO core a `makler-broker` process runs,
//! driven only through its public [`Core`] interface as the shell drives it: datagrams in
//! (`handle_datagram`), datagrams out (`poll_transmit`), timers (`poll_timeout`,
//! `handle_timeout`). Nothing here knows how replication works inside, so a change of the
//! peer protocol is measured as it is. Peer datagrams travel with a seeded delay (no loss);
//! clients (the registrations, the heartbeats, the checks whether a broker answers) speak to a
//! node directly at the virtual instant. Bytes are the nodes' own `peer_bytes_out` and
//! `peer_bytes_in` counters, as a real broker reports them. The simulation models neither CPU
//! nor bandwidth: its times are what the protocol's batching and round trips cost, not what a
//! loaded machine adds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use makler::core::Core;
use makler::node::{Face, Node, NodeConfig, ReplicaConfig, VerifyConfig};
use makler::protocol::{Request, Response, binary};
use makler::registry;
use uuid::Uuid;

use crate::Latencies;
use crate::cluster::{ClusterRow, Heartbeats, Plan, Traffic};
use crate::udp::{instance_endpoint, type_name};

/// The delay of a peer datagram: uniform in this range (loopback on a busy host).
const MIN_DELAY: Duration = Duration::from_micros(100);
const MAX_DELAY: Duration = Duration::from_micros(500);

/// The longest any one wait may take in virtual time before the run fails.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// The source address of every registration and heartbeat (quotas are off).
const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 0, 1)), 40000);

/// The address the checks whether a broker answers come from.
const CHECKER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 0, 2)), 40000);

/// A small seeded generator (SplitMix64): the simulation's only source of chance.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_nanos() as u64;
        lo + Duration::from_nanos(self.next() % span.saturating_add(1))
    }
}

/// A datagram on its way, ordered by arrival (then by when it was sent).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// The heartbeats: every instance's once per period, spread evenly over it.
struct Beats {
    ids: Vec<Uuid>,
    period: Duration,
    next: Instant,
    cursor: usize,
}

impl Beats {
    fn due(&self) -> Option<Instant> {
        (!self.ids.is_empty()).then_some(self.next)
    }

    fn advance(&mut self) {
        self.cursor = (self.cursor + 1) % self.ids.len();
        self.next += self.period / self.ids.len() as u32;
    }
}

/// The simulated cluster.
struct Net {
    now: Instant,
    rng: Rng,
    addrs: Vec<SocketAddr>,
    /// `None` while a broker is down.
    nodes: Vec<Option<Node>>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    beats: Beats,
    request: Vec<u8>,
    reply: Vec<u8>,
    /// Heartbeats not answered `OK` (a lease that expired).
    beats_missed: u64,
    beats_sent: u64,
    next_request: u32,
}

fn broker_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 7000))
}

/// A broker's node as `makler-broker --peers … --ttl TTL --probe-interval 0` with no quotas
/// builds it.
fn node(i: usize, brokers: usize, ttl: Duration, incarnation: u64) -> Node {
    let mut registry = registry::Config { ttl, ..registry::Config::default() };
    registry.limits.max_instances = 10_000_000;
    registry.limits.max_per_source = 0;
    registry.limits.max_per_network = 0;
    let config = NodeConfig {
        registry,
        unicast: broker_addr(i),
        incarnation,
        replica: ReplicaConfig { peers: (0..brokers).map(broker_addr).collect(), ..ReplicaConfig::default() },
        verify: VerifyConfig { probe_interval: None, ..VerifyConfig::default() },
        log_changes: false,
        ..NodeConfig::default()
    };
    // Ids from a counter in the node's own range (by incarnation), so a run replays.
    let mut next = u128::from(incarnation) << 64;
    Node::new(config, move || {
        next += 1;
        Uuid::from_u128(next)
    })
}

impl Net {
    fn new(brokers: usize, ttl: Duration, seed: u64) -> Net {
        let now = Instant::now();
        let mut rng = Rng(seed);
        let nodes = (0..brokers).map(|i| Some(node(i, brokers, ttl, rng.next()))).collect();
        let beats = Beats { ids: Vec::new(), period: ttl / 3, next: now, cursor: 0 };
        let mut net = Net {
            now,
            rng,
            addrs: (0..brokers).map(broker_addr).collect(),
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            beats,
            request: Vec::new(),
            reply: Vec::new(),
            beats_missed: 0,
            beats_sent: 0,
            next_request: 0,
        };
        for i in 0..brokers {
            net.start(i);
        }
        net
    }

    fn start(&mut self, i: usize) {
        let now = self.now;
        if let Some(node) = self.nodes[i].as_mut() {
            node.handle_start(now);
        }
        self.flush(i);
    }

    /// Sends what node `i` queued.
    fn flush(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else { return };
        let mut out = Vec::new();
        let mut sends = Vec::new();
        while let Some(transmit) = node.poll_transmit(self.now, &mut out) {
            sends.push((transmit.to, std::mem::take(&mut out)));
        }
        // Probes are off; anything asked for is dropped.
        while node.poll_probe().is_some() {}
        for (to, bytes) in sends {
            // Only brokers are reached; answers to clients were taken directly.
            if let Some(to) = self.addrs.iter().position(|&a| a == to) {
                let at = self.now + self.rng.between(MIN_DELAY, MAX_DELAY);
                self.seq += 1;
                self.queue.push(Reverse(InFlight { at, seq: self.seq, to, from: self.addrs[i], bytes }));
            }
        }
    }

    /// A client request to node `i` at this instant; its answer.
    fn ask(&mut self, i: usize, from: SocketAddr, request: &Request<'_>) -> Option<Response> {
        self.next_request = self.next_request.wrapping_add(1);
        self.request.clear();
        self.reply.clear();
        binary::encode_request(self.next_request, request, &mut self.request);
        let now = self.now;
        let node = self.nodes[i].as_mut()?;
        node.handle_datagram(now, Face::Client, from, &self.request, &mut self.reply)?;
        self.flush(i);
        binary::decode_response(&self.reply).ok().map(|(_, response)| response)
    }

    /// Whether node `i` answers a query for `service` with an instance.
    fn answers(&mut self, i: usize, service: &str) -> bool {
        matches!(self.ask(i, CHECKER, &Request::Query { service }), Some(Response::Instances(list)) if !list.is_empty())
    }

    fn stats(&self, i: usize) -> Option<makler::protocol::BrokerStats> {
        self.nodes[i].as_ref().map(|n| n.stats(self.now))
    }

    /// Handles the next datagram, timer or heartbeat if it is due by `until`; returns the node
    /// that handled it, or `None` when nothing is due.
    fn step(&mut self, until: Instant) -> Option<usize> {
        let datagram = self.queue.peek().map(|Reverse(d)| d.at);
        let timer = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().and_then(|n| n.poll_timeout()).map(|at| (at, i)))
            .min();
        let beat = self.beats.due();
        let next = [datagram, timer.map(|(at, _)| at), beat].into_iter().flatten().min()?;
        if next > until {
            return None;
        }
        self.now = self.now.max(next);
        if datagram == Some(next) {
            let Reverse(d) = self.queue.pop()?;
            let now = self.now;
            // A datagram to a broker that is down is lost.
            let Some(node) = self.nodes[d.to].as_mut() else { return Some(d.to) };
            self.reply.clear();
            // Peers answer nothing on the spot (catch-up pages and acks are queued), but an
            // answer would go back through the network like any other.
            if node.handle_datagram(now, Face::Client, d.from, &d.bytes, &mut self.reply).is_some()
                && !self.reply.is_empty()
            {
                if let Some(back) = self.addrs.iter().position(|&a| a == d.from) {
                    let at = self.now + self.rng.between(MIN_DELAY, MAX_DELAY);
                    self.seq += 1;
                    let bytes = std::mem::take(&mut self.reply);
                    self.queue.push(Reverse(InFlight { at, seq: self.seq, to: back, from: self.addrs[d.to], bytes }));
                }
            }
            self.flush(d.to);
            Some(d.to)
        } else if timer.map(|(at, _)| at) == Some(next) {
            let (_, i) = timer?;
            let now = self.now;
            self.nodes[i].as_mut()?.handle_timeout(now);
            self.flush(i);
            Some(i)
        } else {
            let id = self.beats.ids[self.beats.cursor];
            self.beats.advance();
            self.beats_sent += 1;
            if !matches!(self.ask(0, CLIENT, &Request::Heartbeat { id }), Some(Response::Ok)) {
                self.beats_missed += 1;
            }
            Some(0)
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.step(until).is_some() {}
        self.now = self.now.max(until);
    }

    /// Runs until `done`, checked every millisecond of virtual time; how long it took.
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Net) -> bool) -> io::Result<Duration> {
        let start = self.now;
        while !done(self) {
            if self.now - start > WAIT_LIMIT {
                return Err(io::Error::other(format!("simulated: timed out waiting until {what}")));
            }
            self.run_for(Duration::from_millis(1));
        }
        Ok(self.now - start)
    }

    /// The time from now until every node in `pending` satisfies `done`, checked after every
    /// input a node handles, so the figure is exact to the event.
    fn converge(
        &mut self,
        what: &str,
        mut pending: Vec<usize>,
        done: impl Fn(&mut Net, usize) -> bool,
    ) -> io::Result<Duration> {
        let start = self.now;
        pending.retain(|&j| !done(self, j));
        while !pending.is_empty() {
            let until = start + WAIT_LIMIT;
            match self.step(until) {
                Some(j) if pending.contains(&j) => {
                    if done(self, j) {
                        pending.retain(|&k| k != j);
                    }
                }
                Some(_) => {}
                None => return Err(io::Error::other(format!("simulated: timed out waiting until {what}"))),
            }
        }
        Ok(self.now - start)
    }

    fn traffic(&self) -> Vec<(u64, u64)> {
        (0..self.nodes.len())
            .map(|i| self.stats(i).map_or((0, 0), |s| (s["peer_bytes_out"], s["peer_bytes_in"])))
            .collect()
    }
}

/// Runs one simulated configuration: `brokers` brokers, `instances` instances registered at
/// the first and heartbeated there every TTL/3.
pub fn run(plan: &Plan, brokers: usize, instances: usize) -> io::Result<ClusterRow> {
    let mut net = Net::new(brokers, plan.ttl, plan.seed ^ (brokers as u64) << 32 ^ instances as u64);
    net.run_until("the brokers have met", |net| {
        (0..brokers).all(|i| net.stats(i).is_some_and(|s| s["complete"] == 1 && s["peers_up"] == brokers as u64 - 1))
    })?;
    // Registered as a loop turn would read them, 64 at a time, a millisecond apart.
    let types = plan.types.clamp(1, instances.max(1));
    for chunk in (0..instances).collect::<Vec<_>>().chunks(64) {
        for &i in chunk {
            let (service, endpoint) = (type_name("type", i % types), instance_endpoint(i));
            let request = Request::Register { service: &service, ip: Some(endpoint.ip()), port: endpoint.port() };
            match net.ask(0, CLIENT, &request) {
                Some(Response::Registered { id, .. }) => net.beats.ids.push(id),
                other => return Err(io::Error::other(format!("simulated: a registration was answered {other:?}"))),
            }
        }
        if net.beats.ids.len() == chunk.len() {
            net.beats.next = net.now;
        }
        net.run_for(Duration::from_millis(1));
    }
    net.run_until("every broker holds the table", |net| {
        (0..brokers).all(|i| net.stats(i).is_some_and(|s| s["instances"] >= instances as u64))
    })?;
    net.run_for(plan.settle);
    let before = net.traffic();
    let (sent_before, missed_before) = (net.beats_sent, net.beats_missed);
    net.run_for(plan.window);
    let after = net.traffic();
    let held = net.stats(0).map_or(0, |s| s["instances"]);
    let traffic = Traffic::between(&before, &after, plan.window, held);
    let beats_per_s = (net.beats_sent - sent_before) as f64 / plan.window.as_secs_f64();
    let missed = net.beats_missed - missed_before;

    let others: Vec<usize> = (1..brokers).collect();
    let (mut register, mut removal) = (Latencies::default(), Latencies::default());
    for k in 0..plan.samples {
        // A random pause, so samples fall anywhere in the batching and hello cycles.
        let pause = net.rng.between(Duration::from_millis(5), Duration::from_millis(50));
        net.run_for(pause);
        let service = format!("conv{k}");
        let endpoint = instance_endpoint(instances + k);
        let request = Request::Register { service: &service, ip: Some(endpoint.ip()), port: endpoint.port() };
        let Some(Response::Registered { id, .. }) = net.ask(0, CLIENT, &request) else {
            return Err(io::Error::other("simulated: a sample registration was refused"));
        };
        register.record(net.converge("the others answer", others.clone(), |net, j| net.answers(j, &service))?);
        if !matches!(net.ask(0, CLIENT, &Request::Deregister { id }), Some(Response::Ok)) {
            return Err(io::Error::other("simulated: a sample deregistration was refused"));
        }
        removal.record(net.converge("the others drop it", others.clone(), |net, j| !net.answers(j, &service))?);
    }

    // Catch-up: the last broker crashes and comes back at once with a new incarnation.
    let last = brokers - 1;
    net.nodes[last] = None;
    let incarnation = net.rng.next();
    net.nodes[last] = Some(node(last, brokers, plan.ttl, incarnation));
    net.start(last);
    let catch_up = net.run_until("the restarted broker caught up", |net| {
        let expected = net.stats(0).map_or(0, |s| s["instances"]);
        net.stats(last).is_some_and(|s| s["complete"] == 1 && s["instances"] >= expected)
    })?;
    let alive = net.stats(0).map_or(0, |s| s["instances"]);
    Ok(ClusterRow {
        simulated: true,
        brokers,
        instances,
        traffic,
        register: register.summary(Duration::from_secs(1), 0),
        removal: removal.summary(Duration::from_secs(1), 0),
        catch_up,
        heartbeats: Heartbeats {
            target: instances as f64 / (plan.ttl / 3).as_secs_f64(),
            sent: beats_per_s,
            ok: beats_per_s - missed as f64 / plan.window.as_secs_f64(),
        },
        alive,
    })
}
