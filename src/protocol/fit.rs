//! Fitting a list into one reply: as many entries as [`MAX_REPLY_LEN`] holds, in order.
//!
//! Several replies carry a list that may not fit in one datagram (a query's instances, a
//! watch's live set, a listing's page, the peers of `stats`, a balancer's backends). Each is
//! cut the same way: a reply's fixed part (its *header*: the reply with its lists empty) is
//! measured once, each entry's size is measured on its own, and entries are taken while the
//! room left holds them. So fitting is linear in the entries: no reply is encoded again and
//! again with one entry fewer until it fits.
//!
//! Binary entries are sized with postcard's `Size` flavor ([`binary_len`]), text entries by
//! their formatted length ([`display_len`], [`line_len`]); [`reply_len`] measures a whole
//! reply in either form. A header may reserve more than it measures (say, the longest request
//! id), and then the list holds what fits the worst case. The replies with lists of their own
//! kind are fitted here ([`instances`], [`broker_stats`], [`balancer_stats`]); the listings'
//! pages and a watch's live set are fitted where they are built, with the same [`Room`].
//!
//! ```
//! use makler::protocol::fit::{self, Room};
//! use makler::protocol::{Form, MAX_REPLY_LEN, Response};
//!
//! let many: Vec<std::net::SocketAddr> = (0..500).map(|k| ([10, 0, 1, (k % 250) as u8], 4000 + k).into()).collect();
//! let form = Form::Binary { request_id: 7 };
//! let mut room = Room::after(fit::reply_len(form, &Response::Instances(Vec::new())) + fit::LIST_GROWTH);
//! let fits = room.fit(&many, |addr| fit::binary_len(addr));
//! assert!(fit::reply_len(form, &Response::Instances(many[..fits].to_vec())) <= MAX_REPLY_LEN);
//! assert!(fits > 100 && fits < many.len());
//! ```

use std::net::SocketAddr;
use std::sync::OnceLock;

use serde::Serialize;

use super::stats::record_len;

use super::{
    BackendStats, BalancerStats, BridgeStats, BrokerStats, Form, Frame, MAX_REPLY_LEN, PeerStats, Response, text,
};

/// The most bytes a binary list's length takes in one reply (a postcard varint: any list that
/// fits in [`MAX_REPLY_LEN`] has fewer than 2²¹ entries).
pub const LIST_LEN: usize = 3;

/// What a binary list's length may grow by beyond the one byte of the empty list a header
/// was measured with.
pub const LIST_GROWTH: usize = LIST_LEN - 1;

/// The room one reply leaves for its lists' entries. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    left: usize,
    /// In the binary form, the length of the record the lists sit in (a length, then its
    /// bytes, as `stats` answers are), when they do.
    record: Option<usize>,
}

impl Room {
    /// The room left in a reply of [`MAX_REPLY_LEN`] bytes once `header` bytes are written.
    pub fn after(header: usize) -> Room {
        Room { left: MAX_REPLY_LEN.saturating_sub(header), record: None }
    }

    /// The same room for lists inside a record of `content` bytes (with the lists empty):
    /// every entry lengthens the record, and the record's length may take a byte more.
    pub fn in_record(self, content: usize) -> Room {
        Room { record: Some(content), ..self }
    }

    /// Bytes left.
    pub fn left(&self) -> usize {
        self.left
    }

    /// Takes `cost` bytes if they fit; returns false (taking nothing) when they do not.
    pub fn take(&mut self, cost: usize) -> bool {
        let grown = self.record.map(|len| len.saturating_add(cost));
        let growth = match (self.record, grown) {
            (Some(before), Some(after)) => varint_len(after) - varint_len(before),
            _ => 0,
        };
        let Some(total) = cost.checked_add(growth).filter(|&total| total <= self.left) else {
            return false;
        };
        self.left -= total;
        self.record = grown;
        true
    }

    /// How many of `entries`, from the first on, fit (stopping at the first that does not),
    /// taking their room; `cost` sizes one entry. For a header that reserved its lists' lengths
    /// at their longest ([`LIST_GROWTH`]).
    pub fn fit<T>(&mut self, entries: impl IntoIterator<Item = T>, mut cost: impl FnMut(&T) -> usize) -> usize {
        entries.into_iter().take_while(|entry| self.take(cost(entry))).count()
    }

