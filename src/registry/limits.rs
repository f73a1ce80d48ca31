//! What may be registered: service names and endpoints.

use std::net::{IpAddr, SocketAddr};

use super::saturate;
use crate::protocol::Rejection;

/// Limits on what may be registered, each reported with its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The longest service name, in bytes.
    pub max_name_len: usize,
    /// The characters a service name may hold besides ASCII letters and digits.
    pub name_punctuation: String,
    /// How many leases the table holds at most; beyond, registrations get `ERROR full`.
    pub max_instances: usize,
    /// How many leases one source IP address may hold at most (0: no limit), so that one
    /// source cannot fill the table; beyond, its registrations get `ERROR quota`.
    pub max_per_source: usize,
    /// How many leases the sources of one network ([`network`]: a /24 in IPv4, a /56 in IPv6)
    /// may hold at most together (0: no limit), so that many addresses of one network cannot
    /// fill the table either; beyond, their registrations get `ERROR quota`.
    pub max_per_network: usize,
}

/// The default cap on leases per source address: far below the table's size, far above what
/// one host of servers needs.
pub const DEFAULT_MAX_PER_SOURCE: usize = 1024;

/// The default cap on leases (and on watches) per network: four times a source's, as the rate
/// limit allows a network four times a source's replies; 25 networks to fill the table.
pub const DEFAULT_MAX_PER_NETWORK: usize = 4096;

/// How full the table (or the watches) must be, in percent, before a source or network that
/// holds much already is refused before a newcomer (see [`Limits::admit`]).
pub const NEARLY_FULL_PERCENT: usize = 90;

/// Above [`NEARLY_FULL_PERCENT`], what "holds much" means: a sixteenth of its quota (64 leases
/// of a source, 256 of a network, by default).
pub const NEARLY_FULL_SHARE: usize = 16;

/// The network an address counts in for the per-network quotas: its /24 in IPv4, its /56 in
/// IPv6 (what one site is usually given), IPv4-mapped IPv6 as IPv4.
pub fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[7..].fill(0);
            IpAddr::from(octets)
        }
    }
}

/// What [`Limits::admit`] and the watches' caps refuse for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source holds its quota.
    Source(usize),
    /// The source's network holds its quota.
    Network(usize),
    /// The table is nearly full and the source (or its network) holds this many or more.
    NearlyFull(usize),
}

impl Refusal {
    /// Whether one more may be added by a source that holds `source` and whose network holds
    /// `network`, to `len` held in all out of at most `max`, with these quotas (0: none).
    pub fn check(
        max_per_source: usize,
        max_per_network: usize,
        max: usize,
        len: usize,
        source: usize,
        network: usize,
    ) -> Result<(), Refusal> {
        if max_per_source > 0 && source >= max_per_source {
            return Err(Refusal::Source(max_per_source));
        }
        if max_per_network > 0 && network >= max_per_network {
            return Err(Refusal::Network(max_per_network));
        }
        if len.saturating_mul(100) >= max.saturating_mul(NEARLY_FULL_PERCENT) {
            let much_source = (max_per_source / NEARLY_FULL_SHARE).max(1);
            if max_per_source > 0 && source >= much_source {
                return Err(Refusal::NearlyFull(much_source));
            }
            let much_network = (max_per_network / NEARLY_FULL_SHARE).max(1);
            if max_per_network > 0 && network >= much_network {
                return Err(Refusal::NearlyFull(much_network));
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_len: 64,
            name_punctuation: "-_.".to_owned(),
            max_instances: 100_000,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            max_per_network: DEFAULT_MAX_PER_NETWORK,
        }
    }
}

impl Limits {
    /// Whether a new lease may be added by a source that holds `source` leases, whose network
    /// holds `network`, to a table of `len`: the quotas per source and per network, and, once the
    /// table is [`NEARLY_FULL_PERCENT`] full, room kept for those that hold little.
    pub fn admit(&self, len: usize, source: usize, network: usize) -> Result<(), Rejection> {
        Refusal::check(self.max_per_source, self.max_per_network, self.max_instances, len, source, network).map_err(
            |refusal| match refusal {
                Refusal::Source(max) => Rejection::SourceQuota { max: saturate(max) },
                Refusal::Network(max) => Rejection::NetworkQuota { max: saturate(max) },
                Refusal::NearlyFull(held) => Rejection::NearlyFull { held: saturate(held) },
            },
        )
    }

