//! The event-loop shell: one generic mio driver for every socket a sans-IO core needs.
//!
//! A [`Core`] holds all the logic and no socket: it is handed datagrams, stream bytes, probe
//! outcomes and the time, and it is *polled* for what to send, which probes to start and when to
//! wake it next (the model of quinn-proto's `handle` / `poll_transmit` / `poll_timeout`); the
//! words the two speak are [`crate::core`]'s, which the shell only consumes. The [`Shell`] owns
//! the sockets and moves bytes:
//!
//! ```text
//!            ┌─────────────────────── Shell (one thread, one mio Poll) ───────────────────────┐
//!  UDP faces │ Slab<Io>: Udp │ Listener │ Stream │ Probe        WAKER = Token(usize::MAX)     │
//!  TCP faces │   one dispatch per ready Io, each within a budget; one `now` per turn          │
//!            └──────┬────────────────────────────────────────────────────────▲──────────────┘
//!                   │ handle_datagram / handle_stream / handle_probe / handle_timeout
//!                   ▼                                                        │ poll_transmit /
//!                 Core (sans-IO: no socket, no clock)  ──────────────────────┘ poll_probe / poll_timeout
//! ```
//!
//! A turn: poll (no longer than the core's next timeout; not at all while a socket has more
//! waiting than its budget let through), read the clock once, serve every ready socket within
//! its budget, run the core's timers, then send everything the core queued and start or abort
//! the probes it asked for. Readiness is edge-triggered, so a socket is drained until it would
//! block, or put on the backlog for the next turn when its budget runs out. A UDP socket with a
//! short queue is read and answered one datagram at a time, each reply sent before the next
//! datagram is read; one with a long queue many datagrams per system call (`batch_io`, see
//! `PROBE_EVERY`).
//!
//! Faces are the core's own names for its sockets (`Client`, `Group`, `Dns`, …); an immediate
//! reply or a queued [`Transmit`](crate::core::Transmit) names the face to leave from. Stream faces (TCP listeners)
//! are request/response: the core sees every buffered byte and says how many it consumed and
//! whether to close once its answer is written; the shell enforces the connection cap, the
//! input limit and the idle timeout of each listener ([`StreamLimits`]). Probes are
//! non-blocking TCP connects, followed for an HTTP check by a `GET` on the same connection
//! (`probe_io`): the core asks for one with [`ProbeCmd::Start`], and hears the outcome through
//! [`Core::handle_probe`]; the deadline is the core's, which aborts the probe with
//! [`ProbeCmd::Abort`] when it passes. Other threads hand the core commands (a reload of its
//! settings on SIGHUP) through [`Shell::commands`]: a channel and the loop's waker, read only
//! when the waker fires, and made only when asked for.

mod batch_io;
mod probe_io;
mod stream;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::core::{ConnId, Core, ProbeCmd, ProbeId, ProbeOutcome, StreamLimits};
use crate::protocol::Check;
use crate::shutdown::Shutdown;
use crate::timers::Timers;
use slab::Slab;

/// How many datagrams one socket may hand the core in one turn before the others get theirs,
/// and timers run, again: a flood on one socket cannot stall the rest.
const DATAGRAM_BUDGET: usize = 1024;
/// How many immediate replies wait, while a socket with a long queue is drained, before they
/// are sent back to back: one `sendmmsg` instead of one call each (about 7 % of the DNS face's
/// rate with 100 queries in flight). Only there: a reply held back while the rest of its batch
/// is worked on keeps a client with a few requests in flight waiting for all of them, and the
/// client and the broker fall into step, each idle while the other works (a third of an echo
/// server's rate with 8 in flight, where one reply at a time gives more than four fifths).
const SEND_BATCH: usize = 32;
/// A socket read one datagram at a time is read with `recvmmsg` every this many datagrams, to
/// see whether a long queue waits: when that read comes back full, the socket is read and
/// answered in batches until a batch comes back short. One datagram per `recv_from` costs less
/// than a `recvmmsg` that finds one or two; a batch costs less per datagram than the calls it
/// replaces.
const PROBE_EVERY: usize = 8;
/// The longest a socket goes between batch reads: a batch read that finds a short queue (no
/// more than a quarter of a batch, none included, as with a few requests in flight) doubles the
/// socket's interval up to this, and one that comes back full sets it back to [`PROBE_EVERY`].
/// A batch read that finds one datagram costs more than a `recv_from`, and reading a short
/// queue in batches made the client and the broker fall into step (0.58 of one datagram at a
/// time, 2026-12-05g), while the few datagrams it finds save only their `recv_from` calls.
const PROBE_MAX: usize = 256;
/// How many connections one listener accepts in one turn.
const ACCEPT_BUDGET: usize = 256;
/// How soon to try accepting again after the process ran out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);
/// The largest datagram read; longer ones are cut to this (and so show as too long).
const MAX_DATAGRAM: usize = 65_536;

