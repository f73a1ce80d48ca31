//! Warnings about datagrams that do not open with the shared key: brokers given different
//! `--key-file`s (or one none) never peer, and without a log line nobody would know why.
//!
//! At most one warning per source address per [`INTERVAL`], so a peer that says hello twice a
//! second with the wrong key costs a line a minute, not a flood. The node passes the time in.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::protocol::seal::SealError;

/// At most one warning per source address this often.
pub(super) const INTERVAL: Duration = Duration::from_secs(60);

/// Sources remembered at most; when full, those warned about longer ago than [`INTERVAL`] are
/// forgotten, and a new source is not warned about until there is room.
const MAX_SOURCES: usize = 256;

/// Why a peer or group datagram was not opened, as far as the key is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyTrouble {
    /// This broker has a key; the datagram is not sealed.
    Unsealed,
    /// Sealed with another key (or forged).
    OtherKey,
    /// Stamped outside the replay window: clocks disagree, or a replay.
    Stale,
    /// Sealed, and this broker has no key.
    NoKey,
}

impl KeyTrouble {
    /// What a failure to open means for the warning; `None`: nothing worth a warning (a replay,
    /// which the sender cannot help).
    pub(super) fn of(error: SealError) -> Option<Self> {
        match error {
            SealError::NotSealed => Some(KeyTrouble::Unsealed),
            SealError::WrongKey | SealError::BadTag => Some(KeyTrouble::OtherKey),
            SealError::Stale => Some(KeyTrouble::Stale),
            SealError::Replay | SealError::Busy => None,
        }
    }

    /// The likely cause and what to do, for the log line.
    fn explain(self) -> &'static str {
        match self {
            KeyTrouble::Unsealed => {
                "is not sealed, and this broker has a --key-file: the sender likely has none; give every broker \
                 and program the same key file"
            }
            KeyTrouble::OtherKey => {
                "is sealed with another key: the sender's --key-file likely differs from this broker's; give every \
                 broker and program the same key file"
            }
            KeyTrouble::Stale => "is stamped more than 30 s from this host's clock: the hosts' clocks likely disagree",
            KeyTrouble::NoKey => {
                "is sealed, and this broker has no --key-file: give it the same key file as the sender"
            }
        }
    }
}

/// The rate limit on key warnings. See the [module documentation](self).
#[derive(Debug, Default)]
pub(super) struct KeyWarnings {
    last: HashMap<IpAddr, Instant>,
}

impl KeyWarnings {
    /// The warning for a datagram from `from` that did not open, when one is due at `now`.
    pub(super) fn warning(&mut self, now: Instant, from: SocketAddr, trouble: KeyTrouble) -> Option<String> {
        let ip = from.ip().to_canonical();
        if self.last.get(&ip).is_some_and(|&at| now.saturating_duration_since(at) < INTERVAL) {
            return None;
        }
        if self.last.len() >= MAX_SOURCES && !self.last.contains_key(&ip) {
            self.last.retain(|_, at| now.saturating_duration_since(*at) < INTERVAL);
            if self.last.len() >= MAX_SOURCES {
                return None;
            }
        }
        self.last.insert(ip, now);
        Some(format!(
            "dropped a peer or group datagram from {from}: it {} (at most one such warning a minute per source)",
            trouble.explain()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_warning_per_interval_per_source() {
        let t0 = Instant::now();
        let mut w = KeyWarnings::default();
        let (a, a2, b) =
            ("10.0.0.1:7000".parse().unwrap(), "10.0.0.1:9".parse().unwrap(), "10.0.0.2:7000".parse().unwrap());
        let first = w.warning(t0, a, KeyTrouble::OtherKey).expect("the first is logged");
        assert!(first.contains("10.0.0.1:7000") && first.contains("--key-file"), "{first}");
        for ms in [0, 1, 30_000, 59_999] {
            let at = t0 + Duration::from_millis(ms);
            assert_eq!(w.warning(at, a, KeyTrouble::OtherKey), None, "{ms} ms");
            assert_eq!(w.warning(at, a2, KeyTrouble::Unsealed), None, "another port of the same host, {ms} ms");
        }
        assert!(w.warning(t0 + Duration::from_secs(1), b, KeyTrouble::Unsealed).is_some(), "another source");
        assert!(w.warning(t0 + INTERVAL, a, KeyTrouble::OtherKey).is_some(), "after the interval");
        assert_eq!(w.warning(t0 + INTERVAL, a, KeyTrouble::OtherKey), None);
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let t0 = Instant::now();
        let mut w = KeyWarnings::default();
        for i in 0..MAX_SOURCES as u32 {
            let from = SocketAddr::new(IpAddr::from(std::net::Ipv4Addr::from((10u32 << 24) + i)), 7000);
            assert!(w.warning(t0, from, KeyTrouble::NoKey).is_some());
        }
        let late: SocketAddr = "192.168.0.1:7000".parse().unwrap();
        assert_eq!(w.warning(t0, late, KeyTrouble::NoKey), None, "full: not warned, not remembered");
        assert!(w.warning(t0 + INTERVAL, late, KeyTrouble::NoKey).is_some(), "room again after the interval");
        assert!(w.last.len() <= MAX_SOURCES);
        assert_eq!(KeyTrouble::of(SealError::Replay), None);
    }
}
