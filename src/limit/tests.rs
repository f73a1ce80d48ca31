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
fn acknowledgements_pass_and_take_nothing_from_the_reply_buckets() {
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

/// A flood of forged registrations naming one victim: the first `ACK_BURST` acknowledgements
/// go, then `ACK_RATE` a second; the rest are dropped and counted. Another source is not
/// touched, and the victim's allowance comes back.
#[test]
fn acknowledgements_to_one_source_are_bounded() {
    let mut l = limiter(DEFAULT_RATE);
    let t0 = Instant::now();
    let victim: IpAddr = "198.51.100.9".parse().unwrap();
    let mut sent = 0u64;
    // 100,000 a second for 3 s.
    for k in 0..300_000u64 {
        let now = t0 + Duration::from_micros(10 * k);
        sent += u64::from(l.check_ack(now, victim));
    }
    let bound = u64::from(ACK_BURST) + 3 * u64::from(ACK_RATE) + 1;
    assert!(sent <= bound && sent >= bound - 10, "{sent} acknowledgements, at most {bound}");
    assert_eq!(l.stats().acks_dropped, 300_000 - sent);
    assert_eq!((l.stats().dropped, l.stats().slipped), (0, 0), "the reply counters are not theirs");
    assert!(l.check_ack(t0 + Duration::from_secs(3), "198.51.100.10".parse().unwrap()));
    let later = t0 + Duration::from_secs(5);
    assert!((0..ACK_BURST).all(|_| l.check_ack(later, victim)), "a full burst again");
    assert!(!l.check_ack(later, victim));
}

/// A host registering 1,000 instances at once, then heartbeating them every second: never
/// held back.
#[test]
fn a_busy_host_keeps_every_acknowledgement() {
    let mut l = limiter(DEFAULT_RATE);
    let t0 = Instant::now();
    let host: IpAddr = "192.0.2.7".parse().unwrap();
    for second in 0..20u64 {
        for k in 0..1000u64 {
            let now = t0 + Duration::from_secs(second) + Duration::from_micros(k);
            assert!(l.check_ack(now, host), "second {second}, ack {k}");
        }
    }
    assert_eq!(l.stats(), LimitStats::default());
}

#[test]
fn acknowledgements_are_unbounded_where_limiting_is_off_or_exempt() {
    let t0 = Instant::now();
    let mut off = limiter(0);
    let mut on = limiter(DEFAULT_RATE);
    for _ in 0..10_000 {
        assert!(off.check_ack(t0, "192.0.2.7".parse().unwrap()));
        assert!(on.check_ack(t0, "127.0.0.66".parse().unwrap()));
    }
    assert_eq!((off.acks.len(), on.acks.len()), (0, 0));
}

#[test]
fn acknowledgement_buckets_stay_within_bounds() {
    let mut l = limiter(DEFAULT_RATE);
    let t0 = Instant::now();
    for k in 0..200_000u32 {
        l.check_ack(t0, IpAddr::from(u32::to_be_bytes(0x0a00_0000 + k)));
    }
    assert!(l.acks.len() <= CAPACITY);
    // Past the table's room, the addresses it cannot track share one bucket (which the flood
    // spent): a second later a newcomer gets its acknowledgement, and all of them together no
    // more than one address would.
    assert_eq!(l.stats().acks_dropped, 200_000 - CAPACITY as u64 - u64::from(ACK_BURST));
    let later = t0 + Duration::from_secs(1);
    let newcomer: IpAddr = "192.0.2.1".parse().unwrap();
    assert!(l.check_ack(later, newcomer));
    let others = (0..10_000u32).filter(|k| l.check_ack(later, IpAddr::from(u32::to_be_bytes(0x0b00_0000 + k)))).count();
    assert_eq!(others, ACK_BURST as usize - 1);
    // Buckets that refilled are forgotten at the next sweep.
    l.check_ack(t0 + SWEEP + Duration::from_secs(2), "192.0.2.2".parse().unwrap());
    assert_eq!(l.acks.len(), 1);
}

/// A reload that changes the rate hands a source being limited no fresh burst, and keeps what
/// it spent of its acknowledgements.
#[test]
fn a_new_rate_keeps_what_each_source_spent() {
    let mut l = limiter(10);
    let t0 = Instant::now();
    let flood: IpAddr = "198.51.100.9".parse().unwrap();
    while l.check(t0, flood, 5, 500) == Verdict::Send {}
    let mut acks = 0;
    while l.limit_reply(t0, flood, crate::protocol::Form::Text, 5, &mut b"OK 1\n".to_vec(), ReplyKind::Ack) {
        acks += 1;
    }
    assert_eq!(acks, ACK_BURST);
    l.set_config(t0, RateLimit { rate: 20, exempt: loopback() });
    assert_ne!(l.check(t0, flood, 5, 500), Verdict::Send, "no fresh burst at the reload");
    assert!(
        !l.limit_reply(t0, flood, crate::protocol::Form::Text, 5, &mut b"OK 1\n".to_vec(), ReplyKind::Ack),
        "nor of acks"
    );
    // Refilled at the new rate: 20 a second, 2 in 100 ms.
    let later = t0 + 100 * MS;
    assert_eq!(l.check(later, flood, 5, 500), Verdict::Send);
    assert_eq!(l.check(later, flood, 5, 500), Verdict::Send);
    assert_ne!(l.check(later, flood, 5, 500), Verdict::Send);
    // A lower burst caps what a quiet source holds.
    l.set_config(later + Duration::from_secs(60), RateLimit { rate: 2, exempt: loopback() });
    let quiet = later + Duration::from_secs(60);
    assert_eq!(l.check(quiet, flood, 5, 500), Verdict::Send);
    assert_eq!(l.check(quiet, flood, 5, 500), Verdict::Send);
    assert_ne!(l.check(quiet, flood, 5, 500), Verdict::Send);
}
