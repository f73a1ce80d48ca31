//! `--metrics`: the broker and the balancer serve their counters in the Prometheus text format
//! over HTTP; a scrape parses (with the `prometheus-parse` crate) and shows the live state.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::PATIENCE;
use crate::common::{Udp, wait_until};

/// One HTTP GET of `path`; returns the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics listener");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the listener answers and closes");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("the page parses")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let sample =
        scrape.samples.iter().find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))?;
    match sample.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => Some(v),
        _ => None,
    }
}

#[test]
fn a_broker_scrape_shows_its_table_and_requests() {
    let broker = common::broker(&["--metrics", "127.0.0.1:0"]);
    let metrics = broker.addr("metrics");
    let udp = Udp::new(broker.addr("udp"));
    udp.text("register echo 4000");
    udp.text("register echo 4001");
    udp.text("query echo");
    udp.text("fetch");
    let page = scrape(metrics);
    assert_eq!(value(&page, "makler_instances", None), Some(2.0));
    assert_eq!(value(&page, "makler_services", None), Some(1.0));
    assert_eq!(value(&page, "makler_requests_total", Some(("kind", "register"))), Some(2.0));
    assert_eq!(value(&page, "makler_requests_total", Some(("kind", "query"))), Some(1.0));
    assert_eq!(value(&page, "makler_rejected_total", None), Some(1.0));
    assert_eq!(value(&page, "makler_refused_total", Some(("reason", "full"))), Some(0.0));
    assert!(page.docs.contains_key("makler_probes_total"), "{:?}", page.docs.keys());
    let (status, _) = get(metrics, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn a_balancer_scrape_shows_each_backend() {
    let balancer = common::balancer("web", None, &["--metrics", "127.0.0.1:0", "--quiet"]);
    let metrics = balancer.addr("metrics");
    let server = common::server("http", balancer.addr("udp"), &[]);
    let backend = server.addr("tcp").to_string();
    let page = wait_until(PATIENCE, "the backend is registered", || {
        let page = scrape(metrics);
        (value(&page, "makler_balancer_backends", None) == Some(1.0)).then_some(page)
    });
    assert_eq!(value(&page, "makler_backend_up", Some(("backend", &backend))), Some(1.0));
    common::http_get(balancer.addr("tcp")).expect("the balancer forwards");
    let page = scrape(metrics);
    assert_eq!(value(&page, "makler_balancer_connections_total", None), Some(1.0));
    assert_eq!(value(&page, "makler_backend_connections_total", Some(("backend", &backend))), Some(1.0));
}

/// Where Prometheus' `promtool` is installed (ignored elsewhere) (`.ci/run` installs Debian's `prometheus`), its
/// linter must find nothing wrong with either page.
#[test]
#[cfg_attr(
    not(has_promtool),
    ignore = "promtool is not installed (apt-get install --no-install-recommends prometheus)"
)]
fn promtool_finds_nothing_to_lint() {
    let broker = common::broker(&["--metrics", "127.0.0.1:0"]);
    let balancer = common::balancer("web", None, &["--metrics", "127.0.0.1:0", "--quiet"]);
    let _server = common::server("http", balancer.addr("udp"), &[]);
    wait_until(PATIENCE, "the backend is registered", || {
        (value(&scrape(balancer.addr("metrics")), "makler_balancer_backends", None) == Some(1.0)).then_some(())
    });
    for addr in [broker.addr("metrics"), balancer.addr("metrics")] {
        let (_, body) = get(addr, "/metrics");
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool starts");
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && said.trim().is_empty(), "promtool on {addr}: {said}\n{body}");
    }
}
