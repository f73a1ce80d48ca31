//! The registration protocol over a [`Registry`]: `register`, `heartbeat`, `deregister`,
//! `query` and the listings (`services`, `instances`), in both forms, with no I/O.
//!
//! Anything that speaks the protocol uses this: the broker's node and the balancer's control
//! port. Requests beyond the four (`stats`, and whatever a later version adds) are not its
//! business: [`Service::handle`] hands them back decoded ([`Handled::Other`]), and the caller
//! answers them with [`Service::reply`], so each caller's `stats` is its own.
//!
//! ```
//! use std::time::Instant;
//! use makler::registry::{Config, Registry};
//! use makler::service::{Handled, Service};
//!
//! let mut registry = Registry::new(Config::default(), uuid::Uuid::new_v4);
//! let mut service = Service::new(&registry, 1400);
//! let server = "127.0.0.1:40000".parse().unwrap();
//! let (now, mut out) = (Instant::now(), Vec::new());
//! assert!(matches!(service.handle(&mut registry, now, server, b"register echo 4000", &mut out), Handled::Replied(_)));
//! assert_eq!(out.len(), 37); // a UUID and a newline
//! service.handle(&mut registry, now, server, b"query echo", &mut out);
//! assert_eq!(out, b"127.0.0.1:4000\n");
//! assert!(matches!(service.handle(&mut registry, now, server, b"stats", &mut out), Handled::Other { .. }));
//! ```

mod listing;
pub mod policy;

use std::net::SocketAddr;
use std::time::Instant;

use policy::Policy;

use crate::protocol::{self, DecodeError, Form, MAX_REPLY_LEN, Rejection, Request, Response, Source};
use crate::registry::Registry;

/// The default limit on request datagrams, in bytes.
pub const DEFAULT_MAX_DATAGRAM: usize = 1400;

/// What [`Service::handle`] did with a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled<'a> {
    /// The reply, in this form, is in the output buffer.
    Replied(Form),
    /// A valid request that is not the registration protocol's: the caller answers it (with
    /// [`Service::reply`]), in this form.
    Other {
        /// How to answer.
        form: Form,
        /// The request.
        request: Request<'a>,
    },
}

/// Counters of the registration protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handled.
    pub received: u64,
    /// Datagrams answered with `ERROR`.
    pub rejected: u64,
    /// Registrations refused because the table was full.
    pub full: u64,
    /// Registrations refused by the per-source quota.
    pub quota: u64,
    /// Registrations refused by the registration policy.
    pub not_allowed: u64,
    /// Requests refused as too many from one source (reports).
    pub too_many: u64,
    /// Requests that decoded, by kind.
    pub requests: RequestCounts,
}

/// Requests that decoded, by kind (a datagram that does not decode counts in none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// `register`.
    pub register: u64,
    /// `heartbeat`.
    pub heartbeat: u64,
    /// `query` (and `request`).
    pub query: u64,
    /// `deregister`.
    pub deregister: u64,
    /// `stats`.
    pub stats: u64,
    /// `report`.
    pub report: u64,
    /// `services` (and `list`).
    pub services: u64,
    /// `instances`.
    pub instances: u64,
    /// `watch` and `unwatch`.
    pub watch: u64,
}

impl RequestCounts {
    /// Counts one request.
    pub fn count(&mut self, request: &Request<'_>) {
        let counter = match request {
            Request::Register { .. } => &mut self.register,
            Request::Heartbeat { .. } => &mut self.heartbeat,
            Request::Query { .. } | Request::QueryLocal { .. } => &mut self.query,
            Request::Deregister { .. } => &mut self.deregister,
            Request::Stats => &mut self.stats,
            Request::Report { .. } => &mut self.report,
            Request::Services { .. } => &mut self.services,
            Request::Instances { .. } => &mut self.instances,
            Request::Watch { .. } | Request::Unwatch { .. } => &mut self.watch,
        };
        *counter += 1;
    }

    /// Each kind's name (as the text form spells its verb) and count.
    pub fn by_kind(&self) -> [(&'static str, u64); 9] {
        [
            ("register", self.register),
            ("heartbeat", self.heartbeat),
            ("query", self.query),
            ("deregister", self.deregister),
            ("stats", self.stats),
            ("report", self.report),
            ("services", self.services),
            ("instances", self.instances),
            ("watch", self.watch),
        ]
    }
}

/// The registration protocol. See the [module documentation](self).
#[derive(Debug)]
pub struct Service {
    max_datagram: usize,
    /// The TTL as registrations report it.
    ttl_ms: u32,
    counters: Counters,
    policy: Policy,
    /// Answer `NOT FOUND (catching up)` instead of `NOT FOUND`.
    catching_up: bool,
    bridging: bool,
    /// Reused for the instance list of every query reply.
    scratch: Vec<SocketAddr>,
}

impl Service {
    /// The protocol over `registry` (whose TTL registrations report), refusing request
    /// datagrams longer than `max_datagram`.
    pub fn new(registry: &Registry, max_datagram: usize) -> Self {
        let ttl_ms = u32::try_from(registry.config().ttl.as_millis()).unwrap_or(u32::MAX);
        Service {
            max_datagram,
            ttl_ms,
            counters: Counters::default(),
            policy: Policy::default(),
            catching_up: false,
            bridging: false,
            scratch: Vec::new(),
        }
    }

    /// Registrations from now on follow `policy`.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The registration policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The largest request datagram accepted.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// While the registry is still catching up from peers, what is not found may exist
    /// elsewhere: answers say so ([`Response::CatchingUp`]) instead of a plain `NOT FOUND`.
    pub fn set_catching_up(&mut self, catching_up: bool) {
        self.catching_up = catching_up;
    }

