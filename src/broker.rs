//! The broker: a [`Node`] (all the logic, sans-IO) run by a [`Shell`] (one thread, one mio
//! event loop) on a unicast UDP socket and, optionally, the multicast group.
//!
//! This module only binds the sockets the configuration names and says hello to the group;
//! everything a broker answers is decided in [`crate::node`]. With a DNS address it also
//! answers DNS there, over UDP and TCP on the same port, in the same loop
//! ([`crate::node::dns`]).
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

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use uuid::Uuid;

pub use crate::node::{DnsConfig, ReplicaConfig, VerifyConfig};
pub use crate::service::DEFAULT_MAX_DATAGRAM;

use crate::core::StreamLimits;
use crate::multicast::MulticastConfig;
use crate::node::{DNS_TCP_LIMITS, Face, GroupConfig, MdnsConfig, Node, NodeConfig, Reloadable};
use crate::registry;
use crate::shell::Shell;
use crate::shutdown::Shutdown;

/// The broker's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// TTL and limits of the table.
    pub registry: registry::Config,
    /// The longest request datagram accepted, in bytes.
    pub max_datagram: usize,
    /// Log registrations, deregistrations and expiries (at info level).
    pub log_changes: bool,
    /// Listen for announcements and discovery on this multicast group (`None`: no multicast).
    pub multicast: Option<MulticastConfig>,
    /// Replication with peer brokers (`replica.peers`), and whether brokers on the multicast
    /// group count as peers too (`replica.discover`).
    pub replica: ReplicaConfig,
    /// Reports of dead instances and health checks.
    pub verify: VerifyConfig,
    /// Response-rate limiting (off unless set; the program's default is on).
    pub rate_limit: crate::limit::RateLimit,
    /// Who may register what.
    pub policy: crate::service::policy::Policy,
    /// The shared key sealing peer traffic (the multicast group's is in `multicast`).
    pub key: Option<crate::protocol::seal::Key>,
    /// Which requests must come sealed with the key (`--require-key`; needs one).
    pub require_key: crate::service::policy::RequireKey,
    /// Where to answer DNS, over UDP and TCP on the same port (`None`: no DNS face; port 0
    /// picks a port free for both).
    pub dns_listen: Option<SocketAddr>,
    /// The DNS face's zone and TTL.
    pub dns: DnsConfig,
    /// Serve Prometheus metrics over HTTP on this TCP address (`GET /metrics`).
    pub metrics: Option<SocketAddr>,
    /// Serve the HTTP face on this TCP address (`--http`): `GET /metrics`, the JSON catalog
    /// and the status page (see [`crate::http`]).
    pub http: Option<SocketAddr>,
    /// Brokers of other networks asked for services this one does not have (`--bridge`).
    pub bridges: crate::node::BridgeConfig,
    /// The caps on watches (`--max-watches`, `--max-watches-per-source`).
    pub watches: crate::node::WatchConfig,
    /// The cluster's name (`--cluster`): brokers on the multicast group that say hello with
    /// another name are ignored rather than taken as peers.
    pub cluster: String,
    /// Advertise the table's services with mDNS on the link of the interface with this IPv4
    /// address (`--mdns`; `None`: no mDNS at all).
    pub mdns: Option<std::net::Ipv4Addr>,
    /// The DNS-SD service types to import from that link (`--mdns-import`), as `_http._tcp`.
    pub mdns_import: Vec<String>,
}

impl Config {
    /// The part of these settings a running broker takes anew on a reload (see
    /// [`crate::node::reload`]).
    pub fn reloadable(&self) -> Reloadable {
        Reloadable {
            peers: self.replica.peers.clone(),
            bridges: self.bridges.bridges.clone(),
            policy: self.policy.clone(),
            max_per_source: self.registry.limits.max_per_source,
            max_per_network: self.registry.limits.max_per_network,
            rate_limit: self.rate_limit.clone(),
            watches: self.watches,
            probe_interval: self.verify.probe_interval,
            probe_timeout: self.verify.probe_timeout,
            log_changes: self.log_changes,
        }
    }

