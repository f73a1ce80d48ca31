//! A forwarding thread: many client connections, each relayed to a backend, in one mio loop.
//!
//! Each thread accepts on a listener of its own (`SO_REUSEPORT`: the kernel spreads new
//! connections over the threads' listeners), so a connection is accepted, connected and relayed
//! by one thread, with no hand-off and no wake-up between threads. Accepts are bounded per turn
//! (the rest wait for the next turn), so a burst of connections cannot starve the ones open.
//!
//! Each proxied connection is a client socket and a backend socket, tokens `2i` and `2i + 1`
//! for slab index `i`; the listener has a token of its own. Bytes move through one scratch buffer per thread; only when a destination
//! cannot take them all does the remainder wait in a per-connection buffer, and reading from
//! that source stops until it drains (backpressure). Idle connections therefore hold no buffer.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::policy::Draw;
use super::pool::{Lease, Pool};
use super::relay::{Nagle, Pipe, transfer};
use super::{Counters, WAKER};
use crate::shutdown::Shutdown;
use slab::Slab;

/// Bytes moved per read.
const SCRATCH: usize = 64 * 1024;
/// How often connect and idle timeouts are checked.
const SWEEP: Duration = Duration::from_millis(100);
/// Connections accepted per turn of the loop, at most.
const ACCEPT_BUDGET: usize = 64;
/// How soon to try accepting again after the process ran out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);
/// The listener's token; connections use `2i` and `2i + 1`, far below it.
const LISTENER: Token = Token(usize::MAX - 1);
/// Backends one connection tries at most: the first and up to three redispatches after a
/// refused or timed-out connect (HAProxy's `retries 3` with `option redispatch`).
pub(crate) const MAX_TRIES: usize = 4;

/// The timeouts of the forwarding threads (`--connect-timeout`, `--idle-timeout`,
/// `--drain-timeout`): shared with the control port, which changes them on a reload; each
/// thread reads them when it sweeps (and the drain time when it starts draining), so a change
/// applies to the connections already open too.
#[derive(Debug)]
pub struct Timeouts {
    connect_us: AtomicU64,
    idle_us: AtomicU64,
    drain_us: AtomicU64,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl Timeouts {
    /// These timeouts.
    pub fn new(connect: Duration, idle: Duration, drain: Duration) -> Self {
        Timeouts {
            connect_us: AtomicU64::new(micros(connect)),
            idle_us: AtomicU64::new(micros(idle)),
            drain_us: AtomicU64::new(micros(drain)),
        }
    }

    /// How long a backend connect may take before the next backend is tried.
    pub fn connect(&self) -> Duration {
        Duration::from_micros(self.connect_us.load(Relaxed))
    }

    /// How long a connection may be idle.
    pub fn idle(&self) -> Duration {
        Duration::from_micros(self.idle_us.load(Relaxed))
    }

    /// How long connections in flight may take to finish on shutdown.
    pub fn drain(&self) -> Duration {
        Duration::from_micros(self.drain_us.load(Relaxed))
    }

    /// New timeouts (a reload).
    pub fn set(&self, connect: Duration, idle: Duration, drain: Duration) {
        self.connect_us.store(micros(connect), Relaxed);
        self.idle_us.store(micros(idle), Relaxed);
        self.drain_us.store(micros(drain), Relaxed);
    }
}

/// Who brings a backend marked down back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revival {
    /// Health checks run: only they (`--rise` successes in a row) bring it back.
    HealthChecks,
    /// No health checks: a connect that succeeds (when every backend up was tried) does.
    Connect,
}

struct Proxy {
    client: TcpStream,
    /// The backend socket, and the lease that counts the connection in flight to its backend
    /// until dropped.
    backend: Option<(TcpStream, Lease)>,
    /// While the backend connect is in progress: when it started.
    connecting: Option<Instant>,
    /// The client closed its sending side while the connect was going.
    client_closed: bool,
    tried: Vec<SocketAddr>,
    up: Pipe,
    down: Pipe,
    last_active: Instant,
}

