use super::*;

fn limiter(rate: u32) -> ResponseLimiter {
    ResponseLimiter::new(RateLimit { rate, exempt: loopback() })
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn replies_no_larger_than_the_request_are_always_sent() {
    let mut l = limiter(1);
    let t0 = Instant::now();
    let victim: IpAddr = "192.0.2.7".parse().unwrap();
    for _ in 0..1000 {
        assert_eq!(l.check(t0, victim, 50, 3), Verdict::Send);
        assert_eq!(l.check(t0, victim, 20, 20), Verdict::Send);
    }
    assert_eq!(l.stats(), LimitStats::default());
}

/// A spoofer sends 10,000 small queries a second for 3 s in the name of one victim: the victim
/// gets at most what was sent, plus `rate` full replies a second (and the first burst).
#[test]
fn bytes_towards_one_spoofed_address_are_bounded() {
    let rate = 200;
    let mut l = limiter(rate);
    let t0 = Instant::now();
    let victim: IpAddr = "198.51.100.9".parse().unwrap();
    let (request, reply, slip) = (5usize, 1391usize, 4usize);
    let (mut bytes_in, mut bytes_out, mut full) = (0usize, 0usize, 0usize);
    for k in 0..30_000u32 {
        let now = t0 + Duration::from_micros(100 * u64::from(k));
        bytes_in += request;
        match l.check(now, victim, request, reply) {
            Verdict::Send => {
                bytes_out += reply;
                full += 1;
            }
            Verdict::Slip if slip <= request => bytes_out += slip,
            Verdict::Slip => l.slip_dropped(),
            Verdict::Drop => {}
        }
    }
    let seconds = 3;
    assert!(full <= rate as usize * (seconds + 1), "{full} full replies");
    assert!(bytes_out <= bytes_in + rate as usize * (seconds + 1) * 1400, "{bytes_out} out for {bytes_in} in");
    // Without limiting, the factor is 1391 / 5 = 278; with it, the full replies of one second's
    // worth of tokens spread over 10,000 requests.
    let factor = bytes_out as f64 / bytes_in as f64;
    assert!(factor < 8.0, "amplification {factor}");
    let stats = l.stats();
    assert_eq!(stats.dropped + stats.slipped + full as u64, 30_000);
    assert!(stats.slipped > 10_000, "every second limited request slips: {stats:?}");
}

#[test]
fn many_addresses_of_one_network_share_its_bucket() {
    let rate = 100;
    let mut l = limiter(rate);
    let t0 = Instant::now();
    let mut sent = 0;
    // 250 addresses of one /24, each well under its own rate, for one second.
    for k in 0..10_000u32 {
        let now = t0 + Duration::from_micros(100 * u64::from(k));
        let source = IpAddr::from([203, 0, 113, (k % 250) as u8]);
        if l.check(now, source, 10, 1000) == Verdict::Send {
            sent += 1;
        }
    }
    assert!(sent <= 4 * 100 * 2, "{sent}");
    assert!(sent >= 4 * 100, "{sent}");
    // Another network is not affected.
    assert_eq!(l.check(t0 + 1000 * MS, "203.0.114.1".parse().unwrap(), 10, 1000), Verdict::Send);
}

#[test]
fn loopback_and_exempt_networks_are_not_limited_and_zero_is_off() {
    let mut l = ResponseLimiter::new(RateLimit { rate: 1, exempt: vec!["10.0.0.0/8".parse().unwrap()] });
    let t0 = Instant::now();
    for _ in 0..100 {
        assert_eq!(l.check(t0, "10.1.2.3".parse().unwrap(), 1, 1000), Verdict::Send);
    }
    assert_eq!(l.check(t0, "127.0.0.1".parse().unwrap(), 1, 1000), Verdict::Send);
    assert_ne!(l.check(t0, "127.0.0.1".parse().unwrap(), 1, 1000), Verdict::Send, "not exempt here");
    let mut off = limiter(0);
    for _ in 0..100 {
        assert_eq!(off.check(t0, "192.0.2.1".parse().unwrap(), 1, 1000), Verdict::Send);
    }
    let mut default = limiter(1);
    for _ in 0..100 {
        assert_eq!(
            default.check(t0, "::ffff:127.0.0.1".parse().unwrap(), 1, 1000),
            Verdict::Send,
            "mapped loopback too"
        );
    }
}

#[test]
fn a_flood_of_sources_is_tracked_within_bounds() {
    let mut l = limiter(10);
    let t0 = Instant::now();
    for k in 0..200_000u32 {
        let source = IpAddr::from(u32::to_be_bytes(0x0a00_0000 + k * 256));
        l.check(t0, source, 1, 100);
    }
    assert!(l.addresses.len() <= CAPACITY && l.networks.len() <= CAPACITY);
    assert!(l.limited.len() <= CAPACITY);
}

#[test]
fn acknowledgements_pass_and_leave_no_state() {
    let mut l = limiter(1);
    let t0 = Instant::now();
    let host: IpAddr = "192.0.2.7".parse().unwrap();
    for _ in 0..1000 {
        let mut reply = vec![b'x'; 37];
        assert!(l.limit_reply(t0, host, crate::protocol::Form::Text, 20, &mut reply, ReplyKind::Ack));
        assert_eq!(reply.len(), 37);
    }
    assert_eq!((l.addresses.len(), l.networks.len(), l.limited.len()), (0, 0, 0));
    assert_eq!(l.stats(), LimitStats::default());
    // Its one token still serves a larger reply; the next is limited.
    let mut reply = vec![b'x'; 37];
    assert!(l.limit_reply(t0, host, crate::protocol::Form::Text, 20, &mut reply, ReplyKind::Data));
    assert!(!l.limit_reply(t0, host, crate::protocol::Form::Text, 20, &mut reply, ReplyKind::Data));
}
