//! The balancer's answers to the HTTP catalog ([`crate::http`]): `/v1/backends` and the
//! metrics page. The balancer has no services or peers of its own: those paths are 404.

use std::sync::atomic::Ordering::Relaxed;

use super::Control;
use crate::http::catalog as shape;
use crate::http::{Answer, Catalog, Query, Route};

/// The control core, as the HTTP face asks it.
pub(super) struct ControlCatalog<'a>(pub &'a mut Control);

impl Catalog for ControlCatalog<'_> {
    fn metrics(&mut self) -> String {
        crate::metrics::balancer(&self.0.counters.metrics(&self.0.pool))
    }

    fn answer(&mut self, route: &Route, _query: &Query) -> Answer {
        match route {
            Route::Backends => Answer::json(200, &backends(self.0)),
            _ => Answer::not_found(&route.path()),
        }
    }
}

/// Every backend (the pool holds as many as the control port's table, which its limits bound).
fn backends(control: &Control) -> shape::Backends {
    let mut stats = control.pool.stats();
    stats.sort_by_key(|b| b.addr);
    let (service, policy) = &control.offer;
    shape::Backends {
        service: service.clone(),
        policy: policy.to_string(),
        connections: control.counters.active.load(Relaxed),
        backends: stats
            .into_iter()
            .map(|b| shape::Backend {
                addr: b.addr.to_string(),
                weight: control.pool.get(b.addr).map_or(1, |backend| backend.weight()),
                state: if b.up { "up" } else { "down" }.to_owned(),
                connections: b.active,
                total: b.total,
                bytes_to: b.bytes_to,
                bytes_from: b.bytes_from,
                failures: b.failures,
            })
            .collect(),
    }
}
