//! The counters `stats` answers with: a broker's and a balancer's, as data.
//!
//! A counter is a name and a value ([`Counter`]); what a metrics page needs besides (a help line,
//! whether it is a counter or a gauge, its Prometheus name) is its [`Def`], kept in one table
//! by whoever counts (the node, the balancer). The text line, the metrics page and the CLI are
//! loops over the list, so a new counter is a row in that table (and its increment).
//!
//! The lists of peers, bridges and backends stay typed records ([`PeerStats`], …).
//!
//! # The binary form grows without breaking older clients
//!
//! postcard is positional and the frame decoder refuses trailing bytes, so the binary `stats`
//! answer is built to be read by a client older than the broker:
//!
//! - the whole answer is one *record*: a length (varint), then its bytes; a reader takes the
//!   fields it knows from the front and skips the rest, so a newer broker may append fields;
//! - the counters are a list of `(name, value)` pairs: a reader keeps the ones it does not know
//!   (the CLI shows them) and a broker may add, drop or reorder counters;
//! - each peer, bridge or backend is a record too: a newer broker appends its new fields.
//!
//! ```
//! use makler::protocol::{BrokerStats, Counter};
//!
//! let stats = BrokerStats { counters: vec![Counter::new("instances", 2)], ..BrokerStats::default() };
//! let bytes = postcard::to_allocvec(&stats).unwrap();
//! // The record: 14 bytes; 1 counter: "instances", 2; no peers; no bridges.
//! assert_eq!(bytes, [14, 1, 9, b'i', b'n', b's', b't', b'a', b'n', b'c', b'e', b's', 2, 0, 0]);
//! assert_eq!(postcard::from_bytes::<BrokerStats>(&bytes).unwrap(), stats);
//! ```

use std::borrow::Cow;
use std::net::SocketAddr;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What kind of number a counter is, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (until a restart).
    Counter,
    /// Goes up and down: a count of what is there now.
    Gauge,
    /// A gauge of 0 or 1, written `yes`/`no` in the text line and `true`/`false` in JSON.
    Flag,
}

/// What a metrics page and the CLI know of a counter besides its value: one row of a table of
/// counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    /// Its name in the text line, in JSON and in the binary form.
    pub name: &'static str,
    /// Counter, gauge or flag.
    pub kind: Kind,
    /// Its Prometheus metric name; rows that share one (with a [`label`](Def::label) each) form
    /// one metric and sit next to each other in the table.
    pub metric: &'static str,
    /// The Prometheus label and its value, for one of several counters of one metric.
    pub label: Option<(&'static str, &'static str)>,
    /// The Prometheus help line (the same for every row of one metric).
    pub help: &'static str,
}

impl Def {
    /// A counter: it only grows.
    pub const fn counter(name: &'static str, metric: &'static str, help: &'static str) -> Def {
        Def { name, kind: Kind::Counter, metric, label: None, help }
    }

    /// A gauge: it goes up and down.
    pub const fn gauge(name: &'static str, metric: &'static str, help: &'static str) -> Def {
        Def { name, kind: Kind::Gauge, metric, label: None, help }
    }

    /// A flag: 0 or 1.
    pub const fn flag(name: &'static str, metric: &'static str, help: &'static str) -> Def {
        Def { name, kind: Kind::Flag, metric, label: None, help }
    }

    /// The same, as one sample (`label="value"`) of a metric with several.
    pub const fn labelled(self, label: &'static str, value: &'static str) -> Def {
        Def { label: Some((label, value)), ..self }
    }
}

/// One named counter, as `stats` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Its name (see [`Def::name`]).
    pub name: Cow<'static, str>,
    /// Its value; a flag is 0 or 1.
    pub value: u64,
}

impl Counter {
    /// A counter of this name and value.
    pub const fn new(name: &'static str, value: u64) -> Counter {
        Counter { name: Cow::Borrowed(name), value }
    }
}

/// A counter's value by name, from a list of them.
fn find(counters: &[Counter], name: &str) -> Option<u64> {
    counters.iter().find(|c| c.name == name).map(|c| c.value)
}

