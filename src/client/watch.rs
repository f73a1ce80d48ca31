//! The client side of a watch: told of every change to a service's live set instead of
//! asking again (see `protocol.md`, "Watches").
//!
//! A [`Watch`] asks one broker (failing over to the next), keeps the watch alive by renewing it
//! at a third of the broker's TTL, and checks the sequence numbers: a gap (a notification lost
//! on the way) is repaired by watching again, which answers with the whole live set.
//!
//! A broker starts a watch only when the watcher echoes the cookie it answered `watch` with
//! (the proof that the watcher receives at its address, so that nobody can aim notifications
//! at another): the `Watch` echoes it at once, and renews with the cookie it holds until the
//! broker answers with a new one. A broker older than cookies answers `watch` at once, which
//! is taken as well. [`Watch::unwatch`] ends the watch with that cookie too: a broker ends a
//! watch only for whoever receives at the watcher's address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{ClientError, Transport, UdpTransport};
use crate::node::WallClock;
use crate::protocol::seal::{self, Key, ReplayGuard, Sealer};
use crate::protocol::{Rejection, Request, Response, binary};

/// How long to wait for a broker's answer to `watch` before trying the next.
const ANSWER_WAIT: Duration = Duration::from_millis(500);

/// What [`Watch::next`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The live set changed; the next sequence number.
    Changed {
        /// The new sequence number.
        seq: u64,
        /// The live instances now.
        instances: Vec<SocketAddr>,
    },
    /// A change was missed (a gap in the sequence, or a broker that restarted the count) and
    /// the watch was asked again: the live set as it is now.
    Resynced {
        /// The sequence number now.
        seq: u64,
        /// The live instances now.
        instances: Vec<SocketAddr>,
    },
}

/// A watch on one service: asks one broker (failing over to the next), renews the watch at a
/// third of the broker's TTL, and repairs a gap in the sequence numbers by watching again.
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// use makler::client::Watch;
///
/// let mut watch = Watch::start(&["127.0.0.1:7000".parse()?], "web")?;
/// println!("now: {:?}", watch.instances());
/// while let Some(event) = watch.next(Instant::now() + Duration::from_secs(60))? {
///     println!("{event:?}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Watch<T: Transport = UdpTransport> {
    transport: T,
    brokers: Vec<SocketAddr>,
    broker: usize,
    service: String,
    request_id: u32,
    seq: u64,
    instances: Vec<SocketAddr>,
    renew_at: Instant,
    pending: Option<WatchEvent>,
    /// The last cookie the broker gave (see the [module documentation](self)).
    cookie: Option<u64>,
    /// With a key: requests leave sealed, and only sealed answers and notifications are taken.
    keyed: Option<Keyed>,
    /// Whether the watch asks for each instance's metadata (`WatchMeta`).
    with_meta: bool,
    /// The metadata of each of `instances`, in order, when `with_meta` (else empty).
    meta: Vec<InstanceMeta>,
}

/// One instance's metadata as a watch is told it: its pairs, `(key, value)` (a boolean
/// attribute's value is `None`; values are bytes, as in a TXT record).
pub type InstanceMeta = Vec<(String, Option<Vec<u8>>)>;

/// A watch's key (see [`BrokerClient::set_key`](super::BrokerClient::set_key)).
#[derive(Debug)]
struct Keyed {
    sealer: Sealer,
    guard: ReplayGuard,
    wall: WallClock,
}

impl Watch<UdpTransport> {
    /// Watches `service` at the first of `brokers` that answers, over UDP.
    pub fn start(brokers: &[SocketAddr], service: &str) -> Result<Self, ClientError> {
        Self::with_transport(UdpTransport::for_peers(brokers)?, brokers, service)
    }

    /// [`start_keyed`](Self::start_keyed) for a watcher that shows metadata: asks for each
    /// instance's metadata too (a `WatchMeta` watch, whose notifications also come when only
    /// an instance's metadata changed), so that it need not ask after each change; see
    /// [`meta`](Self::meta). A broker older than metadata answers without it.
    pub fn start_with_meta(brokers: &[SocketAddr], service: &str, key: Option<Key>) -> Result<Self, ClientError> {
        Self::build(UdpTransport::for_peers(brokers)?, brokers, service, key, true)
    }

    /// [`start`](Self::start), sealing every request with `key` (when given) and taking only
    /// answers and notifications sealed with it: for brokers with `--require-key`.
    pub fn start_keyed(brokers: &[SocketAddr], service: &str, key: Option<Key>) -> Result<Self, ClientError> {
        Self::with_transport_keyed(UdpTransport::for_peers(brokers)?, brokers, service, key)
    }
}

impl<T: Transport> Watch<T> {
    /// Watches `service` over `transport`.
    pub fn with_transport(transport: T, brokers: &[SocketAddr], service: &str) -> Result<Self, ClientError> {
        Self::with_transport_keyed(transport, brokers, service, None)
    }

