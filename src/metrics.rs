//! Prometheus metrics: the broker's and the balancer's counters in the Prometheus text
//! exposition format (version 0.0.4), served over HTTP at `GET /metrics` by a stream face of
//! the shell (`--metrics ADDR`).
//!
//! Everything here is a pure function of a snapshot: the cores build a [`BrokerMetrics`] or a
//! [`BalancerStats`] from the counters they keep anyway, and [`broker`] / [`balancer`] turn it
//! into text; [`serve_http`] answers one buffered HTTP request. No socket, no clock, no global
//! registry.
//!
//! The format is written here rather than with a metrics crate: the crates (`prometheus`,
//! `prometheus-client`) are built around a registry of shared, atomically updated metric
//! objects, registered once and updated where things happen, and `prometheus-client` writes
//! OpenMetrics rather than this format; the cores already keep plain counters, and the text
//! format for counters and gauges is a few lines (`# HELP`, `# TYPE`, samples with escaped
//! label values). The tests parse the output with the `prometheus-parse` crate.
//!
//! ```
//! use makler::metrics::{self, BrokerMetrics};
//!
//! let text = metrics::broker(&BrokerMetrics::default());
//! assert!(text.contains("# TYPE makler_instances gauge\nmakler_instances 0\n"));
//! ```

use std::fmt::Write;

use crate::core::StreamStep;
use crate::protocol::{BalancerStats, BrokerStats};
use crate::service::RequestCounts;

/// What the broker's metrics are made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerMetrics {
    /// The counters `stats` reports, with every peer.
    pub stats: BrokerStats,
    /// Requests by kind.
    pub requests: RequestCounts,
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A metrics page being written.
#[derive(Debug, Default)]
struct Page {
    text: String,
}

impl Page {
    /// Starts a metric: its help and type lines.
    fn header(&mut self, name: &str, help: &str, kind: Kind) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample, with its labels.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A metric with one sample and no labels.
    fn one(&mut self, name: &str, help: &str, kind: Kind, value: u64) {
        self.header(name, help, kind);
        self.sample(name, &[], value);
    }

    /// A metric with one sample per value of one label.
    fn by<'a>(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.header(name, help, kind);
        for (value_of_label, value) in samples {
            self.sample(name, &[(label, value_of_label)], value);
        }
    }
}

/// The broker's metrics page.
pub fn broker(metrics: &BrokerMetrics) -> String {
    use Kind::{Counter, Gauge};
    let s = &metrics.stats;
    let mut page = Page::default();
    page.one("makler_instances", "Live instances in the table.", Gauge, s.instances);
    page.one("makler_services", "Services with at least one live instance.", Gauge, s.services);
    page.one(
        "makler_complete",
        "1 when the broker holds the whole table, 0 while it catches up.",
        Gauge,
        s.complete.into(),
    );
    page.one("makler_datagrams_received_total", "Request datagrams received.", Counter, s.received);
    page.by("makler_requests_total", "Requests that decoded, by kind.", Counter, "kind", metrics.requests.by_kind());
    page.one("makler_rejected_total", "Requests answered with an error.", Counter, s.rejected);
    page.by(
        "makler_refused_total",
        "Requests refused, by reason.",
        Counter,
        "reason",
        [
            ("full", s.refused_full),
            ("quota", s.refused_quota),
            ("policy", s.refused_policy),
            ("reports", s.refused_reports),
        ],
    );
    page.by(
        "makler_rate_limited_total",
        "Replies held back by the rate limit: dropped, or slipped (a short answer instead).",
        Counter,
        "action",
        [("dropped", s.rate_dropped), ("slipped", s.rate_slipped)],
    );
    page.one("makler_expired_total", "Registrations that expired.", Counter, s.expired);
    page.one("makler_send_failures_total", "Replies that could not be sent.", Counter, s.send_failures);
    page.one(
        "makler_announcements_total",
        "Announcements and goodbyes taken from the multicast group.",
        Counter,
        s.announcements,
    );
    page.one("makler_multicast_ignored_total", "Multicast datagrams dropped.", Counter, s.multicast_ignored);
    page.one("makler_replicated_out_total", "Lease changes sent to peers (once per peer).", Counter, s.replicated_out);
    page.one("makler_replicated_in_total", "Lease changes received from peers and applied.", Counter, s.replicated_in);
    page.one("makler_retransmits_total", "Deltas resent to peers.", Counter, s.retransmits);
    page.one("makler_peer_rejected_total", "Peer datagrams dropped.", Counter, s.peer_rejected);
    page.one("makler_probes_total", "TCP probes started (reports and health checks).", Counter, s.probes);
    page.one("makler_probes_dead_total", "Probes that found their target dead.", Counter, s.probes_dead);
    page.one("makler_reports_total", "Reports of dead instances received.", Counter, s.reports);
    page.one("makler_removed_unreachable_total", "Instances removed as unreachable.", Counter, s.removed_unreachable);
    page.one("makler_peers", "Peer brokers known.", Gauge, s.peer_count);
    page.one("makler_peers_up", "Peer brokers up.", Gauge, s.peers_up);
    let peers: Vec<(String, &crate::protocol::PeerStats)> = s.peers.iter().map(|p| (p.addr.to_string(), p)).collect();
    page.by(
        "makler_peer_up",
        "1 when the peer is up.",
        Gauge,
        "peer",
        peers.iter().map(|(a, p)| (a.as_str(), p.up.into())),
    );
    page.by(
        "makler_peer_instances",
        "Live instances each peer last said it has.",
        Gauge,
        "peer",
        peers.iter().map(|(a, p)| (a.as_str(), p.instances)),
    );
    page.one("makler_bridged_total", "Queries for services not held here, asked at the bridges.", Counter, s.bridged);
    page.one("makler_bridged_found_total", "Bridged queries answered with instances.", Counter, s.bridged_found);
    page.one("makler_bridge_queries_total", "Other networks' bridge queries answered here.", Counter, s.bridge_queries);
    page.one("makler_watches", "Watches (watch SERVICE) now.", Gauge, s.watches);
    page.one("makler_watch_notifications_total", "Notifications sent to watchers.", Counter, s.watch_notifications);
    page.one(
        "makler_watch_dropped_total",
        "Notifications held back by the rate limit or a full queue.",
        Counter,
        s.watch_dropped,
    );
    let bridges: Vec<(String, &crate::protocol::BridgeStats)> =
        s.bridges.iter().map(|b| (b.addr.to_string(), b)).collect();
    page.by(
        "makler_bridge_up",
        "1 when the bridge is asked (it answered in time, or its time out is over).",
        Gauge,
        "bridge",
        bridges.iter().map(|(a, b)| (a.as_str(), b.up.into())),
    );
    page.by(
        "makler_bridge_timeouts_total",
        "Bridge queries a bridge did not answer in time.",
        Counter,
        "bridge",
        bridges.iter().map(|(a, b)| (a.as_str(), b.timeouts)),
    );
    page.text
}