/// How the text line (and JSON) writes the counters that are not plain numbers: the forms the
/// line had before counters were data, kept byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// `name=value`.
    Number,
    /// `name=yes` or `name=no` (a JSON bool).
    YesNo,
    /// `name=value/other`, the other counter written here and not on its own.
    OutOf(&'static str),
    /// Not on the line (written with another, or under another name); a JSON number.
    Hidden,
    /// `label=value`: another word on the text line than in JSON.
    As(&'static str),
}

impl Shown {
    /// How `name` is written.
    pub fn of(name: &str) -> Shown {
        match name {
            "complete" => Shown::YesNo,
            "peers_up" => Shown::OutOf("peer_count"),
            "peer_count" => Shown::Hidden,
            "backend_count" => Shown::As("backends"),
            _ => Shown::Number,
        }
    }
}

/// The `name=value` words of a text line, in order.
pub fn text_words(counters: &[Counter]) -> Vec<(&str, String)> {
    let mut words = Vec::with_capacity(counters.len());
    for c in counters {
        match Shown::of(&c.name) {
            Shown::Number => words.push((&*c.name, c.value.to_string())),
            Shown::YesNo => words.push((&*c.name, if c.value != 0 { "yes" } else { "no" }.to_owned())),
            Shown::OutOf(other) => {
                words.push((&*c.name, format!("{}/{}", c.value, find(counters, other).unwrap_or_default())))
            }
            Shown::As(word) => words.push((word, c.value.to_string())),
            Shown::Hidden => {}
        }
    }
    words
}

/// A balancer's counters and the state of each backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalancerStats {
    /// The counters: `backend_count` (how many backends are registered), `active`, `total`,
    /// `refused`, `failed`, and any a newer balancer adds.
    pub counters: Vec<Counter>,
    /// Connections each forwarding thread accepted (each accepts on its own listener).
    pub accepted_per_thread: Vec<u64>,
    /// The backends (as many as fit in one reply; `backend_count` says how many there are).
    pub backends: Vec<BackendStats>,
}

impl BalancerStats {
    /// A counter's value by name; `None` when the balancer did not send it.
    pub fn get(&self, name: &str) -> Option<u64> {
        find(&self.counters, name)
    }
}

/// One backend as a balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it gets new connections (false after a failed connect or probe, until it proves
    /// alive again).
    pub up: bool,
    /// Connections forwarded to it that are open now.
    pub active: u64,
    /// Connections forwarded to it since it registered.
    pub total: u64,
    /// Bytes sent to it.
    pub bytes_to: u64,
    /// Bytes received from it.
    pub bytes_from: u64,
    /// Failed connects and probes.
    pub failures: u64,
}

/// Counters a broker keeps about itself, returned for [`Request::Stats`](super::Request::Stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// The counters in the order of the text line (`instances`, `services`, `received`, …; the
    /// node's table of counters lists them), and any a newer broker adds.
    pub counters: Vec<Counter>,
    /// The peers (as many as fit in one reply).
    pub peers: Vec<PeerStats>,
    /// The bridges (as many as fit in one reply).
    pub bridges: Vec<BridgeStats>,
}

impl BrokerStats {
    /// A counter's value by name; `None` when the broker did not send it.
    pub fn get(&self, name: &str) -> Option<u64> {
        find(&self.counters, name)
    }
}

/// `stats["received"]`: a counter's value; panics when the broker did not send it, like a map's
/// index (use [`BrokerStats::get`] for a counter an older broker may lack).
impl std::ops::Index<&str> for BrokerStats {
    type Output = u64;

    fn index(&self, name: &str) -> &u64 {
        match self.counters.iter().find(|c| c.name == name) {
            Some(c) => &c.value,
            None => panic!("no counter {name:?} in these stats"),
        }
    }
}

/// `stats["active"]`: as for [`BrokerStats`].
impl std::ops::Index<&str> for BalancerStats {
    type Output = u64;

