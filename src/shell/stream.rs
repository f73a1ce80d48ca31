//! Stream faces: accepted TCP connections, buffered, request/response.
//!
//! A connection's bytes collect in its input buffer until the core consumes them; its answers
//! collect in the output buffer until the socket takes them. The listener's [`StreamLimits`]
//! bound everything a client can make the shell hold: connections, unconsumed input, time
//! without traffic, and (where the listener sets a request time) time without a whole request,
//! so that a client sending a byte now and then cannot hold a place for long; a full listener
//! with a request time closes the connection that has waited longest for its request to take a
//! new one.
//!
//! Answers are bounded too: while more than [`MAX_PENDING`] bytes of a connection's answers wait
//! for a client that does not read them, the shell reads no more of its requests and hands none
//! to the core, so that a client pipelining requests it never reads the answers to cannot make
//! the process hold more than that (and one answer) for it; the idle time then closes it.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{ACCEPT_BUDGET, ACCEPT_RETRY, Io, Shell};
use crate::core::{ConnId, Core, StreamLimits};

/// How many reads one connection gets per turn.
const READ_BUDGET: usize = 16;

/// The most bytes of answers a connection may have waiting before the shell stops taking its
/// requests (see the [module documentation](self)).
pub(super) const MAX_PENDING: usize = 256 * 1024;

pub(super) struct Conn<F> {
    face: F,
    listener: usize,
    id: ConnId,
    stream: TcpStream,
    limits: StreamLimits,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// Close once the output is written.
    closing: bool,
    /// The client has closed its sending side.
    eof: bool,
    idle_at: Instant,
    /// When a whole request must have come by (listeners with a request time, while waiting).
    head_at: Option<Instant>,
    /// Requests wait (in `input`, or unread in the socket), held back while the answers wait
    /// for the client.
    held: bool,
}

impl<F> Conn<F> {
    /// Bytes of answers not yet written.
    fn pending(&self) -> usize {
        self.output.len() - self.written
    }
}

