//! A bounded queue of datagrams for a core's [`poll_transmit`](super::Core::poll_transmit).

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::Transmit;

/// Datagrams waiting to be sent, each with its face and destination. Bounded: beyond
/// `capacity` a new datagram is dropped and counted (the senders here all retransmit or
/// resend periodically, so a dropped one costs latency, not correctness). Buffers are reused.
#[derive(Debug)]
pub struct Outbox<F> {
    queue: VecDeque<(Transmit<F>, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    capacity: usize,
    dropped: u64,
}

impl<F: Copy> Outbox<F> {
    /// An empty queue holding at most `capacity` datagrams.
    pub fn new(capacity: usize) -> Self {
        Outbox { queue: VecDeque::new(), spare: Vec::new(), capacity, dropped: 0 }
    }

    /// Queues a datagram whose bytes `write` appends to the (empty) buffer it is given.
    /// Returns false when the queue was full and the datagram was dropped.
    pub fn push(&mut self, face: F, to: SocketAddr, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.queue.len() >= self.capacity {
            self.dropped += 1;
            return false;
        }
        let mut bytes = self.spare.pop().unwrap_or_default();
        bytes.clear();
        write(&mut bytes);
        self.queue.push_back((Transmit { face, to }, bytes));
        true
    }

    /// Moves the oldest datagram's bytes into `out` and returns where it goes.
    ///
    /// The node polls several queues after every datagram and they are empty nearly always:
    /// that answer is inlined at the caller, and only a datagram to move makes a call (an
    /// out-of-line pop cost a query 20 instructions per queue, callgrind).
    #[inline(always)]
    pub fn pop(&mut self, out: &mut Vec<u8>) -> Option<Transmit<F>> {
        if self.queue.is_empty() { None } else { self.pop_front(out) }
    }

    fn pop_front(&mut self, out: &mut Vec<u8>) -> Option<Transmit<F>> {
        let (transmit, bytes) = self.queue.pop_front()?;
        out.clear();
        out.extend_from_slice(&bytes);
        if self.spare.len() < 64 {
            self.spare.push(bytes);
        }
        Some(transmit)
    }

    /// How many datagrams wait.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// How many datagrams were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_leave_in_order_and_a_full_queue_drops_new_ones() {
        let mut outbox = Outbox::new(2);
        let to: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(outbox.push('a', to, |b| b.extend_from_slice(b"one")));
        assert!(outbox.push('b', to, |b| b.extend_from_slice(b"two")));
        assert!(!outbox.push('c', to, |b| b.extend_from_slice(b"three")));
        let mut out = Vec::new();
        assert_eq!(outbox.pop(&mut out), Some(Transmit { face: 'a', to }));
        assert_eq!(out, b"one");
        assert_eq!(outbox.pop(&mut out).map(|t| t.face), Some('b'));
        assert_eq!(out, b"two");
        assert_eq!((outbox.pop(&mut out), outbox.dropped()), (None, 1));
    }
}
