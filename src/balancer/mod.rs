//! The balancer: a TCP load balancer whose backends register with it as they would with a
//! broker, and which registers itself at the broker on their behalf.
//!
//! ```text
//!                 control (UDP): register/heartbeat/deregister/stats
//!   backends ───▶ ┌───────────────────────────────────────────────┐
//!                 │ control thread: Shell + control core (sans-IO) │──▶ Pool (backends, policy,
//!                 │   registry changes ─▶ pool; health probes;     │    atomic counts in flight)
//!                 │   events: first backend up / last one gone     │        ▲
//!                 │   ─▶ Registrar, Announcer threads register /   │        │
//!                 │      announce the balancer, or stop            │        │
//!                 └───────────────────────────────────────────────┘        │
//!   clients ──TCP──▶ forwarding threads, each with its own SO_REUSEPORT ───┘
//!                    listener on the one address (one mio loop each)
//! ```
//!
//! - The control port runs on the same [`Shell`] as a broker, with the
//!   same registration protocol ([`Service`](crate::service::Service)) over its own
//!   [`Registry`] and the TTL rules of a broker. The table's changes
//!   feed the [`Pool`]; `stats` answers with the balancer's counters. The core owns no thread
//!   and no socket: when the first backend is up or the last one gone it emits an event, and
//!   the shell's side (`registration`) registers the balancer at the broker, announces it on
//!   the multicast group, or stops, with the client library's registrar and announcer threads.
//! - Each forwarding thread accepts on a listener of its own (the kernel spreads new connections
//!   over the threads' `SO_REUSEPORT` listeners), so no connection is handed between threads; it
//!   picks a backend by the pool's [`Policy`] (round robin by an atomic index; least-conn and
//!   random-two by the backends' atomic counts in flight), connects without blocking, and relays
//!   bytes both ways. A refused or timed-out connect marks the backend down and redispatches the
//!   connection to another (at most `forward::MAX_TRIES` backends in all, each retry counted), so
//!   the client does not notice while any backend lives.
//! - Health checks are non-blocking connects (or the HTTP `GET` a backend declared) run by the
//!   control loop's [`Prober`](crate::probe::Prober), all backends concurrently, each at its own
//!   phase of the interval: a black-holed backend costs one timeout, not one per backend per round.
//!   `fall` failures in a row mark a backend down, `rise` successes in a row bring it back (a
//!   backend a failed connect marked down too); without health checks, a fresh heartbeat or a
//!   connect that succeeds does.
//! - `--backends-from SERVICE`: a thread (`feed`) watches SERVICE at the brokers and hands each
//!   live set (weighed by `weight=N` metadata) to the control core over the shell's command
//!   channel; the core adds, removes and reweighs by the difference (`control/feed.rs`).

mod control;
mod feed;
mod forward;
#[cfg(feature = "fuzzing")]
mod fuzzing;
mod health;
pub mod policy;
pub mod pool;
mod registration;
mod relay;
mod reload;
#[cfg(feature = "fuzzing")]
pub(crate) use fuzzing::fuzz_control;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Token;
use mio::net::TcpListener;

pub use control::reload::Reloadable;
pub use policy::Policy;
pub use pool::{Backend, Lease, Pool};
pub use reload::{ReloadError, Reloader};

use crate::activation::Activated;

