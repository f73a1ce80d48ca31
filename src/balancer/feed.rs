//! `--backends-from SERVICE`: the thread that watches SERVICE at the brokers and hands each
//! live set to the control core (see `control/feed.rs` for what the core does with it).
//!
//! A [`Watch`] (the client side of the broker's `watch` verb, as `makler watch` uses it) renews
//! itself and repairs gaps; each change, and each re-sync (a renewal that found another state,
//! a broker restarted or failed over to), goes to the core whole, through the shell's command
//! channel. A watch lost (no broker answers) is started again, once a second, and its first
//! answer is the whole set again, so nothing stays stale after a broker restart. While no broker
//! answers, the backends last told stay: their health checks judge them.
//!
//! The watch asks for each instance's metadata too (`WatchMeta`), and each instance goes to the
//! core with the weight its `weight=N` pair declares (a `makler-server --meta weight=3`, or an
//! mDNS-imported instance's TXT): read as a backend registered at the control port reads it
//! ([`declared_weight`](super::policy::declared_weight): 1 to 256, 1 without one). A value that
//! is no weight counts as 1 and is logged, once for each instance and value, and at most
//! [`BAD_LINES`] times a minute (a broker, or a host forging its notifications, could change the
//! values or the instances with every notification; the rest are counted). An instance whose
//! metadata the broker had no room for in its notification weighs 1.
//!
//! Without `--key-file`, what arrives from the broker's address is taken as the broker's (as
//! for any unsealed client): a host that can forge that source address could add backends. With
//! it, requests go sealed and only notifications sealed with the key are taken.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::control::reload::Command;
use crate::client::{InstanceMeta, Watch};
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
        // The bad `weight=` values already logged, by instance, and how many lines went out.
        let mut bad = BadWeights::default();
        while !shutdown.is_requested() {
            let mut watch = match Watch::start_with_meta(&self.brokers, &self.service, self.key) {
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
            let weighed = weigh(watch.instances(), watch.meta(), &mut bad, &self.service, Instant::now());
            if commands.send(Command::Watched(weighed)).is_err() {
                return;
            }
            while !shutdown.is_requested() {
                match watch.next(Instant::now() + LOOK) {
                    Ok(None) => {}
                    // The event's instances are the watch's now, and its metadata theirs.
                    Ok(Some(_)) => {
                        let weighed = weigh(watch.instances(), watch.meta(), &mut bad, &self.service, Instant::now());
                        if commands.send(Command::Watched(weighed)).is_err() {
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

/// At most this many lines a minute say that an instance's `weight=` is no weight.
const BAD_LINES: u32 = 5;

/// The bad `weight=` values logged: the last one by instance, and the lines of this minute.
#[derive(Debug, Default)]
struct BadWeights {
    seen: HashMap<SocketAddr, Vec<u8>>,
    /// When this minute's lines began, and how many went out, and how many more were held back.
    minute: Option<Instant>,
    lines: u32,
    held: u64,
}

impl BadWeights {
    /// Whether a line may go out at `now` (at most [`BAD_LINES`] a minute); those held back are
    /// counted, and said in one line when the next minute's first goes out.
    fn may_log(&mut self, now: Instant, service: &str) -> bool {
        if self.minute.is_none_or(|began| now >= began + Duration::from_secs(60)) {
            if self.held > 0 {
                log::warn!("--backends-from {service}: {} more bad weight= values not logged", self.held);
            }
            (self.minute, self.lines, self.held) = (Some(now), 0, 0);
        }
        if self.lines < BAD_LINES {
            self.lines += 1;
            true
        } else {
            self.held += 1;
            false
        }
    }
}

/// Each of `instances` with the weight its metadata (`meta`, in the same order; shorter when
/// the broker left some out) declares. A value that is no weight counts as 1, and is logged the
/// first time it is seen for its instance (`bad` remembers, and forgets instances gone), within
/// `bad`'s budget of lines at `now`.
fn weigh(
    instances: &[SocketAddr],
    meta: &[InstanceMeta],
    bad: &mut BadWeights,
    service: &str,
    now: Instant,
) -> Vec<(SocketAddr, u32)> {
    if !bad.seen.is_empty() {
        let live: std::collections::HashSet<&SocketAddr> = instances.iter().collect();
        bad.seen.retain(|endpoint, _| live.contains(endpoint));
    }
    let weighed = instances.iter().enumerate().map(|(i, &endpoint)| {
        let value = meta.get(i).and_then(|pairs| {
            pairs.iter().find(|(key, _)| key.eq_ignore_ascii_case("weight")).map(|(_, value)| value.as_deref())
        });
        let weight = super::policy::declared_weight(value).unwrap_or_else(|e| {
            let raw = value.flatten().unwrap_or_default();
            if bad.seen.get(&endpoint).is_none_or(|seen| seen != raw) {
                if bad.may_log(now, service) {
                    log::warn!("--backends-from {service}: instance {endpoint}: its weight= ignored (weighs 1): {e}");
                }
                bad.seen.insert(endpoint, raw.to_vec());
            }
            1
        });
        (endpoint, weight)
    });
    weighed.collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::{BAD_LINES, BadWeights, weigh};

    #[test]
    fn instances_weigh_what_their_metadata_declares_and_a_bad_value_weighs_one() {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let pair = |key: &str, value: Option<&str>| (key.to_owned(), value.map(|v| v.as_bytes().to_vec()));
        let instances = [at(1), at(2), at(3), at(4), at(5), at(6)];
        let meta = vec![
            vec![pair("path", Some("/")), pair("weight", Some("3"))],
            vec![],
            vec![pair("Weight", Some("256"))],
            vec![pair("weight", Some("257"))],
            vec![pair("weight", None)],
            // at(6): none told (the broker had no room for it).
        ];
        let mut bad = BadWeights::default();
        let now = Instant::now();
        let weighed = weigh(&instances, &meta, &mut bad, "web", now);
        assert_eq!(weighed, [(at(1), 3), (at(2), 1), (at(3), 256), (at(4), 1), (at(5), 1), (at(6), 1)]);
        assert_eq!(bad.seen.len(), 2, "the two bad values, remembered so as to be logged once: {bad:?}");
        assert_eq!(bad.lines, 2);
        weigh(&instances, &meta, &mut bad, "web", now);
        assert_eq!(bad.lines, 2, "each logged once");
        // An instance gone is forgotten.
        weigh(&instances[..3], &meta, &mut bad, "web", now);
        assert!(bad.seen.is_empty());
    }

    #[test]
    fn bad_weights_that_change_with_every_notification_are_logged_a_few_times_a_minute() {
        let pair = |value: String| vec![vec![("weight".to_owned(), Some(value.into_bytes()))]];
        let mut bad = BadWeights::default();
        let start = Instant::now();
        // A broker (or a forger) that changes the value, or the instance, with each notification.
        for n in 0..1000u16 {
            let at = start + Duration::from_millis(u64::from(n));
            weigh(&[SocketAddr::from(([127, 0, 0, 1], 1))], &pair(format!("x{n}")), &mut bad, "web", at);
            weigh(&[SocketAddr::from(([127, 0, 0, 1], 2 + n))], &pair("x".into()), &mut bad, "web", at);
        }
        assert_eq!((bad.lines, bad.held), (BAD_LINES, 2000 - u64::from(BAD_LINES)));
        // A minute on: a few more may go out (the first says how many were held back).
        weigh(
            &[SocketAddr::from(([127, 0, 0, 1], 1))],
            &pair("y".into()),
            &mut bad,
            "web",
            start + Duration::from_secs(61),
        );
        assert_eq!((bad.lines, bad.held), (1, 0));
    }
}
