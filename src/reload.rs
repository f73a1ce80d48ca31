//! SIGHUP: what every long-running program shares when it reloads its settings.
//!
//! A program reads its command line and `--config` file again (see
//! [`crate::cli::config::reparse`]), hands the settings that may change at run time to what
//! runs (the broker's [`Node`](crate::node::Node), the balancer's control port), and logs one
//! line per [`Change`], then `reloaded: N changes`. Settings fixed for the process's life are
//! named as kept; bad settings are refused and nothing changes:
//!
//! ```text
//! reload: --peers 127.0.0.1:7001 → 127.0.0.1:7001,127.0.0.1:7002
//! reload: --listen cannot change at run time: kept 127.0.0.1:7000 (restart to apply)
//! reloaded: 1 change
//! reload refused: /etc/makler/broker.toml: line 3: …; the old settings stay
//! ```

use std::fmt;
use std::io;

/// One setting a reload changed, as logged: `reload: --peers A → A,B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The flag that names it.
    pub setting: &'static str,
    /// Its value before.
    pub was: String,
    /// Its value now.
    pub now: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} → {}", self.setting, self.was, self.now)
    }
}

/// Logs each change, then `reloaded: N changes`.
pub fn log_changes(changes: &[Change]) {
    for change in changes {
        log::info!("reload: {change}");
    }
    log::info!("reloaded: {} change{}", changes.len(), if changes.len() == 1 { "" } else { "s" });
}

/// Logs a reload that changes nothing because its settings are bad.
pub fn log_refused(error: &str) {
    log::error!("reload refused: {error}; the old settings stay");
}

/// Logs a setting that differs but is fixed for the process's life.
pub fn log_fixed(flag: &str, kept: &dyn fmt::Display) {
    log::warn!("reload: {flag} cannot change at run time: kept {kept} (restart to apply)");
}

/// SIGHUP, caught: from [`catch`](Self::catch) on, a SIGHUP no longer ends the process (its
/// default action) but waits for [`on_reload`](Self::on_reload). Catch it first thing in
/// `main`: a service manager may send one (`systemctl reload`) as soon as the process starts,
/// and one that came before the handler would end the process, which `Restart=on-failure`
/// takes as a clean exit and does not restart.
#[derive(Debug)]
pub struct Sighup(signal_hook::iterator::Signals);

impl Sighup {
    /// Catches SIGHUP from now on; one that comes before [`on_reload`](Self::on_reload) is
    /// kept, and reloads as soon as the program can.
    pub fn catch() -> io::Result<Self> {
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]).map(Sighup)
    }

    /// Calls `reload` on every SIGHUP (the ones caught meanwhile first), on a small thread of
    /// its own. SIGHUPs that come while a reload runs make one more reload after it (the last
    /// file wins).
    pub fn on_reload(self, mut reload: impl FnMut() + Send + 'static) -> io::Result<()> {
        let mut signals = self.0;
        std::thread::Builder::new().name("reload".into()).spawn(move || {
            for _ in signals.forever() {
                log::info!("SIGHUP: reloading");
                reload();
            }
        })?;
        Ok(())
    }
}

/// Calls `reload` on every SIGHUP, on a small thread of its own, so that the signal never
/// ends the process (its default action). A program should rather [`Sighup::catch`] it
/// first thing, and hand it the reload once it can.
pub fn on_sighup(reload: impl FnMut() + Send + 'static) -> io::Result<()> {
    Sighup::catch()?.on_reload(reload)
}

/// The log filter in force, as `--log-level` (or `--quiet`, or `RUST_LOG`) chose it.
#[derive(Debug, Clone)]
pub struct LogLevel {
    current: String,
    /// What switches the program's logger ([`crate::cli::set_log_level`]; a test's recorder).
    set: fn(&str) -> Result<(), String>,
}

impl LogLevel {
    /// The filter the program started with.
    pub fn new(current: String) -> Self {
        LogLevel { current, set: crate::cli::set_log_level }
    }

    /// The filter in force.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// The change to `filter`, if it differs; an error when it does not parse. Nothing
    /// changes until [`switch`](Self::switch): a reload logs its lines first, at the level
    /// in force when it was asked for.
    pub fn change_to(&self, filter: &str) -> Result<Option<Change>, String> {
        crate::cli::parse_log_filter(filter)?;
        Ok((filter != self.current).then(|| Change {
            setting: "--log-level",
            was: self.current.clone(),
            now: filter.to_owned(),
        }))
    }

    /// Switches to `filter` (see [`crate::cli::set_log_level`]).
    pub fn switch(&mut self, filter: String) -> Result<(), String> {
        if filter != self.current {
            (self.set)(&filter)?;
            self.current = filter;
        }
        Ok(())
    }

    /// Ends a reload whose other settings went to a running loop: `taken` holds the changes
    /// the loop made, or is `None` when it did not take them in time (it applies them when it
    /// does, and logs them then itself). The log level is this thread's to change, so it
    /// switches to `filter` now either way, rather than at the next SIGHUP: its change
    /// (`level_change`, from [`change_to`](Self::change_to)) is logged with the loop's, or on
    /// its own line without them, before the switch (at the level in force when the reload was
    /// asked for).
    pub fn finish(&mut self, taken: Option<Vec<Change>>, filter: String, level_change: Option<Change>) {
        match taken {
            Some(mut changes) => {
                changes.extend(level_change);
                log_changes(&changes);
            }
            None => {
                if let Some(change) = level_change {
                    log::info!("reload: {change}");
                }
            }
        }
        if let Err(e) = self.switch(filter) {
            log::warn!("reload: --log-level: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::{LogLevel, Sighup};

    /// The filters [`record`] was asked to switch to.
    static SWITCHED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record(filter: &str) -> Result<(), String> {
        SWITCHED.lock().unwrap().push(filter.to_owned());
        Ok(())
    }

    /// A reload the running loop did not answer in time still switches the log level at once
    /// (the loop logs its own changes when it takes them); one it answered switches it too.
    #[test]
    fn the_log_level_switches_whether_or_not_the_loop_answered() {
        let mut level = LogLevel { current: "info".to_owned(), set: record };
        let change = level.change_to("debug").unwrap();
        assert!(change.is_some());
        level.finish(None, "debug".to_owned(), change);
        assert_eq!(level.current(), "debug", "switched although the loop did not answer");
        let change = level.change_to("warn").unwrap();
        level.finish(Some(Vec::new()), "warn".to_owned(), change);
        assert_eq!(level.current(), "warn");
        assert_eq!(level.change_to("warn"), Ok(None), "nothing to change");
        level.finish(None, "warn".to_owned(), None);
        assert_eq!(*SWITCHED.lock().unwrap(), ["debug", "warn"]);
    }

    /// A SIGHUP that comes after the catch and before the reload is ready ends nothing: it
    /// reloads once the reload is handed over.
    #[test]
    fn a_sighup_caught_before_the_reload_is_ready_reloads_once_it_is() {
        let sighup = Sighup::catch().unwrap();
        signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
        let (reloaded, reloads) = crossbeam_channel::unbounded();
        sighup.on_reload(move || reloaded.send(()).unwrap_or_default()).unwrap();
        reloads.recv_timeout(Duration::from_secs(10)).expect("the SIGHUP reloads");
    }
}