use crate::broker;
use crate::client::{AnnouncerConfig, Registrar, RegistrarConfig};
use crate::protocol::stats::Def;
use crate::protocol::{BackendStats, BalancerStats, Counter};
use crate::registry::{self, Registry};
use crate::shell::Shell;
use crate::shutdown::Shutdown;

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
    /// `--backends-from`: take backends from this service's live instances at `brokers` too
    /// (watched), beside those that register at the control port.
    pub backends_from: Option<String>,
    /// Forwarding threads.
    pub threads: usize,
    /// TTL and limits of the backend table (`--max-per-source` among them).
    pub registry: registry::Config,
    /// Who may register which backends (`--allow-register`, `--foreign-ip`): the broker's
    /// rules, with the broker's replies.
    pub policy: crate::service::policy::Policy,
    /// The shared key (`--key-file`): the balancer seals its requests to the brokers with it,
    /// and the control port opens sealed requests and seals its replies.
    pub key: Option<crate::protocol::seal::Key>,
    /// Which requests the control port takes only sealed (`--require-key`; needs a key).
    pub require_key: crate::service::policy::RequireKey,
    /// Client connections open at once; beyond, new ones are closed at once and counted.
    pub max_connections: usize,
    /// How a backend is chosen for each connection (`--policy`).
    pub balance: Policy,
    /// How long a backend connect may take before the next backend is tried (a redispatch).
    pub connect_timeout: Duration,
    /// Connections with no traffic for this long are closed.
    pub idle_timeout: Duration,
    /// How often every backend is probed with a TCP connect, or the HTTP check it declared;
    /// `None`: never.
    pub health_interval: Option<Duration>,
    /// Checks in a row that bring a backend marked down up again (`--rise`, HAProxy's `rise`).
    pub rise: u32,
    /// Checks failed in a row that mark a backend down (`--fall`, HAProxy's `fall`).
    pub fall: u32,
    /// On shutdown, how long connections in flight may take to finish before they are closed.
    pub drain_timeout: Duration,
    /// Log changes to the backend table and the registration at the broker (through [`log`], at
    /// info).
    pub log: bool,
    /// Response-rate limiting of the control port's replies larger than their request.
    pub rate_limit: crate::limit::RateLimit,
    /// Serve Prometheus metrics over HTTP on this TCP address (`GET /metrics`).
    pub metrics: Option<SocketAddr>,
    /// Serve the HTTP face on this TCP address (`--http`): `GET /metrics`, `/v1/backends` and
    /// the status page (see [`crate::http`]).
    pub http: Option<SocketAddr>,
    /// Write a PROXY protocol header (this version) to each backend before the client's bytes,
    /// so that backends see the client's address (`--send-proxy`).
    pub send_proxy: Option<crate::proxy_protocol::Version>,
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
            backends_from: None,
            threads: 2,
            registry: control_registry(registry::Config::default().ttl),
            policy: crate::service::policy::Policy::default(),
            key: None,
            require_key: crate::service::policy::RequireKey::No,
            max_connections: 20_000,
            balance: Policy::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            health_interval: Some(Duration::from_secs(2)),
            rise: 2,
            fall: 3,
            drain_timeout: Duration::from_secs(10),
            log: false,
            rate_limit: crate::limit::RateLimit::default(),
            metrics: None,
            http: None,
            send_proxy: None,
        }
    }
}

/// The control port's table: a broker's, with `ttl`, but no quota per source address, since a
/// balancer's backends often share one host (`makler-balancer` sets `--max-per-source`, whose
/// default is the broker's).
pub fn control_registry(ttl: Duration) -> registry::Config {
    let limits = registry::Limits { max_per_source: 0, max_per_network: 0, ..registry::Limits::default() };
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
    /// Connects that failed (refused, or no answer within the connect timeout) and were tried
    /// again on another backend.
    pub redispatches: AtomicU64,
    /// Health probes not sent: beyond the bound toward one address (see `health`).
    pub probes_skipped: AtomicU64,
    /// Sealed datagrams on the control port dropped: another key, forged, stale or replayed.
    pub sealed_dropped: AtomicU64,
    /// Replies of the control port not sent by the response-rate limit (as the broker's).
    pub rate_dropped: AtomicU64,
    /// Acknowledgements of the control port not sent: their source's own bucket was empty.
    pub acks_dropped: AtomicU64,
    /// Connections accepted by each forwarding thread.
    pub per_thread: Vec<AtomicU64>,
}

