//! `--backends-from SERVICE`: backends taken from a service the brokers hold, beside those that
//! register at the control port.
//!
//! The balancer's shell watches SERVICE at its brokers (`super::super::feed`, on its own thread)
//! and hands the core the whole live set each time it changes, through the shell's command
//! channel ([`Command::Watched`](super::reload::Command::Watched)). The core keeps the set as
//! last told and stages the difference for the pool, so a set that replaces the one before (a
//! watch renewed or started again after a broker restart) leaves nothing stale. A watched
//! backend weighs 1 and is checked with a TCP connect; it goes through the same pool, policy
//! and health checks as a registered one. An endpoint both watched and registered stays while
//! either holds it (it counts as one more name in `names`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use super::Control;

impl Control {
    /// Takes `instances` as the watched service's whole live set: those new to it become
    /// backends, those gone from it leave (unless they are also registered).
    pub(crate) fn set_watched(&mut self, now: Instant, instances: Vec<SocketAddr>) {
        let new: HashSet<SocketAddr> = instances.into_iter().collect();
        let gone: Vec<SocketAddr> = self.watched.difference(&new).copied().collect();
        let added: Vec<SocketAddr> = new.difference(&self.watched).copied().collect();
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
        for endpoint in added {
            let names = self.names.entry(endpoint).or_insert(0);
            *names += 1;
            if *names == 1 {
                self.staged_removes.retain(|addr| *addr != endpoint);
                self.staged_adds.push((endpoint, 1));
                if let Some(health) = &mut self.health {
                    health.schedule.add(now, endpoint);
                }
            }
        }
        self.watched = new;
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
            core.handle_command(at, super::super::reload::Command::Watched(ports.iter().map(|&p| addr(p)).collect()));
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
}
