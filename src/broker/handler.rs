//! Turning one datagram into one reply, with no I/O: the heart of the broker, and of anything
//! else that speaks the registration protocol (the balancer's control port).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::protocol::{
    self, BrokerStats, DecodeError, Form, MAX_REPLY_LEN, Multicast, Rejection, Request, Response, binary,
};
use crate::registry::Registry;

/// The default limit on request datagrams, in bytes.
pub const DEFAULT_MAX_DATAGRAM: usize = 1400;

/// Answers registration-protocol datagrams against a [`Registry`].
///
/// ```
/// use std::time::Instant;
/// use makler::broker::Handler;
/// use makler::registry::{Config, Registry};
///
/// let mut handler = Handler::new(Registry::new(Config::default(), uuid::Uuid::new_v4), 1400);
/// let server = "127.0.0.1:40000".parse().unwrap();
/// let now = Instant::now();
/// let id = handler.handle(now, server, b"register echo 4000").to_vec();
/// assert_eq!(id.len(), 37); // a UUID and a newline
/// assert_eq!(handler.handle(now, server, b"query echo"), b"127.0.0.1:4000\n");
/// assert_eq!(handler.handle(now, server, b"query time"), b"NOT FOUND\n");
/// ```
pub struct Handler {
    registry: Registry,
    max_datagram: usize,
    /// The TTL as registrations report it.
    ttl_ms: u32,
    received: u64,
    rejected: u64,
    send_failures: u64,
    announcements: u64,
    multicast_ignored: u64,
    reply: Vec<u8>,
    /// Reused for the instance list of every query reply.
    scratch: Vec<SocketAddr>,
    /// Answers `stats` instead of the broker's counters (the balancer's control port).
    stats_reply: Option<StatsReply>,
}

