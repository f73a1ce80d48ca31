use std::collections::HashMap;

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn round_robin_is_even() {
    let pool = Pool::new();
    for port in 1..=3 {
        assert!(pool.add(addr(port)));
    }
    assert!(!pool.add(addr(2)));
    let mut counts = HashMap::new();
    for _ in 0..300 {
        *counts.entry(pool.pick(&[], &mut Draw::new(1)).unwrap().addr).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&n| n == 100), "{counts:?}");
}

#[test]
fn down_and_tried_backends_are_skipped() {
    let pool = Pool::new();
    for port in 1..=3 {
        pool.add(addr(port));
    }
    pool.get(addr(2)).unwrap().mark_failed();
    for _ in 0..10 {
        let picked = pool.pick(&[addr(1)], &mut Draw::new(1)).unwrap().addr;
        assert_eq!(picked, addr(3));
    }
    // Only down or tried backends left: a down one gets a chance.
    assert_eq!(pool.pick(&[addr(1), addr(3)], &mut Draw::new(1)).unwrap().addr, addr(2));
    assert!(pool.pick(&[addr(1), addr(2), addr(3)], &mut Draw::new(1)).is_none());
    // A heartbeat (add again) or a probe brings it back.
    pool.add(addr(2));
    assert!(pool.get(addr(2)).unwrap().is_up());
    assert_eq!(pool.get(addr(2)).unwrap().stats().failures, 1);
}

#[test]
fn a_batch_adds_and_removes_at_once_keeping_the_order() {
    let pool = Pool::new();
    assert_eq!(pool.update((1..=5).map(addr), []), (5, 0));
    assert_eq!(pool.update([addr(6), addr(2)], [addr(3), addr(6), addr(9)]), (0, 1));
    let order: Vec<u16> = pool.snapshot().iter().map(|b| b.addr.port()).collect();
    assert_eq!(order, [1, 2, 4, 5], "added and removed in one batch: removed; the rest keep their order");
    assert_eq!(pool.get(addr(4)).map(|b| b.addr), Some(addr(4)));
    assert!(pool.get(addr(3)).is_none());
    pool.get(addr(1)).unwrap().mark_failed();
    assert_eq!(pool.up_count(), 3);
}

fn ten(i: u32) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80))
}

fn listed(pool: &Pool) -> Vec<SocketAddr> {
    pool.snapshot().iter().map(|b| b.addr).collect()
}

fn shared(a: &List, b: &List) -> usize {
    a.chunks.iter().filter(|x| b.chunks.iter().any(|y| Arc::ptr_eq(x, y))).count()
}

#[test]
fn a_change_copies_only_the_chunks_it_changes() {
    let pool = Pool::new();
    for i in 0..20_000 {
        assert!(pool.add(ten(i)));
    }
    let before = pool.snapshot();
    assert_eq!(before.len, 20_000);
    assert_eq!(before.chunks.len(), 20_000usize.div_ceil(CHUNK));
    assert!(listed(&pool).into_iter().eq((0..20_000).map(ten)), "in the order they came");

    // One more: only the last chunk is copied, so an add costs the same at any size.
    assert!(pool.add(ten(20_000)));
    let after = pool.snapshot();
    assert_eq!(shared(&before, &after), before.chunks.len() - 1);
    assert_eq!(before.len, 20_000, "a reader's snapshot does not change");

    // One fewer, from the middle: only its chunk is copied.
    assert!(pool.remove(ten(10_000)));
    let removed = pool.snapshot();
    assert_eq!(shared(&after, &removed), after.chunks.len() - 1);
    assert_eq!(removed.len, 20_000);
    assert!(!listed(&pool).contains(&ten(10_000)));

    // Round robin over all of them: each once per cycle.
    let mut seen = HashMap::new();
    for _ in 0..2 * 20_000 {
        *seen.entry(pool.pick(&[], &mut Draw::new(1)).unwrap().addr).or_insert(0) += 1;
    }
    assert!(seen.len() == 20_000 && seen.values().all(|&n| n == 2));
}