    /// Watches `service` over `transport`, sealing with `key` when given.
    pub fn with_transport_keyed(
        transport: T,
        brokers: &[SocketAddr],
        service: &str,
        key: Option<Key>,
    ) -> Result<Self, ClientError> {
        Self::build(transport, brokers, service, key, false)
    }

    fn build(
        transport: T,
        brokers: &[SocketAddr],
        service: &str,
        key: Option<Key>,
        with_meta: bool,
    ) -> Result<Self, ClientError> {
        let now = transport.now();
        let keyed = key.map(|key| Keyed {
            sealer: Sealer::new(key, crate::random::u64()),
            guard: ReplayGuard::new(),
            wall: WallClock { at: now, unix_ms: seal::unix_ms(std::time::SystemTime::now()) },
        });
        let mut watch = Watch {
            transport,
            brokers: brokers.to_vec(),
            broker: 0,
            service: service.to_owned(),
            request_id: 0,
            seq: 0,
            instances: Vec::new(),
            renew_at: now,
            pending: None,
            cookie: None,
            keyed,
            with_meta,
            meta: Vec::new(),
        };
        watch.subscribe()?;
        watch.pending = None;
        Ok(watch)
    }

    /// The metadata of each of [`instances`](Self::instances), in order, as last told: empty
    /// unless the watch was started [`start_with_meta`](Watch::start_with_meta).
    pub fn meta(&self) -> &[InstanceMeta] {
        &self.meta
    }

    /// The live instances, as last told.
    pub fn instances(&self) -> &[SocketAddr] {
        &self.instances
    }

    /// The sequence number, as last told.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The broker watched at.
    pub fn broker(&self) -> SocketAddr {
        self.brokers[self.broker]
    }

    /// Waits until `deadline` for the next change (renewing the watch when due); `None` when
    /// none came in time.
    pub fn next(&mut self, deadline: Instant) -> Result<Option<WatchEvent>, ClientError> {
        let mut buf = [0u8; 2048];
        loop {
            if let Some(event) = self.pending.take() {
                return Ok(Some(event));
            }
            let now = self.transport.now();
            if now >= self.renew_at {
                self.subscribe()?;
                continue;
            }
            if now >= deadline {
                return Ok(None);
            }
            let Some((len, from)) = self.transport.recv(&mut buf, deadline.min(self.renew_at))? else { continue };
            if from != self.brokers[self.broker] {
                continue;
            }
            let Some(datagram) = self.open(&buf[..len]) else { continue };
            let (service, seq, instances, meta) = match binary::decode_response(datagram) {
                Ok((_, Response::Changed { service, seq, instances })) => (service, seq, instances, Vec::new()),
                Ok((_, Response::ChangedMeta { service, seq, instances, meta })) => (service, seq, instances, meta),
                _ => continue,
            };
            if service != self.service || seq <= self.seq {
                // Another watch's, or a duplicate or a late one.
                continue;
            }
            if seq == self.seq + 1 {
                self.seq = seq;
                self.instances = instances.clone();
                self.meta = meta;
                return Ok(Some(WatchEvent::Changed { seq, instances }));
            }
            // A gap: ask for the whole state again.
            self.subscribe()?;
        }
    }

    /// Ends the watch at its broker at once, so that it sends nothing more (instead of until the
    /// watch's TTL runs out), with the cookie held: the broker ends a watch only for whoever shows
    /// it receives at the watcher's address. A cookie too old for the broker is replaced by a
    /// fresh one (a `watch` without a cookie answers it, and starts nothing). `Ok` also when the
    /// broker no longer held the watch; [`ClientError::Unreachable`] when it did not answer. A broker
    /// older than this check, which cannot read the cookie's form, is sent the bare `unwatch`.
    pub fn unwatch(mut self) -> Result<(), ClientError> {
        let broker = self.brokers[self.broker];
        let mut buf = [0u8; 2048];
        // A broker older than cookies on `unwatch` cannot read `UnwatchEcho`; it takes `Unwatch`.
        let mut older = false;
        for _ in 0..3 {
            self.send(broker, |service, cookie| match cookie {
                _ if older => Request::Unwatch { service },
                Some(cookie) => Request::UnwatchEcho { service, cookie },
                None => Request::Watch { service },
            })?;
            let deadline = self.transport.now() + ANSWER_WAIT;
            while let Some((len, from)) = self.transport.recv(&mut buf, deadline)? {
                if from != broker {
                    continue;
                }
                let Some(datagram) = self.open(&buf[..len]) else { continue };
                match binary::decode_response(datagram) {
                    Ok((id, Response::Ok | Response::NotFound)) if id == self.request_id => return Ok(()),
                    Ok((id, Response::Error(Rejection::BadCookie))) if id == self.request_id => {
                        // Too old: ask for a fresh one, and then unwatch with it.
                        self.cookie = None;
                        break;
                    }
                    Ok((id, Response::Error(Rejection::Malformed { .. }))) if id == self.request_id && !older => {
                        older = true;
                        break;
                    }
                    Ok((id, Response::WatchCookie { cookie })) if id == self.request_id => {
                        self.cookie = Some(cookie);
                        break;
                    }
                    Ok((id, Response::Error(rejection))) if id == self.request_id => {
                        return Err(ClientError::Rejected(rejection));
                    }
                    _ => {}
                }
            }
        }
        Err(ClientError::Unreachable(vec![broker]))
    }

