//! Reloading the node's settings at run time (SIGHUP), without losing the table, the leases,
//! the watches or their cookies.
//!
//! What can change is [`Reloadable`]: the peers, the bridges, the registration policy and the
//! quotas, response-rate limiting, the caps on watches, the health checks' timing and whether
//! changes are logged. [`Node::reconfigure`] applies a new set and returns one [`Change`] per
//! setting that differs; the shell hands it over as a [`Command`] from the thread that read the
//! new settings. Everything else (the sockets, the cluster, the key, the TTL and the table's
//! size) is fixed for the process's life: a broker compares those itself and says they were
//! kept (see [`crate::broker::Config::fixed_differences`]).
//!
//! What is already there when a setting narrows is kept, as Consul and HAProxy do: new
//! settings apply to requests from then on. A lease registered from a network no longer allowed
//! stays while its heartbeats renew it (a heartbeat names a lease by its id; it is no new
//! registration), and goes when it lapses or is deregistered; registering it again is a
//! registration, and is refused. Leases beyond a lowered quota stay and renew (quotas count new
//! instances only). A watch beyond a lowered cap stays until it is renewed no more. A peer added is said hello to at once and replicated with as a restarted one is; a
//! peer removed goes down and is sent nothing more.

use std::fmt;

pub use crate::reload::Change;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Node, NodeConfig, WatchConfig};
use crate::limit::RateLimit;
use crate::service::policy::{ForeignIp, Policy};

/// The settings a running node takes anew (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloadable {
    /// `--peers`.
    pub peers: Vec<SocketAddr>,
    /// `--bridge`.
    pub bridges: Vec<SocketAddr>,
    /// `--allow-register`, `--foreign-ip`.
    pub policy: Policy,
    /// `--max-per-source`.
    pub max_per_source: usize,
    /// `--max-per-network` (the table's; the watches' is in `watches`).
    pub max_per_network: usize,
    /// `--rate-limit`, `--rate-limit-exempt`.
    pub rate_limit: RateLimit,
    /// `--max-watches`, `--max-watches-per-source` (and `--max-per-network`).
    pub watches: WatchConfig,
    /// `--probe-interval` (`None`: off).
    pub probe_interval: Option<Duration>,
    /// `--probe-timeout`.
    pub probe_timeout: Duration,
    /// Log registrations, removals and expiries (`--quiet` off).
    pub log_changes: bool,
}

impl Reloadable {
    /// The part of `config` a reload may change.
    pub fn of(config: &NodeConfig) -> Self {
        Reloadable {
            peers: config.replica.peers.clone(),
            bridges: config.bridges.bridges.clone(),
            policy: config.policy.clone(),
            max_per_source: config.registry.limits.max_per_source,
            max_per_network: config.registry.limits.max_per_network,
            rate_limit: config.rate_limit.clone(),
            watches: config.watches,
            probe_interval: config.verify.probe_interval,
            probe_timeout: config.verify.probe_timeout,
            log_changes: config.log_changes,
        }
    }
}

/// What another thread asks of a running node (through the shell's command channel).
#[derive(Debug)]
pub enum Command {
    /// Take these settings (SIGHUP).
    Reload {
        /// The new settings.
        settings: Box<Reloadable>,
        /// Where the changes go, for the program to log with its own (see
        /// [`crate::reload::log_changes`]); `None`: the node logs them itself.
        reply: Option<crossbeam_channel::Sender<Vec<Change>>>,
    },
}

/// A list as the flags take it: comma-separated, `none` when empty.
fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "off".to_owned(), |d| format!("{}s", d.as_secs_f64()))
}

fn foreign_ip(value: ForeignIp) -> &'static str {
    match value {
        ForeignIp::Allow => "allow",
        ForeignIp::Deny => "deny",
    }
}

/// Notes a change of one setting when `was` and `now` differ.
fn note<T: PartialEq>(changes: &mut Vec<Change>, setting: &'static str, was: T, now: T, show: impl Fn(&T) -> String) {
    if was != now {
        changes.push(Change { setting, was: show(&was), now: show(&now) });
    }
}

