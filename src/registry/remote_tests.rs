//! Leases per source, tombstones, remote leases, merges and pages, with injected time.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;

const TTL: Duration = Duration::from_secs(5);

fn ids_from(base: u128) -> impl FnMut() -> Uuid + Send + 'static {
    let mut next = base;
    move || {
        next += 1;
        Uuid::from_u128(next)
    }
}

fn registry() -> Registry {
    Registry::new(Config::default(), ids_from(0))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn from(ip: [u8; 4], port: u16) -> Source {
    Source::Unicast(SocketAddr::from((ip, port)))
}

fn view(id: Uuid, service: &str, endpoint: SocketAddr, source: Source, ttl_left: Duration) -> LeaseView<'_> {
    LeaseView { id, service, endpoint, source, ttl_left, aliases: &[], check: crate::protocol::Check::None, meta: None }
}

fn live(r: &mut Registry, now: Instant, service: &str) -> Vec<SocketAddr> {
    let mut all: Vec<_> = r.query(now, service).map(Iterator::collect).unwrap_or_default();
    all.sort();
    all
}

#[test]
fn each_source_gets_a_lease_of_its_own_and_only_its_own_id() {
    let mut r = registry();
    let t0 = Instant::now();
    let owner = from([127, 0, 0, 1], 40000);
    let other = from([127, 0, 0, 2], 40000);
    let restarted = from([127, 0, 0, 1], 40001);

    let first = r.register(t0, "echo", addr(4000), owner).unwrap();
    assert_eq!(r.register(t0, "echo", addr(4000), owner).unwrap(), Registration { id: first.id, created: false });
    let second = r.register(t0, "echo", addr(4000), other).unwrap();
    assert!(second.created);
    assert_ne!(second.id, first.id, "another source never learns the owner's id");
    let third = r.register(t0, "echo", addr(4000), restarted).unwrap();
    assert!(third.created, "a restarted server (new port) registers at once");
    assert_eq!((r.len(), r.lease_count()), (1, 3));
    assert_eq!(live(&mut r, t0, "echo"), [addr(4000)], "the instance is listed once");

    r.deregister(t0, second.id).unwrap();
    assert_eq!(live(&mut r, t0, "echo"), [addr(4000)], "the other source cannot remove the owner's lease");
    r.deregister(t0, first.id).unwrap();
    assert_eq!(live(&mut r, t0, "echo"), [addr(4000)]);
    r.deregister(t0, third.id).unwrap();
    assert!(r.query(t0, "echo").is_none());

    let flags: Vec<_> = std::iter::from_fn(|| r.poll_change()).map(|c| (c.kind, c.instance_changed)).collect();
    let removed = ChangeKind::Removed(RemoveReason::Deregistered);
    assert_eq!(
        flags,
        [
            (ChangeKind::Registered, true),
            (ChangeKind::Refreshed, false),
            (ChangeKind::Registered, false),
            (ChangeKind::Registered, false),
            (removed, false),
            (removed, false),
            (removed, true),
        ]
    );
}

#[test]
fn leases_on_one_instance_expire_on_their_own() {
    let mut r = registry();
    let t0 = Instant::now();
    let a = r.register(t0, "echo", addr(1), from([10, 0, 0, 1], 1)).unwrap().id;
    r.register(t0 + TTL / 2, "echo", addr(1), from([10, 0, 0, 2], 1)).unwrap();
    r.register(t0, "echo", addr(2), from([10, 0, 0, 1], 1)).unwrap();
    assert_eq!(r.source_count("10.0.0.1".parse().unwrap()), 2);
    r.handle_timeout(t0 + TTL);
    assert_eq!(live(&mut r, t0 + TTL, "echo"), [addr(1)], "held by the later lease");
    assert_eq!(r.heartbeat(t0 + TTL, a), Err(NotFound));
    assert_eq!(r.source_count("10.0.0.1".parse().unwrap()), 0);
    assert_eq!(r.source_count("10.0.0.2".parse().unwrap()), 1);
    assert!(r.query(t0 + TTL + TTL / 2, "echo").is_none());
    assert_eq!((r.len(), r.lease_count(), r.expired_total()), (0, 0, 3));
}