    /// Sends `watch` (with the cookie held, if any) under a new request id.
    fn send_watch(&mut self, broker: SocketAddr) -> Result<(), ClientError> {
        let with_meta = self.with_meta;
        self.send(broker, |service, cookie| match cookie {
            Some(cookie) if with_meta => Request::WatchMeta { service, cookie },
            Some(cookie) => Request::WatchEcho { service, cookie },
            None => Request::Watch { service },
        })
    }

    /// Sends the request `make` makes of the service and the cookie held, under a new request
    /// id, sealed when keyed.
    fn send(
        &mut self,
        broker: SocketAddr,
        make: impl for<'s> FnOnce(&'s str, Option<u64>) -> Request<'s>,
    ) -> Result<(), ClientError> {
        self.request_id = self.request_id.wrapping_add(1);
        let request = make(self.service.as_str(), self.cookie);
        let mut bytes = Vec::new();
        binary::encode_request(self.request_id, &request, &mut bytes);
        if let Some(keyed) = &mut self.keyed {
            keyed.sealer.seal_in_place(&mut bytes, keyed.wall.unix_ms(self.transport.now()));
        }
        self.transport.send(broker, &bytes)?;
        Ok(())
    }

    /// What a datagram from the broker holds: itself without a key; with one, what is inside
    /// if it is sealed with it (and no replay), else nothing.
    fn open<'b>(&mut self, datagram: &'b [u8]) -> Option<&'b [u8]> {
        match &mut self.keyed {
            None => Some(datagram),
            Some(keyed) => {
                keyed.guard.open(keyed.sealer.key(), datagram, keyed.wall.unix_ms(self.transport.now())).ok()
            }
        }
    }

    /// Sends `watch` and waits for its answer, echoing the broker's cookie, failing over
    /// between brokers. A state other than the one held becomes a pending
    /// [`WatchEvent::Resynced`].
    fn subscribe(&mut self) -> Result<(), ClientError> {
        let mut buf = [0u8; 2048];
        for k in 0..self.brokers.len() {
            let broker_index = (self.broker + k) % self.brokers.len();
            let broker = self.brokers[broker_index];
            for _ in 0..2 {
                self.send_watch(broker)?;
                // A new cookie is echoed at once; a few, in case the slot turns in between.
                let mut echoes = 0;
                let deadline = self.transport.now() + ANSWER_WAIT / 2;
                while let Some((len, from)) = self.transport.recv(&mut buf, deadline)? {
                    if from != broker {
                        continue;
                    }
                    let Some(datagram) = self.open(&buf[..len]) else { continue };
                    let answer = match binary::decode_response(datagram) {
                        Ok((id, Response::WatchingMeta { seq, ttl_ms, instances, meta, .. })) => {
                            Ok((id, Response::Watching { service: String::new(), seq, ttl_ms, instances }, meta))
                        }
                        Ok((id, response)) => Ok((id, response, Vec::new())),
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok((id, Response::Watching { seq, ttl_ms, instances, .. }, meta)) if id == self.request_id => {
                            if (seq, &instances) != (self.seq, &self.instances) || broker_index != self.broker {
                                self.pending = Some(WatchEvent::Resynced { seq, instances: instances.clone() });
                            }
                            self.broker = broker_index;
                            self.seq = seq;
                            self.instances = instances;
                            self.meta = meta;
                            let ttl = Duration::from_millis(ttl_ms.into()).max(Duration::from_millis(30));
                            self.renew_at = self.transport.now() + ttl / 3;
                            return Ok(());
                        }
                        Ok((id, Response::WatchCookie { cookie }, _)) if id == self.request_id && echoes < 3 => {
                            echoes += 1;
                            self.cookie = Some(cookie);
                            self.send_watch(broker)?;
                        }
                        Ok((id, Response::Error(rejection), _)) if id == self.request_id => {
                            return Err(ClientError::Rejected(rejection));
                        }
                        _ => {}
                    }
                }
            }
        }
        Err(ClientError::Unreachable(self.brokers.clone()))
    }
}
