//! Reloading a running balancer's settings (SIGHUP), without dropping a connection or a
//! backend.
//!
//! What can change is [`Reloadable`]: who may register (`--allow-register`, `--foreign-ip`,
//! `--max-per-source`), response-rate limiting, the health checks' interval, `--rise` and
//! `--fall`, the balancing `--policy`, the timeouts (`--connect-timeout`, `--idle-timeout`,
//! `--drain-timeout`) and whether changes are logged. The control core applies them between two
//! datagrams: the policy goes to the pool (an atomic the forwarding threads read at each pick),
//! the timeouts to the [`Timeouts`] every forwarding thread reads at each sweep. Backends
//! registered, their state (up or down, failures counted) and the connections open are kept;
//! a narrower policy or quota applies to registrations from then on. Sockets, threads and the
//! switch between health checks and none are fixed for the process's life
//! ([`Config::fixed_differences`](crate::balancer::Config::fixed_differences)). The handle the
//! reload thread uses, [`Reloader`](crate::balancer::Reloader), is the balancer's shell's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Control;
use crate::balancer::Policy;
use crate::balancer::forward::Timeouts;
use crate::limit::RateLimit;
use crate::reload::Change;
use crate::service::policy::ForeignIp;

/// The settings a running balancer takes anew on SIGHUP; the rest are fixed for its life
/// (OPERATIONS.md, "Reloading settings").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloadable {
    /// `--allow-register`, `--foreign-ip`.
    pub policy: crate::service::policy::Policy,
    /// `--max-per-source`.
    pub max_per_source: usize,
    /// `--rate-limit`, `--rate-limit-exempt`.
    pub rate_limit: RateLimit,
    /// `--health-interval` (`None`: no health checks; only its value changes at run time).
    pub health_interval: Option<Duration>,
    /// `--rise`.
    pub rise: u32,
    /// `--fall`.
    pub fall: u32,
    /// `--policy`.
    pub balance: Policy,
    /// `--connect-timeout`.
    pub connect_timeout: Duration,
    /// `--idle-timeout`.
    pub idle_timeout: Duration,
    /// `--drain-timeout`.
    pub drain_timeout: Duration,
    /// Log changes to the backend table (`--quiet` off).
    pub log: bool,
}

/// What the reload thread asks of the control core.
#[derive(Debug)]
pub(crate) enum Command {
    /// Take these settings; the changes go back on `reply`.
    Reload { settings: Box<Reloadable>, reply: crossbeam_channel::Sender<Vec<Change>> },
    /// `--backends-from`: the watched service's live instances now, the whole set (it replaces
    /// the one before; see `control/feed.rs`), each with its weight.
    Watched(Vec<(std::net::SocketAddr, u32)>),
}

pub(crate) fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

pub(crate) fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "off".to_owned(), |d| format!("{}s", d.as_secs_f64()))
}

fn note<T: PartialEq>(changes: &mut Vec<Change>, setting: &'static str, was: T, now: T, show: impl Fn(&T) -> String) {
    if was != now {
        changes.push(Change { setting, was: show(&was), now: show(&now) });
    }
}

impl Control {
    /// The settings the core was started with, and the forwarding threads' timeouts, which it
    /// changes on a reload.
    pub(crate) fn set_reloadable(&mut self, settings: Reloadable, timeouts: Arc<Timeouts>) {
        self.reloadable = Some((settings, timeouts));
    }

