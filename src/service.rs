//! The registration protocol over a [`Registry`]: one router and a handler per request kind,
//! in both forms, with no I/O.
//!
//! A request datagram goes through [`handle`], the router: it is decoded once, counted, and
//! sent to the handler of its kind, each in a file of its own that applies it to the table and
//! returns the reply (`register`, `heartbeat`, `deregister`, `query`, and the listings
//! `services` and `instances`); the router writes the reply in the request's form, and says
//! whether it is an acknowledgement, which the rate limit lets through (see [`crate::limit`]). Requests
//! only the caller can answer go to the caller's handlers: it implements [`Context`], which
//! hands the router the table and the protocol's state, answers `stats`, `report`, `watch` and
//! `unwatch`, asks its bridges when a query finds nothing here, and says whether its table is
//! still catching up. Each handler has a default, "not supported here", so the balancer's
//! control port answers only `stats` and the broker's node answers them all.
//!
//! A request that came sealed with the shared key goes through [`handle_sealed`] once the caller
//! opened it (the caller also seals the reply); with [`RequireKey`] set,
//! [`handle`] answers the unsealed requests it names `ERROR key required`, one branch before the
//! handlers, so unkeyed queries cost what they did.
//!
//! ```
//! use std::time::Instant;
//! use makler::limit::ReplyKind;
//! use makler::protocol::Form;
//! use makler::registry::{Config, Registry};
//! use makler::service::{self, Plain};
//!
//! let mut table = Plain::new(Registry::new(Config::default(), uuid::Uuid::new_v4), 1400);
//! let server = "127.0.0.1:40000".parse().unwrap();
//! let (now, mut out) = (Instant::now(), Vec::new());
//! let written = service::handle(&mut table, now, server, b"register echo 4000", &mut out).unwrap();
//! assert_eq!(written.form, Form::Text);
//! assert_eq!(out.len(), 37); // a UUID and a newline
//! assert_eq!(written.kind, ReplyKind::Ack); // not rate-limited
//! service::handle(&mut table, now, server, b"query echo", &mut out);
//! assert_eq!(out, b"127.0.0.1:4000\n");
//! service::handle(&mut table, now, server, b"stats", &mut out);
//! assert_eq!(out, b"ERROR not supported here: Stats\n");
//! ```

mod counters;
mod deregister;
mod heartbeat;
mod listing;
pub mod policy;
mod query;
mod register;

use std::net::SocketAddr;
use std::time::Instant;

use policy::{Policy, RequireKey};

pub use counters::{Counters, RequestCounts};

use crate::limit::ReplyKind;
use crate::protocol::{self, Check, DecodeError, Form, Rejection, Request, Response};
use crate::registry::Registry;

/// How many times the bytes of a request the broker sends back, at most, to an address that has
/// not shown that it receives there (a watch's cookie): QUIC's anti-amplification factor
/// (RFC 9000, section 8).
pub const MAX_UNCONFIRMED_GAIN: usize = 3;

/// The default limit on request datagrams, in bytes.
pub const DEFAULT_MAX_DATAGRAM: usize = 1400;

/// What the caller of [`handle`] provides: the table and the protocol's state, and the
/// handlers of the requests only it can answer. Every handler's default answers "not
/// supported here"; a caller overrides those it offers.
pub trait Context {
    /// The protocol's state and the table it works on.
    fn parts(&mut self) -> (&mut Service, &mut Registry);

    /// Called once a request was answered from the table alone (a query), having touched
    /// nothing else the context follows: the node then may skip its end of turn. Nothing by
    /// default.
    fn answered_from_table(&mut self) {}

    /// Whether the table is still catching up from peers: then what is not found may exist
    /// elsewhere, and answers say so ([`Response::CatchingUp`]) instead of `NOT FOUND`.
    fn catching_up(&self) -> bool {
        false
    }

    /// Whether a query for a service with no live instance here (while the table is
    /// complete) goes to [`answer_bridged`](Self::answer_bridged) instead of being answered
    /// `NOT FOUND`.
    fn bridging(&self) -> bool {
        false
    }

    /// A query for `service`, which has no live instance here, asked at the bridges: the
    /// answer to give now, or `None` when it is sent later (the caller keeps `form` and
    /// `request_len` for it).
    fn answer_bridged(
        &mut self,
        _now: Instant,
        _from: SocketAddr,
        _form: Form,
        _request_len: usize,
        _service: &str,
    ) -> Option<Response> {
        Some(Response::NotFound)
    }

    /// `stats`: the caller's counters, fitted to one reply in `form`.
    fn answer_stats(&mut self, _now: Instant, _form: Form) -> Response {
        unsupported(&Request::Stats)
    }

    /// `report <service> <endpoint>`: a client found an instance dead.
    fn answer_report(&mut self, _now: Instant, _from: SocketAddr, service: &str, endpoint: SocketAddr) -> Response {
        unsupported(&Request::Report { service, endpoint })
    }

