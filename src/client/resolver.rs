//! The client side: find an instance of a service and connect to it, riding over dead ones.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{BrokerClient, ClientError, Transport, UdpTransport};

/// How a [`Resolver`] caches and connects.
#[derive(Debug, Clone, Copy)]
pub struct ResolverConfig {
    /// How long a broker's answer is used before asking again.
    pub cache_for: Duration,
    /// How long one TCP connect may take before the next instance is tried.
    pub connect_timeout: Duration,
    /// How often to ask the broker again while waiting for a service to appear.
    pub poll_interval: Duration,
    /// Watch each service asked for (a [`Watch`](super::Watch), over a UDP socket of its
    /// own) instead of asking again after `cache_for`: the instances are always the broker's
    /// latest, and nothing is asked while nothing changes. The watch is sealed with the
    /// client's key when it has one ([`BrokerClient::set_key`]). Falls back to asking when the
    /// broker does not answer the watch or refuses it, and tries the watch again 30 s later.
    pub watch: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            cache_for: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(100),
            watch: false,
        }
    }
}

/// Why no connection to a service could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The broker knows no live instance of the service. Start a server for it, or wait for one
    /// (see [`Resolver::connect`]).
    #[error("service {0:?} is not registered")]
    NotFound(String),
    /// The broker could not be asked.
    #[error("{0}")]
    Broker(ClientError),
    /// Every instance the broker named refused or timed out the connection.
    #[error("no instance of {service:?} accepted a connection ({})", describe(.tried))]
    AllFailed {
        /// The service.
        service: String,
        /// Each instance tried, with its error.
        tried: Vec<(SocketAddr, io::Error)>,
    },
}

fn describe(tried: &[(SocketAddr, io::Error)]) -> String {
    tried.iter().map(|(addr, e)| format!("{addr}: {e}")).collect::<Vec<_>>().join("; ")
}

struct Cached {
    instances: Vec<SocketAddr>,
    fetched: Instant,
    next: usize,
}

/// Finds instances of services through the broker and connects to them.
///
/// Answers are cached for [`ResolverConfig::cache_for`]; successive connects rotate through the
/// instances. A connect that fails moves on to the next instance and then to a fresh answer from
/// the broker, so a dead server costs the caller time, not an error, while another instance lives.
/// The resolver also tells the broker (`report`, without waiting for the answer), which checks the
/// instance and removes it everywhere if it is dead, so other clients stop trying it too.
///
/// ```no_run
/// use std::io::{BufRead, BufReader, Write};
/// use std::time::Duration;
/// use makler::client::Resolver;
///
/// let mut resolver = Resolver::new(&["127.0.0.1:7000".parse()?])?;
/// let (mut stream, server) = resolver.connect("upper", Some(Duration::from_secs(5)))?;
/// stream.write_all(b"hello\n")?;
/// let mut answer = String::new();
/// BufReader::new(stream).read_line(&mut answer)?;
/// println!("{server} says {answer}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Resolver<T: Transport = UdpTransport> {
    client: BrokerClient<T>,
    config: ResolverConfig,
    cache: HashMap<String, Cached>,
    watches: HashMap<String, super::Watch>,
    /// When a watch of a service was last refused or not answered: it is not asked for again
    /// before [`WATCH_RETRY`] has passed, and the service is asked for meanwhile.
    watch_refused: HashMap<String, Instant>,
}

/// How long a resolver in watch mode asks instead of watching after a broker refused the watch
/// (one that requires a key this client does not have, say): without it, every lookup would
/// start a watch that the broker refuses again.
const WATCH_RETRY: Duration = Duration::from_secs(30);

impl Resolver<UdpTransport> {
    /// A resolver asking these brokers over UDP, with default settings.
    pub fn new(brokers: &[SocketAddr]) -> Result<Self, ClientError> {
        Ok(Self::with_client(BrokerClient::new(brokers)?, ResolverConfig::default()))
    }

