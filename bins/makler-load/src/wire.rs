//! The broker's requests as load: queries, heartbeats and registrations, in the binary and the
//! text form, each judging its replies as a client would.

use std::net::SocketAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::udp::{Answer, Workload, instance_endpoint};
use makler::protocol::{Request, Response, binary, text};

/// Which of the broker's two forms a load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// postcard frames with request ids (replies are matched by id).
    Binary,
    /// One line per datagram (replies are matched in order: the text form has no ids).
    Text,
}

/// Which request a load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `query NAME`, over the table's names in turn; good: at least one instance.
    Query,
    /// `heartbeat ID`, over the table's ids in turn; good: `OK`.
    Heartbeat,
    /// `register NAME IP PORT` of the table's instances again (a refresh); good: an id.
    Register,
}

/// What the broker holds, as far as the load needs to know it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The service names (instance `i` is registered under `names[i % names.len()]`).
    pub names: Vec<String>,
    /// How many instances are registered.
    pub instances: usize,
    /// Their ids, in instance order (for heartbeats).
    pub ids: Vec<Uuid>,
}

/// A broker request in one form, over a table.
#[derive(Debug, Clone)]
pub struct BrokerLoad {
    table: Arc<Table>,
    form: Form,
    op: Op,
}

impl BrokerLoad {
    /// `op` in `form` over `table`.
    pub fn new(table: Arc<Table>, form: Form, op: Op) -> BrokerLoad {
        BrokerLoad { table, form, op }
    }
}

impl Workload for BrokerLoad {
    fn keyed(&self) -> bool {
        self.form == Form::Binary
    }

    fn request(&mut self, seq: u64, out: &mut Vec<u8>) -> u64 {
        let t = &self.table;
        let i = seq as usize;
        let (service, endpoint);
        let request = match self.op {
            Op::Query => Request::Query { service: &t.names[i % t.names.len()] },
            Op::Heartbeat => Request::Heartbeat { id: t.ids[i % t.ids.len()] },
            Op::Register => {
                let instance = i % t.instances.max(1);
                service = &t.names[instance % t.names.len()];
                endpoint = instance_endpoint(instance);
                Request::Register { service, ip: Some(endpoint.ip()), port: endpoint.port() }
            }
        };
        match self.form {
            Form::Binary => binary::encode_request(seq as u32, &request, out),
            Form::Text => text::encode_request(&request, out),
        }
        u64::from(seq as u32)
    }

    fn answer(&mut self, reply: &[u8]) -> Answer {
        match self.form {
            Form::Binary => {
                if self.op == Op::Query {
                    if let Some(id) = instances_reply(reply) {
                        return Answer { key: Some(id.into()), good: true };
                    }
                }
                let Ok((id, response)) = binary::decode_response(reply) else {
                    return Answer { key: None, good: false };
                };
                let good = match (self.op, response) {
                    (Op::Query, Response::Instances(list)) => !list.is_empty(),
                    (Op::Heartbeat, Response::Ok) => true,
                    (Op::Register, Response::Registered { .. }) => true,
                    _ => false,
                };
                Answer { key: Some(id.into()), good }
            }
            Form::Text => Answer { key: None, good: text_reply_is_good(self.op, reply) },
        }
    }

    fn fork(&self) -> Box<dyn Workload> {
        Box::new(self.clone())
    }
}

/// The request id of `reply` when it is a binary [`Response::Instances`] of at least one
/// instance, read without building the list: the version byte, the id, the variant, the count,
/// then each address as postcard writes it (IPv4 or IPv6, the address's bytes, the port), and
/// nothing after. `None` for anything else, which is then decoded in full (a test holds the two
/// readings equal). The echo's replies are judged by `binary::decode_request`, which reads a
/// query without allocating; decoding a list of ten addresses into a `Vec` cost the generator
/// about 0.2 µs more per broker reply than per echo, and with both processes near a full core
/// each, that cost showed as the broker's.
pub fn instances_reply(reply: &[u8]) -> Option<u32> {
    let [binary::VERSION_BYTE, rest @ ..] = reply else { return None };
    let (id, rest) = varint(rest, 5)?;
    let (&variant, rest) = rest.split_first()?;
    if variant != instances_variant() {
        return None;
    }
    let (count, mut rest) = varint(rest, 5)?;
    if count == 0 {
        return None;
    }
    for _ in 0..count {
        let len = match rest.first()? {
            0 => 4,
            1 => 16,
            _ => return None,
        };
        let (port, after) = varint(rest.get(1 + len..)?, 3)?;
        if port > u64::from(u16::MAX) {
            return None;
        }
        rest = after;
    }
    rest.is_empty().then_some(u32::try_from(id).ok()?)
}

/// [`Response::Instances`]'s variant index as postcard writes it (one byte), read from postcard.
fn instances_variant() -> u8 {
    static VARIANT: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *VARIANT.get_or_init(|| {
        let mut empty = Vec::new();
        binary::encode_response(0, &Response::Instances(Vec::new()), &mut empty);
        empty.get(2).copied().unwrap_or(u8::MAX)
    })
}

/// A varint of at most `max` bytes in its shortest form (as postcard writes them), and the
/// bytes after it.
fn varint(bytes: &[u8], max: usize) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(max).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A longer form than needed ends in a zero byte: left to postcard.
            return (i == 0 || byte != 0).then_some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Whether a text reply is the right answer to `op`: a list of `ip:port`, `OK`, or an id.
