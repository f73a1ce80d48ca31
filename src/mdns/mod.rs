//! DNS-SD (RFC 6763) over multicast DNS (RFC 6762): makler's services in the LAN's own
//! discovery language, as sans-IO state machines (time passed in, datagrams polled out), with
//! hickory-proto for the wire format.
//!
//! - [`names`]: the instance label, the endpoint without dots (`10-0-0-5:8080`), shared by the unicast DNS face
//!   (`<instance>._<service>._tcp.<domain>`, [`crate::node::dns`]) and the link.
//! - [`records`]: what is advertised for an instance, under which names, with which TTLs.
//! - [`responder`]: probing, announcing, answering and goodbyes for the instances advertised.
//! - [`browser`]: continuous querying for the types imported, a cache of what the link
//!   answers, and events when an instance is found, changes or goes.
//! - [`socket`]: the one UDP socket on port 5353 that `--mdns` opens.
//! - `wire`: decoding (never panics) and encoding within a packet, and RFC 6762's record
//!   comparisons.
//!
//! # TTLs
//!
//! RFC 6762 §10 asks 120 s for records that hold a host name (SRV, A, AAAA) and 75 minutes
//! for the others (PTR, TXT). makler uses 120 s for all ([`HOST_TTL`], [`SERVICE_TTL`]): its
//! instances live by leases of seconds, and a broker that stops without its goodbyes (a crash,
//! a pulled cable) would leave PTRs in every cache of the link for 75 minutes, listing services
//! long gone. With 120 s they go within two minutes; the cost is a browser's refresh query per
//! instance every ~96 s (at 80 % of the TTL), a few hundred bytes on a LAN.
//!
//! # What does not cross
//!
//! `.local.` names are link-local: the responder advertises on the link the instances the
//! broker holds, under `.local.`; nothing of the link's own `.local.` names (host names,
//! other responders' records) is bridged to the unicast DNS face or to other links. Only TCP
//! services (`_tcp`) are advertised.

pub mod browser;
pub mod names;
pub mod records;
pub mod responder;
pub mod socket;
mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use browser::{Browser, BrowserConfig, BrowserEvent, Instance};
pub use responder::{Advert, Responder, ResponderConfig, ResponderEvent};
pub use wire::MAX_PACKET;

/// The mDNS port.
pub const PORT: u16 = 5353;
/// The largest mDNS message (RFC 6762 §17): a larger datagram is dropped unread, so that one
/// datagram's work stays bounded.
pub const MAX_DATAGRAM: usize = 9000;
/// The IPv4 group, 224.0.0.251:5353.
pub const GROUP_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)), PORT);
/// The IPv6 group, `[ff02::fb]:5353`.
pub const GROUP_V6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb)), PORT);
/// The TTL of records that hold a host name (SRV, A, AAAA), in seconds (RFC 6762 §10).
pub const HOST_TTL: u32 = 120;
/// The TTL of the other records (PTR, TXT), in seconds: shorter than RFC 6762's 75 minutes,
/// see [TTLs](self#ttls).
pub const SERVICE_TTL: u32 = 120;

#[cfg(test)]
mod browser_tests;
#[cfg(test)]
mod handover_tests;
#[cfg(test)]
mod responder_tests;
