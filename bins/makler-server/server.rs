//! The server loop of `makler-server`: an acceptor thread hands each connection over a
//! channel to a fixed pool of workers, each multiplexing its connections in its own mio loop.
//!
//! The fixed pool makes simulated service time (`work`) behave like real work: a worker busy
//! with one request serves no other, so a server's capacity is `workers / work` requests per
//! second, and adding servers adds capacity, which is what the balancer benchmark measures.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

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
    /// Every connection must open with a PROXY protocol header (v1 or v2) within this time;
    /// one without is closed (`--accept-proxy`). `None`: no header is expected.
    pub accept_proxy: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            service: Service::Echo,
            workers: 2,
            work: Duration::ZERO,
            max_connections: 20_000,
            accept_proxy: None,
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
    refused: Arc<AtomicU64>,
}

impl Server {
    /// Binds the listening socket.
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = makler::net::bind_tcp(config.listen)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let local_addr = listener.local_addr()?;
        Ok(Server { poll, listener, local_addr, config, refused: Arc::new(AtomicU64::new(0)) })
    }

    /// Connections closed for want of a valid PROXY protocol header (with `accept_proxy`).
    #[cfg(test)]
    pub fn refused(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.refused)
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
                accept_proxy: self.config.accept_proxy,
                awaiting_header: 0,
                refused: Arc::clone(&self.refused),
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
    /// With `--accept-proxy`, until the PROXY header has been read: when the connection is
    /// closed if it has not.
    header_until: Option<Instant>,
}

struct Worker {
    poll: Poll,
    inbox: Receiver<TcpStream>,
    connections: Slab<Connection>,
    service: Service,
    work: Duration,
    served_by: SocketAddr,
    open: Arc<AtomicUsize>,
    /// How long a new connection has to send its PROXY header; `None`: none is expected.
    accept_proxy: Option<Duration>,
    /// Connections whose header has not come yet: while there are any, the loop wakes to close
    /// those past their time.
    awaiting_header: usize,
    /// Connections refused for want of a header, over all workers.
    refused: Arc<AtomicU64>,
}

/// How often a worker with connections awaiting their PROXY header looks for expired ones.
const HEADER_SWEEP: Duration = Duration::from_millis(100);