#[test]
fn churn_keeps_the_order_the_round_robin_and_few_chunks() {
    let pool = Pool::new();
    let mut model: Vec<SocketAddr> = Vec::new();
    let mut next = 0u32;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    for step in 0..1_500 {
        // Batches like the control loop's: some adds, some removes (one unknown, now and
        // then one of the batch's own adds).
        let mut adds = Vec::new();
        for _ in 0..random(40) {
            next += 1;
            adds.push(ten(next));
        }
        let mut removes: Vec<SocketAddr> = Vec::new();
        for _ in 0..random(30) {
            if let Some(&addr) = model.get(random(model.len())) {
                removes.push(addr);
            }
        }
        removes.push(ten(u32::MAX));
        if step % 7 == 0 && !adds.is_empty() {
            removes.push(adds[0]);
        }
        removes.sort();
        removes.dedup();
        let before = model.len();
        model.extend(adds.iter().copied());
        model.retain(|a| !removes.contains(a));
        let added = adds.iter().filter(|a| !removes.contains(a)).count();
        let expected = (added, before + added - model.len());
        assert_eq!(pool.update(adds.iter().copied(), removes.iter().copied()), expected, "step {step}");
        let list = pool.snapshot();
        assert_eq!(list.len, model.len());
        assert!(list.iter().map(|b| b.addr).eq(model.iter().copied()), "step {step}");
        assert!(list.chunks.iter().all(|c| !c.backends.is_empty() && c.backends.len() <= CHUNK));
        let most = 2 * model.len().div_ceil(CHUNK) + 1;
        assert!(list.chunks.len() <= most, "step {step}: {} chunks", list.chunks.len());
    }
    assert!(model.len() > 1_000, "{}", model.len());
    let mut seen = HashMap::new();
    for _ in 0..3 * model.len() {
        *seen.entry(pool.pick(&[], &mut Draw::new(1)).unwrap().addr).or_insert(0) += 1;
    }
    assert!(seen.len() == model.len() && seen.values().all(|&n| n == 3));
    for addr in &model {
        assert_eq!(pool.get(*addr).map(|b| b.addr), Some(*addr));
    }
}

#[test]
fn removal_keeps_the_others() {
    let pool = Pool::new();
    assert!(pool.pick(&[], &mut Draw::new(1)).is_none());
    pool.add(addr(1));
    pool.add(addr(2));
    let held = pool.get(addr(1)).unwrap();
    assert!(pool.remove(addr(1)));
    assert!(!pool.remove(addr(1)));
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.pick(&[], &mut Draw::new(1)).unwrap().addr, addr(2));
    let lease = Lease::new(&held);
    assert_eq!(held.stats().active, 1, "a removed backend's counters live on with its connections");
    drop(lease);
    assert_eq!(held.stats().active, 0);
}

fn counts(picks: impl IntoIterator<Item = SocketAddr>) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for addr in picks {
        *counts.entry(addr.port()).or_insert(0) += 1;
    }
    counts
}

fn pool_of(policy: Policy, weights: &[u32]) -> Pool {
    let pool = Pool::with_policy(policy);
    pool.update_weighted(weights.iter().enumerate().map(|(i, &w)| (addr(i as u16 + 1), w)), []);
    pool
}

/// Every policy, connections that end at once (nothing in flight): equal backends share
/// equally (least-conn's ties go round robin), and weights 1:2 give 1:2 shares.
#[test]
fn every_policy_shares_by_weight() {
    let mut draw = Draw::new(42);
    for policy in [Policy::RoundRobin, Policy::LeastConn, Policy::RandomTwo] {
        let pool = pool_of(policy, &[1, 1, 1]);
        let even = counts((0..3000).map(|_| pool.pick(&[], &mut draw).unwrap().addr));
        let weighted = pool_of(policy, &[1, 2]);
        let shares = counts((0..3000).map(|_| weighted.pick(&[], &mut draw).unwrap().addr));
        if policy == Policy::RandomTwo {
            // Of two idle backends the first drawn wins, and draws go by weight.
            assert!(even.values().all(|&n| (850..1150).contains(&n)), "{policy}: {even:?}");
            assert!((850..1150).contains(&shares[&1]) && (1850..2150).contains(&shares[&2]), "{policy}: {shares:?}");
        } else {
            assert!(even.values().all(|&n| n == 1000), "{policy}: {even:?}");
            assert_eq!((shares[&1], shares[&2]), (1000, 2000), "{policy}");
        }
    }
}