    /// Checks a service name against the limits.
    pub fn check_name(&self, name: &str) -> Result<(), Rejection> {
        if name.len() > self.max_name_len {
            return Err(Rejection::NameTooLong { len: saturate(name.len()), max: saturate(self.max_name_len) });
        }
        if name.is_empty() {
            return Err(Rejection::BadName { name: String::new(), why: "it is empty".to_owned() });
        }
        // Names are ASCII: judged a byte at a time first (for an ASCII byte, the punctuation
        // holds its character exactly when its bytes hold the byte), and only a name that fails
        // that is read as characters, for the error.
        let punctuation = self.name_punctuation.as_bytes();
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || (b.is_ascii() && punctuation.contains(&b))) {
            return Ok(());
        }
        if let Some(bad) = name.chars().find(|&c| !c.is_ascii_alphanumeric() && !self.name_punctuation.contains(c)) {
            return Err(Rejection::BadName {
                name: crate::protocol::excerpt(name, 40),
                why: format!("{bad:?} is not allowed; use ASCII letters, digits and {:?}", self.name_punctuation),
            });
        }
        Ok(())
    }
}

/// The one form of an endpoint the table keeps: an IPv4 address written as IPv6
/// (`::ffff:a.b.c.d`) is the IPv4 address, so both forms name the same instance.
pub fn canonical(endpoint: SocketAddr) -> SocketAddr {
    SocketAddr::new(endpoint.ip().to_canonical(), endpoint.port())
}

/// Checks that clients could connect to an endpoint: a real unicast address and a port.
pub fn check_endpoint(endpoint: SocketAddr) -> Result<(), Rejection> {
    let ip = endpoint.ip();
    let why = if endpoint.port() == 0 {
        return Err(Rejection::BadPort { port: "0".to_owned() });
    } else if ip.is_unspecified() {
        "it is the unspecified address"
    } else if ip.is_multicast() {
        "it is a multicast address"
    } else if ip == IpAddr::from([255, 255, 255, 255]) {
        "it is the broadcast address"
    } else {
        return Ok(());
    };
    Err(Rejection::UnusableIp { ip, why: why.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check_name` before it judged bytes first: characters only.
    fn by_characters(limits: &Limits, name: &str) -> Result<(), Rejection> {
        if name.len() > limits.max_name_len {
            return Err(Rejection::NameTooLong { len: saturate(name.len()), max: saturate(limits.max_name_len) });
        }
        if name.is_empty() {
            return Err(Rejection::BadName { name: String::new(), why: "it is empty".to_owned() });
        }
        if let Some(bad) = name.chars().find(|&c| !c.is_ascii_alphanumeric() && !limits.name_punctuation.contains(c)) {
            return Err(Rejection::BadName {
                name: crate::protocol::excerpt(name, 40),
                why: format!("{bad:?} is not allowed; use ASCII letters, digits and {:?}", limits.name_punctuation),
            });
        }
        Ok(())
    }

    /// The byte test first gives the verdict and the error the characters alone gave: for every
    /// character below U+0800 and a few beyond, alone, between letters and at either end, under
    /// the default punctuation, none, and punctuation with non-ASCII characters in it (whose
    /// UTF-8 bytes must not let a name's other characters through).
    #[test]
    fn bytes_first_judge_every_character_as_characters_did() {
        let punctuations = ["-_.", "", "/:", "é-", "€", "\u{7f}\0"];
        let mut characters: Vec<char> = (0..0x800u32).filter_map(char::from_u32).collect();
        characters.extend(['\u{ffff}', '€', '\u{10ffff}', '\u{1f600}', 'Ã', '©', '\u{a9}']);
        for punctuation in punctuations {
            let limits = Limits { name_punctuation: punctuation.to_owned(), ..Limits::default() };
            for &c in &characters {
                for name in [format!("{c}"), format!("a{c}b"), format!("ab{c}"), format!("{c}{c}x")] {
                    assert_eq!(
                        limits.check_name(&name),
                        by_characters(&limits, &name),
                        "{name:?} under {punctuation:?}"
                    );
                }
            }
            let long = "n".repeat(limits.max_name_len + 1);
            for name in ["", "echo", &long, &long[1..], "é", "aé"] {
                assert_eq!(limits.check_name(name), by_characters(&limits, name), "{name:?} under {punctuation:?}");
            }
        }
    }
}
