//! The server side: keep registrations alive from one background thread per process.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use uuid::Uuid;

use super::{BrokerClient, ClientError, Registered, RetryPolicy, Transport};
use crate::protocol::Rejection;

/// How a [`Registrar`] keeps registrations alive.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Heartbeat every this fraction of the broker's TTL (which the broker reports when it
    /// registers an endpoint). A third leaves room for two lost heartbeats.
    pub heartbeat_fraction: f64,
    /// How soon to try again when no broker answered.
    pub retry_after: Duration,
    /// Log (through [`log`]) when a registration is made (info), renewed after a broker forgot it
    /// or cannot reach any broker (warn).
    pub log: bool,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig { heartbeat_fraction: 1.0 / 3.0, retry_after: Duration::from_millis(500), log: false }
    }
}

/// Registers endpoints and keeps them registered: one background thread heartbeats every
/// registration of the process, registers again when a broker answers `NOT FOUND` (after a
/// restart, say), and deregisters each when its [`Registration`] is dropped or the registrar is
/// shut down.
///
/// ```
/// # let broker = makler::broker::Broker::bind(makler::broker::Config {
/// #     listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).unwrap();
/// # let addr = broker.local_addr();
/// # let shutdown = makler::shutdown::Shutdown::new();
/// # let s = shutdown.clone();
/// # let thread = std::thread::spawn(move || broker.run(&s));
/// use makler::client::{BrokerClient, Registrar, RegistrarConfig};
///
/// let registrar = Registrar::start(&[addr], RegistrarConfig::default())?;
/// let registration = registrar.register("echo", None, 4000)?;
/// let mut client = BrokerClient::new(&[addr])?;
/// assert_eq!(client.query("echo")?, ["127.0.0.1:4000".parse().unwrap()]);
/// drop(registration); // deregisters
/// assert!(client.query("echo").is_err());
/// # registrar.shutdown(); shutdown.request(); thread.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Registrar {
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

/// One endpoint kept registered by a [`Registrar`]; dropping it deregisters the endpoint.
#[derive(Debug)]
pub struct Registration {
    key: u64,
    id: Arc<Mutex<Option<Uuid>>>,
    commands: Sender<Command>,
    /// Whether dropping waits for the deregistration.
    wait_on_drop: bool,
}

impl Registration {
    /// The id the broker knows the endpoint by now; `None` while no broker has answered. It
    /// changes when the endpoint had to be registered again.
    pub fn id(&self) -> Option<Uuid> {
        *self.id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deregisters without waiting for the broker's answer: for callers, like an event loop,
    /// that must not block.
    pub fn deregister_in_background(mut self) {
        self.wait_on_drop = false;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::Remove { key: self.key, done }).is_ok() && self.wait_on_drop {
            // Wait for the deregistration, so a process that exits right after still leaves
            // nothing behind; bounded, so a dead broker cannot hang the drop.
            let _ = wait.recv_timeout(Duration::from_secs(3));
        }
    }
}

#[derive(Debug)]
enum Command {
    Add {
        key: u64,
        service: String,
        ip: Option<IpAddr>,
        port: u16,
        id: Arc<Mutex<Option<Uuid>>>,
        done: Option<Sender<Result<(), ClientError>>>,
    },
    Remove {
        key: u64,
        done: Sender<()>,
    },
}

impl Registrar {
    /// Starts the background thread, talking to these brokers over UDP.
    pub fn start(brokers: &[SocketAddr], config: RegistrarConfig) -> Result<Registrar, ClientError> {
        Ok(Self::with_client(BrokerClient::new(brokers)?, config))
    }

