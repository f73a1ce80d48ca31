//! The watches' unit tests: leases, changes, caps, cookies and the bound per address.

use super::*;
use crate::protocol::MAX_REPLY_LEN;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

const TTL: Duration = Duration::from_secs(5);

#[test]
fn a_watch_is_renewed_by_watching_again_and_expires_otherwise() {
    let t0 = Instant::now();
    let mut w = Watches::new(WatchConfig::default(), [7; 32]);
    assert_eq!(w.watch(t0, addr(1), Form::Text, "echo", TTL, vec![]), Ok(0));
    assert_eq!(w.watch(t0 + TTL / 2, addr(1), Form::Text, "echo", TTL, vec![]), Ok(0), "renewed");
    assert_eq!(w.len(), 1);
    w.handle_timeout(t0 + TTL);
    assert_eq!(w.len(), 1, "the renewal moved the expiry");
    assert_eq!(w.poll_timeout(), Some(t0 + TTL / 2 + TTL));
    w.handle_timeout(t0 + TTL / 2 + TTL);
    assert_eq!(w.len(), 0);
    assert!(w.store.len() == 0 && w.per_source.is_empty() && w.per_network.is_empty());
}

#[test]
fn only_a_different_live_set_is_a_change() {
    let t0 = Instant::now();
    let mut w = Watches::new(WatchConfig::default(), [7; 32]);
    w.watch(t0, addr(1), Form::Text, "echo", TTL, vec![addr(4000)]).unwrap();
    w.handle_change("echo");
    w.handle_change("echo");
    w.handle_change("other");
    assert_eq!(w.take_dirty(), ["echo"], "once per turn, watched services only");
    assert_eq!(w.changed("echo", vec![addr(4000)]), None, "a renewal or a second lease changes no set");
    w.handle_change("echo");
    w.take_dirty();
    assert_eq!(w.changed("echo", vec![addr(4000), addr(4001)]), Some((1, vec![(addr(1), Form::Text)])));
    assert_eq!(w.watch(t0, addr(2), Form::Text, "echo", TTL, vec![]), Ok(1), "a new watcher gets the current seq");
}

#[test]
fn caps_per_source_and_in_total_give_clear_errors() {
    let t0 = Instant::now();
    let mut w = Watches::new(WatchConfig { max_per_source: 2, max_total: 3, max_per_network: 0 }, [7; 32]);
    let at = |ip: u8, port: u16| SocketAddr::from(([10, 0, 0, ip], port));
    assert!(w.watch(t0, at(1, 1), Form::Text, "a", TTL, vec![]).is_ok());
    assert!(w.watch(t0, at(1, 2), Form::Text, "a", TTL, vec![]).is_ok());
    let refused = w.watch(t0, at(1, 3), Form::Text, "a", TTL, vec![]).unwrap_err();
    assert_eq!(refused.to_string(), "too many watches from this address: at most 2");
    assert!(w.watch(t0, at(1, 1), Form::Text, "a", TTL, vec![]).is_ok(), "a renewal is not a new watch");
    assert!(w.watch(t0, at(2, 1), Form::Text, "b", TTL, vec![]).is_ok());
    let refused = w.watch(t0, at(3, 1), Form::Text, "b", TTL, vec![]).unwrap_err();
    assert_eq!(refused.to_string(), "too many watches: at most 3");
    assert!(w.unwatch(at(1, 1), "a"));
    assert!(!w.unwatch(at(1, 1), "a"));
    assert!(w.watch(t0, at(3, 1), Form::Text, "b", TTL, vec![]).is_ok(), "room again");
}

