//! Who may register what: the `--allow-register` and `--foreign-ip` rules.
//!
//! By default anyone may register any address, which keeps the design documents' protocol lines
//! working (`register <type> <ip> <port>` from another host is legal on a LAN). To lock a broker
//! down, name the networks servers register from, and require each to register its own address:
//!
//! ```
//! use makler::service::policy::{ForeignIp, Policy};
//!
//! let policy = Policy { allow_register: vec!["10.1.0.0/16".parse().unwrap()], foreign_ip: ForeignIp::Deny };
//! let host = "10.1.2.3".parse().unwrap();
//! assert!(policy.check(host, host).is_ok());
//! assert!(policy.check(host, "10.1.2.4".parse().unwrap()).is_err(), "not its own address");
//! assert!(policy.check("192.168.0.1".parse().unwrap(), "192.168.0.1".parse().unwrap()).is_err());
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

use crate::protocol::Rejection;

/// Whether a source may register an address other than its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForeignIp {
    /// Any address (the default).
    #[default]
    Allow,
    /// Only the address the request came from.
    Deny,
}

impl std::str::FromStr for ForeignIp {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "allow" => Ok(ForeignIp::Allow),
            "deny" => Ok(ForeignIp::Deny),
            _ => Err(format!("{text:?}: expected allow or deny")),
        }
    }
}

/// Which requests must come sealed with the shared key (`--require-key`; see
/// [`crate::protocol::seal`]). Unsealed, they are answered [`Rejection::KeyRequired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequireKey {
    /// None: anyone may send any request, by hand too (the default).
    #[default]
    No,
    /// The requests that change something: `register`, `heartbeat`, `deregister`, `report`,
    /// `watch` (and its echo) and `unwatch`.
    Writes,
    /// Every request, queries and listings too.
    All,
}

impl RequireKey {
    /// Whether `request`, unsealed, is refused.
    pub fn refuses(self, request: &crate::protocol::Request<'_>) -> bool {
        use crate::protocol::Request;
        match self {
            RequireKey::No => false,
            RequireKey::All => true,
            RequireKey::Writes => matches!(
                request,
                Request::Register { .. }
                    | Request::RegisterChecked { .. }
                    | Request::RegisterMeta { .. }
                    | Request::Heartbeat { .. }
                    | Request::Deregister { .. }
                    | Request::Report { .. }
                    | Request::Watch { .. }
                    | Request::WatchEcho { .. }
                    | Request::WatchMeta { .. }
                    | Request::Unwatch { .. }
                    | Request::UnwatchEcho { .. }
            ),
        }
    }
}

impl std::str::FromStr for RequireKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "writes" => Ok(RequireKey::Writes),
            "all" => Ok(RequireKey::All),
            _ => Err(format!("{text:?}: expected writes or all")),
        }
    }
}

/// The registration policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The networks registrations may come from; empty: any.
    pub allow_register: Vec<IpNet>,
    /// Whether a source may register another address than its own.
    pub foreign_ip: ForeignIp,
}

impl Policy {
    /// Whether `source` may register an instance at `endpoint` (both canonical).
    pub fn check(&self, source: IpAddr, endpoint: IpAddr) -> Result<(), Rejection> {
        if !self.allow_register.is_empty() && !self.allow_register.iter().any(|net| net.contains(&source)) {
            return Err(Rejection::NotAllowed { why: format!("{source} may not register here") });
        }
        if self.foreign_ip == ForeignIp::Deny && source != endpoint {
            return Err(Rejection::NotAllowed {
                why: format!("{source} may register only its own address, not {endpoint}"),
            });
        }
        Ok(())
    }
}

/// Parses a comma-separated list of networks (`10.0.0.0/8,fd00::/8`); a bare address is a
/// network of one.
///
/// ```
/// let nets = makler::service::policy::parse_networks("10.0.0.0/8, 192.168.1.7").unwrap();
/// assert_eq!(nets.len(), 2);
/// assert!(makler::service::policy::parse_networks("10.0.0.0/33").is_err());
/// ```
pub fn parse_networks(text: &str) -> Result<Vec<IpNet>, String> {
    let mut networks = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let network = match item.parse::<IpNet>() {
            Ok(network) => network,
            Err(_) => match item.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return Err(format!("{item:?} is not a network such as 10.0.0.0/8 or an address")),
            },
        };
        networks.push(network);
    }
    if networks.is_empty() {
        return Err("expected at least one network such as 10.0.0.0/8".into());
    }
    Ok(networks)
}
