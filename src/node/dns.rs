//! The broker's DNS face, as a pure function: a query's bytes, the registry and the time in, the
//! reply's bytes out. The wire format is hickory-proto's; nothing of DNS reaches the registry,
//! which is asked [`Registry::query`] like any client's query (so each DNS query advances the
//! service's rotation once, and the answer lists its instances in that order).
//!
//! What is answered (see [`names`] for the names, and `protocol.md`):
//!
//! - `_<service>._tcp.<domain>` SRV: one record per live instance (priority and weight 1, its
//!   port), each target `<hex address>-<port>.addr.<domain>` with its A or AAAA record in the
//!   additional section. `<service>.<domain>` A and AAAA: the instances' addresses.
//!   `<hex>[-<port>].addr.<domain>` A or AAAA: the address it encodes. The apex: its SOA.
//! - DNS-SD (RFC 6763, `dns/sd.rs`): `_services._dns-sd._udp.<domain>` PTR lists the service
//!   types, `_<service>._tcp.<domain>` PTR the instances' names, each
//!   `<instance>._<service>._tcp.<domain>` has SRV and TXT, and `b`/`lb._dns-sd._udp.<domain>`
//!   name the domain for browsing.
//! - NXDOMAIN for a name in the zone that does not exist (a service with no live instance);
//!   NOERROR with no records (and the SOA in the authority section) where the name exists but
//!   has no record of the asked type; REFUSED outside the zone or for a class other than IN;
//!   NOTIMP for an opcode other than QUERY; FORMERR for a query that does not decode or does
//!   not ask exactly one question; BADVERS for an EDNS version above 0. Responses and messages
//!   shorter than a header get no reply. No recursion (RA is never set).
//! - Size: over UDP an answer is at most 512 bytes, or the client's EDNS size up to
//!   [`MAX_UDP_PAYLOAD`]; over TCP at most 65,535. When the answer section does not fit it is
//!   cut to whole records and TC is set (without additional records); when only additional
//!   records do not fit, as many whole ones as fit are kept and TC is not set (RFC 2181 §9: the
//!   targets resolve on their own).
//!
//! A [`Zone`] keeps the encoded answers that list instances, by everything they are made from
//! (`dns/cache.rs`): answering again is a copy.

mod cache;
pub mod names;
mod sd;
#[cfg(test)]
mod tests;
pub mod tsig;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode, emit_message_parts};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};

use crate::registry::Registry;
use names::Owner;

/// The zone the broker answers for unless told otherwise.
pub const DEFAULT_DOMAIN: &str = "makler.";

/// The largest UDP answer, whatever larger size a client's EDNS offers: 1,232 bytes (the DNS
/// flag day 2020's figure) fits any path without fragments.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP answer size for a client that sends no EDNS (RFC 1035), and the least any client
/// gets.
pub const PLAIN_UDP_PAYLOAD: u16 = 512;

/// The largest message over TCP, where a 2-byte length precedes each.
pub const MAX_TCP_MESSAGE: usize = 65_535;

/// The longest domain on the wire: room is left for `<32 hex digits>-<port>.addr.` before it.
pub const MAX_DOMAIN_WIRE_LEN: usize = 255 - (names::MAX_TARGET_LABEL + 1) - 5;

/// An OPT record without options.
const OPT_LEN: usize = 11;
/// The fewest bytes one answer record takes (an A record under a compressed name): bounds how
/// many instances one answer reads from the registry.
const MIN_RECORD_LEN: usize = 16;
/// SRV priority and weight: the same for every instance, so the order (makler's rotation)
/// decides.
const SRV_PRIORITY: u16 = 1;
const SRV_WEIGHT: u16 = 1;
/// The SOA's timers (refresh, retry, expire): nothing transfers the zone, so they only need to
/// be sane.
const SOA_TIMERS: (i32, i32, i32) = (3600, 600, 86_400);

/// The DNS face's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The zone answered, e.g. `makler.` (a trailing dot is added where missing).
    pub domain: String,
    /// The TTL of every record, in seconds: 0 by default, as Consul does, since the table
    /// changes within seconds.
    pub ttl: u32,
    /// Under `--require-key all`, answer unsigned queries anyway (`--dns-unsealed`) instead of
    /// only those signed with the key's TSIG secret ([`tsig`]).
    pub unsealed: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig { domain: DEFAULT_DOMAIN.to_owned(), ttl: 0, unsealed: false }
    }
}

/// How a query came, which bounds the size of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram: 512 bytes, or the client's EDNS size up to [`MAX_UDP_PAYLOAD`].
    Udp,
    /// A TCP stream: [`MAX_TCP_MESSAGE`].
    Tcp,
}

