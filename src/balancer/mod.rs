//! The balancer: a TCP load balancer whose backends register with it as they would with a
//! broker, and which registers itself at the broker on their behalf.
//!
//! ```text
//!                 control (UDP): register/heartbeat/deregister/stats
//!   backends ───▶ ┌───────────────────────────────────────────────┐
//!                 │ control thread: broker::Broker + Registry      │──▶ Pool (backends, atomic
//!                 │   changes ─▶ pool; first backend ─▶ registers  │    round-robin index)
//!                 │   itself at the broker, last gone ─▶ deregisters│        ▲      ▲
//!                 └───────────────────────────────────────────────┘        │      │
//!   clients ──TCP──▶ acceptor ──crossbeam channel──▶ forwarding threads ───┘   health thread
//!                                                   (one mio loop each)         (TCP probes)
//! ```
//!
//! - The control port is a [`Broker`]: the same socket handling, [`Handler`](crate::broker::Handler)
//!   and [`Registry`](crate::registry::Registry), with the TTL rules of a broker. Its table's
//!   changes feed the [`Pool`]; `stats` answers with the balancer's counters.
//! - The acceptor hands each connection to the forwarding threads in turn; a thread picks a
//!   backend by the pool's atomic round-robin index, connects without blocking, and relays bytes
//!   both ways. A refused or timed-out connect marks the backend down and moves on to the next,
//!   so the client does not notice while any backend lives.
//! - A backend marked down gets no new connections until a probe of the health thread or a
//!   fresh heartbeat shows it alive.

mod forward;
pub mod pool;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

pub use pool::{Backend, Pool};

use crate::broker::{self, Broker};
use crate::client::{Announcer, AnnouncerConfig, Registrar, RegistrarConfig, Registration};
use crate::protocol::{BalancerStats, Response};
use crate::registry::{self, Event, EventKind};
use crate::shutdown::Shutdown;

const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX);

/// A balancer's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP address clients connect to.
    pub listen: SocketAddr,
    /// UDP address backends register at.
    pub control: SocketAddr,
    /// Brokers to register the balancer at (none: it registers nowhere).
    pub brokers: Vec<SocketAddr>,
    /// Announce the balancer on this multicast group while it has backends (with or instead of
    /// registering at brokers).
    pub announce: Option<AnnouncerConfig>,
    /// The service name the balancer registers under.
    pub service: String,
    /// Forwarding threads.
    pub threads: usize,
    /// TTL and limits of the backend table.
    pub registry: registry::Config,
    /// Client connections open at once; beyond, new ones are closed at once and counted.
    pub max_connections: usize,
    /// How long a backend connect may take before the next backend is tried.
    pub connect_timeout: Duration,
    /// Connections with no traffic for this long are closed.
    pub idle_timeout: Duration,
    /// How often every backend is probed with a TCP connect; `None`: never.
    pub health_interval: Option<Duration>,
    /// Log changes to the backend table and the registration at the broker (through [`log`], at
    /// info).
    pub log: bool,
}

/// Where a balancer listens for clients unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);
/// Where a balancer listens for backends unless told otherwise.
pub const DEFAULT_CONTROL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5001);

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            control: DEFAULT_CONTROL,
            brokers: vec![broker::DEFAULT_LISTEN],
            announce: None,
            service: "http".into(),
            threads: 2,
            registry: registry::Config::default(),
            max_connections: 20_000,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            health_interval: Some(Duration::from_secs(2)),
            log: false,
        }
    }
}

/// Counters shared by the threads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Client connections open now.
    pub active: AtomicU64,
    /// Client connections accepted.
    pub total: AtomicU64,
    /// Connections refused at the cap.
    pub refused: AtomicU64,
    /// Connections closed because no backend accepted them.
    pub failed: AtomicU64,
}

impl Counters {
    fn stats(&self, pool: &Pool) -> BalancerStats {
        let backends = pool.stats();
        BalancerStats {
            active: self.active.load(Relaxed),
            total: self.total.load(Relaxed),
            refused: self.refused.load(Relaxed),
            failed: self.failed.load(Relaxed),
            backend_count: backends.len() as u64,
            backends,
        }
    }
}

/// A bound balancer, ready to [`run`](Balancer::run).
pub struct Balancer {
    config: Config,
    poll: Poll,
    listener: TcpListener,
    control: Broker,
    listen_addr: SocketAddr,
    pool: Arc<Pool>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer").field("listen", &self.listen_addr).field("control", &self.control_addr()).finish()
    }
}

