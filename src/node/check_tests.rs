//! Declared checks on the simulated network: an instance that declares none is never probed and
//! its reports are only counted; the check travels with the lease to every broker (deltas and
//! catch-up pages); the verifier probes an endpoint with the check it declares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::replicate_tests::{cluster, live, quiet, restart, stats, text};
use super::verify::{Verifier, VerifyConfig, VerifyEvent};
use crate::core::{ProbeCmd, ProbeOutcome};
use crate::probe::ProberConfig;
use crate::protocol::{Check, Source};
use crate::registry::{Change, ChangeKind, SharedCheck};

/// The `instances` line of `endpoint` at broker `node`, from `check=` on.
fn listed_check(sim: &mut crate::sim::Sim, node: usize, service: &str) -> Vec<String> {
    let page = text(sim, 0, node, &format!("instances {service}")).unwrap();
    page.lines().skip(1).map(|line| line.split(" check=").nth(1).unwrap_or("").to_owned()).collect()
}

#[test]
fn instances_without_a_check_are_never_probed_and_reports_of_them_only_counted() {
    let interval = Duration::from_secs(1);
    let mut sim = cluster(3, 21, quiet(), Some(interval));
    // Nothing listens anywhere: UDP-only services, and dead TCP ones.
    let mut ids = Vec::new();
    for port in 0..20u16 {
        let check = if port % 2 == 0 { "" } else { " check=tcp" };
        let line = format!("register udp {}{check}", 5000 + port);
        ids.push(text(&mut sim, 0, usize::from(port % 3), &line).unwrap());
    }
    let explicit = text(&mut sim, 0, 0, "register udp 6000 check=none").unwrap();
    sim.run_for(Duration::from_millis(50));
    for round in 0..10 {
        for id in ids.iter().chain([&explicit]) {
            // Heartbeats keep the leases: only a probe could remove one.
            text(&mut sim, 0, round % 3, &format!("heartbeat {id}"));
        }
        for port in (0..20u16).step_by(2) {
            let reply = text(&mut sim, 1 + round, round % 3, &format!("report udp 10.0.1.1:{}", 5000 + port));
            assert_eq!(reply.as_deref(), Some("OK"));
        }
        sim.run_for(interval);
    }
    for node in 0..3 {
        let listed = live(&mut sim, node, "udp");
        let kept: Vec<SocketAddr> =
            (0..20u16).step_by(2).chain([1000]).map(|port| SocketAddr::from(([10, 0, 1, 1], 5000 + port))).collect();
        let mut kept = kept;
        kept.sort();
        assert_eq!(listed, kept, "node {node}: the declared-none instances stay, the dead tcp ones go");
    }
    let unchecked: u64 = (0..3).map(|node| stats(&mut sim, node)["reports_unchecked"]).sum();
    let probes: u64 = (0..3).map(|node| stats(&mut sim, node)["probes"]).sum();
    assert_eq!(unchecked, 100, "every report of an unchecked instance is counted");
    // The ten dead tcp instances: two failed rounds each, nothing for the others.
    assert!((10..=30).contains(&probes), "{probes} probes");
}

#[test]
fn the_check_travels_with_the_lease_and_a_refresh_changes_it() {
    let mut sim = cluster(3, 22, quiet(), None);
    text(&mut sim, 0, 0, "register web 4000 check=http:/health").unwrap();
    text(&mut sim, 1, 1, "register plain 4000").unwrap();
    sim.run_for(Duration::from_millis(50));
    for node in 0..3 {
        assert_eq!(listed_check(&mut sim, node, "web"), ["http:/health"], "node {node}");
        assert_eq!(listed_check(&mut sim, node, "plain"), ["none"], "node {node}");
    }
    // The same source registers again with another check: the lease's check follows.
    text(&mut sim, 0, 2, "register web 4000 check=tcp").unwrap();
    // A renewal travels within the refresh window (200 ms).
    sim.run_for(Duration::from_millis(300));
    for node in 0..3 {
        assert_eq!(listed_check(&mut sim, node, "web"), ["tcp"], "node {node}");
    }
    text(&mut sim, 0, 1, "register web 4000 check=http:/ready").unwrap();
    // A restarted broker gets it in its catch-up pages.
    sim.crash(2);
    sim.run_for(Duration::from_secs(1));
    restart(&mut sim, 2, 3, 99, None);
    let restarted = sim.now;
    while !sim.node(2).is_complete() {
        assert!(sim.now - restarted < Duration::from_secs(1), "caught up within a second");
        sim.run_for(Duration::from_millis(1));
    }
    assert_eq!(listed_check(&mut sim, 2, "web"), ["http:/ready"]);
    assert_eq!(listed_check(&mut sim, 2, "plain"), ["none"]);
}

fn change(t0: Instant, kind: ChangeKind, service: &str, endpoint: SocketAddr, check: Check<&str>) -> Change {
    Change {
        seq: 1,
        kind,
        id: uuid::Uuid::from_u128(service.len() as u128),
        service: Arc::from(service),
        endpoint,
        source: Source::Unicast(endpoint),
        deadline: t0 + Duration::from_secs(600),
        by_peer: false,
        instance_changed: true,
        aliases: Vec::new(),
        check: SharedCheck::new(check.to_owned_check()),
        meta_changed: false,
    }
}

fn started(verifier: &mut Verifier) -> Vec<(u64, SocketAddr, SharedCheck)> {
    std::iter::from_fn(|| verifier.poll_probe())
        .filter_map(|c| match c {
            ProbeCmd::Start { id, addr, check } => Some((id, addr, check)),
            ProbeCmd::Abort { .. } => None,
        })
        .collect()
}

#[test]
fn an_endpoint_is_probed_with_its_declared_check_and_removed_only_where_one_was_declared() {
    let t0 = Instant::now();
    let interval = Duration::from_secs(1);
    let config = VerifyConfig { probe_interval: Some(interval), ..VerifyConfig::default() };
    let mut verifier = Verifier::new(config, ProberConfig::default());
    let endpoint: SocketAddr = "10.0.1.1:4000".parse().unwrap();
    verifier.handle_change(t0, &change(t0, ChangeKind::Registered, "udp", endpoint, Check::None), |_| true);
    verifier.run_for_test(t0 + interval * 3);
    assert!(started(&mut verifier).is_empty(), "no check declared, none run");
    assert!(!verifier.is_checked("udp", endpoint));

    // The same endpoint in another service, with an HTTP check: probed with it.
    let http = Check::Http("/health");
    verifier.handle_change(t0, &change(t0, ChangeKind::Registered, "web", endpoint, http), |_| true);
    assert!(verifier.is_checked("web", endpoint));
    let mut removed = None;
    for round in 1..=2u32 {
        verifier.run_for_test(t0 + interval * (3 + round));
        let probes = started(&mut verifier);
        assert_eq!(probes.len(), 1, "round {round}");
        let (id, addr, check) = &probes[0];
        assert_eq!((*addr, check.as_deref()), (endpoint, http));
        verifier.handle_probe(t0 + interval * (3 + round), *id, ProbeOutcome::Failed(std::io::ErrorKind::Other));
        removed = removed.or(verifier.poll_event());
    }
    // Two failures: removed from the service that declared the check, not from the other.
    assert_eq!(
        removed,
        Some(VerifyEvent::Remove { endpoint, services: vec![Arc::from("web")], why: "health checks failed" })
    );
}
