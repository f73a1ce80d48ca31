//! The wire protocol: the messages brokers and their peers exchange, in two forms.
//!
//! Every request is one UDP datagram and gets at most one reply datagram. A request comes in
//! one of two forms, and its reply always comes back in the same form:
//!
//! - the **text** form ([`text`]), one line of UTF-8, made to be typed into `socat` or `nc`;
//! - the **binary** form ([`binary`]), a version byte followed by a [postcard] encoding of a
//!   [`Frame`], with a request id that the reply echoes so clients can retransmit safely.
//!
//! The first byte tells them apart: a binary datagram starts with a byte in `0x80..=0xBF`, which
//! can never start a UTF-8 string (see [`binary::VERSION_BYTE`]). [`decode_request`] looks at it
//! and dispatches; [`encode_reply`] writes a reply in the form the request came in.
//!
//! This module depends on nothing else in the crate but [`crate::meta`] (the rules of service
//! metadata, which depends on nothing), and no decoder in it panics on any input.
//! `protocol.md` at the top of the repository is the reference for both forms.

pub mod binary;
pub mod check;
pub mod fit;
mod group;
pub mod listing;
pub mod peer;
pub mod seal;
mod source;
pub mod stats;
pub mod text;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use check::Check;
pub use group::{DEFAULT_CLUSTER, MAX_CLUSTER_NAME, Multicast, check_cluster_name, goodbye_commitment};
pub use listing::{InstanceInfo, InstancePage, ServiceCount, ServicePage};
pub use source::{RemoveReason, Source};
pub use stats::{BackendStats, BalancerStats, BridgeStats, BrokerStats, Counter, PeerStats};

/// The largest reply the broker ever sends, in bytes. Query replies that would be longer hold as
/// many instances as fit, and the rotation makes sure every instance is handed out over time.
pub const MAX_REPLY_LEN: usize = 1400;

/// Where a broker listens unless told otherwise, and so where everything that speaks to one
/// looks for it first: port 7000 on loopback, so nothing outside the host can reach a broker
/// started without flags by accident.
pub const DEFAULT_BROKER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7000);