/// Timeouts and limits of a forwarding thread.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// The timeouts, the drain time among them (shared: a reload changes them).
    pub timeouts: Arc<Timeouts>,
    /// Client connections open at once over all threads; beyond, new ones are closed at once.
    pub max_connections: u64,
    /// Who brings a backend marked down back.
    pub revival: Revival,
    /// Write a PROXY protocol header of this version to each backend before the client's bytes.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// The listener was passed (socket activation): on shutdown its queue is left to the socket
    /// the manager still holds, for the next process, rather than accepted and closed.
    pub keep_queue: bool,
}

pub(crate) struct Forwarder {
    /// The thread's number, for its counter of accepted connections.
    number: usize,
    poll: Poll,
    /// `None` once the thread stopped accepting (shutting down).
    listener: Option<TcpListener>,
    pool: Arc<Pool>,
    counters: Arc<Counters>,
    limits: Limits,
    proxies: Slab<Proxy>,
    scratch: Box<[u8]>,
    /// The listener may hold more than the last turn's budget took.
    accept_more: bool,
    /// Accepting paused for want of file descriptors, until then.
    accept_retry: Option<Instant>,
    /// When the last poll returned: the time connections are stamped with (idle and connect
    /// timeouts need no finer clock, and one reading per turn saves one per transfer).
    now: Instant,
    /// This thread's draws for random-two.
    draw: Draw,
}

/// What an event says about one of a connection's sockets.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    /// The event is the backend socket's (else the client's).
    backend: bool,
    readable: bool,
    writable: bool,
    /// The peer closed its sending side (EPOLLRDHUP), or the socket is in error.
    read_closed: bool,
    error: bool,
}

impl Readiness {
    fn of(backend: bool, event: &mio::event::Event) -> Self {
        Readiness {
            backend,
            readable: event.is_readable() || event.is_read_closed() || event.is_error(),
            writable: event.is_writable() || event.is_write_closed(),
            read_closed: event.is_read_closed() || event.is_error(),
            error: event.is_error(),
        }
    }
}

/// Which directions of a connection to work on.
#[derive(Debug, Clone, Copy)]
struct Moves {
    /// The client has sent something.
    up_read: bool,
    /// The backend can take more.
    up_write: bool,
    /// See [`transfer`], for reading the client.
    up_short_read_drains: bool,
    /// The backend has sent something.
    down_read: bool,
    /// The client can take more.
    down_write: bool,
    /// See [`transfer`], for reading the backend.
    down_short_read_drains: bool,
}

impl Moves {
    fn for_event(r: Readiness) -> Moves {
        Moves {
            up_read: !r.backend && r.readable,
            up_write: r.backend && r.writable,
            down_read: r.backend && r.readable,
            down_write: !r.backend && r.writable,
            up_short_read_drains: !r.read_closed,
            down_short_read_drains: !r.read_closed,
        }
    }
}

/// What happened to a connection in one step.
enum Step {
    Open,
    Close,
}

