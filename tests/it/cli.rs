//! `makler`, the control CLI, against a real broker and balancer: every subcommand, in tables
//! and in JSON, and its exit codes.

use crate::common;
use std::process::Command;

use crate::common::PATIENCE;
use crate::common::{Udp, wait_until};

/// Runs `makler` with `args`; returns (exit code, stdout, stderr).
fn makler(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_makler")).args(args).output().expect("makler runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8 output");
    (output.status.code(), text(output.stdout), text(output.stderr))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

#[test]
fn lists_shows_reports_and_deregisters() {
    // A long TTL: the instances registered by hand are not renewed, and the test, slowed by a
    // loaded machine, must not see them expire; the reported one goes by its probe alone.
    let broker = common::broker(&["--ttl", "120"]);
    let at = broker.addr("udp").to_string();
    let udp = Udp::new(broker.addr("udp"));
    let id = udp.text("register echo 4000");
    udp.text("register echo 127.0.0.2 4001 check=http:/up");
    udp.text("register time 4002");

    let (code, out, _) = makler(&["--broker", &at, "list"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "SERVICE  INSTANCES\necho     2\ntime     1\n");
    let (_, out, _) = makler(&["list", "--json", "--broker", &at]);
    assert_eq!(
        json(&out),
        serde_json::json!({"services": [{"name": "echo", "instances": 2}, {"name": "time", "instances": 1}]})
    );

    let (code, out, _) = makler(&["--broker", &at, "show", "echo"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ENDPOINT ") && lines[0].ends_with("LEASES  SOURCE           CHECK"), "{out}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!((cells[0], cells[3]), ("127.0.0.1:4000", "1"), "{out}");
    assert!(cells[1].ends_with('s') && cells[4].starts_with("127.0.0.1:"), "{out}");
    assert_eq!((cells[5], lines[2].split_whitespace().nth(5)), ("none", Some("http:/up")), "{out}");
    let (_, out, _) = makler(&["--broker", &at, "show", "echo", "--json"]);
    let shown = json(&out);
    let first = &shown["instances"][0];
    assert_eq!(first["endpoint"], "127.0.0.1:4000");
    assert_eq!(first["leases"], 1);
    assert!(first["age_ms"].as_u64().unwrap() < 60_000 && first["expires_ms"].as_u64().unwrap() <= 120_000);
    assert!(first["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{out}");
    assert_eq!((&first["check"], &shown["instances"][1]["check"]), (&"none".into(), &"http:/up".into()), "{out}");

    assert_eq!(first["meta"], serde_json::json!({}));

    // Metadata: a column of its own, and an object in JSON.
    udp.text("register time 4002 path=/ version=2");
    let (_, out, _) = makler(&["--broker", &at, "show", "time"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with("CHECK  META") && lines[1].ends_with("none   path=/ version=2"), "{out}");
    let (_, out, _) = makler(&["--broker", &at, "show", "time", "--json"]);
    assert_eq!(json(&out)["instances"][0]["meta"], serde_json::json!({"path": "/", "version": "2"}), "{out}");

    let (_, out, _) = makler(&["--broker", &at, "stats", "--json"]);
    let stats = json(&out);
    assert_eq!(stats["instances"], 3);
    assert_eq!(stats["services"], 2);
    let (_, out, _) = makler(&["--broker", &at, "stats"]);
    assert!(out.starts_with("COUNTER ") && out.contains("\ninstances  "), "{out}");

    let (code, out, _) = makler(&["--broker", &at, "deregister", &id]);
    assert_eq!((code, out.as_str()), (Some(0), "OK\n"));
    assert_eq!(common::listed(&udp, "echo"), ["127.0.0.2:4001".parse().unwrap()]);
    // Nothing listens there: the broker's probe finds it dead and removes it.
    let (code, out, _) = makler(&["--broker", &at, "report", "echo", "127.0.0.2:4001", "--json"]);
    assert_eq!((code, json(&out)), (Some(0), serde_json::json!({"reported": true})));
    wait_until(PATIENCE, "the reported instance is removed", || common::listed(&udp, "echo").is_empty().then_some(()));

    // Exit codes: not found 3, refused 6, no broker 4, bad usage 2.
    let (code, _, err) = makler(&["--broker", &at, "show", "nothing"]);
    assert_eq!(code, Some(3));
    assert_eq!(err, format!("makler: service \"nothing\" is not registered at {at}\n"));
    let (code, _, err) = makler(&["--broker", &at, "show", "a/b"]);
    assert_eq!(code, Some(6), "{err}");
    let (code, _, err) = makler(&["--broker", &at, "deregister", &id]);
    assert_eq!(code, Some(3), "{err}");
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let (code, _, err) = makler(&["--broker", &silent, "--broker-timeout", "0.05", "list"]);
    assert_eq!(code, Some(4));
    assert!(err.contains("no broker answered"), "{err}");
    let (code, _, _) = makler(&["--broker", &at, "fly"]);
    assert_eq!(code, Some(2));
}

#[test]
fn a_balancer_lists_its_backends_and_its_stats() {
    let balancer = common::balancer("web", None, &["--quiet"]);
    let control = balancer.addr("udp").to_string();
    let _server = common::server("http", balancer.addr("udp"), &[]);
    let out = wait_until(PATIENCE, "the backend is listed", || {
        let (code, out, _) = makler(&["--broker", &control, "list", "--json"]);
        (code == Some(0) && out.contains("\"http\"")).then_some(out)
    });
    assert_eq!(json(&out), serde_json::json!({"services": [{"name": "http", "instances": 1}]}));
    let (code, out, _) = makler(&["--broker", &control, "stats", "--json"]);
    assert_eq!(code, Some(0));
    let stats = json(&out);
    assert_eq!(stats["backend_count"], 1);
    assert_eq!(stats["backends"][0]["up"], true);
}