#[test]
fn round_robin_with_weights_is_smooth_and_follows_changes() {
    let pool = pool_of(Policy::RoundRobin, &[5, 1, 1]);
    let mut draw = Draw::new(1);
    let picks: Vec<u16> = (0..7).map(|_| pool.pick(&[], &mut draw).unwrap().addr.port()).collect();
    let mut sorted = picks.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 1, 1, 1, 1, 2, 3]);
    assert!(picks.windows(3).all(|w| w != [1, 1, 1]), "never three in a run: {picks:?}");
    // A heartbeat with another weight changes the shares; back to 1 everywhere: plain again.
    pool.update_weighted([(addr(1), 1)], []);
    let even = counts((0..300).map(|_| pool.pick(&[], &mut draw).unwrap().addr));
    assert!(even.values().all(|&n| n == 100), "{even:?}");
    assert!(pool.snapshot().weighted.is_none());
    pool.update_weighted([(addr(4), 3)], [addr(2)]);
    let shares = counts((0..500).map(|_| pool.pick(&[], &mut draw).unwrap().addr));
    assert_eq!((shares[&1], shares[&3], shares[&4]), (100, 100, 300));
}

/// Connections held on one backend: least-conn sends the new ones to the others until they
/// carry as many, and releases count.
#[test]
fn a_new_weight_keeps_the_backends_state() {
    let pool = pool_of(Policy::RoundRobin, &[1, 1]);
    pool.get(addr(2)).unwrap().mark_failed();
    assert!(pool.reweight(addr(2), 3));
    assert!(!pool.reweight(addr(2), 3) && !pool.reweight(addr(9), 2));
    assert!(!pool.get(addr(2)).unwrap().is_up(), "still down");
    pool.get(addr(2)).unwrap().mark_up();
    let mut draw = Draw::new(1);
    let shares = counts((0..400).map(|_| pool.pick(&[], &mut draw).unwrap().addr));
    assert_eq!((shares[&1], shares[&2]), (100, 300));
    assert!(pool.reweight(addr(2), 1));
    assert!(pool.snapshot().weighted.is_none());
}

#[test]
fn least_conn_sends_new_connections_away_from_held_ones() {
    let pool = pool_of(Policy::LeastConn, &[1, 1, 1]);
    let mut draw = Draw::new(1);
    let held: Vec<Lease> = (0..5).map(|_| Lease::new(&pool.get(addr(1)).unwrap())).collect();
    let mut new = Vec::new();
    for _ in 0..10 {
        new.push(pool.pick(&[], &mut draw).unwrap());
    }
    assert_eq!(counts(new.iter().map(|l| l.addr)), HashMap::from([(2, 5), (3, 5)]));
    // Now 5 each: the next three go one to each.
    let next: Vec<Lease> = (0..3).map(|_| pool.pick(&[], &mut draw).unwrap()).collect();
    assert_eq!(counts(next.iter().map(|l| l.addr)), HashMap::from([(1, 1), (2, 1), (3, 1)]));
    drop(held);
    drop(next);
    assert_eq!(pool.get(addr(1)).unwrap().stats().active, 0, "every lease gave its count back");
    // Weights: in flight ÷ weight. 2 on a backend of weight 2 weigh as 1 on one of weight 1.
    let pool = pool_of(Policy::LeastConn, &[1, 2]);
    let _two: Vec<Lease> = (0..2).map(|_| Lease::new(&pool.get(addr(2)).unwrap())).collect();
    let _one = Lease::new(&pool.get(addr(1)).unwrap());
    let shares = counts((0..30).map(|_| pool.pick(&[], &mut draw).unwrap().addr));
    assert_eq!(shares, HashMap::from([(1, 10), (2, 20)]), "equal for their weight: shared 1:2");
}

