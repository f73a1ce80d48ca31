//! `heartbeat <id>`: keeps a lease alive; `NOT FOUND` tells its server to register again.

use std::time::Instant;

use uuid::Uuid;

use super::{Context, not_found_in};
use crate::protocol::Response;

/// Renews the lease `id`.
pub(super) fn apply(ctx: &mut impl Context, now: Instant, id: Uuid) -> Response {
    // An imported lease (mDNS) is the link's to end: nobody's client may end or keep it.
    if crate::node::mdns::is_imported(id) {
        return not_found_in(ctx);
    }
    match ctx.parts().1.heartbeat(now, id) {
        Ok(()) => Response::Ok,
        Err(_) => not_found_in(ctx),
    }
}
