//! `makler watch`, against a real broker: the live set now and at every change (metadata
//! included), as lines or JSON, `--count` ending it, and the exit code when no broker answers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::{self, Udp};

#[test]
fn makler_watch_prints_each_change_with_metadata_and_stops_after_count() {
    let broker = common::broker(&[]);
    let at = broker.addr("udp").to_string();
    let udp = Udp::new(broker.addr("udp"));
    for json in [false, true] {
        let mut args = vec!["--broker", at.as_str(), "watch", "web", "--count", "2"];
        if json {
            args.push("--json");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_makler"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let id = udp.text("register web 9001 zone=a version=2");
        let second = lines.next().unwrap().unwrap();
        assert_eq!(udp.text(&format!("deregister {id}")), "OK");
        let third = lines.next().unwrap().unwrap();
        assert!(child.wait().unwrap().success(), "it stops after --count changes");
        assert!(lines.next().is_none(), "nothing after the --count-th change");
        if json {
            let parse = |line: &str| serde_json::from_str::<serde_json::Value>(line).unwrap();
            let (a, b, c) = (parse(&first), parse(&second), parse(&third));
            assert_eq!(a["instances"], serde_json::json!([]));
            assert_eq!(b["service"], "web");
            assert_eq!(
                b["instances"],
                serde_json::json!([{"endpoint": "127.0.0.1:9001", "meta": {"zone": "a", "version": "2"}}])
            );
            assert_eq!(b["seq"].as_u64(), a["seq"].as_u64().map(|s| s + 1));
            assert_eq!(c["instances"], serde_json::json!([]));
        } else {
            let seq: u64 = first.strip_prefix("seq=").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{first}"));
            assert_eq!(second, format!("seq={} 127.0.0.1:9001[zone=a version=2]", seq + 1));
            assert_eq!(third, format!("seq={}", seq + 2));
        }
    }
}

#[test]
fn makler_watch_exits_4_when_no_broker_answers() {
    // A socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = silent.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_makler")).args(["--broker", &at, "watch", "web"]).output().unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no broker answered"), "{output:?}");
}

#[test]
fn makler_watch_exits_6_when_the_broker_refuses_the_watch() {
    let broker = common::broker(&["--max-watches", "1"]);
    let at = broker.addr("udp").to_string();
    // The one watch the broker takes, until this test ends.
    let mut first = Killed(
        Command::new(env!("CARGO_BIN_EXE_makler"))
            .args(["--broker", &at, "watch", "web"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(first.0.stdout.take().unwrap()).lines();
    assert!(lines.next().is_some_and(|line| line.is_ok_and(|l| l.starts_with("seq="))), "the first watch started");
    let output = Command::new(env!("CARGO_BIN_EXE_makler")).args(["--broker", &at, "watch", "web"]).output().unwrap();
    drop(first);
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("too many watches"), "{output:?}");
}

/// A child killed when dropped, the test failing or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