impl Balancer {
    /// Binds the TCP listener and the control socket.
    pub fn bind(config: Config) -> io::Result<Balancer> {
        let poll = Poll::new()?;
        let mut listener = crate::net::bind_tcp(config.listen)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let listen_addr = listener.local_addr()?;
        let control = Broker::bind(broker::Config {
            listen: config.control,
            registry: config.registry.clone(),
            max_datagram: broker::DEFAULT_MAX_DATAGRAM,
            log_changes: false,
            // Backends register at the control port by address; the group is the brokers'.
            multicast: None,
        })?;
        Ok(Balancer {
            config,
            poll,
            listener,
            control,
            listen_addr,
            pool: Arc::new(Pool::new()),
            counters: Arc::new(Counters::default()),
        })
    }

    /// The TCP address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The UDP address backends register at.
    pub fn control_addr(&self) -> SocketAddr {
        self.control.local_addr()
    }

    /// The backends.
    pub fn pool(&self) -> Arc<Pool> {
        Arc::clone(&self.pool)
    }

    /// Balances until `shutdown` is requested; then deregisters from the broker and closes
    /// every connection.
    pub fn run(self, shutdown: &Shutdown) -> io::Result<()> {
        let Balancer { config, mut poll, listener, control, listen_addr, pool, counters } = self;
        shutdown.watch(Arc::new(Waker::new(poll.registry(), WAKER)?))?;
        let mut threads: Vec<JoinHandle<()>> = Vec::new();

        let control = spawn_control(control, &config, listen_addr, &pool, &counters, shutdown)?;
        let mut forwarders = Vec::new();
        for n in 0..config.threads.max(1) {
            let (sender, inbox) = crossbeam_channel::unbounded();
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            shutdown.watch(Arc::clone(&waker))?;
            let sleeping = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let timeouts = forward::Timeouts { connect: config.connect_timeout, idle: config.idle_timeout };
            let forwarder = forward::Forwarder::new(
                poll,
                inbox,
                Arc::clone(&sleeping),
                Arc::clone(&pool),
                Arc::clone(&counters),
                timeouts,
            );
            let stop = shutdown.clone();
            threads.push(std::thread::Builder::new().name(format!("forward-{n}")).spawn(move || forwarder.run(&stop))?);
            forwarders.push(forward::Mailbox { sender, waker, sleeping });
        }
        if let Some(interval) = config.health_interval {
            let (pool, stop) = (Arc::clone(&pool), shutdown.stopped());
            let timeout = config.connect_timeout;
            threads.push(
                std::thread::Builder::new()
                    .name("health".into())
                    .spawn(move || health(&pool, interval, timeout, &stop))?,
            );
        }

        let mut events = Events::with_capacity(64);
        let mut next = 0usize;
        let mut retry_accept = None;
        let mut to_wake = vec![false; forwarders.len()];
        let result = loop {
            if shutdown.is_requested() {
                break Ok(());
            }
            match poll.poll(&mut events, retry_accept.take()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
            retry_accept = crate::net::accept_all(&listener, "makler-balancer", |stream| {
                if counters.active.load(Relaxed) >= config.max_connections as u64 {
                    // Refused cleanly: closed at once, so the client sees the end of the stream
                    // rather than a hang.
                    counters.refused.fetch_add(1, Relaxed);
                    return;
                }
                counters.active.fetch_add(1, Relaxed);
                counters.total.fetch_add(1, Relaxed);
                let worker = next % forwarders.len();
                next = next.wrapping_add(1);
                if forwarders[worker].sender.send(TcpStream::from(stream)).is_ok() {
                    to_wake[worker] = true;
                }
            });
            // One wake-up per thread for the whole batch of accepted connections.
            for (wake, mailbox) in to_wake.iter_mut().zip(&forwarders) {
                if std::mem::take(wake) {
                    mailbox.wake_if_sleeping();
                }
            }
        };
        shutdown.request();
        for thread in threads {
            let _ = thread.join();
        }
        match control.join() {
            Ok(control_result) => result.and(control_result),
            Err(_) => result.and(Err(io::Error::other("the control thread panicked"))),
        }
    }
}

/// Runs the control port on its own thread: changes to its table update the pool, and the
/// first backend makes the balancer register at the broker, the last one gone deregister.
fn spawn_control(
    mut control: Broker,
    config: &Config,
    listen_addr: SocketAddr,
    pool: &Arc<Pool>,
    counters: &Arc<Counters>,
    shutdown: &Shutdown,
) -> io::Result<JoinHandle<io::Result<()>>> {
    let (pool, counters) = (Arc::clone(pool), Arc::clone(counters));
    let stats_pool = Arc::clone(&pool);
    control.handler_mut().set_stats_reply(move |_| Response::BalancerStats(counters.stats(&stats_pool)));

    let registrar = if config.brokers.is_empty() {
        None
    } else {
        let registrar_config = RegistrarConfig { log: config.log, ..RegistrarConfig::default() };
        Some(Registrar::start(&config.brokers, registrar_config).map_err(io::Error::other)?)
    };
    let mut registering = SelfRegistration {
        registrar,
        registration: None,
        announce: config.announce,
        announcer: None,
        service: config.service.clone(),
        ip: Some(listen_addr.ip()).filter(|ip| !ip.is_unspecified()),
        port: listen_addr.port(),
        log: config.log,
    };
    // The same endpoint may be registered under several names; it stays while any does.
    let mut names: HashMap<SocketAddr, usize> = HashMap::new();
    let log = config.log;
    let stop = shutdown.clone();
    {
        std::thread::Builder::new().name("control".into()).spawn(move || {
            let result = control.run_with(&stop, |event: Event| {
                match event.kind {
                    EventKind::Registered => {
                        *names.entry(event.endpoint).or_insert(0) += 1;
                        if pool.add(event.endpoint) && log {
                            log::info!("backend {} registered", event.endpoint);
                        }
                    }
                    EventKind::Refreshed => {
                        if let Some(backend) = pool.get(event.endpoint) {
                            backend.mark_up();
                        }
                    }
                    EventKind::Expired | EventKind::Deregistered => {
                        let left = names.get_mut(&event.endpoint).map(|n| {
                            *n -= 1;
                            *n
                        });
                        if left == Some(0) {
                            names.remove(&event.endpoint);
                            pool.remove(event.endpoint);
                            if log {
                                log::info!("backend {} gone", event.endpoint);
                            }
                        }
                    }
                }
                registering.follow(pool.len());
            });
            registering.follow(0);
            if let Some(registrar) = registering.registrar.take() {
                registrar.shutdown();
            }
            result
        })
    }
}

/// The balancer's own registration at the broker (and announcement on the multicast group),
/// present while it has backends.
struct SelfRegistration {
    registrar: Option<Registrar>,
    registration: Option<Registration>,
    announce: Option<AnnouncerConfig>,
    announcer: Option<Announcer>,
    service: String,
    ip: Option<std::net::IpAddr>,
    port: u16,
    log: bool,
}

impl SelfRegistration {
    /// Registers when there are backends and it is not registered; deregisters when there are
    /// none. Never blocks the control loop.
    fn follow(&mut self, backends: usize) {
        if let Some(config) = self.announce {
            match (backends > 0, self.announcer.is_some()) {
                (true, false) => match Announcer::start(config, &self.service, self.ip, self.port) {
                    Ok(announcer) => self.announcer = Some(announcer),
                    Err(e) => log::error!("cannot announce: {e}"),
                },
                // Stopping sends the goodbye and returns at once.
                (false, true) => drop(self.announcer.take()),
                _ => {}
            }
        }
        let Some(registrar) = &self.registrar else { return };
        match (backends > 0, self.registration.is_some()) {
            (true, false) => match registrar.register_in_background(&self.service, self.ip, self.port) {
                Ok(registration) => {
                    if self.log {
                        log::info!("first backend: registering as {}", self.service);
                    }
                    self.registration = Some(registration);
                }
                Err(e) => log::error!("cannot register: {e}"),
            },
            (false, true) => {
                if self.log {
                    log::info!("no backend left: deregistering {}", self.service);
                }
                if let Some(registration) = self.registration.take() {
                    registration.deregister_in_background();
                }
            }
            _ => {}
        }
    }
}

/// Probes every backend with a TCP connect each `interval`, marking it up or down, until
/// `stopped` disconnects.
fn health(pool: &Pool, interval: Duration, timeout: Duration, stopped: &crossbeam_channel::Receiver<()>) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
        for backend in pool.snapshot().iter() {
            match TcpStream::connect_timeout(&backend.addr, timeout.min(interval)) {
                Ok(_) => backend.mark_up(),
                Err(_) => backend.mark_failed(),
            }
        }
    }
}
