//! Fuzz target: `makler::oracles::decoders` (see its documentation for what it checks), and the
//! broker's hand reading of a binary query frame held to postcard's.
#![no_main]

use makler::protocol::{Request, binary};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    makler::oracles::decoders(data);
    query_is_postcards(data);
});

/// `binary::decode_request` reads a query frame by hand (and everything else with postcard):
/// a datagram is a query with an id and a name there exactly when postcard's own decoding of a
/// request frame says so (overlong varints, invalid UTF-8, trailing bytes, an empty name,
/// another version byte).
fn query_is_postcards(data: &[u8]) {
    let fast = match binary::decode_request(data) {
        Ok((id, Request::Query { service })) => Some((id, service)),
        _ => None,
    };
    let postcard = match binary::decode::<Request<'_>>(data) {
        Ok(frame) => match frame.body {
            Request::Query { service } => Some((frame.id, service)),
            _ => None,
        },
        Err(_) => None,
    };
    assert_eq!(fast, postcard, "{data:02x?}");
}