#[test]
fn only_the_echoed_cookie_of_the_same_address_and_port_watches_and_it_ages() {
    let t0 = Instant::now();
    let mut registry = Registry::new(crate::registry::Config::default(), uuid::Uuid::new_v4);
    let mut w = Watches::new(WatchConfig::default(), [7; 32]);
    let mut ask = |w: &mut Watches, now, from, cookie| {
        w.handle_watch(now, from, Form::Text, "echo", cookie, false, &mut registry)
    };
    let Response::WatchCookie { cookie } = ask(&mut w, t0, addr(1), None) else { panic!("a cookie first") };
    assert_eq!(w.len(), 0, "nothing kept for an unconfirmed watch");
    assert!(w.store.len() == 0 && w.per_source.is_empty());
    assert_eq!(ask(&mut w, t0, addr(1), Some(cookie ^ 1)), Response::WatchCookie { cookie }, "a wrong one: again");
    assert!(matches!(ask(&mut w, t0, addr(2), Some(cookie)), Response::WatchCookie { .. }), "another port's");
    let other_host = SocketAddr::from(([10, 0, 0, 2], 1));
    assert!(matches!(ask(&mut w, t0, other_host, Some(cookie)), Response::WatchCookie { .. }));
    assert_eq!(w.len(), 0);
    assert!(matches!(ask(&mut w, t0, addr(1), Some(cookie)), Response::Watching { seq: 0, .. }));
    assert_eq!(w.len(), 1);
    // Taken in its slot and the next; a new one after that.
    let next_slot = t0 + COOKIE_SLOT + Duration::from_secs(1);
    assert!(matches!(ask(&mut w, next_slot, addr(1), Some(cookie)), Response::Watching { .. }));
    let Response::WatchCookie { cookie: newer } = ask(&mut w, t0 + COOKIE_SLOT * 2, addr(1), Some(cookie)) else {
        panic!("too old")
    };
    assert_ne!(newer, cookie);
    // Another key, other cookies.
    let mut other = Watches::new(WatchConfig::default(), [8; 32]);
    let slot = other.slot(t0);
    assert_ne!(other.cookie(slot, addr(1)), cookie);
}

#[test]
fn notifications_to_one_address_are_bounded_whatever_the_watches() {
    let t0 = Instant::now();
    let mut config = crate::registry::Config::default();
    config.limits.max_per_source = 0;
    config.limits.max_per_network = 0;
    let mut registry = Registry::new(config, uuid::Uuid::new_v4);
    let mut w = Watches::new(WatchConfig::default(), [7; 32]);
    let services: Vec<String> = (0..1000).map(|k| format!("s{k}")).collect();
    for (k, service) in services.iter().enumerate() {
        let from = addr(1000 + k as u16);
        w.watch(t0, from, Form::Text, service, TTL, vec![]).unwrap();
    }
    // Every service gets a full-size live set at once.
    let big: Vec<SocketAddr> = (0..60).map(|k| SocketAddr::from(([10, 9, 9, 9], 20000 + k))).collect();
    for service in &services {
        for &instance in &big {
            let id = registry.register(t0, service, instance, crate::protocol::Source::Unicast(instance));
            assert!(id.is_ok());
        }
        w.handle_change(service);
    }
    w.flush(t0, &mut registry);
    let mut bytes = 0;
    let mut out = Vec::new();
    while w.poll_transmit(&mut out).is_some() {
        bytes += out.len();
    }
    assert!(bytes <= NOTIFY_BYTES_PER_SECOND, "{bytes}");
    assert!(bytes > NOTIFY_BYTES_PER_SECOND - MAX_REPLY_LEN, "{bytes}");
    let dropped = w.stats().dropped;
    assert!(dropped > 200, "{dropped} counted as dropped");
    // A second later, more may go.
    let t1 = t0 + Duration::from_secs(1);
    for service in &services {
        registry.register(t1, service, addr(9), crate::protocol::Source::Unicast(addr(9))).unwrap();
        w.handle_change(service);
    }
    w.flush(t1, &mut registry);
    assert!(w.poll_transmit(&mut out).is_some());
}

