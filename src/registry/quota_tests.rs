//! The quotas that keep the table from falling to many sources: per source address, per network
//! (a /24 in IPv4, a /56 in IPv6), and, once the table is nearly full, room kept for newcomers.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;

const TTL: Duration = Duration::from_secs(5);

fn table(limits: Limits) -> Registry {
    let mut next = 0u128;
    Registry::new(Config { ttl: TTL, limits, ..Config::default() }, move || {
        next += 1;
        Uuid::from_u128(next)
    })
}

fn from(ip: [u8; 4], port: u16) -> Source {
    Source::Unicast(SocketAddr::from((ip, port)))
}

/// `service` at the source's own address and `port`.
fn register(r: &mut Registry, now: Instant, source: Source, port: u16) -> Result<Registration, Rejection> {
    r.register(now, "echo", SocketAddr::new(source.ip(), port), source)
}

#[test]
fn networks_are_a_24_in_ipv4_and_a_56_in_ipv6() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(network(ip("10.1.2.3")), ip("10.1.2.0"));
    assert_eq!(network(ip("::ffff:10.1.2.3")), ip("10.1.2.0"));
    assert_eq!(network(ip("2001:db8:1:2ff:4:5:6:7")), ip("2001:db8:1:200::"));
    assert_ne!(network(ip("2001:db8:1:100::1")), network(ip("2001:db8:1:200::1")));
}

#[test]
fn a_hundred_sources_of_one_network_hold_at_most_its_quota_and_another_network_still_registers() {
    let limits = Limits { max_per_source: 10, max_per_network: 50, ..Limits::default() };
    let mut r = table(limits);
    let t0 = Instant::now();
    let mut held = 0;
    for host in 1..=100 {
        for port in 1..=5 {
            match register(&mut r, t0, from([10, 0, 0, host], 40000), port) {
                Ok(_) => held += 1,
                Err(refused) => {
                    assert_eq!(refused, Rejection::NetworkQuota { max: 50 });
                    assert_eq!(
                        refused.to_string(),
                        "quota: at most 50 instances registered from one network (/24 or /56)"
                    );
                }
            }
        }
    }
    assert_eq!((held, r.network_count([10, 0, 0, 77].into())), (50, 50));
    assert!(register(&mut r, t0, from([10, 0, 1, 1], 40000), 1).is_ok(), "another network");
    // A renewal is not a new lease; room comes back as leases go.
    assert!(!register(&mut r, t0, from([10, 0, 0, 1], 40000), 1).unwrap().created);
    r.handle_timeout(t0 + TTL);
    assert_eq!(r.network_count([10, 0, 0, 1].into()), 0);
    assert!(register(&mut r, t0 + TTL, from([10, 0, 0, 200], 40000), 1).is_ok());
}

#[test]
fn the_source_quota_still_comes_first_and_zero_turns_the_network_quota_off() {
    let mut r = table(Limits { max_per_source: 2, max_per_network: 0, ..Limits::default() });
    let t0 = Instant::now();
    for host in 1..=200u8 {
        for port in 1..=2 {
            register(&mut r, t0, from([10, 0, 0, host], 40000), port).unwrap();
        }
        assert_eq!(register(&mut r, t0, from([10, 0, 0, host], 40000), 3), Err(Rejection::SourceQuota { max: 2 }));
    }
    assert_eq!(r.network_count([10, 0, 0, 1].into()), 400);
}

#[test]
fn a_nearly_full_table_refuses_a_source_that_holds_much_before_a_newcomer() {
    // 100 leases at most: 90 is nearly full; "much" is 128 / 16 = 8 for a source, 1000 / 16 = 62
    // for a network.
    let limits = Limits { max_instances: 100, max_per_source: 128, max_per_network: 1000, ..Limits::default() };
    let mut r = table(limits);
    let t0 = Instant::now();
    let big = from([10, 0, 0, 1], 40000);
    for port in 1..=64 {
        register(&mut r, t0, big, port).unwrap();
    }
    for k in 0..26 {
        register(&mut r, t0, from([10, 0, 1, 1 + k], 40000), 1).unwrap();
    }
    assert_eq!(r.lease_count(), 90, "nearly full now");
    let refused = register(&mut r, t0, big, 65).unwrap_err();
    assert_eq!(refused, Rejection::NearlyFull { held: 8 });
    assert_eq!(refused.to_string(), "nearly full: the rest is kept for sources holding fewer than 8 instances");
    // Its network holds 64 of them too: its other hosts wait as well.
    assert_eq!(register(&mut r, t0, from([10, 0, 0, 2], 40000), 1), Err(Rejection::NearlyFull { held: 62 }));
    // A newcomer from elsewhere still gets in, and keeps getting in until it holds much.
    let newcomer = from([192, 168, 5, 5], 40000);
    for port in 1..=8 {
        assert!(register(&mut r, t0, newcomer, port).is_ok());
    }
    assert_eq!(register(&mut r, t0, newcomer, 9), Err(Rejection::NearlyFull { held: 8 }));
    // Up to the last slot, then full for everyone.
    for k in 0..2 {
        assert!(register(&mut r, t0, from([172, 16, k, 1], 40000), 1).is_ok());
    }
    assert_eq!(register(&mut r, t0, from([172, 16, 9, 1], 40000), 1), Err(Rejection::Full { max: 100 }));
}
