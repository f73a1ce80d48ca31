//! The broker's answers to the HTTP catalog ([`crate::http`]): what the node knows of its
//! services, instances, peers and bridges, in the shapes of [`crate::http::catalog`].
//!
//! Each answer is bounded: at most `limit` entries are kept (services from the ordered index of
//! their names, [`super::catalog_names`], instances up to the `limit`th address), and instances stop at
//! [`MAX_BODY`](crate::http::MAX_BODY) bytes of JSON; a cut list is always the first by name or
//! by address, as the lists are sorted.

use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Node;
use crate::http::catalog as shape;
use crate::http::{Answer, Catalog, Query, Route};
use crate::protocol::{Check, Source};
use crate::registry::Cursor;

/// The node at one instant, as the HTTP face asks it.
pub(super) struct NodeCatalog<'a> {
    pub node: &'a mut Node,
    pub now: Instant,
}

impl Catalog for NodeCatalog<'_> {
    fn metrics(&mut self) -> String {
        crate::metrics::broker(&self.node.metrics(self.now))
    }

    fn answer(&mut self, route: &Route, query: &Query) -> Answer {
        match route {
            Route::Services => Answer::json(200, &self.node.catalog_services(self.now, query.limit)),
            Route::Service(name) => match self.node.catalog_service(self.now, name, query.limit) {
                Some(service) => Answer::json(200, &service),
                None => Answer::not_found(name),
            },
            Route::Peers => Answer::json(200, &self.node.catalog_peers(self.now)),
            Route::Backends => Answer::not_found(&route.path()),
        }
    }
}