    /// Like [`fit`](Self::fit), for a header measured with the list empty: in the binary form
    /// each entry that lengthens the list's length (the 128th, the 16384th) costs its byte too.
    /// Exact: the reply is as long as the header and the entries taken.
    pub fn fit_list<T>(
        &mut self,
        form: Form,
        entries: impl IntoIterator<Item = T>,
        mut cost: impl FnMut(&T) -> usize,
    ) -> usize {
        let mut count = 0usize;
        for entry in entries {
            let growth = match form {
                Form::Text => 0,
                Form::Binary { .. } => varint_len(count + 1) - varint_len(count),
            };
            if !self.take(cost(&entry).saturating_add(growth)) {
                break;
            }
            count += 1;
        }
        count
    }
}

/// The length of `response` encoded in `form`, as [`encode_reply`](super::encode_reply)
/// writes it.
pub fn reply_len(form: Form, response: &Response) -> usize {
    match form {
        Form::Text => {
            let mut out = Vec::with_capacity(256);
            text::encode_response(response, &mut out);
            out.len()
        }
        Form::Binary { request_id } => 1 + binary_len(&Frame { id: request_id, body: response }),
    }
}

/// The length of `value`'s postcard encoding, counted without writing it (postcard's `Size`
/// flavor).
pub fn binary_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(usize::MAX)
}

/// The length of `value` formatted with `Display`, counted without storing it.
pub fn display_len(value: impl std::fmt::Display) -> usize {
    let mut counter = Counter(0);
    let _ = std::fmt::write(&mut counter, format_args!("{value}"));
    counter.0
}

/// The length of the text `line` writes for `entry` (a listing's or a balancer's line).
pub fn line_len<T>(entry: &T, line: fn(&T, &mut Vec<u8>)) -> usize {
    let mut out = Vec::with_capacity(128);
    line(entry, &mut out);
    out.len()
}