/// Makes the reply to `stats` from the handler's own counters.
type StatsReply = Box<dyn FnMut(BrokerStats) -> Response + Send>;

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("registry", &self.registry)
            .field("max_datagram", &self.max_datagram)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// A handler over `registry` that refuses request datagrams longer than `max_datagram`.
    pub fn new(registry: Registry, max_datagram: usize) -> Self {
        let ttl_ms = u32::try_from(registry.config().ttl.as_millis()).unwrap_or(u32::MAX);
        Handler {
            registry,
            max_datagram,
            ttl_ms,
            received: 0,
            rejected: 0,
            send_failures: 0,
            announcements: 0,
            multicast_ignored: 0,
            reply: Vec::with_capacity(MAX_REPLY_LEN),
            scratch: Vec::new(),
            stats_reply: None,
        }
    }

    /// Answers `stats` with what `reply` makes of the handler's counters, instead of the
    /// counters themselves. Lists in the reply are shortened until it fits one datagram.
    pub fn set_stats_reply(&mut self, reply: impl FnMut(BrokerStats) -> Response + Send + 'static) {
        self.stats_reply = Some(Box::new(reply));
    }

    /// The largest request datagram accepted. Callers read into a buffer one byte longer, so
    /// that a longer datagram shows as such and gets its error.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry, for draining its events or expiring entries.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts a reply that the socket refused to send.
    pub fn note_send_failure(&mut self) {
        self.send_failures += 1;
    }

    /// The counters, as `stats` reports them.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            instances: self.registry.len() as u64,
            services: self.registry.service_count() as u64,
            received: self.received,
            rejected: self.rejected,
            expired: self.registry.expired_total(),
            send_failures: self.send_failures,
            announcements: self.announcements,
            multicast_ignored: self.multicast_ignored,
        }
    }

    /// Handles one datagram from the multicast group. Announcements and goodbyes change the
    /// table like `register` and `deregister`; a discover gets a reply (to send to `source`
    /// from the unicast socket) naming `unicast`, the broker's unicast address. Everything else
    /// (malformed or foreign datagrams, refused announcements, and the broker's own datagrams,
    /// which carry `own_origin`) is dropped and counted. Never panics, whatever the bytes.
    pub fn handle_multicast(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
        own_origin: u64,
        unicast: SocketAddr,
    ) -> Option<&[u8]> {
        let frame = match binary::decode::<Multicast<'_>>(datagram) {
            Ok(frame) if frame_origin(&frame.body) != own_origin => frame,
            _ => {
                self.multicast_ignored += 1;
                return None;
            }
        };
        let source_ip = canonical(source.ip());
        match frame.body {
            Multicast::Announce { service, ip, port, .. } => {
                match self.registry.register(now, service, SocketAddr::new(ip.unwrap_or(source_ip), port)) {
                    Ok(_) => self.announcements += 1,
                    Err(_) => self.multicast_ignored += 1,
                }
                None
            }
            Multicast::Goodbye { service, ip, port, .. } => {
                let endpoint = SocketAddr::new(ip.unwrap_or(source_ip), port);
                match self.registry.lookup(service, endpoint) {
                    Some(id) => {
                        let _ = self.registry.deregister(now, id);
                        self.announcements += 1;
                    }
                    None => self.multicast_ignored += 1,
                }
                None
            }
            Multicast::Discover { .. } => {
                self.reply.clear();
                binary::encode_response(frame.id, &Response::BrokerHere { addr: unicast }, &mut self.reply);
                Some(&self.reply)
            }
            // Another broker starting: nothing for this one to do.
            Multicast::BrokerHello { .. } => None,
        }
    }

    /// Handles one datagram from `source` and returns the reply to send back to it (at most
    /// [`MAX_REPLY_LEN`] bytes, in the request's form). Never panics, whatever the bytes.
    pub fn handle(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) -> &[u8] {
        self.received += 1;
        let (form, response) = if datagram.len() > self.max_datagram {
            let form = match protocol::decode_request(datagram) {
                Ok((form, _)) | Err(DecodeError { form, .. }) => form,
            };
            (form, Response::Error(Rejection::TooLarge { max: saturate(self.max_datagram) }))
        } else {
            match protocol::decode_request(datagram) {
                Ok((form, request)) => (form, self.apply(now, source, form, request)),
                Err(DecodeError { form, rejection }) => (form, Response::Error(rejection)),
            }
        };
        if matches!(response, Response::Error(_)) {
            self.rejected += 1;
        }
        protocol::encode_reply(form, &response, &mut self.reply);
        if let Response::BalancerStats(mut stats) = response {
            while self.reply.len() > MAX_REPLY_LEN && stats.backends.pop().is_some() {
                protocol::encode_reply(form, &Response::BalancerStats(stats.clone()), &mut self.reply);
            }
            return &self.reply;
        }
        if let Response::Instances(list) = response {
            self.scratch = list;
        }
        &self.reply
    }

    fn apply(&mut self, now: Instant, source: SocketAddr, form: Form, request: Request<'_>) -> Response {
        match request {
            Request::Register { service, ip, port } => {
                let ip = ip.unwrap_or_else(|| canonical(source.ip()));
                match self.registry.register(now, service, SocketAddr::new(ip, port)) {
                    Ok(registration) => Response::Registered { id: registration.id, ttl_ms: self.ttl_ms },
                    Err(rejection) => Response::Error(rejection),
                }
            }
            Request::Heartbeat { id } => match self.registry.heartbeat(now, id) {
                Ok(()) => Response::Ok,
                Err(_) => Response::NotFound,
            },
            Request::Deregister { id } => match self.registry.deregister(now, id) {
                Ok(()) => Response::Ok,
                Err(_) => Response::NotFound,
            },
            Request::Query { service } => {
                if let Err(rejection) = self.registry.config().limits.check_name(service) {
                    return Response::Error(rejection);
                }
                let Some(instances) = self.registry.query(now, service) else {
                    return Response::NotFound;
                };
                let mut list = std::mem::take(&mut self.scratch);
                list.clear();
                let mut budget = MAX_REPLY_LEN - reply_overhead(form);
                for instance in instances {
                    let cost = encoded_len(form, instance);
                    if cost > budget {
                        break;
                    }
                    budget -= cost;
                    list.push(instance);
                }
                Response::Instances(list)
            }
            Request::Stats => {
                let stats = self.stats();
                match &mut self.stats_reply {
                    Some(reply) => reply(stats),
                    None => Response::Stats(stats),
                }
            }
        }
    }
}

fn frame_origin(message: &Multicast<'_>) -> u64 {
    match message {
        Multicast::Announce { origin, .. }
        | Multicast::Goodbye { origin, .. }
        | Multicast::Discover { origin }
        | Multicast::BrokerHello { origin, .. } => *origin,
    }
}

/// An IPv4 peer talking to a dual-stack socket shows up as `::ffff:a.b.c.d`; it registers as
/// `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Bytes of a query reply that are not instances, at the most.
fn reply_overhead(form: Form) -> usize {
    match form {
        // The newline.
        Form::Text => 1,
        // Version byte, request id (varint u32: up to 5), variant (1), list length (varint: up
        // to 3 for any list that fits).
        Form::Binary { .. } => 1 + 5 + 1 + 3,
    }
}

/// Bytes one instance adds to a query reply.
fn encoded_len(form: Form, instance: SocketAddr) -> usize {
    match form {
        // The address and a separating space (the first one has none, which leaves slack).
        Form::Text => {
            let mut counter = Counter(0);
            let _ = std::fmt::write(&mut counter, format_args!("{instance}"));
            counter.0 + 1
        }
        // Variant, address bytes, varint port.
        Form::Binary { .. } => {
            let ip = if instance.is_ipv4() { 4 } else { 16 };
            let port = match instance.port() {
                0..=0x7f => 1,
                0x80..=0x3fff => 2,
                _ => 3,
            };
            1 + ip + port
        }
    }
}