impl<C: Core> Shell<C> {
    /// Accepts waiting connections on the listener at `index`, within its cap.
    pub(super) fn accept(&mut self, now: Instant, index: usize) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Io::Listener { face, listener, limits, open }) = self.ios.get_mut(index) else { return };
            let (face, limits) = (*face, *limits);
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if crate::net::is_out_of_descriptors(&e) => {
                    // The connections wait in the backlog; no new event would tell of them.
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
                Err(e) => {
                    log::warn!("accept on {face:?} failed: {e}");
                    return;
                }
            };
            if *open >= limits.max_connections && !(limits.request.is_some() && self.evict(index)) {
                // Closed at once: the client sees the end of the stream rather than a hang.
                self.stats.streams_refused += 1;
                continue;
            }
            let Some(Io::Listener { open, .. }) = self.ios.get_mut(index) else { return };
            *open += 1;
            let key = self.ios.vacant_key();
            if self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE).is_err()
            {
                self.release(index);
                continue;
            }
            let id = self.next_conn;
            self.next_conn += 1;
            let idle_at = now + limits.idle;
            let head_at = limits.request.map(|request| now + request);
            self.ios.insert(Io::Stream(Conn {
                face,
                listener: index,
                id,
                stream,
                limits,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                closing: false,
                eof: false,
                idle_at,
                head_at,
                held: false,
            }));
            self.idle.insert(idle_at, key);
            if let Some(at) = head_at {
                self.heads.insert(at, key);
            }
        }
        self.backlog.push(index);
    }

    /// Reads what a connection sent, lets the core answer, writes what it can.
    pub(super) fn serve_stream(&mut self, now: Instant, index: usize) {
        let Some(Io::Stream(conn)) = self.ios.get_mut(index) else { return };
        let mut fresh = false;
        let mut more = true;
        // Reading stopped while the answers wait: what the client sent since waits in the socket.
        let mut paused = false;
        for _ in 0..READ_BUDGET {
            if conn.closing || conn.eof || conn.input.len() >= conn.limits.max_input {
                more = false;
                break;
            }
            if conn.pending() >= MAX_PENDING {
                (paused, more) = (true, false);
                break;
            }
            let room = (conn.limits.max_input - conn.input.len()).min(self.buf.len());
            match conn.stream.read(&mut self.buf[..room]) {
                Ok(0) => conn.eof = true,
                Ok(n) => {
                    conn.input.extend_from_slice(&self.buf[..n]);
                    fresh = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close_stream(index),
            }
        }
        if fresh || conn.held {
            // The core takes as many whole requests as the input holds, one call each, while
            // the answers waiting are within bounds.
            conn.held = false;
            loop {
                if conn.pending() >= MAX_PENDING {
                    conn.held = !conn.input.is_empty();
                    break;
                }
                let step = self.core.handle_stream(now, conn.face, conn.id, &conn.input, &mut conn.output);
                let consumed = step.consumed.min(conn.input.len());
                conn.input.drain(..consumed);
                conn.closing |= step.close;
                if consumed > 0 {
                    // A request came whole: the next one's time starts now (none while closing).
                    if let Some(at) = conn.head_at.take() {
                        self.heads.remove(at, index);
                    }
                    if let Some(request) = conn.limits.request.filter(|_| !conn.closing) {
                        conn.head_at = Some(now + request);
                        self.heads.insert(now + request, index);
                    }
                }
                if consumed == 0 || conn.input.is_empty() || conn.closing {
                    break;
                }
            }
            if !conn.closing && !conn.held && conn.input.len() >= conn.limits.max_input {
                self.stats.streams_overflowed += 1;
                return self.close_stream(index);
            }
        }
        conn.held |= paused;
        if conn.eof && !conn.held {
            // Nothing more will come; what is left cannot become a request.
            conn.closing = true;
        }
        while conn.written < conn.output.len() {
            match conn.stream.write(&conn.output[conn.written..]) {
                Ok(0) => return self.close_stream(index),
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close_stream(index),
            }
        }
        if conn.written >= MAX_PENDING && conn.written < conn.output.len() {
            // A client that reads, slowly, while answers are added: what it read is dropped.
            conn.output.drain(..conn.written);
            conn.written = 0;
        }
        if conn.written == conn.output.len() {
            conn.output.clear();
            conn.written = 0;
            if conn.closing {
                return self.close_stream(index);
            }
            // The client read what held its requests back: take them (and read on) next turn,
            // as no new event may come for bytes already here.
            more |= conn.held;
        }
        let (old, new) = (conn.idle_at, now + conn.limits.idle);
        conn.idle_at = new;
        self.idle.reschedule(old, new, index);
        if more {
            self.backlog.push(index);
        }
    }

    /// Closes a connection (closing the descriptor takes it out of the poll set too).
    pub(super) fn close_stream(&mut self, index: usize) {
        if let Some(Io::Stream(conn)) = self.ios.try_remove(index) {
            self.idle.remove(conn.idle_at, index);
            if let Some(at) = conn.head_at {
                self.heads.remove(at, index);
            }
            self.release(conn.listener);
        }
    }

    /// Makes room at the full listener at `listener` by closing its connection that has waited
    /// longest for a whole request; false when the longest waiting is another listener's, or
    /// none waits.
    fn evict(&mut self, listener: usize) -> bool {
        let Some((_, oldest)) = self.heads.first() else { return false };
        if !matches!(self.ios.get(oldest), Some(Io::Stream(conn)) if conn.listener == listener) {
            return false;
        }
        self.stats.streams_evicted += 1;
        self.close_stream(oldest);
        true
    }

    /// The bytes of answers waiting on each open connection, for tests.
    #[cfg(test)]
    pub(super) fn pending_output(&self) -> Vec<usize> {
        self.ios
            .iter()
            .filter_map(|(_, io)| if let Io::Stream(conn) = io { Some(conn.pending()) } else { None })
            .collect()
    }

    /// Gives a connection's place back to its listener.
    fn release(&mut self, listener: usize) {
        if let Some(Io::Listener { open, .. }) = self.ios.get_mut(listener) {
            *open = open.saturating_sub(1);
        }
    }
}