#[test]
fn removing_an_instance_takes_every_lease_and_a_goodbye_only_its_own() {
    let mut r = registry();
    let t0 = Instant::now();
    let announcer = Source::Announcer { ip: "127.0.0.1".parse().unwrap(), origin: 7 };
    let stranger = Source::Announcer { ip: "127.0.0.1".parse().unwrap(), origin: 8 };
    let unicast = from([127, 0, 0, 1], 5);
    r.register(t0, "echo", addr(1), announcer).unwrap();
    let kept = r.register(t0, "echo", addr(1), unicast).unwrap().id;
    assert_eq!(r.remove_owned(t0, "echo", addr(1), stranger, RemoveReason::Goodbye), Err(NotFound));
    assert!(r.remove_owned(t0, "echo", addr(1), announcer, RemoveReason::Goodbye).is_ok());
    assert!(r.contains(t0, "echo", addr(1)), "the unicast lease holds it");
    r.register(t0, "echo", addr(1), announcer).unwrap();
    assert_eq!(r.remove_instance(t0, "echo", addr(1), RemoveReason::Unreachable), 2);
    assert!(!r.contains(t0, "echo", addr(1)));
    assert!(r.is_tombstoned(kept));
    assert_eq!(r.remove_instance(t0, "echo", addr(1), RemoveReason::Unreachable), 0);
}

#[test]
fn a_removal_leaves_a_tombstone_for_a_while_and_expiry_none() {
    let config = Config { tombstone_ttl: Duration::from_secs(30), ..Config::default() };
    let mut r = Registry::new(config, ids_from(0));
    let t0 = Instant::now();
    let source = from([127, 0, 0, 1], 1);
    let removed = r.register(t0, "echo", addr(1), source).unwrap().id;
    let expired = r.register(t0, "echo", addr(2), source).unwrap().id;
    r.deregister(t0, removed).unwrap();
    r.handle_timeout(t0 + TTL);
    assert!(r.is_tombstoned(removed));
    assert!(!r.is_tombstoned(expired));

    // A late renewal from a peer cannot bring the removed lease back.
    let late = view(removed, "echo", addr(1), source, TTL);
    assert_eq!(r.apply_remote(t0 + TTL, late), Applied::Tombstoned);
    assert!(r.query(t0 + TTL, "echo").is_none());
    // A peer that still has time on the expired one heard a renewal this broker did not.
    assert_eq!(r.apply_remote(t0 + TTL, view(expired, "echo", addr(2), source, TTL)), Applied::Inserted);

    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(30)).min(Some(t0 + TTL + TTL)));
    r.handle_timeout(t0 + Duration::from_secs(30));
    assert!(!r.is_tombstoned(removed), "forgotten after tombstone_ttl");
}

#[test]
fn tombstones_are_bounded_by_the_table_size() {
    let limits = Limits { max_instances: 4, ..Limits::default() };
    let mut r = Registry::new(Config { limits, ..Config::default() }, ids_from(0));
    let t0 = Instant::now();
    let mut gone = Vec::new();
    for port in 1..=10 {
        let id = r.register(t0, "echo", addr(port), from([127, 0, 0, 1], 1)).unwrap().id;
        r.deregister(t0, id).unwrap();
        gone.push(id);
    }
    assert_eq!(r.tombstones.len(), 4);
    assert!(gone[6..].iter().all(|&id| r.is_tombstoned(id)), "the newest are kept");
}

#[test]
fn a_removal_that_overtakes_its_registration_wins() {
    let mut r = registry();
    let t0 = Instant::now();
    let id = Uuid::from_u128(77);
    assert!(!r.apply_remote_removal(t0, id, RemoveReason::Deregistered));
    let lease = view(id, "echo", addr(1), from([10, 0, 0, 1], 1), TTL);
    assert_eq!(r.apply_remote(t0, lease), Applied::Tombstoned);
    assert!(r.is_empty());
}