    /// `watch <service>` from `from` (with the `cookie` it echoes, for
    /// [`Request::WatchEcho`]), answered in `form` (and so are its notifications).
    fn answer_watch(
        &mut self,
        _now: Instant,
        _from: SocketAddr,
        _form: Form,
        service: &str,
        _cookie: Option<u64>,
    ) -> Response {
        unsupported(&Request::Watch { service })
    }

    /// A [`Request::WatchMeta`] from `from`: a watch whose replies and notifications carry each
    /// instance's metadata.
    fn answer_watch_meta(
        &mut self,
        _now: Instant,
        _from: SocketAddr,
        _form: Form,
        service: &str,
        cookie: u64,
    ) -> Response {
        unsupported(&Request::WatchMeta { service, cookie })
    }

    /// `unwatch <service>` from `from`, with the watch's `cookie` (for [`Request::UnwatchEcho`]).
    fn answer_unwatch(&mut self, _now: Instant, _from: SocketAddr, service: &str, _cookie: Option<u64>) -> Response {
        unsupported(&Request::Unwatch { service })
    }
}

/// What [`handle`] wrote: the reply's form, and what it is to the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The form of the reply: the request's.
    pub form: Form,
    /// An acknowledgement of a lease request, or anything else (see [`crate::limit`]).
    pub kind: ReplyKind,
}

impl Written {
    /// A reply the rate limit judges by its size: every one but an acknowledgement.
    fn data(form: Form) -> Self {
        Written { form, kind: ReplyKind::Data }
    }
}

/// Handles one request datagram from `source`: the router. The reply, of at most
/// [`MAX_REPLY_LEN`](protocol::MAX_REPLY_LEN) bytes, goes into `out` (cleared first); returns
/// its form and kind, or `None` when there is nothing to send now (a query asked at the
/// bridges). Never panics, whatever the bytes.
pub fn handle<C: Context>(
    ctx: &mut C,
    now: Instant,
    source: SocketAddr,
    datagram: &[u8],
    out: &mut Vec<u8>,
) -> Option<Written> {
    route(ctx, now, source, datagram, false, out)
}

/// [`handle`] for a request that came sealed with the shared key and opened (the caller opened
/// it, and seals the reply): `--require-key` does not refuse it.
pub fn handle_sealed<C: Context>(
    ctx: &mut C,
    now: Instant,
    source: SocketAddr,
    request: &[u8],
    out: &mut Vec<u8>,
) -> Option<Written> {
    route(ctx, now, source, request, true, out)
}

fn route<C: Context>(
    ctx: &mut C,
    now: Instant,
    source: SocketAddr,
    datagram: &[u8],
    sealed: bool,
    out: &mut Vec<u8>,
) -> Option<Written> {
    let (state, _) = ctx.parts();
    state.counters.received += 1;
    if datagram.len() > state.max_datagram {
        let form = match protocol::decode_request(datagram) {
            Ok((form, _)) | Err(DecodeError { form, .. }) => form,
        };
        state.reply(form, &Response::Error(Rejection::TooLarge { max: saturate(state.max_datagram) }), out);
        return Some(Written::data(form));
    }
    let (form, request) = match protocol::decode_request(datagram) {
        Ok(decoded) => decoded,
        Err(DecodeError { form, rejection }) => {
            state.reply(form, &Response::Error(rejection), out);
            return Some(Written::data(form));
        }
    };
    state.counters.requests.count(&request);
    if !sealed && state.require_key != RequireKey::No && state.require_key.refuses(&request) {
        state.counters.key_required += 1;
        state.reply(form, &Response::Error(Rejection::KeyRequired), out);
        return Some(Written::data(form));
    }
    let lease = matches!(
        request,
        Request::Register { .. }
            | Request::RegisterChecked { .. }
            | Request::RegisterMeta { .. }
            | Request::Heartbeat { .. }
            | Request::Deregister { .. }
            | Request::Report { .. }
    );
    let response = match request {
        Request::Register { service, ip, port } => {
            register::apply(ctx, now, source, service, ip, port, Check::None, None)
        }
        Request::RegisterChecked { service, ip, port, check } => {
            register::apply(ctx, now, source, service, ip, port, check, None)
        }
        Request::RegisterMeta { service, ip, port, check, ref meta } => {
            register::apply(ctx, now, source, service, ip, port, check, Some(meta))
        }
        Request::Heartbeat { id } => heartbeat::apply(ctx, now, id),
        Request::Deregister { id } => deregister::apply(ctx, now, id),
        Request::Query { service } if query::is_bridged(ctx, now, service) => {
            ctx.answer_bridged(now, source, form, datagram.len(), service)?
        }
        Request::Query { service } | Request::QueryLocal { service } => {
            query::apply(ctx, now, form, service, out);
            ctx.answered_from_table();
            return Some(Written::data(form));
        }
        Request::Services { cursor } => listing::services(ctx, now, form, cursor),
        Request::Instances { service, cursor } => {
            listing::instances(ctx, now, form, service, cursor, listing::Detail::Plain)
        }
        Request::InstancesChecked { service, cursor } => {
            listing::instances(ctx, now, form, service, cursor, listing::Detail::Checks)
        }
        Request::InstancesMeta { service, cursor } => {
            listing::instances(ctx, now, form, service, cursor, listing::Detail::Meta)
        }
        Request::Stats => ctx.answer_stats(now, form),
        Request::Report { service, endpoint } => ctx.answer_report(now, source, service, endpoint),
        Request::Watch { service } => ctx.answer_watch(now, source, form, service, None),
        Request::WatchEcho { service, cookie } => ctx.answer_watch(now, source, form, service, Some(cookie)),
        Request::WatchMeta { service, cookie } => ctx.answer_watch_meta(now, source, form, service, cookie),
        Request::Unwatch { service } => ctx.answer_unwatch(now, source, service, None),
        Request::UnwatchEcho { service, cookie } => ctx.answer_unwatch(now, source, service, Some(cookie)),
    };
    // An acknowledgement: an id, `OK`, `NOT FOUND` (or catching up); never an error, which may
    // echo what was sent.
    let kind = if lease && !matches!(response, Response::Error(_)) { ReplyKind::Ack } else { ReplyKind::Data };
    let (state, _) = ctx.parts();
    state.reply(form, &response, out);
    if matches!(response, Response::WatchCookie { .. }) && out.len() > MAX_UNCONFIRMED_GAIN * datagram.len() {
        // To an address that has not shown it receives: never more than three times what came
        // from it (only `watch x`, one letter without a newline, is short enough to get nothing).
        out.clear();
        return None;
    }
    Some(Written { form, kind })
}