impl Counters {
    /// Counters for `threads` forwarding threads.
    pub fn with_threads(threads: usize) -> Self {
        Counters { per_thread: (0..threads).map(|_| AtomicU64::new(0)).collect(), ..Counters::default() }
    }

    /// The `stats` answer: every counter and backend.
    fn stats(&self, pool: &Pool) -> BalancerStats {
        let backends = pool.stats();
        BalancerStats {
            counters: self.values(&backends).map(|(def, value)| Counter::new(def.name, value)).collect(),
            accepted_per_thread: self.per_thread.iter().map(|n| n.load(Relaxed)).collect(),
            backends,
        }
    }

    /// What the metrics page shows: every counter, with its definition, and every backend.
    fn metrics(&self, pool: &Pool) -> crate::metrics::BalancerMetrics {
        let backends = pool.stats();
        crate::metrics::BalancerMetrics { counters: self.values(&backends).collect(), backends }
    }

    /// Every counter's definition and value, in the table's order.
    fn values<'a>(&'a self, backends: &'a [BackendStats]) -> impl Iterator<Item = (&'static Def, u64)> + 'a {
        COUNTERS.iter().map(move |(def, read)| (def, read(self, backends)))
    }
}

/// How a row of [`COUNTERS`] reads its value.
type ReadCounter = fn(&Counters, &[BackendStats]) -> u64;

/// A balancer's counters, in the order of its `stats` line: what each is, and how to read it.
/// The text line, the binary answer, the metrics page and the CLI loop over this table.
#[rustfmt::skip]
static COUNTERS: &[(Def, ReadCounter)] = &[
    (Def::gauge("backend_count", "makler_balancer_backends", "Registered backends."), |_, b| b.len() as u64),
    (Def::gauge("active", "makler_balancer_connections_active", "Client connections open now."),
        |c, _| c.active.load(Relaxed)),
    (Def::counter("total", "makler_balancer_connections_total", "Client connections accepted."),
        |c, _| c.total.load(Relaxed)),
    (Def::counter("refused", "makler_balancer_refused_total", "Connections refused at the connection cap."),
        |c, _| c.refused.load(Relaxed)),
    (Def::counter("failed", "makler_balancer_failed_total", "Connections no backend accepted."),
        |c, _| c.failed.load(Relaxed)),
    (Def::counter("probes_skipped", "makler_balancer_probes_skipped_total",
        "Health probes not sent: beyond 100 a second toward one address."),
        |c, _| c.probes_skipped.load(Relaxed)),
    (Def::counter("sealed_dropped", "makler_balancer_sealed_dropped_total",
        "Sealed requests dropped: another key, forged, stale or replayed."),
        |c, _| c.sealed_dropped.load(Relaxed)),
    (Def::counter("rate_dropped", "makler_balancer_rate_dropped_total",
        "Control-port replies not sent: over the response-rate limit."),
        |c, _| c.rate_dropped.load(Relaxed)),
    (Def::counter("acks_dropped", "makler_balancer_acks_dropped_total",
        "Control-port acknowledgements not sent: their source had more than 2,048 at once, 2,048 a second."),
        |c, _| c.acks_dropped.load(Relaxed)),
    (Def::counter("redispatches", "makler_balancer_redispatches_total",
        "Backend connects refused or timed out, tried again on another backend."),
        |c, _| c.redispatches.load(Relaxed)),
];

/// A bound balancer, ready to [`run`](Balancer::run).
pub struct Balancer {
    config: Config,
    /// One listener per forwarding thread, on one port (`SO_REUSEPORT`).
    listeners: Vec<TcpListener>,
    control: mio::net::UdpSocket,
    control_addr: SocketAddr,
    listen_addr: SocketAddr,
    metrics: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
    http: Option<TcpListener>,
    /// The client listeners were passed by a service manager.
    inherited: bool,
    pool: Arc<Pool>,
    counters: Arc<Counters>,
    reloader: Reloader,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer").field("listen", &self.listen_addr).field("control", &self.control_addr()).finish()
    }
}

