//! Prometheus metrics: the broker's and the balancer's counters in the Prometheus text
//! exposition format (version 0.0.4), served over HTTP at `GET /metrics` by a stream face of
//! the shell (`--metrics ADDR`).
//!
//! Everything here is a pure function of a snapshot: the cores build a [`BrokerMetrics`] or a
//! [`BalancerMetrics`] from their tables of counters (each row a [`Def`] and a value), and
//! [`broker`] / [`balancer`] loop over it; [`serve_http`] answers one buffered HTTP request. No socket, no clock, no global
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
//! use makler::protocol::stats::Def;
//!
//! static INSTANCES: Def = Def::gauge("instances", "makler_instances", "Live instances in the table.");
//! let text = metrics::broker(&BrokerMetrics { counters: vec![(&INSTANCES, 0)], ..BrokerMetrics::default() });
//! assert!(text.contains("# TYPE makler_instances gauge\nmakler_instances 0\n"));
//! ```

use std::fmt::Write;

use crate::core::StreamStep;
use crate::protocol::stats::{Def, Kind};
use crate::protocol::{BackendStats, BridgeStats, PeerStats};
use crate::service::RequestCounts;

/// What the broker's metrics are made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerMetrics {
    /// The counters `stats` reports, each with its definition, in the table's order.
    pub counters: Vec<(&'static Def, u64)>,
    /// Every peer.
    pub peers: Vec<PeerStats>,
    /// Every bridge.
    pub bridges: Vec<BridgeStats>,
    /// Requests by kind.
    pub requests: RequestCounts,
}

/// What the balancer's metrics are made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalancerMetrics {
    /// The counters `stats` reports, each with its definition, in the table's order.
    pub counters: Vec<(&'static Def, u64)>,
    /// Every backend.
    pub backends: Vec<BackendStats>,
}

/// A metric of a list's entries (peers, bridges, backends): one sample per entry, labelled with
/// the entry's address.
struct PerEntry<T> {
    metric: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&T) -> u64,
}

/// The metrics of each peer.
#[rustfmt::skip]
const PEER: &[PerEntry<PeerStats>] = &[
    PerEntry { metric: "makler_peer_up", kind: Kind::Gauge, help: "1 when the peer is up.", value: |p| p.up.into() },
    PerEntry { metric: "makler_peer_instances", kind: Kind::Gauge, help: "Live instances each peer last said it has.",
        value: |p| p.instances },
];

/// The metrics of each bridge.
#[rustfmt::skip]
const BRIDGE: &[PerEntry<BridgeStats>] = &[
    PerEntry { metric: "makler_bridge_up", kind: Kind::Gauge,
        help: "1 when the bridge is asked (it answered in time, or its time out is over).", value: |b| b.up.into() },
    PerEntry { metric: "makler_bridge_timeouts_total", kind: Kind::Counter,
        help: "Bridge queries a bridge did not answer in time.", value: |b| b.timeouts },
];

/// The metrics of each backend.
#[rustfmt::skip]
const BACKEND: &[PerEntry<BackendStats>] = &[
    PerEntry { metric: "makler_backend_up", kind: Kind::Gauge, help: "1 when the backend gets new connections.",
        value: |b| b.up.into() },
    PerEntry { metric: "makler_backend_connections_active", kind: Kind::Gauge, help: "Connections open to the backend.",
        value: |b| b.active },
    PerEntry { metric: "makler_backend_connections_total", kind: Kind::Counter,
        help: "Connections forwarded to the backend.", value: |b| b.total },
    PerEntry { metric: "makler_backend_sent_bytes_total", kind: Kind::Counter, help: "Bytes sent to the backend.",
        value: |b| b.bytes_to },
    PerEntry { metric: "makler_backend_received_bytes_total", kind: Kind::Counter,
        help: "Bytes received from the backend.", value: |b| b.bytes_from },
    PerEntry { metric: "makler_backend_failures_total", kind: Kind::Counter, help: "Failed connects and probes.",
        value: |b| b.failures },
];

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
            Kind::Gauge | Kind::Flag => "gauge",
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

    /// The counters of a table: a metric per row, or one for the rows that share it (each with
    /// its label).
    fn counters<'a>(&mut self, counters: impl IntoIterator<Item = &'a (&'static Def, u64)>) {
        let mut last = "";
        for &(def, value) in counters {
            if def.metric != last {
                self.header(def.metric, def.help, def.kind);
                last = def.metric;
            }
            self.sample(def.metric, def.label.as_slice(), value);
        }
    }

    /// The metrics of a list's entries, each sample labelled `label="address"`.
    fn per_entry<T>(&mut self, metrics: &[PerEntry<T>], label: &str, entries: &[T], addr: fn(&T) -> String) {
        let names: Vec<String> = entries.iter().map(addr).collect();
        for metric in metrics {
            self.header(metric.metric, metric.help, metric.kind);
            for (name, entry) in names.iter().zip(entries) {
                self.sample(metric.metric, &[(label, name)], (metric.value)(entry));
            }
        }
    }
}

