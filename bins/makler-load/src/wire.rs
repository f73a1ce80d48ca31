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