impl Balancer {
    /// Binds the TCP listener and the control socket.
    pub fn bind(config: Config) -> io::Result<Balancer> {
        Balancer::bind_with(config, &mut Activated::default())
    }

    /// Takes the sockets a service manager passed (see [`SOCKET_NAMES`]) and binds the others:
    /// passed TCP listeners replace `--listen`, a passed UDP socket `--control`, a TCP listener
    /// named `metrics` `--metrics`, one named `http` `--http`. Every forwarding thread accepts on a passed listener (a
    /// duplicate of it; there are at least as many threads as listeners), and the balancer
    /// waits for its first backend before it accepts at all: the socket outlives the process,
    /// so connections that came during a restart wait in its queue instead of finding a
    /// balancer without backends.
    pub fn bind_with(config: Config, activated: &mut Activated) -> io::Result<Balancer> {
        let threads = config.threads.max(1);
        let context = |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let passed = activated.take_tcp("listen", &SOCKET_NAMES, true)?;
        let inherited = !passed.is_empty();
        let listeners = if passed.is_empty() {
            crate::net::bind_tcp_reuseport(config.listen, threads)
                .map_err(context(format!("cannot listen for clients on tcp {} (--listen)", config.listen)))?
        } else {
            (0..threads.max(passed.len()))
                .map(|n| passed[n % passed.len()].try_clone().map(TcpListener::from_std))
                .collect::<io::Result<Vec<_>>>()?
        };
        let threads = listeners.len();
        let listen_addr = listeners[0].local_addr()?;
        // Backends register at the control port by address; the group is the brokers'.
        let control = match activated.take_udp("control", &SOCKET_NAMES, true)? {
            Some(socket) => mio::net::UdpSocket::from_std(socket),
            None => crate::net::bind_udp(config.control)
                .map_err(context(format!("cannot listen for backends on udp {} (--control)", config.control)))?,
        };
        let control_addr = control.local_addr()?;
        let mut listen_tcp = |name: &str, addr: Option<SocketAddr>| -> io::Result<Option<TcpListener>> {
            Ok(match (activated.take_one_tcp(name, &SOCKET_NAMES)?, addr) {
                (Some(listener), _) => Some(TcpListener::from_std(listener)),
                (None, Some(addr)) => Some(
                    crate::net::bind_tcp(addr).map_err(context(format!("cannot listen on tcp {addr} (--{name})")))?,
                ),
                (None, None) => None,
            })
        };
        let metrics = listen_tcp("metrics", config.metrics)?;
        let http = listen_tcp("http", config.http)?;
        let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
        let balance = config.balance;
        Ok(Balancer {
            config,
            listeners,
            control,
            control_addr,
            listen_addr,
            metrics,
            metrics_addr,
            http,
            inherited,
            pool: Arc::new(Pool::with_policy(balance)),
            counters: Arc::new(Counters::with_threads(threads)),
            reloader: Reloader::default(),
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

    /// A handle to reload the balancer once it runs (SIGHUP; see [`Reloader`]).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The address the HTTP face (`--http`) is really bound to, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// The backends.
    pub fn pool(&self) -> Arc<Pool> {
        Arc::clone(&self.pool)
    }

    /// Balances until `shutdown` is requested; then stops accepting and deregisters from the
    /// broker at once (in that order), lets the connections in flight finish (up to the drain
    /// timeout), and closes what is left.
    pub fn run(self, shutdown: &Shutdown) -> io::Result<()> {
        let Balancer {
            config,
            listeners,
            control,
            listen_addr,
            pool,
            counters,
            metrics,
            http,
            inherited,
            reloader,
            ..
        } = self;
        let timeouts =
            Arc::new(forward::Timeouts::new(config.connect_timeout, config.idle_timeout, config.drain_timeout));
        let (listening, closed) = crossbeam_channel::bounded(0);
        let shared = Shared { listen_addr, pool: &pool, counters: &counters, timeouts: &timeouts, reloader: &reloader };
        let control = spawn_control(control, [metrics, http], &config, shared, (shutdown, closed))?;
        if inherited {
            wait_for_backend(&pool, config.registry.ttl, shutdown);
            if shutdown.is_requested() {
                // Stopped before any backend came: nothing was accepted, and the passed
                // listeners close unaccepted, their queues kept for the next process.
                drop((listeners, listening));
                return join_control(control, Ok(()));
            }
        }
        let limits = forward::Limits {
            timeouts: Arc::clone(&timeouts),
            max_connections: config.max_connections as u64,
            revival: match config.health_interval {
                Some(_) => forward::Revival::HealthChecks,
                None => forward::Revival::Connect,
            },
            send_proxy: config.send_proxy,
            keep_queue: inherited,
        };
        let mut threads: Vec<JoinHandle<usize>> = Vec::new();
        for (n, listener) in listeners.into_iter().enumerate() {
            let (pool, counters, limits) = (Arc::clone(&pool), Arc::clone(&counters), limits.clone());
            let forwarder = forward::Forwarder::new(n, listener, pool, counters, limits)?;
            shutdown.watch(forwarder.waker()?)?;
            let (stop, listening) = (shutdown.clone(), listening.clone());
            threads.push(std::thread::Builder::new().name(format!("forward-{n}")).spawn(move || {
                let cut = forwarder.run(&stop, listening);
                // A thread that stopped on an error stops the balancer rather than leave it half.
                stop.request();
                cut
            })?);
        }
        drop(listening);
        // Only to say what the drain does: the forwarders drain on their own.
        let _ = shutdown.stopped().recv();
        let open = counters.active.load(Relaxed);
        if open > 0 {
            log::info!("draining: waiting up to {} s for {open} connections to finish", timeouts.drain().as_secs_f64());
        }
        let mut result = Ok(());
        // The forwarders close what the drain time left open themselves, so the count of open
        // connections is 0 by now whatever happened: what they cut is what they return.
        let mut cut = 0;
        for thread in threads {
            match thread.join() {
                Ok(closed) => cut += closed,
                Err(_) => result = Err(io::Error::other("a forwarding thread panicked")),
            }
        }
        if open > 0 || cut > 0 {
            match cut {
                0 => log::info!("drained: every connection finished"),
                cut => log::warn!("{cut} connections were still open after --drain-timeout: closed them"),
            }
        }
        join_control(control, result)
    }
}

/// Waits for the control thread to end: `result` and its own, the first error of the two.
fn join_control(control: JoinHandle<io::Result<()>>, result: io::Result<()>) -> io::Result<()> {
    match control.join() {
        Ok(control_result) => result.and(control_result),
        Err(_) => result.and(Err(io::Error::other("the control thread panicked"))),
    }
}

/// Raises this process's soft limit on open files to its hard limit, as nginx
/// (`worker_rlimit_nofile`) and Go's runtime do: the soft limit (1024 on most systems) only
/// guards programs that still use `select(2)`, and a balancer holds two descriptors for each
/// connection. Returns the soft limit in force afterwards; an error leaves the limit as it was
/// (then the caller's cap on connections follows the lower limit).
pub fn raise_descriptor_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// The names a passed socket may have (`FileDescriptorName=` in a `.socket` unit): `listen`,
/// TCP for clients; `control`, UDP for backends; `metrics`, TCP for `GET /metrics`; `http`, TCP
/// for `--http`. A socket with another name is the clients' listener if TCP, the control port if
/// UDP.
pub const SOCKET_NAMES: [&str; 4] = ["listen", "control", "metrics", "http"];

/// Waits until the pool has a backend, for up to `limit` (a backend that heartbeats at all does
/// so within its TTL) or until shutdown. Meanwhile nothing accepts, and new connections wait in
/// the passed socket's queue.
fn wait_for_backend(pool: &Pool, limit: Duration, shutdown: &Shutdown) {
    if !pool.is_empty() {
        return;
    }
    log::info!("waiting up to {} s for a backend before accepting", limit.as_secs_f64());
    let stopped = shutdown.stopped();
    let until = std::time::Instant::now() + limit;
    while pool.is_empty() && !shutdown.is_requested() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            log::warn!("no backend within {} s: accepting anyway", limit.as_secs_f64());
            return;
        }
        let _ = stopped.recv_timeout(left.min(Duration::from_millis(20)));
    }
}

/// What the control thread shares with the rest of the balancer.
struct Shared<'a> {
    listen_addr: SocketAddr,
    pool: &'a Arc<Pool>,
    counters: &'a Arc<Counters>,
    /// The forwarding threads' timeouts, which a reload changes.
    timeouts: &'a Arc<forward::Timeouts>,
    /// Made live here, with the control loop's command channel.
    reloader: &'a Reloader,
}