/// The broker's metrics page.
pub fn broker(metrics: &BrokerMetrics) -> String {
    let mut page = Page::default();
    page.counters(&metrics.counters);
    page.header("makler_requests_total", "Requests that decoded, by kind.", Kind::Counter);
    for (kind, value) in metrics.requests.by_kind() {
        page.sample("makler_requests_total", &[("kind", kind)], value);
    }
    page.per_entry(PEER, "peer", &metrics.peers, |p| p.addr.to_string());
    page.per_entry(BRIDGE, "bridge", &metrics.bridges, |b| b.addr.to_string());
    page.text
}

/// The balancer's metrics page (`metrics` holds every backend).
pub fn balancer(metrics: &BalancerMetrics) -> String {
    let mut page = Page::default();
    page.counters(&metrics.counters);
    page.per_entry(BACKEND, "backend", &metrics.backends, |b| b.addr.to_string());
    page.text
}

/// The longest request head read before answering `431`.
const MAX_HEAD: usize = 8 * 1024;

/// The most header lines read; a request with more gets `431`.
const MAX_HEADERS: usize = 64;

/// Answers one HTTP request whose bytes are buffered in `input`: `GET /metrics` (or `HEAD`)
/// with `body()` as `text/plain; version=0.0.4`, anything else with 404 or 405, a head that is
/// not HTTP with 400; every answer closes the connection. Waits (consumes nothing) while the
/// head is incomplete. The head is parsed by `httparse`.
pub fn serve_http(input: &[u8], out: &mut Vec<u8>, body: impl FnOnce() -> String) -> StreamStep {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let end = match request.parse(input) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) if input.len() < MAX_HEAD => return StreamStep { consumed: 0, close: false },
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            respond(out, "431 Request Header Fields Too Large", "text/plain", "request head too large\n", true);
            return StreamStep { consumed: input.len(), close: true };
        }
        Err(e) => {
            respond(out, "400 Bad Request", "text/plain", &format!("bad request ({e}): try GET /metrics\n"), true);
            return StreamStep { consumed: input.len(), close: true };
        }
    };
    let method = request.method.unwrap_or_default();
    let path = request.path.unwrap_or_default().split('?').next().unwrap_or_default();
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
        static INSTANCES: Def = Def::gauge("instances", "makler_instances", "Live instances in the table.");
        static COMPLETE: Def = Def::flag("complete", "makler_complete", "1 when complete.");
        static FULL: Def = Def::counter("refused_full", "makler_refused_total", "Refused.").labelled("reason", "full");
        static QUOTA: Def =
            Def::counter("refused_quota", "makler_refused_total", "Refused.").labelled("reason", "quota");
        let mut metrics = BrokerMetrics {
            counters: vec![(&INSTANCES, 3), (&COMPLETE, 1), (&FULL, 0), (&QUOTA, 7)],
            ..BrokerMetrics::default()
        };
        metrics.peers = vec![PeerStats {
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
        // The rows of one metric share its help and type lines.
        assert!(text.contains("makler_refused_total{reason=\"full\"} 0\nmakler_refused_total{reason=\"quota\"} 7\n"));
        // Every metric has its help and type, once.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        assert_eq!(types, scrape.docs.len());
    }

    #[test]
    fn the_balancer_page_has_each_backend() {
        static TOTAL: Def = Def::counter("total", "makler_balancer_connections_total", "Accepted.");
        let stats = BalancerMetrics {
            counters: vec![(&TOTAL, 9)],
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
        page.header("m", "a\nb", Kind::Gauge);
        page.sample("m", &[("l", "x\"y\\z\n")], 1);
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
        out.clear();
        let long = format!("GET /metrics HTTP/1.1\r\nA: {}", "b".repeat(MAX_HEAD));
        let step = serve_http(long.as_bytes(), &mut out, || unreachable!());
        assert!(step.close && out.starts_with(b"HTTP/1.1 431 "));
        out.clear();
        let many = format!("GET /metrics HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS + 1));
        serve_http(many.as_bytes(), &mut out, || unreachable!());
        assert!(out.starts_with(b"HTTP/1.1 431 "));
    }

    #[test]
    fn http_waits_for_a_head_split_across_reads() {
        let request = b"HEAD /metrics?x=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let mut out = Vec::new();
        // Every prefix is waited on, whatever the cut (inside a word, between \r and \n).
        for cut in 0..request.len() {
            assert_eq!(
                serve_http(&request[..cut], &mut out, || unreachable!()),
                StreamStep { consumed: 0, close: false }
            );
            assert!(out.is_empty(), "answered after {cut} bytes");
        }
        // The whole head, with the start of whatever follows it, is answered and consumed to
        // its end.
        let mut more = request.to_vec();
        more.extend_from_slice(b"GET");
        let step = serve_http(&more, &mut out, || "m 1\n".into());
        assert_eq!(step, StreamStep { consumed: request.len(), close: true });
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn a_malformed_head_gets_400() {
        for head in [
            &b"GET /metrics HTTP/9.9\r\n\r\n"[..],
            b"GET /me trics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            b"\x00\x01\r\n\r\n",
        ] {
            let mut out = Vec::new();
            let step = serve_http(head, &mut out, || unreachable!());
            assert_eq!(step, StreamStep { consumed: head.len(), close: true });
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n") && text.contains("try GET /metrics"), "{text}");
        }
    }
}