#[test]
fn watches_are_capped_per_network_and_kept_for_newcomers_when_nearly_full() {
    let t0 = Instant::now();
    let mut w = Watches::new(WatchConfig { max_per_source: 32, max_total: 20, max_per_network: 3 }, [7; 32]);
    let at = |a: u8, b: u8| SocketAddr::from(([10, 0, a, b], 1));
    for host in 1..=3 {
        assert!(w.watch(t0, at(0, host), Form::Text, "a", TTL, vec![]).is_ok());
    }
    let refused = w.watch(t0, at(0, 4), Form::Text, "a", TTL, vec![]).unwrap_err();
    assert_eq!(refused.to_string(), "too many watches from this network: at most 3");
    assert!(w.watch(t0, at(1, 1), Form::Text, "a", TTL, vec![]).is_ok(), "another network");
    // 18 of 20 is 90 %: a source that holds two (32 / 16) waits, a newcomer does not.
    let big = at(2, 1);
    assert!(w.watch(t0, big, Form::Text, "b", TTL, vec![]).is_ok());
    assert!(w.watch(t0, SocketAddr::new(big.ip(), 2), Form::Text, "b", TTL, vec![]).is_ok());
    for k in 3..=14 {
        assert!(w.watch(t0, at(k, 1), Form::Text, "c", TTL, vec![]).is_ok());
    }
    assert_eq!(w.len(), 18);
    let refused = w.watch(t0, SocketAddr::new(big.ip(), 3), Form::Text, "b", TTL, vec![]).unwrap_err();
    assert_eq!(refused.to_string(), "too many watches from this address or network while nearly full: at most 2");
    assert!(w.watch(t0, at(99, 1), Form::Text, "b", TTL, vec![]).is_ok());
}

#[test]
fn a_notification_fits_one_reply_in_both_forms() {
    let many: Vec<SocketAddr> =
        (0..500).map(|k| SocketAddr::from(([10, 1, (k / 250) as u8, k as u8], 40000 + k))).collect();
    let name = "s".repeat(64);
    let instances = fit(Form::Text, &name, many);
    assert!(instances.len() > 30);
    for form in [Form::Text, Form::Binary { request_id: u32::MAX }] {
        let response = Response::Changed { service: name.clone(), seq: u64::MAX, instances: instances.clone() };
        let mut out = Vec::new();
        crate::protocol::encode_reply(form, &response, &mut out);
        assert!(out.len() <= MAX_REPLY_LEN, "{form:?}: {}", out.len());
        let watching =
            Response::Watching { service: name.clone(), seq: u64::MAX, ttl_ms: u32::MAX, instances: instances.clone() };
        crate::protocol::encode_reply(form, &watching, &mut out);
        assert!(out.len() <= MAX_REPLY_LEN, "{form:?}: {}", out.len());
    }
}

/// Watches without caps.
fn many() -> Watches {
    Watches::new(WatchConfig { max_per_source: 0, max_total: 1_000_000, max_per_network: 0 }, [7; 32])
}

fn port_addr(k: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (k >> 16) as u8, 1], k as u16))
}

#[test]
fn the_storage_is_freed_when_every_watch_has_expired() {
    let t0 = Instant::now();
    let mut w = many();
    for k in 0..10_000 {
        w.watch(t0, port_addr(k), Form::Text, &format!("s{}", k % 3000), TTL, vec![]).unwrap();
    }
    let (watches, services) = w.store.capacity();
    assert!(watches >= 10_000 && services >= 3000, "{watches} {services}");
    w.handle_timeout(t0 + TTL - Duration::from_millis(1));
    assert_eq!(w.len(), 10_000, "not yet");
    w.handle_timeout(t0 + TTL);
    assert_eq!(w.len(), 0);
    assert_eq!(w.store.capacity(), (0, 0), "every block freed");
    assert!(w.per_source.is_empty() && w.per_source.capacity() < 64);
    assert_eq!(w.poll_timeout(), None);
    assert_eq!(w.watch(t0 + TTL, addr(1), Form::Text, "s1", TTL, vec![]), Ok(0), "and watching again works");
}

