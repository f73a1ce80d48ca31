use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn starts(prober: &mut Prober) -> Vec<(ProbeId, SocketAddr)> {
    std::iter::from_fn(|| prober.poll_command())
        .filter_map(|c| match c {
            ProbeCmd::Start { id, addr, .. } => Some((id, addr)),
            ProbeCmd::Abort { .. } => None,
        })
        .collect()
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn one_probe_per_address_and_a_bounded_number_at_once() {
    let t0 = Instant::now();
    let mut prober = Prober::new(ProberConfig { timeout: SECOND, max_in_flight: 3 });
    for port in 1..=5 {
        assert!(prober.probe(t0, addr(port)));
    }
    for _ in 0..100 {
        assert!(!prober.probe(t0, addr(1)), "joins the running probe");
        assert!(!prober.probe(t0, addr(5)), "joins the waiting probe");
    }
    let first = starts(&mut prober);
    assert_eq!(first.iter().map(|&(_, a)| a).collect::<Vec<_>>(), [addr(1), addr(2), addr(3)]);
    assert_eq!(prober.in_flight(), 3);
    prober.handle_outcome(t0, first[0].0, ProbeOutcome::Connected);
    prober.handle_outcome(t0, first[1].0, ProbeOutcome::Failed(io::ErrorKind::ConnectionRefused));
    assert_eq!(starts(&mut prober).iter().map(|&(_, a)| a).collect::<Vec<_>>(), [addr(4), addr(5)]);
    let results: Vec<_> = std::iter::from_fn(|| prober.poll_result()).collect();
    assert_eq!(results, [(addr(1), Probe::Alive), (addr(2), Probe::Failed(io::ErrorKind::ConnectionRefused))]);
    let stats = prober.stats();
    assert_eq!((stats.started, stats.alive, stats.dead, stats.joined), (5, 1, 1, 200));
}

#[test]
fn a_probe_past_its_deadline_is_aborted_and_times_out() {
    let t0 = Instant::now();
    let mut prober = Prober::new(ProberConfig { timeout: SECOND, max_in_flight: 8 });
    prober.probe(t0, addr(1));
    let [(id, _)] = starts(&mut prober)[..] else { panic!() };
    assert_eq!(prober.poll_timeout(), Some(t0 + SECOND));
    prober.handle_timeout(t0 + SECOND - Duration::from_nanos(1));
    assert_eq!(prober.poll_result(), None);
    prober.handle_timeout(t0 + SECOND);
    assert_eq!(prober.poll_command(), Some(ProbeCmd::Abort { id }));
    assert_eq!(prober.poll_result(), Some((addr(1), Probe::TimedOut)));
    // The shell may still report it; the prober has moved on.
    prober.handle_outcome(t0 + SECOND, id, ProbeOutcome::Connected);
    assert_eq!(prober.poll_result(), None);
    assert!(!prober.is_probing(addr(1)));
}

#[test]
fn a_local_failure_is_no_verdict() {
    let t0 = Instant::now();
    let mut prober = Prober::new(ProberConfig::default());
    prober.probe(t0, addr(1));
    let [(id, _)] = starts(&mut prober)[..] else { panic!() };
    prober.handle_outcome(t0, id, ProbeOutcome::Local(io::ErrorKind::Other));
    assert_eq!(prober.poll_result(), Some((addr(1), Probe::Unknown)));
    assert!(!Probe::Unknown.is_dead() && Probe::TimedOut.is_dead());
    assert_eq!(prober.stats().dead, 0);
}

#[test]
fn a_target_is_down_after_fall_failures_and_up_after_one_success() {
    let t0 = Instant::now();
    let mut schedule = Schedule::new(SECOND, 2);
    schedule.add(t0, addr(1));
    let dead = Probe::Failed(io::ErrorKind::ConnectionRefused);
    let verdicts: Vec<_> =
        [dead, Probe::Alive, dead, Probe::Unknown, dead, Probe::TimedOut, Probe::Alive, Probe::Alive]
            .into_iter()
            .map(|p| schedule.on_result(addr(1), p))
            .collect();
    assert_eq!(verdicts, [None, None, None, None, Some(Verdict::Down), None, Some(Verdict::Up), None]);
    assert_eq!(schedule.on_result(addr(2), dead), None, "not a target");
}

/// 10,000 targets over a 10 s interval: each is probed once per interval, the probes are
/// spread over the interval, and every one of them black-holed costs the round one timeout.
#[test]
fn targets_are_spread_over_the_interval_and_probed_once_a_round() {
    let t0 = Instant::now();
    let interval = Duration::from_secs(10);
    let mut schedule = Schedule::new(interval, 1);
    let mut prober = Prober::new(ProberConfig { timeout: SECOND, max_in_flight: 10_000 });
    let targets: Vec<SocketAddr> =
        (0..10_000u32).map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80))).collect();
    for &target in &targets {
        schedule.add(t0, target);
    }
    let mut per_second = [0usize; 10];
    let mut probed: HashMap<SocketAddr, usize> = HashMap::new();
    let mut now = t0;
    while let Some(at) = schedule.poll_timeout() {
        if at >= t0 + interval {
            break;
        }
        now = at;
        schedule.handle_timeout(now, &mut prober);
        for (_, target) in starts(&mut prober) {
            per_second[(now - t0).as_secs() as usize] += 1;
            *probed.entry(target).or_insert(0) += 1;
        }
        // Every probe is black-holed: none ever answers.
        prober.handle_timeout(now);
    }
    assert_eq!(probed.len(), targets.len());
    assert!(probed.values().all(|&n| n == 1));
    assert!(per_second.iter().all(|&n| (800..=1200).contains(&n)), "{per_second:?}");
    // All of them time out within one timeout of their start.
    prober.handle_timeout(now + SECOND);
    let mut down = 0;
    while let Some((target, probe)) = prober.poll_result() {
        assert_eq!(probe, Probe::TimedOut);
        down += usize::from(schedule.on_result(target, probe) == Some(Verdict::Down));
    }
    assert_eq!(down, targets.len());
    assert_eq!(prober.in_flight(), 0);
}

