//! `register <service> [<ip>] <port>`: a lease on an instance, or its renewal, for the source
//! that asks; answered with the lease's id and the TTL to heartbeat within.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::Context;
use crate::protocol::{Response, Source};

/// Registers `service` at `ip:port` (the source's address without an `ip`), as the policy
/// allows.
pub(super) fn apply(
    ctx: &mut impl Context,
    now: Instant,
    source: SocketAddr,
    service: &str,
    ip: Option<IpAddr>,
    port: u16,
) -> Response {
    let (state, registry) = ctx.parts();
    let source = SocketAddr::new(source.ip().to_canonical(), source.port());
    let endpoint = SocketAddr::new(ip.map_or(source.ip(), |ip| ip.to_canonical()), port);
    match state
        .policy
        .check(source.ip(), endpoint.ip())
        .and_then(|()| registry.register(now, service, endpoint, Source::Unicast(source)))
    {
        Ok(registration) => Response::Registered { id: registration.id, ttl_ms: state.ttl_ms },
        Err(rejection) => Response::Error(rejection),
    }
}