impl Node {
    /// The settings a reload may change, as they are now.
    pub fn reloadable(&self) -> Reloadable {
        let limits = &self.registry.config().limits;
        let (probe_interval, probe_timeout) = self.verifier.timing();
        Reloadable {
            peers: self.replicator.configured_peers().to_vec(),
            bridges: self.bridges.bridges().to_vec(),
            policy: self.service.policy().clone(),
            max_per_source: limits.max_per_source,
            max_per_network: limits.max_per_network,
            rate_limit: self.limiter.config().clone(),
            watches: *self.watches.config(),
            probe_interval,
            probe_timeout,
            log_changes: self.log_changes,
        }
    }

    /// Takes `new` (a reload at `now`) and returns what changed, one entry per setting, in a
    /// fixed order; nothing else of the node changes (see the [module documentation](self)).
    pub fn reconfigure(&mut self, new: Reloadable, now: Instant) -> Vec<Change> {
        let old = self.reloadable();
        let mut changes = Vec::new();
        note(&mut changes, "--peers", &old.peers, &new.peers, |v| list(v));
        note(&mut changes, "--bridge", &old.bridges, &new.bridges, |v| list(v));
        note(&mut changes, "--allow-register", &old.policy.allow_register, &new.policy.allow_register, |v| list(v));
        note(&mut changes, "--foreign-ip", old.policy.foreign_ip, new.policy.foreign_ip, |v| foreign_ip(*v).to_owned());
        note(&mut changes, "--max-per-source", old.max_per_source, new.max_per_source, ToString::to_string);
        note(&mut changes, "--max-per-network", old.max_per_network, new.max_per_network, ToString::to_string);
        note(&mut changes, "--rate-limit", old.rate_limit.rate, new.rate_limit.rate, ToString::to_string);
        note(&mut changes, "--rate-limit-exempt", &old.rate_limit.exempt, &new.rate_limit.exempt, |v| list(v));
        note(&mut changes, "--max-watches", old.watches.max_total, new.watches.max_total, ToString::to_string);
        let (was, is) = (old.watches.max_per_source, new.watches.max_per_source);
        note(&mut changes, "--max-watches-per-source", was, is, ToString::to_string);
        if old.max_per_network == new.max_per_network {
            // Given apart only in a library's settings (the flag sets both).
            let (was, is) = (old.watches.max_per_network, new.watches.max_per_network);
            note(&mut changes, "--max-per-network (watches)", was, is, ToString::to_string);
        }
        note(&mut changes, "--probe-interval", old.probe_interval, new.probe_interval, |v| seconds(*v));
        note(&mut changes, "--probe-timeout", old.probe_timeout, new.probe_timeout, |v| seconds(Some(*v)));
        note(&mut changes, "--quiet", !old.log_changes, !new.log_changes, ToString::to_string);
        if changes.is_empty() {
            return changes;
        }

        if old.peers != new.peers {
            self.replicator.set_peers(&new.peers, &self.registry);
        }
        if old.bridges != new.bridges {
            self.bridges.set_bridges(now, &new.bridges);
        }
        self.service.set_policy(new.policy);
        self.registry.set_quotas(new.max_per_source, new.max_per_network);
        self.limiter.set_config(now, new.rate_limit);
        self.watches.set_config(new.watches);
        let replicator = &self.replicator;
        let owned = |endpoint| replicator.owner(endpoint).is_none();
        self.verifier.set_timing(now, new.probe_interval, new.probe_timeout, owned);
        self.log_changes = new.log_changes;
        // Hellos to new peers, and a change of the live brokers (a removed peer that was up).
        self.drain(now);
        changes
    }

    /// A command from another thread: a reload, whose changes go back to the sender (or to
    /// the log).
    pub(super) fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Reload { settings, reply } => {
                let changes = self.reconfigure(*settings, now);
                match reply {
                    // A sender that gave up waiting logged only that: the changes made are
                    // logged here, so that none goes untold.
                    Some(reply) => {
                        if let Err(unsent) = reply.send(changes) {
                            crate::reload::log_changes(&unsent.0);
                        }
                    }
                    None => crate::reload::log_changes(&changes),
                }
            }
        }
    }
}