impl Forwarder {
    pub fn new(
        number: usize,
        listener: TcpListener,
        pool: Arc<Pool>,
        counters: Arc<Counters>,
        limits: Limits,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = listener;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Forwarder {
            number,
            poll,
            listener: Some(listener),
            pool,
            counters,
            limits,
            proxies: Slab::new(),
            scratch: vec![0; SCRATCH].into(),
            accept_more: true,
            accept_retry: None,
            now: Instant::now(),
            draw: Draw::from_os(),
        })
    }

    /// A waker for this thread's loop (shutdown uses it).
    pub fn waker(&self) -> io::Result<Arc<mio::Waker>> {
        Ok(Arc::new(mio::Waker::new(self.poll.registry(), WAKER)?))
    }

    /// Runs until `shutdown`; then stops accepting, lets the connections in flight finish for
    /// up to the drain time, and closes what is left. Returns how many it closed so (the drain
    /// time ran out on them), for the drain's last log line to say. `listening` is dropped
    /// once the listener is closed (or the thread ends), so that the balancer deregisters only
    /// when no thread accepts any more.
    pub fn run(mut self, shutdown: &Shutdown, listening: crossbeam_channel::Sender<()>) -> usize {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP;
        let mut drain_until: Option<Instant> = None;
        let mut listening = Some(listening);
        loop {
            if drain_until.is_none() && shutdown.is_requested() {
                // Take what the kernel queued for this listener, then close it: a closed
                // listener drops its queue. A passed one is not closed by our close (the manager
                // holds it): what waits in its queue is left for the next process.
                if !self.limits.keep_queue {
                    self.accept(usize::MAX);
                }
                self.listener = None;
                drop(listening.take());
                drain_until = Some(Instant::now() + self.limits.timeouts.drain());
            }
            if let Some(until) = drain_until {
                if self.proxies.is_empty() || Instant::now() >= until {
                    break;
                }
            }
            let now = Instant::now();
            let wake = [Some(next_sweep), self.accept_retry, drain_until].into_iter().flatten().min();
            let timeout = if self.accept_more && self.listener.is_some() && self.accept_retry.is_none() {
                Some(Duration::ZERO)
            } else if self.proxies.is_empty() && drain_until.is_none() && self.accept_retry.is_none() {
                None
            } else {
                wake.map(|at| at.saturating_duration_since(now))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("forwarding thread stopped: {e}");
                    break;
                }
            }
            self.now = Instant::now();
            for event in &events {
                match event.token() {
                    WAKER => {}
                    LISTENER => self.accept_more = true,
                    Token(token) => self.ready(token / 2, Readiness::of(token % 2 == 1, event)),
                }
            }
            let now = self.now;
            if self.accept_retry.is_some_and(|at| at <= now) {
                self.accept_retry = None;
                self.accept_more = true;
            }
            if self.accept_more && self.accept_retry.is_none() {
                self.accept(ACCEPT_BUDGET);
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
            }
        }
        let open: Vec<usize> = self.proxies.iter().map(|(i, _)| i).collect();
        let cut = open.len();
        for index in open {
            self.close(index);
        }
        cut
    }

    /// Accepts up to `budget` connections, closing those beyond the connection cap at once.
    fn accept(&mut self, budget: usize) {
        for _ in 0..budget {
            let Some(listener) = &self.listener else { return };
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_more = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if crate::net::is_out_of_descriptors(&e) => {
                    // The connections wait in the queue; no new readiness event would tell of
                    // them, so look again shortly.
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return;
                }
            };
            if self.counters.active.load(Relaxed) >= self.limits.max_connections {
                // Refused cleanly: closed at once, so the client sees the end of the stream
                // rather than a hang.
                self.counters.refused.fetch_add(1, Relaxed);
                continue;
            }
            self.counters.active.fetch_add(1, Relaxed);
            self.counters.total.fetch_add(1, Relaxed);
            if let Some(accepted) = self.counters.per_thread.get(self.number) {
                accepted.fetch_add(1, Relaxed);
            }
            self.adopt(stream);
        }
        self.accept_more = true;
    }

    /// Takes an accepted connection and starts its backend connect.
    fn adopt(&mut self, client: TcpStream) {
        let proxy = Proxy {
            client,
            backend: None,
            connecting: None,
            client_closed: false,
            tried: Vec::new(),
            up: Pipe::default(),
            // The client socket has TCP_NODELAY from the listener.
            down: Pipe { nagle: Nagle { wrote: false, off: true }, ..Pipe::default() },
            last_active: self.now,
        };
        let index = self.proxies.insert(proxy);
        let registered = match self.proxies.get_mut(index) {
            Some(p) => {
                self.poll.registry().register(&mut p.client, Token(2 * index), Interest::READABLE | Interest::WRITABLE)
            }
            None => return,
        };
        if registered.is_err() {
            self.close(index);
            return;
        }
        if let Step::Close = self.connect_next(index) {
            self.close(index);
        }
    }

    /// Starts a connect to the backend the policy picks among those this connection has not
    /// tried; after a failed one (a redispatch, counted), up to [`MAX_TRIES`] in all.
    fn connect_next(&mut self, index: usize) -> Step {
        let Some(p) = self.proxies.get_mut(index) else { return Step::Close };
        if let Some((mut stream, _)) = p.backend.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        loop {
            if p.tried.len() >= MAX_TRIES {
                self.counters.failed.fetch_add(1, Relaxed);
                return Step::Close;
            }
            let Some(backend) = self.pool.pick(&p.tried, &mut self.draw) else {
                self.counters.failed.fetch_add(1, Relaxed);
                return Step::Close;
            };
            if !p.tried.is_empty() {
                self.counters.redispatches.fetch_add(1, Relaxed);
            }
            p.tried.push(backend.addr);
            match TcpStream::connect(backend.addr) {
                Ok(mut stream) => {
                    let token = Token(2 * index + 1);
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        return Step::Close;
                    }
                    p.backend = Some((stream, backend));
                    p.connecting = Some(self.now);
                    return Step::Open;
                }
                // Out of file descriptors: this process's shortage, not the backend's fault.
                Err(e) if crate::net::is_out_of_descriptors(&e) => {
                    self.counters.failed.fetch_add(1, Relaxed);
                    return Step::Close;
                }
                Err(e) => {
                    if backend.mark_failed() {
                        log::warn!("backend {} marked down: connect failed: {e}", backend.addr);
                    }
                }
            }
        }
    }

    fn ready(&mut self, index: usize, readiness: Readiness) {
        let step = match self.proxies.get(index) {
            // While the backend connect is going, only the backend's events matter; what the
            // client sends meanwhile waits in its socket and is read once connected.
            Some(_) if !readiness.backend && self.proxies.get(index).is_some_and(|p| p.connecting.is_some()) => {
                if let Some(p) = self.proxies.get_mut(index) {
                    p.client_closed |= readiness.read_closed;
                }
                return;
            }
            Some(p) if p.connecting.is_some() => self.check_connect(index, readiness),
            // The client reset its connection after the backend's side had ended and been passed
            // on in full: nothing is left to deliver either way, and a read would only return
            // the error. (Clients that close with a reset, to stay out of TIME_WAIT, do this on
            // every connection.)
            Some(p) if !readiness.backend && readiness.error && p.down.shut && p.up.pending.is_empty() => Step::Close,
            Some(_) => {
                // Remembered for good: once a source's end-of-stream edge has come, no other
                // will, even if reading it had to wait (see `Pipe::source_closed`).
                if let Some(p) = self.proxies.get_mut(index) {
                    if readiness.read_closed {
                        let source = if readiness.backend { &mut p.down } else { &mut p.up };
                        source.source_closed = true;
                    }
                }
                self.relay(index, Moves::for_event(readiness))
            }
            None => return,
        };
        if let Step::Close = step {
            self.close(index);
        }
    }

    /// Sees whether a connect in progress has completed or failed.
    fn check_connect(&mut self, index: usize, readiness: Readiness) -> Step {
        let Some(p) = self.proxies.get_mut(index) else { return Step::Close };
        let Some((stream, backend)) = p.backend.as_ref() else { return Step::Close };
        // A writable event without an error flag means connected; only otherwise is the socket
        // asked what happened.
        let failed = readiness.error
            || (!readiness.writable || readiness.read_closed) && matches!(stream.take_error(), Ok(Some(_)) | Err(_));
        if failed {
            if backend.mark_failed() {
                log::warn!("backend {} marked down: connect failed", backend.addr);
            }
            return self.connect_next(index);
        }
        if !readiness.writable {
            return Step::Open; // still going
        }
        if self.limits.revival == Revival::Connect && backend.mark_up() {
            log::info!("backend {} up again: a connect succeeded", backend.addr);
        }
        backend.connected();
        p.connecting = None;
        if let Some(version) = self.limits.send_proxy {
            // The header goes first: bytes waiting for the backend are written before the
            // client is read (see `transfer`), so none of the client's can overtake it.
            let (Ok(client), Ok(local)) = (p.client.peer_addr(), p.client.local_addr()) else { return Step::Close };
            let mut pending = crate::proxy_protocol::header(version, client, local);
            // The client's first bytes (its request) usually wait already: they go out with the
            // header in one write, instead of a second one that would need Nagle's algorithm off.
            match std::io::Read::read(&mut p.client, &mut self.scratch) {
                Ok(0) => p.up.eof = true,
                Ok(n) => pending.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
            p.up.pending = pending;
            p.up.sent = 0;
        }
        // Read what the client sent meanwhile, and whatever the backend may have sent first.
        // Read the client at once, whether or not its event came yet: its first bytes (the
        // request) usually wait already, and sending them now saves a turn of the loop.
        p.up.source_closed |= p.client_closed;
        p.down.source_closed |= readiness.read_closed;
        let moves = Moves {
            up_read: true,
            up_write: true,
            up_short_read_drains: !p.client_closed,
            down_read: readiness.readable,
            down_write: true,
            down_short_read_drains: !readiness.read_closed,
        };
        self.relay(index, moves)
    }

    /// Moves what `moves` says may move, passes half-closes on, and says whether the
    /// connection is finished.
    fn relay(&mut self, index: usize, moves: Moves) -> Step {
        let Some(p) = self.proxies.get_mut(index) else { return Step::Close };
        let Some((backend_stream, backend)) = p.backend.as_mut() else { return Step::Close };
        let to_backend = if moves.up_read || moves.up_write {
            let drains = moves.up_short_read_drains && !p.up.source_closed;
            let done = p.down.shut;
            match transfer(&mut p.client, backend_stream, &mut p.up, &mut self.scratch, moves.up_read, drains, done) {
                Ok(n) => n,
                Err(_) => return Step::Close,
            }
        } else {
            0
        };
        let from_backend = if moves.down_read || moves.down_write {
            let drains = moves.down_short_read_drains && !p.down.source_closed;
            let done = p.up.shut;
            match transfer(backend_stream, &mut p.client, &mut p.down, &mut self.scratch, moves.down_read, drains, done)
            {
                Ok(n) => n,
                Err(_) => return Step::Close,
            }
        } else {
            0
        };
        if to_backend + from_backend > 0 {
            backend.transferred(to_backend, from_backend);
            p.last_active = self.now;
        }
        if p.up.shut && p.down.shut { Step::Close } else { Step::Open }
    }

    /// Retries connects that take too long and closes connections idle for too long.
    fn sweep(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut slow = Vec::new();
        let (connect, idle) = (self.limits.timeouts.connect(), self.limits.timeouts.idle());
        for (index, p) in self.proxies.iter() {
            match p.connecting {
                Some(since) if now.duration_since(since) >= connect => slow.push(index),
                Some(_) => {}
                None if now.duration_since(p.last_active) >= idle => expired.push(index),
                None => {}
            }
        }
        for index in slow {
            if let Some((_, backend)) = self.proxies.get(index).and_then(|p| p.backend.as_ref()) {
                if backend.mark_failed() {
                    log::warn!("backend {} marked down: no connect within {:?}", backend.addr, connect);
                }
            }
            if let Step::Close = self.connect_next(index) {
                self.close(index);
            }
        }
        for index in expired {
            self.close(index);
        }
    }

    /// Closes both sockets (closing a descriptor takes it out of the poll set as well); the
    /// lease, dropped with them, takes the connection off its backend's count in flight. The
    /// counts go down before the sockets close, so a client that saw the end of its connection
    /// sees it gone from `stats` too.
    fn close(&mut self, index: usize) {
        let Some(mut p) = self.proxies.try_remove(index) else { return };
        self.counters.active.fetch_sub(1, Relaxed);
        p.backend = None;
    }
}

#[cfg(test)]
mod tests;