/// Counts formatted bytes without storing them.
struct Counter(usize);

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Config, Limits};

    fn binary_request(id: u32, request: &Request<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        binary::encode_request(id, request, &mut out);
        out
    }

    fn handler(max_instances: usize) -> Handler {
        let limits = Limits { max_instances, ..Limits::default() };
        let mut n = 0u128;
        let registry = Registry::new(Config { limits, ..Config::default() }, move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        });
        Handler::new(registry, DEFAULT_MAX_DATAGRAM)
    }

    fn text(h: &mut Handler, now: Instant, line: &str) -> String {
        let source = "127.0.0.1:50000".parse().unwrap();
        String::from_utf8(h.handle(now, source, line.as_bytes()).to_vec()).unwrap()
    }

    #[test]
    fn encoded_len_matches_postcard() {
        for addr in ["1.2.3.4:1", "1.2.3.4:200", "1.2.3.4:65535", "[::1]:127", "[::1]:16384"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let bytes = postcard::to_stdvec(&addr).unwrap();
            assert_eq!(encoded_len(Form::Binary { request_id: 0 }, addr), bytes.len(), "{addr}");
            assert_eq!(encoded_len(Form::Text, addr), addr.to_string().len() + 1);
        }
    }

    #[test]
    fn a_long_answer_is_cut_to_fit_and_still_rotates() {
        let mut h = handler(10_000);
        let now = Instant::now();
        for i in 0..500u32 {
            let [_, _, hi, lo] = i.to_be_bytes();
            let line = format!("register big 10.{hi}.{lo}.1 40000");
            assert_eq!(text(&mut h, now, &line).len(), 37, "{line}");
        }
        let mut seen = std::collections::HashSet::new();
        let mut firsts = Vec::new();
        for _ in 0..500 {
            let reply = text(&mut h, now, "query big");
            assert!(reply.len() <= MAX_REPLY_LEN, "{} bytes", reply.len());
            assert!(reply.len() > MAX_REPLY_LEN - 30, "only {} bytes", reply.len());
            let words: Vec<_> = reply.split_whitespace().map(str::to_owned).collect();
            firsts.push(words[0].clone());
            seen.extend(words);
        }
        assert_eq!(seen.len(), 500);
        firsts.dedup();
        assert_eq!(firsts.len(), 500, "every query starts with another instance");

        let source = "127.0.0.1:50000".parse().unwrap();
        for id in [0, u32::MAX] {
            let request = binary_request(id, &Request::Query { service: "big" });
            let reply = h.handle(now, source, &request).to_vec();
            assert!(reply.len() <= MAX_REPLY_LEN && reply.len() > MAX_REPLY_LEN - 20, "{}", reply.len());
            let (echoed, response) = binary::decode_response(&reply).unwrap();
            assert_eq!(echoed, id);
            let Response::Instances(list) = response else { panic!("{response:?}") };
            assert!(list.len() > 100);
        }
    }

    #[test]
    fn register_takes_the_source_address_when_no_ip_is_given() {
        let mut h = handler(10);
        let now = Instant::now();
        let mapped: SocketAddr = "[::ffff:127.0.0.9]:50000".parse().unwrap();
        h.handle(now, mapped, b"register echo 4000");
        assert_eq!(text(&mut h, now, "query echo"), "127.0.0.9:4000\n");
    }

    #[test]
    fn every_error_is_counted_and_answered_in_kind() {
        let mut h = handler(1);
        let now = Instant::now();
        assert!(text(&mut h, now, "register a 1").len() == 37);
        assert_eq!(text(&mut h, now, "register b 1"), "ERROR full: 1 instances registered\n");
        assert_eq!(
            text(&mut h, now, "query no/such"),
            format!("ERROR {}\n", Limits::default().check_name("no/such").unwrap_err())
        );
        assert_eq!(text(&mut h, now, &"x".repeat(1401)), "ERROR datagram too large: at most 1400 bytes\n");
        let source = "127.0.0.1:50000".parse().unwrap();
        let mut big = binary_request(42, &Request::Query { service: "a" });
        big.resize(1401, 0);
        let (id, response) = binary::decode_response(h.handle(now, source, &big)).unwrap();
        assert_eq!((id, response), (42, Response::Error(Rejection::TooLarge { max: 1400 })));
        let stats = h.stats();
        assert_eq!((stats.received, stats.rejected, stats.instances), (5, 4, 1));
    }
}