const WAKER: Token = Token(usize::MAX);

/// Counters the shell keeps about its own work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellStats {
    /// Connections closed at once because their listener was at its cap.
    pub streams_refused: u64,
    /// Connections closed because they sent more than the input limit without an answer.
    pub streams_overflowed: u64,
    /// Connections closed by the idle timeout.
    pub streams_idle: u64,
    /// Connections closed because no whole request came within the listener's request time.
    pub streams_slow: u64,
    /// Connections closed at a full listener to make room for a new one, while they waited for
    /// their request.
    pub streams_evicted: u64,
    /// Transmits for a face that has no socket (a core bug; dropped).
    pub unknown_face: u64,
}

enum Io<F> {
    /// `probe`: how many datagrams are read one at a time before the next batch read (see
    /// [`PROBE_MAX`]); `v6`: the socket is an IPv6 one (its sources' length, for
    /// `batch_io::recv`).
    Udp {
        face: F,
        socket: UdpSocket,
        probe: Cell<usize>,
        v6: bool,
    },
    Listener {
        face: F,
        listener: TcpListener,
        limits: StreamLimits,
        open: usize,
    },
    Stream(stream::Conn<F>),
    Probe(probe_io::ProbeIo),
}

/// Immediate replies gathered while a socket is drained.
struct Batch<'a, F> {
    bytes: &'a mut Vec<u8>,
    /// Each reply's face, destination and length, in order.
    replies: &'a mut Vec<(F, SocketAddr, usize)>,
}

impl<F: Copy + Eq + std::fmt::Debug> Batch<'_, F> {
    fn push(&mut self, face: F, to: SocketAddr, reply: &[u8]) {
        self.bytes.extend_from_slice(reply);
        self.replies.push((face, to, reply.len()));
    }

    /// Sends every reply gathered, in order, each from its face's socket: the replies of one
    /// face in a row go out in as few system calls as the kernel allows.
    fn send<C: Core<Face = F>>(
        &mut self,
        ios: &Slab<Io<F>>,
        udp_faces: &[(F, usize)],
        core: &mut C,
        stats: &mut ShellStats,
    ) {
        if let [(face, to, _)] = self.replies[..] {
            // One reply: no list of messages to build.
            send_now(ios, udp_faces, core, stats, face, to, self.bytes);
            self.bytes.clear();
            self.replies.clear();
            return;
        }
        let mut offset = 0;
        let mut run_start = 0;
        while run_start < self.replies.len() {
            let face = self.replies[run_start].0;
            let run_end = self.replies[run_start..]
                .iter()
                .position(|&(f, _, _)| f != face)
                .map_or(self.replies.len(), |n| run_start + n);
            let socket = match udp_faces.iter().find(|(f, _)| *f == face).and_then(|&(_, i)| ios.get(i)) {
                Some(Io::Udp { socket, .. }) => Some(socket),
                _ => None,
            };
            for chunk in self.replies[run_start..run_end].chunks(batch_io::BATCH) {
                let mut messages: [(&[u8], SocketAddr); batch_io::BATCH] = [(&[], NOWHERE); batch_io::BATCH];
                for (message, &(_, to, len)) in messages.iter_mut().zip(chunk) {
                    *message = (&self.bytes[offset..offset + len], to);
                    offset += len;
                }
                let messages = &messages[..chunk.len()];
                match socket {
                    Some(socket) => {
                        batch_io::send(socket, messages, |i, e| core.handle_send_error(face, messages[i].1, e))
                    }
                    None => stats.unknown_face += chunk.len() as u64,
                }
            }
            run_start = run_end;
        }
        self.bytes.clear();
        self.replies.clear();
    }
}

/// A placeholder destination for the unused slots of a list of messages.
const NOWHERE: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));

/// Sends one reply from `face`'s socket at once.
fn send_now<F: Copy + Eq, C: Core<Face = F>>(
    ios: &Slab<Io<F>>,
    udp_faces: &[(F, usize)],
    core: &mut C,
    stats: &mut ShellStats,
    face: F,
    to: SocketAddr,
    reply: &[u8],
) {
    match udp_faces.iter().find(|(f, _)| *f == face).and_then(|&(_, i)| ios.get(i)) {
        Some(Io::Udp { socket, .. }) => {
            batch_io::send(socket, &[(reply, to)], |_, e| core.handle_send_error(face, to, e))
        }
        _ => stats.unknown_face += 1,
    }
}

