//! Flag parsing and logging set-up shared by the executables, so every program reads durations
//! and limits alike and writes log lines of one format.

use std::time::Duration;

pub mod config;
mod logging;

pub use config::{ConfigArgs, parse, reparse};
pub use logging::{init_logging, init_logging_at, log_filter, parse_log_filter, set_log_level};

/// The version every program's `-V` prints: the package version and the commit it was built
/// from (`0.1.0 (commit 1a2b3c4d5e6f)`; `unknown` outside a git checkout). Read when the library
/// is compiled, which its build script makes happen whenever HEAD moves, so that programs of
/// other packages (`makler-load`) print the same.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MAKLER_COMMIT"), ")");

/// [`VERSION`], for clap's `#[command(version = makler::version!())]`.
#[macro_export]
macro_rules! version {
    () => {
        $crate::cli::VERSION
    };
}

/// Parses a health check as `--check` takes it: `tcp`, `http:<path>` or `none` (see
/// [`crate::protocol::check`]).
pub fn parse_check(text: &str) -> Result<crate::protocol::Check<Box<str>>, String> {
    crate::protocol::Check::parse(text).map(|check| check.to_owned_check()).map_err(|e| e.to_string())
}

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
    if seconds < 0.0 {
        return Err(format!("{text:?}: must be more than 0 seconds, not negative"));
    }
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(format!("{text:?}: must be more than 0 seconds"));
    }
    if seconds > 86_400.0 * 365.0 {
        return Err(format!("{text:?}: must be at most a year"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses any address a flag takes (`--listen`, `--control`, `--metrics`, `--dns`, `--broker`,
/// `--peers`, `--bridge`, `makler report`'s endpoint, `makler-load --target`): `IP:PORT`
/// (`[::1]:7000` for IPv6), or `HOST:PORT` with a host name that resolves (`localhost:7000`; the
/// first address it resolves to is taken). One parser, so that every flag takes the same
/// spellings and says the same thing about a bad one.
///
/// ```
/// assert_eq!(makler::cli::parse_addr("127.0.0.1:7000").unwrap().port(), 7000);
/// assert!(makler::cli::parse_addr("localhost:7000").unwrap().ip().is_loopback());
/// assert!(makler::cli::parse_addr("7000").unwrap_err().contains("IP:PORT"));
/// ```
pub fn parse_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let hint = "expected IP:PORT such as 127.0.0.1:7000, 0.0.0.0:7000 (every interface) or [::1]:7000";
    if !text.contains(':') {
        return Err(format!("{text:?}: {hint}"));
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{text:?} resolves to no address; {hint}")),
        Err(e) => Err(format!("{text:?}: cannot resolve the host name ({e}); {hint}")),
    }
}

/// [`parse_addr`], under the name the listening flags have used.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    parse_addr(text)
}

/// The exit codes, the same in every program (README's "Exit codes" table): a script can tell
/// a bad flag from a missing service from a refusal whichever program it ran.
pub mod exit {
    /// Anything not named below (a port taken, an I/O error); the message says which.
    pub const FAILURE: u8 = 1;
    /// Bad flags or arguments (clap's own code for a usage error).
    pub const USAGE: u8 = 2;
    /// No such service or registration.
    pub const NOT_FOUND: u8 = 3;
    /// No broker answered.
    pub const BROKER_UNREACHABLE: u8 = 4;
    /// No server of the service could be reached, or it did not answer in time.
    pub const SERVER_UNREACHABLE: u8 = 5;
    /// The broker refused the request (`ERROR …`: a policy, a bad name, a missing key).
    pub const REFUSED: u8 = 6;
}

/// The shortest TTL a broker or balancer takes: with less, a registration would expire between
/// two heartbeats on any real network.
pub const MIN_TTL: Duration = Duration::from_millis(100);

/// Parses `--ttl`: seconds as [`parse_seconds`] takes them, at least [`MIN_TTL`].
///
/// ```
/// assert!(makler::cli::parse_ttl("5").is_ok());
/// assert!(makler::cli::parse_ttl("0.01").unwrap_err().contains("at least 0.1"));
/// ```
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_seconds(text)?;
    if ttl < MIN_TTL {
        return Err(format!(
            "{text:?}: must be at least {} seconds, or nothing could stay registered (servers heartbeat every third of it)",
            MIN_TTL.as_secs_f64()
        ));
    }
    Ok(ttl)
}

/// Parses a comma-separated list of addresses (`127.0.0.1:7000,[::1]:7000`, or host names such
/// as `localhost:7000`), each as [`parse_addr`] takes it, as `--broker` takes.
///
/// ```
/// let brokers = makler::cli::parse_addrs("127.0.0.1:7000, 127.0.0.1:7001").unwrap();
/// assert_eq!(brokers.len(), 2);
/// assert!(makler::cli::parse_addrs("").is_err());
/// ```
pub fn parse_addrs(text: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    let mut addrs = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        addrs.push(parse_addr(item)?);
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

    /// Interface to use the group on, by its IPv4 address or its name (`eth0`: its first IPv4
    /// address); the default keeps it on this host.
    #[arg(long = "multicast-if", value_name = "IP|NAME", default_value_t = std::net::Ipv4Addr::LOCALHOST,
          value_parser = parse_interface)]
    pub interface: std::net::Ipv4Addr,

    /// Use no multicast at all.
    #[arg(long)]
    pub no_multicast: bool,

    /// A file holding the shared secret (16 bytes or more, e.g. `head -c 32 /dev/urandom |
    /// base64`): brokers' peer traffic, announcements, goodbyes and discovery are then sealed
    /// with it, and unsealed ones are ignored; clients seal their requests to brokers (for
    /// --require-key) and take only sealed replies. Give every program the same file. It must
    /// be readable by its owner only (`chmod 600 PATH`): one others may read is refused.
    #[arg(long, global = true, value_name = "PATH", value_parser = parse_key_file)]
    pub key_file: Option<crate::protocol::seal::Key>,
}

