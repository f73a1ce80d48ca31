//! The server loop of `makler-server`: an acceptor thread hands each connection over a
//! channel to a fixed pool of workers, each multiplexing its connections in its own mio loop.
//!
//! The fixed pool makes simulated service time (`work`) behave like real work: a worker busy
//! with one request serves no other, so a server's capacity is `workers / work` requests per
//! second, and adding servers adds capacity, which is what the balancer benchmark measures.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use makler::shutdown::Shutdown;
use slab::Slab;

use crate::session::{MAX_BODY, MAX_LINE, Service, Session};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

/// A server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The TCP address to listen on.
    pub listen: SocketAddr,
    /// What to serve.
    pub service: Service,
    /// Worker threads.
    pub workers: usize,
    /// Simulated service time per request (the worker is busy for this long).
    pub work: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            service: Service::Echo,
            workers: 2,
            work: Duration::ZERO,
            max_connections: 20_000,
        }
    }
}

/// A bound server, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
}

impl Server {
    /// Binds the listening socket.
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = makler::net::bind_tcp(config.listen)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let local_addr = listener.local_addr()?;
        Ok(Server { poll, listener, local_addr, config })
    }

    /// The address really bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is requested; then closes every connection.
    pub fn run(mut self, shutdown: &Shutdown) -> io::Result<()> {
        shutdown.watch(Arc::new(Waker::new(self.poll.registry(), WAKER)?))?;
        let open = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for n in 0..self.config.workers.max(1) {
            let (tx, rx) = crossbeam_channel::unbounded();
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            shutdown.watch(Arc::clone(&waker))?;
            let worker = Worker {
                poll,
                inbox: rx,
                connections: Slab::new(),
                service: self.config.service,
                work: self.config.work,
                served_by: self.local_addr,
                open: Arc::clone(&open),
            };
            let stop = shutdown.clone();
            let thread = std::thread::Builder::new().name(format!("server-{n}")).spawn(move || worker.run(&stop))?;
            workers.push((tx, waker, thread));
        }

        let mut events = Events::with_capacity(64);
        let mut next = 0;
        let mut retry_accept = None;
        while !shutdown.is_requested() {
            match self.poll.poll(&mut events, retry_accept.take()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            retry_accept = makler::net::accept_all(&self.listener, "makler-server", |stream| {
                if open.load(Ordering::Relaxed) >= self.config.max_connections {
                    return; // dropped: closed at once
                }
                open.fetch_add(1, Ordering::Relaxed);
                let (tx, waker, _) = &workers[next % workers.len()];
                next += 1;
                if tx.send(stream).is_ok() {
                    let _ = waker.wake();
                }
            });
        }
        for (_, _, thread) in workers {
            let _ = thread.join();
        }
        Ok(())
    }
}

struct Connection {
    stream: TcpStream,
    session: Session,
    input: Vec<u8>,
    output: Vec<u8>,
    close: bool,
}

struct Worker {
    poll: Poll,
    inbox: Receiver<TcpStream>,
    connections: Slab<Connection>,
    service: Service,
    work: Duration,
    served_by: SocketAddr,
    open: Arc<AtomicUsize>,
}

impl Worker {
    fn run(mut self, shutdown: &Shutdown) {
        let mut events = Events::with_capacity(256);
        while !shutdown.is_requested() {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("worker stopped: {e}");
                    break;
                }
            }
            for event in &events {
                match event.token() {
                    WAKER => self.adopt(),
                    Token(index) => self.pump(index),
                }
            }
        }
        self.open.fetch_sub(self.connections.len(), Ordering::Relaxed);
    }

    fn adopt(&mut self) {
        while let Ok(stream) = self.inbox.try_recv() {
            let connection = Connection {
                stream,
                session: Session::new(self.service, self.served_by),
                input: Vec::new(),
                output: Vec::new(),
                close: false,
            };
            let index = self.connections.insert(connection);
            let registered = self.connections.get_mut(index).map(|c| {
                self.poll.registry().register(&mut c.stream, Token(index), Interest::READABLE | Interest::WRITABLE)
            });
            if !matches!(registered, Some(Ok(()))) {
                self.close(index);
            }
        }
    }

    /// Reads what is there, answers it, writes what can be written; again while reading stopped
    /// only because the input buffer was full (readiness is edge-triggered: no new event comes).
    fn pump(&mut self, index: usize) {
        let Some(c) = self.connections.get_mut(index) else { return };
        let mut buf = [0u8; 16 * 1024];
        loop {
            let (mut eof, mut full) = (false, false);
            while !c.close {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        c.input.extend_from_slice(&buf[..n]);
                        if c.input.len() > MAX_LINE + MAX_BODY {
                            full = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.close = true;
                        c.output.clear();
                    }
                }
            }
            if !c.close {
                let done = c.session.process(&mut c.input, &mut c.output, eof, SystemTime::now());
                if !self.work.is_zero() && done.requests > 0 {
                    std::thread::sleep(self.work.saturating_mul(done.requests.try_into().unwrap_or(u32::MAX)));
                }
                c.close = done.close || eof;
            }
            while !c.output.is_empty() {
                match c.stream.write(&c.output) {
                    Ok(n) => {
                        c.output.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.output.clear();
                        c.close = true;
                    }
                }
            }
            if !full || c.close {
                break;
            }
        }
        if c.close && c.output.is_empty() {
            self.close(index);
        }
    }

    fn close(&mut self, index: usize) {
        if let Some(mut c) = self.connections.try_remove(index) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};

    use super::*;

    #[test]
    fn serves_until_stopped() {
        let server = Server::bind(Config { service: Service::Upper, ..Config::default() }).unwrap();
        let addr = server.local_addr();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || server.run(&stop));

        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(b"hello\n").unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        assert_eq!(line, "HELLO\n");
        shutdown.request();
        thread.join().unwrap().unwrap();
    }
}
