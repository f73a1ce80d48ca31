//! The blocking broker client: one request, one reply, over the binary protocol, with
//! retransmission and failover between brokers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use uuid::Uuid;

use super::{ClientError, RetryPolicy, Transport, UdpTransport};
use crate::node::WallClock;
use crate::protocol::seal::{Key, ReplayGuard, Sealer};
use crate::protocol::{
    BrokerStats, Check, InstanceInfo, MAX_REPLY_LEN, Rejection, Request, Response, ServiceCount, binary, seal,
};

/// Talks to a list of brokers. It starts with a broker picked at random (so clients spread over
/// the brokers) and stays with whichever broker last answered; when that one stops answering it
/// fails over to the next in the list.
///
/// ```
/// # let broker = makler::broker::Broker::bind(makler::broker::Config {
/// #     listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).unwrap();
/// # let addr = broker.local_addr();
/// # let shutdown = makler::shutdown::Shutdown::new();
/// # let s = shutdown.clone();
/// # let thread = std::thread::spawn(move || broker.run(&s));
/// use makler::client::{BrokerClient, ClientError};
///
/// let mut client = BrokerClient::new(&[addr])?;
/// let registered = client.register("echo", None, 4000)?;
/// assert_eq!(client.query("echo")?, ["127.0.0.1:4000".parse().unwrap()]);
/// assert!(matches!(client.query("time"), Err(ClientError::NotFound)));
/// client.deregister(registered.id)?;
/// # shutdown.request(); thread.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BrokerClient<T: Transport = UdpTransport> {
    transport: T,
    brokers: Vec<SocketAddr>,
    current: usize,
    policy: RetryPolicy,
    next_id: u32,
    request: Vec<u8>,
    reply: Vec<u8>,
    /// With a key: requests leave sealed, and only sealed replies are taken.
    keyed: Option<Keyed>,
}

/// A client's key: it seals every request (afresh for each retransmission, which the broker
/// would otherwise drop as a replay) and opens the replies.
#[derive(Debug)]
struct Keyed {
    sealer: Sealer,
    /// The brokers' replies seen (a replayed reply is dropped).
    guard: ReplayGuard,
    wall: WallClock,
    sealed: Vec<u8>,
}

/// A successful registration: its id, and how often to heartbeat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The registration's id.
    pub id: Uuid,
    /// The broker's TTL: the registration expires this long after the last heartbeat.
    pub ttl: Duration,
}

impl BrokerClient<UdpTransport> {
    /// A client for these brokers over UDP, starting with one picked at random.
    pub fn new(brokers: &[SocketAddr]) -> Result<Self, ClientError> {
        if brokers.is_empty() {
            return Err(ClientError::NoBrokers);
        }
        let transport = UdpTransport::for_peers(brokers)?;
        Ok(Self::with_transport(
            transport,
            brokers,
            RetryPolicy::default(),
            crate::random::u64() as usize % brokers.len(),
        ))
    }
}

impl<T: Transport> BrokerClient<T> {
    /// A client over any transport, starting with broker `first` of the list.
    pub fn with_transport(transport: T, brokers: &[SocketAddr], policy: RetryPolicy, first: usize) -> Self {
        BrokerClient {
            transport,
            brokers: brokers.to_vec(),
            current: first % brokers.len().max(1),
            policy,
            next_id: crate::random::u64() as u32,
            request: Vec::new(),
            reply: vec![0; MAX_REPLY_LEN + seal::OVERHEAD + 1],
            keyed: None,
        }
    }

    /// From now on, seal every request with `key` (a new random sender id; see
    /// [`crate::protocol::seal`]), and take only replies sealed with it: so a broker with
    /// `--require-key` takes the requests, and a reply forged by someone without the key is
    /// ignored. A broker with no key drops sealed requests: this client then gets no answer.
    pub fn set_key(&mut self, key: Key) {
        let wall = WallClock { at: self.transport.now(), unix_ms: seal::unix_ms(std::time::SystemTime::now()) };
        self.keyed = Some(Keyed {
            sealer: Sealer::new(key, crate::random::u64()),
            guard: ReplayGuard::new(),
            wall,
            sealed: Vec::new(),
        });
    }

