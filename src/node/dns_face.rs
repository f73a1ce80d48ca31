//! The DNS face's wiring into the node: datagrams on [`Face::Dns`](super::Face::Dns) with
//! response-rate limiting, and DNS over TCP on [`Face::DnsTcp`](super::Face::DnsTcp), each
//! message after its 2-byte length (RFC 1035 §4.2.2, RFC 7766). The answers themselves come
//! from [`dns::answer`], a pure function.

use std::net::SocketAddr;
use std::time::Instant;

use super::Node;
use super::dns::{self, Transport};
use crate::core::{StreamLimits, StreamStep};
use crate::limit::Verdict;

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
};

impl Node {
    /// A DNS query over UDP: whether `reply` holds an answer to send. Answers larger than their
    /// query are rate-limited like the registration protocol's (a DNS port is a reflector); a
    /// limited query gets nothing, or every second one an empty reply with TC set, when that is
    /// no larger than the query.
    pub(super) fn handle_dns(&mut self, now: Instant, from: SocketAddr, query: &[u8], reply: &mut Vec<u8>) -> bool {
        let Some(zone) = &mut self.dns else { return false };
        if !dns::answer(zone, &mut self.registry, now, query, Transport::Udp, reply) {
            return false;
        }
        match self.limiter.check(now, from.ip(), query.len(), reply.len()) {
            Verdict::Send => true,
            Verdict::Drop => false,
            Verdict::Slip => {
                if dns::truncated(query, reply) && reply.len() <= query.len() {
                    return true;
                }
                self.limiter.slip_dropped();
                false
            }
        }
    }

    /// Bytes on a DNS TCP connection: answers the first whole message, if `input` holds one.
    /// Not rate-limited: the handshake has shown the source is real. A message of length 0, or
    /// one that gets no answer (a response), closes the connection.
    pub(super) fn handle_dns_stream(&mut self, now: Instant, input: &[u8], output: &mut Vec<u8>) -> StreamStep {
        let wait = StreamStep { consumed: 0, close: false };
        let Some(zone) = &mut self.dns else { return StreamStep { consumed: input.len(), close: true } };
        let Some((prefix, rest)) = input.split_first_chunk::<2>() else { return wait };
        let len = usize::from(u16::from_be_bytes(*prefix));
        if len == 0 {
            return StreamStep { consumed: input.len(), close: true };
        }
        let Some(query) = rest.get(..len) else { return wait };
        let mut reply = Vec::new();
        if !dns::answer(zone, &mut self.registry, now, query, Transport::Tcp, &mut reply) {
            return StreamStep { consumed: input.len(), close: true };
        }
        // The reply is at most MAX_TCP_MESSAGE bytes, so its length fits the prefix.
        let reply_len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        output.extend_from_slice(&reply_len.to_be_bytes());
        output.extend_from_slice(&reply);
        StreamStep { consumed: 2 + len, close: output.len() > MAX_PENDING_TCP_OUTPUT }
    }
}
