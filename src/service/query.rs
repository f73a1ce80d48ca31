//! `query <service>` (and its synonym `request`, and `query <service> local`): the live
//! instances in rotation, as many as fit in one reply. A query for a service with no live
//! instance here goes to the caller's bridges, when it has some ([`Context::bridging`]).

use std::sync::OnceLock;
use std::time::Instant;

use super::{Context, not_found_in};
use crate::protocol::fit::{self, Room};
use crate::protocol::{Form, Response, binary};

/// Whether a query for `service` goes to the caller's bridges: it has some, its table is
/// complete, and the service (a valid name) has no live instance here.
pub(super) fn is_bridged(ctx: &mut impl Context, now: Instant, service: &str) -> bool {
    if !ctx.bridging() || ctx.catching_up() {
        return false;
    }
    let (_, registry) = ctx.parts();
    registry.config().limits.check_name(service).is_ok() && !registry.has_service(now, service)
}

/// The live instances of `service` in rotation, as many as fit in one reply in `form`, written
/// into `out` (cleared first) straight from the service's ready text or binary block.
pub(super) fn apply(ctx: &mut impl Context, now: Instant, form: Form, service: &str, out: &mut Vec<u8>) {
    match form {
        Form::Text => apply_text(ctx, now, service, out),
        Form::Binary { request_id } => apply_binary(ctx, now, request_id, service, out),
    }
}

/// A binary query's answer, written into `out` (cleared first): the frame's header, then the
/// instances that fit cut from the service's binary block (at most two copies). The same bytes
/// as encoding [`Response::Instances`] with postcard (a test holds them equal).
fn apply_binary(ctx: &mut impl Context, now: Instant, request_id: u32, service: &str, out: &mut Vec<u8>) {
    let form = Form::Binary { request_id };
    let (state, registry) = ctx.parts();
    if let Err(rejection) = registry.config().limits.check_name(service) {
        return state.reply(form, &Response::Error(rejection), out);
    }
    // The header reserves the longest request id and list length, as `fit::instances` does.
    let room = Room::after(fit::instances_header(form)).left();
    let Some((count, first, second)) = registry.query_binary_block(now, service, room) else {
        let response = not_found_in(ctx);
        return ctx.parts().0.reply(form, &response, out);
    };
    out.clear();
    out.push(binary::VERSION_BYTE);
    varint(out, request_id as usize);
    out.extend_from_slice(instances_variant());
    varint(out, count);
    out.extend_from_slice(first);
    out.extend_from_slice(second);
}

/// The postcard encoding of [`Response::Instances`]'s variant index, read once from postcard
/// itself (an empty list's reply: the version byte, id 0, the variant, length 0).
fn instances_variant() -> &'static [u8] {
    static VARIANT: OnceLock<Vec<u8>> = OnceLock::new();
    VARIANT.get_or_init(|| {
        let mut empty = Vec::new();
        binary::encode_response(0, &Response::Instances(Vec::new()), &mut empty);
        empty.get(2..empty.len().saturating_sub(1)).unwrap_or_default().to_vec()
    })
}

/// Appends `n` as postcard writes an integer: seven bits a byte, lowest first, the high bit
/// set on every byte but the last.
fn varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A text query's answer, written into `out` (cleared first) straight from the service's
/// ready text block: as many instances as fit in one reply, separated by spaces, ending in a
/// newline; at most two copies, however many instances fit.
fn apply_text(ctx: &mut impl Context, now: Instant, service: &str, out: &mut Vec<u8>) {
    let (state, registry) = ctx.parts();
    if let Err(rejection) = registry.config().limits.check_name(service) {
        return state.reply(Form::Text, &Response::Error(rejection), out);
    }
    // Exact: the newline, then each instance and the separator before it (the first has none).
    let room = Room::after(fit::instances_header(Form::Text)).left();
    let Some((first, second)) = registry.query_text_block(now, service, room) else {
        let response = not_found_in(ctx);
        return ctx.parts().0.reply(Form::Text, &response, out);
    };
    out.clear();
    out.extend_from_slice(first);
    out.extend_from_slice(second);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use crate::protocol::fit;
    use crate::protocol::{Form, Request, Response, Source, binary, encode_reply};
    use crate::registry::{Config, Registry};
    use crate::service::{DEFAULT_MAX_DATAGRAM, Plain, handle};

    /// What the old path wrote: the instances from `start` in rotation fitted one by one, then
    /// the whole reply encoded with postcard.
    fn old_reply(form: Form, members: &[SocketAddr], start: usize) -> Vec<u8> {
        let rotation = (0..members.len()).map(|k| members[(start + k) % members.len()]);
        let mut list = Vec::new();
        fit::instances(form, rotation, &mut list);
        let mut out = Vec::new();
        encode_reply(form, &Response::Instances(list), &mut out);
        out
    }

    /// Every binary reply, at every start of the rotation and with request ids of every varint
    /// length, is byte for byte what encoding the reply wrote, through registrations and
    /// removals (the block is mended, not rewritten: a stale block would answer a removed
    /// instance), and more instances than fit in one reply.
    #[test]
    fn binary_replies_are_the_old_encoding_at_every_start() {
        let mut n = 0u128;
        let registry = Registry::new(Config::default(), move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        });
        let mut table = Plain::new(registry, DEFAULT_MAX_DATAGRAM);
        let t0 = Instant::now();
        let source = Source::Unicast("127.0.0.1:50000".parse().unwrap());
        let endpoints: Vec<SocketAddr> = (0..150u16)
            .map(|k| match k % 3 {
                0 => SocketAddr::from(([10, 0, 0, k as u8], 100 + k)),
                1 => format!("[2001:db8::{k:x}]:{}", 16_000 + k * 3).parse().unwrap(),
                _ => SocketAddr::from(([10, 1, 0, k as u8], 65_000 + k)),
            })
            .collect();
        let mut ids = Vec::new();
        for &endpoint in &endpoints {
            ids.push(table.registry.register(t0, "big", endpoint, source).unwrap().id);
        }
        let (mut out, client) = (Vec::new(), "127.0.0.1:40000".parse().unwrap());
        let (mut queries, mut cursor) = (0usize, 0usize);
        for removed in [None, Some(149), Some(0), Some(70), Some(3)] {
            if let Some(k) = removed {
                table.registry.deregister(t0, ids[k]).unwrap();
            }
            let members: Vec<SocketAddr> = table.registry.members(t0, "big").collect();
            // Two turns, so every start is answered after each removal.
            for _ in 0..2 * members.len() {
                let request_id = [0, 1, 127, 128, 16_384, u32::MAX][queries % 6];
                let form = Form::Binary { request_id };
                let mut request = Vec::new();
                binary::encode_request(request_id, &Request::Query { service: "big" }, &mut request);
                assert!(handle(&mut table, t0, client, &request, &mut out).is_some());
                let start = cursor % members.len();
                assert_eq!(out, old_reply(form, &members, start), "query {queries}, start {start}, id {request_id}");
                cursor = (start + 1) % members.len();
                queries += 1;
            }
        }
        // A reply was cut short: more instances than fit.
        let Ok((_, Response::Instances(list))) = binary::decode_response(&out) else { panic!("{out:?}") };
        assert!(list.len() < 146 && list.len() > 50, "{}", list.len());
    }
}
