//! The binary form: a version byte, then a [postcard] encoding of a [`Frame`].
//!
//! ```text
//! +---------+-------------------------------------------+
//! | 0x81    | postcard(Frame { id: u32, body })          |
//! +---------+-------------------------------------------+
//!   version    id: varint; body: Request or Response
//! ```
//!
//! The version byte is `0x80 | version`. Bytes `0x80..=0xBF` are UTF-8 continuation bytes and
//! never start a UTF-8 string, so no text request can be mistaken for a binary one. Version 1 is
//! the only version so far. Decoding rejects other versions and trailing bytes; the
//! `stats` answers grow inside records of their own instead (see [`super::stats`]).
//!
//! ```
//! use makler::protocol::{binary, Request};
//!
//! let mut datagram = Vec::new();
//! binary::encode_request(7, &Request::Query { service: "echo" }, &mut datagram);
//! assert_eq!(datagram, [0x81, 0x07, 0x02, 0x04, b'e', b'c', b'h', b'o']);
//! assert_eq!(binary::decode_request(&datagram).unwrap(), (7, Request::Query { service: "echo" }));
//! ```

use serde::{Deserialize, Serialize};

use super::{DecodeError, Form, Frame, Rejection, Request, Response};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// The first byte of every binary datagram of [`VERSION`].
pub const VERSION_BYTE: u8 = 0x80 | VERSION;

/// Why a binary datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The first byte is not a binary version byte: the datagram is text, or empty.
    #[error("not a binary datagram")]
    NotBinary,
    /// Sent by a peer that speaks another version; upgrade the older side.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The body is not a valid postcard encoding of the expected type.
    #[error("malformed body: {0}")]
    Malformed(postcard::Error),
    /// The body decoded but bytes were left over; the sender is broken or speaks a newer form.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Whether a datagram is in the binary form (starts with a byte in `0x80..=0xBF`).
pub fn is_binary(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(0x80..=0xBF))
}

/// Decodes one binary frame of any body type. Never panics, whatever the bytes.
pub fn decode<'a, T: Deserialize<'a>>(datagram: &'a [u8]) -> Result<Frame<T>, Error> {
    let (&first, body) = datagram.split_first().ok_or(Error::NotBinary)?;
    if !is_binary(datagram) {
        return Err(Error::NotBinary);
    }
    if first != VERSION_BYTE {
        return Err(Error::UnsupportedVersion(first & 0x3F));
    }
    let (frame, rest) = postcard::take_from_bytes::<Frame<T>>(body).map_err(Error::Malformed)?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes(rest.len()));
    }
    Ok(frame)
}

/// Appends the binary encoding of a frame (version byte included) to `out`.
pub fn encode<T: Serialize>(id: u32, body: &T, out: &mut Vec<u8>) {
    out.push(VERSION_BYTE);
    // postcard fails only for types serde cannot describe without a length (none of ours);
    // should that ever happen, the frame holds the header alone and the peer rejects it.
    let frame = Frame { id, body };
    if let Ok(extended) = postcard::to_extend(&frame, std::mem::take(out)) {
        *out = extended;
    }
}

/// Decodes a binary request as a broker receives it, mapping failures to the rejection the
/// sender gets back (with its request id when that much could be read).
///
/// A declared check is held to the text form's rules (see [`super::check`]).
pub fn decode_request(datagram: &[u8]) -> Result<(u32, Request<'_>), DecodeError> {
    if let Some(query) = decode_query(datagram) {
        return Ok(query);
    }
    let decoded = decode_request_unchecked(datagram)?;
    if let (id, Request::RegisterChecked { check, .. }) = &decoded {
        check.validate().map_err(|rejection| DecodeError { form: Form::Binary { request_id: *id }, rejection })?;
    }
    if let (id, Request::RegisterMeta { check, meta, .. }) = &decoded {
        check
            .validate()
            .and_then(|()| super::check::check_meta(meta))
            .map_err(|rejection| DecodeError { form: Form::Binary { request_id: *id }, rejection })?;
    }
    Ok(decoded)
}

/// The index postcard writes for [`Request::Query`]'s variant (a test holds it to postcard's).
const QUERY_VARIANT: u8 = 2;

/// A [`Request::Query`] frame read by hand, the request a broker gets most: the version byte,
/// the id, the variant, the name's length and the name, and nothing after. `None` for anything
/// else (including an id or a length written in more than four bytes, and a name that is not
/// UTF-8), which postcard then decodes. For every datagram this accepts, postcard's decoding is
/// the same (a test holds them equal over arbitrary bytes); it costs about half of postcard's,
/// most of it the name's UTF-8 check (no serde visitor, no error type built on the way).
fn decode_query(datagram: &[u8]) -> Option<(u32, Request<'_>)> {
    let [VERSION_BYTE, rest @ ..] = datagram else { return None };
    let (id, rest) = short_varint(rest)?;
    let [QUERY_VARIANT, rest @ ..] = rest else { return None };
    let (len, name) = short_varint(rest)?;
    if name.len() != len as usize {
        return None;
    }
    let service = std::str::from_utf8(name).ok()?;
    Some((id, Request::Query { service }))
}