/// Counts the bytes written to it.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes of `value`'s JSON.
fn json_len(value: &impl serde::Serialize) -> usize {
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn seconds(duration: Duration) -> f64 {
    // Milliseconds are enough for people, and keep the JSON short.
    (duration.as_millis() as f64) / 1000.0
}

impl Node {
    /// `/v1/services`: the first `limit` services by name, with the node. What it costs is
    /// the names it lists (and a walk over the table the first time: see
    /// [`catalog_names`](super::catalog_names)), not the whole table's.
    fn catalog_services(&mut self, now: Instant, limit: usize) -> shape::Services {
        self.registry.handle_timeout(now);
        let first = self.service_names.first(&mut self.registry, now, limit);
        let services = first
            .services
            .into_iter()
            .map(|(name, instances)| shape::ServiceSummary { name, instances })
            .collect::<Vec<_>>();
        shape::Services {
            node: shape::NodeInfo {
                addr: self.group.unicast().to_string(),
                cluster: self.group.cluster().to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ttl_s: self.registry.config().ttl.as_secs_f64(),
            },
            truncated: first.truncated,
            services,
        }
    }

    /// `/v1/services/<name>`: its instances with the lowest addresses, at most `limit` and
    /// [`MAX_BODY`](crate::http::MAX_BODY) bytes of them, or `None` when it has none.
    ///
    /// Two passes over the service's list: the first sorts its addresses alone to find the
    /// `limit`th; the second builds the instances up to it, in a max-heap by address that gives
    /// up its highest whenever the bytes pass the bound (and takes nothing from that address on),
    /// so that what is built at once stays within the bound and the answer is a prefix by address.
    fn catalog_service(&mut self, now: Instant, name: &str, limit: usize) -> Option<shape::Service> {
        let mut endpoints = Vec::new();
        self.registry
            .instances_page(now, name, Cursor::START, |view| {
                endpoints.push(view.endpoint);
                true
            })
            .ok()?;
        endpoints.sort_unstable();
        let kept = limit.min(endpoints.len());
        let mut truncated = kept < endpoints.len();
        let last = kept.checked_sub(1).map(|at| endpoints[at]);
        drop(endpoints);
        // (address, bytes, slot in `built`); a slot given up is `None`.
        let mut heap: BinaryHeap<(SocketAddr, usize, usize)> = BinaryHeap::new();
        let mut built: Vec<Option<(SocketAddr, shape::Instance, Source)>> = Vec::new();
        let mut bytes = 0;
        // The lowest address given up: nothing from it on is taken.
        let mut ceiling: Option<SocketAddr> = None;
        let verifier = &self.verifier;
        let _ = self.registry.instances_page(now, name, Cursor::START, |view| {
            let Some(last) = last else { return false };
            if view.endpoint > last || ceiling.is_some_and(|c| view.endpoint >= c) {
                return true;
            }
            let check = match view.check {
                Check::None => None,
                check => Some(check.to_string()),
            };
            let check_state = match (&check, verifier.check_failures(view.endpoint)) {
                (Some(_), Some(0)) => shape::CheckState::Passing,
                (Some(_), Some(_)) => shape::CheckState::Failing,
                _ => shape::CheckState::Unchecked,
            };
            let meta: BTreeMap<String, String> = view
                .meta
                .map(|meta| {
                    meta.iter()
                        .map(|pair| {
                            (pair.key.to_owned(), String::from_utf8_lossy(pair.value.unwrap_or_default()).into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let origin = match view.source {
                Source::Announcer { origin, .. } if origin == super::mdns::IMPORT_ORIGIN => shape::Origin::Mdns,
                Source::Announcer { .. } => shape::Origin::Announced,
                Source::Unicast(_) => shape::Origin::Registered,
            };
            let instance = shape::Instance {
                id: None,
                addr: view.endpoint.to_string(),
                age_s: seconds(view.age),
                ttl_left_s: seconds(view.ttl_left),
                leases: view.leases,
                source: view.source.to_string(),
                check,
                check_state,
                meta,
                origin,
            };
            // An id's 36 characters and quotes, in place of `null`.
            let size = json_len(&instance) + 40;
            bytes += size;
            heap.push((view.endpoint, size, built.len()));
            built.push(Some((view.endpoint, instance, view.source)));
            while bytes > crate::http::MAX_BODY {
                let Some((endpoint, size, slot)) = heap.pop() else { break };
                bytes -= size;
                built[slot] = None;
                ceiling = Some(ceiling.map_or(endpoint, |c| c.min(endpoint)));
                truncated = true;
            }
            true
        });
        let mut instances: Vec<(SocketAddr, shape::Instance, Source)> = built.into_iter().flatten().collect();
        instances.sort_by_key(|(endpoint, _, _)| *endpoint);
        for (endpoint, instance, source) in &mut instances {
            instance.id = self.registry.lease_id(name, *endpoint, *source).map(|id| id.to_string());
        }
        Some(shape::Service {
            name: name.to_owned(),
            instances: instances.into_iter().map(|(_, instance, _)| instance).collect(),
            truncated,
        })
    }

    /// `/v1/peers`: the peers and bridges, each by address.
    fn catalog_peers(&self, now: Instant) -> shape::Peers {
        let state = |up: bool| if up { "up" } else { "down" }.to_owned();
        let mut peers = self.replicator.peer_stats(now);
        peers.sort_by_key(|p| p.addr);
        let mut bridges = self.bridges.stats(now);
        bridges.sort_by_key(|b| b.addr);
        shape::Peers {
            peers: peers
                .into_iter()
                .map(|p| shape::PeerInfo {
                    addr: p.addr.to_string(),
                    state: state(p.up),
                    complete: p.complete,
                    instances: p.instances,
                    last_heard_s: p.last_heard_ms.map(|ms| ms as f64 / 1000.0),
                })
                .collect(),
            bridges: bridges
                .into_iter()
                .map(|b| shape::BridgeInfo {
                    addr: b.addr.to_string(),
                    state: state(b.up),
                    asked: b.asked,
                    found: b.found,
                    timeouts: b.timeouts,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use serde_json::Value;

    use super::*;
    use crate::core::Core;
    use crate::node::{Face, NodeConfig};

    fn node() -> (Node, Instant) {
        let mut node = Node::new(NodeConfig::default(), uuid::Uuid::new_v4);
        let now = Instant::now();
        node.handle_start(now);
        (node, now)
    }

    fn register(node: &mut Node, now: Instant, line: &str) -> String {
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut reply = Vec::new();
        node.handle_datagram(now, Face::Client, from, line.as_bytes(), &mut reply);
        String::from_utf8(reply).unwrap().trim().to_owned()
    }

    /// A GET on the HTTP face: the status and the JSON body.
    fn get(node: &mut Node, now: Instant, target: &str) -> (u16, Value) {
        let mut out = Vec::new();
        let request = format!("GET {target} HTTP/1.1\r\n\r\n");
        node.handle_stream(now, Face::Http, 0, request.as_bytes(), &mut out);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        (status, serde_json::from_str(body).unwrap())
    }

    #[test]
    fn services_are_the_first_by_name_within_the_limit() {
        let (mut node, now) = node();
        for (name, port) in [("zeta", 1), ("alpha", 2), ("mid", 3), ("alpha", 4)] {
            register(&mut node, now, &format!("register {name} 127.0.0.1 {port}"));
        }
        let (status, all) = get(&mut node, now, "/v1/services");
        assert_eq!(status, 200);
        assert_eq!(
            all["services"],
            serde_json::json!([
                {"name": "alpha", "instances": 2}, {"name": "mid", "instances": 1}, {"name": "zeta", "instances": 1}
            ])
        );
        assert_eq!(all["truncated"], false);
        assert_eq!(all["node"]["ttl_s"], 5.0);
        let (_, two) = get(&mut node, now, "/v1/services?limit=2");
        let names: Vec<&str> =
            two["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["alpha", "mid"]);
        assert_eq!(two["truncated"], true);
        let (_, none) = get(&mut node, now, "/v1/services?limit=0");
        assert_eq!((none["services"].as_array().unwrap().len(), &none["truncated"]), (0, &Value::Bool(true)));
        // Listed once, the names are kept in order from the table's changes: a new service, and
        // one whose last instance went, show at once.
        register(&mut node, now, "register beta 127.0.0.1 5");
        let mid = register(&mut node, now, "register mid 127.0.0.1 3");
        assert_eq!(register(&mut node, now, &format!("deregister {mid}")), "OK");
        let names = |answer: &Value| -> Vec<String> {
            answer["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(names(&get(&mut node, now, "/v1/services").1), ["alpha", "beta", "zeta"]);
        // Expired services are gone.
        let later = now + Duration::from_secs(60);
        assert_eq!(get(&mut node, later, "/v1/services").1["services"], serde_json::json!([]));
        assert_eq!(get(&mut node, later, "/v1/services/alpha").0, 404);
    }

    #[test]
    fn instances_carry_their_lease_check_metadata_and_origin() {
        let (mut node, now) = node();
        let id = register(&mut node, now, "register echo 127.0.0.1 4001 check=http:/health zone=a empty=");
        assert_eq!(id.len(), 36, "{id}");
        register(&mut node, now, "register echo 127.0.0.1 4000");
        let later = now + Duration::from_millis(1500);
        let (status, echo) = get(&mut node, later, "/v1/services/echo");
        assert_eq!(status, 200);
        let instances = echo["instances"].as_array().unwrap();
        assert_eq!(instances[0]["addr"], "127.0.0.1:4000");
        let checked = &instances[1];
        assert_eq!(checked["id"], id.as_str());
        assert_eq!(checked["check"], "http:/health");
        // Checks are off in the default settings: this broker does not probe it.
        assert_eq!(checked["check_state"], "unchecked");
        assert_eq!(checked["meta"], serde_json::json!({"zone": "a", "empty": ""}));
        assert_eq!(checked["origin"], "registered");
        assert_eq!(checked["source"], "127.0.0.1:40000");
        assert_eq!(checked["age_s"], 1.5);
        assert_eq!(checked["ttl_left_s"], 3.5);
        let (_, one) = get(&mut node, later, "/v1/services/echo?limit=1");
        assert_eq!((one["instances"].as_array().unwrap().len(), &one["truncated"]), (1, &Value::Bool(true)));
    }

    /// A cut list keeps the lowest addresses, whatever order the table holds them in, within
    /// the limit and within the size bound.
    #[test]
    fn a_cut_instance_list_keeps_the_lowest_addresses() {
        let (mut node, now) = node();
        for port in (4000..4010).rev() {
            register(&mut node, now, &format!("register echo 127.0.0.1 {port}"));
        }
        let ports = |answer: &Value| -> Vec<String> {
            answer["instances"].as_array().unwrap().iter().map(|i| i["addr"].as_str().unwrap().to_owned()).collect()
        };
        let (status, three) = get(&mut node, now, "/v1/services/echo?limit=3");
        assert_eq!(status, 200);
        assert_eq!(ports(&three), ["127.0.0.1:4000", "127.0.0.1:4001", "127.0.0.1:4002"]);
        assert_eq!(three["truncated"], true);
        assert!(three["instances"].as_array().unwrap().iter().all(|i| i["id"].is_string()), "{three}");
        let (_, all) = get(&mut node, now, "/v1/services/echo");
        assert_eq!(ports(&all).len(), 10);
        assert_eq!(all["truncated"], false);
        let (_, none) = get(&mut node, now, "/v1/services/echo?limit=0");
        assert_eq!((ports(&none).len(), &none["truncated"]), (0, &Value::Bool(true)));
    }

    /// Past the size bound, the answer is the longest run of lowest addresses that fits.
    #[test]
    fn a_list_cut_at_its_size_keeps_the_lowest_addresses() {
        let (mut node, now) = node();
        let meta = ["a", "b", "c", "d"].map(|k| format!("{k}={}", "v".repeat(240))).join(" ");
        // Registered from the highest address down, from many sources.
        for port in (10_000..13_000u16).rev() {
            let from: SocketAddr = format!("127.0.{}.1:40000", port % 200).parse().unwrap();
            let mut reply = Vec::new();
            let line = format!("register big 127.0.0.1 {port} {meta}");
            node.handle_datagram(now, Face::Client, from, line.as_bytes(), &mut reply);
        }
        let (status, big) = get(&mut node, now, "/v1/services/big?limit=10000");
        assert_eq!(status, 200);
        assert_eq!(big["truncated"], true);
        let listed = big["instances"].as_array().unwrap();
        assert!(listed.len() > 1000 && listed.len() < 3000, "{}", listed.len());
        for (at, instance) in listed.iter().enumerate() {
            assert_eq!(instance["addr"], format!("127.0.0.1:{}", 10_000 + at), "a prefix by address");
        }
    }

    #[test]
    fn a_checked_instance_passes_until_its_probe_fails() {
        let interval = Duration::from_secs(1);
        let verify = crate::node::VerifyConfig { probe_interval: Some(interval), fall: 3, ..Default::default() };
        let mut node = Node::new(NodeConfig { verify, ..NodeConfig::default() }, uuid::Uuid::new_v4);
        let now = Instant::now();
        node.handle_start(now);
        register(&mut node, now, "register echo 127.0.0.1 4000 check=tcp");
        let state = |node: &mut Node, at| get(node, at, "/v1/services/echo").1["instances"][0]["check_state"].clone();
        assert_eq!(state(&mut node, now), "passing", "none ran yet");
        let mut at = now;
        let id = loop {
            at += Duration::from_millis(100);
            node.handle_timeout(at);
            if let Some(crate::core::ProbeCmd::Start { id, .. }) = node.poll_probe() {
                break id;
            }
            assert!(at < now + interval * 3, "no probe");
        };
        let refused = crate::core::ProbeOutcome::Failed(std::io::ErrorKind::ConnectionRefused);
        node.handle_probe(at, id, refused);
        assert_eq!(state(&mut node, at), "failing");
    }

    #[test]
    fn peers_and_bridges_are_listed_and_backends_are_not_here() {
        let (mut node, now) = node();
        let (status, peers) = get(&mut node, now, "/v1/peers");
        assert_eq!((status, peers), (200, serde_json::json!({"peers": [], "bridges": []})));
        assert_eq!(
            get(&mut node, now, "/v1/backends"),
            (404, serde_json::json!({"error": "not found", "name": "/v1/backends"}))
        );
    }
}