    fn index(&self, name: &str) -> &u64 {
        match self.counters.iter().find(|c| c.name == name) {
            Some(c) => &c.value,
            None => panic!("no counter {name:?} in these stats"),
        }
    }
}

/// One bridge (a broker of another network, `--bridge`) as a broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeStats {
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it is asked (it answered its last query in time, or its time out is over).
    pub up: bool,
    /// Queries sent to it.
    pub asked: u64,
    /// Its answers with instances.
    pub found: u64,
    /// Queries it did not answer in time.
    pub timeouts: u64,
}

/// One peer broker as a broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStats {
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it is live (heard from within the peer timeout).
    pub up: bool,
    /// Whether it holds the whole table.
    pub complete: bool,
    /// Its live instances, as it last said.
    pub instances: u64,
    /// Milliseconds since it was last heard from (`None`: never).
    pub last_heard_ms: Option<u64>,
}

/// Writes `value` as a record: its length, then its postcard bytes.
struct AsRecord<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for AsRecord<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = postcard::to_allocvec(self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

/// Reads a record: the value from its front, skipping whatever a newer writer appended.
struct Record<T>(T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Record<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserializer.deserialize_bytes(BytesVisitor)?;
        let (value, _newer_fields) = postcard::take_from_bytes::<T>(&bytes).map_err(D::Error::custom)?;
        Ok(Record(value))
    }
}

/// Reads a byte string (postcard: a length, then the bytes).
struct BytesVisitor;

impl serde::de::Visitor<'_> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a record's bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }
}

/// A list of peers, bridges or backends, each as a record.
fn records<T>(list: &[T]) -> Vec<AsRecord<'_, T>> {
    list.iter().map(AsRecord).collect()
}

/// The values out of their records.
fn unwrap<T>(list: Vec<Record<T>>) -> Vec<T> {
    list.into_iter().map(|r| r.0).collect()
}

impl Serialize for BrokerStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AsRecord(&(&self.counters, records(&self.peers), records(&self.bridges))).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BrokerStats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        type Fields = (Vec<Counter>, Vec<Record<PeerStats>>, Vec<Record<BridgeStats>>);
        let Record((counters, peers, bridges)) = Record::<Fields>::deserialize(deserializer)?;
        Ok(BrokerStats { counters, peers: unwrap(peers), bridges: unwrap(bridges) })
    }
}

impl Serialize for BalancerStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AsRecord(&(&self.counters, &self.accepted_per_thread, records(&self.backends))).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BalancerStats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        type Fields = (Vec<Counter>, Vec<u64>, Vec<Record<BackendStats>>);
        let Record((counters, accepted_per_thread, backends)) = Record::<Fields>::deserialize(deserializer)?;
        Ok(BalancerStats { counters, accepted_per_thread, backends: unwrap(backends) })
    }
}