/// A varint of at most four bytes (below 2^28), read as postcard reads one (seven bits a byte,
/// lowest first, the high bit on every byte but the last, a longer form than needed accepted),
/// and the bytes after it. `None` for a longer one, which is left to postcard.
fn short_varint(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value = 0u32;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

fn decode_request_unchecked(datagram: &[u8]) -> Result<(u32, Request<'_>), DecodeError> {
    decode::<Request<'_>>(datagram).map(|frame| (frame.id, frame.body)).map_err(|error| {
        let request_id =
            datagram.get(1..).and_then(|body| postcard::take_from_bytes::<u32>(body).ok()).map_or(0, |(id, _)| id);
        let rejection = match error {
            Error::UnsupportedVersion(got) => {
                // Another version's layout is unknown, so its request id cannot be trusted.
                return DecodeError {
                    form: Form::Binary { request_id: 0 },
                    rejection: Rejection::UnsupportedVersion { got, supported: VERSION },
                };
            }
            Error::NotBinary => Rejection::Empty,
            other => Rejection::Malformed { why: other.to_string() },
        };
        DecodeError { form: Form::Binary { request_id }, rejection }
    })
}

/// Appends a binary request frame to `out`.
pub fn encode_request(id: u32, request: &Request<'_>, out: &mut Vec<u8>) {
    encode(id, request, out);
}

/// Decodes a binary reply as a client receives it.
pub fn decode_response(datagram: &[u8]) -> Result<(u32, Response), Error> {
    decode::<Response>(datagram).map(|frame| (frame.id, frame.body))
}

/// Appends a binary reply frame to `out`.
pub fn encode_response(id: u32, response: &Response, out: &mut Vec<u8>) {
    encode(id, response, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_versions_and_trailing_bytes_are_refused() {
        let mut datagram = Vec::new();
        encode_request(1, &Request::Stats, &mut datagram);
        assert_eq!(decode_request(&datagram).unwrap(), (1, Request::Stats));

        datagram[0] = 0x82;
        let err = decode_request(&datagram).unwrap_err();
        assert_eq!(err.rejection, Rejection::UnsupportedVersion { got: 2, supported: 1 });
        assert_eq!(err.form, Form::Binary { request_id: 0 });

        datagram[0] = VERSION_BYTE;
        datagram.push(0);
        let err = decode_request(&datagram).unwrap_err();
        assert_eq!(err.rejection, Rejection::Malformed { why: "1 trailing bytes after the message".into() });
        assert_eq!(err.form, Form::Binary { request_id: 1 });
    }

    #[test]
    fn a_malformed_body_still_echoes_the_request_id() {
        // id 300 (varint ac 02), then variant 99, which no request has.
        let err = decode_request(&[VERSION_BYTE, 0xac, 0x02, 99]).unwrap_err();
        assert_eq!(err.form, Form::Binary { request_id: 300 });
        assert!(matches!(err.rejection, Rejection::Malformed { .. }));
    }

    /// The hand-read query is postcard's reading wherever it accepts a datagram: over query
    /// frames with ids and names of every varint length, cut, extended and with single bytes
    /// changed, and over arbitrary bytes.
    #[test]
    fn the_hand_read_query_is_what_postcard_reads() {
        let mut query = Vec::new();
        encode_request(7, &Request::Query { service: "echo" }, &mut query);
        assert_eq!(query[2], QUERY_VARIANT);
        let mut frames = Vec::new();
        for id in [0, 1, 127, 128, 16_383, 16_384, (1 << 21) - 1, 1 << 21, (1 << 28) - 1, 1 << 28, u32::MAX] {
            for name in ["", "a", "type123", "ünï", &"n".repeat(127), &"n".repeat(128), &"n".repeat(300)] {
                let mut frame = Vec::new();
                encode_request(id, &Request::Query { service: name }, &mut frame);
                frames.push(frame);
            }
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        let mut check = |datagram: &[u8]| {
            if let Some(fast) = decode_query(datagram) {
                assert_eq!(Ok(fast), decode_request_unchecked(datagram), "{datagram:02x?}");
                checked += 1;
            }
        };
        for frame in &frames {
            check(frame);
            for cut in 0..frame.len() {
                check(&frame[..cut]);
            }
            let mut longer = frame.clone();
            longer.push(0);
            check(&longer);
            for _ in 0..200 {
                let mut changed = frame.clone();
                let at = next() as usize % changed.len();
                changed[at] = next() as u8;
                check(&changed);
            }
        }
        for _ in 0..20_000 {
            let len = next() as usize % 12;
            let mut datagram = vec![VERSION_BYTE];
            datagram.extend((0..len).map(|_| if next() % 3 == 0 { QUERY_VARIANT } else { next() as u8 }));
            check(&datagram);
        }
        // Non-minimal varints are read as postcard reads them.
        check(&[VERSION_BYTE, 0x81, 0x80, 0x00, QUERY_VARIANT, 0x81, 0x00, b'x']);
        assert_eq!(decode_query(&[VERSION_BYTE, 0x81, 0x80, 0x00, QUERY_VARIANT, 0x81, 0x00, b'x']).unwrap().0, 1);
        assert!(checked > frames.len(), "{checked}");
    }

    #[test]
    fn text_is_never_binary() {
        assert!(!is_binary(b"query echo"));
        assert!(!is_binary(b""));
        assert!(!is_binary("ünïcode".as_bytes()));
        assert!(is_binary(&[VERSION_BYTE]));
        assert_eq!(decode::<Response>(b"OK"), Err(Error::NotBinary));
    }
}