    /// Starts the background thread with a given client.
    pub fn with_client<T: Transport + Send + 'static>(client: BrokerClient<T>, config: RegistrarConfig) -> Registrar {
        let (commands, inbox) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("makler-registrar".into())
            .spawn(move || run(Core::new(client, config), &inbox))
            .ok();
        Registrar { commands, thread }
    }

    /// Registers `service` at `ip:port` (`ip: None`: the address the broker sees this process
    /// at) and keeps it registered until the returned [`Registration`] is dropped.
    ///
    /// Fails only when the broker refuses the registration for good (a bad name, a policy).
    /// When no broker answers, or the table or this address's quota is full, the registration
    /// is kept and tried again in the background (with backoff, for a full table): a server may
    /// start before its broker, or before room comes back.
    pub fn register(&self, service: &str, ip: Option<IpAddr>, port: u16) -> Result<Registration, ClientError> {
        let (done, result) = crossbeam_channel::bounded(1);
        let registration = self.add(service, ip, port, Some(done))?;
        let stopped = || ClientError::Protocol("the registrar thread has stopped".into());
        result.recv().map_err(|_| stopped())??;
        Ok(registration)
    }

    /// Like [`register`](Self::register), without waiting for the broker: for callers, like an
    /// event loop, that must not block. A refusal is only logged.
    pub fn register_in_background(
        &self,
        service: &str,
        ip: Option<IpAddr>,
        port: u16,
    ) -> Result<Registration, ClientError> {
        self.add(service, ip, port, None)
    }

    fn add(
        &self,
        service: &str,
        ip: Option<IpAddr>,
        port: u16,
        done: Option<Sender<Result<(), ClientError>>>,
    ) -> Result<Registration, ClientError> {
        let key = crate::random::u64();
        let id = Arc::new(Mutex::new(None));
        let command = Command::Add { key, service: service.to_owned(), ip, port, id: Arc::clone(&id), done };
        self.commands.send(command).map_err(|_| ClientError::Protocol("the registrar thread has stopped".into()))?;
        Ok(Registration { key, id, commands: self.commands.clone(), wait_on_drop: true })
    }

    /// Deregisters everything still registered and stops the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Closing the channel tells the thread to deregister everything and stop.
        let (closed, _) = crossbeam_channel::bounded(0);
        self.commands = closed;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run<T: Transport>(mut core: Core<T>, inbox: &Receiver<Command>) {
    loop {
        let command = match core.next_due() {
            Some(due) => inbox.recv_deadline(due),
            None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match command {
            Ok(Command::Add { key, service, ip, port, id, done }) => {
                let result = core.add(key, service, ip, port, id);
                match done {
                    Some(done) => {
                        let _ = done.send(result);
                    }
                    None => {
                        if let Err(e) = result {
                            log::error!("registration refused: {e}");
                        }
                    }
                }
            }
            Ok(Command::Remove { key, done }) => {
                core.remove(key);
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => core.tick(),
            Err(RecvTimeoutError::Disconnected) => {
                core.remove_all();
                return;
            }
        }
    }
}

struct Entry {
    key: u64,
    service: String,
    ip: Option<IpAddr>,
    port: u16,
    id: Arc<Mutex<Option<Uuid>>>,
    due: Instant,
    /// Refusals in a row for want of room (a full table, the source's quota).
    refusals: u32,
}

/// The longest wait between registrations refused for want of room.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether a refusal may pass by itself: the table or the source's quota was full, and room
/// comes back as registrations expire.
fn for_want_of_room(error: &ClientError) -> bool {
    matches!(error, ClientError::Rejected(Rejection::Full { .. } | Rejection::SourceQuota { .. }))
}

impl Entry {
    fn set_id(&self, id: Option<Uuid>) {
        *self.id.lock().unwrap_or_else(PoisonError::into_inner) = id;
    }

    fn id(&self) -> Option<Uuid> {
        *self.id.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The registrar's logic, with time taken from the client's transport so tests can simulate it.
pub(crate) struct Core<T: Transport> {
    client: BrokerClient<T>,
    config: RegistrarConfig,
    entries: Vec<Entry>,
    /// Heartbeat interval; learnt from the broker's TTL.
    interval: Duration,
}

impl<T: Transport> Core<T> {
    pub(crate) fn new(client: BrokerClient<T>, config: RegistrarConfig) -> Self {
        let interval = Duration::from_secs(5).mul_f64(config.heartbeat_fraction);
        Core { client, config, entries: Vec::new(), interval }
    }

    fn now(&self) -> Instant {
        self.client.transport().now()
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.due).min()
    }

    pub(crate) fn add(
        &mut self,
        key: u64,
        service: String,
        ip: Option<IpAddr>,
        port: u16,
        id: Arc<Mutex<Option<Uuid>>>,
    ) -> Result<(), ClientError> {
        let now = self.now();
        self.entries.push(Entry { key, service, ip, port, id, due: now, refusals: 0 });
        let index = self.entries.len() - 1;
        match self.register(index) {
            // Kept, and tried again with backoff: room comes back as registrations expire.
            Err(e) if for_want_of_room(&e) => Ok(()),
            Err(e @ (ClientError::Rejected(_) | ClientError::Protocol(_) | ClientError::NoBrokers)) => {
                self.entries.pop();
                Err(e)
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn remove(&mut self, key: u64) {
        if let Some(index) = self.entries.iter().position(|e| e.key == key) {
            let entry = self.entries.swap_remove(index);
            if let Some(id) = entry.id() {
                // Best effort: if it fails the entry expires by itself.
                let _ = self.client.deregister(id);
            }
            entry.set_id(None);
        }
    }

    pub(crate) fn remove_all(&mut self) {
        while let Some(key) = self.entries.first().map(|e| e.key) {
            self.remove(key);
        }
    }

    /// Heartbeats (or registers) every entry that is due.
    pub(crate) fn tick(&mut self) {
        let now = self.now();
        for index in 0..self.entries.len() {
            if self.entries[index].due > now {
                continue;
            }
            match self.entries[index].id() {
                Some(id) => match self.client.heartbeat(id) {
                    Ok(()) => self.entries[index].due = self.now() + self.interval,
                    Err(ClientError::NotFound) => {
                        self.log(log::Level::Warn, index, "was forgotten by the broker; registering again");
                        let _ = self.register(index);
                    }
                    // The brokers are catching up and may learn of it any moment: heartbeat
                    // again soon rather than register a second time.
                    Err(e) => self.failed(index, &e),
                },
                None => {
                    let _ = self.register(index);
                }
            }
        }
    }

    fn register(&mut self, index: usize) -> Result<(), ClientError> {
        let entry = &self.entries[index];
        match self.client.register(&entry.service, entry.ip, entry.port) {
            Ok(Registered { id, ttl }) => {
                self.learn_ttl(ttl);
                let entry = &mut self.entries[index];
                entry.set_id(Some(id));
                entry.refusals = 0;
                entry.due = self.client.transport().now() + self.interval;
                if self.config.log {
                    let broker = self.client.current_broker().map(|b| b.to_string()).unwrap_or_default();
                    log::info!("registered {} port {} at broker {broker} (id {id})", entry.service, entry.port);
                }
                Ok(())
            }
            Err(e) => {
                self.failed(index, &e);
                Err(e)
            }
        }
    }

    fn failed(&mut self, index: usize, error: &ClientError) {
        self.log(log::Level::Warn, index, &format!("cannot be kept registered: {error}"));
        let retry = self.config.retry_after.min(self.interval / 2);
        let wait = if for_want_of_room(error) {
            // No room: back off, doubling up to half a minute, so a full broker is not pressed.
            let entry = &mut self.entries[index];
            entry.refusals += 1;
            retry.saturating_mul(1 << entry.refusals.min(16)).min(MAX_BACKOFF)
        } else {
            // Try again within half a heartbeat interval, so a broker that comes back learns
            // of this endpoint within one interval.
            retry
        };
        self.entries[index].due = self.now() + wait;
    }

    /// Sets the heartbeat interval from the broker's TTL, and bounds retransmission so that one
    /// heartbeat's retries end well within it.
    fn learn_ttl(&mut self, ttl: Duration) {
        let interval = ttl.mul_f64(self.config.heartbeat_fraction.clamp(0.01, 1.0)).max(Duration::from_millis(10));
        if interval != self.interval {
            self.interval = interval;
            let default = RetryPolicy::default();
            let policy =
                RetryPolicy { timeout: default.timeout.min(interval / 4), max_timeout: interval / 2, ..default };
            self.client.set_policy(policy);
        }
    }

    fn log(&self, level: log::Level, index: usize, what: &str) {
        if self.config.log {
            let entry = &self.entries[index];
            log::log!(level, "{} port {} {what}", entry.service, entry.port);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::client::sim::SimNet;
    use crate::protocol::{Rejection, Request, Response};

    const BROKER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7000);

    /// A broker with TTL 3 s that forgets everything while `amnesia` is set and is silent
    /// while `down` is.
    fn broker(amnesia: Arc<AtomicBool>, down: Arc<AtomicBool>) -> SimNet {
        let mut next = 0u128;
        let mut known = std::collections::HashSet::new();
        SimNet::new().broker(BROKER, move |request| {
            if down.load(Ordering::SeqCst) {
                return None;
            }
            if amnesia.swap(false, Ordering::SeqCst) {
                known.clear();
            }
            Some(match request {
                Request::Register { service: "bad", .. } => {
                    Response::Error(Rejection::BadName { name: "bad".into(), why: "for the test".into() })
                }
                Request::Register { .. } => {
                    next += 1;
                    known.insert(next);
                    Response::Registered { id: Uuid::from_u128(next), ttl_ms: 3000 }
                }
                Request::Heartbeat { id } | Request::Deregister { id } => {
                    if known.contains(&id.as_u128()) {
                        Response::Ok
                    } else {
                        Response::NotFound
                    }
                }
                _ => Response::NotFound,
            })
        })
    }

    fn core(net: SimNet) -> Core<SimNet> {
        Core::new(BrokerClient::with_transport(net, &[BROKER], RetryPolicy::default(), 0), RegistrarConfig::default())
    }

    fn add(core: &mut Core<SimNet>, service: &str) -> Result<Arc<Mutex<Option<Uuid>>>, ClientError> {
        let id = Arc::new(Mutex::new(None));
        core.add(1, service.into(), None, 4000, Arc::clone(&id)).map(|()| id)
    }

    fn ms(core: &Core<SimNet>, at: Instant) -> u128 {
        at.duration_since(core.client.transport().start).as_millis()
    }

    #[test]
    fn heartbeats_come_at_a_third_of_the_ttl() {
        let mut core = core(broker(Arc::default(), Arc::default()));
        let id = add(&mut core, "echo").unwrap();
        assert_eq!(*id.lock().unwrap(), Some(Uuid::from_u128(1)));
        for beat in 1..=3u64 {
            let due = core.next_due().unwrap();
            assert_eq!(ms(&core, due), u128::from(beat) * 1000);
            core.client.transport_mut().sleep_until(due);
            core.tick();
        }
        assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 1000, 2000, 3000]);
        assert_eq!(*id.lock().unwrap(), Some(Uuid::from_u128(1)), "same registration throughout");
    }

    #[test]
    fn a_forgetful_broker_gets_the_registration_again() {
        let amnesia = Arc::new(AtomicBool::new(false));
        let mut core = core(broker(Arc::clone(&amnesia), Arc::default()));
        let id = add(&mut core, "echo").unwrap();
        amnesia.store(true, Ordering::SeqCst);
        let due = core.next_due().unwrap();
        core.client.transport_mut().sleep_until(due);
        core.tick();
        // The heartbeat got NOT FOUND and the entry was registered again at once.
        assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 1000, 1000]);
        assert_eq!(*id.lock().unwrap(), Some(Uuid::from_u128(2)));
    }

    #[test]
    fn a_broker_catching_up_is_asked_again_not_registered_at_again() {
        let catching_up = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&catching_up);
        let mut registered = 0;
        let net = SimNet::new().broker(BROKER, move |request| {
            Some(match request {
                _ if flag.load(Ordering::SeqCst) => Response::CatchingUp,
                Request::Register { .. } => {
                    registered += 1;
                    Response::Registered { id: Uuid::from_u128(registered), ttl_ms: 3000 }
                }
                _ => Response::Ok,
            })
        });
        let mut core = core(net);
        let id = add(&mut core, "echo").unwrap();
        catching_up.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            let due = core.next_due().unwrap();
            core.client.transport_mut().sleep_until(due);
            core.tick();
        }
        catching_up.store(false, Ordering::SeqCst);
        let due = core.next_due().unwrap();
        core.client.transport_mut().sleep_until(due);
        core.tick();
        // One register, then heartbeats only: soon again while the broker caught up.
        assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 1000, 1500, 2000, 2500]);
        assert_eq!(*id.lock().unwrap(), Some(Uuid::from_u128(1)));
    }

    #[test]
    fn a_silent_broker_is_retried_until_it_answers() {
        let down = Arc::new(AtomicBool::new(true));
        let mut core = core(broker(Arc::default(), Arc::clone(&down)));
        let id = add(&mut core, "echo").unwrap();
        assert_eq!(*id.lock().unwrap(), None, "kept, though nobody answered");
        let due = core.next_due().unwrap();
        // Three tries of the default policy (0.7 s), then the retry delay.
        assert_eq!(ms(&core, due), 700 + 500);
        down.store(false, Ordering::SeqCst);
        core.client.transport_mut().sleep_until(due);
        core.tick();
        assert_eq!(*id.lock().unwrap(), Some(Uuid::from_u128(1)));
    }

    #[test]
    fn a_refused_registration_is_an_error_and_not_kept() {
        let mut core = core(broker(Arc::default(), Arc::default()));
        assert!(matches!(add(&mut core, "bad"), Err(ClientError::Rejected(Rejection::BadName { .. }))));
        assert_eq!(core.next_due(), None);
    }

    #[test]
    fn a_full_table_is_waited_out_with_backoff() {
        let room = Arc::new(AtomicBool::new(false));
        let has_room = Arc::clone(&room);
        let net = SimNet::new().broker(BROKER, move |request| {
            Some(match request {
                Request::Register { .. } if has_room.load(Ordering::SeqCst) => {
                    Response::Registered { id: Uuid::from_u128(7), ttl_ms: 3000 }
                }
                Request::Register { .. } => Response::Error(Rejection::SourceQuota { max: 1024 }),
                _ => Response::Ok,
            })
        });
        let mut core = core(net);
        let id = add(&mut core, "echo").expect("kept, not refused");
        for _ in 0..6 {
            let due = core.next_due().unwrap();
            core.client.transport_mut().sleep_until(due);
            core.tick();
        }
        // 0.5 s doubling: 1, 2, 4, 8, 16, then at most 30 s between tries.
        assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 1000, 3000, 7000, 15000, 31000, 61000]);
        room.store(true, Ordering::SeqCst);
        let due = core.next_due().unwrap();
        core.client.transport_mut().sleep_until(due);
        core.tick();
        assert_eq!(*id.lock().unwrap(), Some(Uuid::from_u128(7)));
    }

    #[test]
    fn removing_deregisters() {
        let mut core = core(broker(Arc::default(), Arc::default()));
        let id = add(&mut core, "echo").unwrap();
        core.remove(1);
        assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 0]);
        assert_eq!(*id.lock().unwrap(), None);
        assert_eq!(core.next_due(), None);
    }
}