/// A request to a broker (or to anything that speaks the registration protocol, like the
/// balancer's control port).
///
/// Names borrow from the datagram they were decoded from, so decoding allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Register an instance of `service` at `ip:port`, or refresh it when that endpoint is
    /// already registered for the service. Without an `ip` the broker takes the datagram's
    /// source address. Answered with [`Response::Registered`].
    Register {
        /// The service's name (its type), such as `echo`.
        service: &'a str,
        /// The instance's address; `None` means "the address this datagram came from".
        ip: Option<IpAddr>,
        /// The instance's port, never 0.
        port: u16,
    },
    /// Keep a registration alive. Answered with [`Response::Ok`], or [`Response::NotFound`] when
    /// the id is unknown or has expired: the server must register again.
    Heartbeat {
        /// The id that [`Response::Registered`] returned.
        id: Uuid,
    },
    /// Ask for the live instances of a service. Answered with [`Response::Instances`] or
    /// [`Response::NotFound`]. The text form accepts `query` and its synonym `request`.
    Query {
        /// The service's name.
        service: &'a str,
    },
    /// Remove a registration at once. Answered with [`Response::Ok`] or [`Response::NotFound`].
    Deregister {
        /// The id that [`Response::Registered`] returned.
        id: Uuid,
    },
    /// Ask for the broker's counters. Answered with [`Response::Stats`].
    Stats,
    /// Tell the broker that an instance could not be reached. Answered at once with
    /// [`Response::Ok`] when the instance is registered ([`Response::NotFound`] otherwise); the
    /// broker then checks it itself and removes it everywhere if it is dead.
    Report {
        /// The service.
        service: &'a str,
        /// The instance that did not answer.
        endpoint: SocketAddr,
    },
    /// List the services with live instances and how many each has, a page at a time.
    /// Answered with [`Response::Services`]. The text form accepts `services` and its synonym
    /// `list`.
    Services {
        /// Where the page starts: 0 for the first, then the `next` of the previous page.
        cursor: u32,
    },
    /// List a service's live instances with their age and source, a page at a time. Answered
    /// with [`Response::InstanceList`] or [`Response::NotFound`].
    Instances {
        /// The service's name.
        service: &'a str,
        /// Where the page starts: 0 for the first, then the `next` of the previous page.
        cursor: u32,
    },
    /// Watch a service: answered with [`Response::Watching`] (its live instances and sequence
    /// number now), then a [`Response::Changed`] datagram whenever its live set changes. A
    /// watch lives for the broker's TTL; send `Watch` again within it to keep it.
    Watch {
        /// The service's name.
        service: &'a str,
    },
    /// End a watch, without the watch's cookie: refused with [`Rejection::CookieRequired`] (it
    /// could be sent from a forged address). Send [`Request::UnwatchEcho`]. The text form is
    /// `unwatch <service>`.
    Unwatch {
        /// The service's name.
        service: &'a str,
    },
    /// [`Request::Query`] answered from the asked broker's own table only: never passed on to
    /// a bridge (a broker with no bridges answers it as a `Query`). The text form is
    /// `query <service> local`.
    QueryLocal {
        /// The service's name.
        service: &'a str,
    },
    /// [`Request::Watch`] with the cookie the broker answered a watch from this address with
    /// ([`Response::WatchCookie`]): the proof that the watcher receives at the address it sends
    /// from, so that nobody can aim a watch's notifications at another. Starts or renews the
    /// watch (answered like a `Watch` was before, with [`Response::Watching`]); a cookie that is
    /// wrong or too old is answered with a new cookie. The text form is
    /// `watch <service> <cookie>`, the cookie in 16 hexadecimal digits.
    WatchEcho {
        /// The service's name.
        service: &'a str,
        /// The cookie, as the broker sent it.
        cookie: u64,
    },
    /// [`Request::Register`] with a declared health check (see [`check`]): how the broker may
    /// check the instance. A plain `Register` declares [`Check::None`]. The text form is
    /// `register <service> [<ip>] <port> check=tcp|check=http:<path>|check=none`.
    RegisterChecked {
        /// The service's name.
        service: &'a str,
        /// The instance's address; `None` means "the address this datagram came from".
        ip: Option<IpAddr>,
        /// The instance's port, never 0.
        port: u16,
        /// How the instance may be checked.
        #[serde(borrow)]
        check: Check<&'a str>,
    },
    /// [`Request::Instances`] answered with [`Response::InstanceListChecked`]: the page and each
    /// instance's declared check, which [`InstanceInfo`]'s binary form cannot carry. Its text
    /// form is `instances` (whose text lines show the check).
    InstancesChecked {
        /// The service's name.
        service: &'a str,
        /// Where the page starts: 0 for the first, then the `next` of the previous page.
        cursor: u32,
    },
    /// [`Request::RegisterChecked`] with service metadata: `key=value` pairs (see
    /// [`crate::meta`] for their rules and limits), in order. The text form puts them after the
    /// port, beside `check=`, in any order: `register web 8080 path=/ version=2`. A register
    /// without pairs is sent as a `Register` or `RegisterChecked`, as before; a refresh with
    /// other pairs (or none) replaces the lease's.
    RegisterMeta {
        /// The service's name.
        service: &'a str,
        /// The instance's address; `None` means "the address this datagram came from".
        ip: Option<IpAddr>,
        /// The instance's port, never 0.
        port: u16,
        /// How the instance may be checked.
        #[serde(borrow)]
        check: Check<&'a str>,
        /// The pairs, `(key, value)`, in order.
        #[serde(borrow)]
        meta: Vec<(&'a str, &'a str)>,
    },
    /// [`Request::InstancesChecked`] answered with [`Response::InstanceListMeta`]: the page,
    /// each instance's check and its metadata. Its text form is `instances`, whose lines show
    /// both.
    InstancesMeta {
        /// The service's name.
        service: &'a str,
        /// Where the page starts: 0 for the first, then the `next` of the previous page.
        cursor: u32,
    },
    /// [`Request::WatchEcho`] by a watcher that wants each instance's metadata too: answered
    /// with [`Response::WatchingMeta`], its notifications are [`Response::ChangedMeta`], and a
    /// change of an instance's metadata is a change. The text form is
    /// `watch <service> <cookie> meta`.
    WatchMeta {
        /// The service's name.
        service: &'a str,
        /// The cookie, as the broker sent it.
        cookie: u64,
    },
    /// End a watch at once, with the cookie the watch was started or last renewed with (or any
    /// the broker answered a `watch` from this address with since): the proof that the sender
    /// receives at the watcher's address, so that nobody can stop another's notifications from
    /// a forged address. Answered with [`Response::Ok`], or [`Response::NotFound`] when this
    /// source has no watch on the service; a wrong or too old cookie with
    /// [`Rejection::BadCookie`] (`watch <service>` answers a fresh one). The text form is
    /// `unwatch <service> <cookie>`, the cookie in 16 hexadecimal digits.
    UnwatchEcho {
        /// The service's name.
        service: &'a str,
        /// The cookie, as the broker sent it.
        cookie: u64,
    },
}

