//! `--backends-from SERVICE`: the thread that watches SERVICE at the brokers and hands each
//! live set to the control core (see `control/feed.rs` for what the core does with it).
//!
//! A [`Watch`] (the client side of the broker's `watch` verb, as `makler watch` uses it) renews
//! itself and repairs gaps; each change, and each re-sync (a renewal that found another state,
//! a broker restarted or failed over to), goes to the core whole, through the shell's command
//! channel. A watch lost (no broker answers) is started again, once a second, and its first
//! answer is the whole set again, so nothing stays stale after a broker restart. While no broker
//! answers, the backends last told stay: their health checks judge them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::control::reload::Command;
use crate::client::Watch;
use crate::protocol::seal::Key;
use crate::shell::Commands;
use crate::shutdown::Shutdown;

/// How long the thread waits on the watch before it looks at whether to stop.
const LOOK: Duration = Duration::from_millis(200);

/// How long to wait before watching again when no broker answered.
const RETRY: Duration = Duration::from_secs(1);

/// What the watching thread needs.
pub(crate) struct Feed {
    brokers: Vec<SocketAddr>,
    service: String,
    key: Option<Key>,
    log: bool,
}

impl Feed {
    /// With `--backends-from`, starts the thread that watches at `config`'s brokers and hands
    /// the live sets to the control loop's `commands`; it ends on shutdown, or when the control
    /// loop has stopped. Without, does nothing.
    pub fn spawn(
        config: &super::Config,
        commands: impl FnOnce() -> Commands<Command>,
        shutdown: &Shutdown,
    ) -> std::io::Result<()> {
        let Some(service) = config.backends_from.clone() else { return Ok(()) };
        let feed = Feed { brokers: config.brokers.clone(), service, key: config.key, log: config.log };
        let (commands, stop) = (commands(), shutdown.clone());
        std::thread::Builder::new().name("feed".into()).spawn(move || feed.run(&commands, &stop))?;
        Ok(())
    }

    fn run(self, commands: &Commands<Command>, shutdown: &Shutdown) {
        let stopped = shutdown.stopped();
        let mut warned = false;
        while !shutdown.is_requested() {
            let mut watch = match Watch::start_keyed(&self.brokers, &self.service, self.key) {
                Ok(watch) => watch,
                Err(e) => {
                    if !warned {
                        log::warn!(
                            "--backends-from {}: cannot watch it: {e} (trying again every second)",
                            self.service
                        );
                        warned = true;
                    }
                    let _ = stopped.recv_timeout(RETRY);
                    continue;
                }
            };
            warned = false;
            if self.log {
                log::info!(
                    "--backends-from {}: watching it at {}, {} instances",
                    self.service,
                    watch.broker(),
                    watch.instances().len()
                );
            }
            if commands.send(Command::Watched(watch.instances().to_vec())).is_err() {
                return;
            }
            while !shutdown.is_requested() {
                match watch.next(Instant::now() + LOOK) {
                    Ok(None) => {}
                    Ok(Some(
                        crate::client::WatchEvent::Changed { instances, .. }
                        | crate::client::WatchEvent::Resynced { instances, .. },
                    )) => {
                        if commands.send(Command::Watched(instances)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        log::warn!("--backends-from {}: the watch was lost: {e}; watching again", self.service);
                        break;
                    }
                }
            }
        }
    }
}