/// The bytes one instance adds to a [`Response::Instances`] in `form`: its address and a
/// separating space in text (the first has none, which leaves a byte of slack), its postcard
/// encoding in binary.
///
/// The binary size is counted by hand (the variant, the address's bytes, the port's varint):
/// every binary query sizes each instance it answers with, and serde's `Size` flavor cost a
/// query more than the rest of its fitting (callgrind). A test holds the count equal to
/// [`binary_len`] for both families and every varint length of the port.
#[inline]
pub fn instance_len(form: Form, instance: SocketAddr) -> usize {
    match form {
        Form::Text => display_len(instance) + 1,
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

/// The header of a [`Response::Instances`] in `form`, whatever its request id: the newline in
/// text; in binary the frame with the longest request id and the list's length at its longest.
/// Measured once (queries ask for it on every reply).
pub fn instances_header(form: Form) -> usize {
    static HEADERS: OnceLock<[usize; 2]> = OnceLock::new();
    let [text, binary] = *HEADERS.get_or_init(|| {
        let empty = Response::Instances(Vec::new());
        [reply_len(Form::Text, &empty), reply_len(Form::Binary { request_id: u32::MAX }, &empty) + LIST_GROWTH]
    });
    match form {
        Form::Text => text,
        Form::Binary { .. } => binary,
    }
}

/// As many of `instances` as fit in one [`Response::Instances`] in `form`, appended to `list`
/// (a query's answer, a bridge's).
///
/// [`Room::fit`] with the room kept in a plain count: this runs for every query, once per
/// instance answered, and is the broker's hottest loop after the encoding itself.
pub fn instances(form: Form, instances: impl IntoIterator<Item = SocketAddr>, list: &mut Vec<SocketAddr>) {
    let mut left = MAX_REPLY_LEN.saturating_sub(instances_header(form));
    for instance in instances {
        let cost = instance_len(form, instance);
        if cost > left {
            break;
        }
        left -= cost;
        list.push(instance);
    }
}

/// A broker's `stats` with as many peers and bridges as fit in one reply in `form`: every
/// bridge and the first peers, or (when the bridges alone are too many) the first bridges and
/// no peer. Exact: the header is measured with both lists empty, and each entry on its own (in
/// binary as the record it is written as, inside the answer's own record).
pub fn broker_stats(form: Form, mut stats: BrokerStats) -> BrokerStats {
    let (mut peers, mut bridges) = (std::mem::take(&mut stats.peers), std::mem::take(&mut stats.bridges));
    let header = reply_len(form, &Response::Stats(Box::new(stats.clone())));
    let room = match form {
        Form::Text => Room::after(header),
        Form::Binary { .. } => Room::after(header).in_record(record_content(binary_len(&stats))),
    };
    // In text, an entry's line: what a reply with it alone adds to one with none.
    let none = match form {
        Form::Text => reply_len(form, &Response::Stats(Box::default())),
        Form::Binary { .. } => 0,
    };
    let entry_len = |alone: BrokerStats, record: usize| match form {
        Form::Text => reply_len(form, &Response::Stats(Box::new(alone))) - none,
        Form::Binary { .. } => record,
    };
    let peer_len =
        |p: &&PeerStats| entry_len(BrokerStats { peers: vec![(*p).clone()], ..BrokerStats::default() }, record_len(p));
    let bridge_len = |b: &&BridgeStats| {
        entry_len(BrokerStats { bridges: vec![(*b).clone()], ..BrokerStats::default() }, record_len(b))
    };
    let mut all_bridges = room;
    if all_bridges.fit_list(form, &bridges, bridge_len) == bridges.len() {
        peers.truncate(all_bridges.fit_list(form, &peers, peer_len));
    } else {
        peers.clear();
        bridges.truncate({ room }.fit_list(form, &bridges, bridge_len));
    }
    BrokerStats { peers, bridges, ..stats }
}

/// The length of a record's content, from the record's whole length (its length's varint,
/// then the content).
fn record_content(record: usize) -> usize {
    (1..=record.min(10)).map(|len| record - len).find(|&content| varint_len(content) + content == record).unwrap_or(0)
}

/// A balancer's `stats` with as many backends as fit in one reply in `form`. Linear in the
/// number of backends: each one's size is counted once.
pub fn balancer_stats(form: Form, mut stats: BalancerStats) -> BalancerStats {
    let backends = std::mem::take(&mut stats.backends);
    let mut room = Room::after(balancer_header_len(form, &stats));
    let fits = room.fit(&backends, |backend| backend_len(form, backend));
    stats.backends = backends;
    stats.backends.truncate(fits);
    stats
}

/// Bytes of a balancer's `stats` reply that are not backends (`stats` without them), at the
/// most: exact in text; in binary the answer's record length and the list's length may each
/// grow with the backends ([`LIST_GROWTH`] for any reply that fits).
fn balancer_header_len(form: Form, stats: &BalancerStats) -> usize {
    let header = reply_len(form, &Response::BalancerStats(BalancerStats { backends: Vec::new(), ..stats.clone() }));
    match form {
        Form::Text => header,
        Form::Binary { .. } => header + 2 * LIST_GROWTH,
    }
}

/// Bytes one backend adds to a `stats` reply: its line in text, its record in binary.
fn backend_len(form: Form, backend: &BackendStats) -> usize {
    match form {
        Form::Text => line_len(backend, text::encode_backend_line),
        Form::Binary { .. } => record_len(backend),
    }
}

/// The bytes of a postcard varint of `n`.
fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits as usize).div_ceil(7).max(1)
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
    use crate::protocol::{binary, encode_reply};

    #[test]
    fn sizes_match_the_encodings() {
        for addr in ["1.2.3.4:1", "1.2.3.4:200", "1.2.3.4:65535", "[::1]:127", "[::1]:16384"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(binary_len(&addr), postcard::to_stdvec(&addr).unwrap().len(), "{addr}");
            assert_eq!(instance_len(Form::Text, addr), addr.to_string().len() + 1);
        }
        let mut out = Vec::new();
        for form in [Form::Text, Form::Binary { request_id: 0 }, Form::Binary { request_id: u32::MAX }] {
            for response in [Response::NotFound, Response::Instances(vec!["[::1]:4000".parse().unwrap(); 3])] {
                encode_reply(form, &response, &mut out);
                assert_eq!(reply_len(form, &response), out.len(), "{form:?} {response:?}");
            }
        }
        assert_eq!(instances_header(Form::Text), 1);
        // The version byte, the longest request id, the variant and the longest list length.
        assert_eq!(instances_header(Form::Binary { request_id: 0 }), 1 + 5 + 1 + 3);
    }

    #[test]
    fn varints_are_measured_as_postcard_writes_them() {
        for n in [0usize, 1, 127, 128, 16383, 16384, 1 << 21] {
            assert_eq!(varint_len(n), binary_len(&(n as u64)), "{n}");
        }
    }

    #[test]
    fn an_exact_list_fits_to_the_byte() {
        // 200 one-byte entries: the list's length takes two bytes from the 128th on.
        let entries = vec![1u8; 2000];
        let form = Form::Binary { request_id: 1 };
        let header = binary_len(&Frame { id: 1, body: Vec::<u8>::new() }) + 1;
        let mut room = Room::after(header);
        let fits = room.fit_list(form, &entries, |_| 1);
        let mut out = Vec::new();
        binary::encode(1, &&entries[..fits], &mut out);
        assert_eq!(out.len(), MAX_REPLY_LEN);
        assert_eq!(room.left(), 0);
    }

    fn backend(i: u32) -> BackendStats {
        let [_, _, hi, lo] = i.to_be_bytes();
        BackendStats {
            addr: SocketAddr::from(([10, 0, hi, lo], 40000 + (i % 1000) as u16)),
            up: i % 3 != 0,
            active: u64::from(i),
            total: u64::from(i) * 1000,
            bytes_to: u64::MAX - u64::from(i),
            bytes_from: u64::from(i) << 20,
            failures: u64::from(i % 7),
        }
    }

    #[test]
    fn the_size_of_each_backend_is_counted_exactly() {
        for form in [Form::Text, Form::Binary { request_id: u32::MAX }] {
            let counters = ["backend_count", "active", "total", "refused", "failed"];
            let mut total = BalancerStats {
                counters: counters.into_iter().map(|name| crate::protocol::Counter::new(name, u64::MAX)).collect(),
                backends: Vec::new(),
                accepted_per_thread: vec![u64::MAX; 8],
            };
            let mut expected = balancer_header_len(form, &total);
            let mut out = Vec::new();
            crate::protocol::encode_reply(form, &Response::BalancerStats(total.clone()), &mut out);
            assert!(out.len() <= expected, "{form:?}: header {} > {expected}", out.len());
            for i in 0..20 {
                total.backends.push(backend(i));
                expected += backend_len(form, &backend(i));
                crate::protocol::encode_reply(form, &Response::BalancerStats(total.clone()), &mut out);
                assert!(out.len() <= expected, "{form:?}: {} > {expected}", out.len());
                assert!(out.len() + 60 >= expected, "{form:?}: {} much less than {expected}", out.len());
            }
        }
    }

    /// `stats` is fitted exactly: as re-encoding it with one entry fewer until it fits would.
    #[test]
    fn stats_keep_as_many_peers_and_bridges_as_fit() {
        fn by_encoding(form: Form, mut stats: BrokerStats) -> BrokerStats {
            let mut reply = Vec::new();
            loop {
                encode_reply(form, &Response::Stats(Box::new(stats.clone())), &mut reply);
                if reply.len() <= MAX_REPLY_LEN || (stats.peers.pop().is_none() && stats.bridges.pop().is_none()) {
                    return stats;
                }
            }
        }
        let mut seed = 12345u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let peers = rnd(200) as usize;
            let most = if rnd(2) == 0 { 5 } else { 120 };
            let bridges = rnd(most) as usize;
            let names = ["instances", "services", "received", "complete", "peers_up", "watch_dropped"];
            let counters = rnd(names.len() as u64 + 1) as usize;
            let mut stats = BrokerStats {
                counters: names[..counters]
                    .iter()
                    .map(|&name| {
                        let bits = rnd(64);
                        crate::protocol::Counter::new(name, rnd(1 << bits))
                    })
                    .collect(),
                ..BrokerStats::default()
            };
            for _ in 0..peers {
                let port = if rnd(3) == 0 { rnd(128) } else { rnd(65536) } as u16;
                let bits = rnd(40);
                stats.peers.push(PeerStats {
                    addr: SocketAddr::from(([10, 0, rnd(256) as u8, 1], port)),
                    up: rnd(2) == 0,
                    complete: rnd(2) == 0,
                    instances: rnd(1 << bits),
                    last_heard_ms: if rnd(2) == 0 { None } else { Some(rnd(1 << 30)) },
                });
            }
            for _ in 0..bridges {
                let bits = rnd(50);
                stats.bridges.push(BridgeStats {
                    addr: SocketAddr::from(([10, 1, 0, rnd(256) as u8], rnd(65536) as u16)),
                    up: rnd(2) == 0,
                    asked: rnd(1 << 20),
                    found: rnd(100),
                    timeouts: rnd(1 << bits),
                });
            }
            let bits = rnd(33);
            for form in [Form::Text, Form::Binary { request_id: rnd(1 << bits) as u32 }] {
                assert_eq!(
                    broker_stats(form, stats.clone()),
                    by_encoding(form, stats.clone()),
                    "{form:?} {peers} {bridges}"
                );
            }
        }
    }
}