#[test]
fn a_late_wake_does_not_probe_twice_and_a_removed_target_is_not_probed() {
    let t0 = Instant::now();
    let mut schedule = Schedule::new(SECOND, 1);
    let mut prober = Prober::new(ProberConfig::default());
    schedule.add(t0, addr(1));
    schedule.add(t0, addr(2));
    schedule.add(t0, addr(2));
    assert_eq!(schedule.len(), 2);
    schedule.remove(addr(2));
    schedule.handle_timeout(t0 + 5 * SECOND, &mut prober);
    assert_eq!(starts(&mut prober).len(), 1);
    assert!(schedule.poll_timeout().is_some_and(|at| at > t0 + 5 * SECOND && at <= t0 + 6 * SECOND));
}

#[test]
fn probes_carry_their_check_even_when_they_wait() {
    let t0 = Instant::now();
    let http = SharedCheck::new(Check::Http("/health".into()));
    let mut prober = Prober::new(ProberConfig { timeout: SECOND, max_in_flight: 1 });
    prober.probe(t0, addr(1));
    prober.probe_checked(t0, addr(2), SharedCheck::clone(&http));
    assert!(!prober.probe(t0, addr(2)), "another check of the same address joins it");
    let Some(ProbeCmd::Start { id, check, .. }) = prober.poll_command() else { panic!() };
    assert_eq!(*check, Check::Tcp);
    prober.handle_outcome(t0, id, ProbeOutcome::Connected);
    let Some(ProbeCmd::Start { addr: second, check, .. }) = prober.poll_command() else { panic!() };
    assert_eq!((second, check), (addr(2), http));
}

#[test]
fn a_schedule_probes_each_target_with_its_check() {
    let t0 = Instant::now();
    let http = SharedCheck::new(Check::Http("/".into()));
    let mut prober = Prober::new(ProberConfig { timeout: SECOND, max_in_flight: 8 });
    let mut schedule = Schedule::new(SECOND, 2);
    schedule.add(t0, addr(1));
    schedule.add_checked(t0, addr(2), SharedCheck::new(Check::Tcp));
    schedule.add_checked(t0, addr(2), SharedCheck::clone(&http));
    schedule.handle_timeout(t0 + SECOND, &mut prober);
    let mut checks: Vec<_> = std::iter::from_fn(|| prober.poll_command())
        .filter_map(|c| match c {
            ProbeCmd::Start { addr, check, .. } => Some((addr, check)),
            ProbeCmd::Abort { .. } => None,
        })
        .collect();
    checks.sort_by_key(|&(a, _)| a);
    assert_eq!(checks, [(addr(1), SharedCheck::new(Check::Tcp)), (addr(2), http)]);
}

#[test]
fn with_rise_a_target_needs_that_many_successes_in_a_row_and_can_be_told_its_state() {
    let mut schedule = Schedule::new(Duration::from_secs(1), 3).with_rise(2);
    let a = addr(1);
    schedule.add(Instant::now(), a);
    let fail = Probe::Failed(io::ErrorKind::ConnectionRefused);
    let verdicts: Vec<_> =
        [fail, fail, Probe::Alive, fail, fail, fail].into_iter().map(|p| schedule.on_result(a, p)).collect();
    assert_eq!(verdicts, [None, None, None, None, None, Some(Verdict::Down)], "three failures in a row");
    let verdicts: Vec<_> =
        [Probe::Alive, fail, Probe::Alive, Probe::Alive].into_iter().map(|p| schedule.on_result(a, p)).collect();
    assert_eq!(verdicts, [None, None, None, Some(Verdict::Up)], "two successes in a row");
    // Marked down elsewhere (a balancer's failed connect): two successes bring it back.
    schedule.set_down(a, true);
    assert!(schedule.is_down(a));
    assert_eq!(schedule.on_result(a, Probe::Alive), None);
    assert_eq!(schedule.on_result(a, Probe::Alive), Some(Verdict::Up));
}

/// A reload of `rise` or `fall` alone moves no probe, and its thresholds count at once; a new
/// interval probes each target within one new interval, at its phase.
#[test]
fn a_retime_moves_probes_only_for_a_new_interval() {
    let t0 = Instant::now();
    let mut schedule = Schedule::new(SECOND, 3);
    let mut prober = Prober::new(ProberConfig { timeout: SECOND, max_in_flight: 8 });
    schedule.add(t0, addr(1));
    let first = schedule.poll_timeout().unwrap();
    schedule.handle_timeout(first, &mut prober);
    assert_eq!(schedule.poll_timeout(), Some(first + SECOND));
    let dead = Probe::Failed(io::ErrorKind::ConnectionRefused);
    assert_eq!(schedule.on_result(addr(1), dead), None, "one failure of three");
    let reload = first + SECOND / 2 + Duration::from_millis(1);
    schedule.retime(reload, SECOND, 2, 2);
    assert_eq!(schedule.poll_timeout(), Some(first + SECOND), "the same interval keeps the time");
    assert_eq!(schedule.on_result(addr(1), dead), Some(Verdict::Down), "two failures of the new two");
    schedule.retime(reload, 4 * SECOND, 2, 2);
    let next = schedule.poll_timeout().unwrap();
    assert!(next >= reload && next < reload + 4 * SECOND, "within one new interval");
}