#[test]
fn remote_leases_keep_the_later_deadline_capped_at_the_own_ttl() {
    let mut r = registry();
    let t0 = Instant::now();
    let id = Uuid::from_u128(1000);
    let source = from([10, 0, 0, 1], 1);
    assert_eq!(r.apply_remote(t0, view(id, "echo", addr(1), source, Duration::from_secs(60))), Applied::Inserted);
    assert_eq!(r.next_expiry(), Some(t0 + TTL), "no peer makes a lease outlive the own TTL");
    let change = r.poll_change().unwrap();
    assert!(change.by_peer && change.kind == ChangeKind::Registered && change.instance_changed);

    assert_eq!(r.apply_remote(t0, view(id, "echo", addr(1), source, Duration::from_secs(1))), Applied::Unchanged);
    assert_eq!(r.next_expiry(), Some(t0 + TTL), "an older renewal arriving late changes nothing");
    assert_eq!(r.poll_change(), None, "and tells nobody");
    let t1 = t0 + Duration::from_secs(2);
    assert_eq!(r.apply_remote(t1, view(id, "echo", addr(1), source, Duration::from_secs(4))), Applied::Refreshed);
    assert_eq!(r.next_expiry(), Some(t1 + Duration::from_secs(4)));
    assert!(r.poll_change().is_some_and(|c| c.by_peer && c.kind == ChangeKind::Refreshed));

    assert_eq!(r.apply_remote(t1, view(id, "upper", addr(1), source, TTL)), Applied::Conflict);
    assert_eq!(r.apply_remote(t1, view(Uuid::from_u128(5), "echo", addr(3), source, Duration::ZERO)), Applied::Expired);
    assert!(matches!(
        r.apply_remote(t1, view(Uuid::from_u128(6), "bad/name", addr(3), source, TTL)),
        Applied::Refused(Rejection::BadName { .. })
    ));
    assert!(matches!(
        r.apply_remote(t1, view(Uuid::from_u128(6), "echo", "0.0.0.0:1".parse().unwrap(), source, TTL)),
        Applied::Refused(Rejection::UnusableIp { .. })
    ));
    // The local holder's heartbeat and deregister work on a lease that came from a peer.
    r.heartbeat(t1, id).unwrap();
    r.deregister(t1, id).unwrap();
    assert!(r.is_tombstoned(id));
}

#[test]
fn a_full_table_refuses_remote_leases() {
    let limits = Limits { max_instances: 1, ..Limits::default() };
    let mut r = Registry::new(Config { limits, ..Config::default() }, ids_from(0));
    let t0 = Instant::now();
    r.register(t0, "echo", addr(1), from([10, 0, 0, 1], 1)).unwrap();
    let lease = view(Uuid::from_u128(99), "echo", addr(2), from([10, 0, 0, 1], 1), TTL);
    assert_eq!(r.apply_remote(t0, lease), Applied::Refused(Rejection::Full { max: 1 }));
}

/// Two brokers that gave one source's registration of one endpoint two ids end up with the
/// same lease under the smaller id, whichever way the leases travel, and both ids work.
#[test]
fn two_ids_for_one_source_converge_on_the_smaller() {
    let t0 = Instant::now();
    let source = from([10, 0, 0, 9], 4444);
    let mut a = Registry::new(Config::default(), ids_from(100));
    let mut b = Registry::new(Config::default(), ids_from(200));
    let id_a = a.register(t0, "echo", addr(1), source).unwrap().id;
    let id_b = b.register(t0 + NS, "echo", addr(1), source).unwrap().id;
    assert!(id_a < id_b);

    let lease_b = b.view(t0 + NS, id_b).map(|v| (v.id, v.ttl_left)).unwrap();
    let lease_a = a.view(t0 + NS, id_a).map(|v| (v.id, v.ttl_left)).unwrap();
    assert_eq!(a.apply_remote(t0 + NS, view(lease_b.0, "echo", addr(1), source, lease_b.1)), Applied::Merged);
    assert_eq!(b.apply_remote(t0 + NS, view(lease_a.0, "echo", addr(1), source, lease_a.1)), Applied::Merged);
    for r in [&mut a, &mut b] {
        let v = r.view(t0 + NS, id_b).unwrap();
        assert_eq!((v.id, v.aliases), (id_a, &[id_b][..]), "the smaller id names the lease");
        assert_eq!((r.len(), r.lease_count()), (1, 1));
        assert_eq!(r.register(t0 + NS, "echo", addr(1), source).unwrap().id, id_a);
        r.heartbeat(t0 + NS, id_b).unwrap();
    }
    // Sent again, either id changes nothing.
    assert_eq!(a.apply_remote(t0 + NS, view(id_b, "echo", addr(1), source, NS)), Applied::Unchanged);
    // A deregister with the alias removes the lease and tombstones both names.
    b.deregister(t0 + NS, id_b).unwrap();
    assert!(b.is_empty() && b.is_tombstoned(id_a) && b.is_tombstoned(id_b));
    let removal = std::iter::from_fn(|| b.poll_change()).last().unwrap();
    assert_eq!((removal.id, removal.aliases), (id_a, vec![id_b]));
}

