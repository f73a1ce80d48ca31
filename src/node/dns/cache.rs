//! Encoded answers, kept by everything they are made from, so that an answer the zone gave once
//! is copied rather than built and encoded again (hickory-proto takes some microseconds for an
//! answer of 10 SRV records, several times the rest of a query's cost).
//!
//! The key is the whole input of the encoding: the question as asked (the name's case kept),
//! the header bits copied into the answer (RD, CD), the EDNS the answer carries (whether, and
//! its DO bit), the size limit, and the instances listed, in order. Only the query's id differs
//! between two answers of one key, and it is written into the copy. So the cache can never give
//! an answer that building it anew would not: a change in the registry, or the next step of the
//! rotation, is a different key. Keys that no longer occur are dropped when the cache is full,
//! with everything else.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Message, Query};

/// How many answers are kept at most; then the cache starts afresh.
const MAX_ENTRIES: usize = 32_768;
/// How many bytes of keys and answers are kept at most; then the cache starts afresh.
const MAX_BYTES: usize = 32 << 20;
/// Longer answers (over TCP) are not kept.
const MAX_ANSWER: usize = 4096;

/// See the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub(super) struct Cache {
    entries: HashMap<Box<[u8]>, Box<[u8]>>,
    bytes: usize,
    /// The key of the last lookup, for [`store`](Self::store).
    key: Vec<u8>,
    hits: u64,
}

impl Cache {
    /// Writes the answer to `request` (asking `query`) into `out` if it is kept, with `id`.
    /// Either way the key is remembered for [`store`](Self::store).
    pub(super) fn lookup(
        &mut self,
        request: &Message,
        query: &Query,
        limit: usize,
        instances: &[SocketAddr],
        out: &mut Vec<u8>,
    ) -> bool {
        let key = &mut self.key;
        key.clear();
        for label in query.name().iter() {
            key.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
            key.extend_from_slice(label);
        }
        key.push(0);
        key.extend_from_slice(&u16::from(query.query_type()).to_be_bytes());
        key.extend_from_slice(&u16::from(query.query_class()).to_be_bytes());
        let edns = request.edns.as_ref().map_or(0, |e| 1 | u8::from(e.flags().dnssec_ok) << 1);
        key.extend_from_slice(&[u8::from(request.recursion_desired), u8::from(request.checking_disabled), edns]);
        key.extend_from_slice(&u32::try_from(limit).unwrap_or(u32::MAX).to_be_bytes());
        for instance in instances {
            match instance.ip() {
                IpAddr::V4(v4) => key.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => key.extend_from_slice(&v6.octets()),
            }
            key.extend_from_slice(&instance.port().to_be_bytes());
        }
        let Some(answer) = self.entries.get(key.as_slice()) else { return false };
        self.hits += 1;
        out.clear();
        out.extend_from_slice(answer);
        out[..2].copy_from_slice(&request.id.to_be_bytes());
        true
    }

    /// Keeps `answer` under the key of the last [`lookup`](Self::lookup).
    pub(super) fn store(&mut self, answer: &[u8]) {
        if answer.len() > MAX_ANSWER || answer.len() < 2 {
            return;
        }
        let size = self.key.len() + answer.len();
        if self.entries.len() >= MAX_ENTRIES || self.bytes + size > MAX_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        if self.entries.insert(self.key.as_slice().into(), answer.into()).is_none() {
            self.bytes += size;
        }
    }

    /// How many answers are kept, and how many lookups found theirs.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, u64) {
        (self.entries.len(), self.hits)
    }
}
