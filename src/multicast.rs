//! The multicast group: where servers announce themselves and clients look for brokers.
//!
//! Every socket names its interface explicitly. The defaults keep everything on the host: an
//! administratively scoped group (`239.255.0.0/16`), TTL 1, and the loopback interface unless
//! another is named. The set-up follows what works on Linux:
//!
//! - the receiver binds the group's own address, `GROUP:PORT`, with address and port reuse
//!   (several brokers on one host all hear every datagram), joins the group on the named
//!   interface, and turns `IP_MULTICAST_ALL` off so that it hears only the group it joined.
//!   Bound to the group address, it receives only datagrams sent to the group: a unicast
//!   datagram to one of the host's addresses at that port is not taken for group traffic;
//! - the sender binds the interface's address, sends through that interface with loopback on (a
//!   broker on the same host hears it), and gets unicast replies on the same socket.
//!
//! The unicast port of a broker is a socket of its own: with port reuse, unicast datagrams to a
//! shared port would reach only one of the sockets.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// The group everything uses unless told otherwise.
pub const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 1), 7077);

/// Where and how to multicast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastConfig {
    /// The group and port.
    pub group: SocketAddrV4,
    /// The interface to join and send on, by its address.
    pub interface: Ipv4Addr,
    /// How many routers a datagram may cross; 1 keeps it on the local network.
    pub ttl: u32,
    /// With a key, every datagram on the group is sealed with it, and unsealed ones are
    /// ignored (see [`crate::protocol::seal`]).
    pub key: Option<crate::protocol::seal::Key>,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        MulticastConfig { group: DEFAULT_GROUP, interface: Ipv4Addr::LOCALHOST, ttl: 1, key: None }
    }
}

/// Parses `GROUP:PORT`, which must be an IPv4 multicast address.
///
/// ```
/// use makler::multicast::parse_group;
/// assert!(parse_group("239.255.77.1:7077").is_ok());
/// assert!(parse_group("10.0.0.1:7077").is_err());
/// ```
pub fn parse_group(text: &str) -> Result<SocketAddrV4, String> {
    let group: SocketAddrV4 =
        text.parse().map_err(|_| format!("{text:?} is not IPV4:PORT, such as 239.255.77.1:7077"))?;
    if !group.ip().is_multicast() {
        return Err(format!("{} is not a multicast address (224.0.0.0/4; 239.255.0.0/16 stays local)", group.ip()));
    }
    if group.port() == 0 {
        return Err("the group's port must not be 0".into());
    }
    Ok(group)
}

/// A non-blocking socket that hears the group, and only the group, on the configured
/// interface, for a mio loop. It cannot send (its address is the group's); see [`sender`].
pub fn receiver(config: &MulticastConfig) -> io::Result<mio::net::UdpSocket> {
    let socket = group_member(config.group.into(), *config.group.ip(), config.interface)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// A socket bound to `bind` (shared with other listeners of the group: address and port
/// reused) that has joined `group` on `interface`, and hears only the groups it joined
/// (`IP_MULTICAST_ALL` off). The group receivers of makler's own group and of mDNS
/// ([`crate::mdns::socket`]) both start from it.
pub fn group_member(bind: SocketAddr, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&bind.into())?;
    socket.join_multicast_v4(&group, &interface)?;
    socket.set_multicast_all_v4(false)?;
    Ok(socket)
}

/// A non-blocking sender to the group through the configured interface, for a mio loop (a
/// broker's periodic hello).
pub fn loop_sender(config: &MulticastConfig) -> io::Result<mio::net::UdpSocket> {
    let socket = sender(config)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::UdpSocket::from_std(socket))
}

/// A blocking socket that sends to the group through the configured interface, and receives
/// unicast replies.
pub fn sender(config: &MulticastConfig) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&SocketAddr::from((config.interface, 0)).into())?;
    socket.set_multicast_if_v4(&config.interface)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(config.ttl)?;
    Ok(socket.into())
}

/// A random id for the messages a process sends to the group.
pub fn origin() -> u64 {
    crate::random::u64()
}

/// An error of setting up the group's sockets, saying which flag to look at: a
/// `--multicast-if` that is no interface's address is the usual cause.
pub fn explain(error: io::Error, config: &MulticastConfig) -> io::Error {
    let hint = match error.raw_os_error() {
        // ENODEV, EADDRNOTAVAIL: no interface has that address.
        Some(19 | 99) => format!(
            "--multicast-if {} is not the IPv4 address of an interface of this host (see `ip -4 addr`)",
            config.interface
        ),
        _ => {
            format!("multicast group {} on interface {} (--multicast, --multicast-if)", config.group, config.interface)
        }
    };
    io::Error::new(error.kind(), format!("{hint}: {error}"))
}
