//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a proxy writes to a backend
//! before any byte of the client's, so that the backend learns who the client really is.
//!
//! The balancer writes it (`makler-balancer --send-proxy v1|v2`, see [`header`]);
//! `makler-server --accept-proxy` reads it ([`decode`]). Both sides are pure functions over
//! bytes, with no socket: the encoding and the parsing are the `ppp` crate's, which follows the
//! specification (<https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>) for both
//! versions, borrows from the input instead of copying it, and tells a header cut short (read
//! more) from a bad one (refuse the connection), which a non-blocking reader needs. This module
//! adds what a server must decide beyond the parse: a bound on the header's size, and refusing
//! at the first byte that cannot start a header rather than waiting for more.
//!
//! ```
//! use makler::proxy_protocol::{Version, decode, header};
//! let client = "192.0.2.7:51000".parse().unwrap();
//! let balancer = "198.51.100.1:443".parse().unwrap();
//! let bytes = header(Version::V1, client, balancer);
//! assert_eq!(bytes, b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n");
//! let got = decode(&bytes).unwrap().unwrap();
//! assert_eq!((got.source, got.destination, got.len), (Some(client), Some(balancer), bytes.len()));
//! ```

use std::net::{IpAddr, SocketAddr};

use ppp::v2;

/// Which version of the header to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line, `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`: readable in a capture, and
    /// what older receivers understand.
    V1,
    /// The binary header: fixed offsets, cheaper to parse; what HAProxy's `send-proxy-v2` writes.
    V2,
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            other => Err(format!("unknown PROXY protocol version {other:?}: expected v1 or v2")),
        }
    }
}

/// The longest v1 header, its line ending included (the specification's 107 bytes).
pub const MAX_V1: usize = 107;
/// The v2 signature, the first 12 bytes of every binary header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The largest header [`decode`] accepts: a v1 line, or a v2 header with its address block and
/// TLVs. HAProxy's own largest (addresses, ALPN, authority, TLS fields) stays far below it; a
/// peer that declares more is refused rather than buffered for.
pub const MAX_HEADER: usize = 1024;

/// The header for a connection from `client` that reached the proxy at `proxy` (the address
/// the client connected to: `local_addr()` of the accepted socket).
///
/// An IPv4 client on a dual-stack (`[::]`) listener has IPv4-mapped addresses on both ends; they
/// are written as IPv4 (`TCP4`, `AF_INET`), as HAProxy does, so that the backend sees the
/// address the client has. Should the two ends still differ in family, the header says the
/// addresses are unknown (v1 `UNKNOWN`, v2 `AF_UNSPEC`), which the specification tells the
/// receiver to answer by using the connection's own addresses.
pub fn header(version: Version, client: SocketAddr, proxy: SocketAddr) -> Vec<u8> {
    let (client, proxy) = (unmapped(client), unmapped(proxy));
    match version {
        Version::V1 => ppp::v1::Addresses::from((client, proxy)).to_string().into_bytes(),
        Version::V2 => {
            // The specification allows 0x00 (UNSPEC, UNSPEC) but not "UNSPEC over a stream".
            let transport =
                if client.is_ipv4() == proxy.is_ipv4() { v2::Protocol::Stream } else { v2::Protocol::Unspecified };
            let builder =
                v2::Builder::with_addresses(v2::Version::Two | v2::Command::Proxy, transport, (client, proxy));
            // Only a payload longer than 65,535 bytes fails; two addresses are 36 at most.
            builder.build().unwrap_or_default()
        }
    }
}

/// The header of a connection the proxy makes on its own behalf, such as its health checks: v1
/// `PROXY UNKNOWN\r\n`, v2 `LOCAL` (signature, version 2 command 0, family 0, no addresses). A
/// backend that requires the header (`--accept-proxy`) takes the connection as the proxy's and
/// uses the connection's own addresses, as HAProxy's checks with `send-proxy` expect.
pub fn local_header(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => {
            let mut bytes = V2_SIGNATURE.to_vec();
            bytes.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            bytes
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) written as the IPv4 address.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// A header read from the front of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The client's address, as the proxy saw it. `None` when the header carries none (v1
    /// `UNKNOWN`, v2 `LOCAL` such as a proxy's own health check, or an address family other than
    /// IPv4 and IPv6): the specification says to use the connection's own address then.
    pub source: Option<SocketAddr>,
    /// The address the client connected to at the proxy (`None` as for `source`).
    pub destination: Option<SocketAddr>,
    /// How many bytes the header took: the client's own bytes follow.
    pub len: usize,
}

/// Why a connection's first bytes are not a PROXY header: the connection is refused (closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The first bytes are neither `PROXY ` nor the v2 signature: a client that speaks to the
    /// server directly, past the proxy, or a proxy not configured to send the header.
    #[error("no PROXY protocol header")]
    Missing,
    /// The header is longer than [`MAX_HEADER`] (or a v1 line longer than 107 bytes).
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    /// The header is malformed: what the parser found.
    #[error("bad PROXY protocol header: {0}")]
    Malformed(String),
}

/// Reads a header from the front of `input`: `Ok(None)` while what has arrived may still become
/// one (read more), the header once it is whole, or why it cannot be one. Never panics, and
/// refuses as soon as the bytes tell: a first byte that starts neither version, a declared v2
/// length beyond [`MAX_HEADER`], a v1 line past its 107 bytes.
pub fn decode(input: &[u8]) -> Result<Option<Received>, Invalid> {
    let n = input.len().min(V2_SIGNATURE.len());
    if input[..n] == V2_SIGNATURE[..n] {
        return decode_v2(input);
    }
    let n = input.len().min(6);
    if input[..n] != b"PROXY "[..n] {
        return Err(Invalid::Missing);
    }
    decode_v1(input)
}

