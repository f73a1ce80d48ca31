//! The server side: keep registrations alive from one background thread per process.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use uuid::Uuid;

use super::{BrokerClient, ClientError, Registered, RetryPolicy, Transport};
use crate::protocol::{Check, Rejection};
pub use backoff::{NO_BROKER_BACKOFF, NO_ROOM_BACKOFF};
use backoff::{Outcome, jittered, outcome};

/// How a [`Registrar`] keeps registrations alive.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Heartbeat every this fraction of the broker's TTL (which the broker reports when it
    /// registers an endpoint). A third leaves room for two lost heartbeats.
    pub heartbeat_fraction: f64,
    /// How soon to try again the first time no broker answered (or one had no room); each
    /// further failure in a row doubles the wait (with jitter) up to [`NO_BROKER_BACKOFF`] or
    /// [`NO_ROOM_BACKOFF`].
    pub retry_after: Duration,
    /// Log (through [`log`]) when a registration is made (info), renewed after a broker forgot
    /// it, or changes state (no broker answers, no room: warn; refused for good: error). Once per
    /// change of state, not once per try.
    pub log: bool,
    /// Leave a refusal for good that comes after the first try out of the log: the caller
    /// watches [`Registration::state`] and reports it itself (as `makler-server` does, in the
    /// one line it exits with). A refusal of the first try is always the caller's to report.
    pub quiet_refusals: bool,
    /// The health check every registration declares (see [`Check`]): by default `tcp`, a
    /// connect to the endpoint. `Check::None` for an endpoint that takes no TCP connections
    /// (a UDP service): then it is never probed, and only its heartbeats keep it.
    pub check: Check<Box<str>>,
    /// The metadata every registration carries (see [`crate::meta`]; `makler-server --meta`):
    /// sent with each register, a re-registration after the broker forgot the lease included;
    /// heartbeats leave it as it is. Empty by default.
    pub meta: crate::meta::Metadata,
    /// With a key, every request is sealed with it and only sealed replies are taken (see
    /// [`BrokerClient::set_key`]): for brokers with `--require-key`.
    pub key: Option<crate::protocol::seal::Key>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            heartbeat_fraction: 1.0 / 3.0,
            retry_after: Duration::from_millis(500),
            log: false,
            quiet_refusals: false,
            check: Check::Tcp,
            meta: crate::meta::Metadata::default(),
            key: None,
        }
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
/// use makler::client::{BrokerClient, ClientError, Registrar, RegistrarConfig, RegistrationState};
/// use makler::protocol::Rejection;
///
/// let registrar = Registrar::start(&[addr], RegistrarConfig::default())?;
/// let registration = registrar.register("echo", None, 4000)?;
/// assert_eq!(registration.state(), RegistrationState::Registered);
/// // A name the broker refuses for good is an error, not tried again.
/// let refused = registrar.register("bad/name", None, 4001);
/// assert!(matches!(refused, Err(ClientError::Rejected(Rejection::BadName { .. }))));
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

/// Where a [`Registration`] stands, as [`Registration::state`] tells it: how a caller that
/// registered in the background learns that the broker refused the name for good.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// No broker has answered yet: the first try is under way.
    Starting,
    /// Registered at a broker and kept alive by heartbeats.
    Registered,
    /// No broker answers (or the socket fails): tried again with backoff, up to
    /// [`NO_BROKER_BACKOFF`] between tries. Start a broker, or check the addresses.
    NoBroker,
    /// A broker answered but has no room or takes no more from this source now (`ERROR full`,
    /// a quota, a rate limit): tried again with backoff, up to [`NO_ROOM_BACKOFF`] between tries.
    NoRoom(Rejection),
    /// The broker refused the registration for good (a bad name, its `--allow-register` or
    /// `--foreign-ip` policy): it is no longer tried. Change the name or the broker's policy and
    /// register again.
    Refused(Rejection),
    /// Given up for another reason than a refusal (the broker's answer made no sense to this
    /// client); the text says what.
    Failed(String),
}

/// What the registrar's thread and a [`Registration`] share.
#[derive(Debug)]
pub(crate) struct Shared {
    id: Option<Uuid>,
    state: RegistrationState,
}

impl Shared {
    /// A registration not tried yet.
    pub(crate) fn new() -> SharedRef {
        Arc::new(Mutex::new(Shared { id: None, state: RegistrationState::Starting }))
    }
}

pub(crate) type SharedRef = Arc<Mutex<Shared>>;

