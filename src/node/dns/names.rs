//! The names of the DNS face: what a query's name means inside the zone, and the names of the
//! address targets.
//!
//! Relative to the zone's origin (`makler.` by default), a name is:
//!
//! | name | means |
//! |---|---|
//! | `makler.` | the apex: its SOA, nothing else |
//! | `<service>.makler.` | the service's instances: A and AAAA |
//! | `_<service>._tcp.makler.` | the service's instances: SRV |
//! | `<hex>-<port>.addr.makler.` | an instance's address: A (8 hex digits) or AAAA (32) |
//! | `<hex>.addr.makler.` | the same, without the port |
//! | `_services._dns-sd._udp.makler.` | the service types: PTR (DNS-SD, RFC 6763 §9) |
//! | `b._dns-sd._udp.makler.`, `lb._dns-sd._udp.makler.` | the browse domain: PTR to `makler.` (§11) |
//! | `<instance>._<service>._tcp.makler.` | one instance: SRV and TXT (§4; the label in [`crate::mdns::names`]) |
//! | `_tcp.makler.`, `addr.makler.`, `_udp.makler.`, `_dns-sd._udp.makler.` | empty non-terminals: they exist, with no records |
//!
//! `_<service>._tcp.makler.` also answers PTR, listing its instances' names (DNS-SD browsing).
//! (`_udp` is an empty non-terminal since DNS-SD's names came: a service named `_udp` is not
//! reachable by A.)
//!
//! A service is reachable only when its registry name is one DNS label (at most 63 bytes, no
//! `.`); its label is looked up as written, then in lower case.
//!
//! SRV targets name the instance, port included (`7f000001-8080.addr.makler.`), rather than
//! only its address as Consul's `<hex>.addr.<dc>.consul.` do: then every SRV record has a
//! target and an additional record of its own, even where instances share an address. HAProxy
//! (2.6) gives an additional record to one SRV record only, so servers that shared a target
//! waited for a resolution that never came.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::rr::Name;

/// What a name inside the zone stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner<'a> {
    /// The zone's origin.
    Apex,
    /// A name that exists only because names below it do (`_tcp`, `addr`).
    Empty,
    /// `<service>.<origin>`: the label.
    Service(&'a [u8]),
    /// `_<service>._tcp.<origin>`: the service's label, without its `_`.
    Srv(&'a [u8]),
    /// `<hex>[-<port>].addr.<origin>`: the address it encodes.
    Addr(IpAddr),
    /// `_services._dns-sd._udp.<origin>`: the service types (RFC 6763 §9).
    ServiceTypes,
    /// `b._dns-sd._udp.<origin>` or `lb._dns-sd._udp.<origin>`: the browse domain (§11).
    BrowseDomain,
    /// `<instance>._<service>._tcp.<origin>`: the service's label (without its `_`) and the
    /// instance's label.
    Instance {
        /// The service's label, without its `_`.
        service: &'a [u8],
        /// The instance's label.
        instance: &'a [u8],
    },
    /// Anything else in the zone: no such name.
    Missing,
}

/// What `name` stands for in the zone of `origin`, or `None` when it is outside the zone.
pub(super) fn classify<'a>(origin: &Name, name: &'a Name) -> Option<Owner<'a>> {
    if !origin.zone_of(name) {
        return None;
    }
    let depth = name.iter().len() - origin.iter().len();
    let mut labels = name.iter();
    let owner = match depth {
        0 => Owner::Apex,
        1 => {
            let label = labels.next()?;
            if [&b"_tcp"[..], b"addr", b"_udp"].iter().any(|l| label.eq_ignore_ascii_case(l)) {
                Owner::Empty
            } else {
                Owner::Service(label)
            }
        }
        2 => {
            let (first, second) = (labels.next()?, labels.next()?);
            if second.eq_ignore_ascii_case(b"_tcp") {
                match first.strip_prefix(b"_") {
                    Some(service) if !service.is_empty() => Owner::Srv(service),
                    _ => Owner::Missing,
                }
            } else if second.eq_ignore_ascii_case(b"addr") {
                decode_addr(first).map_or(Owner::Missing, Owner::Addr)
            } else if second.eq_ignore_ascii_case(b"_udp") && first.eq_ignore_ascii_case(b"_dns-sd") {
                Owner::Empty
            } else {
                Owner::Missing
            }
        }
        3 => {
            let (first, second, third) = (labels.next()?, labels.next()?, labels.next()?);
            if third.eq_ignore_ascii_case(b"_tcp") {
                match second.strip_prefix(b"_") {
                    Some(service) if !service.is_empty() => Owner::Instance { service, instance: first },
                    _ => Owner::Missing,
                }
            } else if third.eq_ignore_ascii_case(b"_udp") && second.eq_ignore_ascii_case(b"_dns-sd") {
                if first.eq_ignore_ascii_case(b"_services") {
                    Owner::ServiceTypes
                } else if first.eq_ignore_ascii_case(b"b") || first.eq_ignore_ascii_case(b"lb") {
                    Owner::BrowseDomain
                } else {
                    Owner::Missing
                }
            } else {
                Owner::Missing
            }
        }
        _ => Owner::Missing,
    };
    Some(owner)
}

