//! A forwarding thread: many client connections, each relayed to a backend, in one mio loop.
//!
//! Each proxied connection is a client socket and a backend socket, tokens `2i` and `2i + 1`
//! for slab index `i`. Bytes move through one scratch buffer per thread; only when a destination
//! cannot take them all does the remainder wait in a per-connection buffer, and reading from
//! that source stops until it drains (backpressure). Idle connections therefore hold no buffer.

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, fence};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::pool::{Backend, Pool};
use super::{Counters, WAKER};
use crate::shutdown::Shutdown;
use crate::slab::Slab;

/// Bytes moved per read.
const SCRATCH: usize = 64 * 1024;
/// How often connect and idle timeouts are checked.
const SWEEP: Duration = Duration::from_millis(100);

/// Timeouts of a forwarding thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub idle: Duration,
}

/// One direction of a connection.
#[derive(Debug, Default)]
struct Pipe {
    /// Bytes read from the source that the destination has not taken yet.
    pending: Vec<u8>,
    /// The source has closed its sending side.
    eof: bool,
    /// The destination's sending side has been shut down after `eof`.
    shut: bool,
}

struct Proxy {
    client: TcpStream,
    backend: Option<(TcpStream, Arc<Backend>)>,
    /// While the backend connect is in progress: when it started.
    connecting: Option<Instant>,
    /// The client signalled data while the connect was going.
    client_ready: bool,
    /// The client closed its sending side while the connect was going.
    client_closed: bool,
    tried: Vec<SocketAddr>,
    up: Pipe,
    down: Pipe,
    last_active: Instant,
}

/// How the acceptor hands connections to a forwarding thread: a channel, and a waker that is
/// used only while the thread sleeps in its poll (a busy thread looks at the channel after every
/// poll anyway), which saves a wake-up per connection under load.
pub(crate) struct Mailbox {
    pub sender: crossbeam_channel::Sender<std::net::TcpStream>,
    pub waker: Arc<mio::Waker>,
    pub sleeping: Arc<AtomicBool>,
}

impl Mailbox {
    /// Wakes the thread if it may be asleep with connections waiting. Called after posting.
    pub fn wake_if_sleeping(&self) {
        // Pairs with the fence in `Forwarder::run`: either this sees the thread asleep, or the
        // thread, having announced its sleep, sees the posted connection.
        fence(SeqCst);
        if self.sleeping.load(SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

pub(crate) struct Forwarder {
    pub poll: Poll,
    pub inbox: Receiver<std::net::TcpStream>,
    pub sleeping: Arc<AtomicBool>,
    pub pool: Arc<Pool>,
    pub counters: Arc<Counters>,
    pub timeouts: Timeouts,
    proxies: Slab<Proxy>,
    scratch: Box<[u8]>,
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
        poll: Poll,
        inbox: Receiver<std::net::TcpStream>,
        sleeping: Arc<AtomicBool>,
        pool: Arc<Pool>,
        counters: Arc<Counters>,
        timeouts: Timeouts,
    ) -> Self {
        Forwarder {
            poll,
            inbox,
            sleeping,
            pool,
            counters,
            timeouts,
            proxies: Slab::new(),
            scratch: vec![0; SCRATCH].into(),
        }
    }

    pub fn run(mut self, shutdown: &Shutdown) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP;
        while !shutdown.is_requested() {
            self.sleeping.store(true, SeqCst);
            fence(SeqCst);
            let timeout = if !self.inbox.is_empty() {
                Some(Duration::ZERO)
            } else if self.proxies.is_empty() {
                None
            } else {
                Some(next_sweep.saturating_duration_since(Instant::now()))
            };
            let polled = self.poll.poll(&mut events, timeout);
            self.sleeping.store(false, SeqCst);
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("forwarding thread stopped: {e}");
                    break;
                }
            }
            self.adopt();
            for event in &events {
                match event.token() {
                    WAKER => self.adopt(),
                    Token(token) => self.ready(token / 2, Readiness::of(token % 2 == 1, event)),
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
            }
        }
        let open: Vec<usize> = self.proxies.iter().map(|(i, _)| i).collect();
        for index in open {
            self.close(index);
        }
    }

    /// Takes the connections the acceptor handed over and starts their backend connects.
    fn adopt(&mut self) {
        while let Ok(stream) = self.inbox.try_recv() {
            let client = TcpStream::from_std(stream);
            let proxy = Proxy {
                client,
                backend: None,
                connecting: None,
                client_ready: false,
                client_closed: false,
                tried: Vec::new(),
                up: Pipe::default(),
                down: Pipe::default(),
                last_active: Instant::now(),
            };
            let index = self.proxies.insert(proxy);
            let registered = match self.proxies.get_mut(index) {
                Some(p) => self.poll.registry().register(
                    &mut p.client,
                    Token(2 * index),
                    Interest::READABLE | Interest::WRITABLE,
                ),
                None => continue,
            };
            if registered.is_err() {
                self.close(index);
                continue;
            }
            if let Step::Close = self.connect_next(index) {
                self.close(index);
            }
        }
    }

