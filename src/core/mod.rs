//! The sans-IO vocabulary: what a core and the shell that runs it say to each other.
//!
//! A core (the broker's [`Node`](crate::node::Node), the balancer's control port) holds all
//! the logic and no socket; a shell owns the sockets and the clock and moves bytes. This module
//! is the contract between them, and it belongs to neither: the cores implement [`Core`] and
//! speak in [`Transmit`]s, [`ProbeCmd`]s and [`StreamStep`]s; the shell
//! ([`crate::shell`]) consumes them. So a core depends on this module and never on the shell,
//! as quinn-proto owns its `Transmit` and the `quinn` crate consumes it (a unit test here keeps
//! the cores' sources free of the shell's path).
//!
//! - [`Core`]: the inputs a core is handed (`handle_*`, commands from other threads among them)
//!   and the outputs it is polled for (`poll_*`).
//! - [`Transmit`], and [`Outbox`], the bounded queue most cores keep them in.
//! - [`ProbeCmd`], [`ProbeId`], [`ProbeOutcome`]: non-blocking probes a core asks for (a TCP
//!   connect, or an HTTP check: the command carries the declared check, a protocol type).
//! - [`ConnId`], [`StreamStep`], [`StreamLimits`]: stream faces (TCP listeners), whose limits a
//!   core declares and the shell enforces.

mod outbox;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::protocol::check::SharedCheck;

pub use outbox::Outbox;

/// A probe's identity, chosen by the core.
pub type ProbeId = u64;

/// A stream connection's identity: unique for the shell's lifetime (not reused).
pub type ConnId = u64;

/// A datagram the core wants sent; its bytes are in the buffer handed to
/// [`Core::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<F> {
    /// The socket to send from.
    pub face: F,
    /// Where to.
    pub to: SocketAddr,
}

/// A probe the core wants started or stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCmd {
    /// Connect to `addr` over TCP without blocking, check it as `check` says, and report the
    /// outcome under `id`.
    Start {
        /// The probe's identity.
        id: ProbeId,
        /// Where to connect.
        addr: SocketAddr,
        /// What makes it healthy: [`Check::Tcp`] (or `None`) an accepted connect,
        /// [`Check::Http`] a 2xx or 3xx answer to a `GET` of the path.
        ///
        /// [`Check::Tcp`]: crate::protocol::Check::Tcp
        /// [`Check::Http`]: crate::protocol::Check::Http
        check: SharedCheck,
    },
    /// Stop the probe (its deadline passed); no outcome is reported for it afterwards.
    Abort {
        /// The probe's identity.
        id: ProbeId,
    },
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The connect succeeded: something listens there (and, for an HTTP check, answered with
    /// a 2xx or 3xx status).
    Connected,
    /// The connect failed (refused, unreachable, reset): the target's doing.
    Failed(io::ErrorKind),
    /// This process could not try (out of file descriptors, say): says nothing of the target.
    Local(io::ErrorKind),
}

/// What the core did with a stream's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStep {
    /// How many bytes from the front of the input it used; they are dropped.
    pub consumed: usize,
    /// Close the connection once the output is written.
    pub close: bool,
}

/// A sans-IO state machine run by a [`Shell`](crate::shell::Shell). Every method but the
/// `handle_*` inputs only reads or drains the core's queues; none may block.
pub trait Core {
    /// The core's names for its sockets.
    type Face: Copy + Eq + std::fmt::Debug;

    /// What another thread may hand the core through the shell's command channel
    /// ([`Shell::commands`](crate::shell::Shell::commands)): a reload of its settings, say. A
    /// core that takes none says [`std::convert::Infallible`].
    type Command: Send + 'static;

    /// A datagram arrived on `face` from `from`. To answer at once (the hot path, no queue),
    /// write the answer into `reply` (empty on entry) and return the face to send it from, to
    /// `from`.
    fn handle_datagram(
        &mut self,
        now: Instant,
        face: Self::Face,
        from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> Option<Self::Face>;

    /// Bytes arrived on a connection accepted on `face`: `input` holds every byte not consumed
    /// yet. Append any answer to `output`. The default closes the connection.
    fn handle_stream(
        &mut self,
        now: Instant,
        face: Self::Face,
        conn: ConnId,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> StreamStep {
        let _ = (now, face, conn, input, output);
        StreamStep { consumed: input.len(), close: true }
    }

    /// The next datagram to send: its bytes go into `out` (empty on entry).
    fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Transmit<Self::Face>> {
        let _ = (now, out);
        None
    }

    /// The next probe to start or abort.
    fn poll_probe(&mut self) -> Option<ProbeCmd> {
        None
    }

    /// Bytes every HTTP check writes before its `GET`: the balancer's PROXY header when it sends
    /// one (a backend that requires the header would refuse a check without it). Empty by default.
    fn probe_preamble(&self) -> &[u8] {
        &[]
    }

    /// A probe ended.
    fn handle_probe(&mut self, now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        let _ = (now, id, outcome);
    }

    /// When the core wants [`handle_timeout`](Self::handle_timeout) called next.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Time has reached a deadline from [`poll_timeout`](Self::poll_timeout) (or later).
    fn handle_timeout(&mut self, now: Instant);

    /// A datagram could not be sent (a full buffer, an unroutable address).
    fn handle_send_error(&mut self, face: Self::Face, to: SocketAddr, error: &io::Error) {
        let _ = (face, to, error);
    }

    /// The turn's sockets have all been served: work that is cheaper once per turn than once
    /// per input (publishing a table to other threads, say) goes here.
    fn handle_turn_end(&mut self, now: Instant) {
        let _ = now;
    }

    /// Another thread woke the loop through [`Shell::waker`](crate::shell::Shell::waker).
    fn handle_wake(&mut self, now: Instant) {
        let _ = now;
    }

    /// Another thread sent `command` through the shell's command channel (it is handed over in
    /// the turn the loop is woken for it, before [`handle_wake`](Self::handle_wake)).
    fn handle_command(&mut self, now: Instant, command: Self::Command) {
        let _ = (now, command);
    }

    /// The loop starts: the first time the core sees the clock (it may queue hellos).
    fn handle_start(&mut self, now: Instant) {
        let _ = now;
    }

    /// The loop is about to stop: a last chance to queue datagrams (a goodbye to peers), which
    /// are sent before [`Shell::run`](crate::shell::Shell::run) returns.
    fn handle_close(&mut self, now: Instant) {
        let _ = now;
    }
}

/// What a stream listener allows each client: declared by the core that answers on it (the
/// broker's DNS over TCP, say), enforced by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Connections open at once; beyond, new ones are closed at once.
    pub max_connections: usize,
    /// Bytes a connection may send that the core has not consumed yet; beyond, it is closed.
    pub max_input: usize,
    /// A connection with no traffic for this long is closed.
    pub idle: Duration,
    /// A whole request must arrive within this long of the connection's opening (and of the
    /// previous request's answer); beyond, the connection is closed, however often it sends a
    /// byte, so slow clients cannot hold the listener's places. With it, a listener at its cap
    /// closes the connection that has waited longest for its request to take a new one, rather
    /// than refuse the new one. `None`: only `idle` applies.
    pub request: Option<Duration>,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits { max_connections: 256, max_input: 64 * 1024, idle: Duration::from_secs(30), request: None }
    }
}
