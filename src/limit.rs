//! Rate limits, as pure state machines: token buckets per key, and response-rate limiting.
//!
//! A UDP service whose replies are larger than its requests is a reflector: an attacker sends
//! small requests with a victim's address as the source, and the service sends the victim large
//! replies. DNS servers defend with response-rate limiting (BIND, NSD, Knot); so does makler:
//!
//! - Every request is still handled (a heartbeat still renews); only *replies larger than their
//!   request* are limited, since only they amplify. A reply no larger than its request is always
//!   sent.
//! - Such replies cost a token from the source address's bucket (`rate` a second, as many in a
//!   burst) and from its network's bucket (the /24 of an IPv4 address, the /56 of an IPv6 one;
//!   four times the rate), so one source, or many in one network, get at most that many.
//! - Beyond, every second limited request gets a short answer instead (`ERROR rate limited`,
//!   "slip 2" as DNS servers do), sent only when it is no larger than the request, so a real
//!   client learns why and slows down; the others get nothing. Both are counted.
//! - Acknowledgements are not limited by `rate`: the id, `OK`, `NOT FOUND` (or "catching up")
//!   answering `register`, `heartbeat`, `deregister` or `report` ([`ReplyKind::Ack`]). They are
//!   hardly reflection: an id is 37 bytes in text for a request of at least 12 (`register a 1`),
//!   25 in binary for at least 7, the rest are shorter still: less than four times the request
//!   whatever the table holds, where a query's reply grows with it (278 times a 5-byte
//!   request). And a heartbeat's or deregistration's `OK` needs an id only its holder knows. A
//!   host registering 1,000 instances in a burst gets its 1,000 ids. They take no token from
//!   the reply buckets, only from a bucket of their own per source address, generous enough for
//!   any real host ([`ACK_BURST`] at once, [`ACK_RATE`] a second) and there only so that a flood
//!   of forged registrations cannot draw acknowledgements without bound towards one address:
//!   beyond it they are dropped and counted ([`LimitStats::acks_dropped`]). Buckets are kept for
//!   65,536 addresses at once, like the others; the addresses beyond, during a flood from more
//!   sources than that, share one more bucket, so a host that arrives then is not refused
//!   outright and the flood's sources together get no more than one address. Their errors
//!   (`ERROR quota …`, a bad name echoed) are limited like any reply, and so is everything else:
//!   queries, listings, `stats`, `watch` and its notifications, a bridge's answers.
//! - Sources in the exempt networks (loopback by default: a spoofed loopback source cannot come
//!   from the network) are not limited.
//!
//! So the bytes sent towards any one address are at most four times the bytes it (or a
//! spoofer) sent, plus `rate × 1400` bytes a second; towards one network, plus
//! `4 × rate × 1400`. Of those four times, acknowledgements are at most
//! `ACK_RATE × 37` bytes a second after a first `ACK_BURST × 37` (76 kB each).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// Token buckets by key: `rate` tokens a second, at most `burst` held.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: f64,
    burst: f64,
    capacity: usize,
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    /// Buckets refilling at `rate` a second, holding at most `burst`, for at most `capacity`
    /// keys at once (beyond, a key without a bucket is refused until idle ones are swept).
    pub fn new(rate: f64, burst: f64, capacity: usize) -> Self {
        Buckets { rate, burst, capacity, buckets: HashMap::new() }
    }

    /// Takes a token for `key` if it has one.
    pub fn take(&mut self, now: Instant, key: K) -> bool {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.capacity {
            return false;
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, last) = self.buckets.entry(key).or_insert((burst, now));
        *tokens = (*tokens + rate * now.saturating_duration_since(*last).as_secs_f64()).min(burst);
        *last = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// Refills at `rate` a second, holding at most `burst`, from `now` on: each bucket is first
    /// filled up to `now` at the old rate, then holds no more than the new burst.
    pub fn set_rate(&mut self, now: Instant, rate: f64, burst: f64) {
        for (tokens, last) in self.buckets.values_mut() {
            *tokens =
                (*tokens + self.rate * now.saturating_duration_since(*last).as_secs_f64()).min(self.burst).min(burst);
            *last = now;
        }
        (self.rate, self.burst) = (rate, burst);
    }

    /// Whether `key` would be refused only for want of room: it has no bucket, and the table is
    /// full.
    pub fn is_full_for(&self, key: K) -> bool {
        self.buckets.len() >= self.capacity && !self.buckets.contains_key(&key)
    }

    /// Whether `key` has a token now (without taking it).
    pub fn has(&self, now: Instant, key: K) -> bool {
        match self.buckets.get(&key) {
            Some(&(tokens, last)) => tokens + self.rate * now.saturating_duration_since(last).as_secs_f64() >= 1.0,
            None => self.buckets.len() < self.capacity,
        }
    }

    /// Forgets buckets that have refilled: they hold nothing worth keeping.
    pub fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, (tokens, last)| *tokens + rate * now.saturating_duration_since(*last).as_secs_f64() < burst);
    }

    /// How many keys have a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has one.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// What to do with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Send the short `rate limited` answer instead (if it is no larger than the request).
    Slip,
    /// Send nothing.
    Drop,
}