    /// Whether requests leave sealed.
    pub fn is_keyed(&self) -> bool {
        self.keyed.is_some()
    }

    /// The key requests are sealed with, if any: a [`Watch`](super::Watch) started on this
    /// client's behalf (a [`Resolver`](super::Resolver)'s) seals with it too.
    pub(crate) fn key(&self) -> Option<Key> {
        self.keyed.as_ref().map(|keyed| *keyed.sealer.key())
    }

    /// Sends the request in `self.request` to `to`, sealed afresh with a key.
    fn send_request(&mut self, to: SocketAddr) -> Result<(), ClientError> {
        match &mut self.keyed {
            Some(keyed) => {
                let now_ms = keyed.wall.unix_ms(self.transport.now());
                keyed.sealer.seal(&self.request, now_ms, &mut keyed.sealed);
                self.transport.send(to, &keyed.sealed)?;
            }
            None => self.transport.send(to, &self.request)?,
        }
        Ok(())
    }

    /// The broker the next request goes to first.
    pub fn current_broker(&self) -> Option<SocketAddr> {
        self.brokers.get(self.current).copied()
    }

    /// The brokers, in the order given.
    pub fn brokers(&self) -> &[SocketAddr] {
        &self.brokers
    }

    /// The retransmission policy.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Changes the retransmission policy.
    pub fn set_policy(&mut self, policy: RetryPolicy) {
        self.policy = policy;
    }

