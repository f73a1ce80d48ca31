//! `query <service>` (and its synonym `request`, and `query <service> local`): the live
//! instances in rotation, as many as fit in one reply. A query for a service with no live
//! instance here goes to the caller's bridges, when it has some ([`Context::bridging`]).

use std::time::Instant;

use super::{Context, not_found_in};
use crate::protocol::fit::{self, Room};
use crate::protocol::{Form, Response};

/// Whether a query for `service` goes to the caller's bridges: it has some, its table is
/// complete, and the service (a valid name) has no live instance here.
pub(super) fn is_bridged(ctx: &mut impl Context, now: Instant, service: &str) -> bool {
    if !ctx.bridging() || ctx.catching_up() {
        return false;
    }
    let (_, registry) = ctx.parts();
    registry.config().limits.check_name(service).is_ok() && !registry.has_service(now, service)
}

/// The live instances of `service` in rotation, as many as fit in one reply in `form`.
pub(super) fn apply(ctx: &mut impl Context, now: Instant, form: Form, service: &str) -> Response {
    let (state, registry) = ctx.parts();
    if let Err(rejection) = registry.config().limits.check_name(service) {
        return Response::Error(rejection);
    }
    let Some(instances) = registry.query(now, service) else {
        return not_found_in(ctx);
    };
    let mut list = std::mem::take(&mut state.scratch);
    list.clear();
    fit::instances(form, instances, &mut list);
    Response::Instances(list)
}

/// A text query's answer, written into `out` (cleared first) straight from the service's
/// ready text block: as many instances as fit in one reply, separated by spaces, ending in a
/// newline; at most two copies, however many instances fit.
pub(super) fn apply_text(ctx: &mut impl Context, now: Instant, service: &str, out: &mut Vec<u8>) {
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