/// DNS-SD service types (`--mdns-import`), comma-separated: `_http._tcp,_ipp._tcp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTypes(pub Vec<String>);

/// Parses [`ServiceTypes`]: each `_<name>._tcp` or `_<name>._udp` (a trailing `.local` or dot
/// is dropped), imported as the service `<name>`.
pub fn parse_service_types(text: &str) -> Result<ServiceTypes, String> {
    let mut types = Vec::new();
    for item in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let item = item.trim_end_matches('.');
        let item = item.strip_suffix(".local").unwrap_or(item);
        if crate::node::mdns::service_of_type(item).is_none() {
            return Err(format!("{item:?} is not a service type such as _http._tcp"));
        }
        if !types.iter().any(|t: &String| t.eq_ignore_ascii_case(item)) {
            types.push(item.to_owned());
        }
    }
    if types.is_empty() {
        return Err("no service type given (e.g. _http._tcp)".to_owned());
    }
    Ok(ServiceTypes(types))
}

/// An interface given by its IPv4 address or by its name (`eth0`, `lo`): its first IPv4 address,
/// as `ip -4 addr` lists it. A name without an IPv4 address, or no such interface, is refused
/// with the names there are.
pub fn parse_interface(text: &str) -> Result<std::net::Ipv4Addr, String> {
    if let Ok(ip) = text.parse() {
        return Ok(ip);
    }
    interface_ipv4(text)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn interface_ipv4(name: &str) -> Result<std::net::Ipv4Addr, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list the interfaces: {e}"))?;
    let mut names = Vec::new();
    for ifaddr in addrs {
        let v4 = ifaddr.address.as_ref().and_then(|a| a.as_sockaddr_in()).map(|a| a.ip());
        if ifaddr.interface_name == name {
            if let Some(ip) = v4 {
                return Ok(ip);
            }
        }
        if v4.is_some() && !names.contains(&ifaddr.interface_name) {
            names.push(ifaddr.interface_name);
        }
    }
    Err(format!("\"{name}\" is neither an IPv4 address nor an interface with one (interfaces: {})", names.join(", ")))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn interface_ipv4(name: &str) -> Result<std::net::Ipv4Addr, String> {
    Err(format!("\"{name}\" is not an IPv4 address (interface names are read on Linux only)"))
}

/// Reads a key file (see [`crate::protocol::seal::Key::load`]).
pub fn parse_key_file(path: &str) -> Result<crate::protocol::seal::Key, String> {
    crate::protocol::seal::Key::load(std::path::Path::new(path))
}

impl MulticastArgs {
    /// For `--check-config`: `--multicast-if` when no interface of this host has that address,
    /// which a program finds out only once it uses the group (the broker exits 1; a server
    /// looking for brokers retries in vain); `None` with `--no-multicast`.
    pub fn interface_problem(&self) -> Option<String> {
        let interface = self.interface;
        (!self.no_multicast && crate::mdns::socket::link_network(interface).is_none()).then(|| {
            format!(
                "--multicast-if {interface} is not the IPv4 address of an interface of this host (see `ip -4 addr`)"
            )
        })
    }

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
                .map_err(|e| format!("cannot look for brokers: {}", crate::multicast::explain(e, config)))?;
            if found.is_empty() {
                return Err(crate::client::no_broker_message(config));
            }
            Ok(found)
        }
        (None, None) => Ok(vec![crate::broker::DEFAULT_LISTEN]),
    }
}

/// Who may register what, and how much: the flags of the programs that take registrations (the
/// broker, and the balancer's control port), with the same names, defaults and replies.
#[derive(Debug, Clone, clap::Args)]
pub struct RegisterPolicyArgs {
    /// Most instances one source address may hold (so one source cannot fill the table); 0: no
    /// limit.
    #[arg(long, value_name = "N", default_value_t = crate::registry::DEFAULT_MAX_PER_SOURCE)]
    pub max_per_source: usize,

    /// Networks that may register (default: any). Example: 10.1.0.0/16,fd00::/8.
    #[arg(long, value_name = "CIDR[,CIDR…]", value_parser = crate::service::policy::parse_networks)]
    pub allow_register: Option<std::vec::Vec<ipnet::IpNet>>,

