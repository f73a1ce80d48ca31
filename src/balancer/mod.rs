//! The balancer: a TCP load balancer whose backends register with it as they would with a
//! broker, and which registers itself at the broker on their behalf.
//!
//! ```text
//!                 control (UDP): register/heartbeat/deregister/stats
//!   backends ───▶ ┌───────────────────────────────────────────────┐
//!                 │ control thread: Shell + control core           │──▶ Pool (backends, atomic
//!                 │   registry changes ─▶ pool; health probes;     │    round-robin index)
//!                 │   first backend ─▶ registers itself at the     │        ▲
//!                 │   broker, last gone ─▶ deregisters             │        │
//!                 └───────────────────────────────────────────────┘        │
//!   clients ──TCP──▶ acceptor ──crossbeam channel──▶ forwarding threads ───┘
//!                                                   (one mio loop each)
//! ```
//!
//! - The control port runs on the same [`Shell`] as a broker, with the
//!   same registration protocol ([`Service`](crate::service::Service)) over its own
//!   [`Registry`] and the TTL rules of a broker. The table's changes
//!   feed the [`Pool`]; `stats` answers with the balancer's counters.
//! - The acceptor hands each connection to the forwarding threads in turn; a thread picks a
//!   backend by the pool's atomic round-robin index, connects without blocking, and relays bytes
//!   both ways. A refused or timed-out connect marks the backend down and moves on to the next,
//!   so the client does not notice while any backend lives.
//! - Health checks are non-blocking connects run by the control loop's
//!   [`Prober`](crate::probe::Prober), all backends concurrently, each at its own phase of the
//!   interval: a black-holed backend costs one timeout, not one per backend per round. A
//!   backend marked down gets no new connections until a probe or a fresh heartbeat shows it
//!   alive.

mod control;
mod forward;
pub mod pool;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

pub use pool::{Backend, Pool};

use crate::broker;
use crate::client::{AnnouncerConfig, Registrar, RegistrarConfig};
use crate::protocol::BalancerStats;
use crate::registry::{self, Registry};
use crate::shell::Shell;
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
    /// Response-rate limiting of the control port's replies larger than their request.
    pub rate_limit: crate::limit::RateLimit,
    /// Serve Prometheus metrics over HTTP on this TCP address (`GET /metrics`).
    pub metrics: Option<SocketAddr>,
    /// When asked to stop: how long connections in flight may take to finish after the
    /// balancer has deregistered and stopped accepting; then the rest are closed.
    pub drain_timeout: Duration,
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
            registry: control_registry(registry::Config::default().ttl),
            max_connections: 20_000,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            health_interval: Some(Duration::from_secs(2)),
            log: false,
            rate_limit: crate::limit::RateLimit::default(),
            metrics: None,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The control port's table: a broker's, with `ttl`, but no quota per source address, since a
