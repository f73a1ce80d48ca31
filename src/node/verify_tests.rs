//! The verifier on injected time and probe outcomes: how a report's verification ends for each
//! kind of result, and that reports join a verification rather than start probes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::verify::{Verifier, VerifyConfig, VerifyEvent};
use crate::core::{ProbeCmd, ProbeId, ProbeOutcome};
use crate::probe::ProberConfig;
use crate::protocol::Source;
use crate::registry::{Change, ChangeKind};

const MS: Duration = Duration::from_millis(1);

struct Bench {
    t0: Instant,
    verifier: Verifier,
    config: VerifyConfig,
    endpoint: SocketAddr,
}

impl Bench {
    /// A verifier without health checks (unless `interval`), holding one registered endpoint.
    fn new(interval: Option<Duration>) -> Bench {
        let t0 = Instant::now();
        let config = VerifyConfig { probe_interval: interval, ..VerifyConfig::default() };
        let mut verifier = Verifier::new(config, ProberConfig::default());
        let endpoint: SocketAddr = "10.0.1.1:4000".parse().unwrap();
        let change = Change {
            seq: 1,
            kind: ChangeKind::Registered,
            id: uuid::Uuid::from_u128(1),
            service: Arc::from("echo"),
            endpoint,
            source: Source::Unicast(endpoint),
            deadline: t0 + Duration::from_secs(600),
            by_peer: false,
            instance_changed: true,
            aliases: Vec::new(),
            check: Arc::new(crate::protocol::Check::Tcp),
            meta_changed: false,
        };
        verifier.handle_change(t0, &change, |_| true);
        Bench { t0, verifier, config, endpoint }
    }

    /// The probes started since the last call.
    fn started(&mut self) -> Vec<ProbeId> {
        std::iter::from_fn(|| self.verifier.poll_probe())
            .filter_map(|c| match c {
                ProbeCmd::Start { id, addr, .. } => {
                    assert_eq!(addr, self.endpoint);
                    Some(id)
                }
                ProbeCmd::Abort { .. } => None,
            })
            .collect()
    }

    /// Runs the verifier's timers up to `at`, in order.
    fn run_until(&mut self, at: Instant) {
        while let Some(due) = self.verifier.poll_timeout().filter(|&due| due <= at) {
            self.verifier.handle_timeout(due);
        }
    }

    fn events(&mut self) -> Vec<VerifyEvent> {
        std::iter::from_fn(|| self.verifier.poll_event()).collect()
    }

    fn removed(&self, why: &'static str) -> VerifyEvent {
        VerifyEvent::Remove { endpoint: self.endpoint, services: vec![Arc::from("echo")], why }
    }
}

const REFUSED: &str = "reported, and a probe failed";
const TIMED_OUT: &str = "reported, and its probes timed out";

#[test]
fn a_refused_connect_removes_at_once() {
    let mut b = Bench::new(None);
    b.verifier.handle_report(b.t0, b.endpoint);
    let [id] = b.started()[..] else { panic!("one probe") };
    b.verifier.handle_probe(b.t0 + MS, id, ProbeOutcome::Failed(io::ErrorKind::ConnectionRefused));
    assert_eq!(b.events(), [b.removed(REFUSED)]);
    assert_eq!(b.verifier.poll_timeout(), None, "nothing left to do");
}

#[test]
fn a_reset_or_unreachable_connect_removes_at_once() {
    for kind in [io::ErrorKind::ConnectionReset, io::ErrorKind::HostUnreachable, io::ErrorKind::NetworkUnreachable] {
        let mut b = Bench::new(None);
        b.verifier.handle_report(b.t0, b.endpoint);
        let [id] = b.started()[..] else { panic!("one probe") };
        b.verifier.handle_probe(b.t0 + MS, id, ProbeOutcome::Failed(kind));
        assert_eq!(b.events(), [b.removed(REFUSED)], "{kind:?}");
    }
}