    /// The transport (and through it, the clock the client goes by).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably: to wait on the client's clock.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Sends one request and returns the reply, retransmitting and failing over as the policy
    /// says. Replies that do not carry this request's id (late answers to earlier requests) are
    /// ignored, so retransmitting is safe. A broker that answers [`Response::CatchingUp`] does
    /// not know yet: the next broker is asked at once, and only when none knows better is
    /// `CatchingUp` the answer.
    pub fn call(&mut self, request: &Request<'_>) -> Result<Response, ClientError> {
        if self.brokers.is_empty() {
            return Err(ClientError::NoBrokers);
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.request.clear();
        binary::encode_request(id, request, &mut self.request);

        let mut catching_up: Vec<usize> = Vec::new();
        for (broker, wait) in self.policy.plan(self.brokers.len(), self.current) {
            if catching_up.contains(&broker) {
                continue;
            }
            self.send_request(self.brokers[broker])?;
            let deadline = self.transport.now() + wait;
            while let Some((len, from)) = self.transport.recv(&mut self.reply, deadline)? {
                let Some(answered) = self.brokers.iter().position(|&b| b == from) else { continue };
                let reply = match &mut self.keyed {
                    // Only a sealed reply is the broker's: anything else is ignored.
                    Some(keyed) => {
                        let now_ms = keyed.wall.unix_ms(self.transport.now());
                        match keyed.guard.open(keyed.sealer.key(), &self.reply[..len], now_ms) {
                            Ok(inner) => inner,
                            Err(_) => continue,
                        }
                    }
                    None => &self.reply[..len],
                };
                match binary::decode_response(reply) {
                    Ok((reply_id, Response::CatchingUp)) if reply_id == id => {
                        if !catching_up.contains(&answered) {
                            catching_up.push(answered);
                        }
                        if answered == broker {
                            break;
                        }
                    }
                    Ok((reply_id, response)) if reply_id == id => {
                        self.current = answered;
                        return Ok(response);
                    }
                    // Another request's reply, or garbage from a broker: keep waiting.
                    _ => {}
                }
            }
        }
        if !catching_up.is_empty() {
            return Ok(Response::CatchingUp);
        }
        Err(ClientError::Unreachable(self.brokers.clone()))
    }

    /// Sends a request once to the current broker without waiting for the reply: for news the
    /// sender need not hear back about (a late reply is ignored by the next call).
    pub fn notify(&mut self, request: &Request<'_>) -> Result<(), ClientError> {
        let Some(broker) = self.current_broker() else { return Err(ClientError::NoBrokers) };
        self.next_id = self.next_id.wrapping_add(1);
        self.request.clear();
        binary::encode_request(self.next_id, request, &mut self.request);
        self.send_request(broker)
    }

    /// Registers `service` at `ip:port` (`ip: None`: the address the broker sees this client
    /// at), or refreshes that registration. Declares no health check: see
    /// [`register_checked`](Self::register_checked).
    pub fn register(&mut self, service: &str, ip: Option<IpAddr>, port: u16) -> Result<Registered, ClientError> {
        self.register_checked(service, ip, port, Check::None)
    }

    /// [`register_checked`](Self::register_checked) with the endpoint's metadata (see
    /// [`crate::meta`]), which replaces what the lease carried. Empty metadata sends a plain
    /// or checked register, which leaves the lease's metadata as it is. A boolean attribute
    /// (from a TXT record) goes as `key=`. A broker older than metadata refuses the request as
    /// malformed: then it is sent again without the pairs.
    pub fn register_meta(
        &mut self,
        service: &str,
        ip: Option<IpAddr>,
        port: u16,
        check: Check<&str>,
        meta: &crate::meta::Metadata,
    ) -> Result<Registered, ClientError> {
        if meta.is_empty() {
            return self.register_checked(service, ip, port, check);
        }
        let pairs = meta.iter().map(|pair| (pair.key, pair.value_str().unwrap_or_default())).collect();
        match self.call(&Request::RegisterMeta { service, ip, port, check, meta: pairs })? {
            Response::Error(Rejection::Malformed { .. }) => self.register_checked(service, ip, port, check),
            Response::Registered { id, ttl_ms } => Ok(Registered { id, ttl: Duration::from_millis(ttl_ms.into()) }),
            other => Err(unexpected(other)),
        }
    }

    /// [`register`](Self::register) with the health check the broker may run on the endpoint
    /// (see [`Check`]). A broker older than declared checks refuses the request as malformed:
    /// then the registration is sent again without the check (such a broker checks with a
    /// TCP connect whatever is declared).
    pub fn register_checked(
        &mut self,
        service: &str,
        ip: Option<IpAddr>,
        port: u16,
        check: Check<&str>,
    ) -> Result<Registered, ClientError> {
        let plain = Request::Register { service, ip, port };
        let request = match check {
            Check::None => plain.clone(),
            check => Request::RegisterChecked { service, ip, port, check },
        };
        let reply = match self.call(&request)? {
            Response::Error(Rejection::Malformed { .. }) if request != plain => self.call(&plain)?,
            reply => reply,
        };
        match reply {
            Response::Registered { id, ttl_ms } => Ok(Registered { id, ttl: Duration::from_millis(ttl_ms.into()) }),
            other => Err(unexpected(other)),
        }
    }

    /// Renews a registration; [`ClientError::NotFound`] means it expired: register again.
    pub fn heartbeat(&mut self, id: Uuid) -> Result<(), ClientError> {
        match self.call(&Request::Heartbeat { id })? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Removes a registration at once.
    pub fn deregister(&mut self, id: Uuid) -> Result<(), ClientError> {
        match self.call(&Request::Deregister { id })? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The live instances of `service`, in the broker's rotating order. When every broker
    /// that answered is still catching up, the service is taken as not registered.
    pub fn query(&mut self, service: &str) -> Result<Vec<SocketAddr>, ClientError> {
        match self.call(&Request::Query { service })? {
            Response::Instances(instances) => Ok(instances),
            Response::CatchingUp => Err(ClientError::NotFound),
            other => Err(unexpected(other)),
        }
    }

    /// [`query`](Self::query) answered from the broker's own table only: a broker with bridges
    /// does not ask them (a service that lives only at another site is not found).
    pub fn query_local(&mut self, service: &str) -> Result<Vec<SocketAddr>, ClientError> {
        match self.call(&Request::QueryLocal { service })? {
            Response::Instances(instances) => Ok(instances),
            Response::CatchingUp => Err(ClientError::NotFound),
            other => Err(unexpected(other)),
        }
    }

    /// Reports an instance of `service` that could not be reached; the broker checks it and
    /// removes it everywhere if it is dead. [`ClientError::NotFound`]: it is not registered.
    pub fn report(&mut self, service: &str, endpoint: SocketAddr) -> Result<(), ClientError> {
        match self.call(&Request::Report { service, endpoint })? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Every service with live instances, and how many each has, page after page from the
    /// broker that answers the first (in the table's order).
    pub fn services(&mut self) -> Result<Vec<ServiceCount>, ClientError> {
        let mut all = Vec::new();
        let mut cursor = 0;
        for _ in 0..MAX_PAGES {
            match self.call(&Request::Services { cursor })? {
                Response::Services(page) => {
                    all.extend(page.services);
                    match page.next {
                        Some(next) if next > cursor => cursor = next,
                        _ => return Ok(all),
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(all)
    }

    /// Every live instance of `service`, with its age, source and declared check;
    /// [`ClientError::NotFound`] when it has none. (From a broker older than checks, which
    /// answers `InstancesChecked` as malformed, without the checks: each says none.)
    pub fn instances(&mut self, service: &str) -> Result<Vec<InstanceInfo>, ClientError> {
        let mut all = Vec::new();
        let mut cursor = 0;
        // What the broker answers: 2 checks and metadata, 1 checks, 0 neither (older ones
        // refuse the newer requests as malformed).
        let mut detail = 2;
        for _ in 0..MAX_PAGES {
            let request = match detail {
                2 => Request::InstancesMeta { service, cursor },
                1 => Request::InstancesChecked { service, cursor },
                _ => Request::Instances { service, cursor },
            };
            let reply = match self.call(&request)? {
                Response::InstanceListMeta { mut page, checks, meta } => {
                    for ((instance, check), pairs) in page.instances.iter_mut().zip(checks).zip(meta) {
                        instance.check = check;
                        instance.meta = crate::protocol::listing::metadata_of(&pairs);
                    }
                    Response::InstanceList(page)
                }
                Response::InstanceListChecked { mut page, checks } => {
                    for (instance, check) in page.instances.iter_mut().zip(checks) {
                        instance.check = check;
                    }
                    Response::InstanceList(page)
                }
                Response::Error(Rejection::Malformed { .. }) if detail > 0 => {
                    detail -= 1;
                    continue;
                }
                reply => reply,
            };
            match reply {
                Response::InstanceList(page) => {
                    all.extend(page.instances);
                    match page.next {
                        Some(next) if next > cursor => cursor = next,
                        _ => return Ok(all),
                    }
                }
                // The last instances went between two pages.
                Response::NotFound | Response::CatchingUp if !all.is_empty() => return Ok(all),
                other => return Err(unexpected(other)),
            }
        }
        Ok(all)
    }

    /// The broker's counters, by name (`stats["instances"]`, or [`BrokerStats::get`] for one an
    /// older broker may lack; those of a newer broker are there too), and its peers and bridges.
    pub fn stats(&mut self) -> Result<BrokerStats, ClientError> {
        match self.call(&Request::Stats)? {
            Response::Stats(stats) => Ok(*stats),
            other => Err(unexpected(other)),
        }
    }
}

/// The most pages a listing asks for: far more than any table holds, so that a broker that
/// kept sending cursors could not keep a client busy for ever.
const MAX_PAGES: usize = 100_000;

/// Maps the replies that are not the expected success to errors.
fn unexpected(response: Response) -> ClientError {
    match response {
        Response::NotFound => ClientError::NotFound,
        Response::CatchingUp => ClientError::CatchingUp,
        Response::Error(rejection) => ClientError::Rejected(rejection),
        other => ClientError::Protocol(format!("unexpected reply {other:?}")),
    }
}

#[cfg(test)]
mod tests;
