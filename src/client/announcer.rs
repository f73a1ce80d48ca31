//! The server side on the multicast group: announce an instance until told to stop, then say
//! goodbye, so brokers that nobody configured learn of it, and forget it at once when it goes.
//!
//! The announcements commit to a secret drawn at start ([`Multicast::AnnounceCommitted`]) and
//! the goodbye reveals it ([`Multicast::GoodbyeRevealed`]), so that a goodbye copied from a
//! sniffed announcement removes nothing. Brokers older than these forms ignore them: upgrade
//! the brokers first. An instance with metadata is announced with them
//! ([`Multicast::AnnounceMeta`]) and without (for brokers older than metadata).

use std::io;
use std::net::IpAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{RecvTimeoutError, Sender};

use crate::multicast::{self, MulticastConfig};
use crate::protocol::seal::{Sealer, unix_ms};
use crate::protocol::{Check, Multicast, binary, goodbye_commitment};

/// How an [`Announcer`] announces.
#[derive(Debug, Clone)]
pub struct AnnouncerConfig {
    /// The group, interface and TTL.
    pub multicast: MulticastConfig,
    /// The steady interval between announcements. Keep it well inside the brokers' TTL: a third
    /// leaves room for two lost datagrams.
    pub interval: Duration,
    /// The health check the announcements declare, which the brokers run (see
    /// [`Check`]): a TCP connect unless told otherwise.
    pub check: Check<Box<str>>,
    /// The instance's metadata pairs (`makler-server --meta`). When there are some, each
    /// announcement goes twice: as [`Multicast::AnnounceMeta`] with them, then as the
    /// [`Multicast::AnnounceCommitted`] that brokers older than metadata take.
    pub meta: crate::meta::Metadata,
}

impl Default for AnnouncerConfig {
    /// The default group, and an interval of a third of the default TTL.
    fn default() -> Self {
        AnnouncerConfig {
            multicast: MulticastConfig::default(),
            interval: Duration::from_millis(1500),
            check: Check::Tcp,
            meta: crate::meta::Metadata::default(),
        }
    }
}

/// When announcements go out, as offsets from the start: three in quick succession, so that a
/// broker that misses one (datagrams get lost) still learns of the server within a fraction of
/// a second, then one every `interval`.
///
/// ```
/// use std::time::Duration;
/// let ms = Duration::from_millis;
/// let first: Vec<_> = makler::client::announce_schedule(ms(1500)).take(5).collect();
/// assert_eq!(first, [ms(0), ms(100), ms(300), ms(1800), ms(3300)]);
/// ```
pub fn announce_schedule(interval: Duration) -> impl Iterator<Item = Duration> {
    let burst = [0, 100, 300].map(Duration::from_millis);
    let last = burst[2];
    burst.into_iter().chain((1u32..).map(move |k| last + interval.saturating_mul(k)))
}

/// Announces one instance on the multicast group from a background thread, until it is
/// stopped or dropped; then it sends a goodbye that makes every broker drop the instance.
#[derive(Debug)]
pub struct Announcer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Starts announcing `service` at `ip:port` (`ip: None`: the address the datagrams come from,
    /// which is the configured interface's).
    pub fn start(config: AnnouncerConfig, service: &str, ip: Option<IpAddr>, port: u16) -> io::Result<Announcer> {
        crate::registry::Limits::default()
            .check_name(service)
            .and_then(|()| config.check.validate())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let socket = multicast::sender(&config.multicast)?;
        let origin = multicast::origin();
        // A new secret for this announcer's life: the announcements commit to it, the goodbye
        // reveals it, so nobody who only heard the announcements can say goodbye for it.
        let secret = crate::random::key();
        let commitment = goodbye_commitment(&secret);
        let (mut announce, mut goodbye) = (Vec::new(), Vec::new());
        binary::encode(
            0,
            &Multicast::AnnounceCommitted { origin, service, ip, port, commitment, check: config.check.as_deref() },
            &mut announce,
        );
        // Metadata go first, so that a newer broker registers the instance with its pairs at
        // once; the plain announcement after it renews the lease and keeps them.
        let mut announce_meta = Vec::new();
        if !config.meta.is_empty() {
            let check = config.check.as_deref();
            let meta = config.meta.iter().map(|pair| (pair.key, pair.value_str().unwrap_or_default())).collect();
            let message = Multicast::AnnounceMeta { origin, service, ip, port, commitment, check, meta };
            binary::encode(0, &message, &mut announce_meta);
        }
        binary::encode(0, &Multicast::GoodbyeRevealed { origin, service, ip, port, secret }, &mut goodbye);
        let group = config.multicast.group;
        let mut sealer = config.multicast.key.map(|key| Sealer::new(key, crate::random::u64()));
        // With a key, each datagram is sealed afresh (its own number and time).
        let mut send = move |datagram: &[u8]| {
            let mut sealed = Vec::new();
            let bytes = match &mut sealer {
                Some(sealer) => {
                    sealer.seal(datagram, unix_ms(SystemTime::now()), &mut sealed);
                    &sealed[..]
                }
                None => datagram,
            };
            // Lost datagrams are made up for by the next announcement.
            let _ = socket.send_to(bytes, group);
        };
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new().name("makler-announcer".into()).spawn(move || {
            let start = Instant::now();
            for offset in announce_schedule(config.interval) {
                match stopped.recv_deadline(start + offset) {
                    Err(RecvTimeoutError::Timeout) => {
                        if !announce_meta.is_empty() {
                            send(&announce_meta);
                        }
                        send(&announce);
                    }
                    _ => break,
                }
            }
            // Twice, in case one is lost; a broker that misses both lets the entry expire.
            for _ in 0..2 {
                send(&goodbye);
            }
        })?;
        Ok(Announcer { stop: Some(stop), thread: Some(thread) })
    }

    /// Stops announcing and sends the goodbye; returns once it is sent.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.finish();
    }
}