/// No table of the store is ever as small as the chunks glibc keeps in its per-thread cache
/// (up to 1,032 bytes): outgrown while watches live and freed high in the heap, such a chunk is
/// never merged with the blocks freed around it and keeps the heap from shrinking when the
/// watches expire.
#[test]
fn no_table_of_the_store_is_small_enough_to_pin_the_heap() {
    let t0 = Instant::now();
    let mut w = many();
    for k in 0..5000 {
        w.watch(t0, port_addr(k), Form::Text, &format!("s{k}"), TTL, vec![]).unwrap();
        if k % 97 == 0 || k < 300 {
            let tables = w.store.table_bytes();
            assert!(tables.iter().all(|&bytes| bytes > 1032), "with {} watches: {tables:?}", k + 1);
            // The counts per address and network: 64 buckets of 32 bytes at least.
            assert!(w.per_source.capacity() >= 56 && w.per_network.capacity() >= 56);
        }
    }
}

#[test]
fn the_storage_shrinks_when_most_watches_expired_and_the_rest_are_kept_whole() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let mut w = many();
    for k in 0..12_000 {
        w.watch(t0, port_addr(k), Form::Text, &format!("s{k}"), TTL, vec![]).unwrap();
    }
    // A few more on a service of the first ones and on their own, renewed or not.
    for k in 0..100 {
        w.watch(t1, port_addr(50_000 + k), Form::Binary { request_id: k as u32 }, "s7", TTL, vec![]).unwrap();
        w.watch(t1, port_addr(60_000 + k), Form::Text, "late", TTL, vec![]).unwrap();
    }
    w.watch(t1, port_addr(7), Form::Text, "s7", TTL, vec![]).unwrap();
    assert_eq!(w.store.capacity().0, 12_201usize.div_ceil(store::CHUNK) * store::CHUNK);
    w.handle_timeout(t0 + TTL);
    assert_eq!(w.len(), 201);
    assert_eq!(
        w.store.capacity().0,
        12_201usize.div_ceil(store::CHUNK) * store::CHUNK,
        "kept until the last deadline it held: all may be going"
    );
    // The rest renewed: still sparse at that deadline, so rebuilt.
    let t2 = t0 + TTL + Duration::from_millis(500);
    for k in 0..100 {
        w.watch(t2, port_addr(50_000 + k), Form::Binary { request_id: k as u32 }, "s7", TTL, vec![]).unwrap();
        w.watch(t2, port_addr(60_000 + k), Form::Text, "late", TTL, vec![]).unwrap();
    }
    w.watch(t2, port_addr(7), Form::Text, "s7", TTL, vec![]).unwrap();
    w.handle_timeout(t1 + TTL);
    assert_eq!(w.len(), 201);
    assert_eq!(w.store.capacity(), (store::CHUNK, store::CHUNK), "rebuilt at its size");
    assert_eq!(w.poll_timeout(), Some(t2 + TTL));
    // What is kept is whole: renewals, notifications with each watcher's form, sequence numbers.
    assert_eq!(w.watch(t2, port_addr(7), Form::Text, "s7", TTL, vec![]), Ok(0));
    w.handle_change("s7");
    assert_eq!(w.take_dirty(), ["s7"]);
    let (seq, mut watchers) = w.changed("s7", vec![addr(4000)]).unwrap();
    assert_eq!(seq, 1);
    watchers.sort_unstable_by_key(|&(a, _)| a);
    assert_eq!(watchers.len(), 101);
    assert_eq!(watchers[0], (port_addr(7), Form::Text));
    assert!(watchers.contains(&(port_addr(50_003), Form::Binary { request_id: 3 })));
    assert!(w.unwatch(port_addr(60_001), "late"));
    assert!(!w.unwatch(port_addr(60_001), "late"));
    w.handle_timeout(t2 + TTL);
    assert_eq!(w.len(), 0);
    assert_eq!(w.store.capacity(), (0, 0));
}

#[test]
fn packed_addresses_come_back_as_they_were() {
    let v6: SocketAddr = "[fe80::1%3]:53".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:53".parse().unwrap();
    for a in [addr(9), v6, mapped, "[::1]:1".parse().unwrap()] {
        assert_eq!(store::Peer::new(a).addr(), a);
    }
    assert_ne!(store::Peer::new(mapped), store::Peer::new(SocketAddr::from(([10, 0, 0, 1], 53))));
}