/// balancer's backends often share one host.
pub fn control_registry(ttl: Duration) -> registry::Config {
    let limits = registry::Limits { max_per_source: 0, ..registry::Limits::default() };
    registry::Config { ttl, limits, ..registry::Config::default() }
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
    control: mio::net::UdpSocket,
    control_addr: SocketAddr,
    listen_addr: SocketAddr,
    metrics: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
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
        let context = |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let mut listener = crate::net::bind_tcp(config.listen)
            .map_err(context(format!("cannot listen for clients on tcp {} (--listen)", config.listen)))?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let listen_addr = listener.local_addr()?;
        // Backends register at the control port by address; the group is the brokers'.
        let control = crate::net::bind_udp(config.control)
            .map_err(context(format!("cannot listen for backends on udp {} (--control)", config.control)))?;
        let control_addr = control.local_addr()?;
        let metrics = match config.metrics {
            Some(addr) => {
                Some(crate::net::bind_tcp(addr).map_err(context(format!("cannot listen on tcp {addr} (--metrics)")))?)
            }
            None => None,
        };
        let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
        Ok(Balancer {
            config,
            poll,
            listener,
            control,
            control_addr,
            listen_addr,
            metrics,
            metrics_addr,
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
        self.control_addr
    }

    /// The address the metrics listener is really bound to, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The backends.
    pub fn pool(&self) -> Arc<Pool> {
        Arc::clone(&self.pool)
    }

    /// Balances until `shutdown` is requested; then drains: deregisters from the broker, stops
    /// accepting, lets the connections in flight finish for up to
    /// [`Config::drain_timeout`], and closes the rest.
    pub fn run(self, shutdown: &Shutdown) -> io::Result<()> {
        let Balancer { config, mut poll, listener, control, listen_addr, pool, counters, metrics, .. } = self;
        shutdown.watch(Arc::new(Waker::new(poll.registry(), WAKER)?))?;
        let mut threads: Vec<JoinHandle<()>> = Vec::new();

        let control = spawn_control(control, metrics, &config, listen_addr, &pool, &counters, shutdown)?;
        // The forwarders stop when the connections in flight are done, not at the signal.
        let drained = Shutdown::new();
        let mut forwarders = Vec::new();
        for n in 0..config.threads.max(1) {
            let (sender, inbox) = crossbeam_channel::unbounded();
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            drained.watch(Arc::clone(&waker))?;
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
            let stop = drained.clone();
            threads.push(std::thread::Builder::new().name(format!("forward-{n}")).spawn(move || forwarder.run(&stop))?);
            forwarders.push(forward::Mailbox { sender, waker, sleeping });
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
        // The control thread deregisters now; no new connection is accepted from here on.
        drop(listener);
        drain(&counters, config.drain_timeout);
        drained.request();
        for thread in threads {
            let _ = thread.join();
        }
        match control.join() {
            Ok(control_result) => result.and(control_result),
            Err(_) => result.and(Err(io::Error::other("the control thread panicked"))),
        }
    }
}

/// Waits until no client connection is open, or `timeout` has passed.
fn drain(counters: &Counters, timeout: Duration) {
    let open = counters.active.load(Relaxed);
    if open == 0 {
        return;
    }
    log::info!("draining: waiting up to {} s for {open} connections to finish", timeout.as_secs_f64());
    let deadline = std::time::Instant::now() + timeout;
    while counters.active.load(Relaxed) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    match counters.active.load(Relaxed) {
        0 => log::info!("drained: every connection finished"),
        left => log::warn!("{left} connections still open after --drain-timeout: closing them"),
    }
}

/// Runs the control port on its own thread: changes to its table update the pool, and the
/// first backend makes the balancer register at the broker, the last one gone deregister.
fn spawn_control(
    socket: mio::net::UdpSocket,
    metrics: Option<TcpListener>,
    config: &Config,
    listen_addr: SocketAddr,
    pool: &Arc<Pool>,
    counters: &Arc<Counters>,
    shutdown: &Shutdown,
) -> io::Result<JoinHandle<io::Result<()>>> {
    let registrar = if config.brokers.is_empty() {
        None
    } else {
        let registrar_config = RegistrarConfig { log: config.log, ..RegistrarConfig::default() };
        Some(Registrar::start(&config.brokers, registrar_config).map_err(io::Error::other)?)
    };
    let registering = control::SelfRegistration {
        registrar,
        registration: None,
        announce: config.announce,
        announcer: None,
        service: config.service.clone(),
        ip: Some(listen_addr.ip()).filter(|ip| !ip.is_unspecified()),
        port: listen_addr.port(),
        log: config.log,
    };
    let health = config.health_interval.map(|interval| control::Health::new(interval, config.connect_timeout));
    let registry = Registry::new(config.registry.clone(), uuid::Uuid::new_v4);
    let core = control::Control::new(
        registry,
        Arc::clone(pool),
        Arc::clone(counters),
        registering,
        health,
        config.rate_limit.clone(),
        config.log,
    );
    let mut shell = Shell::new(core)?;
    shell.add_udp(control::Face::Control, socket)?;
    if let Some(listener) = metrics {
        shell.add_listener(control::Face::Metrics, listener, crate::broker::METRICS_LIMITS)?;
    }
    let stop = shutdown.clone();
    std::thread::Builder::new().name("control".into()).spawn(move || {
        let mut core = shell.run(&stop)?;
        core.stop_registering();
        Ok(())
    })
}

/// The fuzzing oracle of the control port (see [`crate::oracles::control`]): arbitrary
/// datagrams, each answer within the limit, `stats` answered whatever the table holds.
pub(crate) fn fuzz_control(data: &[u8]) {
    use crate::shell::Core;
    let registering = control::SelfRegistration {
        registrar: None,
        registration: None,
        announce: None,
        announcer: None,
        service: "web".into(),
        ip: None,
        port: 80,
        log: false,
    };
    let registry = Registry::new(control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
    let pool = Arc::new(Pool::new());
    let mut core = control::Control::new(
        registry,
        Arc::clone(&pool),
        Arc::new(Counters::default()),
        registering,
        None,
        crate::limit::RateLimit::default(),
        false,
    );
    let now = std::time::Instant::now();
    let mut reply = Vec::new();
    let from = SocketAddr::from(([127, 0, 0, 1], 5000));
    for datagram in data.split(|&b| b == 0xFF).chain([&b"stats"[..]]) {
        reply.clear();
        if core.handle_datagram(now, control::Face::Control, from, datagram, &mut reply).is_some() {
            assert!(reply.len() <= crate::protocol::MAX_REPLY_LEN, "{} bytes", reply.len());
        }
    }
}