pub fn text_reply_is_good(op: Op, reply: &[u8]) -> bool {
    let Some(line) = std::str::from_utf8(reply).ok().and_then(|r| r.strip_suffix('\n')) else {
        return false;
    };
    match op {
        Op::Query => !line.is_empty() && line.split(' ').all(|a| a.parse::<SocketAddr>().is_ok()),
        Op::Heartbeat => line == "OK",
        Op::Register => Uuid::parse_str(line).is_ok(),
    }
}

/// The reference load: the binary queries of [`BrokerLoad`], sent to an echo server; good: the
/// very request came back.
#[derive(Debug, Clone)]
pub struct EchoLoad {
    queries: BrokerLoad,
}

impl EchoLoad {
    /// Binary queries over `table`'s names.
    pub fn new(table: Arc<Table>) -> EchoLoad {
        EchoLoad { queries: BrokerLoad::new(table, Form::Binary, Op::Query) }
    }
}

impl Workload for EchoLoad {
    fn keyed(&self) -> bool {
        true
    }

    fn request(&mut self, seq: u64, out: &mut Vec<u8>) -> u64 {
        self.queries.request(seq, out)
    }

    fn answer(&mut self, reply: &[u8]) -> Answer {
        match binary::decode_request(reply) {
            Ok((id, Request::Query { .. })) => Answer { key: Some(id.into()), good: true },
            Ok((id, _)) => Answer { key: Some(id.into()), good: false },
            Err(_) => Answer { key: None, good: false },
        }
    }

    fn fork(&self) -> Box<dyn Workload> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<Table> {
        Arc::new(Table { names: vec!["a".into(), "b".into()], instances: 4, ids: vec![Uuid::from_u128(7)] })
    }

    #[test]
    fn requests_are_what_a_person_would_type() {
        let mut out = Vec::new();
        let mut load = BrokerLoad::new(table(), Form::Text, Op::Query);
        load.request(3, &mut out);
        assert_eq!(out, b"query b\n");
        out.clear();
        BrokerLoad::new(table(), Form::Text, Op::Register).request(5, &mut out);
        assert_eq!(std::str::from_utf8(&out).unwrap(), format!("register b {} 4001\n", instance_endpoint(1).ip()));
        out.clear();
        let key = BrokerLoad::new(table(), Form::Binary, Op::Heartbeat).request(9, &mut out);
        assert_eq!(binary::decode_request(&out).unwrap(), (9, Request::Heartbeat { id: Uuid::from_u128(7) }));
        assert_eq!(key, 9);
    }

    /// Wherever the reading without a list accepts a reply, the full decoding gives a
    /// non-empty list with the same id: over real replies of every id length and list shape,
    /// cut, extended and with bytes changed.
    #[test]
    fn instances_replies_are_read_as_postcard_reads_them() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut accepted = 0;
        let mut check = |reply: &[u8]| {
            if let Some(id) = instances_reply(reply) {
                let Ok((full_id, Response::Instances(list))) = binary::decode_response(reply) else {
                    panic!("{reply:02x?}")
                };
                assert_eq!(id, full_id);
                assert!(!list.is_empty());
                accepted += 1;
            }
        };
        for id in [0, 1, 127, 128, 16_384, u32::MAX] {
            for n in 0..12u16 {
                let list: Vec<SocketAddr> = (0..n)
                    .map(|k| match k % 3 {
                        0 => SocketAddr::from(([127, 0, 0, k as u8], k)),
                        1 => SocketAddr::from(([10, 1, 2, 3], 200 + k * 300)),
                        _ => format!("[2001:db8::{k:x}]:{}", 65_000 + k).parse().unwrap(),
                    })
                    .collect();
                let mut reply = Vec::new();
                binary::encode_response(id, &Response::Instances(list), &mut reply);
                assert_eq!(instances_reply(&reply), (n > 0).then_some(id));
                for cut in 0..reply.len() {
                    check(&reply[..cut]);
                }
                let mut longer = reply.clone();
                longer.push(0);
                check(&longer);
                for _ in 0..100 {
                    let mut changed = reply.clone();
                    let at = next() as usize % changed.len();
                    changed[at] = next() as u8;
                    check(&changed);
                }
            }
        }
        assert!(accepted > 0);
    }

    #[test]
    fn replies_are_judged() {
        let mut out = Vec::new();
        let instances = Response::Instances(vec!["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()]);
        binary::encode_response(12, &instances, &mut out);
        let mut load = BrokerLoad::new(table(), Form::Binary, Op::Query);
        assert_eq!(load.answer(&out), Answer { key: Some(12), good: true });
        out.clear();
        binary::encode_response(13, &Response::NotFound, &mut out);
        assert_eq!(load.answer(&out), Answer { key: Some(13), good: false });
        assert_eq!(load.answer(b"garbage"), Answer { key: None, good: false });

        out.clear();
        text::encode_response(&instances, &mut out);
        assert!(text_reply_is_good(Op::Query, &out));
        assert!(!text_reply_is_good(Op::Query, b"NOT FOUND\n"));
        assert!(text_reply_is_good(Op::Heartbeat, b"OK\n"));
        assert!(!text_reply_is_good(Op::Heartbeat, b"NOT FOUND\n"));
        assert!(text_reply_is_good(Op::Register, b"67e55044-10b1-426f-9247-bb680e5fe0c8\n"));
        assert!(!text_reply_is_good(Op::Register, b"ERROR full: 1 instances registered\n"));
    }
}
