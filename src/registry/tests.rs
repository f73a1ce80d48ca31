use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use std::net::IpAddr;

const TTL: Duration = Duration::from_secs(5);
const NS: Duration = Duration::from_nanos(1);

fn counter_ids() -> impl FnMut() -> Uuid + Send + 'static {
    let mut next = 0u128;
    move || {
        next += 1;
        Uuid::from_u128(next)
    }
}

fn registry() -> Registry {
    Registry::new(Config::default(), counter_ids())
}

/// The source of every registration in these tests unless one says otherwise.
const SERVER: Source = Source::Unicast(SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000));

fn register(r: &mut Registry, now: Instant, service: &str, endpoint: SocketAddr) -> Result<Registration, Rejection> {
    r.register(now, service, endpoint, SERVER)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn live(registry: &mut Registry, now: Instant, service: &str) -> Vec<SocketAddr> {
    let mut all: Vec<_> = registry.query(now, service).map(Iterator::collect).unwrap_or_default();
    all.sort();
    all
}

#[test]
fn an_instance_expires_exactly_at_the_ttl() {
    let mut r = registry();
    let t0 = Instant::now();
    let id = register(&mut r, t0, "echo", addr(4000)).unwrap().id;
    assert_eq!(r.poll_timeout(), Some(t0 + TTL));

    assert_eq!(live(&mut r, t0 + TTL - NS, "echo"), [addr(4000)]);
    assert!(r.query(t0 + TTL, "echo").is_none());
    assert_eq!(r.heartbeat(t0 + TTL, id), Err(NotFound));
    assert_eq!(r.len(), 0);
    assert_eq!(r.service_count(), 0);
    assert_eq!(r.expired_total(), 1);
    assert_eq!(r.poll_timeout(), None);
}

/// After a query found nothing due before the first lease's deadline, a lease that runs out
/// sooner (here one dated a second earlier, as a peer's lease may be) still runs out on time.
#[test]
fn a_lease_running_out_sooner_than_the_one_looked_at_still_runs_out_on_time() {
    let mut r = registry();
    let t0 = Instant::now() + Duration::from_secs(10);
    register(&mut r, t0, "echo", addr(4000)).unwrap();
    assert_eq!(live(&mut r, t0 + NS, "echo"), [addr(4000)]);
    register(&mut r, t0 - Duration::from_secs(1), "echo", addr(4001)).unwrap();
    let sooner = t0 - Duration::from_secs(1) + TTL;
    assert_eq!(live(&mut r, sooner - NS, "echo"), [addr(4000), addr(4001)]);
    assert_eq!(live(&mut r, sooner, "echo"), [addr(4000)]);
    assert_eq!(r.expired_total(), 1);
    assert_eq!(live(&mut r, t0 + TTL - NS, "echo"), [addr(4000)]);
    assert!(r.query(t0 + TTL, "echo").is_none());
}

#[test]
fn a_heartbeat_just_before_the_ttl_keeps_it_alive() {
    let mut r = registry();
    let t0 = Instant::now();
    let id = register(&mut r, t0, "echo", addr(4000)).unwrap().id;
    let t1 = t0 + TTL - NS;
    r.heartbeat(t1, id).unwrap();
    assert_eq!(r.poll_timeout(), Some(t1 + TTL));
    assert_eq!(live(&mut r, t1 + TTL - NS, "echo"), [addr(4000)]);
    assert!(r.query(t1 + TTL, "echo").is_none());
}

#[test]
fn registering_again_refreshes_and_keeps_the_id() {
    let mut r = registry();
    let t0 = Instant::now();
    let first = register(&mut r, t0, "echo", addr(4000)).unwrap();
    assert!(first.created);
    let again = register(&mut r, t0 + TTL / 2, "echo", addr(4000)).unwrap();
    assert_eq!(again, Registration { id: first.id, created: false });
    assert_eq!(r.len(), 1);
    assert_eq!(live(&mut r, t0 + TTL, "echo"), [addr(4000)]);

    let other_port = register(&mut r, t0 + TTL / 2, "echo", addr(4001)).unwrap();
    let other_service = register(&mut r, t0 + TTL / 2, "upper", addr(4000)).unwrap();
    assert!(other_port.created && other_service.created);
    assert_ne!(other_port.id, first.id);
    assert_ne!(other_service.id, first.id);
    assert_eq!(r.len(), 3);
    assert_eq!(r.lease_id("upper", addr(4000), SERVER), Some(other_service.id));
}

#[test]
fn deregister_removes_at_once() {
    let mut r = registry();
    let t0 = Instant::now();
    let a = register(&mut r, t0, "echo", addr(4000)).unwrap().id;
    let b = register(&mut r, t0, "echo", addr(4001)).unwrap().id;
    r.deregister(t0, a).unwrap();
    assert_eq!(r.deregister(t0, a), Err(NotFound));
    assert_eq!(r.heartbeat(t0, a), Err(NotFound));
    assert_eq!(live(&mut r, t0, "echo"), [addr(4001)]);
    r.deregister(t0, b).unwrap();
    assert!(r.query(t0, "echo").is_none());
    assert_eq!(r.service_count(), 0);
    assert_eq!(r.expired_total(), 0);
}

#[test]
fn queries_rotate_evenly() {
    let mut r = registry();
    let t0 = Instant::now();
    for port in [4000, 4001, 4002] {
        register(&mut r, t0, "echo", addr(port)).unwrap();
    }
    let mut firsts = HashMap::new();
    for _ in 0..300 {
        let order: Vec<_> = r.query(t0, "echo").unwrap().collect();
        assert_eq!(order.len(), 3);
        *firsts.entry(order[0]).or_insert(0) += 1;
    }
    assert_eq!(firsts.values().copied().collect::<Vec<_>>(), [100, 100, 100]);
}

#[test]
fn successive_queries_start_one_further_on() {
    let mut r = registry();
    let t0 = Instant::now();
    for port in [4000, 4001, 4002] {
        register(&mut r, t0, "echo", addr(port)).unwrap();
    }
    let rounds: Vec<Vec<_>> = (0..4).map(|_| r.query(t0, "echo").unwrap().collect()).collect();
    assert_eq!(rounds[0], [addr(4000), addr(4001), addr(4002)]);
    assert_eq!(rounds[1], [addr(4001), addr(4002), addr(4000)]);
    assert_eq!(rounds[2], [addr(4002), addr(4000), addr(4001)]);
    assert_eq!(rounds[3], rounds[0]);
}

#[test]
fn a_prefix_of_each_answer_still_hands_out_every_instance() {
    let mut r = registry();
    let t0 = Instant::now();
    for port in 4000..4010 {
        register(&mut r, t0, "echo", addr(port)).unwrap();
    }
    let mut seen = HashMap::new();
    for _ in 0..10 {
        for instance in r.query(t0, "echo").unwrap().take(2) {
            *seen.entry(instance).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 10);
    assert!(seen.values().all(|&n| n == 2), "{seen:?}");
}

#[test]
fn names_are_checked_against_the_limits() {
    let limits = Limits { max_name_len: 8, name_punctuation: "-".into(), max_instances: 10, ..Limits::default() };
    let mut r = Registry::new(Config { ttl: TTL, limits, ..Config::default() }, counter_ids());
    let t0 = Instant::now();
    assert!(register(&mut r, t0, "echo-v2", addr(1)).is_ok());
    assert!(register(&mut r, t0, "abcdefgh", addr(1)).is_ok());
    assert_eq!(register(&mut r, t0, "abcdefghi", addr(1)), Err(Rejection::NameTooLong { len: 9, max: 8 }));
    assert!(matches!(register(&mut r, t0, "", addr(1)), Err(Rejection::BadName { .. })));
    let err = register(&mut r, t0, "echo_v2", addr(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad service name \"echo_v2\": '_' is not allowed; use ASCII letters, digits and \"-\""
    );
    assert!(matches!(register(&mut r, t0, "écho", addr(1)), Err(Rejection::BadName { .. })));
    assert_eq!(r.len(), 2);
}

#[test]
fn endpoints_must_be_reachable() {
    let mut r = registry();
    let t0 = Instant::now();
    let unusable = |e: Result<Registration, Rejection>| matches!(e, Err(Rejection::UnusableIp { .. }));
    assert!(unusable(register(&mut r, t0, "echo", "0.0.0.0:80".parse().unwrap())));
    assert!(unusable(register(&mut r, t0, "echo", "[::]:80".parse().unwrap())));
    assert!(unusable(register(&mut r, t0, "echo", "239.1.2.3:80".parse().unwrap())));
    assert!(unusable(register(&mut r, t0, "echo", "255.255.255.255:80".parse().unwrap())));
    assert!(matches!(register(&mut r, t0, "echo", addr(0)), Err(Rejection::BadPort { .. })));
    assert!(register(&mut r, t0, "echo", "[fe80::1]:80".parse().unwrap()).is_ok());
    assert_eq!(r.len(), 1);
}

#[test]
fn a_full_table_refuses_new_entries_but_refreshes_old_ones() {
    let limits = Limits { max_instances: 2, ..Limits::default() };
    let mut r = Registry::new(Config { ttl: TTL, limits, ..Config::default() }, counter_ids());
    let t0 = Instant::now();
    register(&mut r, t0, "echo", addr(1)).unwrap();
    let b = register(&mut r, t0 + TTL / 2, "echo", addr(2)).unwrap().id;
    assert_eq!(register(&mut r, t0, "echo", addr(3)), Err(Rejection::Full { max: 2 }));
    assert_eq!(register(&mut r, t0, "echo", addr(3)).unwrap_err().to_string(), "full: 2 instances registered");
    assert!(!register(&mut r, t0, "echo", addr(1)).unwrap().created);
    r.heartbeat(t0 + TTL / 2, b).unwrap();
    // Once the first entry expires there is room again.
    assert!(register(&mut r, t0 + TTL, "echo", addr(3)).unwrap().created);
    assert_eq!(r.len(), 2);
}

#[test]
fn the_change_log_tells_every_change_in_order_with_numbers() {
    let mut r = registry();
    let t0 = Instant::now();
    let quiet = register(&mut r, t0, "quiet", addr(9)).unwrap().id;
    let a = register(&mut r, t0, "echo", addr(1)).unwrap().id;
    let b = register(&mut r, t0 + NS, "echo", addr(2)).unwrap().id;
    r.heartbeat(t0 + NS, a).unwrap();
    r.deregister(t0 + NS, b).unwrap();
    r.handle_timeout(t0 + NS + TTL);
    let changes: Vec<_> = std::iter::from_fn(|| r.poll_change()).collect();
    let kinds: Vec<_> = changes.iter().map(|c| (c.kind, c.id, c.instance_changed)).collect();
    assert_eq!(
        kinds,
        [
            (ChangeKind::Registered, quiet, true),
            (ChangeKind::Registered, a, true),
            (ChangeKind::Registered, b, true),
            (ChangeKind::Refreshed, a, false),
            (ChangeKind::Removed(RemoveReason::Deregistered), b, true),
            (ChangeKind::Expired, quiet, true),
            (ChangeKind::Expired, a, true),
        ]
    );
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(changes[3].deadline, t0 + NS + TTL, "a refresh carries the new deadline");
    assert_eq!((&*changes[4].service, changes[4].endpoint, changes[4].source), ("echo", addr(2), SERVER));
    assert!(changes.iter().all(|c| !c.by_peer));
}

#[test]
fn the_change_log_is_bounded_and_a_gap_shows_in_the_numbers() {
    let config = Config { change_log_capacity: 3, ..Config::default() };
    let mut r = Registry::new(config, counter_ids());
    let t0 = Instant::now();
    for port in 1..=5 {
        register(&mut r, t0, "echo", addr(port)).unwrap();
    }
    assert_eq!(r.changes_dropped(), 2);
    let seqs: Vec<u64> = std::iter::from_fn(|| r.poll_change()).map(|c| c.seq).collect();
    assert_eq!(seqs, [3, 4, 5], "the oldest went; the numbers show the gap");
    register(&mut r, t0, "echo", addr(6)).unwrap();
    assert_eq!(r.poll_change().map(|c| c.seq), Some(6));
}

#[test]
fn expiry_follows_deadlines_not_registration_order() {
    let mut r = registry();
    let t0 = Instant::now();
    let a = register(&mut r, t0, "echo", addr(1)).unwrap().id;
    let b = register(&mut r, t0, "echo", addr(2)).unwrap().id;
    r.heartbeat(t0 + Duration::from_secs(1), a).unwrap();
    assert_eq!(r.poll_timeout(), Some(t0 + TTL));
    while r.poll_change().is_some() {}
    r.handle_timeout(t0 + TTL);
    assert_eq!(r.poll_change().map(|e| (e.kind, e.id)), Some((ChangeKind::Expired, b)));
    assert_eq!(r.poll_change(), None);
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(1) + TTL));
}

/// One step of a random workload for the model test.
#[derive(Debug, Clone)]
enum Op {
    Register { service: u8, port: u16 },
    Heartbeat { pick: usize },
    Deregister { pick: usize },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 1u16..6).prop_map(|(service, port)| Op::Register { service, port }),
        any::<usize>().prop_map(|pick| Op::Heartbeat { pick }),
        any::<usize>().prop_map(|pick| Op::Deregister { pick }),
        (0u64..3000).prop_map(|ms| Op::Advance { ms }),
    ]
}