    /// Takes `new` and returns what changed (see the [module documentation](self)). A switch
    /// between health checks and none is not made (it is reported as fixed).
    pub(crate) fn reconfigure(&mut self, mut new: Reloadable, now: Instant) -> Vec<Change> {
        let Some((old, timeouts)) = self.reloadable.clone() else { return Vec::new() };
        if old.health_interval.is_some() != new.health_interval.is_some() {
            new.health_interval = old.health_interval;
        }
        let mut changes = Vec::new();
        let (was, is) = (&old.policy.allow_register, &new.policy.allow_register);
        note(&mut changes, "--allow-register", was, is, |v| list(v));
        let show = |v: &ForeignIp| if *v == ForeignIp::Allow { "allow" } else { "deny" }.to_owned();
        note(&mut changes, "--foreign-ip", old.policy.foreign_ip, new.policy.foreign_ip, show);
        note(&mut changes, "--max-per-source", old.max_per_source, new.max_per_source, ToString::to_string);
        note(&mut changes, "--rate-limit", old.rate_limit.rate, new.rate_limit.rate, ToString::to_string);
        let (was, is) = (&old.rate_limit.exempt, &new.rate_limit.exempt);
        note(&mut changes, "--rate-limit-exempt", was, is, |v| list(v));
        note(&mut changes, "--health-interval", old.health_interval, new.health_interval, |v| seconds(*v));
        note(&mut changes, "--rise", old.rise, new.rise, ToString::to_string);
        note(&mut changes, "--fall", old.fall, new.fall, ToString::to_string);
        note(&mut changes, "--policy", old.balance, new.balance, ToString::to_string);
        let secs = |v: &Duration| seconds(Some(*v));
        note(&mut changes, "--connect-timeout", old.connect_timeout, new.connect_timeout, secs);
        note(&mut changes, "--idle-timeout", old.idle_timeout, new.idle_timeout, secs);
        note(&mut changes, "--drain-timeout", old.drain_timeout, new.drain_timeout, secs);
        note(&mut changes, "--quiet", !old.log, !new.log, ToString::to_string);
        if changes.is_empty() {
            return changes;
        }

        self.service.set_policy(new.policy.clone());
        let max_per_network = self.registry.config().limits.max_per_network;
        self.registry.set_quotas(new.max_per_source, max_per_network);
        self.limiter.set_config(now, new.rate_limit.clone());
        if let (Some(health), Some(interval)) = (&mut self.health, new.health_interval) {
            let retimed = (old.health_interval, old.rise, old.fall) != (new.health_interval, new.rise, new.fall);
            if retimed {
                health.schedule.retime(now, interval, new.rise, new.fall);
            }
            health.prober.set_timeout(new.connect_timeout.min(interval));
        }
        self.pool.set_policy(new.balance);
        timeouts.set(new.connect_timeout, new.idle_timeout, new.drain_timeout);
        self.log = new.log;
        self.reloadable = Some((new, timeouts));
        changes
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::balancer::health::Health;
    use crate::balancer::{Config, Counters, Pool};
    use crate::core::Core;
    use crate::registry::Registry;

    /// A control core with health checks, started with the default settings.
    fn core(pool: &Arc<Pool>) -> (Control, Reloadable, Arc<Timeouts>) {
        let config = Config::default();
        let registry = Registry::new(config.registry.clone(), uuid::Uuid::new_v4);
        let health = Health::new(Duration::from_secs(2), config.connect_timeout, config.rise, config.fall);
        let counters = Arc::new(Counters::default());
        let mut core =
            Control::new(registry, Arc::clone(pool), counters, Some(health), config.rate_limit.clone(), false);
        let timeouts = Arc::new(Timeouts::new(config.connect_timeout, config.idle_timeout, config.drain_timeout));
        core.set_reloadable(config.reloadable(), Arc::clone(&timeouts));
        (core, config.reloadable(), timeouts)
    }

    fn send(core: &mut Control, now: Instant, from: &str, line: &str) -> String {
        let mut reply = Vec::new();
        core.handle_datagram(now, super::super::Face::Control, from.parse().unwrap(), line.as_bytes(), &mut reply);
        core.handle_turn_end(now);
        String::from_utf8(reply).unwrap()
    }

    #[test]
    fn each_setting_is_taken_and_the_backends_are_kept() {
        let pool = Arc::new(Pool::new());
        let (mut core, mut new, timeouts) = core(&pool);
        let now = Instant::now();
        core.handle_start(now);
        assert!(!send(&mut core, now, "10.0.0.1:1", "register web 4000").starts_with("ERROR"));
        let now = now + Duration::from_secs(1);
        assert!(!send(&mut core, now, "10.0.0.1:1", "register web 4001").starts_with("ERROR"));
        assert_eq!(pool.len(), 2);
        assert!(core.reconfigure(new.clone(), now).is_empty(), "the same settings change nothing");

        new.policy.allow_register = vec!["192.168.0.0/16".parse().unwrap()];
        new.max_per_source = 1;
        new.rate_limit.rate = 10;
        new.health_interval = Some(Duration::from_secs(5));
        new.rise = 4;
        new.fall = 1;
        new.balance = Policy::LeastConn;
        new.connect_timeout = Duration::from_millis(300);
        new.idle_timeout = Duration::from_secs(5);
        new.drain_timeout = Duration::from_secs(1);
        new.log = true;
        let changes: Vec<String> = core.reconfigure(new.clone(), now).iter().map(ToString::to_string).collect();
        assert_eq!(
            changes,
            [
                "--allow-register none → 192.168.0.0/16",
                "--max-per-source 0 → 1",
                "--rate-limit 0 → 10",
                "--health-interval 2s → 5s",
                "--rise 2 → 4",
                "--fall 3 → 1",
                "--policy round-robin → least-conn",
                "--connect-timeout 1s → 0.3s",
                "--idle-timeout 60s → 5s",
                "--drain-timeout 10s → 1s",
                "--quiet true → false",
            ]
        );
        assert_eq!(pool.policy(), Policy::LeastConn);
        let taken = (timeouts.connect(), timeouts.idle(), timeouts.drain());
        assert_eq!(taken, (Duration::from_millis(300), Duration::from_secs(5), Duration::from_secs(1)));
        assert_eq!(pool.len(), 2, "the backends are kept");
        assert!(send(&mut core, now, "10.0.0.1:1", "register web 4002").starts_with("ERROR not allowed"));
        assert!(!send(&mut core, now, "192.168.0.1:1", "register web 5000").starts_with("ERROR"));
        assert!(send(&mut core, now, "192.168.0.1:1", "register web 5001").starts_with("ERROR"), "the new quota");
        assert!(core.reconfigure(new, now).is_empty(), "taken");
    }

    #[test]
    fn health_checks_are_not_switched_on_or_off_at_run_time() {
        let pool = Arc::new(Pool::new());
        let (mut core, mut new, _) = core(&pool);
        let now = Instant::now();
        new.health_interval = None;
        assert!(core.reconfigure(new.clone(), now).is_empty(), "reported as fixed instead");
        new.rise = 5;
        let changes: Vec<String> = core.reconfigure(new, now).iter().map(ToString::to_string).collect();
        assert_eq!(changes, ["--rise 2 → 5"]);
        let mut started = Config::default();
        let mut off = started.clone();
        off.health_interval = None;
        let lines = started.fixed_differences(&off);
        assert_eq!(lines, ["--health-interval cannot change at run time: kept health checks on (restart to apply)"]);
        started.listen = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(started.fixed_differences(&off).len(), 2);
    }
}