/// The balancer's metrics page (`stats` holds every backend).
pub fn balancer(s: &BalancerStats) -> String {
    use Kind::{Counter, Gauge};
    let mut page = Page::default();
    page.one("makler_balancer_connections_active", "Client connections open now.", Gauge, s.active);
    page.one("makler_balancer_connections_total", "Client connections accepted.", Counter, s.total);
    page.one("makler_balancer_refused_total", "Connections refused at the connection cap.", Counter, s.refused);
    page.one("makler_balancer_failed_total", "Connections no backend accepted.", Counter, s.failed);
    page.one("makler_balancer_backends", "Registered backends.", Gauge, s.backend_count);
    let names: Vec<String> = s.backends.iter().map(|b| b.addr.to_string()).collect();
    let each = |f: fn(&crate::protocol::BackendStats) -> u64| {
        names.iter().zip(&s.backends).map(move |(name, b)| (name.as_str(), f(b)))
    };
    page.by("makler_backend_up", "1 when the backend gets new connections.", Gauge, "backend", each(|b| b.up.into()));
    page.by(
        "makler_backend_connections_active",
        "Connections open to the backend.",
        Gauge,
        "backend",
        each(|b| b.active),
    );
    page.by(
        "makler_backend_connections_total",
        "Connections forwarded to the backend.",
        Counter,
        "backend",
        each(|b| b.total),
    );
    page.by("makler_backend_sent_bytes_total", "Bytes sent to the backend.", Counter, "backend", each(|b| b.bytes_to));
    page.by(
        "makler_backend_received_bytes_total",
        "Bytes received from the backend.",
        Counter,
        "backend",
        each(|b| b.bytes_from),
    );
    page.by("makler_backend_failures_total", "Failed connects and probes.", Counter, "backend", each(|b| b.failures));
    page.text
}

/// The longest request head read before answering `431`.
const MAX_HEAD: usize = 8 * 1024;

/// Answers one HTTP request whose bytes are buffered in `input`: `GET /metrics` (or `HEAD`)
/// with `body()` as `text/plain; version=0.0.4`, anything else with 404 or 405; every answer
/// closes the connection. Waits (consumes nothing) while the head is incomplete.
pub fn serve_http(input: &[u8], out: &mut Vec<u8>, body: impl FnOnce() -> String) -> StreamStep {
    let end = input.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let end = end.or_else(|| input.windows(2).position(|w| w == b"\n\n").map(|i| i + 2));
    let Some(end) = end else {
        if input.len() < MAX_HEAD {
            return StreamStep { consumed: 0, close: false };
        }
        respond(out, "431 Request Header Fields Too Large", "text/plain", "request head too large\n", true);
        return StreamStep { consumed: input.len(), close: true };
    };
    let line = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_ascii_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            respond(out, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body(), method == "GET")
        }
        ("GET" | "HEAD", _) => {
            respond(out, "404 Not Found", "text/plain", "not found: try /metrics\n", method == "GET")
        }
        _ => respond(out, "405 Method Not Allowed", "text/plain", "only GET /metrics\n", true),
    }
    StreamStep { consumed: end, close: true }
}