proptest! {
    /// The indexes agree with a naive model (a list of entries with their last renewal) after
    /// any sequence of operations.
    #[test]
    fn the_table_matches_a_naive_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut r = registry();
        let t0 = Instant::now();
        let mut now = t0;
        // (service, port) -> (id, last renewal)
        let mut model: HashMap<(u8, u16), (Uuid, Instant)> = HashMap::new();
        let mut known_ids: Vec<Uuid> = Vec::new();
        for op in ops {
            model.retain(|_, (_, last)| now < *last + TTL);
            match op {
                Op::Register { service, port } => {
                    let reg = register(&mut r, now, &format!("s{service}"), addr(port)).unwrap();
                    let existed = model.contains_key(&(service, port));
                    prop_assert_eq!(reg.created, !existed);
                    let entry = model.entry((service, port)).or_insert((reg.id, now));
                    prop_assert_eq!(entry.0, reg.id);
                    entry.1 = now;
                    known_ids.push(reg.id);
                }
                Op::Heartbeat { pick } if !known_ids.is_empty() => {
                    let id = known_ids[pick % known_ids.len()];
                    let found = model.values_mut().find(|(i, _)| *i == id);
                    prop_assert_eq!(r.heartbeat(now, id).is_ok(), found.is_some());
                    if let Some(entry) = found { entry.1 = now; }
                }
                Op::Deregister { pick } if !known_ids.is_empty() => {
                    let id = known_ids[pick % known_ids.len()];
                    let before = model.len();
                    model.retain(|_, (i, _)| *i != id);
                    prop_assert_eq!(r.deregister(now, id).is_ok(), model.len() < before);
                }
                Op::Advance { ms } => now += Duration::from_millis(ms),
                _ => {}
            }
            model.retain(|_, (_, last)| now < *last + TTL);
            for service in 0..3u8 {
                let mut expected: Vec<_> = model.keys().filter(|(s, _)| *s == service).map(|&(_, p)| addr(p)).collect();
                expected.sort();
                prop_assert_eq!(live(&mut r, now, &format!("s{service}")), expected.clone());
                // The text forms follow the members through every removal.
                let mut expected: Vec<String> = expected.iter().map(ToString::to_string).collect();
                let block = r.query_text_block(now, &format!("s{service}"), 1 << 20);
                let mut texts: Vec<String> = block
                    .map(|(a, b)| String::from_utf8([a, b].concat()).unwrap().split(' ').map(String::from).collect())
                    .unwrap_or_default();
                texts.sort();
                expected.sort();
                prop_assert_eq!(&texts, &expected);
                if let Some(pairs) = r.query_text(now, &format!("s{service}")) {
                    for (endpoint, text) in pairs {
                        prop_assert_eq!(endpoint.to_string(), text);
                    }
                }
            }
            prop_assert_eq!(r.len(), model.len());
            prop_assert_eq!(r.next_expiry(), model.values().map(|&(_, last)| last + TTL).min());
        }
    }
}

