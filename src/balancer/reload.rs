//! The balancer's side of a reload (SIGHUP): which of its settings a running balancer takes
//! (the control core applies them: see `control/reload.rs`), which are fixed for its life, and
//! the handle another thread hands new settings with.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::control::reload::{Command, Reloadable, list, seconds};
use crate::reload::{Change, LogLevel};

impl super::Config {
    /// The part of these settings a running balancer takes anew on a reload.
    pub fn reloadable(&self) -> Reloadable {
        Reloadable {
            policy: self.policy.clone(),
            max_per_source: self.registry.limits.max_per_source,
            rate_limit: self.rate_limit.clone(),
            health_interval: self.health_interval,
            rise: self.rise,
            fall: self.fall,
            balance: self.balance,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            drain_timeout: self.drain_timeout,
            log: self.log,
        }
    }

    /// The settings fixed for the process's life that `new` gives otherwise: one line each,
    /// to log on a reload (`--listen cannot change at run time: kept … (restart to apply)`).
    pub fn fixed_differences(&self, new: &Self) -> Vec<String> {
        fn differs<T: PartialEq>(lines: &mut Vec<String>, flag: &str, was: &T, is: &T, show: impl Fn(&T) -> String) {
            if was != is {
                lines.push(format!("{flag} cannot change at run time: kept {} (restart to apply)", show(was)));
            }
        }
        let addr = |a: &Option<std::net::SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
        let mut lines = Vec::new();
        differs(&mut lines, "--listen", &self.listen, &new.listen, ToString::to_string);
        differs(&mut lines, "--control", &self.control, &new.control, ToString::to_string);
        differs(&mut lines, "--threads", &self.threads, &new.threads, ToString::to_string);
        differs(&mut lines, "--metrics", &self.metrics, &new.metrics, addr);
        differs(&mut lines, "--http", &self.http, &new.http, addr);
        differs(&mut lines, "--service", &self.service, &new.service, Clone::clone);
        differs(&mut lines, "--backends-from", &self.backends_from, &new.backends_from, |s| {
            s.clone().unwrap_or_else(|| "none".to_owned())
        });
        differs(&mut lines, "--broker", &self.brokers, &new.brokers, |b| list(b));
        differs(&mut lines, "--max-connections", &self.max_connections, &new.max_connections, ToString::to_string);
        differs(&mut lines, "--ttl", &self.registry.ttl, &new.registry.ttl, |d| seconds(Some(*d)));
        let on = |interval: &Option<Duration>| if interval.is_some() { "health checks on" } else { "no health checks" };
        let (was, is) = (on(&self.health_interval), on(&new.health_interval));
        differs(&mut lines, "--health-interval", &was, &is, |v| (*v).to_owned());
        let proxy =
            |v: &Option<crate::proxy_protocol::Version>| v.map_or_else(|| "none".to_owned(), |v| format!("{v:?}"));
        differs(&mut lines, "--send-proxy", &self.send_proxy, &new.send_proxy, proxy);
        differs(&mut lines, "--key-file", &self.key, &new.key, |k| {
            if k.is_some() { "the key" } else { "no key" }.into()
        });
        differs(&mut lines, "--require-key", &self.require_key, &new.require_key, |r| format!("{r:?}").to_lowercase());
        // Compared as written (its key is --key-file's, reported above).
        let announce = |a: &Option<crate::client::AnnouncerConfig>| a.as_ref().map(|a| format!("{a:?}"));
        let on = |a: &Option<String>| if a.is_some() { "announcing" } else { "not announcing" }.to_owned();
        differs(&mut lines, "--announce", &announce(&self.announce), &announce(&new.announce), on);
        lines
    }
}

/// A handle to reload a running balancer from another thread (SIGHUP): made with the
/// balancer, live once its control port runs. A reload asked before that (a SIGHUP during
/// start-up) waits for the control port rather than be refused, so an edit made then is not
/// lost.
#[derive(Debug, Clone, Default)]
pub struct Reloader(Arc<(Mutex<Handle>, Condvar)>);

/// The control port's command channel once it runs, and how many reloads wait for it.
#[derive(Debug, Default)]
struct Handle {
    commands: Option<crate::shell::Commands<Command>>,
    waiting: usize,
}

impl Reloader {
    /// The control port runs: reloads go to it from now on (and those waiting go at once).
    pub(crate) fn install(&self, commands: crate::shell::Commands<Command>) {
        let (handle, ready) = &*self.0;
        handle.lock().unwrap_or_else(PoisonError::into_inner).commands = Some(commands);
        ready.notify_all();
    }

