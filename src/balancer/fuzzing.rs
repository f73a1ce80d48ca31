//! The fuzzing oracle of the control port, built only with the `fuzzing` feature.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Counters, Pool, control, control_registry};
use crate::registry::Registry;

/// The fuzzing oracle of the control port (see [`crate::oracles::control`]): arbitrary
/// datagrams, each answer within the limit, `stats` answered whatever the table holds.
pub(crate) fn fuzz_control(data: &[u8]) {
    use crate::core::Core;
    let registry = Registry::new(control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
    let pool = Arc::new(Pool::new());
    let mut core = control::Control::new(
        registry,
        Arc::clone(&pool),
        Arc::new(Counters::default()),
        None,
        crate::limit::RateLimit::default(),
        false,
    );
    let now = std::time::Instant::now();
    let mut reply = Vec::new();
    let from = SocketAddr::from(([127, 0, 0, 1], 5000));
    for datagram in data.split(|&b| b == 0xFF).chain([&b"stats"[..]]) {
        reply.clear();
        if core.handle_datagram(now, control::Face::Control, from, datagram, &mut reply).is_some() {
            assert!(reply.len() <= crate::protocol::MAX_REPLY_LEN, "{} bytes", reply.len());
        }
    }
}