/// An instance leaving mends its service's text block instead of leaving it to be rewritten:
/// a text query after churn formats nothing (rewriting 1,000 endpoints cost a query 114 µs
/// where it otherwise takes 67 ns), and its answer is what it would be without the churn.
#[test]
fn a_text_query_after_a_removal_formats_nothing() {
    let mut r = registry();
    let t0 = Instant::now();
    let ids: Vec<Uuid> = (0..1000u16).map(|k| register(&mut r, t0, "big", addr(10_000 + k)).unwrap().id).collect();
    for (step, id) in [*ids.last().unwrap(), ids[0], ids[500]].into_iter().enumerate() {
        let extra = register(&mut r, t0, "big", addr(9000 + step as u16)).unwrap().id;
        r.deregister(t0, extra).unwrap();
        r.deregister(t0, id).unwrap();
        let before = members::formatted();
        let (a, b) = r.query_text_block(t0, "big", 1 << 20).unwrap();
        let mut texts: Vec<String> = String::from_utf8([a, b].concat()).unwrap().split(' ').map(String::from).collect();
        assert_eq!(members::formatted(), before, "the query formatted endpoints");
        texts.sort();
        let mut want: Vec<String> = live(&mut r, t0, "big").iter().map(ToString::to_string).collect();
        want.sort();
        assert_eq!(texts, want);
        assert_eq!(texts.len(), 999 - step);
    }
}

/// The sizes the module docs' memory table gives.
#[test]
fn a_lease_and_its_slot_are_as_small_as_the_docs_say() {
    assert_eq!(std::mem::size_of::<super::Lease>(), 96);
}

/// Removals leave their expiry entries behind; with a long TTL they would pile up, so the
/// heap is rebuilt once they outnumber the live leases.
#[test]
fn removed_leases_do_not_pile_up_in_the_expiry_heap() {
    let config = Config { ttl: Duration::from_secs(3600), ..Config::default() };
    let mut r = Registry::new(config, counter_ids());
    let t0 = Instant::now();
    let source = Source::Unicast("127.0.0.1:50000".parse().unwrap());
    let keep = r.register(t0, "echo", "127.0.0.1:3999".parse().unwrap(), source).unwrap().id;
    for k in 0..5000u16 {
        let endpoint = SocketAddr::from(([127, 0, 0, 1], 4000 + k));
        let id = r.register(t0, "echo", endpoint, source).unwrap().id;
        r.deregister(t0, id).unwrap();
        assert!(r.expiry.orphans() <= 1 + 1024 + 1);
    }
    assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(3600)));
    assert!(r.heartbeat(t0 + Duration::from_secs(10), keep).is_ok());
    assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(3610)));
}
