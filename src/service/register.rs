//! `register <service> [<ip>] <port> [check=…] [key=value …]`: a lease on an instance, or its
//! renewal, for the source that asks, with the health check it declares and its metadata;
//! answered with the lease's id and the TTL to heartbeat within.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::Context;
use crate::meta::Metadata;
use crate::protocol::{Check, Response, Source};

/// Registers `service` at `ip:port` (the source's address without an `ip`), as the policy
/// allows. `meta`: the metadata pairs of a [`Request::RegisterMeta`](crate::protocol::Request::RegisterMeta),
/// which replace the lease's; `None` (a plain or checked register) keeps what it has, so a
/// client that re-registers without pairs does not wipe them.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply(
    ctx: &mut impl Context,
    now: Instant,
    source: SocketAddr,
    service: &str,
    ip: Option<IpAddr>,
    port: u16,
    check: Check<&str>,
    meta: Option<&[(&str, &str)]>,
) -> Response {
    let (state, registry) = ctx.parts();
    let source = SocketAddr::new(source.ip().to_canonical(), source.port());
    let endpoint = SocketAddr::new(ip.map_or(source.ip(), |ip| ip.to_canonical()), port);
    match state.policy.check(source.ip(), endpoint.ip()).and_then(|()| match meta {
        None => registry.register_checked(now, service, endpoint, Source::Unicast(source), check),
        Some(pairs) => {
            let meta = Metadata::from_pairs(pairs.iter().copied()).map_err(crate::protocol::check::meta_rejection)?;
            registry.register_meta(now, service, endpoint, Source::Unicast(source), check, meta)
        }
    }) {
        Ok(registration) => Response::Registered { id: registration.id, ttl_ms: state.ttl_ms },
        Err(rejection) => Response::Error(rejection),
    }
}
