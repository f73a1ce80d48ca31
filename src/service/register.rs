//! `register <service> [<ip>] <port> [check=…]`: a lease on an instance, or its renewal, for the
//! source that asks, with the health check it declares; answered with the lease's id and the
//! TTL to heartbeat within.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::Context;
use crate::protocol::{Check, Response, Source};

/// Registers `service` at `ip:port` (the source's address without an `ip`), as the policy
/// allows.
pub(super) fn apply(
    ctx: &mut impl Context,
    now: Instant,
    source: SocketAddr,
    service: &str,
    ip: Option<IpAddr>,
    port: u16,
    check: Check<&str>,
) -> Response {
    let (state, registry) = ctx.parts();
    let source = SocketAddr::new(source.ip().to_canonical(), source.port());
    let endpoint = SocketAddr::new(ip.map_or(source.ip(), |ip| ip.to_canonical()), port);
    match state
        .policy
        .check(source.ip(), endpoint.ip())
        .and_then(|()| registry.register_checked(now, service, endpoint, Source::Unicast(source), check))
    {
        Ok(registration) => Response::Registered { id: registration.id, ttl_ms: state.ttl_ms },
        Err(rejection) => Response::Error(rejection),
    }
}