#[test]
fn two_timeouts_remove_after_a_backoff() {
    let mut b = Bench::new(None);
    let timeout = b.config.probe_timeout;
    b.verifier.handle_report(b.t0, b.endpoint);
    assert_eq!(b.started().len(), 1);
    // The first probe times out: not conclusive, nothing happens but a re-check later.
    b.run_until(b.t0 + timeout);
    assert_eq!(b.events(), []);
    assert_eq!(b.verifier.poll_timeout(), Some(b.t0 + timeout + b.config.recheck_after));
    b.run_until(b.t0 + timeout + b.config.recheck_after - MS);
    assert_eq!(b.started(), Vec::<ProbeId>::new(), "no probe during the backoff");
    b.run_until(b.t0 + timeout + b.config.recheck_after);
    assert_eq!(b.started().len(), 1, "the re-check");
    b.run_until(b.t0 + 2 * timeout + b.config.recheck_after - MS);
    assert_eq!(b.events(), []);
    b.run_until(b.t0 + 2 * timeout + b.config.recheck_after);
    assert_eq!(b.events(), [b.removed(TIMED_OUT)]);
    // The defaults meet the bound: a black hole is gone within 10 s of the report.
    assert!(2 * timeout + b.config.recheck_after <= Duration::from_secs(10));
}

#[test]
fn a_timeout_then_a_connect_keeps_it() {
    let mut b = Bench::new(None);
    let timeout = b.config.probe_timeout;
    b.verifier.handle_report(b.t0, b.endpoint);
    b.started();
    b.run_until(b.t0 + timeout + b.config.recheck_after);
    let [id] = b.started()[..] else { panic!("the re-check") };
    b.verifier.handle_probe(b.t0 + timeout + b.config.recheck_after + 1000 * MS, id, ProbeOutcome::Connected);
    assert_eq!(b.events(), [VerifyEvent::Kept { endpoint: b.endpoint }]);
    // A later timeout starts from zero again: one is not enough.
    let later = b.t0 + Duration::from_secs(60);
    b.verifier.handle_report(later, b.endpoint);
    b.started();
    b.run_until(later + timeout);
    assert_eq!(b.events(), []);
}

#[test]
fn a_timeout_then_a_refusal_removes() {
    let mut b = Bench::new(None);
    b.verifier.handle_report(b.t0, b.endpoint);
    b.started();
    let recheck = b.t0 + b.config.probe_timeout + b.config.recheck_after;
    b.run_until(recheck);
    let [id] = b.started()[..] else { panic!("the re-check") };
    b.verifier.handle_probe(recheck + MS, id, ProbeOutcome::Failed(io::ErrorKind::ConnectionRefused));
    assert_eq!(b.events(), [b.removed(REFUSED)]);
}

#[test]
fn a_slow_server_survives_a_hundred_reports_during_one_verification() {
    let mut b = Bench::new(None);
    let step = 10 * MS;
    // 100 reports, 10 ms apart: the connect takes a second, and every report while it runs
    // joins the verification.
    b.verifier.handle_report(b.t0, b.endpoint);
    let [id] = b.started()[..] else { panic!("one probe") };
    for k in 1..100 {
        let at = b.t0 + step * k;
        b.run_until(at);
        b.verifier.handle_report(at, b.endpoint);
        assert_eq!(b.started(), Vec::<ProbeId>::new(), "report {k} started a probe");
    }
    b.verifier.handle_probe(b.t0 + 1000 * MS, id, ProbeOutcome::Connected);
    assert_eq!(b.events(), [VerifyEvent::Kept { endpoint: b.endpoint }]);
    assert_eq!((b.verifier.reports(), b.verifier.joined()), (100, 99));
    assert_eq!(b.verifier.prober_stats().started, 1);
}

#[test]
fn reports_during_the_backoff_join_and_start_no_probe() {
    let mut b = Bench::new(None);
    b.verifier.handle_report(b.t0, b.endpoint);
    b.started();
    let timed_out = b.t0 + b.config.probe_timeout;
    b.run_until(timed_out);
    for k in 0..100 {
        b.verifier.handle_report(timed_out + MS * k, b.endpoint);
    }
    assert_eq!(b.started(), Vec::<ProbeId>::new(), "the backoff holds");
    assert_eq!(b.verifier.joined(), 100);
    b.run_until(timed_out + b.config.recheck_after);
    assert_eq!(b.started().len(), 1, "one re-check for all of them");
}