    /// Connects over TCP to an instance of `service`. With `wait`, a service that is not
    /// registered (or whose instances all fail) is asked for again until `wait` has passed.
    pub fn connect(&mut self, service: &str, wait: Option<Duration>) -> Result<(TcpStream, SocketAddr), ConnectError> {
        let timeout = self.config.connect_timeout;
        self.connect_with(service, wait, |addr| TcpStream::connect_timeout(&addr, timeout))
    }
}

impl<T: Transport> Resolver<T> {
    /// A resolver over a given broker client.
    pub fn with_client(client: BrokerClient<T>, config: ResolverConfig) -> Self {
        Resolver { client, config, cache: HashMap::new(), watches: HashMap::new(), watch_refused: HashMap::new() }
    }

    /// The broker client.
    pub fn client(&mut self) -> &mut BrokerClient<T> {
        &mut self.client
    }

    /// The live instances of `service`, from the cache while it is fresh.
    pub fn instances(&mut self, service: &str) -> Result<Vec<SocketAddr>, ConnectError> {
        self.cached(service).map(|c| c.instances.clone())
    }

    /// Forgets the cached answer for `service`, so the next call asks the broker.
    pub fn invalidate(&mut self, service: &str) {
        self.cache.remove(service);
    }

    /// Like [`Resolver::connect`], with the connection made by `connect` (tests pass a fake).
    pub fn connect_with<S>(
        &mut self,
        service: &str,
        wait: Option<Duration>,
        mut connect: impl FnMut(SocketAddr) -> io::Result<S>,
    ) -> Result<(S, SocketAddr), ConnectError> {
        let deadline = wait.map(|w| self.client.transport().now() + w);
        loop {
            let error = match self.try_connect(service, &mut connect) {
                Ok(found) => return Ok(found),
                Err(e @ (ConnectError::NotFound(_) | ConnectError::AllFailed { .. })) => e,
                Err(e) => return Err(e),
            };
            let now = self.client.transport().now();
            match deadline {
                Some(deadline) if now < deadline => {
                    self.client.transport_mut().sleep_until((now + self.config.poll_interval).min(deadline));
                    self.invalidate(service);
                }
                _ => return Err(error),
            }
        }
    }

    /// One round: the cached instances in rotation, then a fresh answer's untried ones.
    fn try_connect<S>(
        &mut self,
        service: &str,
        connect: &mut impl FnMut(SocketAddr) -> io::Result<S>,
    ) -> Result<(S, SocketAddr), ConnectError> {
        let mut tried: Vec<(SocketAddr, io::Error)> = Vec::new();
        for fresh in [false, true] {
            if fresh {
                self.invalidate(service);
            }
            let cached = match self.cached(service) {
                Ok(cached) => cached,
                Err(ConnectError::NotFound(_)) if !tried.is_empty() => break,
                Err(e) => return Err(e),
            };
            let start = cached.next;
            cached.next = cached.next.wrapping_add(1);
            let order: Vec<SocketAddr> =
                (0..cached.instances.len()).map(|k| cached.instances[(start + k) % cached.instances.len()]).collect();
            for addr in order {
                if tried.iter().any(|(t, _)| *t == addr) {
                    continue;
                }
                match connect(addr) {
                    Ok(stream) => return Ok((stream, addr)),
                    Err(e) => {
                        // Best effort: a lost report only means the broker learns later.
                        let _ = self.client.notify(&crate::protocol::Request::Report { service, endpoint: addr });
                        tried.push((addr, e));
                        // Skip it until the next answer from the broker.
                        if let Some(c) = self.cache.get_mut(service) {
                            c.instances.retain(|&i| i != addr);
                        }
                    }
                }
            }
        }
        Err(ConnectError::AllFailed { service: service.to_owned(), tried })
    }