    /// The settings fixed for the process's life that `new` gives otherwise: one line each,
    /// to log on a reload (`--listen cannot change at run time: kept 127.0.0.1:7000 (restart to
    /// apply)`). The running broker keeps its own.
    pub fn fixed_differences(&self, new: &Config) -> Vec<String> {
        fn differs<T: PartialEq>(lines: &mut Vec<String>, flag: &str, was: &T, is: &T, show: impl Fn(&T) -> String) {
            if was != is {
                lines.push(format!("{flag} cannot change at run time: kept {} (restart to apply)", show(was)));
            }
        }
        let addr = |a: &Option<SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
        let (old_limits, new_limits) = (&self.registry.limits, &new.registry.limits);
        let mut lines = Vec::new();
        differs(&mut lines, "--listen", &self.listen, &new.listen, ToString::to_string);
        differs(&mut lines, "--ttl", &self.registry.ttl, &new.registry.ttl, |d| format!("{}s", d.as_secs_f64()));
        differs(
            &mut lines,
            "--max-instances",
            &old_limits.max_instances,
            &new_limits.max_instances,
            ToString::to_string,
        );
        differs(&mut lines, "--max-name-len", &old_limits.max_name_len, &new_limits.max_name_len, ToString::to_string);
        differs(&mut lines, "--name-chars", &old_limits.name_punctuation, &new_limits.name_punctuation, Clone::clone);
        differs(&mut lines, "--max-datagram", &self.max_datagram, &new.max_datagram, ToString::to_string);
        differs(&mut lines, "--cluster", &self.cluster, &new.cluster, Clone::clone);
        differs(&mut lines, "--dns", &self.dns_listen, &new.dns_listen, addr);
        differs(&mut lines, "--dns-domain", &self.dns.domain, &new.dns.domain, Clone::clone);
        differs(&mut lines, "--dns-ttl", &self.dns.ttl, &new.dns.ttl, ToString::to_string);
        differs(&mut lines, "--dns-unsealed", &self.dns.unsealed, &new.dns.unsealed, ToString::to_string);
        differs(&mut lines, "--metrics", &self.metrics, &new.metrics, addr);
        differs(&mut lines, "--http", &self.http, &new.http, addr);
        // The group's key is --key-file's.
        let [old_group, new_group] =
            [&self.multicast, &new.multicast].map(|m| m.map(|m| (m.group, m.interface, m.ttl)));
        let group = |m: &Option<_>| m.map_or_else(|| "none".to_owned(), |(g, i, t)| format!("{g} on {i}, ttl {t}"));
        differs(&mut lines, "--multicast", &old_group, &new_group, group);
        let interface = |m: &Option<std::net::Ipv4Addr>| m.map_or_else(|| "none".to_owned(), |m| m.to_string());
        differs(&mut lines, "--mdns", &self.mdns, &new.mdns, interface);
        differs(&mut lines, "--mdns-import", &self.mdns_import, &new.mdns_import, |t| t.join(","));
        // Keys are never shown.
        differs(&mut lines, "--key-file", &self.key, &new.key, |k| {
            if k.is_some() { "the key" } else { "no key" }.into()
        });
        differs(&mut lines, "--require-key", &self.require_key, &new.require_key, |r| format!("{r:?}").to_lowercase());
        lines
    }
}

/// What a metrics listener allows: a request head within [`HTTP_HEAD_TIMEOUT`] of connecting,
/// then a few seconds to read the answer. Slow clients (slowloris: a byte now and then) are
/// closed at the head deadline, and beyond [`METRICS_MAX_CONNECTIONS`] each new connection
/// closes the one that has waited longest for its head, so they cannot keep a scrape out.
pub const METRICS_LIMITS: StreamLimits = StreamLimits {
    max_connections: METRICS_MAX_CONNECTIONS,
    max_input: 16 * 1024,
    idle: Duration::from_secs(10),
    request: Some(HTTP_HEAD_TIMEOUT),
};

/// How long an HTTP face (`--metrics`) waits for a whole request head.
pub const HTTP_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections a metrics listener holds at once (each a file descriptor).
pub const METRICS_MAX_CONNECTIONS: usize = 512;

/// How often a broker says hello on the multicast group.
pub const GROUP_HELLO_INTERVAL: Duration = Duration::from_secs(2);

/// The address a broker listens on unless told otherwise: the protocol's
/// [`DEFAULT_BROKER`](crate::protocol::DEFAULT_BROKER), on loopback, so nothing outside the host
/// can reach it by accident.
pub const DEFAULT_LISTEN: SocketAddr = crate::protocol::DEFAULT_BROKER;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            registry: registry::Config::default(),
            max_datagram: DEFAULT_MAX_DATAGRAM,
            log_changes: false,
            multicast: None,
            replica: ReplicaConfig::default(),
            verify: VerifyConfig::default(),
            rate_limit: crate::limit::RateLimit::default(),
            policy: crate::service::policy::Policy::default(),
            key: None,
            require_key: crate::service::policy::RequireKey::No,
            dns_listen: None,
            dns: DnsConfig::default(),
            metrics: None,
            http: None,
            bridges: crate::node::BridgeConfig::default(),
            watches: crate::node::WatchConfig::default(),
            cluster: crate::protocol::DEFAULT_CLUSTER.to_owned(),
            mdns: None,
            mdns_import: Vec::new(),
        }
    }
}

