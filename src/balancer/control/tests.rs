use super::*;
use crate::registry::Source;

fn control(pool: &Arc<Pool>) -> Control {
    let registry = Registry::new(super::super::control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
    let rate_limit = RateLimit::default();
    Control::new(registry, Arc::clone(pool), Arc::new(Counters::default()), None, rate_limit, false)
}

/// A control core whose health checks run (every second, 500 ms timeout).
fn checking_control() -> Control {
    let registry = Registry::new(super::super::control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
    let health = Health::new(Duration::from_secs(1), Duration::from_millis(500), 2, 3);
    let counters = Arc::new(Counters::default());
    Control::new(registry, Arc::new(Pool::new()), counters, Some(health), RateLimit::default(), false)
}

#[test]
fn a_weight_is_read_from_its_pair() {
    assert_eq!(weight_of(None), 1);
    assert_eq!(weight_of(Some(Some(b"3"))), 3);
    assert_eq!(weight_of(Some(Some(b"256"))), 256);
    for bad in [Some(&b"0"[..]), Some(b"257"), Some(b"x"), None] {
        assert_eq!(weight_of(Some(bad)), 1, "{bad:?}");
    }
}

#[test]
fn a_backend_weighs_what_its_registrations_weight_pair_says() {
    let pool = Arc::new(Pool::new());
    let mut core = control(&pool);
    let t0 = Instant::now();
    let from = SocketAddr::from(([127, 0, 0, 1], 4000));
    core.handle_start(t0);
    let register = |core: &mut Control, at: Instant, words: &str| {
        let mut reply = Vec::new();
        core.handle_datagram(at, Face::Control, from, format!("register web 4000{words}").as_bytes(), &mut reply);
        assert!(!reply.starts_with(b"ERROR"), "{}", String::from_utf8_lossy(&reply));
        core.handle_turn_end(at + PUBLISH);
    };
    register(&mut core, t0, " weight=3 path=/");
    assert_eq!(pool.get(from).unwrap().weight(), 3, "the pair, from the registration's metadata");
    register(&mut core, t0 + FOLLOW, " weight=1");
    assert_eq!(pool.get(from).unwrap().weight(), 1, "registered again with another weight");
    register(&mut core, t0 + FOLLOW * 2, " weight=nonsense");
    assert_eq!(pool.get(from).unwrap().weight(), 1, "no weight: 1");
}

#[test]
fn a_backend_held_by_two_leases_is_weighed_again_when_the_one_it_weighed_by_goes() {
    let pool = Arc::new(Pool::new());
    let mut core = control(&pool);
    let t0 = Instant::now();
    let backend = SocketAddr::from(([127, 0, 0, 1], 4000));
    core.handle_start(t0);
    let send = |core: &mut Control, at: Instant, source: u16, line: &str| {
        let mut reply = Vec::new();
        let from = SocketAddr::from(([127, 0, 0, 1], source));
        core.handle_datagram(at, Face::Control, from, line.as_bytes(), &mut reply);
        assert!(!reply.starts_with(b"ERROR"), "{}", String::from_utf8_lossy(&reply));
        core.handle_turn_end(at + PUBLISH);
        String::from_utf8(reply).unwrap()
    };
    // Two sources register the backend with other weights: it weighs by one of them.
    let three = send(&mut core, t0, 5001, "register web 4000 weight=3");
    let five = send(&mut core, t0, 5002, "register web 4000 weight=5");
    let weight = pool.get(backend).unwrap().weight();
    assert!(weight == 3 || weight == 5, "{weight}");
    // The lease it weighs by goes; the backend lives on, and weighs by the other.
    let (gone, reply, other) = if weight == 3 { (5001, three, 5) } else { (5002, five, 3) };
    let id = reply.split_whitespace().find(|w| w.len() == 36).expect("a lease id");
    send(&mut core, t0 + FOLLOW, gone, &format!("deregister {id}"));
    assert_eq!(pool.get(backend).map(|b| b.weight()), Some(other));
}

#[test]
fn events_follow_whether_any_backend_is_up() {
    let pool = Arc::new(Pool::new());
    let mut core = control(&pool);
    let t0 = Instant::now();
    let from = SocketAddr::from(([127, 0, 0, 1], 4000));
    let mut reply = Vec::new();
    core.handle_start(t0);
    core.handle_timeout(t0);
    assert_eq!(core.poll_event(), None, "no backend yet, and none was");
    let register = |core: &mut Control, name: &str| {
        let mut reply = Vec::new();
        core.handle_datagram(t0, Face::Control, from, format!("register {name} 4000").as_bytes(), &mut reply);
        String::from_utf8(reply).unwrap().trim().to_owned()
    };
    let web = register(&mut core, "web");
    core.handle_turn_end(t0 + PUBLISH);
    assert_eq!((core.poll_event(), core.poll_event()), (Some(Event::FirstBackendUp), None));
    let api = register(&mut core, "api");
    core.handle_timeout(t0 + FOLLOW * 2);
    assert_eq!(core.poll_event(), None, "a second name for a backend that is up already");

    // The forwarding threads mark it down: the core sees it at its next look.
    pool.get(from).unwrap().mark_failed();
    core.handle_timeout(t0 + FOLLOW * 4);
    assert_eq!(core.poll_event(), Some(Event::LastBackendGone));
    pool.get(from).unwrap().mark_up();
    core.handle_timeout(t0 + FOLLOW * 6);
    assert_eq!(core.poll_event(), Some(Event::FirstBackendUp));

    // Deregistered under both names: gone from the pool, so none is up.
    for id in [web, api] {
        reply.clear();
        core.handle_datagram(t0, Face::Control, from, format!("deregister {id}").as_bytes(), &mut reply);
        assert_eq!(reply, b"OK\n");
    }
    core.handle_timeout(t0 + FOLLOW * 8);
    assert_eq!((core.poll_event(), core.poll_event()), (Some(Event::LastBackendGone), None));
}

#[test]
fn backends_are_checked_with_a_connect_unless_they_declare_an_http_check() {
    let mut core = checking_control();
    let t0 = Instant::now();
    core.handle_start(t0);
    let from = SocketAddr::from(([127, 0, 0, 1], 40000));
    for line in ["register web 4000", "register web 4001 check=none", "register web 4002 check=http:/up"] {
        let mut reply = Vec::new();
        core.handle_datagram(t0, Face::Control, from, line.as_bytes(), &mut reply);
        assert_eq!(reply.len(), 37, "{line}: {}", String::from_utf8_lossy(&reply));
    }
    core.handle_timeout(t0 + Duration::from_secs(2));
    let mut checks: Vec<(u16, String)> = std::iter::from_fn(|| core.poll_probe())
        .filter_map(|command| match command {
            ProbeCmd::Start { addr, check, .. } => Some((addr.port(), check.to_string())),
            ProbeCmd::Abort { .. } => None,
        })
        .collect();
    checks.sort();
    assert_eq!(checks, [(4000, "tcp".into()), (4001, "tcp".into()), (4002, "http:/up".into())]);
}

#[test]
fn a_backend_that_declares_another_check_is_checked_with_it() {
    let mut core = checking_control();
    let t0 = Instant::now();
    core.handle_start(t0);
    let register = |core: &mut Control, from: u16, line: &str| {
        let mut reply = Vec::new();
        core.handle_datagram(t0, Face::Control, SocketAddr::from(([127, 0, 0, 1], from)), line.as_bytes(), &mut reply);
        assert_eq!(reply.len(), 37, "{line}: {}", String::from_utf8_lossy(&reply));
    };
    let probes = |core: &mut Control, at: Duration| {
        core.handle_timeout(t0 + at);
        std::iter::from_fn(|| core.poll_probe())
            .filter_map(|command| match command {
                ProbeCmd::Start { check, .. } => Some(check.to_string()),
                ProbeCmd::Abort { .. } => None,
            })
            .collect::<Vec<_>>()
    };
    register(&mut core, 40000, "register web 4000 check=http:/health");
    assert_eq!(probes(&mut core, Duration::from_secs(2)), ["http:/health"]);
    // Its replacement, from another source, declares a connect; the old lease goes.
    register(&mut core, 40001, "register web 4000 check=tcp");
    let mut reply = Vec::new();
    let old = core.registry.lease_id(
        "web",
        SocketAddr::from(([127, 0, 0, 1], 4000)),
        Source::Unicast(SocketAddr::from(([127, 0, 0, 1], 40000))),
    );
    core.handle_datagram(
        t0,
        Face::Control,
        SocketAddr::from(([127, 0, 0, 1], 40000)),
        format!("deregister {}", old.unwrap()).as_bytes(),
        &mut reply,
    );
    assert_eq!(reply, b"OK\n");
    let later: Vec<String> = (3..6).flat_map(|s| probes(&mut core, Duration::from_secs(s))).collect();
    assert!(!later.is_empty() && later.iter().all(|check| check == "tcp"), "{later:?}");
}

#[test]
fn the_control_ports_limits_are_counted_in_its_stats() {
    let pool = Arc::new(Pool::new());
    let counters = Arc::new(Counters::default());
    let registry = Registry::new(super::super::control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
    let limit = RateLimit { rate: 5, exempt: Vec::new() };
    let mut core = Control::new(registry, Arc::clone(&pool), Arc::clone(&counters), None, limit, false);
    let t0 = Instant::now();
    core.handle_start(t0);
    let from = SocketAddr::from(([10, 0, 0, 9], 40000));
    let mut reply = Vec::new();
    // One forged registration, over and over: past its 2,048 acknowledgements at once.
    for _ in 0..3000 {
        reply.clear();
        core.handle_datagram(t0, Face::Control, from, b"register web 10.0.0.9 4000", &mut reply);
    }
    // Stats, a reply larger than its request, over and over: past the rate.
    for _ in 0..50 {
        reply.clear();
        core.handle_datagram(t0, Face::Control, from, b"stats", &mut reply);
    }
    let stats = counters.stats(&pool);
    let value = |name: &str| stats.counters.iter().find(|c| c.name == name).map(|c| c.value);
    assert_eq!(value("acks_dropped"), Some(3000 - 2048));
    assert!(value("rate_dropped").is_some_and(|n| n > 0), "{:?}", value("rate_dropped"));
}