    /// With [`ResolverConfig::watch`]: the watched instances of `service` put in the cache as
    /// fresh (a watch is started on first use); `false` when there is no watch to use.
    fn refresh_from_watch(&mut self, service: &str) -> bool {
        if !self.watches.contains_key(service) {
            let now = self.client.transport().now();
            if self.watch_refused.get(service).is_some_and(|&at| now.duration_since(at) < WATCH_RETRY) {
                return false;
            }
            // Sealed as the client's requests are: a broker with `--require-key` refuses an
            // unsealed watch, and a keyed watch takes only notifications sealed with the key.
            match super::Watch::start_keyed(self.client.brokers(), service, self.client.key()) {
                Ok(watch) => {
                    self.watch_refused.remove(service);
                    self.watches.insert(service.to_owned(), watch);
                }
                Err(_) => {
                    self.watch_refused.insert(service.to_owned(), now);
                    return false;
                }
            }
        }
        let Some(watch) = self.watches.get_mut(service) else { return false };
        // Take what has arrived, waiting no more than a moment.
        let soon = Instant::now() + Duration::from_micros(200);
        loop {
            match watch.next(soon) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    self.watches.remove(service);
                    return false;
                }
            }
        }
        let instances = watch.instances().to_vec();
        let now = self.client.transport().now();
        let next = self.cache.get(service).map_or(0, |c| c.next);
        self.cache.insert(service.to_owned(), Cached { instances, fetched: now, next });
        true
    }

    fn cached(&mut self, service: &str) -> Result<&mut Cached, ConnectError> {
        if self.config.watch && self.refresh_from_watch(service) {
            return match self.cache.get_mut(service) {
                Some(cached) if !cached.instances.is_empty() => Ok(cached),
                _ => Err(ConnectError::NotFound(service.to_owned())),
            };
        }
        let now = self.client.transport().now();
        let fresh = self
            .cache
            .get(service)
            .is_some_and(|c| !c.instances.is_empty() && now.duration_since(c.fetched) < self.config.cache_for);
        if !fresh {
            let instances = match self.client.query(service) {
                Ok(instances) => instances,
                Err(ClientError::NotFound) => {
                    self.cache.remove(service);
                    return Err(ConnectError::NotFound(service.to_owned()));
                }
                Err(e) => return Err(ConnectError::Broker(e)),
            };
            self.cache.insert(service.to_owned(), Cached { instances, fetched: now, next: 0 });
        }
        self.cache.get_mut(service).ok_or_else(|| ConnectError::NotFound(service.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::client::RetryPolicy;
    use crate::client::sim::SimNet;
    use crate::protocol::{Request, Response};

    const BROKER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7000);

    fn server(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A resolver whose broker answers queries from a shared list (empty: NOT FOUND), counting
    /// the queries.
    fn resolver(live: Arc<Mutex<Vec<SocketAddr>>>, queries: Arc<Mutex<u32>>) -> Resolver<SimNet> {
        let net = SimNet::new().broker(BROKER, move |request| {
            if let Request::Report { .. } = request {
                return Some(Response::Ok);
            }
            assert!(matches!(request, Request::Query { .. }));
            *queries.lock().unwrap() += 1;
            let live = live.lock().unwrap().clone();
            Some(if live.is_empty() { Response::NotFound } else { Response::Instances(live) })
        });
        let client = BrokerClient::with_transport(net, &[BROKER], RetryPolicy::default(), 0);
        Resolver::with_client(client, ResolverConfig::default())
    }

    #[test]
    fn connects_rotate_over_a_cached_answer() {
        let live = Arc::new(Mutex::new(vec![server(1), server(2), server(3)]));
        let queries = Arc::new(Mutex::new(0));
        let mut r = resolver(live, Arc::clone(&queries));
        let picks: Vec<_> = (0..6).map(|_| r.connect_with("echo", None, Ok).unwrap().1).collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3].map(server));
        assert_eq!(*queries.lock().unwrap(), 1, "one broker query for all six");

        r.client().transport_mut().advance(Duration::from_secs(1));
        r.connect_with("echo", None, Ok).unwrap();
        assert_eq!(*queries.lock().unwrap(), 2, "the cache expired");
    }

    #[test]
    fn a_dead_instance_costs_a_retry_not_an_error() {
        let live = Arc::new(Mutex::new(vec![server(1), server(2)]));
        let mut r = resolver(live, Arc::default());
        let mut attempts = Vec::new();
        let mut connect = |addr: SocketAddr| {
            attempts.push(addr);
            if addr == server(1) { Err(io::Error::from(io::ErrorKind::ConnectionRefused)) } else { Ok(addr) }
        };
        for _ in 0..3 {
            assert_eq!(r.connect_with("echo", None, &mut connect).unwrap().1, server(2));
        }
        // The dead one was tried once, then skipped for as long as the answer is cached.
        assert_eq!(attempts, [server(1), server(2), server(2), server(2)]);
        // And reported to the broker, once.
        let reports: Vec<_> = r
            .client()
            .transport()
            .sent_requests()
            .into_iter()
            .filter_map(|(_, request)| match request {
                crate::client::sim::OwnedRequest::Report { service, endpoint } => Some((service, endpoint)),
                crate::client::sim::OwnedRequest::Other(_) => None,
            })
            .collect();
        assert_eq!(reports, [("echo".to_owned(), server(1))]);
    }

    #[test]
    fn when_every_instance_fails_the_broker_is_asked_again() {
        let live = Arc::new(Mutex::new(vec![server(1)]));
        let queries = Arc::new(Mutex::new(0));
        let mut r = resolver(Arc::clone(&live), Arc::clone(&queries));
        r.instances("echo").unwrap();
        // Server 1 died and server 2 came up since the answer was cached.
        *live.lock().unwrap() = vec![server(1), server(2)];
        let refused = |addr: SocketAddr| {
            if addr == server(1) { Err(io::Error::from(io::ErrorKind::ConnectionRefused)) } else { Ok(addr) }
        };
        assert_eq!(r.connect_with("echo", None, refused).unwrap().1, server(2));
        assert_eq!(*queries.lock().unwrap(), 2);

        let err = r.connect_with("echo", None, |_| Err::<(), _>(io::Error::from(io::ErrorKind::TimedOut))).unwrap_err();
        let ConnectError::AllFailed { tried, .. } = &err else { panic!("{err}") };
        assert_eq!(tried.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [server(2), server(1)]);
        assert!(err.to_string().starts_with("no instance of \"echo\" accepted a connection (127.0.0.1:2: "), "{err}");
    }

    #[test]
    fn a_missing_service_fails_at_once_or_is_waited_for() {
        let live = Arc::new(Mutex::new(vec![]));
        let queries = Arc::new(Mutex::new(0));
        let mut r = resolver(Arc::clone(&live), Arc::clone(&queries));
        assert!(matches!(r.connect_with("echo", None, Ok), Err(ConnectError::NotFound(s)) if s == "echo"));
        assert_eq!(*queries.lock().unwrap(), 1);

        // Waiting 1 s polls every 100 ms and gives up at the deadline.
        let start = r.client().transport().now();
        assert!(matches!(r.connect_with("echo", Some(Duration::from_secs(1)), Ok), Err(ConnectError::NotFound(_))));
        assert_eq!(r.client().transport().now() - start, Duration::from_secs(1));
        assert_eq!(*queries.lock().unwrap(), 1 + 11);
    }

    #[test]
    fn a_service_that_appears_while_waiting_is_found() {
        // The broker knows the service from its third query on.
        let queries = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&queries);
        let net = SimNet::new().broker(BROKER, move |_| {
            let mut n = counter.lock().unwrap();
            *n += 1;
            Some(if *n >= 3 { Response::Instances(vec![server(9)]) } else { Response::NotFound })
        });
        let client = BrokerClient::with_transport(net, &[BROKER], RetryPolicy::default(), 0);
        let mut r = Resolver::with_client(client, ResolverConfig::default());
        let start = r.client().transport().now();
        assert_eq!(r.connect_with("echo", Some(Duration::from_secs(5)), Ok).unwrap().1, server(9));
        assert_eq!(r.client().transport().now() - start, Duration::from_millis(200));
        assert_eq!(*queries.lock().unwrap(), 3);
    }

    #[test]
    fn broker_trouble_is_reported_as_such() {
        let net = SimNet::new();
        let client = BrokerClient::with_transport(net, &[BROKER], RetryPolicy::default(), 0);
        let mut r = Resolver::with_client(client, ResolverConfig::default());
        let err = r.connect_with("echo", Some(Duration::from_secs(10)), Ok).unwrap_err();
        assert!(matches!(err, ConnectError::Broker(ClientError::Unreachable(_))), "{err}");
    }
}