impl<'a> Request<'a> {
    /// The parts of a registration, whichever variant carries it (a plain
    /// [`Request::Register`] declares no check); `None` for any other request.
    pub fn registration(&self) -> Option<(&'a str, Option<IpAddr>, u16, Check<&'a str>)> {
        match *self {
            Request::Register { service, ip, port } => Some((service, ip, port, Check::None)),
            Request::RegisterChecked { service, ip, port, check } => Some((service, ip, port, check)),
            Request::RegisterMeta { service, ip, port, check, .. } => Some((service, ip, port, check)),
            _ => None,
        }
    }

    /// The metadata pairs a registration carries (none but for [`Request::RegisterMeta`]).
    pub fn metadata(&self) -> &[(&'a str, &'a str)] {
        match self {
            Request::RegisterMeta { meta, .. } => meta,
            _ => &[],
        }
    }
}

/// A reply to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The registration succeeded; heartbeat and deregister with this id. Registering the same
    /// endpoint again returns the same id.
    Registered {
        /// The registration's id.
        id: Uuid,
        /// The broker's TTL in milliseconds: heartbeat well within it (a third is a good choice).
        ttl_ms: u32,
    },
    /// The heartbeat or deregistration succeeded.
    Ok,
    /// The live instances of the service asked for, in rotating order: successive queries start
    /// one instance further on. Never empty; holds as many as fit in [`MAX_REPLY_LEN`].
    Instances(Vec<SocketAddr>),
    /// No live instance of that service, or no registration with that id.
    NotFound,
    /// The broker's counters.
    Stats(Box<BrokerStats>),
    /// The request was not carried out; the reason says why and what to change.
    Error(Rejection),
    /// A balancer's counters, returned for [`Request::Stats`] on its control port.
    BalancerStats(BalancerStats),
    /// A broker's answer to [`Multicast::Discover`], sent from its unicast socket.
    BrokerHere {
        /// The broker's unicast address; an unspecified IP (a broker bound to `0.0.0.0`) means
        /// "the address this reply came from".
        addr: SocketAddr,
    },
    /// Like [`Response::NotFound`], from a broker that is still catching up from its peers: the
    /// answer may exist elsewhere, so ask another broker (and do not register again because of
    /// it).
    CatchingUp,
    /// A page of the services, for [`Request::Services`].
    Services(ServicePage),
    /// A page of a service's instances, for [`Request::Instances`].
    InstanceList(InstancePage),
    /// The answer to [`Request::Watch`]: the watch is on (or renewed) until `ttl_ms` from now.
    Watching {
        /// The service watched.
        service: String,
        /// The sequence number of its live set now; each change adds one.
        seq: u64,
        /// Milliseconds the watch lives unless renewed.
        ttl_ms: u32,
        /// Its live instances now (possibly none), as many as fit in [`MAX_REPLY_LEN`].
        instances: Vec<SocketAddr>,
    },
    /// Pushed to a watcher when the service's live set changed: the new sequence number and
    /// the live instances (possibly none). A watcher that sees a gap in `seq` missed a change
    /// and should send [`Request::Watch`] again.
    Changed {
        /// The service.
        service: String,
        /// The new sequence number.
        seq: u64,
        /// Its live instances now, as many as fit in [`MAX_REPLY_LEN`].
        instances: Vec<SocketAddr>,
    },
    /// The answer to [`Request::Watch`] (and to a [`Request::WatchEcho`] whose cookie is wrong
    /// or too old): send [`Request::WatchEcho`] with this cookie from the same address and port
    /// to start or renew the watch. Never larger than three times the request it answers, so a
    /// watch sent from a forged address draws no more than that.
    WatchCookie {
        /// The cookie to echo.
        cookie: u64,
    },
    /// The answer to [`Request::InstancesChecked`]: a page of instances, and the check each
    /// declares, in the same order.
    InstanceListChecked {
        /// The page (its instances' `check` is not encoded; `checks` carries it).
        page: InstancePage,
        /// The check of each instance of the page, in order.
        checks: Vec<Check<Box<str>>>,
    },
    /// The answer to [`Request::InstancesMeta`]: a page of instances, the check each declares
    /// and the metadata each carries, in the same order.
    InstanceListMeta {
        /// The page (its instances' `check` is not encoded; `checks` carries it).
        page: InstancePage,
        /// The check of each instance of the page, in order.
        checks: Vec<Check<Box<str>>>,
        /// The metadata of each instance of the page, in order: its pairs, `(key, value)`
        /// (a boolean attribute's value is `None`; values are bytes, as in a TXT record).
        meta: Vec<Vec<(String, Option<Vec<u8>>)>>,
    },
    /// [`Response::Watching`] for a [`Request::WatchMeta`]: with each instance's metadata, in
    /// the same order as `instances` (as many as fit in [`MAX_REPLY_LEN`] with it).
    WatchingMeta {
        /// The service watched.
        service: String,
        /// The sequence number of its live set now; each change adds one.
        seq: u64,
        /// Milliseconds the watch lives unless renewed.
        ttl_ms: u32,
        /// Its live instances now (possibly none).
        instances: Vec<SocketAddr>,
        /// Their metadata, as [`Response::InstanceListMeta`] carries it.
        meta: Vec<Vec<(String, Option<Vec<u8>>)>>,
    },
    /// [`Response::Changed`] for a watch started with [`Request::WatchMeta`]: pushed when the
    /// live set or an instance's metadata changed.
    ChangedMeta {
        /// The service.
        service: String,
        /// The new sequence number.
        seq: u64,
        /// Its live instances now.
        instances: Vec<SocketAddr>,
        /// Their metadata, as [`Response::InstanceListMeta`] carries it.
        meta: Vec<Vec<(String, Option<Vec<u8>>)>>,
    },
}