    /// With bridges (`--bridge`): a query for a service that has no live instance here (while
    /// the table is complete) is handed back ([`Handled::Other`]) for the bridges to ask,
    /// instead of being answered `NOT FOUND`.
    pub fn set_bridging(&mut self, bridging: bool) {
        self.bridging = bridging;
    }

    /// The answer for something that is not in the table.
    pub fn not_found(&self) -> Response {
        if self.catching_up { Response::CatchingUp } else { Response::NotFound }
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Handles one datagram from `source`: a reply of at most [`MAX_REPLY_LEN`] bytes, in the
    /// request's form, goes into `out` (cleared first), unless the request is another's
    /// business ([`Handled::Other`]). Never panics, whatever the bytes.
    pub fn handle<'a>(
        &mut self,
        registry: &mut Registry,
        now: Instant,
        source: SocketAddr,
        datagram: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Handled<'a> {
        self.counters.received += 1;
        if datagram.len() > self.max_datagram {
            let form = match protocol::decode_request(datagram) {
                Ok((form, _)) | Err(DecodeError { form, .. }) => form,
            };
            self.reply(form, &Response::Error(Rejection::TooLarge { max: saturate(self.max_datagram) }), out);
            return Handled::Replied(form);
        }
        let (form, request) = match protocol::decode_request(datagram) {
            Ok(decoded) => decoded,
            Err(DecodeError { form, rejection }) => {
                self.reply(form, &Response::Error(rejection), out);
                return Handled::Replied(form);
            }
        };
        self.counters.requests.count(&request);
        let response = match request {
            Request::Register { service, ip, port } => {
                let source = SocketAddr::new(source.ip().to_canonical(), source.port());
                let endpoint = SocketAddr::new(ip.map_or(source.ip(), |ip| ip.to_canonical()), port);
                match self
                    .policy
                    .check(source.ip(), endpoint.ip())
                    .and_then(|()| registry.register(now, service, endpoint, Source::Unicast(source)))
                {
                    Ok(registration) => Response::Registered { id: registration.id, ttl_ms: self.ttl_ms },
                    Err(rejection) => Response::Error(rejection),
                }
            }
            Request::Heartbeat { id } => match registry.heartbeat(now, id) {
                Ok(()) => Response::Ok,
                Err(_) => self.not_found(),
            },
            Request::Deregister { id } => match registry.deregister(now, id) {
                Ok(()) => Response::Ok,
                Err(_) => self.not_found(),
            },
            Request::Query { service }
                if self.bridging
                    && !self.catching_up
                    && registry.config().limits.check_name(service).is_ok()
                    && !registry.has_service(now, service) =>
            {
                return Handled::Other { form, request: Request::Query { service } };
            }
            Request::Query { service } | Request::QueryLocal { service } if form == Form::Text => {
                self.query_text(registry, now, service, out);
                return Handled::Replied(form);
            }
            Request::Query { service } | Request::QueryLocal { service } => self.query(registry, now, form, service),
            Request::Services { cursor } => self.services(registry, now, form, cursor),
            Request::Instances { service, cursor } => self.instances(registry, now, form, service, cursor),
            other => return Handled::Other { form, request: other },
        };
        self.reply(form, &response, out);
        if let Response::Instances(list) = response {
            self.scratch = list;
        }
        Handled::Replied(form)
    }

    /// Writes `response` into `out` (cleared first) in `form`, counting it when it is an error.
    /// The caller keeps it within [`MAX_REPLY_LEN`].
    pub fn reply(&mut self, form: Form, response: &Response, out: &mut Vec<u8>) {
        if let Response::Error(rejection) = response {
            self.counters.rejected += 1;
            match rejection {
                Rejection::Full { .. } => self.counters.full += 1,
                Rejection::SourceQuota { .. } => self.counters.quota += 1,
                Rejection::NotAllowed { .. } => self.counters.not_allowed += 1,
                Rejection::TooMany { .. } => self.counters.too_many += 1,
                _ => {}
            }
        }
        protocol::encode_reply(form, response, out);
    }

    /// A text query's answer, written straight from the instances' ready text forms: as many
    /// as fit in one reply, separated by spaces, ending in a newline.
    fn query_text(&mut self, registry: &mut Registry, now: Instant, service: &str, out: &mut Vec<u8>) {
        if let Err(rejection) = registry.config().limits.check_name(service) {
            return self.reply(Form::Text, &Response::Error(rejection), out);
        }
        let not_found = self.not_found();
        let Some(instances) = registry.query_text(now, service) else {
            return self.reply(Form::Text, &not_found, out);
        };
        out.clear();
        for (_, text) in instances {
            // The separator before it, and room for the final newline.
            let separator = usize::from(!out.is_empty());
            if out.len() + separator + text.len() + 1 > MAX_REPLY_LEN {
                break;
            }
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(text.as_bytes());
        }
        out.push(b'\n');
    }

    /// The live instances of `service` in rotation, as many as fit in one reply.
    fn query(&mut self, registry: &mut Registry, now: Instant, form: Form, service: &str) -> Response {
        if let Err(rejection) = registry.config().limits.check_name(service) {
            return Response::Error(rejection);
        }
        let Some(instances) = registry.query(now, service) else {
            return self.not_found();
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
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Bytes of a query reply that are not instances, at the most.
pub(crate) fn reply_overhead(form: Form) -> usize {
    match form {
        // The newline.
        Form::Text => 1,
        // Version byte, request id (varint u32: up to 5), variant (1), list length (varint: up
        // to 3 for any list that fits).
        Form::Binary { .. } => 1 + 5 + 1 + 3,
    }
}

/// Bytes one instance adds to a query reply.
pub(crate) fn encoded_len(form: Form, instance: SocketAddr) -> usize {
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
mod tests;