/// A bound broker, ready to [`run`](Broker::run).
#[derive(Debug)]
pub struct Broker {
    shell: Shell<Node>,
    local_addr: SocketAddr,
    dns_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
}

impl Broker {
    /// Binds the sockets. The broker answers nothing until [`run`](Broker::run) is called.
    pub fn bind(config: Config) -> io::Result<Broker> {
        Broker::bind_with(config, Passed::default())
    }

    /// As [`bind`](Broker::bind), with the sockets a service manager passed (systemd socket
    /// activation; see [`Passed`]) instead of those bound to `--listen`, `--metrics` and
    /// `--http`: datagrams and connections that come while the broker restarts wait in them.
    pub fn bind_with(config: Config, passed: Passed) -> io::Result<Broker> {
        let socket = match passed.udp {
            Some(socket) => mio::net::UdpSocket::from_std(socket),
            None => crate::net::bind_udp(config.listen)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on udp {}: {e}", config.listen)))?,
        };
        let local_addr = socket.local_addr()?;
        if config.dns_listen.is_some() {
            // Checked here, so that a bad domain stops the broker rather than its DNS face.
            crate::node::dns::Zone::new(&config.dns).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let dns = config.dns_listen.map(bind_dns).transpose()?;
        // RFC 6762 §11: mDNS answers only its own link; a link whose network is unknown would
        // take (and answer) every source, so `--mdns` refuses to start instead.
        let mdns_link = match config.mdns {
            Some(interface) => Some(crate::mdns::socket::link_network(interface).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot use mDNS on {interface}: no interface has that address (its netmask is unknown)"),
                )
            })?),
            None => None,
        };
        let group = config.multicast.map(|multicast| GroupConfig {
            group: multicast.group.into(),
            origin: crate::multicast::origin(),
            hello_interval: GROUP_HELLO_INTERVAL,
        });
        let node = Node::new(
            NodeConfig {
                registry: config.registry,
                max_datagram: config.max_datagram,
                log_changes: config.log_changes,
                unicast: local_addr,
                group,
                incarnation: crate::random::u64(),
                replica: config.replica,
                verify: config.verify,
                rate_limit: config.rate_limit,
                policy: config.policy,
                require_key: config.require_key,
                key: config.key.or(config.multicast.and_then(|m| m.key)),
                wall: crate::node::WallClock::now(),
                dns: dns.is_some().then_some(config.dns),
                bridges: config.bridges,
                watches: config.watches,
                watch_key: crate::random::key(),
                cluster: config.cluster,
                mdns: config.mdns.map(|_| MdnsConfig {
                    link: mdns_link,
                    own: config.mdns,
                    ..MdnsConfig::new(config.mdns_import, crate::random::u64())
                }),
                ..NodeConfig::default()
            },
            Uuid::new_v4,
        );
        let mut shell = Shell::new(node)?;
        shell.add_udp(Face::Client, socket)?;
        if let Some(multicast) = &config.multicast {
            let explain = |e| crate::multicast::explain(e, multicast);
            shell.add_udp(Face::Group, crate::multicast::receiver(multicast).map_err(explain)?)?;
            shell.add_udp(Face::GroupOut, crate::multicast::loop_sender(multicast).map_err(explain)?)?;
        }
        if let Some(interface) = config.mdns {
            let socket = crate::mdns::socket::bind(interface).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot use mDNS (udp 5353, group 224.0.0.251) on {interface}: {e}"))
            })?;
            shell.add_udp(Face::Mdns, socket)?;
        }
        let mut dns_addr = None;
        if let Some((udp, tcp)) = dns {
            dns_addr = Some(udp.local_addr()?);
            shell.add_udp(Face::Dns, udp)?;
            shell.add_listener(Face::DnsTcp, tcp, DNS_TCP_LIMITS)?;
        }
        let metrics_addr = match (passed.metrics, config.metrics) {
            (Some(listener), _) => Some(add_passed(&mut shell, listener, Face::Metrics, METRICS_LIMITS)?),
            (None, Some(addr)) => Some(listen_tcp(&mut shell, addr, Face::Metrics, METRICS_LIMITS, "--metrics")?),
            (None, None) => None,
        };
        let http_addr = match (passed.http, config.http) {
            (Some(listener), _) => Some(add_passed(&mut shell, listener, Face::Http, crate::http::LIMITS)?),
            (None, Some(addr)) => Some(listen_tcp(&mut shell, addr, Face::Http, crate::http::LIMITS, "--http")?),
            (None, None) => None,
        };
        Ok(Broker { shell, local_addr, dns_addr, metrics_addr, http_addr })
    }

    /// The address the DNS face is really bound to (UDP and TCP), if it has one.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns_addr
    }

    /// The address the metrics listener is really bound to, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address the HTTP face (`--http`) is really bound to, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address the socket is really bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to hand the running broker commands from another thread: a reload
    /// ([`crate::node::Command::Reload`], on SIGHUP), taken at once.
    pub fn commands(&mut self) -> crate::shell::Commands<crate::node::Command> {
        self.shell.commands()
    }

    /// Answers datagrams (and DNS) until `shutdown` is requested.
    pub fn run(self, shutdown: &Shutdown) -> io::Result<()> {
        self.shell.run(shutdown).map(drop)
    }
}

