//! The mDNS socket a broker's `--mdns` opens: one UDP socket on port 5353 of every address
//! (RFC 6762 §11: mDNS responses leave from port 5353, and unicast answers to a probe's or a
//! question's unicast-response bit arrive there), joined to 224.0.0.251 on the one interface
//! named, which is also where its multicast leaves, with TTL 255.
//!
//! Address and port are shared (`SO_REUSEADDR`, `SO_REUSEPORT`) with the host's own responder
//! (Avahi, mDNSResponder), as every mDNS implementation does; the group's datagrams reach each
//! of them. Only the groups this socket joined reach it (`IP_MULTICAST_ALL` off). Multicast
//! loops back, so that a browser on the same host hears the broker: the broker hears itself
//! too, which the responder tells from a conflict, and the browser's import rule ignores.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};

use super::PORT;

/// The group of [`super::GROUP_V4`].
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// RFC 6762 §11: mDNS packets are sent with IP TTL 255 (a receiver may check it, to refuse
/// packets from off the link).
pub const MULTICAST_TTL: u32 = 255;

/// The non-blocking mDNS socket for the interface whose IPv4 address is `interface`, for a mio
/// loop (see the [module documentation](self)).
pub fn bind(interface: Ipv4Addr) -> io::Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).into())?;
    socket.join_multicast_v4(&GROUP, &interface)?;
    socket.set_multicast_all_v4(false)?;
    socket.set_multicast_if_v4(&interface)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(MULTICAST_TTL)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}
