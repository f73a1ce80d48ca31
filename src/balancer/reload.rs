//! The balancer's side of a reload (SIGHUP): which of its settings a running balancer takes
//! (the control core applies them: see `control/reload.rs`), which are fixed for its life, and
//! the handle another thread hands new settings with.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::control::reload::{Command, Reloadable, list, seconds};
use crate::reload::Change;

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
    pub fn reload(&self, settings: Reloadable, wait: Duration) -> Result<Vec<Change>, String> {
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
        let commands = commands.ok_or_else(|| format!("the balancer did not start within {wait:?}"))?;
        let (reply, changes) = crossbeam_channel::bounded(1);
        commands.send(Command::Reload { settings: Box::new(settings), reply }).map_err(|e| e.to_string())?;
        changes.recv_timeout(deadline.saturating_duration_since(Instant::now())).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => {
                format!("the control port did not take the settings within {wait:?}")
            }
            crossbeam_channel::RecvTimeoutError::Disconnected => {
                "the balancer stopped before it took the settings".to_owned()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::Reloader;
    use crate::balancer::control::Control;
    use crate::balancer::forward::Timeouts;
    use crate::balancer::{Config, Counters, Policy, Pool};
    use crate::registry::Registry;
    use crate::shell::Shell;

    #[test]
    fn a_reload_asked_before_the_control_port_runs_waits_for_it() {
        let config = Config::default();
        let pool = Arc::new(Pool::new());
        let registry = Registry::new(config.registry.clone(), uuid::Uuid::new_v4);
        let counters = Arc::new(Counters::default());
        let mut core = Control::new(registry, Arc::clone(&pool), counters, None, config.rate_limit.clone(), false);
        let timeouts = Arc::new(Timeouts::new(config.connect_timeout, config.idle_timeout, config.drain_timeout));
        core.set_reloadable(config.reloadable(), timeouts);
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
