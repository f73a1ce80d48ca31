//! The DNS face's wiring into the node: datagrams on [`Face::Dns`](super::Face::Dns) with
//! response-rate limiting, and DNS over TCP on [`Face::DnsTcp`](super::Face::DnsTcp), each
//! message after its 2-byte length (RFC 1035 §4.2.2, RFC 7766). The answers themselves come
//! from [`dns::answer`], a pure function.
//!
//! [`DnsFace`] owns the zone and answers at once (each query's answer is the reply to it): it
//! has no timer, no datagram of its own to send and nothing for the node to act on. The table
//! is the node's, lent for each answer; the response-rate limit is the node's too, applied to
//! what the face answers (see [`DnsFace::slip`]).
//!
//! With a TSIG signer (`--require-key all`, see [`dns::tsig`]), only signed queries are
//! answered, and their answers signed; the others get the refusal TSIG says, counted.

use std::time::Instant;

use super::WallClock;
use super::dns::tsig::{self, Checked, Tsig};
use super::dns::{self, Transport};
use crate::core::{StreamLimits, StreamStep};
use crate::registry::Registry;

/// Answers written but not yet taken by a TCP client beyond which its connection is closed
/// (after what is written): a client that sends queries and reads no answers cannot make the
/// broker hold more than this for it.
const MAX_PENDING_TCP_OUTPUT: usize = 1 << 20;

/// The limits of the DNS face's TCP listener: room for one whole message of the largest size
/// and its length (so any partial message fits), and RFC 7766's advice of a short idle timeout.
pub const DNS_TCP_LIMITS: StreamLimits = StreamLimits {
    max_connections: 256,
    max_input: 2 + dns::MAX_TCP_MESSAGE + 1,
    idle: std::time::Duration::from_secs(10),
    request: None,
};

/// The DNS face. See the [module documentation](self).
#[derive(Debug)]
pub(super) struct DnsFace {
    /// The zone it answers for (`None`: no DNS face; queries are dropped).
    zone: Option<dns::Zone>,
    /// With a signer, only TSIG-signed queries are answered.
    tsig: Option<Tsig>,
    /// The wall clock, for TSIG's signing times.
    wall: WallClock,
    /// Queries refused for want of a good TSIG signature.
    refused: u64,
    /// The MAC of the query last answered under TSIG, for its slip (see [`DnsFace::slip`]).
    signed: Option<Vec<u8>>,
}

impl DnsFace {
    /// The face `config` describes; with `tsig`, it answers only queries signed with it.
    pub fn new(config: Option<&dns::DnsConfig>, tsig: Option<Tsig>, wall: WallClock) -> Self {
        let zone = config.and_then(|dns| dns::Zone::new(dns).inspect_err(|e| log::error!("no DNS face: {e}")).ok());
        DnsFace { zone, tsig, wall, refused: 0, signed: None }
    }

    /// Queries refused for want of a good TSIG signature (counted in `refused_key`).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Answers `query` into `reply`, through TSIG when a signer is set.
    fn answer(
        &mut self,
        now: Instant,
        registry: &mut Registry,
        query: &[u8],
        transport: Transport,
        reply: &mut Vec<u8>,
    ) -> bool {
        self.signed = None;
        let Some(zone) = &mut self.zone else { return false };
        let Some(signer) = &self.tsig else { return dns::answer(zone, registry, now, query, transport, reply) };
        let unix_s = self.wall.unix_ms(now) / 1000;
        match signer.check(query, unix_s, reply) {
            Checked::Signed(mac) => {
                let answered = dns::answer_reserving(zone, registry, now, query, transport, tsig::RESERVE, reply)
                    && signer.sign(&mac, unix_s, reply);
                self.signed = answered.then_some(mac);
                answered
            }
            Checked::Refused => {
                self.refused += 1;
                !reply.is_empty()
            }
            Checked::NotAQuery => dns::answer(zone, registry, now, query, transport, reply),
        }
    }

    /// A DNS query over UDP: whether `reply` holds an answer. The node judges it by the
    /// response-rate limit (a DNS port is a reflector) before it is sent.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        registry: &mut Registry,
        query: &[u8],
        reply: &mut Vec<u8>,
    ) -> bool {
        self.answer(now, registry, query, Transport::Udp, reply)
    }

    /// The "slip" of response-rate limiting: turns `reply`, the answer to `query` just made,
    /// into the empty answer with TC set that a limited query may get instead, and returns
    /// whether it is no larger than the query (else nothing is sent). The slip of a query
    /// answered under TSIG is signed too (RFC 8945 §5.3: the client verifies it, then retries
    /// over TCP).
    pub fn slip(&mut self, now: Instant, query: &[u8], reply: &mut Vec<u8>) -> bool {
        if !dns::truncated(query, reply) {
            return false;
        }
        if let (Some(signer), Some(mac)) = (&self.tsig, self.signed.take()) {
            if !signer.sign(&mac, self.wall.unix_ms(now) / 1000, reply) {
                return false;
            }
        }
        reply.len() <= query.len()
    }

    /// Bytes on a DNS TCP connection: answers the first whole message, if `input` holds one.
    /// Not rate-limited: the handshake has shown the source is real. A message of length 0, or
    /// one that gets no answer (a response), closes the connection.
    pub fn handle_stream(
        &mut self,
        now: Instant,
        registry: &mut Registry,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> StreamStep {
        let wait = StreamStep { consumed: 0, close: false };
        if self.zone.is_none() {
            return StreamStep { consumed: input.len(), close: true };
        }
        let Some((prefix, rest)) = input.split_first_chunk::<2>() else { return wait };
        let len = usize::from(u16::from_be_bytes(*prefix));
        if len == 0 {
            return StreamStep { consumed: input.len(), close: true };
        }
        let Some(query) = rest.get(..len) else { return wait };
        let mut reply = Vec::new();
        if !self.answer(now, registry, query, Transport::Tcp, &mut reply) {
            return StreamStep { consumed: input.len(), close: true };
        }
        // The reply is at most MAX_TCP_MESSAGE bytes, so its length fits the prefix.
        let reply_len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        output.extend_from_slice(&reply_len.to_be_bytes());
        output.extend_from_slice(&reply);
        StreamStep { consumed: 2 + len, close: output.len() > MAX_PENDING_TCP_OUTPUT }
    }
}