    /// Starts a connect to the next backend in rotation that this connection has not tried.
    fn connect_next(&mut self, index: usize) -> Step {
        let Some(p) = self.proxies.get_mut(index) else { return Step::Close };
        if let Some((mut stream, _)) = p.backend.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        loop {
            let Some(backend) = self.pool.pick(&p.tried) else {
                self.counters.failed.fetch_add(1, Relaxed);
                return Step::Close;
            };
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
                    p.connecting = Some(Instant::now());
                    return Step::Open;
                }
                // Out of file descriptors: this process's shortage, not the backend's fault.
                Err(e) if crate::net::is_out_of_descriptors(&e) => {
                    self.counters.failed.fetch_add(1, Relaxed);
                    return Step::Close;
                }
                Err(_) => backend.mark_failed(),
            }
        }
    }

    fn ready(&mut self, index: usize, readiness: Readiness) {
        let step = match self.proxies.get(index) {
            // While the backend connect is going, only the backend's events matter; what the
            // client sends meanwhile waits in its socket and is read once connected.
            Some(_) if !readiness.backend && self.proxies.get(index).is_some_and(|p| p.connecting.is_some()) => {
                if let Some(p) = self.proxies.get_mut(index) {
                    p.client_ready |= readiness.readable;
                    p.client_closed |= readiness.read_closed;
                }
                return;
            }
            Some(p) if p.connecting.is_some() => self.check_connect(index, readiness),
            Some(_) => self.relay(index, Moves::for_event(readiness)),
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
            backend.mark_failed();
            return self.connect_next(index);
        }
        if !readiness.writable {
            return Step::Open; // still going
        }
        backend.mark_up();
        backend.opened();
        let _ = stream.set_nodelay(true);
        p.connecting = None;
        // Read what the client sent meanwhile, and whatever the backend may have sent first.
        let moves = Moves {
            up_read: p.client_ready,
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
            let drains = moves.up_short_read_drains;
            match transfer(&mut p.client, backend_stream, &mut p.up, &mut self.scratch, moves.up_read, drains) {
                Ok(n) => n,
                Err(_) => return Step::Close,
            }
        } else {
            0
        };
        let from_backend = if moves.down_read || moves.down_write {
            let drains = moves.down_short_read_drains;
            match transfer(backend_stream, &mut p.client, &mut p.down, &mut self.scratch, moves.down_read, drains) {
                Ok(n) => n,
                Err(_) => return Step::Close,
            }
        } else {
            0
        };
        if to_backend + from_backend > 0 {
            backend.transferred(to_backend, from_backend);
            p.last_active = Instant::now();
        }
        if p.up.shut && p.down.shut { Step::Close } else { Step::Open }
    }

    /// Retries connects that take too long and closes connections idle for too long.
    fn sweep(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut slow = Vec::new();
        for (index, p) in self.proxies.iter() {
            match p.connecting {
                Some(since) if now.duration_since(since) >= self.timeouts.connect => slow.push(index),
                Some(_) => {}
                None if now.duration_since(p.last_active) >= self.timeouts.idle => expired.push(index),
                None => {}
            }
        }
        for index in slow {
            if let Some((_, backend)) = self.proxies.get(index).and_then(|p| p.backend.as_ref()) {
                backend.mark_failed();
            }
            if let Step::Close = self.connect_next(index) {
                self.close(index);
            }
        }
        for index in expired {
            self.close(index);
        }
    }

    /// Closes both sockets; closing a descriptor takes it out of the poll set as well.
    fn close(&mut self, index: usize) {
        let Some(mut p) = self.proxies.remove(index) else { return };
        if let Some((_, backend)) = p.backend.take() {
            if p.connecting.is_none() {
                backend.closed();
            }
        }
        self.counters.active.fetch_sub(1, Relaxed);
    }
}

/// Moves bytes from `src` to `dst` until either would block, passing `src`'s end of stream on
/// as a shutdown of `dst`'s sending side. Returns how many bytes reached `dst`.
///
/// `src` is read when it signalled data (`readable`) or when bytes held back for `dst` have just
/// gone out (reading had stopped for them). A read shorter than the buffer is taken to have
/// emptied the socket when `short_read_drains`: on Linux a new arrival raises a new edge, so the
/// read that would only say "would block" is saved. When the peer has also closed, reading goes
/// on to see the end of the stream, for which no further event would come.
fn transfer(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    pipe: &mut Pipe,
    scratch: &mut [u8],
    readable: bool,
    short_read_drains: bool,
) -> io::Result<u64> {
    let mut moved = 0u64;
    let held_back = !pipe.pending.is_empty();
    // First what is waiting from before; until it is gone, the source is not read.
    while !pipe.pending.is_empty() {
        match dst.write(&pipe.pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pipe.pending.drain(..n);
                moved += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Give the memory back: an idle connection holds no buffer.
    if held_back {
        pipe.pending = Vec::new();
    }
    let mut read_on = readable || held_back;
    while read_on && !pipe.eof {
        let n = match src.read(scratch) {
            Ok(0) => {
                pipe.eof = true;
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut written = 0;
        while written < n {
            match dst.write(&scratch[written..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => written += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        moved += written as u64;
        if written < n {
            pipe.pending.extend_from_slice(&scratch[written..n]);
            return Ok(moved);
        }
        read_on = !(short_read_drains && n < scratch.len());
    }
    if pipe.eof && !pipe.shut {
        match dst.shutdown(Direction::Write) {
            Ok(()) => pipe.shut = true,
            // The other side is gone already: nothing left to tell it.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => pipe.shut = true,
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}