/// The answer for something that is not in the table: [`Response::CatchingUp`] while the
/// table is catching up from peers, [`Response::NotFound`] otherwise.
pub fn not_found(catching_up: bool) -> Response {
    if catching_up { Response::CatchingUp } else { Response::NotFound }
}

/// The answer to a request this endpoint does not offer.
pub fn unsupported(request: &Request<'_>) -> Response {
    Response::Error(Rejection::Unsupported { what: format!("{request:?}") })
}

/// The registration protocol's state: its limits, policy and counters. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct Service {
    max_datagram: usize,
    /// The TTL as registrations report it.
    ttl_ms: u32,
    counters: Counters,
    policy: Policy,
    /// Which unsealed requests are refused.
    require_key: RequireKey,
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
            require_key: RequireKey::No,
        }
    }

    /// Registrations from now on follow `policy`.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// From now on, refuse the unsealed requests `require` names (see [`RequireKey`]).
    pub fn set_require_key(&mut self, require: RequireKey) {
        self.require_key = require;
    }

    /// Which unsealed requests are refused.
    pub fn require_key(&self) -> RequireKey {
        self.require_key
    }

    /// The registration policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The largest request datagram accepted.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Writes `response` into `out` (cleared first) in `form`, counting it when it is an error.
    /// The caller keeps it within [`MAX_REPLY_LEN`](protocol::MAX_REPLY_LEN) (see
    /// [`protocol::fit`]). For answers sent later (a bridged query's).
    pub fn reply(&mut self, form: Form, response: &Response, out: &mut Vec<u8>) {
        if let Response::Error(rejection) = response {
            self.counters.rejected += 1;
            match rejection {
                Rejection::Full { .. } => self.counters.full += 1,
                Rejection::SourceQuota { .. } | Rejection::NetworkQuota { .. } => self.counters.quota += 1,
                Rejection::NearlyFull { .. } => self.counters.full += 1,
                Rejection::NotAllowed { .. } => self.counters.not_allowed += 1,
                Rejection::TooMany { .. } => self.counters.too_many += 1,
                _ => {}
            }
        }
        protocol::encode_reply(form, response, out);
    }
}

/// The registration protocol alone over a table: a [`Context`] that offers no request of its
/// own (each is answered "not supported here"). For tools and tests.
#[derive(Debug)]
pub struct Plain {
    /// The table.
    pub registry: Registry,
    /// The protocol's state.
    pub service: Service,
}

impl Plain {
    /// The protocol over `registry`, refusing request datagrams longer than `max_datagram`.
    pub fn new(registry: Registry, max_datagram: usize) -> Self {
        let service = Service::new(&registry, max_datagram);
        Plain { registry, service }
    }
}

impl Context for Plain {
    fn parts(&mut self) -> (&mut Service, &mut Registry) {
        (&mut self.service, &mut self.registry)
    }
}

/// The answer for something that is not in `ctx`'s table.
fn not_found_in(ctx: &impl Context) -> Response {
    not_found(ctx.catching_up())
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