fn respond(out: &mut Vec<u8>, status: &str, content_type: &str, body: &str, with_body: bool) {
    let _ = std::io::Write::write_fmt(
        out,
        format_args!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
    );
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BackendStats, PeerStats};

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
    }

    fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no sample {name} {label:?}"));
        match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn the_broker_page_parses_with_every_counter() {
        let mut metrics = BrokerMetrics::default();
        metrics.stats.instances = 3;
        metrics.stats.refused_quota = 7;
        metrics.stats.complete = true;
        metrics.stats.peers = vec![PeerStats {
            addr: "[::1]:7001".parse().unwrap(),
            up: true,
            complete: true,
            instances: 3,
            last_heard_ms: None,
        }];
        metrics.requests.heartbeat = 41;
        let text = broker(&metrics);
        let scrape = parse(&text);
        assert_eq!(value(&scrape, "makler_instances", None), 3.0);
        assert_eq!(value(&scrape, "makler_complete", None), 1.0);
        assert_eq!(value(&scrape, "makler_refused_total", Some(("reason", "quota"))), 7.0);
        assert_eq!(value(&scrape, "makler_requests_total", Some(("kind", "heartbeat"))), 41.0);
        assert_eq!(value(&scrape, "makler_peer_up", Some(("peer", "[::1]:7001"))), 1.0);
        assert!(text.contains("# TYPE makler_requests_total counter\n"), "{text}");
        // Every metric has its help and type, once.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        assert_eq!(types, scrape.docs.len());
    }

    #[test]
    fn the_balancer_page_has_each_backend() {
        let stats = BalancerStats {
            active: 1,
            total: 9,
            backend_count: 2,
            backends: vec![
                BackendStats {
                    addr: "127.0.0.1:4000".parse().unwrap(),
                    up: true,
                    active: 1,
                    total: 5,
                    bytes_to: 100,
                    bytes_from: 200,
                    failures: 0,
                },
                BackendStats {
                    addr: "127.0.0.1:4001".parse().unwrap(),
                    up: false,
                    active: 0,
                    total: 4,
                    bytes_to: 10,
                    bytes_from: 20,
                    failures: 2,
                },
            ],
            ..BalancerStats::default()
        };
        let scrape = parse(&balancer(&stats));
        assert_eq!(value(&scrape, "makler_balancer_connections_total", None), 9.0);
        assert_eq!(value(&scrape, "makler_backend_up", Some(("backend", "127.0.0.1:4001"))), 0.0);
        assert_eq!(value(&scrape, "makler_backend_failures_total", Some(("backend", "127.0.0.1:4001"))), 2.0);
        assert_eq!(value(&scrape, "makler_backend_received_bytes_total", Some(("backend", "127.0.0.1:4000"))), 200.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut page = Page::default();
        page.by("m", "a\nb", Kind::Gauge, "l", [("x\"y\\z\n", 1)]);
        assert_eq!(page.text, "# HELP m a\\nb\n# TYPE m gauge\nm{l=\"x\\\"y\\\\z\\n\"} 1\n");
    }

    #[test]
    fn http_answers_metrics_and_nothing_else() {
        let mut out = Vec::new();
        assert_eq!(
            serve_http(b"GET /metrics HTTP/1.1\r\nHost: x", &mut out, String::new),
            StreamStep { consumed: 0, close: false }
        );
        assert!(out.is_empty());
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let step = serve_http(request, &mut out, || "m 1\n".into());
        assert_eq!(step, StreamStep { consumed: request.len(), close: true });
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 4\r\nConnection: close\r\n\r\nm 1\n"), "{text}");
        out.clear();
        serve_http(b"GET / HTTP/1.0\n\n", &mut out, || unreachable!());
        assert!(out.starts_with(b"HTTP/1.1 404 "));
        out.clear();
        serve_http(b"POST /metrics HTTP/1.1\r\n\r\n", &mut out, || unreachable!());
        assert!(out.starts_with(b"HTTP/1.1 405 "));
        out.clear();
        let step = serve_http(&[b'x'; MAX_HEAD], &mut out, || unreachable!());
        assert!(step.close && out.starts_with(b"HTTP/1.1 431 "));
    }
}