/// What a reply is to the limit: see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// The acknowledgement of `register`, `heartbeat`, `deregister` or `report` (not an
    /// error): small whatever the table holds, so not limited by the rate, only by a generous
    /// bucket of its own per source ([`ACK_BURST`]).
    Ack,
    /// Anything else: limited when larger than its request.
    Data,
}

/// Response-rate limiting settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Replies larger than their request, per second per source address; 0 turns limiting off.
    pub rate: u32,
    /// Sources never limited.
    pub exempt: Vec<IpNet>,
}

/// The default rate, as NSD suggests for DNS.
pub const DEFAULT_RATE: u32 = 200;

impl Default for RateLimit {
    /// Off: the library leaves it to the programs, whose default is [`DEFAULT_RATE`].
    fn default() -> Self {
        RateLimit { rate: 0, exempt: loopback() }
    }
}

/// Loopback, IPv4 and IPv6: the default exempt networks.
pub fn loopback() -> Vec<IpNet> {
    vec!["127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!()), "::1/128".parse().unwrap_or_else(|_| unreachable!())]
}

/// Counters of response-rate limiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitStats {
    /// Replies not sent.
    pub dropped: u64,
    /// Short `rate limited` answers sent instead of replies.
    pub slipped: u64,
    /// Acknowledgements not sent: their source had had [`ACK_BURST`] at once, or more than
    /// [`ACK_RATE`] a second.
    pub acks_dropped: u64,
}

/// Acknowledgements a source may get at once (see the [module documentation](self)): twice the
/// 1,000 registrations a host might send in a burst at its start.
pub const ACK_BURST: u32 = 2048;
/// Acknowledgements a source may get a second, once its burst is spent: more than a busy
/// host renews (1,000 instances heartbeating every second), 76 kB a second of ids at most.
pub const ACK_RATE: u32 = 2048;

/// How many addresses (and networks) are tracked at once.
const CAPACITY: usize = 65_536;
/// How often idle buckets are swept, and limiting may be logged again.
const SWEEP: Duration = Duration::from_secs(10);

/// Response-rate limiting. See the [module documentation](self).
#[derive(Debug)]
pub struct ResponseLimiter {
    config: RateLimit,
    addresses: Buckets<IpAddr>,
    networks: Buckets<IpAddr>,
    /// Acknowledgements, per address: a bucket of their own, see [`ACK_BURST`].
    acks: Buckets<IpAddr>,
    /// One bucket of the same size shared by the addresses for which `acks` has no room (while
    /// a flood from more sources than it tracks lasts): a real host that arrives then still gets
    /// acknowledgements, and all those addresses together no more than one address would.
    acks_overflow: Buckets<()>,
    /// Limited requests per address since its last token, for "every second one slips".
    limited: HashMap<IpAddr, u32>,
    next_sweep: Option<Instant>,
    logged: Option<Instant>,
    stats: LimitStats,
}

