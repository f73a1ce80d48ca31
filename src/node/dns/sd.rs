//! DNS-SD over the unicast DNS face (RFC 6763): browsing the zone's service types and a
//! service's instances, and resolving an instance to its SRV and TXT records.
//!
//! | question | answer |
//! |---|---|
//! | `_services._dns-sd._udp.<domain>` PTR | one PTR per service with a live instance: `_<service>._tcp.<domain>` |
//! | `b._dns-sd._udp.<domain>` PTR, `lb.…` | one PTR: `<domain>` (the domain to browse, and the default one) |
//! | `_<service>._tcp.<domain>` PTR | one PTR per live instance: `<instance>._<service>._tcp.<domain>`, with its SRV, TXT and A/AAAA as additional records (§12.1) |
//! | `<instance>._<service>._tcp.<domain>` SRV | priority and weight 1, the port, the target `<hex>-<port>.addr.<domain>`; its A/AAAA as additional |
//! | `<instance>._<service>._tcp.<domain>` TXT | the instance's metadata, a `key=value` string per pair (one empty string without any, §6.1), see [`txt`] |
//!
//! The instance label is the endpoint, written without dots (`10-0-0-5:8080`, see
//! [`crate::mdns::names`]): a query needs no table of names, and a label that is not a live instance of the service is NXDOMAIN. Services are
//! listed in table order, instances too (browsing does not advance the rotation that SRV and A
//! answers take); answers that do not fit are cut as the face's others are.

use std::net::SocketAddr;
use std::time::Instant;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::names::{self, Owner};
use super::{SRV_PRIORITY, SRV_WEIGHT, Zone, address, base, wants};
use crate::mdns::names::{instance_label, parse_instance_label};
use crate::registry::{Cursor, Registry};

/// The TXT strings of an instance: its metadata's `key=value` pairs (see [`crate::meta`]), one
/// string each (at most 255 bytes, RFC 6763 §6.1-6.4), in the order they were registered; one
/// empty string when it has none (§6.1: a TXT record is never empty). At most 1,024 bytes
/// ([`crate::meta::MAX_TOTAL`]), so an answer with one TXT record stays within what the face
/// sends without truncating (see the amplification table in protocol.md).
pub(super) fn txt(registry: &Registry, service: &str, endpoint: SocketAddr) -> TXT {
    let strings = registry.metadata(service, endpoint).map_or_else(|| vec![Vec::new()], crate::meta::Metadata::to_txt);
    TXT::from_bytes(strings.iter().map(Vec::as_slice).collect())
}

/// The answer to a DNS-SD question (see the [module documentation](self)), or `None` when
/// `owner` and `qtype` are not one (the face's other answers take it).
pub(super) fn respond(
    zone: &Zone,
    registry: &mut Registry,
    now: Instant,
    request: &Message,
    owner: Owner<'_>,
    qtype: RecordType,
    max: usize,
) -> Option<Message> {
    let name = request.queries.first()?.name().clone();
    let mut response = base(request);
    let exists = match owner {
        Owner::ServiceTypes => {
            if wants(qtype, RecordType::PTR) {
                service_types(zone, registry, now, &name, max, &mut response);
            }
            true
        }
        Owner::BrowseDomain => {
            if wants(qtype, RecordType::PTR) {
                response.answers.push(ptr(name, zone.ttl, zone.origin.clone()));
            }
            true
        }
        Owner::Srv(label) if qtype == RecordType::PTR => match service_name(registry, now, label) {
            Some(service) => {
                browse(zone, registry, now, &service, &name, max, &mut response);
                true
            }
            None => false,
        },
        Owner::Instance { service, instance } => {
            let found = service_name(registry, now, service)
                .zip(parse_instance_label(instance))
                .filter(|(service, endpoint)| registry.contains(now, service, *endpoint));
            match found {
                Some((service, endpoint)) => {
                    if wants(qtype, RecordType::SRV) {
                        instance_srv(zone, name.clone(), endpoint, &mut response.answers, &mut response.additionals);
                    }
                    if wants(qtype, RecordType::TXT) {
                        response.answers.push(Record::from_rdata(
                            name,
                            zone.ttl,
                            RData::TXT(txt(registry, &service, endpoint)),
                        ));
                    }
                    true
                }
                None => false,
            }
        }
        _ => return None,
    };
    response.metadata.authoritative = true;
    if !exists {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    if response.answers.is_empty() {
        // Negative answers carry the SOA, whose minimum (the TTL) bounds how long they are kept.
        response.additionals.clear();
        response.authorities.push(zone.soa.clone());
    }
    Some(response)
}

/// The registry's name for the service a label names: as written, then in lower case (as the
/// face's other answers look it up), if it has a live instance.
fn service_name(registry: &mut Registry, now: Instant, label: &[u8]) -> Option<String> {
    let service = std::str::from_utf8(label).ok()?;
    if registry.has_service(now, service) {
        return Some(service.to_owned());
    }
    let lower = service.to_ascii_lowercase();
    (lower != service && registry.has_service(now, &lower)).then_some(lower)
}

fn ptr(owner: Name, ttl: u32, to: Name) -> Record {
    Record::from_rdata(owner, ttl, RData::PTR(PTR(to)))
}

/// A PTR per service with a live instance whose name makes a label, at most `max`.
fn service_types(zone: &Zone, registry: &mut Registry, now: Instant, name: &Name, max: usize, response: &mut Message) {
    let tcp = zone.origin.prepend_label("_tcp").ok();
    let Some(tcp) = tcp else { return };
    let mut cursor = Some(Cursor::START);
    while let Some(at) = cursor.filter(|_| response.answers.len() < max) {
        cursor = registry.services_page(now, at, |service, live| {
            if live > 0
                && let Ok(type_name) = tcp.prepend_label(format!("_{service}").into_bytes())
            {
                response.answers.push(ptr(name.clone(), zone.ttl, type_name));
            }
            response.answers.len() < max
        });
    }
}

/// A PTR per live instance of `service`, at most `max`, with each one's SRV, TXT and address
/// as additional records.
fn browse(
    zone: &Zone,
    registry: &mut Registry,
    now: Instant,
    service: &str,
    name: &Name,
    max: usize,
    response: &mut Message,
) {
    let endpoints: Vec<SocketAddr> = registry.members(now, service).take(max).collect();
    for endpoint in endpoints {
        let Ok(instance) = name.prepend_label(instance_label(endpoint).into_bytes()) else { continue };
        response.answers.push(ptr(name.clone(), zone.ttl, instance.clone()));
        let txt = Record::from_rdata(instance.clone(), zone.ttl, RData::TXT(txt(registry, service, endpoint)));
        let mut srv = Vec::with_capacity(1);
        instance_srv(zone, instance, endpoint, &mut srv, &mut response.additionals);
        response.additionals.extend(srv);
        response.additionals.push(txt);
    }
}

/// The SRV record of an instance into `answers`, its target's address into `additionals`.
fn instance_srv(
    zone: &Zone,
    name: Name,
    endpoint: SocketAddr,
    answers: &mut Vec<Record>,
    additionals: &mut Vec<Record>,
) {
    let mut buf = [0; names::MAX_TARGET_LABEL];
    let Ok(target) = zone.addr.prepend_label(names::target_label(endpoint, &mut buf)) else { return };
    additionals.push(address(target.clone(), zone.ttl, endpoint.ip()));
    let srv = SRV::new(SRV_PRIORITY, SRV_WEIGHT, endpoint.port(), target);
    answers.push(Record::from_rdata(name, zone.ttl, RData::SRV(srv)));
}