    /// Whether a source may register an address other than its own: allow (the default, as the
    /// protocol's `register <type> <ip> <port>` from another host expects) or deny.
    #[arg(long, value_name = "allow|deny", default_value = "allow")]
    pub foreign_ip: crate::service::policy::ForeignIp,

    /// Take only requests sealed with the --key-file key: `writes` (register, heartbeat,
    /// deregister, report, watch, unwatch) or `all` (queries and listings too). Unsealed ones
    /// are answered `ERROR key required`; sealed replays are dropped. Default: none required.
    /// Give the clients the key file too.
    #[arg(long, value_name = "writes|all")]
    pub require_key: Option<crate::service::policy::RequireKey>,
}

impl RegisterPolicyArgs {
    /// `--require-key` (none by default), checked against whether there is a key: without
    /// one it is an error to report at startup.
    pub fn require_key(
        &self,
        key: Option<&crate::protocol::seal::Key>,
    ) -> Result<crate::service::policy::RequireKey, String> {
        match (self.require_key, key) {
            (Some(_), None) => Err("--require-key needs --key-file (the key requests must be sealed with)".into()),
            (require, _) => Ok(require.unwrap_or_default()),
        }
    }

    /// The registration policy these flags describe (`--max-per-source` goes to the table's
    /// limits instead).
    pub fn policy(&self) -> crate::service::policy::Policy {
        crate::service::policy::Policy {
            allow_register: self.allow_register.clone().unwrap_or_default(),
            foreign_ip: self.foreign_ip,
        }
    }
}

/// The response-rate limiting flags of the programs that answer over UDP (broker, balancer).
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitArgs {
    /// Replies larger than their request, per second per source address (and four times as many
    /// per /24 or /56 network); beyond, every second request gets a short `ERROR rate limited`,
    /// the others nothing, so the service cannot be used as a reflector. The id, OK or NOT FOUND
    /// answering register, heartbeat, deregister or report is limited only to 2048 at once and
    /// 2048 a second per source address. 0 turns it all off.
    #[arg(long, value_name = "N", default_value_t = crate::limit::DEFAULT_RATE)]
    pub rate_limit: u32,

    /// Networks never rate-limited (a spoofed loopback source cannot come from the network);
    /// `none` (in a --config file also `[]`): every source is limited, loopback too.
    #[arg(long, value_name = "CIDR[,CIDR…]|none", default_value = "127.0.0.0/8,::1/128",
          value_parser = parse_networks_or_none)]
    pub rate_limit_exempt: std::vec::Vec<ipnet::IpNet>,
}

/// A list of networks, or `none` for the empty list: the empty form of a list flag whose
/// default is not empty (`--rate-limit-exempt none`), which a config file's `[]` also means
/// (see [`config`]; such a flag's value name ends in `|none`).
pub fn parse_networks_or_none(text: &str) -> Result<std::vec::Vec<ipnet::IpNet>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(std::vec::Vec::new());
    }
    crate::service::policy::parse_networks(text).map_err(|e| format!("{e}, or none"))
}

impl RateLimitArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> crate::limit::RateLimit {
        crate::limit::RateLimit { rate: self.rate_limit, exempt: self.rate_limit_exempt.clone() }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn service_types_are_underscored_names_with_a_protocol() {
        let types = super::parse_service_types("_http._tcp, _ipp._tcp.local., _HTTP._tcp,_x._udp").unwrap();
        assert_eq!(types.0, ["_http._tcp", "_ipp._tcp", "_x._udp"], "trimmed, .local dropped, duplicates once");
        for bad in ["http", "_http", "_a.b._tcp", "http._tcp", "", ","] {
            assert!(super::parse_service_types(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn networks_or_none() {
        assert_eq!(super::parse_networks_or_none("none"), Ok(vec![]));
        assert_eq!(super::parse_networks_or_none(" None "), Ok(vec![]));
        let two = super::parse_networks_or_none("10.0.0.0/8,::1").unwrap();
        assert_eq!(two, ["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(), "::1/128".parse().unwrap()]);
        for bad in ["", "none,10.0.0.0/8", "nothing"] {
            assert!(super::parse_networks_or_none(bad).unwrap_err().ends_with(", or none"), "{bad:?}");
        }
    }

    #[test]
    fn an_interface_is_an_ipv4_address_or_a_name() {
        assert_eq!(super::parse_interface("10.0.0.5"), Ok(std::net::Ipv4Addr::new(10, 0, 0, 5)));
        #[cfg(target_os = "linux")]
        {
            // Every Linux host has a loopback interface named lo holding 127.0.0.1.
            assert_eq!(super::parse_interface("lo"), Ok(std::net::Ipv4Addr::LOCALHOST));
            let refused = super::parse_interface("no-such-if0").unwrap_err();
            assert!(refused.contains("\"no-such-if0\"") && refused.contains("lo"), "{refused}");
        }
        assert!(super::parse_interface("::1").is_err(), "an IPv6 address is no IPv4 interface");
    }
}