/// Binds a TCP listener for `face` (named by `flag` in errors) and adds it to the shell:
/// returns the address it is bound to.
fn listen_tcp(
    shell: &mut Shell<Node>,
    addr: SocketAddr,
    face: Face,
    limits: StreamLimits,
    flag: &str,
) -> io::Result<SocketAddr> {
    let listener = crate::net::bind_tcp(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on tcp {addr} for {flag}: {e}")))?;
    let bound = listener.local_addr()?;
    shell.add_listener(face, listener, limits)?;
    Ok(bound)
}

/// Serves `face` on a TCP listener a service manager passed.
fn add_passed(
    shell: &mut Shell<Node>,
    listener: std::net::TcpListener,
    face: Face,
    limits: StreamLimits,
) -> io::Result<SocketAddr> {
    let listener = mio::net::TcpListener::from_std(listener);
    let bound = listener.local_addr()?;
    shell.add_listener(face, listener, limits)?;
    Ok(bound)
}

/// The names of the sockets a service manager may pass the broker (`FileDescriptorName=`).
pub const SOCKET_NAMES: [&str; 3] = ["listen", "metrics", "http"];

/// The sockets a service manager passed the broker (systemd socket activation), each in place
/// of the one its flag would bind, as the balancer takes its own: the UDP socket for clients and
/// servers (named `listen`, or any name but the others), the `--metrics` listener (named
/// `metrics`) and the `--http` one (named `http`). A passed listener serves its face even
/// without the flag.
#[derive(Debug, Default)]
pub struct Passed {
    /// In place of `--listen`.
    pub udp: Option<std::net::UdpSocket>,
    /// In place of `--metrics`.
    pub metrics: Option<std::net::TcpListener>,
    /// In place of `--http`.
    pub http: Option<std::net::TcpListener>,
}

impl Passed {
    /// Takes the broker's sockets from `activated` (see [`Passed`]), non-blocking; what is left
    /// there no part of the broker takes (the caller warns of it). Errors: more than one UDP
    /// socket for the clients.
    pub fn take(activated: &mut crate::activation::Activated) -> io::Result<Passed> {
        let metrics = activated.take_tcp("metrics", &SOCKET_NAMES, false)?.into_iter().next();
        let http = activated.take_tcp("http", &SOCKET_NAMES, false)?.into_iter().next();
        let udp = activated.take_udp("listen", &SOCKET_NAMES, true)?;
        Ok(Passed { udp, metrics, http })
    }
}

/// Binds the DNS face's UDP socket and TCP listener on the same address. With port 0, the
/// port the UDP socket got may be taken for TCP: then another is tried, a few times.
fn bind_dns(addr: SocketAddr) -> io::Result<(mio::net::UdpSocket, mio::net::TcpListener)> {
    const ATTEMPTS: usize = 16;
    let mut attempt = 1;
    loop {
        let udp = crate::net::bind_udp(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen for DNS on udp {addr}: {e}")))?;
        let bound = udp.local_addr()?;
        match crate::net::bind_tcp(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && attempt < ATTEMPTS => attempt += 1,
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot listen for DNS on tcp {bound}: {e}"))),
        }
    }
}