/// A [`DnsConfig`] checked and made ready to answer with, and the answers it gave.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    /// `addr.<origin>`, under which address targets are named.
    addr: Name,
    ttl: u32,
    soa: Record,
    cache: cache::Cache,
}

impl Zone {
    /// The zone `config` describes, or why it cannot be one.
    pub fn new(config: &DnsConfig) -> Result<Zone, String> {
        let origin = parse_domain(&config.domain)?;
        let label = |text: &str| origin.prepend_label(text).map_err(|e| format!("domain {:?}: {e}", config.domain));
        let (addr, hostmaster) = (label("addr")?, label("hostmaster")?);
        let (refresh, retry, expire) = SOA_TIMERS;
        let soa = SOA::new(origin.clone(), hostmaster, 1, refresh, retry, expire, config.ttl);
        let soa = Record::from_rdata(origin.clone(), config.ttl, RData::SOA(soa));
        Ok(Zone { origin, addr, ttl: config.ttl, soa, cache: cache::Cache::default() })
    }

    /// The zone's domain, in lower case with its trailing dot.
    pub fn domain(&self) -> String {
        self.origin.to_ascii()
    }

    /// The TTL of every record.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }
}

/// Checks a domain for `--dns-domain`: returns it in lower case with its trailing dot.
pub fn check_domain(text: &str) -> Result<String, String> {
    parse_domain(text).map(|name| name.to_ascii())
}

fn parse_domain(text: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(text.trim()).map_err(|e| format!("{text:?} is not a domain name: {e}"))?;
    name.set_fqdn(true);
    let name = name.to_lowercase();
    if name.is_root() {
        return Err("the DNS domain needs at least one label (e.g. makler.)".to_owned());
    }
    if names::wire_len(&name) > MAX_DOMAIN_WIRE_LEN {
        return Err(format!("the DNS domain {text:?} is too long (at most {MAX_DOMAIN_WIRE_LEN} bytes on the wire)"));
    }
    Ok(name)
}

/// Answers the DNS message `query` that came over `transport`: writes the reply into `out`
/// (cleared first) and returns whether there is one to send. Never panics, whatever the bytes;
/// the reply never exceeds the size the transport and the query allow.
pub fn answer(
    zone: &mut Zone,
    registry: &mut Registry,
    now: Instant,
    query: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
) -> bool {
    answer_reserving(zone, registry, now, query, transport, 0, out)
}

/// [`answer`], leaving `reserve` bytes of the size the transport and the query allow free for
/// what is appended after (a TSIG record, see [`tsig`]).
pub fn answer_reserving(
    zone: &mut Zone,
    registry: &mut Registry,
    now: Instant,
    query: &[u8],
    transport: Transport,
    reserve: usize,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    let request = match decode(query) {
        Decoded::Query(request) => request,
        Decoded::Malformed(metadata) => {
            let mut response = Message::new(metadata.id, MessageType::Response, metadata.op_code);
            response.metadata = Metadata::response_from_request(&metadata);
            response.metadata.response_code = ResponseCode::FormErr;
            return encode_within(&mut response, usize::from(PLAIN_UDP_PAYLOAD), out);
        }
        Decoded::Ignore => return false,
    };
    let limit = match transport {
        Transport::Udp => usize::from(
            request
                .edns
                .as_ref()
                .map_or(PLAIN_UDP_PAYLOAD, |e| e.max_payload().clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)),
        ),
        Transport::Tcp => MAX_TCP_MESSAGE,
    }
    .saturating_sub(reserve);
    let found = match respond(zone, registry, now, &request, limit) {
        Reply::Instances(found) => found,
        Reply::Whole(mut response) => return encode_within(&mut response, limit, out),
    };
    let (Found::Addresses(instances) | Found::Srv(instances)) = &found;
    let Some(query) = request.queries.first() else { return false };
    if zone.cache.lookup(&request, query, limit, instances, out) {
        return true;
    }
    let mut response = base(&request);
    found.add_to(zone, &mut response);
    if !encode_within(&mut response, limit, out) {
        return false;
    }
    zone.cache.store(out);
    true
}