/// The longest target label: 32 hex digits, `-` and 5 digits of port.
pub(super) const MAX_TARGET_LABEL: usize = 38;

/// The label of an instance's target: its address in hex, 8 digits for IPv4, 32 for IPv6, in
/// lower case, then `-` and its port in decimal.
pub(super) fn target_label(instance: SocketAddr, out: &mut [u8; MAX_TARGET_LABEL]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let (bytes, len): ([u8; 16], usize) = match instance.ip() {
        IpAddr::V4(v4) => {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    };
    for (i, byte) in bytes[..len].iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xF)];
    }
    let mut end = 2 * len;
    out[end] = b'-';
    end += 1;
    let (mut port, mut digits, mut len) = (instance.port(), [0u8; 5], 0);
    loop {
        digits[len] = b'0' + (port % 10) as u8;
        len += 1;
        port /= 10;
        if port == 0 {
            break;
        }
    }
    for (i, digit) in digits[..len].iter().rev().enumerate() {
        out[end + i] = *digit;
    }
    &out[..end + len]
}

/// The address a target label encodes (hex digits of either case, and a port or not), if it
/// is one.
pub(super) fn decode_addr(label: &[u8]) -> Option<IpAddr> {
    fn nibble(c: u8) -> Option<u8> {
        char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let label = match label.iter().position(|&c| c == b'-') {
        Some(dash) => {
            let port = std::str::from_utf8(&label[dash + 1..]).ok()?;
            // One spelling per port: digits only, no leading zero, 1 to 65535.
            let digits = port.bytes().all(|c| c.is_ascii_digit()) && !port.starts_with('0');
            port.parse::<u16>().ok().filter(|_| digits)?;
            &label[..dash]
        }
        None => label,
    };
    let mut bytes = [0u8; 16];
    if label.len() != 8 && label.len() != 32 {
        return None;
    }
    for (i, pair) in label.chunks_exact(2).enumerate() {
        bytes[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(match label.len() {
        8 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        _ => IpAddr::V6(Ipv6Addr::from(bytes)),
    })
}

/// How long `name` is on the wire, uncompressed.
pub(super) fn wire_len(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    #[test]
    fn names_are_classified_relative_to_the_origin() {
        let origin = name("makler.");
        let cases = [
            ("makler.", Some(Owner::Apex)),
            ("MAKLER.", Some(Owner::Apex)),
            ("web.makler.", Some(Owner::Service(b"web"))),
            ("Web.Makler.", Some(Owner::Service(b"Web"))),
            ("_web._tcp.makler.", Some(Owner::Srv(b"web"))),
            ("_web._TCP.makler.", Some(Owner::Srv(b"web"))),
            ("__x._tcp.makler.", Some(Owner::Srv(b"_x"))),
            ("_._tcp.makler.", Some(Owner::Missing)),
            ("web._tcp.makler.", Some(Owner::Missing)),
            ("_web._udp.makler.", Some(Owner::Missing)),
            ("_tcp.makler.", Some(Owner::Empty)),
            ("addr.makler.", Some(Owner::Empty)),
            ("7f000001.addr.makler.", Some(Owner::Addr("127.0.0.1".parse().unwrap()))),
            ("7F000001.ADDR.makler.", Some(Owner::Addr("127.0.0.1".parse().unwrap()))),
            ("00000000000000000000000000000001.addr.makler.", Some(Owner::Addr("::1".parse().unwrap()))),
            ("7f000001-8080.addr.makler.", Some(Owner::Addr("127.0.0.1".parse().unwrap()))),
            ("7f000001-65535.addr.makler.", Some(Owner::Addr("127.0.0.1".parse().unwrap()))),
            ("7f000001-65536.addr.makler.", Some(Owner::Missing)),
            ("7f000001-0.addr.makler.", Some(Owner::Missing)),
            ("7f000001-080.addr.makler.", Some(Owner::Missing)),
            ("7f000001-8x.addr.makler.", Some(Owner::Missing)),
            ("7f000001-8-0.addr.makler.", Some(Owner::Missing)),
            ("7f000001-.addr.makler.", Some(Owner::Missing)),
            ("7f00001.addr.makler.", Some(Owner::Missing)),
            ("7f00000g.addr.makler.", Some(Owner::Missing)),
            ("a.b.c.makler.", Some(Owner::Missing)),
            ("_udp.makler.", Some(Owner::Empty)),
            ("_dns-sd._udp.makler.", Some(Owner::Empty)),
            ("_x._udp.makler.", Some(Owner::Missing)),
            ("_services._dns-sd._udp.makler.", Some(Owner::ServiceTypes)),
            ("_Services._DNS-SD._udp.makler.", Some(Owner::ServiceTypes)),
            ("b._dns-sd._udp.makler.", Some(Owner::BrowseDomain)),
            ("lb._dns-sd._udp.makler.", Some(Owner::BrowseDomain)),
            ("db._dns-sd._udp.makler.", Some(Owner::Missing)),
            ("x._web._tcp.makler.", Some(Owner::Instance { service: b"web", instance: b"x" })),
            ("x._._tcp.makler.", Some(Owner::Missing)),
            ("x.web._tcp.makler.", Some(Owner::Missing)),
            ("a.x._web._tcp.makler.", Some(Owner::Missing)),
            ("example.com.", None),
            ("makler.com.", None),
            (".", None),
        ];
        for (text, expected) in cases {
            assert_eq!(classify(&origin, &name(text)), expected, "{text}");
        }
        // An instance label holds colons (which `Name::from_ascii` refuses).
        let labels: [&[u8]; 4] = [b"10-0-0-5:80", b"_web", b"_tcp", b"makler"];
        let instance = Name::from_labels(labels).unwrap();
        assert_eq!(classify(&origin, &instance), Some(Owner::Instance { service: b"web", instance: b"10-0-0-5:80" }));
    }

    #[test]
    fn target_labels_round_trip() {
        let mut buf = [0; MAX_TARGET_LABEL];
        for instance in ["127.0.0.1:1", "10.1.2.254:8080", "[::1]:65535", "[fd00::ab:cdef]:443", "[::ffff:1.2.3.4]:80"]
        {
            let instance: SocketAddr = instance.parse().unwrap();
            let label = target_label(instance, &mut buf).to_vec();
            assert_eq!(decode_addr(&label), Some(instance.ip()), "{instance}");
        }
        assert_eq!(target_label("127.0.0.1:8080".parse().unwrap(), &mut buf), b"7f000001-8080");
        let longest = target_label("[fd00::1]:65535".parse().unwrap(), &mut buf);
        assert_eq!(longest.len(), MAX_TARGET_LABEL);
        assert_eq!(wire_len(&name("makler.")), 8);
    }
}
