//! The responder's side of other responders' messages: conflicts with our names (RFC 6762 §9),
//! simultaneous probes (§8.2), answers another responder gave (§7.4) and goodbyes for records
//! we announce (see the [responder](super)).

use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::Record;

use super::super::names;
use super::super::wire::{compare_sets, same_record};
use super::{
    CONFLICT_BACKOFF, CONFLICT_LIMIT, CONFLICT_WINDOW, DEFEND_LIMIT, LOST_TIE, Responder, ResponderEvent, State, build,
    dedup, key, known_ttls,
};

impl Responder {
    /// A response on the link: conflicts with our unique records (§9), and answers of ours
    /// another responder gave (§7.4).
    pub(super) fn handle_response(&mut self, now: Instant, from: std::net::SocketAddr, message: &Message) {
        self.confirm_handovers(now, from, message);
        let mut renamed = Vec::new();
        let (conflicts, index) = (&mut self.conflicts, &mut self.index);
        for (k, instance) in self.instances.iter_mut() {
            let ours = [&instance.records.srv, &instance.records.txt];
            self.work += message.answers.len() + message.additionals.len();
            let conflict = message.answers.iter().chain(&message.additionals).any(|theirs| {
                theirs.name == instance.records.srv.name
                    && theirs.ttl > 0
                    && !ours.iter().any(|o| same_record(o, theirs))
                    && (matches!(instance.state, State::Probing { .. })
                        || ours.iter().any(|o| o.record_type() == theirs.record_type()))
            });
            if !conflict {
                continue;
            }
            match instance.state {
                State::Probing { .. } => {
                    instance.claim += 1;
                    instance.label = names::renamed(&names::instance_label(instance.advert.endpoint), instance.claim);
                    if let Some(records) = build(&instance.advert, &instance.label) {
                        index.remove(k, &instance.records);
                        index.insert(k, &records);
                        instance.records = records;
                    }
                    conflicts.push_back(now);
                    while conflicts.front().is_some_and(|at| now.saturating_duration_since(*at) >= CONFLICT_WINDOW) {
                        conflicts.pop_front();
                    }
                    let wait = if conflicts.len() >= CONFLICT_LIMIT { CONFLICT_BACKOFF } else { Duration::ZERO };
                    instance.state = State::Probing { sent: 0, next: now + wait };
                    renamed.push(ResponderEvent::Renamed {
                        service: instance.advert.service.clone(),
                        endpoint: instance.advert.endpoint,
                        label: instance.label.clone(),
                    });
                }
                // §9: verify the name again by probing; a real conflict then renames it.
                _ => instance.state = State::Probing { sent: 0, next: now },
            }
        }
        self.events.extend(renamed);
        self.defend(now, message);
        if let Some(pending) = &mut self.pending {
            let theirs = known_ttls(&message.answers);
            pending.answers.retain(|ours| theirs.get(&key(ours)).is_none_or(|&ttl| ttl < ours.ttl / 2));
        }
    }

    /// Another host's goodbye (TTL 0) for a record we announce, as when a broker hands an
    /// instance over to another that advertises it already: browsers would drop it in 1 s, so
    /// it is multicast again at once (as mDNSResponder does), at most every [`DEFEND_LIMIT`].
    pub(super) fn defend(&mut self, now: Instant, message: &Message) {
        let mut defend: Vec<Record> = Vec::new();
        for theirs in message.answers.iter().filter(|r| r.ttl == 0) {
            for instance in self.instances.values().filter(|i| i.answers()) {
                self.work += 5;
                let ours = instance.records.all().into_iter().filter(|ours| same_record(ours, theirs));
                defend.extend(ours.cloned());
            }
        }
        defend.retain(|r| {
            self.multicast_at.get(&key(r)).is_none_or(|at| now.saturating_duration_since(*at) >= DEFEND_LIMIT)
        });
        dedup(&mut defend);
        self.multicast(now, defend, Vec::new());
    }

    /// §8.2: a probe for a name we are probing for too; the lexicographically later set wins.
    pub(super) fn settle_probes(&mut self, now: Instant, message: &Message) {
        if message.authorities.is_empty() {
            return;
        }
        for instance in self.instances.values_mut() {
            let State::Probing { .. } = instance.state else { continue };
            let name = &instance.records.srv.name;
            let theirs: Vec<&Record> = message.authorities.iter().filter(|r| &r.name == name).collect();
            if theirs.is_empty() {
                continue;
            }
            let ours = [&instance.records.srv, &instance.records.txt];
            if compare_sets(&ours, &theirs) == std::cmp::Ordering::Less {
                instance.state = State::Probing { sent: 0, next: now + LOST_TIE };
            }
        }
    }
}
