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

    fn answer(&mut self, route: &Route, query: &Query) -> Answer {
        match route {
            Route::Backends => Answer::json(200, &backends(self.0, query.limit)),
            _ => Answer::not_found(&route.path()),
        }
    }
}

/// The first `limit` backends by address (the pool holds as many as the control port's table,
/// which its limits bound).
fn backends(control: &Control, limit: usize) -> shape::Backends {
    let mut stats = control.pool.stats();
    stats.sort_by_key(|b| b.addr);
    let truncated = stats.len() > limit;
    stats.truncate(limit);
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
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::super::{Control, Face, PUBLISH};
    use crate::balancer::{Counters, Policy, Pool};
    use crate::core::Core;
    use crate::registry::Registry;

    fn get(core: &mut Control, target: &str) -> (u16, Value) {
        let mut out = Vec::new();
        core.handle_stream(
            Instant::now(),
            Face::Http,
            0,
            format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes(),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head[9..12].parse().unwrap(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn backends_show_their_weight_state_and_counters() {
        let pool = Arc::new(Pool::with_policy(Policy::LeastConn));
        let registry = Registry::new(crate::balancer::control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
        let counters = Arc::new(Counters::default());
        let mut core = Control::new(registry, Arc::clone(&pool), counters, None, Default::default(), false);
        core.set_offer("web".into(), Policy::LeastConn);
        let t0 = Instant::now();
        core.handle_start(t0);
        let from = SocketAddr::from(([127, 0, 0, 1], 40000));
        for line in ["register web 4001 weight=3", "register web 4000"] {
            let mut reply = Vec::new();
            core.handle_datagram(t0, Face::Control, from, line.as_bytes(), &mut reply);
        }
        core.handle_turn_end(t0 + PUBLISH);
        let (status, backends) = get(&mut core, "/v1/backends");
        assert_eq!(status, 200);
        assert_eq!(backends["service"], "web");
        assert_eq!(backends["policy"], "least-conn");
        assert_eq!(backends["connections"], 0);
        let up = |port: u16, weight: u32| {
            json!({"addr": format!("127.0.0.1:{port}"), "weight": weight, "state": "up", "connections": 0,
                   "total": 0, "bytes_to": 0, "bytes_from": 0, "failures": 0})
        };
        assert_eq!(backends["backends"], json!([up(4000, 1), up(4001, 3)]));
        assert_eq!(backends["truncated"], false);
        let (_, one) = get(&mut core, "/v1/backends?limit=1");
        assert_eq!((&one["backends"], &one["truncated"]), (&json!([up(4000, 1)]), &json!(true)));
        assert_eq!(get(&mut core, "/v1/services").0, 404);
        assert_eq!(get(&mut core, "/v1/services/web").0, 404);
        assert_eq!(get(&mut core, "/v1/peers").0, 404);
    }
}