fn decode_v2(input: &[u8]) -> Result<Option<Received>, Invalid> {
    if input.len() < 16 {
        return Ok(None);
    }
    let declared = 16 + usize::from(u16::from_be_bytes([input[14], input[15]]));
    if declared > MAX_HEADER {
        return Err(Invalid::TooLong);
    }
    if input.len() < declared {
        return Ok(None);
    }
    let header = v2::Header::try_from(&input[..declared]).map_err(|e| Invalid::Malformed(e.to_string()))?;
    let (source, destination) = match (header.command, header.addresses) {
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((a.destination_address, a.destination_port))),
        ),
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((a.destination_address, a.destination_port))),
        ),
        _ => (None, None),
    };
    Ok(Some(Received { source, destination, len: declared }))
}

fn decode_v1(input: &[u8]) -> Result<Option<Received>, Invalid> {
    let Some(end) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() >= MAX_V1 { Err(Invalid::TooLong) } else { Ok(None) };
    };
    let len = end + 1;
    if len > MAX_V1 {
        return Err(Invalid::TooLong);
    }
    let header = ppp::v1::Header::try_from(&input[..len]).map_err(|e| Invalid::Malformed(e.to_string()))?;
    let (source, destination) = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((a.destination_address, a.destination_port))),
        ),
        ppp::v1::Addresses::Tcp6(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((a.destination_address, a.destination_port))),
        ),
        ppp::v1::Addresses::Unknown => (None, None),
    };
    Ok(Some(Received { source, destination, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_lines_are_the_specifications() {
        // Section 2.1's examples.
        let line = header(Version::V1, addr("192.168.0.1:56324"), addr("192.168.0.11:443"));
        assert_eq!(line, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
        let line = header(Version::V1, addr("[2001:db8::1]:56324"), addr("[2001:db8::11]:443"));
        assert_eq!(line, b"PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n");
        let line = header(Version::V1, addr("[::ffff:127.0.0.1]:40000"), addr("[::ffff:127.0.0.2]:5000"));
        assert_eq!(line, b"PROXY TCP4 127.0.0.1 127.0.0.2 40000 5000\r\n", "mapped addresses are IPv4's");
        let line = header(Version::V1, addr("127.0.0.1:1"), addr("[::1]:2"));
        assert_eq!(line, b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_headers_are_byte_exact() {
        let bytes = header(Version::V2, addr("192.168.0.1:56324"), addr("192.168.0.11:443"));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb]);
        assert_eq!(bytes, want);
        let bytes = header(Version::V2, addr("[2001:db8::1]:1"), addr("[::1]:2"));
        assert_eq!(&bytes[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(bytes.len(), 16 + 36);
        assert_eq!(&bytes[16..18], &[0x20, 0x01]);
        assert_eq!(&bytes[48..52], &[0, 1, 0, 2]);
        let bytes = header(Version::V2, addr("127.0.0.1:1"), addr("[::1]:2"));
        assert_eq!(&bytes[12..16], &[0x21, 0x00, 0, 0], "AF_UNSPEC, no address block");
    }

    #[test]
    fn decoding_takes_what_encoding_makes_byte_by_byte() {
        for version in [Version::V1, Version::V2] {
            for (client, proxy) in
                [(addr("10.1.2.3:4"), addr("10.9.8.7:65535")), (addr("[fe80::1]:1234"), addr("[2001:db8::2]:80"))]
            {
                let mut bytes = header(version, client, proxy);
                let len = bytes.len();
                for cut in 0..len {
                    assert_eq!(decode(&bytes[..cut]), Ok(None), "{version:?} cut at {cut}");
                }
                bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n\xff\x00");
                let got = decode(&bytes).unwrap().unwrap();
                assert_eq!(got, Received { source: Some(client), destination: Some(proxy), len });
            }
        }
    }

    #[test]
    fn a_connection_without_a_header_is_refused_at_its_first_byte() {
        assert_eq!(decode(b"G"), Err(Invalid::Missing));
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(Invalid::Missing));
        assert_eq!(decode(b"PROXYx"), Err(Invalid::Missing));
        assert_eq!(decode(b"\r\n\r\n\0\r\nQUIX"), Err(Invalid::Missing));
        assert_eq!(decode(b""), Ok(None));
    }

    #[test]
    fn oversized_and_malformed_headers_are_refused() {
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(MAX_V1, b'1');
        assert_eq!(decode(&long), Err(Invalid::TooLong));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(decode(&v2), Err(Invalid::TooLong), "refused on the declared length, before it arrives");
        assert!(matches!(decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), Err(Invalid::Malformed(_))));
        assert!(matches!(decode(b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n"), Err(Invalid::Malformed(_))));
        let mut v3 = V2_SIGNATURE.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(decode(&v3), Err(Invalid::Malformed(_))), "version 3");
    }

    #[test]
    fn local_and_unknown_headers_carry_no_address() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(decode(&local), Ok(Some(Received { source: None, destination: None, len: 16 })));
        assert_eq!(decode(b"PROXY UNKNOWN\r\nx"), Ok(Some(Received { source: None, destination: None, len: 15 })));
        assert_eq!(local_header(Version::V2), local);
        assert_eq!(local_header(Version::V1), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn tlvs_after_the_addresses_are_skipped() {
        let mut bytes = header(Version::V2, addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        bytes[15] += 7;
        bytes.extend_from_slice(&[0x04, 0, 4, 1, 2, 3, 4]); // PP2_TYPE_NOOP, 4 bytes
        bytes.extend_from_slice(b"after");
        let got = decode(&bytes).unwrap().unwrap();
        assert_eq!(got.len, bytes.len() - 5);
        assert_eq!(got.source, Some(addr("192.0.2.1:1")));
    }
}
