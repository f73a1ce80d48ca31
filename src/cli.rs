//! Flag parsing shared by the executables, so every program reads durations and limits alike.

use std::time::Duration;

/// Parses a positive number of seconds with optional decimals (`5`, `0.25`), as `--ttl` takes.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(makler::cli::parse_seconds("0.25"), Ok(Duration::from_millis(250)));
/// assert!(makler::cli::parse_seconds("-1").is_err());
/// assert!(makler::cli::parse_seconds("1e30").is_err());
/// ```
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(format!("{text:?}: must be more than 0 seconds"));
    }
    if seconds > 86_400.0 * 365.0 {
        return Err(format!("{text:?}: must be at most a year"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses a comma-separated list of addresses (`127.0.0.1:7000,[::1]:7000`, or host names such
/// as `localhost:7000`), as `--broker` takes.
///
/// ```
/// let brokers = makler::cli::parse_addrs("127.0.0.1:7000, 127.0.0.1:7001").unwrap();
/// assert_eq!(brokers.len(), 2);
/// assert!(makler::cli::parse_addrs("").is_err());
/// ```
pub fn parse_addrs(text: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let mut addrs = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let resolved = item.to_socket_addrs().map_err(|e| format!("{item:?}: {e}"))?;
        let first = resolved.into_iter().next().ok_or_else(|| format!("{item:?} resolves to no address"))?;
        addrs.push(first);
    }
    if addrs.is_empty() {
        return Err("expected at least one address such as 127.0.0.1:7000".into());
    }
    Ok(addrs)
}

/// A comma-separated list of addresses as a flag value (see [`parse_addrs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrList(pub Vec<std::net::SocketAddr>);

impl std::str::FromStr for AddrList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_addrs(text).map(AddrList)
    }
}

impl std::fmt::Display for AddrList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join(","))
    }
}

/// The multicast flags every program takes.
#[derive(Debug, Clone, clap::Args)]
pub struct MulticastArgs {
    /// Multicast group for announcements and broker discovery.
    #[arg(long = "multicast", value_name = "GROUP:PORT", default_value_t = crate::multicast::DEFAULT_GROUP,
          value_parser = crate::multicast::parse_group)]
    pub group: std::net::SocketAddrV4,

    /// Interface, by its IPv4 address, to use the group on; the default keeps it on this host.
    #[arg(long = "multicast-if", value_name = "IP", default_value_t = std::net::Ipv4Addr::LOCALHOST)]
    pub interface: std::net::Ipv4Addr,

    /// Use no multicast at all.
    #[arg(long)]
    pub no_multicast: bool,

    /// A file holding the shared secret (16 bytes or more, e.g. `head -c 32 /dev/urandom |
    /// base64`): brokers' peer traffic, announcements, goodbyes and discovery are then sealed
    /// with it, and unsealed ones are ignored. Give every program the same file.
    #[arg(long, value_name = "PATH", value_parser = parse_key_file)]
    pub key_file: Option<crate::protocol::seal::Key>,
}

/// Reads a key file (see [`crate::protocol::seal::Key::load`]).
pub fn parse_key_file(path: &str) -> Result<crate::protocol::seal::Key, String> {
    crate::protocol::seal::Key::load(std::path::Path::new(path))
}

impl MulticastArgs {
    /// The configuration these flags describe (`None` with `--no-multicast`).
    pub fn config(&self) -> Option<crate::multicast::MulticastConfig> {
        (!self.no_multicast).then(|| crate::multicast::MulticastConfig {
            group: self.group,
            interface: self.interface,
            key: self.key_file,
            ..Default::default()
        })
    }
}

/// The brokers a program talks to: those given, or else those that answer on the multicast
/// group within a second, or else (with multicast off) the default local broker.
pub fn brokers_or_discover(
    given: Option<&AddrList>,
    multicast: Option<&crate::multicast::MulticastConfig>,
) -> Result<Vec<std::net::SocketAddr>, String> {
    match (given, multicast) {
        (Some(list), _) => Ok(list.0.clone()),
        (None, Some(config)) => {
            let found = crate::client::discover(config, std::time::Duration::from_secs(1))
                .map_err(|e| format!("cannot ask multicast group {} on {}: {e}", config.group, config.interface))?;
            if found.is_empty() {
                return Err(format!(
                    "no broker answered on multicast group {} on interface {}; give --broker ADDR",
                    config.group, config.interface
                ));
            }
            Ok(found)
        }
        (None, None) => Ok(vec![crate::broker::DEFAULT_LISTEN]),
    }
}

/// The response-rate limiting flags of the programs that answer over UDP (broker, balancer).
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitArgs {
    /// Replies larger than their request, per second per source address (and four times as many
    /// per /24 or /56 network); beyond, every second request gets a short `ERROR rate limited`,
    /// the others nothing, so the service cannot be used as a reflector. 0 turns it off.
    #[arg(long, value_name = "N", default_value_t = crate::limit::DEFAULT_RATE)]
    pub rate_limit: u32,

    /// Networks never rate-limited (a spoofed loopback source cannot come from the network).
    #[arg(long, value_name = "CIDR[,CIDR…]", default_value = "127.0.0.0/8,::1/128",
          value_parser = crate::service::policy::parse_networks)]
    pub rate_limit_exempt: std::vec::Vec<ipnet::IpNet>,
}

impl RateLimitArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> crate::limit::RateLimit {
        crate::limit::RateLimit { rate: self.rate_limit, exempt: self.rate_limit_exempt.clone() }
    }
}