/// The reply a rate-limited query gets instead of its answer (DNS servers' "slip"): its question
/// with TC set and no records, so a real client retries over TCP. Written into `out`; returns
/// whether there is one.
pub fn truncated(query: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let Decoded::Query(request) = decode(query) else { return false };
    let mut response = Message::new(request.id, MessageType::Response, request.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.truncation = true;
    response.queries.extend(request.queries.into_iter().take(1));
    response.edns = request.edns.as_ref().map(reply_edns);
    encode_within(&mut response, usize::from(PLAIN_UDP_PAYLOAD), out)
}

enum Decoded {
    Query(Message),
    /// A query header with a body that does not decode: FORMERR.
    Malformed(Metadata),
    /// Too short for a header, or a response: no reply (a reply to a response could loop).
    Ignore,
}

fn decode(query: &[u8]) -> Decoded {
    let Ok(header) = Header::read(&mut BinDecoder::new(query)) else { return Decoded::Ignore };
    if header.metadata.message_type != MessageType::Query {
        return Decoded::Ignore;
    }
    match Message::from_vec(query) {
        Ok(request) => Decoded::Query(request),
        Err(_) => Decoded::Malformed(header.metadata),
    }
}

/// The EDNS of a reply to a query that had one: version 0, our size, DO copied (RFC 3225).
fn reply_edns(request: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD).set_version(0).set_dnssec_ok(request.flags().dnssec_ok);
    edns
}

/// Instances an answer lists, as addresses (A, AAAA) or as SRV records.
enum Found {
    Addresses(Vec<SocketAddr>),
    Srv(Vec<SocketAddr>),
}

impl Found {
    /// Their records, in the answer section (and, for SRV, the targets' addresses in the
    /// additional section).
    fn add_to(self, zone: &Zone, response: &mut Message) {
        response.metadata.authoritative = true;
        let Some(name) = response.queries.first().map(|q| q.name().clone()) else { return };
        match self {
            Found::Addresses(instances) => {
                response.answers.extend(instances.into_iter().map(|a| address(name.clone(), zone.ttl, a.ip())));
            }
            Found::Srv(instances) => srv_records(zone, &name, &instances, response),
        }
    }
}

/// A response to `request` with its header and question (if it asked exactly one), and no
/// records yet.
fn base(request: &Message) -> Message {
    let mut response = Message::new(request.id, MessageType::Response, request.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.edns = request.edns.as_ref().map(reply_edns);
    if let [query] = request.queries.as_slice() {
        response.queries.push(query.clone());
    }
    response
}

/// What a decoded query gets.
enum Reply {
    /// The instances it lists, to be looked up in the cache before any record is built.
    Instances(Found),
    /// Any other response, whole, before it is fitted to the size limit.
    Whole(Message),
}

/// What a decoded query gets (see [`Reply`]).
fn respond(zone: &Zone, registry: &mut Registry, now: Instant, request: &Message, limit: usize) -> Reply {
    let fail = |code| {
        let mut response = base(request);
        response.metadata.response_code = code;
        Reply::Whole(response)
    };
    let [query] = request.queries.as_slice() else {
        return fail(ResponseCode::FormErr);
    };
    if request.op_code != OpCode::Query {
        return fail(ResponseCode::NotImp);
    }
    if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
        return fail(ResponseCode::BADVERS);
    }
    // The mDNS unicast-response bit (hickory-proto reads it out of the class) has no place in
    // unicast DNS: such a class is another class, as it was before the bit was read.
    let outside = !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) || query.mdns_unicast_response();
    let owner = names::classify(&zone.origin, query.name());
    let Some(owner) = owner.filter(|_| !outside) else {
        return fail(ResponseCode::Refused);
    };
    let qtype = query.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return fail(ResponseCode::NotImp);
    }
    let max = limit / MIN_RECORD_LEN + 1;
    if let Some(response) = sd::respond(zone, registry, now, request, owner, qtype, max) {
        return Reply::Whole(response);
    }
    let mut answer = None;
    let exists = match owner {
        Owner::Apex => {
            answer = wants(qtype, RecordType::SOA).then(|| zone.soa.clone());
            true
        }
        Owner::Empty => true,
        Owner::Addr(ip) => {
            answer = wants_ip(qtype, ip).then(|| address(query.name().clone(), zone.ttl, ip));
            true
        }
        Owner::Service(label) => match instances(registry, now, label, |ip| wants_ip(qtype, ip), max) {
            Some(list) if !list.is_empty() => return Reply::Instances(Found::Addresses(list)),
            found => found.is_some(),
        },
        Owner::Srv(label) => match instances(registry, now, label, |_| wants(qtype, RecordType::SRV), max) {
            Some(list) if !list.is_empty() => return Reply::Instances(Found::Srv(list)),
            found => found.is_some(),
        },
        // `sd::respond` answered these.
        Owner::Missing | Owner::ServiceTypes | Owner::BrowseDomain | Owner::Instance { .. } => false,
    };
    let mut response = base(request);
    response.metadata.authoritative = true;
    if !exists {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    match answer {
        Some(record) => response.answers.push(record),
        // Negative answers carry the SOA, whose minimum (the TTL) bounds how long they are kept.
        None => response.authorities.push(zone.soa.clone()),
    }
    Reply::Whole(response)
}

