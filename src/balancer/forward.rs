//! A forwarding thread: many client connections, each relayed to a backend, in one mio loop.
//!
//! Each proxied connection is a client socket and a backend socket, tokens `2i` and `2i + 1`
//! for slab index `i`. Bytes move through one scratch buffer per thread; only when a destination
//! cannot take them all does the remainder wait in a per-connection buffer, and reading from
//! that source stops until it drains (backpressure). Idle connections therefore hold no buffer.

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
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

impl Pipe {
    fn done(&self) -> bool {
        self.shut
    }
}

struct Proxy {
    client: TcpStream,
    backend: Option<(TcpStream, Arc<Backend>)>,
    /// While the backend connect is in progress: when it started.
    connecting: Option<Instant>,
    tried: Vec<SocketAddr>,
    up: Pipe,
    down: Pipe,
    last_active: Instant,
}

pub(crate) struct Forwarder {
    pub poll: Poll,
    pub inbox: Receiver<std::net::TcpStream>,
    pub pool: Arc<Pool>,
    pub counters: Arc<Counters>,
    pub timeouts: Timeouts,
    proxies: Slab<Proxy>,
    scratch: Box<[u8]>,
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
        pool: Arc<Pool>,
        counters: Arc<Counters>,
        timeouts: Timeouts,
    ) -> Self {
        Forwarder { poll, inbox, pool, counters, timeouts, proxies: Slab::new(), scratch: vec![0; SCRATCH].into() }
    }

    pub fn run(mut self, shutdown: &Shutdown) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP;
        while !shutdown.is_requested() {
            let timeout =
                if self.proxies.is_empty() { None } else { Some(next_sweep.saturating_duration_since(Instant::now())) };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("makler-balancer: forwarding thread stopped: {e}");
                    break;
                }
            }
            for event in &events {
                match event.token() {
                    WAKER => self.adopt(),
                    Token(token) => self.ready(token / 2),
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
                Err(_) => backend.mark_failed(),
            }
        }
    }

    fn ready(&mut self, index: usize) {
        let step = match self.proxies.get(index) {
            Some(p) if p.connecting.is_some() => self.check_connect(index),
            Some(_) => self.relay(index),
            None => return,
        };
        if let Step::Close = step {
            self.close(index);
        }
    }

    /// Sees whether a connect in progress has completed, failed, or is still going.
    fn check_connect(&mut self, index: usize) -> Step {
        let Some(p) = self.proxies.get_mut(index) else { return Step::Close };
        let Some((stream, backend)) = p.backend.as_ref() else { return Step::Close };
        let failed = match stream.take_error() {
            Ok(Some(_)) | Err(_) => true,
            Ok(None) => match stream.peer_addr() {
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Step::Open, // still going
                Err(_) => true,
            },
        };
        if failed {
            backend.mark_failed();
            return self.connect_next(index);
        }
        backend.mark_up();
        backend.opened();
        let _ = stream.set_nodelay(true);
        p.connecting = None;
        self.relay(index)
    }

    /// Moves what can be moved in both directions, passes half-closes on, and says whether
    /// the connection is finished.
    fn relay(&mut self, index: usize) -> Step {
        let Some(p) = self.proxies.get_mut(index) else { return Step::Close };
        let Some((backend_stream, backend)) = p.backend.as_mut() else { return Step::Close };
        let to_backend = match transfer(&mut p.client, backend_stream, &mut p.up, &mut self.scratch) {
            Ok(n) => n,
            Err(_) => return Step::Close,
        };
        let from_backend = match transfer(backend_stream, &mut p.client, &mut p.down, &mut self.scratch) {
            Ok(n) => n,
            Err(_) => return Step::Close,
        };
        if to_backend + from_backend > 0 {
            backend.transferred(to_backend, from_backend);
            p.last_active = Instant::now();
        }
        if p.up.done() && p.down.done() { Step::Close } else { Step::Open }
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
            self.counters.idle_closed.fetch_add(1, Relaxed);
            self.close(index);
        }
    }

    fn close(&mut self, index: usize) {
        let Some(mut p) = self.proxies.remove(index) else { return };
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut p.client);
        if let Some((mut stream, backend)) = p.backend.take() {
            let _ = registry.deregister(&mut stream);
            if p.connecting.is_none() {
                backend.closed();
            }
        }
        self.counters.active.fetch_sub(1, Relaxed);
    }
}

/// Moves bytes from `src` to `dst` until either would block, passing `src`'s end of stream on
/// as a shutdown of `dst`'s sending side. Returns how many bytes reached `dst`.
fn transfer(src: &mut TcpStream, dst: &mut TcpStream, pipe: &mut Pipe, scratch: &mut [u8]) -> io::Result<u64> {
    let mut moved = 0u64;
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
    pipe.pending = Vec::new();
    while !pipe.eof {
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