pub(crate) fn shared(shared: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One endpoint kept registered by a [`Registrar`]; dropping it deregisters the endpoint.
#[derive(Debug)]
pub struct Registration {
    key: u64,
    shared: SharedRef,
    commands: Sender<Command>,
    /// Whether dropping waits for the deregistration.
    wait_on_drop: bool,
}

impl Registration {
    /// The id the broker knows the endpoint by now; `None` while no broker has answered. It
    /// changes when the endpoint had to be registered again.
    pub fn id(&self) -> Option<Uuid> {
        shared(&self.shared).id
    }

    /// Where the registration stands now. A registration made with
    /// [`register_in_background`](Registrar::register_in_background) that the broker refused
    /// for good is [`RegistrationState::Refused`]: the one way its caller learns of it.
    pub fn state(&self) -> RegistrationState {
        shared(&self.shared).state.clone()
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
        shared: SharedRef,
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
        let mut client = BrokerClient::new(brokers)?;
        if let Some(key) = config.key {
            client.set_key(key);
        }
        Ok(Self::with_client(client, config))
    }

    /// Starts the background thread with a given client.
    pub fn with_client<T: Transport + Send + 'static>(client: BrokerClient<T>, config: RegistrarConfig) -> Registrar {
        let (commands, inbox) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("makler-registrar".into())
            .spawn(move || run(Core::new(client, config, Box::new(crate::random::u64)), &inbox))
            .ok();
        Registrar { commands, thread }
    }

    /// Registers `service` at `ip:port` (`ip: None`: the address the broker sees this process
    /// at) and keeps it registered until the returned [`Registration`] is dropped.
    ///
    /// Fails only when the broker refuses the registration for good (a bad name, a policy):
    /// [`ClientError::Rejected`] with the reason. When no broker answers, or the table or this
    /// address's quota is full, the registration is kept and tried again in the background with
    /// backoff (see [`Registration::state`]): a server may start before its broker, or before
    /// room comes back. A later refusal for good (a broker restarted with another policy) ends
    /// the tries and shows in [`Registration::state`].
    pub fn register(&self, service: &str, ip: Option<IpAddr>, port: u16) -> Result<Registration, ClientError> {
        let (done, result) = crossbeam_channel::bounded(1);
        let registration = self.add(service, ip, port, Some(done))?;
        let stopped = || ClientError::Protocol("the registrar thread has stopped".into());
        result.recv().map_err(|_| stopped())??;
        Ok(registration)
    }

    /// Like [`register`](Self::register), without waiting for the broker: for callers, like an
    /// event loop, that must not block. A refusal for good is logged and shows in
    /// [`Registration::state`].
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
        let shared = Shared::new();
        let command = Command::Add { key, service: service.to_owned(), ip, port, shared: Arc::clone(&shared), done };
        self.commands.send(command).map_err(|_| ClientError::Protocol("the registrar thread has stopped".into()))?;
        Ok(Registration { key, shared, commands: self.commands.clone(), wait_on_drop: true })
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
            Ok(Command::Add { key, service, ip, port, shared, done }) => {
                let result = core.add(key, service, ip, port, shared);
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
    shared: SharedRef,
    due: Instant,
    /// Failed tries in a row (no broker, no room): the backoff's exponent.
    failures: u32,
}

impl Entry {
    fn set_id(&self, id: Option<Uuid>) {
        shared(&self.shared).id = id;
    }

    fn id(&self) -> Option<Uuid> {
        shared(&self.shared).id
    }

    fn state(&self) -> RegistrationState {
        shared(&self.shared).state.clone()
    }

    /// Whether it is still tried: not refused for good, not given up.
    fn is_kept(&self) -> bool {
        !matches!(shared(&self.shared).state, RegistrationState::Refused(_) | RegistrationState::Failed(_))
    }

    /// Moves to `state`; whether that is a change (of kind: another rejection of the same kind
    /// is no news worth a log line).
    fn set_state(&self, state: RegistrationState) -> bool {
        let mut shared = shared(&self.shared);
        let changed = std::mem::discriminant(&shared.state) != std::mem::discriminant(&state);
        shared.state = state;
        changed
    }
}

/// A source of random numbers, for the jitter; the shell passes [`crate::random::u64`], tests a
/// fixed sequence.
pub(crate) type Random = Box<dyn FnMut() -> u64 + Send>;

/// The registrar's logic, with time taken from the client's transport so tests can simulate it.
pub(crate) struct Core<T: Transport> {
    client: BrokerClient<T>,
    config: RegistrarConfig,
    entries: Vec<Entry>,
    /// Heartbeat interval; learnt from the broker's TTL.
    interval: Duration,
    random: Random,
}

impl<T: Transport> Core<T> {
    pub(crate) fn new(client: BrokerClient<T>, config: RegistrarConfig, random: Random) -> Self {
        let interval = Duration::from_secs(5).mul_f64(config.heartbeat_fraction);
        Core { client, config, entries: Vec::new(), interval, random }
    }

    fn now(&self) -> Instant {
        self.client.transport().now()
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.due).min()
    }

    /// Adds an entry and makes the first try. An error only for a refusal for good (or an
    /// answer that makes no sense), and then the entry is not kept.
    pub(crate) fn add(
        &mut self,
        key: u64,
        service: String,
        ip: Option<IpAddr>,
        port: u16,
        shared: SharedRef,
    ) -> Result<(), ClientError> {
        let now = self.now();
        self.entries.push(Entry { key, service, ip, port, shared, due: now, failures: 0 });
        let index = self.entries.len() - 1;
        match self.register(index) {
            Err(e) if !self.entries[index].is_kept() => {
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
        let mut index = 0;
        while index < self.entries.len() {
            let kept = if self.entries[index].due > now {
                true
            } else {
                match self.entries[index].id() {
                    Some(id) => match self.client.heartbeat(id) {
                        Ok(()) => {
                            if self.succeeded(index) {
                                self.log(log::Level::Info, index, "reaches a broker again");
                            }
                            true
                        }
                        Err(ClientError::NotFound) => {
                            self.log(log::Level::Warn, index, "was forgotten by the broker; registering again");
                            self.register(index).is_ok() || self.entries[index].is_kept()
                        }
                        Err(e) => self.failed(index, &e),
                    },
                    None => self.register(index).is_ok() || self.entries[index].is_kept(),
                }
            };
            if kept {
                index += 1;
            } else {
                // Refused for good: no longer tried (the registration's state says why).
                let entry = self.entries.swap_remove(index);
                entry.set_id(None);
            }
        }
    }

    fn register(&mut self, index: usize) -> Result<(), ClientError> {
        let entry = &self.entries[index];
        let check = self.config.check.as_deref();
        match self.client.register_meta(&entry.service, entry.ip, entry.port, check, &self.config.meta) {
            Ok(Registered { id, ttl }) => {
                self.learn_ttl(ttl);
                self.entries[index].set_id(Some(id));
                self.succeeded(index);
                if self.config.log {
                    let entry = &self.entries[index];
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

    /// A broker answered yes: heartbeat next after one interval. Returns whether that is a
    /// change of state.
    fn succeeded(&mut self, index: usize) -> bool {
        let interval = self.interval;
        let now = self.now();
        let entry = &mut self.entries[index];
        entry.failures = 0;
        entry.due = now + interval;
        entry.set_state(RegistrationState::Registered)
    }

    /// Moves the entry to the state the error calls for and sets when to try again. Returns
    /// whether the entry is still kept (false: refused for good).
    fn failed(&mut self, index: usize, error: &ClientError) -> bool {
        let retry = self.config.retry_after.min(self.interval / 2);
        let first_try = self.entries[index].state() == RegistrationState::Starting;
        let (state, wait) = match outcome(error) {
            Outcome::NoBroker => (RegistrationState::NoBroker, self.backoff(index, retry, NO_BROKER_BACKOFF)),
            Outcome::NoRoom(r) => (RegistrationState::NoRoom(r), self.backoff(index, retry, NO_ROOM_BACKOFF)),
            // The brokers are catching up and may learn of it any moment: ask again soon
            // rather than register a second time. A broker answered: no news to log.
            Outcome::CatchingUp | Outcome::NotFound => {
                self.entries[index].due = self.now() + retry;
                return true;
            }
            Outcome::Refused(r) => (RegistrationState::Refused(r), None),
            // Once registered, an odd answer (a broker of another version, a stray reply) is
            // no reason to give the endpoint up: tried again like a silent broker.
            Outcome::Failed(_) if !first_try => {
                (RegistrationState::NoBroker, self.backoff(index, retry, NO_BROKER_BACKOFF))
            }
            Outcome::Failed(why) => (RegistrationState::Failed(why), None),
        };
        let kept = wait.is_some();
        if let Some(wait) = wait {
            self.entries[index].due = self.now() + wait;
        }
        if self.entries[index].set_state(state) {
            if kept {
                let what = format!("cannot be kept registered: {error}; trying again with backoff");
                self.log(log::Level::Warn, index, &what);
            } else if !first_try && !self.config.quiet_refusals {
                // A refusal of the first try is the caller's error to report, not a log line.
                self.log(log::Level::Error, index, &format!("is no longer registered: {error}"));
            }
        }
        kept
    }

    /// The wait before the next try after one more failure in a row: `retry` doubled per
    /// failure up to `cap`, shortened by up to a quarter at random.
    fn backoff(&mut self, index: usize, retry: Duration, cap: Duration) -> Option<Duration> {
        let entry = &mut self.entries[index];
        let doublings = entry.failures.min(16);
        entry.failures = entry.failures.saturating_add(1);
        let base = retry.saturating_mul(1 << doublings).min(cap);
        Some(jittered(base, (self.random)()))
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

mod backoff;
#[cfg(test)]
mod tests;
