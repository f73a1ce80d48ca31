//! The broker: one UDP socket, one thread, one mio event loop.
//!
//! The loop drains the socket until it would block (readiness is edge-triggered), hands each
//! datagram to the [`Handler`] and sends its reply, and otherwise sleeps until the registry's
//! next expiry or a [`Shutdown`] wakes it. All the protocol logic lives in [`Handler`] and the
//! [`Registry`]; this module only moves bytes.
//!
//! ```no_run
//! use makler::broker::{Broker, Config};
//! use makler::shutdown::Shutdown;
//!
//! let broker = Broker::bind(Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() })?;
//! println!("listening udp={}", broker.local_addr());
//! let shutdown = Shutdown::new();
//! shutdown.on_signals()?;
//! broker.run(&shutdown)?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod handler;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use uuid::Uuid;

pub use handler::{DEFAULT_MAX_DATAGRAM, Handler};

use crate::registry::{self, Event, EventKind, Registry};
use crate::shutdown::Shutdown;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// How many datagrams one turn of the loop handles before it looks at timers and the shutdown
/// flag again, so that a flood cannot stall them.
const BUDGET: usize = 1024;

/// The broker's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// TTL and limits of the table.
    pub registry: registry::Config,
    /// The longest request datagram accepted, in bytes.
    pub max_datagram: usize,
    /// Log registrations, deregistrations and expiries to stderr.
    pub log_changes: bool,
}

/// The address a broker listens on unless told otherwise: loopback, so nothing outside the host
/// can reach it by accident.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7000);

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            registry: registry::Config::default(),
            max_datagram: DEFAULT_MAX_DATAGRAM,
            log_changes: false,
        }
    }
}

/// A bound broker, ready to [`run`](Broker::run).
#[derive(Debug)]
pub struct Broker {
    poll: Poll,
    socket: UdpSocket,
    local_addr: SocketAddr,
    handler: Handler,
    buf: Vec<u8>,
    log_changes: bool,
}

impl Broker {
    /// Binds the socket. The broker answers nothing until [`run`](Broker::run) is called.
    pub fn bind(config: Config) -> io::Result<Broker> {
        let poll = Poll::new()?;
        let mut socket = crate::net::bind_udp(config.listen)?;
        poll.registry().register(&mut socket, SOCKET, Interest::READABLE)?;
        let local_addr = socket.local_addr()?;
        let registry = Registry::new(config.registry, Uuid::new_v4);
        Ok(Broker {
            poll,
            socket,
            local_addr,
            handler: Handler::new(registry, config.max_datagram),
            buf: vec![0; config.max_datagram + 1],
            log_changes: config.log_changes,
        })
    }

    /// The address the socket is really bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The datagram handler, to adjust it before running (the balancer sets its `stats` reply).
    pub fn handler_mut(&mut self) -> &mut Handler {
        &mut self.handler
    }

    /// Answers datagrams until `shutdown` is requested, logging changes to the table when the
    /// configuration says so.
    pub fn run(self, shutdown: &Shutdown) -> io::Result<()> {
        if self.log_changes { self.serve(shutdown, Some(&mut log_change)) } else { self.serve(shutdown, None) }
    }

    /// Answers datagrams until `shutdown` is requested, and hands every change to the table
    /// (registered, refreshed, expired, deregistered) to `on_change`, in order, on the loop's
    /// thread. `on_change` must not block: the loop waits for it.
    pub fn run_with(self, shutdown: &Shutdown, mut on_change: impl FnMut(Event)) -> io::Result<()> {
        self.serve(shutdown, Some(&mut on_change))
    }

    fn serve(mut self, shutdown: &Shutdown, mut on_change: Option<&mut dyn FnMut(Event)>) -> io::Result<()> {
        self.handler.registry_mut().record_events(on_change.is_some());
        shutdown.watch(Arc::new(Waker::new(self.poll.registry(), WAKER)?))?;
        let mut events = Events::with_capacity(64);
        let mut backlog = false;
        while !shutdown.is_requested() {
            let timeout = if backlog {
                Some(Duration::ZERO)
            } else {
                self.handler.registry().poll_timeout().map(|at| at.saturating_duration_since(Instant::now()))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if backlog || events.iter().any(|event| event.token() == SOCKET) {
                backlog = self.drain();
            }
            self.handler.registry_mut().handle_timeout(Instant::now());
            if let Some(on_change) = on_change.as_mut() {
                while let Some(event) = self.handler.registry_mut().poll_event() {
                    on_change(event);
                }
            }
        }
        Ok(())
    }

    /// Answers up to [`BUDGET`] datagrams; returns whether more may be waiting.
    fn drain(&mut self) -> bool {
        for _ in 0..BUDGET {
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, source)) => {
                    let reply = self.handler.handle(Instant::now(), source, &self.buf[..len]);
                    if !reply.is_empty() && self.socket.send_to(reply, source).is_err() {
                        // A full send buffer or an unroutable source: the client retransmits.
                        self.handler.note_send_failure();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("makler-broker: receive failed: {e}");
                    return true;
                }
            }
        }
        true
    }
}

/// Logs a change to the table on stderr (refreshes are too many to log).
fn log_change(event: Event) {
    let what = match event.kind {
        EventKind::Registered => "registered",
        EventKind::Refreshed => return,
        EventKind::Expired => "expired",
        EventKind::Deregistered => "deregistered",
    };
    eprintln!("makler-broker: {what} {} {} id={}", event.service, event.endpoint, event.id);
}