/// Why a request was refused. Each variant says what the sender should change; its
/// [`Display`](std::fmt::Display) is the text after `ERROR ` in the text form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The datagram was empty, or held only white space. Send a request.
    #[error("empty request")]
    Empty,
    /// The datagram is longer than the broker accepts. Shorten the request.
    #[error("datagram too large: at most {max} bytes")]
    TooLarge {
        /// The largest datagram the broker accepts.
        max: u32,
    },
    /// A text request that is not valid UTF-8.
    #[error("request is not valid UTF-8")]
    NotUtf8,
    /// A text datagram with more than one line; send one request per datagram.
    #[error("one request per datagram: found more than one line")]
    MultipleLines,
    /// The first word is not a known verb.
    #[error(
        "unknown command {verb:?}: expected register, heartbeat, query, request, deregister, report, stats, services, list, instances, watch or unwatch"
    )]
    UnknownCommand {
        /// The word that was sent (shortened to a few dozen characters).
        verb: String,
    },
    /// The verb is known but the words after it do not fit its form.
    #[error("usage: {usage}")]
    Usage {
        /// The forms the verb accepts.
        usage: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("bad port {port:?}: expected a number from 1 to 65535")]
    BadPort {
        /// The text that was sent as a port.
        port: String,
    },
    /// The IP address cannot be parsed.
    #[error("bad address {ip:?}: expected an IPv4 or IPv6 address")]
    BadIp {
        /// The text that was sent as an address.
        ip: String,
    },
    /// The address parses but no client could connect to it (unspecified, multicast or
    /// broadcast).
    #[error("address {ip} cannot be registered: {why}")]
    UnusableIp {
        /// The address.
        ip: IpAddr,
        /// What is wrong with it.
        why: String,
    },
    /// The id is not a UUID.
    #[error("bad id {id:?}: expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8")]
    BadId {
        /// The text that was sent as an id.
        id: String,
    },
    /// The service name is empty or holds a character the broker does not allow.
    #[error("bad service name {name:?}: {why}")]
    BadName {
        /// The name (shortened to a few dozen characters).
        name: String,
        /// Which rule it breaks.
        why: String,
    },
    /// The service name is longer than the broker allows.
    #[error("service name too long: {len} bytes, at most {max}")]
    NameTooLong {
        /// The name's length in bytes.
        len: u32,
        /// The longest name the broker accepts.
        max: u32,
    },
    /// The table holds as many instances as the broker allows; try again later or another broker.
    #[error("full: {max} instances registered")]
    Full {
        /// The broker's limit on instances.
        max: u32,
    },
    /// A binary datagram with a version this broker does not speak.
    #[error("unsupported protocol version {got}: this broker speaks version {supported}")]
    UnsupportedVersion {
        /// The version in the datagram.
        got: u8,
        /// The version this broker speaks.
        supported: u8,
    },
    /// A binary datagram whose body does not decode as a request.
    #[error("malformed binary request: {why}")]
    Malformed {
        /// What the decoder found.
        why: String,
    },
    /// This endpoint understands the request but does not offer it.
    #[error("not supported here: {what}")]
    Unsupported {
        /// The request that is not offered.
        what: String,
    },
    /// An endpoint that is not `IP:PORT` (IPv6 in brackets: `[::1]:4000`).
    #[error("bad endpoint {endpoint:?}: expected IP:PORT such as 127.0.0.1:4000 or [::1]:4000")]
    BadEndpoint {
        /// The text that was sent as an endpoint.
        endpoint: String,
    },
    /// The sender made more requests of this kind than the broker takes from one source; wait.
    #[error("too many {what} from this source: at most {max} a second")]
    TooMany {
        /// What was asked too often.
        what: String,
        /// The most the broker takes per second from one source.
        max: u32,
    },
    /// This source address holds as many registrations as the broker allows one source.
    #[error("quota: at most {max} instances registered from one address")]
    SourceQuota {
        /// The most one source address may hold.
        max: u32,
    },
    /// The broker's policy does not let this source register this (see `--allow-register`
    /// and `--foreign-ip`).
    #[error("not allowed: {why}")]
    NotAllowed {
        /// Which rule refused it.
        why: String,
    },
    /// The source sends faster than the broker answers one source (`--rate-limit`): some of
    /// its requests get this short answer, the others none. Slow down, or retry later.
    #[error("rate limited")]
    RateLimited,
    /// The broker holds as many watches as it allows (from this source address, or in all);
    /// end one (`unwatch`) or wait for one to expire.
    #[error("too many watches{scope}: at most {max}")]
    TooManyWatches {
        /// `" from this address"`, `" from this network"`, `" from this address while nearly
        /// full"`, or empty for the cap on all watches.
        scope: String,
        /// The cap.
        max: u32,
    },
    /// The sources of this source's network (its /24 in IPv4, its /56 in IPv6) hold as many
    /// registrations as the broker allows one network (`--max-per-network`).
    #[error("quota: at most {max} instances registered from one network (/24 or /56)")]
    NetworkQuota {
        /// The most one network may hold.
        max: u32,
    },
    /// The table is nearly full, and this source (or its network) holds much of it already:
    /// the rest is kept for sources that hold little. Try another broker, or later.
    #[error("nearly full: the rest is kept for sources holding fewer than {held} instances")]
    NearlyFull {
        /// What "much" is: this source, or its network, holds this many or more.
        held: u32,
    },
    /// A `key=value` option this endpoint does not know; remove it, or check its spelling.
    #[error("unknown option {key:?}: expected check=tcp, check=http:<path> or check=none")]
    UnknownOption {
        /// The key that was sent (shortened to a few dozen characters).
        key: String,
    },
    /// A declared health check that is not `tcp`, `http:<path>` or `none`, or whose path
    /// breaks the rules of [`check`].
    #[error("bad check {value:?}: {why}")]
    BadCheck {
        /// The check as it was sent (shortened).
        value: String,
        /// Which rule it breaks.
        why: String,
    },
    /// This endpoint takes this request only sealed with the shared key (`--require-key`):
    /// give the client the key file (`--key-file`).
    #[error("key required")]
    KeyRequired,
    /// Metadata that breaks a rule of [`crate::meta`] (a key, a value, a pair too long, too
    /// many or too large in all): `why` says which; fix that pair.
    #[error("{why}")]
    BadMeta {
        /// The rule broken, as [`crate::meta::MetaError`] words it.
        why: String,
    },
    /// An `unwatch` without the watch's cookie (which anyone could send from a forged address):
    /// send `unwatch <service> <cookie>` ([`Request::UnwatchEcho`]) with the cookie of the watch.
    #[error("cookie required: unwatch <service> <cookie>")]
    CookieRequired,
    /// An `unwatch` whose cookie is not this address's, or too old: `watch <service>` (without a
    /// cookie) answers a fresh one, which ends the watch.
    #[error("bad cookie: watch <service> for a fresh one")]
    BadCookie,
}

