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

use crate::multicast::MulticastConfig;
use crate::protocol::{Multicast, binary};
use crate::registry::{self, Event, EventKind, Registry};
use crate::shutdown::Shutdown;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
const GROUP: Token = Token(2);

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
    /// Log registrations, deregistrations and expiries (through [`log`], at info).
    pub log_changes: bool,
    /// Listen for announcements and discovery on this multicast group (`None`: no multicast).
    pub multicast: Option<MulticastConfig>,
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
            multicast: None,
        }
    }
}

/// The broker's part in the multicast group.
#[derive(Debug)]
struct Group {
    socket: UdpSocket,
    config: MulticastConfig,
    /// The id on the broker's own messages, so it can tell them from others'.
    origin: u64,
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
    group: Option<Group>,
}

impl Broker {
    /// Binds the socket. The broker answers nothing until [`run`](Broker::run) is called.
    pub fn bind(config: Config) -> io::Result<Broker> {
        let poll = Poll::new()?;
        let mut socket = crate::net::bind_udp(config.listen)?;
        poll.registry().register(&mut socket, SOCKET, Interest::READABLE)?;
        let local_addr = socket.local_addr()?;
        let group = match config.multicast {
            Some(multicast) => {
                let mut socket = crate::multicast::receiver(&multicast).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot join multicast group {} on {}: {e}", multicast.group, multicast.interface),
                    )
                })?;
                poll.registry().register(&mut socket, GROUP, Interest::READABLE)?;
                Some(Group { socket, config: multicast, origin: crate::multicast::origin() })
            }
            None => None,
        };
        let registry = Registry::new(config.registry, Uuid::new_v4);
        Ok(Broker {
            poll,
            socket,
            local_addr,
            handler: Handler::new(registry, config.max_datagram),
            buf: vec![0; config.max_datagram.max(crate::protocol::MAX_REPLY_LEN) + 1],
            log_changes: config.log_changes,
            group,
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
        self.say_hello();
        let mut events = Events::with_capacity(64);
        let (mut backlog, mut group_backlog) = (false, false);
        while !shutdown.is_requested() {
            let timeout = if backlog || group_backlog {
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
            if group_backlog || events.iter().any(|event| event.token() == GROUP) {
                group_backlog = self.drain_group();
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
                    log::warn!("receive failed: {e}");
                    return true;
                }
            }
        }
        true
    }
}

impl Broker {
    /// Tells the group that this broker has started (best effort: a lost hello only means
    /// waiting clients find the broker at their next discovery).
    fn say_hello(&self) {
        let Some(group) = &self.group else { return };
        let mut datagram = Vec::new();
        let hello = Multicast::BrokerHello { origin: group.origin, addr: self.local_addr };
        binary::encode(0, &hello, &mut datagram);
        if let Ok(sender) = crate::multicast::sender(&group.config) {
            let _ = sender.send_to(&datagram, group.config.group);
        }
    }

    /// Handles up to [`BUDGET`] datagrams from the group; returns whether more may be waiting.
    fn drain_group(&mut self) -> bool {
        let Some(group) = &self.group else { return false };
        for _ in 0..BUDGET {
            match group.socket.recv_from(&mut self.buf) {
                Ok((len, source)) => {
                    let reply = self.handler.handle_multicast(
                        Instant::now(),
                        source,
                        &self.buf[..len],
                        group.origin,
                        self.local_addr,
                    );
                    // Discovery is answered from the unicast socket, so the reply's source is
                    // the broker's address.
                    if let Some(reply) = reply {
                        if self.socket.send_to(reply, source).is_err() {
                            self.handler.note_send_failure();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("receive on the multicast group failed: {e}");
                    return true;
                }
            }
        }
        true
    }
}

/// Logs a change to the table at info (refreshes, one per heartbeat, only at trace).
fn log_change(event: Event) {
    let what = match event.kind {
        EventKind::Registered => "registered",
        EventKind::Refreshed => {
            log::trace!("refreshed {} {} id={}", event.service, event.endpoint, event.id);
            return;
        }
        EventKind::Expired => "expired",
        EventKind::Deregistered => "deregistered",
    };
    log::info!("{what} {} {} id={}", event.service, event.endpoint, event.id);
}