/// random-two never takes the busier of the two it drew: a loaded backend of three is never
/// chosen (any two drawn include an idle one), and every draw takes the lighter of its pair.
#[test]
fn random_two_never_picks_the_busier_of_its_two() {
    let pool = pool_of(Policy::RandomTwo, &[1, 1, 1]);
    let mut draw = Draw::new(9);
    let _busy: Vec<Lease> = (0..3).map(|_| Lease::new(&pool.get(addr(2)).unwrap())).collect();
    let picks = counts((0..3000).map(|_| pool.pick(&[], &mut draw).unwrap().addr));
    assert_eq!(picks.get(&2), None, "{picks:?}");
    assert!(picks[&1] > 1200 && picks[&3] > 1200, "{picks:?}");
    // Every pair drawn, checked one by one: the pick is never the busier of the pair.
    let list = pool.snapshot();
    let _one = Lease::new(&pool.get(addr(1)).unwrap());
    for seed in 0..500 {
        let mut probe = Draw::new(seed);
        let (a, b) = (probe.below(3) as usize, probe.below(2) as usize);
        let b = if b >= a { b + 1 } else { b };
        let picked = list.random_two(&mut Draw::new(seed), &[]).unwrap();
        let (a, b) = (list.get(a), list.get(b));
        assert!(picked.addr == a.addr || picked.addr == b.addr);
        let other = if picked.addr == a.addr { b } else { a };
        assert!(picked.load() <= other.load(), "seed {seed}: {} over {}", picked.addr, other.addr);
    }
}

#[test]
fn down_and_tried_backends_are_skipped_by_every_policy() {
    let mut draw = Draw::new(3);
    for policy in [Policy::RoundRobin, Policy::LeastConn, Policy::RandomTwo] {
        for weights in [[1, 1, 1], [1, 3, 2]] {
            let pool = pool_of(policy, &weights);
            pool.get(addr(2)).unwrap().mark_failed();
            for _ in 0..50 {
                assert_eq!(pool.pick(&[addr(1)], &mut draw).unwrap().addr, addr(3), "{policy} {weights:?}");
            }
            assert_eq!(pool.pick(&[addr(1), addr(3)], &mut draw).unwrap().addr, addr(2), "{policy}: a last chance");
            assert!(pool.pick(&[addr(1), addr(2), addr(3)], &mut draw).is_none());
        }
    }
}

/// Every backend down (until `rise` checks bring one back): the connections that give a down
/// backend a chance spread over all of them by the policy, not all onto the first listed.
#[test]
fn with_every_backend_down_each_policy_spreads_the_chances() {
    for policy in [Policy::RoundRobin, Policy::LeastConn, Policy::RandomTwo] {
        let pool = pool_of(policy, &[1, 1, 1]);
        for port in 1..=3 {
            pool.get(addr(port)).unwrap().mark_failed();
        }
        let mut draw = Draw::new(7);
        let picks = counts((0..300).map(|_| pool.pick(&[], &mut draw).unwrap().addr));
        assert_eq!(picks.len(), 3, "{policy:?}: {picks:?}");
        assert!(picks.values().all(|&n| n == 100), "{policy:?}: {picks:?}");
        // Held connections steer least-conn and random-two's fallback away too.
        let held: Vec<Lease> = (0..2).map(|_| pool.pick(&[], &mut draw).unwrap()).collect();
        let next = pool.pick(&[], &mut draw).unwrap().addr;
        assert!(held.iter().all(|lease| lease.addr != next), "{policy:?}");
    }
}