/// Bytes `value` takes in the binary form as one entry of a list (its record: a length, then its
/// fields), for fitting a reply.
pub fn record_len<T: Serialize>(value: &T) -> usize {
    postcard::serialize_with_flavor::<_, postcard::ser_flavors::Size, usize>(&AsRecord(value), Default::default())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerStats {
        PeerStats {
            addr: "127.0.0.1:7001".parse().unwrap(),
            up: true,
            complete: true,
            instances: 2,
            last_heard_ms: Some(120),
        }
    }

    #[test]
    fn stats_round_trip() {
        let stats = BrokerStats {
            counters: vec![Counter::new("instances", 2), Counter::new("complete", 1)],
            peers: vec![peer()],
            bridges: vec![BridgeStats { addr: "[::1]:9".parse().unwrap(), up: false, asked: 3, found: 1, timeouts: 2 }],
        };
        let bytes = postcard::to_allocvec(&stats).unwrap();
        assert_eq!(postcard::from_bytes::<BrokerStats>(&bytes).unwrap(), stats);
        let balancer = BalancerStats {
            counters: vec![Counter::new("backend_count", 1), Counter::new("active", 4)],
            accepted_per_thread: vec![5, 6],
            backends: vec![BackendStats {
                addr: "127.0.0.1:4000".parse().unwrap(),
                up: true,
                active: 1,
                total: 2,
                bytes_to: 3,
                bytes_from: 4,
                failures: 5,
            }],
        };
        let bytes = postcard::to_allocvec(&balancer).unwrap();
        assert_eq!(postcard::from_bytes::<BalancerStats>(&bytes).unwrap(), balancer);
        assert_eq!(record_len(&balancer.backends[0]), postcard::to_allocvec(&balancer.backends[0]).unwrap().len() + 1);
    }

    /// A `stats` reply as a newer broker writes it: a counter this code does not know, a peer
    /// with a field appended, and a section appended after the bridges (protocol.md shows it).
    pub(crate) const NEWER_BROKER: &str = "81 07 04 24 02 09 69 6e 73 74 61 6e 63 65 73 02 05 7a 6f 6e 65 73 05 \
        01 0d 00 7f 00 00 01 d9 36 01 01 02 01 78 2a 00 00";

    fn bytes(hex: &str) -> Vec<u8> {
        hex.split_whitespace().filter(|b| *b != "\\").map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    #[test]
    fn todays_client_reads_a_newer_brokers_stats() {
        let (id, response) = crate::protocol::binary::decode_response(&bytes(NEWER_BROKER)).expect("decodes");
        let super::super::Response::Stats(stats) = response else { panic!("{response:?}") };
        assert_eq!(id, 7);
        assert_eq!(stats.get("instances"), Some(2));
        // The unknown counter is kept, by name; the peer's new field is skipped.
        assert_eq!(stats.get("zones"), Some(5));
        assert_eq!(stats.peers, [peer()]);
        assert!(stats.bridges.is_empty());
        // Today's encoder writes the same minus what it does not know.
        let today =
            BrokerStats { counters: vec![Counter::new("instances", 2)], peers: vec![peer()], ..BrokerStats::default() };
        let mut out = Vec::new();
        crate::protocol::binary::encode_response(7, &super::super::Response::Stats(Box::new(today)), &mut out);
        assert_eq!(
            out[4..],
            bytes("01 09 69 6e 73 74 61 6e 63 65 73 02 01 0c 00 7f 00 00 01 d9 36 01 01 02 01 78 00")[..]
        );
    }

    #[test]
    fn todays_client_reads_a_newer_balancers_stats() {
        let today = BalancerStats {
            counters: vec![Counter::new("active", 1)],
            accepted_per_thread: vec![3],
            backends: vec![BackendStats {
                addr: "127.0.0.1:4000".parse().unwrap(),
                up: true,
                active: 1,
                total: 2,
                bytes_to: 3,
                bytes_from: 4,
                failures: 5,
            }],
        };
        // A newer balancer: a new counter, a new field on each backend, a new section.
        let counters = vec![Counter::new("active", 1), Counter::new("draining", 4)];
        let backend = [postcard::to_allocvec(&today.backends[0]).unwrap(), vec![0x63]].concat();
        let fields =
            postcard::to_allocvec(&(&counters, &today.accepted_per_thread, vec![&backend[..]], vec![7u8])).unwrap();
        let newer = postcard::to_allocvec(&(6u8, &fields[..])).unwrap();
        let decoded = postcard::from_bytes::<super::super::Response>(&newer).expect("decodes");
        let super::super::Response::BalancerStats(decoded) = decoded else { panic!("{decoded:?}") };
        assert_eq!(decoded.backends, today.backends);
        assert_eq!(decoded.get("draining"), Some(4));
        assert_eq!(decoded.accepted_per_thread, [3]);
    }

    #[test]
    fn the_text_words_keep_the_old_forms() {
        let counters = [
            Counter::new("complete", 0),
            Counter::new("peer_count", 3),
            Counter::new("peers_up", 2),
            Counter::new("backend_count", 7),
            Counter::new("newer", 9),
        ];
        let words: Vec<String> = text_words(&counters).iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(words, ["complete=no", "peers_up=2/3", "backends=7", "newer=9"]);
    }
}