    /// How many reloads wait for the control port to run.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.0.0.lock().unwrap_or_else(PoisonError::into_inner).waiting
    }

    /// Hands the control port `settings` and waits (up to `wait`, the wait for a control port
    /// still starting included) for what changed.
    pub fn reload(&self, settings: Reloadable, wait: Duration) -> Result<Vec<Change>, ReloadError> {
        let deadline = Instant::now() + wait;
        let (handle, ready) = &*self.0;
        let mut guard = handle.lock().unwrap_or_else(PoisonError::into_inner);
        guard.waiting += 1;
        while guard.commands.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            guard = ready.wait_timeout(guard, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        guard.waiting -= 1;
        let commands = guard.commands.clone();
        drop(guard);
        let commands = commands.ok_or(ReloadError::NotStarted(wait))?;
        let (reply, changes) = crossbeam_channel::bounded(1);
        commands.send(Command::Reload { settings: Box::new(settings), reply }).map_err(|_| ReloadError::Stopped)?;
        changes.recv_timeout(deadline.saturating_duration_since(Instant::now())).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => ReloadError::Late(wait),
            crossbeam_channel::RecvTimeoutError::Disconnected => ReloadError::Stopped,
        })
    }

    /// A SIGHUP's end: hands `settings` over as [`reload`](Self::reload) does, logs what
    /// changed (`level_change`, the log level's, from [`LogLevel::change_to`], with the control
    /// port's), and switches the log level to `filter`. A control port that takes the settings
    /// late logs its own changes then, and the log level, this thread's to change, switches now
    /// all the same (see [`LogLevel::finish`]) rather than at the next SIGHUP; a balancer that
    /// never took them (not started, or stopped) changes nothing.
    pub fn reload_and_log(
        &self,
        settings: Reloadable,
        wait: Duration,
        level: &mut LogLevel,
        filter: String,
        level_change: Option<Change>,
    ) {
        let taken = match self.reload(settings, wait) {
            Ok(changes) => Some(changes),
            Err(late @ ReloadError::Late(_)) => {
                log::warn!("reload: {late}");
                None
            }
            Err(e) => return log::warn!("reload: {e}"),
        };
        level.finish(taken, filter, level_change);
    }
}

/// Why a reload came back without the changes made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The control port did not run within the wait: the settings were not handed over, and
    /// nothing changes (send SIGHUP again once the balancer runs).
    #[error("the balancer did not start within {0:?}")]
    NotStarted(Duration),
    /// Handed over, not answered within the wait: the control port applies them when it takes
    /// them, and logs them itself then.
    #[error("the control port did not take the settings within {0:?}")]
    Late(Duration),
    /// The balancer stopped before it took the settings (a SIGTERM came first).
    #[error("the balancer stopped before it took the settings")]
    Stopped,
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::{ReloadError, Reloader};
    use crate::balancer::control::Control;
    use crate::balancer::forward::Timeouts;
    use crate::balancer::{Config, Counters, Policy, Pool};
    use crate::registry::Registry;
    use crate::reload::LogLevel;
    use crate::shell::Shell;

    /// A control port with the balancer's default settings, and its pool.
    fn control() -> (Control, Arc<Pool>, Config) {
        let config = Config::default();
        let pool = Arc::new(Pool::new());
        let registry = Registry::new(config.registry.clone(), uuid::Uuid::new_v4);
        let counters = Arc::new(Counters::default());
        let mut core = Control::new(registry, Arc::clone(&pool), counters, None, config.rate_limit.clone(), false);
        let timeouts = Arc::new(Timeouts::new(config.connect_timeout, config.idle_timeout, config.drain_timeout));
        core.set_reloadable(config.reloadable(), timeouts);
        (core, pool, config)
    }

    /// The filters [`record`] was asked to switch to.
    static SWITCHED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record(filter: &str) -> Result<(), String> {
        SWITCHED.lock().unwrap().push(filter.to_owned());
        Ok(())
    }

    /// A control port that takes a reload late (busy, or stalled) still gets it, and the log
    /// level switches at once rather than at the next SIGHUP, as the broker's does; a balancer
    /// that never took the settings changes nothing, its log level included.
    #[test]
    fn the_log_level_switches_at_once_when_the_control_port_answers_late() {
        let (core, pool, config) = control();
        let mut new = config.reloadable();
        new.balance = Policy::LeastConn;
        let mut level = LogLevel::with_switch("warn", record);

        let never = Reloader::default();
        let change = level.change_to("info").unwrap();
        never.reload_and_log(new.clone(), Duration::from_millis(20), &mut level, "info".to_owned(), change);
        assert_eq!(level.current(), "warn", "not started: nothing switches");

        // Installed, but its loop does not turn before the wait ends.
        let mut shell = Shell::new(core).unwrap();
        let reloader = Reloader::default();
        reloader.install(shell.commands());
        assert_eq!(
            reloader.reload(new.clone(), Duration::from_millis(20)),
            Err(ReloadError::Late(Duration::from_millis(20)))
        );
        let change = level.change_to("debug").unwrap();
        reloader.reload_and_log(new, Duration::from_millis(20), &mut level, "debug".to_owned(), change);
        assert_eq!(level.current(), "debug", "switched although the control port did not answer");
        assert_eq!(*SWITCHED.lock().unwrap(), ["debug"]);
        // The control port takes the settings when it turns.
        assert_eq!(pool.policy(), Policy::RoundRobin);
        let mut events = mio::Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.policy() != Policy::LeastConn {
            assert!(Instant::now() < deadline, "the control port takes the settings");
            shell.turn(&mut events, Some(Duration::from_millis(10))).unwrap();
        }
    }

    #[test]
    fn a_reload_asked_before_the_control_port_runs_waits_for_it() {
        let (core, pool, config) = control();
        let mut new = config.reloadable();
        new.balance = Policy::LeastConn;

        let reloader = Reloader::default();
        let asking = reloader.clone();
        let asked = std::thread::spawn(move || asking.reload(new, Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while reloader.waiting() == 0 {
            assert!(Instant::now() < deadline, "the reload waits for the control port");
            std::thread::yield_now();
        }
        let mut shell = Shell::new(core).unwrap();
        reloader.install(shell.commands());
        let mut events = mio::Events::with_capacity(8);
        while !asked.is_finished() {
            assert!(Instant::now() < deadline, "the control port takes the settings");
            shell.turn(&mut events, Some(Duration::from_millis(10))).unwrap();
        }
        let changes = asked.join().unwrap().unwrap();
        assert_eq!(changes.iter().map(ToString::to_string).collect::<Vec<_>>(), ["--policy round-robin → least-conn"]);
        assert_eq!(pool.policy(), Policy::LeastConn);
    }
}
