//! `heartbeat <id>`: keeps a lease alive; `NOT FOUND` tells its server to register again.

use std::time::Instant;

use uuid::Uuid;

use super::{Context, not_found_in};
use crate::protocol::Response;

/// Renews the lease `id`.
pub(super) fn apply(ctx: &mut impl Context, now: Instant, id: Uuid) -> Response {
    match ctx.parts().1.heartbeat(now, id) {
        Ok(()) => Response::Ok,
        Err(_) => not_found_in(ctx),
    }
}