/// Runs the control port on its own thread: changes to its table update the pool, and the
/// first backend makes the balancer register at the broker, the last one gone deregister.
/// `[metrics, http]`: the listeners of `--metrics` and `--http`. On shutdown it deregisters
/// once `closed` disconnects: unlisted, the balancer refuses rather than accepts into a drain.
fn spawn_control(
    socket: mio::net::UdpSocket,
    [metrics, http]: [Option<TcpListener>; 2],
    config: &Config,
    shared: Shared<'_>,
    (shutdown, closed): (&Shutdown, crossbeam_channel::Receiver<()>),
) -> io::Result<JoinHandle<io::Result<()>>> {
    let Shared { listen_addr, pool, counters, timeouts, reloader } = shared;
    let registrar = if config.brokers.is_empty() {
        None
    } else {
        let registrar_config = RegistrarConfig { log: config.log, key: config.key, ..RegistrarConfig::default() };
        Some(Registrar::start(&config.brokers, registrar_config).map_err(io::Error::other)?)
    };
    let registering = registration::SelfRegistration {
        registrar,
        registration: None,
        announce: config.announce.clone(),
        announcer: None,
        service: config.service.clone(),
        ip: Some(listen_addr.ip()).filter(|ip| !ip.is_unspecified()),
        port: listen_addr.port(),
        log: config.log,
    };
    let health = config.health_interval.map(|interval| {
        let mut health = health::Health::new(interval, config.connect_timeout, config.rise, config.fall);
        // A backend behind `--send-proxy` may require the header (`--accept-proxy`): its
        // checks carry one too, as HAProxy's do, saying the connection is the balancer's own.
        health.preamble = config.send_proxy.map(crate::proxy_protocol::local_header).unwrap_or_default();
        health
    });
    let registry = Registry::new(config.registry.clone(), uuid::Uuid::new_v4);
    let mut core = control::Control::new(
        registry,
        Arc::clone(pool),
        Arc::clone(counters),
        health,
        config.rate_limit.clone(),
        config.log,
    );
    core.set_policy(config.policy.clone());
    core.set_reloadable(config.reloadable(), Arc::clone(timeouts));
    core.set_offer(config.service.clone());
    if let Some(key) = config.key {
        core.set_key(key, config.require_key, crate::node::WallClock::now());
    }
    let mut shell = Shell::new(registration::ControlLoop::new(core, registering))?;
    reloader.install(shell.commands());
    feed::Feed::spawn(config, || shell.commands(), shutdown)?;
    shell.add_udp(control::Face::Control, socket)?;
    if let Some(listener) = metrics {
        shell.add_listener(control::Face::Metrics, listener, crate::broker::METRICS_LIMITS)?;
    }
    if let Some(listener) = http {
        shell.add_listener(control::Face::Http, listener, crate::http::LIMITS)?;
    }
    let stop = shutdown.clone();
    std::thread::Builder::new().name("control".into()).spawn(move || {
        let control = shell.run(&stop)?;
        let _ = closed.recv();
        control.stop();
        Ok(())
    })
}
