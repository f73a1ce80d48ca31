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

use super::PORT;

/// The group of [`super::GROUP_V4`].
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// RFC 6762 §11: mDNS packets are sent with IP TTL 255 (a receiver may check it, to refuse
/// packets from off the link).
pub const MULTICAST_TTL: u32 = 255;

/// The network of the interface whose IPv4 address is `interface` (its address and netmask),
/// if the system lists it: where mDNS datagrams may come from (RFC 6762 §11: a responder
/// answers only queries from its own link, or it would reflect traffic for anyone who can
/// route a datagram to port 5353).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn link_network(interface: Ipv4Addr) -> Option<ipnet::Ipv4Net> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifaddr in addrs {
        let address = ifaddr.address.as_ref().and_then(|a| a.as_sockaddr_in()).map(|a| a.ip());
        if address != Some(interface) {
            continue;
        }
        let mask = ifaddr.netmask.as_ref().and_then(|m| m.as_sockaddr_in()).map(|m| m.ip())?;
        let prefix = u8::try_from(u32::from(mask).leading_ones()).ok()?;
        return ipnet::Ipv4Net::new(interface, prefix).ok().map(|net| net.trunc());
    }
    None
}

/// The network of an interface: not read on this system (so `--mdns` refuses to start).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn link_network(_interface: Ipv4Addr) -> Option<ipnet::Ipv4Net> {
    None
}

/// The non-blocking mDNS socket for the interface whose IPv4 address is `interface`, for a mio
/// loop (see the [module documentation](self)).
pub fn bind(interface: Ipv4Addr) -> io::Result<mio::net::UdpSocket> {
    let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT));
    let socket = crate::multicast::group_member(any, GROUP, interface)?;
    socket.set_multicast_if_v4(&interface)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(MULTICAST_TTL)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}