/// Whether a query of type `qtype` asks for records of type `have`.
fn wants(qtype: RecordType, have: RecordType) -> bool {
    qtype == have || qtype == RecordType::ANY
}

fn wants_ip(qtype: RecordType, ip: IpAddr) -> bool {
    wants(qtype, if ip.is_ipv4() { RecordType::A } else { RecordType::AAAA })
}

fn address(name: Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, data)
}

/// The live instances of the service a label names (as written, then in lower case), at most
/// `max` of those `keep` takes, in rotation order; `None` when there is no such service. Calls
/// [`Registry::query`] once when the label finds the service.
fn instances(
    registry: &mut Registry,
    now: Instant,
    label: &[u8],
    keep: impl Fn(IpAddr) -> bool,
    max: usize,
) -> Option<Vec<SocketAddr>> {
    let service = std::str::from_utf8(label).ok()?;
    if let Some(found) = registry.query(now, service) {
        return Some(found.filter(|a| keep(a.ip())).take(max).collect());
    }
    if !service.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let lower = service.to_ascii_lowercase();
    registry.query(now, &lower).map(|found| found.filter(|a| keep(a.ip())).take(max).collect())
}

/// An SRV record per instance, and each target's address in the additional section.
fn srv_records(zone: &Zone, name: &Name, found: &[SocketAddr], response: &mut Message) {
    let mut buf = [0; names::MAX_TARGET_LABEL];
    for instance in found {
        let Ok(target) = zone.addr.prepend_label(names::target_label(*instance, &mut buf)) else { continue };
        response.additionals.push(address(target.clone(), zone.ttl, instance.ip()));
        let srv = SRV::new(SRV_PRIORITY, SRV_WEIGHT, instance.port(), target);
        response.answers.push(Record::from_rdata(name.clone(), zone.ttl, RData::SRV(srv)));
    }
}

/// Encodes `response` into `out` within `limit` bytes, cutting it to whole records where it
/// does not fit (see the module documentation). Returns whether `out` holds a reply.
fn encode_within(response: &mut Message, limit: usize, out: &mut Vec<u8>) -> bool {
    match emit(response, limit, out) {
        Ok(header) if fits(&header, response) => return true,
        Ok(_) => {}
        Err(_) => return server_failure(response, out),
    }
    // Which records fit with room left for the OPT record, which must be there.
    let edns = response.edns.take();
    let room = limit.saturating_sub(if edns.is_some() { OPT_LEN } else { 0 });
    let counts = match emit(response, room, out) {
        Ok(header) => header.counts,
        Err(_) => return server_failure(response, out),
    };
    if usize::from(counts.answers) < response.answers.len() {
        response.answers.truncate(usize::from(counts.answers));
        response.authorities.clear();
        response.additionals.clear();
        response.metadata.truncation = true;
    } else {
        response.authorities.truncate(usize::from(counts.authorities));
        response.additionals.truncate(usize::from(counts.additionals));
    }
    response.edns = edns;
    match emit(response, limit, out) {
        Ok(header) if fits(&header, response) => true,
        _ => server_failure(response, out),
    }
}

/// Whether every record of `response` was written (none was cut for room).
fn fits(header: &Header, response: &Message) -> bool {
    let counts = header.counts;
    usize::from(counts.answers) == response.answers.len()
        && usize::from(counts.authorities) == response.authorities.len()
        && usize::from(counts.additionals) == response.additionals.len() + usize::from(response.edns.is_some())
}

fn emit(response: &Message, max: usize, out: &mut Vec<u8>) -> Result<Header, hickory_proto::ProtoError> {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(u16::try_from(max).unwrap_or(u16::MAX));
    emit_message_parts(
        &response.metadata,
        &mut response.queries.iter(),
        &mut response.answers.iter(),
        &mut response.authorities.iter(),
        &mut response.additionals.iter(),
        response.edns.as_ref(),
        None,
        &mut encoder,
    )
}

/// SERVFAIL with the question only, for a response that cannot be encoded (not expected: every
/// name is checked when the zone is made).
fn server_failure(response: &Message, out: &mut Vec<u8>) -> bool {
    let mut failure = Message::new(response.id, MessageType::Response, response.op_code);
    failure.metadata = response.metadata;
    failure.metadata.response_code = ResponseCode::ServFail;
    failure.metadata.truncation = false;
    failure.queries.extend(response.queries.iter().take(1).cloned());
    failure.edns = response.edns.clone();
    matches!(emit(&failure, usize::from(PLAIN_UDP_PAYLOAD), out), Ok(header) if fits(&header, &failure))
}