/// How a request arrived, and so how its reply must be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A text line; the reply is a text line.
    Text,
    /// A binary frame; the reply is a binary frame carrying the same request id.
    Binary {
        /// The request id to echo.
        request_id: u32,
    },
}

/// One binary frame after the version byte: a request id and a body. Requests are
/// `Frame<Request>`, replies `Frame<Response>` with the id of the request they answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame<T> {
    /// Chosen by the client; the reply carries the same id.
    pub id: u32,
    /// The request or reply.
    pub body: T,
}

/// A request that could not be decoded, with the form to write the error reply in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rejection}")]
pub struct DecodeError {
    /// The form of the datagram, as far as it could be told.
    pub form: Form,
    /// Why it was refused.
    pub rejection: Rejection,
}

/// Decodes one request datagram of either form.
///
/// Never panics, whatever the bytes. On failure the error still tells in which form to reply,
/// and for binary requests with which request id, when the id could be read.
///
/// ```
/// use makler::protocol::{decode_request, Form, Request};
///
/// let (form, request) = decode_request(b"query echo\n").unwrap();
/// assert_eq!(form, Form::Text);
/// assert_eq!(request, Request::Query { service: "echo" });
/// ```
pub fn decode_request(datagram: &[u8]) -> Result<(Form, Request<'_>), DecodeError> {
    if binary::is_binary(datagram) {
        binary::decode_request(datagram).map(|(id, request)| (Form::Binary { request_id: id }, request))
    } else {
        text::decode_request(datagram)
            .map(|request| (Form::Text, request))
            .map_err(|rejection| DecodeError { form: Form::Text, rejection })
    }
}

/// Writes `response` into `out` (cleared first) in the given form.
///
/// The caller keeps replies within [`MAX_REPLY_LEN`], by cutting their lists to what fits
/// ([`fit`]).
pub fn encode_reply(form: Form, response: &Response, out: &mut Vec<u8>) {
    out.clear();
    match form {
        Form::Text => text::encode_response(response, out),
        Form::Binary { request_id } => binary::encode_response(request_id, response, out),
    }
}

/// Shortens untrusted text for an error message to at most `max` characters. The messages print
/// it with `{:?}`, which escapes anything that would not print on one line.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}