/// The mio driver. Build it with the sockets the core needs, then [`run`](Shell::run) it.
pub struct Shell<C: Core> {
    poll: Poll,
    core: C,
    ios: Slab<Io<C::Face>>,
    /// Each UDP face's slab index, for transmits.
    udp_faces: Vec<(C::Face, usize)>,
    probes: HashMap<ProbeId, usize>,
    /// Ios that had more to do than their budget allowed.
    backlog: Vec<usize>,
    /// The ios to serve in a turn (kept for its allocation: a turn allocates nothing).
    ready: Vec<(usize, bool)>,
    /// Listeners to retry after running out of descriptors, and when.
    accept_retry: Option<Instant>,
    /// Stream idle deadlines by slab index.
    idle: Timers<usize>,
    /// The deadlines of streams waiting for a whole request, by slab index (listeners with a
    /// request time only); the first is the one that has waited longest.
    heads: Timers<usize>,
    next_conn: ConnId,
    /// Stream reads.
    buf: Vec<u8>,
    /// Datagram reads, many per system call.
    datagrams: batch_io::RecvBuffers,
    reply: Vec<u8>,
    /// Immediate replies not sent yet, and their bytes, back to back (see [`SEND_BATCH`]).
    batch_replies: Vec<(C::Face, SocketAddr, usize)>,
    batch: Vec<u8>,
    stats: ShellStats,
    waker: Arc<Waker>,
    /// The command channel, made on the first [`Shell::commands`]: until then a wake-up costs
    /// no channel read.
    commands: Option<Channel<C::Command>>,
}

/// Both ends of the command channel.
type Channel<T> = (crossbeam_channel::Sender<T>, crossbeam_channel::Receiver<T>);

/// A handle other threads use to hand the core a command ([`Core::handle_command`]): a
/// channel plus the loop's waker, so the command is taken at once, not at the next timeout.
/// Cheap to clone.
pub struct Commands<T> {
    sender: crossbeam_channel::Sender<T>,
    waker: Arc<Waker>,
}

impl<T> Clone for Commands<T> {
    fn clone(&self) -> Self {
        Commands { sender: self.sender.clone(), waker: Arc::clone(&self.waker) }
    }
}

impl<T> std::fmt::Debug for Commands<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").field("waiting", &self.sender.len()).finish()
    }
}

impl<T> Commands<T> {
    /// Queues `command` and wakes the loop. Fails only once the loop has stopped.
    pub fn send(&self, command: T) -> io::Result<()> {
        self.sender.send(command).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the loop has stopped"))?;
        self.waker.wake()
    }
}

