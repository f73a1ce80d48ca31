//! Declared checks in the table: kept per lease in one shared pointer, changed by a refresh,
//! carried by the changes, merged from peers.

use super::*;
use std::net::IpAddr;

const SERVER: Source = Source::Unicast(SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000));

fn registry() -> Registry {
    let mut next = 0u128;
    Registry::new(Config::default(), move || {
        next += 1;
        Uuid::from_u128(next)
    })
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn changes(r: &mut Registry) -> Vec<(ChangeKind, String)> {
    std::iter::from_fn(|| r.poll_change()).map(|c| (c.kind, c.check.to_string())).collect()
}

#[test]
fn each_lease_keeps_its_check_and_a_refresh_changes_it() {
    let (mut r, t0) = (registry(), Instant::now());
    let none = r.register(t0, "dns", addr(53), SERVER).unwrap().id;
    let tcp = r.register_checked(t0, "echo", addr(4000), SERVER, Check::Tcp).unwrap().id;
    let http = r.register_checked(t0, "web", addr(80), SERVER, Check::Http("/health")).unwrap().id;
    assert_eq!(r.check_of(none).map(|c| c.as_deref()), Some(Check::None));
    assert_eq!(r.check_of(tcp).map(|c| c.as_deref()), Some(Check::Tcp));
    assert_eq!(r.check_of(http).map(|c| c.as_deref()), Some(Check::Http("/health")));
    assert_eq!(
        changes(&mut r),
        [
            (ChangeKind::Registered, "none".into()),
            (ChangeKind::Registered, "tcp".into()),
            (ChangeKind::Registered, "http:/health".into())
        ]
    );

    // A refresh with the same check allocates nothing; with another, the lease's check changes.
    let before = Arc::clone(r.check_of(http).unwrap());
    r.register_checked(t0, "web", addr(80), SERVER, Check::Http("/health")).unwrap();
    assert!(Arc::ptr_eq(&before, r.check_of(http).unwrap()));
    assert_eq!(r.register_checked(t0, "web", addr(80), SERVER, Check::Tcp).unwrap().id, http);
    assert_eq!(r.check_of(http).map(|c| c.as_deref()), Some(Check::Tcp));
    assert_eq!(
        changes(&mut r),
        [(ChangeKind::Refreshed, "http:/health".into()), (ChangeKind::Refreshed, "tcp".into())]
    );
    // Every tcp lease shares one pointer: a lease's check costs 8 bytes.
    assert!(Arc::ptr_eq(r.check_of(tcp).unwrap(), r.check_of(http).unwrap()));
    assert_eq!(std::mem::size_of::<SharedCheck>(), 8);

    // A removal carries the check it had.
    r.deregister(t0, tcp).unwrap();
    assert_eq!(changes(&mut r), [(ChangeKind::Removed(RemoveReason::Deregistered), "tcp".into())]);
    // A check the text form could not carry is refused in any form.
    assert!(matches!(
        r.register_checked(t0, "web", addr(81), SERVER, Check::Http("no-slash")),
        Err(Rejection::BadCheck { .. })
    ));
}

#[test]
fn a_peers_lease_brings_its_check_and_a_renewal_changes_it() {
    let (mut r, t0) = (registry(), Instant::now());
    let id = Uuid::from_u128(77);
    let view = |check| LeaseView {
        id,
        service: "web",
        endpoint: addr(80),
        source: SERVER,
        ttl_left: Duration::from_secs(3),
        aliases: &[],
        check,
        meta: None,
    };
    assert_eq!(r.apply_remote(t0, view(Check::Http("/up"))), Applied::Inserted);
    assert_eq!(r.view(t0, id).unwrap().check, Check::Http("/up"));
    assert_eq!(r.apply_remote(t0 + Duration::from_secs(1), view(Check::Tcp)), Applied::Refreshed);
    assert_eq!(r.view(t0, id).unwrap().check, Check::Tcp);
    let mut pages = Vec::new();
    r.page(t0, Cursor::START, |v| {
        pages.push(v.check.to_string());
        true
    });
    assert_eq!(pages, ["tcp"]);
    // A peer's lease with a check the text form could not carry is refused.
    let bad = LeaseView { id: Uuid::from_u128(78), endpoint: addr(81), ..view(Check::Http("x")) };
    assert!(matches!(r.apply_remote(t0, bad), Applied::Refused(Rejection::BadCheck { .. })));
}

#[test]
fn a_peers_late_renewal_does_not_undo_a_newer_check_nor_may_a_peer_inject_a_path() {
    let (mut r, t0) = (registry(), Instant::now());
    let id = Uuid::from_u128(90);
    let view = |check, ttl| LeaseView {
        id,
        service: "web",
        endpoint: addr(80),
        source: SERVER,
        ttl_left: Duration::from_secs(ttl),
        aliases: &[],
        check,
        meta: None,
    };
    assert_eq!(r.apply_remote(t0, view(Check::Tcp, 3)), Applied::Inserted);
    assert_eq!(r.apply_remote(t0, view(Check::Http("/up"), 4)), Applied::Refreshed);
    // An older renewal (less time left than the lease has) arriving late changes nothing.
    assert_eq!(r.apply_remote(t0, view(Check::None, 2)), Applied::Unchanged);
    assert_eq!(r.view(t0, id).unwrap().check, Check::Http("/up"));
    // A known lease is held to the rules too: its path would go into a request line.
    let injected = view(Check::Http("/\r\nHost: evil\r\nX: "), 5);
    assert!(matches!(r.apply_remote(t0, injected), Applied::Refused(Rejection::BadCheck { .. })));
    assert_eq!(r.view(t0, id).unwrap().check, Check::Http("/up"));
}

#[test]
fn an_instance_declares_the_strongest_check_of_its_leases() {
    let (mut r, t0) = (registry(), Instant::now());
    let other = Source::Unicast(addr(50001));
    let plain = r.register(t0, "web", addr(80), other).unwrap().id;
    let tcp = r.register_checked(t0, "web", addr(80), SERVER, Check::Tcp).unwrap().id;
    // Renewals of either lease say what the instance declares, so they do not flip it.
    r.heartbeat(t0, plain).unwrap();
    r.heartbeat(t0, tcp).unwrap();
    r.heartbeat(t0, plain).unwrap();
    assert_eq!(
        changes(&mut r),
        [
            (ChangeKind::Registered, "none".into()),
            (ChangeKind::Registered, "tcp".into()),
            (ChangeKind::Refreshed, "tcp".into()),
            (ChangeKind::Refreshed, "tcp".into()),
            (ChangeKind::Refreshed, "tcp".into())
        ]
    );
    // The lease that declared the check goes: the instance declares what the other one does.
    r.deregister(t0, tcp).unwrap();
    assert_eq!(changes(&mut r), [(ChangeKind::Removed(RemoveReason::Deregistered), "none".into())]);
    // An HTTP check is stronger than a connect.
    r.register_checked(t0, "web", addr(80), SERVER, Check::Http("/h")).unwrap();
    r.register_checked(t0, "web", addr(80), Source::Unicast(addr(50002)), Check::Tcp).unwrap();
    assert_eq!(
        changes(&mut r),
        [(ChangeKind::Registered, "http:/h".into()), (ChangeKind::Registered, "http:/h".into())]
    );
}
