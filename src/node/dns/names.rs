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
//! | `<hex>.addr.makler.` | one address: A (8 hex digits) or AAAA (32) |
//! | `_tcp.makler.`, `addr.makler.` | empty non-terminals: they exist, with no records |
//!
//! A service is reachable only when its registry name is one DNS label (at most 63 bytes, no
//! `.`); its label is looked up as written, then in lower case.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// `<hex>.addr.<origin>`: the address it encodes.
    Addr(IpAddr),
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
            if label.eq_ignore_ascii_case(b"_tcp") || label.eq_ignore_ascii_case(b"addr") {
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
            } else {
                Owner::Missing
            }
        }
        _ => Owner::Missing,
    };
    Some(owner)
}

/// The hex label of an address: 8 digits for IPv4, 32 for IPv6, in lower case (as Consul's
/// `<hex>.addr.<dc>.consul.`).
pub(super) fn addr_label(ip: IpAddr, out: &mut [u8; 32]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let (bytes, len): ([u8; 16], usize) = match ip {
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
    &out[..2 * len]
}

/// The address a hex label encodes (either case), if it is one.
pub(super) fn decode_addr(label: &[u8]) -> Option<IpAddr> {
    fn nibble(c: u8) -> Option<u8> {
        char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
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
            ("7f00001.addr.makler.", Some(Owner::Missing)),
            ("7f00000g.addr.makler.", Some(Owner::Missing)),
            ("a.b.c.makler.", Some(Owner::Missing)),
            ("example.com.", None),
            ("makler.com.", None),
            (".", None),
        ];
        for (text, expected) in cases {
            assert_eq!(classify(&origin, &name(text)), expected, "{text}");
        }
    }

    #[test]
    fn address_labels_round_trip() {
        let mut buf = [0; 32];
        for ip in ["127.0.0.1", "10.1.2.254", "::1", "fd00::ab:cdef", "::ffff:1.2.3.4"] {
            let ip: IpAddr = ip.parse().unwrap();
            let label = addr_label(ip, &mut buf).to_vec();
            assert_eq!(decode_addr(&label), Some(ip), "{ip}");
        }
        assert_eq!(addr_label("127.0.0.1".parse().unwrap(), &mut buf), b"7f000001");
        assert_eq!(wire_len(&name("makler.")), 8);
    }
}