impl<C: Core> std::fmt::Debug for Shell<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell").field("ios", &self.ios.len()).field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl<C: Core> Shell<C> {
    /// A shell around `core` with no sockets yet.
    pub fn new(core: C) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Shell {
            poll,
            core,
            ios: Slab::new(),
            udp_faces: Vec::new(),
            probes: HashMap::new(),
            backlog: Vec::new(),
            ready: Vec::new(),
            accept_retry: None,
            idle: Timers::new(),
            heads: Timers::new(),
            next_conn: 0,
            buf: vec![0; MAX_DATAGRAM],
            datagrams: batch_io::RecvBuffers::new(MAX_DATAGRAM),
            reply: Vec::with_capacity(2048),
            batch_replies: Vec::with_capacity(SEND_BATCH),
            batch: Vec::with_capacity(SEND_BATCH * 2048),
            stats: ShellStats::default(),
            waker,
            commands: None,
        })
    }

    /// Serves a UDP socket as `face`. The socket must be non-blocking (see [`crate::net`]).
    pub fn add_udp(&mut self, face: C::Face, mut socket: UdpSocket) -> io::Result<()> {
        let index = self.ios.vacant_key();
        let v6 = socket.local_addr()?.is_ipv6();
        self.poll.registry().register(&mut socket, Token(index), Interest::READABLE)?;
        self.ios.insert(Io::Udp { face, socket, probe: Cell::new(PROBE_EVERY), v6 });
        self.udp_faces.push((face, index));
        Ok(())
    }

    /// Accepts connections on `listener` as `face`, within `limits`.
    pub fn add_listener(&mut self, face: C::Face, mut listener: TcpListener, limits: StreamLimits) -> io::Result<()> {
        let index = self.ios.vacant_key();
        self.poll.registry().register(&mut listener, Token(index), Interest::READABLE)?;
        self.ios.insert(Io::Listener { face, listener, limits, open: 0 });
        Ok(())
    }

    /// A waker other threads may use to make the loop call [`Core::handle_wake`].
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// A handle to hand the core commands from other threads (see [`Commands`]); the channel
    /// is made on the first call, so a shell nobody commands reads none.
    pub fn commands(&mut self) -> Commands<C::Command> {
        let (sender, _) = self.commands.get_or_insert_with(crossbeam_channel::unbounded);
        Commands { sender: sender.clone(), waker: Arc::clone(&self.waker) }
    }

    /// The core.
    pub fn core(&self) -> &C {
        &self.core
    }

    /// The core, to set it up before running.
    pub fn core_mut(&mut self) -> &mut C {
        &mut self.core
    }

    /// The shell's counters.
    pub fn stats(&self) -> &ShellStats {
        &self.stats
    }

    /// Runs turns until `shutdown` is requested; then lets the core say goodbye, sends what it
    /// queued, and returns the core.
    pub fn run(mut self, shutdown: &Shutdown) -> io::Result<C> {
        shutdown.watch(Arc::clone(&self.waker))?;
        let mut events = Events::with_capacity(256);
        let now = Instant::now();
        self.core.handle_start(now);
        self.flush(now);
        while !shutdown.is_requested() {
            self.turn(&mut events, None)?;
        }
        let now = Instant::now();
        self.core.handle_close(now);
        self.flush(now);
        Ok(self.core)
    }

    /// One turn of the loop, waiting at most `max_wait` (tests drive the shell with this).
    pub fn turn(&mut self, events: &mut Events, max_wait: Option<Duration>) -> io::Result<()> {
        let timeout = if self.backlog.is_empty() {
            let wake = [self.core.poll_timeout(), self.idle.next(), self.heads.next(), self.accept_retry]
                .into_iter()
                .flatten()
                .min();
            let until = wake.map(|at| at.saturating_duration_since(Instant::now()));
            match (until, max_wait) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            Some(Duration::ZERO)
        };
        match self.poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.backlog.drain(..).map(|i| (i, false)));
        for event in events.iter() {
            match event.token() {
                WAKER => {
                    if let Some((_, receiver)) = &self.commands {
                        while let Ok(command) = receiver.try_recv() {
                            self.core.handle_command(now, command);
                        }
                    }
                    self.core.handle_wake(now);
                }
                Token(index) => ready.push((index, event.is_error() || event.is_write_closed())),
            }
        }
        if self.accept_retry.is_some_and(|at| at <= now) {
            self.accept_retry = None;
            let listeners = self.ios.iter().filter(|(_, io)| matches!(io, Io::Listener { .. })).map(|(i, _)| i);
            ready.extend(listeners.map(|i| (i, false)));
        }
        ready.sort_unstable();
        ready.dedup_by(|a, b| {
            a.0 == b.0 && {
                b.1 |= a.1;
                true
            }
        });
        for &(index, error) in &ready {
            self.serve(now, index, error);
            self.flush(now);
        }
        self.ready = ready;
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.core.handle_timeout(now);
        }
        while let Some(index) = self.idle.pop_due(now) {
            self.stats.streams_idle += 1;
            self.close_stream(index);
        }
        while let Some(index) = self.heads.pop_due(now) {
            self.stats.streams_slow += 1;
            self.close_stream(index);
        }
        self.core.handle_turn_end(now);
        self.flush(now);
        Ok(())
    }

    /// Serves one ready socket.
    fn serve(&mut self, now: Instant, index: usize, error: bool) {
        match self.ios.get(index) {
            Some(Io::Udp { .. }) => self.drain_udp(now, index),
            Some(Io::Listener { .. }) => self.accept(now, index),
            Some(Io::Stream(_)) => self.serve_stream(now, index),
            Some(Io::Probe(_)) => self.finish_probe(now, index, error),
            None => {}
        }
    }

    fn drain_udp(&mut self, now: Instant, index: usize) {
        let Some(Io::Udp { face, socket, probe, v6 }) = self.ios.get(index) else { return };
        let (face, v6) = (*face, *v6);
        let mut every = probe.get();
        let mut batch = Batch { bytes: &mut self.batch, replies: &mut self.batch_replies };
        let mut taken = 0;
        // Whether the last batch read came back full (a long queue), and how many datagrams
        // were read one at a time since the last batch read.
        let (mut deep, mut singles) = (false, 0);
        while taken < DATAGRAM_BUDGET {
            // The budget's last few datagrams one at a time, so that it is never overrun.
            let batched = (deep || singles >= every) && DATAGRAM_BUDGET - taken >= batch_io::BATCH;
            let read = if batched {
                batch_io::recv(socket, v6, &mut self.datagrams)
            } else {
                batch_io::recv_one(socket, &mut self.datagrams)
            };
            match read {
                Ok(()) => {
                    let got = self.datagrams.len();
                    taken += got;
                    deep = batched && got == batch_io::BATCH;
                    if deep {
                        every = PROBE_EVERY;
                    } else if batched && got <= batch_io::BATCH / 4 {
                        every = (every * 2).min(PROBE_MAX);
                    }
                    singles = if batched { 0 } else { singles + 1 };
                    for i in 0..got {
                        let Some((datagram, from)) = self.datagrams.get(i) else { continue };
                        self.reply.clear();
                        if let Some(out) = self.core.handle_datagram(now, face, from, datagram, &mut self.reply) {
                            if !deep && batch.replies.is_empty() {
                                // A short queue's reply, with none waiting before it: sent at
                                // once, from where it was written.
                                send_now(
                                    &self.ios,
                                    &self.udp_faces,
                                    &mut self.core,
                                    &mut self.stats,
                                    out,
                                    from,
                                    &self.reply,
                                );
                                continue;
                            }
                            batch.push(out, from, &self.reply);
                            if !deep || batch.replies.len() >= SEND_BATCH {
                                batch.send(&self.ios, &self.udp_faces, &mut self.core, &mut self.stats);
                            }
                        }
                    }
                    // A short batch read found the socket empty; what came while its datagrams
                    // were worked on is read on, as after a single read (a socket is drained
                    // until it would block: the next event comes only for a later datagram).
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if batched {
                        // A batch read that found nothing found a short queue too.
                        every = (every * 2).min(PROBE_MAX);
                    }
                    probe.set(every);
                    batch.send(&self.ios, &self.udp_faces, &mut self.core, &mut self.stats);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors of earlier sends surface here on some systems; the socket is
                    // still good, so carry on next turn.
                    log::warn!("receive on {face:?} failed: {e}");
                    break;
                }
            }
        }
        probe.set(every);
        batch.send(&self.ios, &self.udp_faces, &mut self.core, &mut self.stats);
        self.backlog.push(index);
    }

    /// Sends what the core queued and carries out its probe commands.
    fn flush(&mut self, now: Instant) {
        loop {
            self.reply.clear();
            let Some(transmit) = self.core.poll_transmit(now, &mut self.reply) else { break };
            let socket = self.udp_faces.iter().find(|(f, _)| *f == transmit.face).and_then(|&(_, i)| self.ios.get(i));
            match socket {
                Some(Io::Udp { socket, .. }) => {
                    if let Err(e) = socket.send_to(&self.reply, transmit.to) {
                        self.core.handle_send_error(transmit.face, transmit.to, &e);
                    }
                }
                _ => self.stats.unknown_face += 1,
            }
        }
        while let Some(command) = self.core.poll_probe() {
            match command {
                ProbeCmd::Start { id, addr, check } => self.start_probe(now, id, addr, &check),
                ProbeCmd::Abort { id } => {
                    if let Some(index) = self.probes.remove(&id) {
                        self.ios.try_remove(index);
                    }
                }
            }
        }
    }

    fn start_probe(&mut self, now: Instant, id: ProbeId, addr: SocketAddr, check: &Check<Box<str>>) {
        let mut probe = match probe_io::ProbeIo::connect(id, addr, check, self.core.probe_preamble()) {
            Ok(probe) => probe,
            Err(e) => {
                let outcome = if crate::net::is_out_of_descriptors(&e) {
                    ProbeOutcome::Local(e.kind())
                } else {
                    ProbeOutcome::Failed(e.kind())
                };
                self.core.handle_probe(now, id, outcome);
                return;
            }
        };
        let index = self.ios.vacant_key();
        let interest = probe.interest();
        if let Err(e) = self.poll.registry().register(&mut probe.stream, Token(index), interest) {
            self.core.handle_probe(now, id, ProbeOutcome::Local(e.kind()));
            return;
        }
        self.ios.insert(Io::Probe(probe));
        if let Some(old) = self.probes.insert(id, index) {
            // The core reused a running probe's id: the old one is forgotten.
            self.ios.try_remove(old);
        }
    }

    fn finish_probe(&mut self, now: Instant, index: usize, error: bool) {
        let Some(Io::Probe(probe)) = self.ios.get_mut(index) else { return };
        let id = probe.id;
        let Some(outcome) = probe.on_ready(error) else { return };
        self.probes.remove(&id);
        self.ios.try_remove(index);
        self.core.handle_probe(now, id, outcome);
    }
}