const NS: Duration = Duration::from_nanos(1);

#[test]
fn a_walk_visits_every_lease_that_lives_through_it_exactly_once() {
    let mut r = Registry::new(
        Config { limits: Limits { max_instances: 50_000, ..Limits::default() }, ..Config::default() },
        ids_from(0),
    );
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for i in 0..12_000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        let endpoint = SocketAddr::from(([10, 1, hi, lo], 80));
        ids.push(r.register(t0, &format!("s{}", i % 50), endpoint, from([10, 0, hi, lo], 1)).unwrap().id);
    }
    // Free a lot of slots up front, so pages have holes to skip.
    for &id in &ids[..6000] {
        r.deregister(t0, id).unwrap();
    }
    let survivors: HashSet<Uuid> = ids[6000..].iter().copied().filter(|id| id.as_u128() % 3 != 0).collect();
    let mut seen: HashMap<Uuid, u32> = HashMap::new();
    let mut cursor = Some(Cursor::START);
    let mut pages = 0;
    let mut churn = 20_000u32;
    while let Some(at) = cursor {
        let mut taken = 0;
        cursor = r.page(t0, at, |lease| {
            if taken == 100 {
                return false;
            }
            taken += 1;
            *seen.entry(lease.id).or_insert(0) += 1;
            assert!(lease.ttl_left == TTL && (lease.service.starts_with('s') || lease.service == "new"));
            true
        });
        pages += 1;
        // Between pages the table changes: some leases go, new ones come.
        for &id in ids[6000..].iter().filter(|id| id.as_u128() % 3 == 0).take(20) {
            let _ = r.deregister(t0, id);
        }
        for _ in 0..10 {
            churn += 1;
            let [_, _, hi, lo] = churn.to_be_bytes();
            r.register(t0, "new", SocketAddr::from(([10, 2, hi, lo], 80)), from([10, 3, hi, lo], 1)).unwrap();
        }
    }
    for id in &survivors {
        assert_eq!(seen.get(id), Some(&1), "{id} seen once");
    }
    assert!(seen.values().all(|&n| n == 1), "nothing twice");
    assert!(pages > 60, "{pages} pages");
}

#[test]
fn a_page_over_free_slots_is_bounded_but_goes_on() {
    let limits = Limits { max_instances: 50_000, max_per_source: 0, max_per_network: 0, ..Limits::default() };
    let mut r = Registry::new(Config { limits, ..Config::default() }, ids_from(0));
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for port in 1..=10_000u16 {
        ids.push(r.register(t0, "echo", addr(port), from([127, 0, 0, 1], 1)).unwrap().id);
    }
    for &id in &ids[..9_999] {
        r.deregister(t0, id).unwrap();
    }
    let (mut calls, mut found, mut cursor) = (0, Vec::new(), Some(Cursor::START));
    while let Some(at) = cursor {
        calls += 1;
        cursor = r.page(t0, at, |lease| {
            found.push(lease.id);
            true
        });
    }
    assert_eq!(found, [ids[9_999]]);
    assert_eq!(calls, 3, "4096 slots a call");
}