impl ResponseLimiter {
    /// A limiter with these settings.
    pub fn new(config: RateLimit) -> Self {
        let rate = f64::from(config.rate);
        ResponseLimiter {
            addresses: Buckets::new(rate, rate.max(1.0), CAPACITY),
            networks: Buckets::new(4.0 * rate, 4.0 * rate.max(1.0), CAPACITY),
            acks: Buckets::new(f64::from(ACK_RATE), f64::from(ACK_BURST), CAPACITY),
            acks_overflow: Buckets::new(f64::from(ACK_RATE), f64::from(ACK_BURST), 1),
            config,
            limited: HashMap::new(),
            next_sweep: None,
            logged: None,
            stats: LimitStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RateLimit {
        &self.config
    }

    /// New settings (a reload at `now`): each source keeps what it has spent (its bucket
    /// refills at the new rate from now on, holding no more than the new burst), the
    /// acknowledgements' buckets and the counters are kept. A source being limited is not
    /// handed a fresh burst by a reload.
    pub fn set_config(&mut self, now: Instant, config: RateLimit) {
        if config.rate != self.config.rate {
            let rate = f64::from(config.rate);
            self.addresses.set_rate(now, rate, rate.max(1.0));
            self.networks.set_rate(now, 4.0 * rate, 4.0 * rate.max(1.0));
        }
        self.config = config;
    }

    /// Whether limiting is on.
    pub fn is_on(&self) -> bool {
        self.config.rate > 0
    }

    /// Decides about a reply of `reply_len` bytes to a request of `request_len` bytes from
    /// `source`.
    pub fn check(&mut self, now: Instant, source: IpAddr, request_len: usize, reply_len: usize) -> Verdict {
        if !self.is_on() || reply_len <= request_len {
            return Verdict::Send;
        }
        let source = source.to_canonical();
        if self.config.exempt.iter().any(|net| net.contains(&source)) {
            return Verdict::Send;
        }
        self.sweep(now);
        let network = network_of(source);
        if self.networks.has(now, network) && self.addresses.take(now, source) {
            self.networks.take(now, network);
            self.limited.remove(&source);
            return Verdict::Send;
        }
        if self.logged.is_none_or(|at| at + SWEEP <= now) {
            log::warn!("rate limiting replies to {source} (more than {} a second); see --rate-limit", self.config.rate);
            self.logged = Some(now);
        }
        let count = if self.limited.len() < CAPACITY { self.limited.entry(source).or_insert(0) } else { &mut 0 };
        *count += 1;
        if *count % 2 == 0 {
            self.stats.slipped += 1;
            Verdict::Slip
        } else {
            self.stats.dropped += 1;
            Verdict::Drop
        }
    }

    /// Forgets idle buckets every [`SWEEP`], so that the tables hold only active sources.
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|at| at <= now) {
            self.addresses.sweep(now);
            self.networks.sweep(now);
            self.acks.sweep(now);
            self.limited.clear();
            self.next_sweep = Some(now + SWEEP);
        }
    }

    /// Whether an acknowledgement may go to `source`: always where limiting is off or the
    /// source exempt, else while its own bucket has a token (see [`ACK_BURST`]). One that may
    /// not is counted.
    pub fn check_ack(&mut self, now: Instant, source: IpAddr) -> bool {
        let source = source.to_canonical();
        if !self.is_on() || self.config.exempt.iter().any(|net| net.contains(&source)) {
            return true;
        }
        self.sweep(now);
        let taken =
            if self.acks.is_full_for(source) { self.acks_overflow.take(now, ()) } else { self.acks.take(now, source) };
        if taken {
            return true;
        }
        self.stats.acks_dropped += 1;
        false
    }

    /// The counters.
    pub fn stats(&self) -> LimitStats {
        self.stats
    }

    /// Counts a slip that could not be sent because it was larger than the request.
    pub fn slip_dropped(&mut self) {
        self.stats.slipped -= 1;
        self.stats.dropped += 1;
    }

    /// Applies the limit to a reply of the registration protocol in `reply`, of `kind`: returns
    /// whether to send what `reply` then holds (the reply, or the short `rate limited` answer in
    /// the same form). An [`Ack`](ReplyKind::Ack) takes only from its own bucket
    /// ([`check_ack`](Self::check_ack)).
    pub fn limit_reply(
        &mut self,
        now: Instant,
        source: IpAddr,
        form: crate::protocol::Form,
        request_len: usize,
        reply: &mut Vec<u8>,
        kind: ReplyKind,
    ) -> bool {
        use crate::protocol::{Rejection, Response, encode_reply};
        if kind == ReplyKind::Ack {
            return self.check_ack(now, source);
        }
        match self.check(now, source, request_len, reply.len()) {
            Verdict::Send => true,
            Verdict::Drop => false,
            Verdict::Slip => {
                encode_reply(form, &Response::Error(Rejection::RateLimited), reply);
                if reply.len() > request_len {
                    self.slip_dropped();
                    return false;
                }
                true
            }
        }
    }
}

/// The network an address is limited with: its /24, or /56 for IPv6.
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) & 0xFFFF_FF00)),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 72) - 1))),
    }
}

#[cfg(test)]
mod tests;