#[test]
fn a_slow_server_reported_for_ever_is_kept_and_probed_one_at_a_time() {
    let mut b = Bench::new(None);
    let mut now = b.t0;
    let mut running: Option<(ProbeId, Instant)> = None;
    let end = b.t0 + Duration::from_secs(60);
    while now < end {
        // A report every 50 ms; every probe connects after a second.
        b.verifier.handle_report(now, b.endpoint);
        for id in b.started() {
            assert!(running.is_none(), "two probes at once");
            running = Some((id, now + Duration::from_secs(1)));
        }
        now += 50 * MS;
        b.run_until(now);
        if let Some((id, at)) = running.filter(|&(_, at)| at <= now) {
            b.verifier.handle_probe(at, id, ProbeOutcome::Connected);
            running = None;
        }
        assert!(b.events().iter().all(|e| matches!(e, VerifyEvent::Kept { .. })), "removed at {:?}", now - b.t0);
    }
    // A probe per second plus cooldown, not one per report.
    let started = b.verifier.prober_stats().started;
    let per_round = Duration::from_secs(1) + b.config.report_cooldown;
    assert!(started <= 60 / per_round.as_secs() + 1, "{started} probes");
}

#[test]
fn a_health_check_timeout_counts_for_a_waiting_verification() {
    // Health checks every 100 ms: their probes time out too, and each counts.
    let mut b = Bench::new(Some(100 * MS));
    b.run_until(b.t0 + 100 * MS);
    b.started();
    b.verifier.handle_report(b.t0 + 100 * MS, b.endpoint);
    assert_eq!(b.started(), Vec::<ProbeId>::new(), "joins the health check's probe");
    // The first timeout counts for both; the next health check's probe times out too: two
    // failures remove it (by either rule), once.
    b.run_until(b.t0 + 4 * b.config.probe_timeout);
    let events = b.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(events[0], VerifyEvent::Remove { .. }));
}

#[test]
fn a_probe_this_process_could_not_make_gives_no_verdict() {
    let mut b = Bench::new(None);
    b.verifier.handle_report(b.t0, b.endpoint);
    let [id] = b.started()[..] else { panic!("one probe") };
    b.verifier.handle_probe(b.t0 + MS, id, ProbeOutcome::Local(io::ErrorKind::OutOfMemory));
    assert_eq!(b.events(), []);
    // No cooldown: the next report tries again.
    b.verifier.handle_report(b.t0 + 2 * MS, b.endpoint);
    assert_eq!(b.started().len(), 1);
}

#[test]
fn an_unregistered_endpoint_is_not_rechecked() {
    let mut b = Bench::new(None);
    b.verifier.handle_report(b.t0, b.endpoint);
    b.started();
    b.run_until(b.t0 + b.config.probe_timeout);
    let change = Change {
        seq: 2,
        kind: ChangeKind::Expired,
        id: uuid::Uuid::from_u128(1),
        service: Arc::from("echo"),
        endpoint: b.endpoint,
        source: Source::Unicast(b.endpoint),
        deadline: b.t0,
        by_peer: false,
        instance_changed: true,
        aliases: Vec::new(),
        check: Arc::new(crate::protocol::Check::Tcp),
        meta_changed: false,
    };
    b.verifier.handle_change(b.t0 + b.config.probe_timeout, &change, |_| true);
    b.run_until(b.t0 + Duration::from_secs(60));
    assert_eq!(b.started(), Vec::<ProbeId>::new(), "no re-check of what left the table");
    assert_eq!(b.verifier.poll_timeout(), None);
}

// The same on the simulated network: three brokers, reports at all of them, forwarded to the
// instance's owner.

use super::replicate_tests::{cluster, live, quiet, stats, text};

