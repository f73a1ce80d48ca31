//! `--backends-from SERVICE`: backends taken from a service the brokers hold, beside those that
//! register at the control port.
//!
//! The balancer's shell watches SERVICE at its brokers (`super::super::feed`, on its own thread)
//! and hands the core the whole live set each time it changes, through the shell's command
//! channel ([`Command::Watched`](super::reload::Command::Watched)), each instance with the weight
//! its metadata declares (`weight=N`, read as a registration's is). The core keeps the set as
//! last told and stages the difference for the pool, so a set that replaces the one before (a
//! watch renewed or started again after a broker restart) leaves nothing stale. A watched
//! backend is checked with a TCP connect; it goes through the same pool, policy and health
//! checks as a registered one. An endpoint both watched and registered stays while either holds
//! it (it counts as one more name in `names`); it weighs, and is checked, as its registration
//! declares while that lasts, and as a watched backend again once the watch alone holds it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::Control;

impl Control {
    /// Takes `instances` (each with its weight) as the watched service's whole live set: those
    /// new to it become backends, those gone from it leave (unless they are also registered),
    /// and those whose weight changed take it (unless a registration holds them too).
    pub(crate) fn set_watched(&mut self, now: Instant, instances: Vec<(SocketAddr, u32)>) {
        let new: HashMap<SocketAddr, u32> = instances.into_iter().collect();
        let gone: Vec<SocketAddr> = self.watched.keys().filter(|e| !new.contains_key(e)).copied().collect();
        for endpoint in gone {
            let left = self.names.get_mut(&endpoint).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                self.names.remove(&endpoint);
                self.staged_adds.retain(|(addr, _)| *addr != endpoint);
                self.staged_removes.push(endpoint);
                if let Some(health) = &mut self.health {
                    health.schedule.remove(endpoint);
                }
            }
        }
        let before = std::mem::replace(&mut self.watched, new);
        let mut reweighed = Vec::new();
        for (&endpoint, &weight) in &self.watched {
            match before.get(&endpoint) {
                None => {
                    let names = self.names.entry(endpoint).or_insert(0);
                    *names += 1;
                    if *names == 1 {
                        self.staged_removes.retain(|addr| *addr != endpoint);
                        self.staged_adds.push((endpoint, weight));
                        if let Some(health) = &mut self.health {
                            health.schedule.add(now, endpoint);
                        }
                    }
                }
                Some(&old) if old != weight => reweighed.push(endpoint),
                Some(_) => {}
            }
        }
        for endpoint in reweighed {
            if let Some(weight) = self.watched_only(endpoint) {
                self.follow_weight(endpoint, weight);
            }
        }
    }

    /// The weight the watch gives `endpoint`, when the watch alone holds it (no registration).
    pub(super) fn watched_only(&self, endpoint: SocketAddr) -> Option<u32> {
        let weight = *self.watched.get(&endpoint)?;
        (self.names.get(&endpoint) == Some(&1)).then_some(weight)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::{Control, Face, PUBLISH};
    use crate::balancer::{Counters, Pool};
    use crate::core::Core;
    use crate::limit::RateLimit;
    use crate::registry::Registry;

    fn addr(port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn listed(pool: &Pool) -> Vec<u16> {
        let mut ports: Vec<u16> =
            [4000, 4001, 4002, 4003].into_iter().filter(|&p| pool.get(addr(p)).is_some()).collect();
        ports.sort_unstable();
        ports
    }

    #[test]
    fn a_watched_set_is_added_removed_and_replaced_and_shares_endpoints_with_registrations() {
        let pool = Arc::new(Pool::new());
        let registry = Registry::new(crate::balancer::control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
        let mut core =
            Control::new(registry, Arc::clone(&pool), Arc::new(Counters::default()), None, RateLimit::default(), false);
        let t0 = Instant::now();
        core.handle_start(t0);
        let mut at = t0;
        let watched = |core: &mut Control, at: &mut Instant, ports: &[u16]| {
            *at += PUBLISH * 2;
            let at = *at;
            let instances = ports.iter().map(|&p| (addr(p), 1)).collect();
            core.handle_command(at, super::super::reload::Command::Watched(instances));
            core.handle_turn_end(at);
        };
        watched(&mut core, &mut at, &[4000, 4001]);
        assert_eq!(listed(&pool), [4000, 4001], "added");
        assert_eq!(pool.get(addr(4000)).unwrap().weight(), 1);
        watched(&mut core, &mut at, &[4001]);
        assert_eq!(listed(&pool), [4001], "removed");
        // A re-sync (the watch renewed, or a broker restarted) replaces the set.
        watched(&mut core, &mut at, &[4002, 4003]);
        assert_eq!(listed(&pool), [4002, 4003], "replaced");
        // An endpoint registered too stays while either holds it.
        let mut reply = Vec::new();
        core.handle_datagram(at, Face::Control, addr(4002), b"register web 4002", &mut reply);
        assert!(!reply.starts_with(b"ERROR"), "{}", String::from_utf8_lossy(&reply));
        watched(&mut core, &mut at, &[]);
        assert_eq!(listed(&pool), [4002], "still registered");
        watched(&mut core, &mut at, &[4002]);
        let uuid = String::from_utf8_lossy(&reply).trim().to_owned();
        reply.clear();
        core.handle_datagram(at, Face::Control, addr(4002), format!("deregister {uuid}").as_bytes(), &mut reply);
        assert_eq!(reply.trim_ascii(), b"OK");
        core.handle_turn_end(at + PUBLISH * 2);
        assert_eq!(listed(&pool), [4002], "still watched");
    }

    /// A core fed `instances` (port, weight) at `at`, published.
    fn watch(core: &mut Control, at: &mut Instant, instances: &[(u16, u32)]) {
        *at += PUBLISH * 2;
        let instances = instances.iter().map(|&(p, w)| (addr(p), w)).collect();
        core.handle_command(*at, super::super::reload::Command::Watched(instances));
        core.handle_turn_end(*at);
    }

    /// How many of `n` picks from `pool` (each lease dropped before the next) went to each port.
    fn picks(pool: &Pool, n: usize) -> std::collections::BTreeMap<u16, usize> {
        let mut draw = crate::balancer::policy::Draw::new(7);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..n {
            let lease = pool.pick(&[], &mut draw).expect("a backend");
            *counts.entry(lease.addr.port()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn watched_instances_weigh_what_they_declare_under_every_policy() {
        use crate::balancer::Policy;
        for policy in [Policy::RoundRobin, Policy::LeastConn, Policy::RandomTwo] {
            let pool = Arc::new(Pool::with_policy(policy));
            let registry = Registry::new(crate::balancer::control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
            let mut core = Control::new(
                registry,
                Arc::clone(&pool),
                Arc::new(Counters::default()),
                None,
                RateLimit::default(),
                false,
            );
            let mut at = Instant::now();
            core.handle_start(at);
            watch(&mut core, &mut at, &[(4000, 1), (4001, 3)]);
            assert_eq!((pool.get(addr(4000)).unwrap().weight(), pool.get(addr(4001)).unwrap().weight()), (1, 3));
            let counts = picks(&pool, 400);
            match policy {
                // Drawn at random: 1:3 within a wide margin (the draw is seeded: the same each run).
                Policy::RandomTwo => assert!((60..=140).contains(&counts[&4000]), "{policy}: {counts:?}"),
                _ => assert_eq!(counts, [(4000, 100), (4001, 300)].into(), "{policy}"),
            }
        }
    }

    #[test]
    fn a_watched_weight_follows_the_metadata_and_a_registration_weighs_more() {
        let pool = Arc::new(Pool::new());
        let registry = Registry::new(crate::balancer::control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
        let mut core =
            Control::new(registry, Arc::clone(&pool), Arc::new(Counters::default()), None, RateLimit::default(), false);
        let mut at = Instant::now();
        core.handle_start(at);
        let weight = |port: u16| pool.get(addr(port)).map(|b| b.weight());
        watch(&mut core, &mut at, &[(4000, 2), (4001, 1)]);
        assert_eq!((weight(4000), weight(4001)), (Some(2), Some(1)));
        // Only the metadata changed (a WatchMeta notification): the weights follow.
        watch(&mut core, &mut at, &[(4000, 1), (4001, 5)]);
        assert_eq!((weight(4000), weight(4001)), (Some(1), Some(5)));
        assert_eq!(picks(&pool, 6), [(4000, 1), (4001, 5)].into());
        // Registered at the control port too: its registration's weight holds, whatever the watch says.
        let mut reply = Vec::new();
        core.handle_datagram(at, Face::Control, addr(4001), b"register web 4001 weight=2", &mut reply);
        let uuid = String::from_utf8_lossy(&reply).trim().to_owned();
        assert_eq!(uuid.len(), 36, "{uuid}");
        at += PUBLISH * 2;
        core.handle_turn_end(at);
        assert_eq!(weight(4001), Some(2));
        watch(&mut core, &mut at, &[(4000, 1), (4001, 7)]);
        assert_eq!(weight(4001), Some(2), "the registration's");
        // The registration goes: the watch alone holds it, at the weight it last told.
        reply.clear();
        core.handle_datagram(at, Face::Control, addr(4001), format!("deregister {uuid}").as_bytes(), &mut reply);
        assert_eq!(reply.trim_ascii(), b"OK");
        at += PUBLISH * 2;
        core.handle_turn_end(at);
        assert_eq!(weight(4001), Some(7));
    }

    /// A core on `pool`, started at `at`, with health checks when `checked` (every second).
    fn core_on(pool: &Arc<Pool>, at: Instant, checked: bool) -> Control {
        let registry = Registry::new(crate::balancer::control_registry(Duration::from_secs(5)), uuid::Uuid::new_v4);
        let health = checked
            .then(|| crate::balancer::health::Health::new(Duration::from_secs(1), Duration::from_millis(500), 2, 3));
        let mut core = Control::new(
            registry,
            Arc::clone(pool),
            Arc::new(Counters::default()),
            health,
            RateLimit::default(),
            false,
        );
        core.handle_start(at);
        core
    }

    /// `words` sent to the control port from `port`: the reply.
    fn send(core: &mut Control, at: Instant, port: u16, words: &str) -> String {
        let mut reply = Vec::new();
        core.handle_datagram(at, Face::Control, addr(port), words.as_bytes(), &mut reply);
        let reply = String::from_utf8_lossy(&reply).trim().to_owned();
        assert!(!reply.starts_with("ERROR"), "{words}: {reply}");
        reply
    }

    #[test]
    fn a_registration_in_the_window_the_watch_lets_its_endpoint_go_keeps_it() {
        let pool = Arc::new(Pool::new());
        let mut at = Instant::now();
        let mut core = core_on(&pool, at, false);
        watch(&mut core, &mut at, &[(4000, 1)]);
        // The watch lets 4000 go and it registers, before the pool is told of either: it stays.
        at += PUBLISH * 2;
        core.handle_command(at, super::super::reload::Command::Watched(Vec::new()));
        send(&mut core, at, 4000, "register web 4000 weight=2");
        core.handle_turn_end(at);
        assert_eq!(pool.get(addr(4000)).map(|b| b.weight()), Some(2), "registered, so a backend");
    }

    #[test]
    fn a_registration_of_a_watched_endpoint_weighs_it_but_brings_no_failed_backend_back() {
        let pool = Arc::new(Pool::new());
        let mut at = Instant::now();
        let mut core = core_on(&pool, at, true);
        watch(&mut core, &mut at, &[(4000, 3)]);
        let backend = pool.get(addr(4000)).expect("watched");
        backend.mark_failed();
        send(&mut core, at, 4000, "register web 4000 weight=2");
        at += PUBLISH * 2;
        core.handle_turn_end(at);
        assert_eq!(backend.weight(), 2, "the registration's weight");
        assert!(!backend.is_up(), "only a check brings a backend that failed one back");
    }

    #[test]
    fn a_registration_come_and_gone_before_the_watched_add_is_published_leaves_the_watched_weight() {
        let pool = Arc::new(Pool::new());
        let mut at = Instant::now();
        let mut core = core_on(&pool, at, false);
        watch(&mut core, &mut at, &[(4001, 1)]);
        // In one window: 4000 watched at 3, registered at 2, deregistered.
        at += PUBLISH * 2;
        core.handle_command(at, super::super::reload::Command::Watched(vec![(addr(4001), 1), (addr(4000), 3)]));
        let uuid = send(&mut core, at, 4000, "register web 4000 weight=2");
        assert_eq!(send(&mut core, at, 4000, &format!("deregister {uuid}")), "OK");
        core.handle_turn_end(at);
        assert_eq!(pool.get(addr(4000)).map(|b| b.weight()), Some(3), "the watch's weight");
    }

    #[test]
    fn a_watched_endpoint_whose_registration_goes_is_checked_with_a_connect_again() {
        let pool = Arc::new(Pool::new());
        let t0 = Instant::now();
        let mut at = t0;
        let mut core = core_on(&pool, at, true);
        let probes = |core: &mut Control, seconds: std::ops::Range<u64>| {
            let mut checks = Vec::new();
            for s in seconds {
                core.handle_timeout(t0 + Duration::from_secs(s));
                checks.extend(std::iter::from_fn(|| core.poll_probe()).filter_map(|command| match command {
                    crate::core::ProbeCmd::Start { check, .. } => Some(check.to_string()),
                    crate::core::ProbeCmd::Abort { .. } => None,
                }));
            }
            checks
        };
        watch(&mut core, &mut at, &[(4000, 1)]);
        let uuid = send(&mut core, at, 4000, "register web 4000 check=http:/health");
        let during = probes(&mut core, 1..4);
        assert!(!during.is_empty() && during.iter().all(|c| c == "http:/health"), "{during:?}");
        assert_eq!(send(&mut core, at, 4000, &format!("deregister {uuid}")), "OK");
        let after = probes(&mut core, 4..7);
        assert!(!after.is_empty() && after.iter().all(|c| c == "tcp"), "{after:?}");
    }
}