impl Worker {
    fn run(mut self, shutdown: &Shutdown) {
        let mut events = Events::with_capacity(256);
        while !shutdown.is_requested() {
            let timeout = (self.awaiting_header > 0).then_some(HEADER_SWEEP);
            match self.poll.poll(&mut events, timeout) {
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
            if self.awaiting_header > 0 {
                self.expire_headers(Instant::now());
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
                header_until: self.accept_proxy.map(|limit| Instant::now() + limit),
            };
            self.awaiting_header += usize::from(connection.header_until.is_some());
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
            if !c.close && c.header_until.is_some() {
                match makler::proxy_protocol::decode(&c.input) {
                    Ok(Some(header)) => {
                        c.input.drain(..header.len);
                        c.header_until = None;
                        self.awaiting_header -= 1;
                        // LOCAL (a proxy's own check) and UNKNOWN carry no client: the
                        // connection's own peer is the client then, as the specification says.
                        if let Some(client) = header.source.or_else(|| c.stream.peer_addr().ok()) {
                            c.session.set_client(client);
                        }
                    }
                    Ok(None) if !eof => {}
                    // A connect and close with nothing sent (a TCP health check) is no refusal.
                    Ok(None) if c.input.is_empty() => c.close = true,
                    Ok(None) => {
                        refuse(&self.refused, &c.stream, &makler::proxy_protocol::Invalid::Missing);
                        c.close = true;
                    }
                    Err(why) => {
                        refuse(&self.refused, &c.stream, &why);
                        c.close = true;
                    }
                }
            }
            if !c.close && c.header_until.is_none() {
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

    /// Closes the connections whose PROXY header is late.
    fn expire_headers(&mut self, now: Instant) {
        let late: Vec<usize> =
            self.connections.iter().filter(|(_, c)| c.header_until.is_some_and(|t| t <= now)).map(|(i, _)| i).collect();
        for index in late {
            if let Some(c) = self.connections.get(index) {
                refuse(&self.refused, &c.stream, &"no PROXY protocol header in time");
            }
            self.close(index);
        }
    }

    fn close(&mut self, index: usize) {
        if let Some(mut c) = self.connections.try_remove(index) {
            self.awaiting_header -= usize::from(c.header_until.is_some());
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counts a connection refused for want of a PROXY header and says so: at the first refusal and
/// then at every power of two, so that a flood of them cannot flood the log.
fn refuse(refused: &AtomicU64, stream: &TcpStream, why: &dyn std::fmt::Display) {
    let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
    let peer = stream.peer_addr().map_or_else(|_| "?".to_owned(), |p| p.to_string());
    if n.is_power_of_two() {
        log::warn!("refused a connection from {peer}: {why} ({n} refused so far)");
    } else {
        log::debug!("refused a connection from {peer}: {why} ({n} refused so far)");
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

    /// Serves `config` behind a PROXY protocol header until dropped.
    fn proxied(service: Service, timeout: Duration) -> (SocketAddr, Arc<AtomicU64>, Shutdown) {
        let config = Config { service, accept_proxy: Some(timeout), ..Config::default() };
        let server = Server::bind(config).unwrap();
        let (addr, refused) = (server.local_addr(), server.refused());
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        std::thread::spawn(move || server.run(&stop));
        (addr, refused, shutdown)
    }

    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(bytes).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn the_http_answer_names_the_client_of_the_proxy_header() {
        let (addr, refused, shutdown) = proxied(Service::Http, Duration::from_secs(5));
        let request = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        let client = "203.0.113.9:40123".parse().unwrap();
        for version in [makler::proxy_protocol::Version::V1, makler::proxy_protocol::Version::V2] {
            let mut bytes = makler::proxy_protocol::header(version, client, addr);
            bytes.extend_from_slice(request);
            let answer = exchange(addr, &bytes);
            assert!(answer.ends_with(&format!("served by {addr} for client 203.0.113.9:40123\n")), "{answer:?}");
        }
        // LOCAL: the connection's own peer is the client.
        let mut local = makler::proxy_protocol::V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        local.extend_from_slice(request);
        assert!(exchange(addr, &local).contains("for client 127.0.0.1:"));
        assert_eq!(refused.load(Ordering::Relaxed), 0);
        shutdown.request();
    }

    #[test]
    fn a_connection_without_a_header_is_closed_unanswered_and_counted() {
        let (addr, refused, shutdown) = proxied(Service::Echo, Duration::from_secs(5));
        assert_eq!(exchange(addr, b"hello\n"), "");
        assert_eq!(exchange(addr, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\nhello\n"), "");
        let mut huge = makler::proxy_protocol::V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(exchange(addr, &huge), "", "refused on its declared length");
        assert_eq!(refused.load(Ordering::Relaxed), 3);
        // A connect with nothing sent (a TCP health check) is no refusal.
        drop(std::net::TcpStream::connect(addr).unwrap());
        assert_eq!(exchange(addr, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nhello\n"), "hello\n");
        assert_eq!(refused.load(Ordering::Relaxed), 3);
        shutdown.request();
    }

    #[test]
    fn a_slow_header_is_closed_at_its_deadline_while_others_are_served() {
        let (addr, refused, shutdown) = proxied(Service::Echo, Duration::from_millis(300));
        let started = Instant::now();
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.write_all(b"PROXY TCP4 1.2.3.4").unwrap();
        // Meanwhile another connection is served at once.
        assert_eq!(exchange(addr, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nfast\n"), "fast\n");
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        use std::io::Read;
        let _ = slow.read_to_end(&mut rest);
        assert!(rest.is_empty());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
        assert_eq!(refused.load(Ordering::Relaxed), 1);
        shutdown.request();
    }
}