#[test]
fn a_one_second_connect_survives_a_hundred_reports_at_three_brokers() {
    let mut sim = cluster(3, 11, quiet(), None);
    let endpoint: SocketAddr = "10.0.1.1:4000".parse().unwrap();
    sim.listening.insert(endpoint);
    sim.slow.insert(endpoint, Duration::from_secs(1));
    let id = text(&mut sim, 0, 0, "register echo 4000 check=tcp").unwrap();
    sim.run_for(5 * MS);
    for k in 0..100 {
        if k % 10 == 0 {
            // The server heartbeats: its lease outlives the test.
            assert_eq!(text(&mut sim, 0, 0, &format!("heartbeat {id}")).as_deref(), Some("OK"));
        }
        assert_eq!(text(&mut sim, k, k % 3, "report echo 10.0.1.1:4000").as_deref(), Some("OK"), "report {k}");
        sim.run_for(100 * MS);
    }
    text(&mut sim, 0, 0, &format!("heartbeat {id}")).unwrap();
    sim.run_for(Duration::from_secs(3));
    for node in 0..3 {
        assert_eq!(live(&mut sim, node, "echo"), [endpoint], "node {node}");
        assert_eq!(stats(&mut sim, node)["removed_unreachable"], 0);
    }
    // One probe at a time, each followed by a cooldown: about one per 3 s of reports.
    let probes: u64 = (0..3).map(|i| stats(&mut sim, i)["probes"]).sum();
    assert!((1..=5).contains(&probes), "{probes} probes for 100 reports over 10 s");
}

#[test]
fn a_black_holed_instance_goes_after_two_timeouts_within_ten_seconds() {
    let mut sim = cluster(3, 12, quiet(), None);
    let endpoint: SocketAddr = "10.0.1.1:4000".parse().unwrap();
    sim.black_holes.insert(endpoint);
    let id = text(&mut sim, 0, 0, "register echo 4000 check=tcp").unwrap();
    sim.run_for(5 * MS);
    let config = VerifyConfig::default();
    let reported = sim.now;
    assert_eq!(text(&mut sim, 1, 1, "report echo 10.0.1.1:4000").as_deref(), Some("OK"));
    // Still listed after the first timeout, and through the backoff (the server heartbeats:
    // its lease does not run out meanwhile).
    let first_verdict = config.probe_timeout + config.recheck_after + config.probe_timeout - 50 * MS;
    while sim.now - reported < first_verdict {
        assert_eq!(text(&mut sim, 0, 0, &format!("heartbeat {id}")).as_deref(), Some("OK"));
        sim.run_for((500 * MS).min(first_verdict - (sim.now - reported)));
    }
    for node in 0..3 {
        assert_eq!(live(&mut sim, node, "echo"), [endpoint], "node {node} after {:?}", sim.now - reported);
    }
    while (0..3).any(|node| !live(&mut sim, node, "echo").is_empty()) {
        assert!(sim.now - reported <= Duration::from_secs(10), "still listed 10 s after the report");
        text(&mut sim, 0, 0, &format!("heartbeat {id}"));
        sim.run_for(10 * MS);
    }
    assert_eq!(
        stats(&mut sim, 0)["removed_unreachable"]
            + stats(&mut sim, 1)["removed_unreachable"]
            + stats(&mut sim, 2)["removed_unreachable"],
        1,
        "removed for the report, not expired"
    );
    eprintln!("gone everywhere {:?} after the report", sim.now - reported);
}

#[test]
fn a_refused_instance_goes_everywhere_within_300_ms() {
    let mut sim = cluster(3, 13, quiet(), None);
    text(&mut sim, 0, 0, "register echo 4000 check=tcp").unwrap();
    sim.run_for(5 * MS);
    assert_eq!(text(&mut sim, 1, 2, "report echo 10.0.1.1:4000").as_deref(), Some("OK"));
    sim.run_for(300 * MS);
    for node in 0..3 {
        assert_eq!(live(&mut sim, node, "echo"), [], "node {node}");
    }
}
