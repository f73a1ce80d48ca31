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
}

/// The default cap on leases per source address: far below the table's size, far above what
/// one host of servers needs.
pub const DEFAULT_MAX_PER_SOURCE: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_len: 64,
            name_punctuation: "-_.".to_owned(),
            max_instances: 100_000,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
        }
    }
}

impl Limits {
    /// Checks a service name against the limits.
    pub fn check_name(&self, name: &str) -> Result<(), Rejection> {
        if name.len() > self.max_name_len {
            return Err(Rejection::NameTooLong { len: saturate(name.len()), max: saturate(self.max_name_len) });
        }
        if name.is_empty() {
            return Err(Rejection::BadName { name: String::new(), why: "it is empty".to_owned() });
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
