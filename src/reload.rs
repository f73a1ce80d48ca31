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

/// Calls `reload` on every SIGHUP, on a small thread of its own, so that the signal never
/// ends the process (its default action). Install it before the `listening` line.
pub fn on_sighup(mut reload: impl FnMut() + Send + 'static) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new().name("reload".into()).spawn(move || {
        for _ in signals.forever() {
            log::info!("SIGHUP: reloading");
            reload();
        }
    })?;
    Ok(())
}

/// The log filter in force, as `--log-level` (or `--quiet`, or `RUST_LOG`) chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel {
    current: String,
}

impl LogLevel {
    /// The filter the program started with.
    pub fn new(current: String) -> Self {
        LogLevel { current }
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
            crate::cli::set_log_level(&filter)?;
            self.current = filter;
        }
        Ok(())
    }
}
