//! The balancer's side of a reload (SIGHUP): which of its settings a running balancer takes
//! (the control core applies them: see `control/reload.rs`), which are fixed for its life, and
//! the handle another thread hands new settings with.

use std::sync::Arc;
use std::time::Duration;

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
/// balancer, live once its control port runs.
#[derive(Debug, Clone, Default)]
pub struct Reloader(pub(crate) Arc<std::sync::Mutex<Option<crate::shell::Commands<Command>>>>);

impl Reloader {
    /// Hands the control port `settings` and waits (up to `wait`) for what changed.
    pub fn reload(&self, settings: Reloadable, wait: Duration) -> Result<Vec<Change>, String> {
        let commands = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let commands = commands.ok_or("the balancer is not running yet")?;
        let (reply, changes) = crossbeam_channel::bounded(1);
        commands.send(Command::Reload { settings: Box::new(settings), reply }).map_err(|e| e.to_string())?;
        changes.recv_timeout(wait).map_err(|_| format!("the control port did not take the settings within {wait:?}"))
    }
}
