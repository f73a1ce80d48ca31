//! The records makler advertises for an instance on the link, and their names.
//!
//! For an instance `10.0.0.5:8080` of the service `web`:
//!
//! | record | name | data | kind | TTL |
//! |---|---|---|---|---|
//! | PTR | `_services._dns-sd._udp.local.` | `_web._tcp.local.` | shared | [`SERVICE_TTL`] |
//! | PTR | `_web._tcp.local.` | `10-0-0-5:8080._web._tcp.local.` | shared | [`SERVICE_TTL`] |
//! | SRV | `10-0-0-5:8080._web._tcp.local.` | `0 0 8080 10-0-0-5.makler.local.` | unique | [`HOST_TTL`] |
//! | TXT | `10-0-0-5:8080._web._tcp.local.` | the metadata, or one empty string | unique | [`SERVICE_TTL`] |
//! | A | `10-0-0-5.makler.local.` | `10.0.0.5` | unique | [`HOST_TTL`] |
//!
//! The SRV target is a host name of makler's own under `makler.local.` for the instance's
//! address (`10-0-0-5` for IPv4, the 32 hex digits for IPv6), never the host's own name, which
//! makler does not know and must not claim. Unique records carry the cache-flush bit (RFC 6762
//! §10.2) except in a probe and in a legacy unicast reply.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::rdata::{A, AAAA, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{HOST_TTL, SERVICE_TTL};

/// `local.`
pub fn local() -> Name {
    Name::from_ascii("local.").unwrap_or_else(|_| Name::root())
}

/// `_services._dns-sd._udp.local.`, where service types are enumerated (RFC 6763 §9).
pub fn services_name() -> Name {
    Name::from_ascii("_services._dns-sd._udp.local.").unwrap_or_else(|_| Name::root())
}

/// `_<service>._tcp.local.`, or `None` when the service's name does not make a label.
pub fn type_name(service: &str) -> Option<Name> {
    local().prepend_label(&b"_tcp"[..]).ok()?.prepend_label(format!("_{service}").into_bytes()).ok()
}

/// `<label>._<service>._tcp.local.`
pub fn instance_name(service: &str, label: &str) -> Option<Name> {
    type_name(service)?.prepend_label(label.as_bytes()).ok()
}

/// The host name makler gives an instance's address: `10-0-0-5.makler.local.`,
/// `<32 hex digits>.makler.local.`.
pub fn host_name(ip: IpAddr) -> Name {
    let label = match ip {
        IpAddr::V4(v4) => v4.octets().map(|o| o.to_string()).join("-"),
        IpAddr::V6(v6) => v6.octets().iter().map(|o| format!("{o:02x}")).collect(),
    };
    local().prepend_label(&b"makler"[..]).and_then(|n| n.prepend_label(label.into_bytes())).unwrap_or_else(|_| local())
}

/// One instance's records (see the [module documentation](self)).
#[derive(Debug, Clone)]
pub struct InstanceRecords {
    /// `_services._dns-sd._udp.local.` PTR `_<service>._tcp.local.`
    pub types_ptr: Record,
    /// `_<service>._tcp.local.` PTR the instance name.
    pub ptr: Record,
    /// The instance's SRV.
    pub srv: Record,
    /// The instance's TXT.
    pub txt: Record,
    /// Its address under [`host_name`].
    pub host: Record,
}

impl InstanceRecords {
    /// The records of `endpoint` under `name`, an instance of the service whose type is
    /// `type_name`, with `txt` (one empty string when empty).
    pub fn new(type_name: &Name, name: &Name, endpoint: SocketAddr, txt: &[Vec<u8>]) -> InstanceRecords {
        let host = host_name(endpoint.ip());
        let unique = |mut record: Record| {
            record.mdns_cache_flush = true;
            record
        };
        let strings: Vec<&[u8]> = if txt.is_empty() { vec![&b""[..]] } else { txt.iter().map(Vec::as_slice).collect() };
        let address = match endpoint.ip() {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        InstanceRecords {
            types_ptr: Record::from_rdata(services_name(), SERVICE_TTL, RData::PTR(PTR(type_name.clone()))),
            ptr: Record::from_rdata(type_name.clone(), SERVICE_TTL, RData::PTR(PTR(name.clone()))),
            srv: unique(Record::from_rdata(
                name.clone(),
                HOST_TTL,
                RData::SRV(SRV::new(0, 0, endpoint.port(), host.clone())),
            )),
            txt: unique(Record::from_rdata(name.clone(), SERVICE_TTL, RData::TXT(TXT::from_bytes(strings)))),
            host: unique(Record::from_rdata(host, HOST_TTL, address)),
        }
    }

    /// All five, in the order an announcement lists them.
    pub fn all(&self) -> [&Record; 5] {
        [&self.ptr, &self.srv, &self.txt, &self.host, &self.types_ptr]
    }

    /// The records answering a question for `name` and `qtype`.
    pub fn answering(&self, name: &Name, qtype: RecordType) -> impl Iterator<Item = &Record> {
        let name = name.clone();
        self.all().into_iter().filter(move |r| r.name == name && (qtype == RecordType::ANY || qtype == r.record_type()))
    }

    /// The additional records that go with `answer` (RFC 6763 §12): a PTR's SRV, TXT and
    /// address; an SRV's address.
    pub fn additional_for(&self, answer: &Record) -> Vec<&Record> {
        match answer.record_type() {
            RecordType::PTR if answer.name == self.ptr.name => vec![&self.srv, &self.txt, &self.host],
            RecordType::SRV => vec![&self.host],
            _ => Vec::new(),
        }
    }
}

/// Whether `record` is a unique record (SRV, TXT, A, AAAA here) rather than a shared one
/// (PTR).
pub fn is_unique(record: &Record) -> bool {
    record.record_type() != RecordType::PTR
}