proptest! {
    /// Whatever order a set of remote leases and removals arrives in, twice or once, every
    /// registry ends with the same table. With `merging`, every lease is the same source's on
    /// the same instance (rule 3), without removals: a removal that overtakes the lease it
    /// should merge with removes only the id it names, and the other id lives out its lease
    /// (the source deregistered, so it renews it no more).
    #[test]
    fn remote_leases_converge_in_any_order(
        items in proptest::collection::vec((0u8..6, 1u64..5000, any::<bool>()), 1..24),
        merging in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let t0 = Instant::now();
        // (id, endpoint, source, ttl, is_removal)
        let messages: Vec<(Uuid, SocketAddr, Source, Duration, bool)> = items
            .iter()
            .map(|&(id, ms, removal)| {
                let (port, src) = if merging { (1, 1) } else { (u16::from(id % 2) + 1, id % 3) };
                let removal = removal && !merging;
                (Uuid::from_u128(u128::from(id) + 1), addr(port), from([10, 0, 0, src], 1), Duration::from_millis(ms), removal)
            })
            .collect();
        let mut tables = Vec::new();
        for round in 0..3u64 {
            let mut order: Vec<usize> = (0..messages.len()).collect();
            let mut state = seed ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for i in (1..order.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (state >> 33) as usize % (i + 1));
            }
            if round == 2 {
                order.extend(order.clone());
            }
            let mut r = registry();
            for i in order {
                let (id, endpoint, source, ttl, removal) = messages[i];
                if removal {
                    r.apply_remote_removal(t0, id, RemoveReason::Deregistered);
                } else {
                    r.apply_remote(t0, view(id, "echo", endpoint, source, ttl));
                }
            }
            let mut table = Vec::new();
            let mut cursor = Some(Cursor::START);
            while let Some(at) = cursor {
                cursor = r.page(t0, at, |l| {
                    let mut aliases = l.aliases.to_vec();
                    aliases.sort();
                    table.push((l.id, l.endpoint, l.source, l.ttl_left, aliases));
                    true
                });
            }
            table.sort();
            tables.push(table);
        }
        prop_assert_eq!(&tables[0], &tables[1]);
        prop_assert_eq!(&tables[0], &tables[2]);
    }
}

#[test]
fn a_tombstone_lasts_as_long_as_the_lease_it_buries_could_have() {
    // With leases of ten minutes, a peer cut off by a partition may hold a deregistered lease for
    // that long: its tombstone here must outlive it, or the peer would bring it back.
    let ttl = Duration::from_secs(600);
    let config = Config { ttl, tombstone_ttl: Duration::from_secs(30), ..Config::default() };
    let mut r = Registry::new(config, ids_from(0));
    let t0 = Instant::now();
    let source = from([127, 0, 0, 1], 1);
    let id = r.register(t0, "echo", addr(1), source).unwrap().id;
    r.deregister(t0, id).unwrap();
    let late = t0 + ttl - Duration::from_secs(1);
    assert_eq!(r.apply_remote(late, view(id, "echo", addr(1), source, Duration::from_secs(1))), Applied::Tombstoned);
    r.handle_timeout(t0 + ttl);
    assert!(!r.is_tombstoned(id), "forgotten once no copy can be live");
}

#[test]
fn a_lease_arriving_under_another_name_of_a_removed_one_stays_removed() {
    let t0 = Instant::now();
    let mut r = Registry::new(Config::default(), Uuid::new_v4);
    let (removed, other) = (Uuid::from_u128(41), Uuid::from_u128(42));
    // Removed on purpose here (deregistered at a peer), before this broker learned the lease.
    assert!(!r.apply_remote_removal(t0, removed, RemoveReason::Deregistered));
    // The same lease, by the id another broker gave it, with the removed one among its names.
    let view = LeaseView {
        id: other,
        service: "echo",
        endpoint: "10.0.0.1:4000".parse().unwrap(),
        source: Source::Unicast("10.0.0.1:50000".parse().unwrap()),
        ttl_left: Duration::from_secs(3),
        aliases: &[removed],
        check: crate::protocol::Check::None,
        meta: None,
    };
    assert_eq!(r.apply_remote(t0, view), Applied::Tombstoned);
    assert!(r.query(t0, "echo").is_none());
}
