//! The responder's answers to questions (RFC 6762 §6, §7.1), found through the by-name index
//! ([`NameIndex`]), and the bounds on unicast replies (see the [responder](super)).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{Record, RecordType};

use super::super::{PORT, records, wire};
use super::index::{Key, Kind, spelling};
use super::{
    Instance, LEGACY_TTL, MAX_QUESTIONS, Pending, RATE_LIMIT, Responder, UNICAST_PER_SOURCE, UNICAST_SOURCES,
    UNICAST_TOTAL, UNICAST_WINDOW, dedup, is_unique, key, known_ttls,
};

impl Responder {
    /// Sends a unicast reply as ONE packet: what does not fit is left out (legacy unicast sets
    /// TC, as DNS does), so that a small query from a spoofed source is not amplified.
    fn send_one(&mut self, to: SocketAddr, reply: &mut Message, legacy: bool) {
        let mut packets = wire::encode(reply);
        let truncated = packets.len() > 1;
        let Some(mut bytes) = packets.drain(..).next() else { return };
        if truncated && legacy && bytes.len() > 2 {
            // The header's TC bit (RFC 1035 §4.1.1): the querier may ask again over TCP.
            bytes[2] |= 0x02;
        }
        self.out.push_back((to, bytes));
    }

    /// Whether `source` may get one more unicast reply now: within its own
    /// [`UNICAST_PER_SOURCE`] and everyone's [`UNICAST_TOTAL`] this second. A reply refused is
    /// counted ([`Responder::unicast_dropped`]).
    fn may_unicast(&mut self, now: Instant, source: IpAddr) -> bool {
        let allowed = self.within_source_cap(now, source) && self.within_total(now);
        if !allowed {
            self.unicast_dropped += 1;
        }
        allowed
    }

    /// Whether `source` could get no unicast reply now (its cap or the total spent this
    /// second), without counting one: then a query that asks for one is not even worked on.
    fn unicast_spent(&self, now: Instant, source: IpAddr) -> bool {
        let live = |at: Instant| now.saturating_duration_since(at) < UNICAST_WINDOW;
        let own = self.unicast_sent.get(&source).is_some_and(|&(at, count)| live(at) && count >= UNICAST_PER_SOURCE);
        let (at, count) = self.unicast_total;
        own || (at.is_some_and(live) && count >= UNICAST_TOTAL)
    }

    fn within_source_cap(&mut self, now: Instant, source: IpAddr) -> bool {
        if self.unicast_sent.len() >= UNICAST_SOURCES {
            self.unicast_sent.retain(|_, (at, _)| now.saturating_duration_since(*at) < UNICAST_WINDOW);
            if self.unicast_sent.len() >= UNICAST_SOURCES {
                return false;
            }
        }
        let (at, count) = self.unicast_sent.entry(source).or_insert((now, 0));
        if now.saturating_duration_since(*at) >= UNICAST_WINDOW {
            (*at, *count) = (now, 0);
        }
        *count += 1;
        *count <= UNICAST_PER_SOURCE
    }

    /// The budget all sources share: many forged on-link sources, each within its own cap,
    /// still draw at most [`UNICAST_TOTAL`] replies a second in all.
    fn within_total(&mut self, now: Instant) -> bool {
        let (at, count) = &mut self.unicast_total;
        if at.is_none_or(|at| now.saturating_duration_since(at) >= UNICAST_WINDOW) {
            (*at, *count) = (Some(now), 0);
        }
        *count += 1;
        *count <= UNICAST_TOTAL
    }

    /// The instances (announced, not probing) whose records answer a question for `name` (in
    /// the index's spelling): found through the [by-name index](super::index), so that each
    /// visits only what answers (counted in `work`).
    fn answering(&mut self, name: &str) -> Vec<&Instance> {
        let answers = |key: &Key| self.instances.get(key).filter(|i| i.answers());
        let mut found = Vec::new();
        let mut visited = 0;
        if name == spelling(&records::services_name()) {
            // One PTR per type: the first instance of each that answers.
            for type_name in self.index.types() {
                let keys = self.index.get(type_name).map(|(_, keys)| keys).into_iter().flatten();
                let mut first = keys.inspect(|_| visited += 1).filter_map(answers);
                found.extend(first.next());
            }
        } else if let Some((kind, keys)) = self.index.get(name) {
            let mut answering = keys.iter().inspect(|_| visited += 1).filter_map(answers);
            match kind {
                // Every instance at the address has the same address record: one is enough.
                Kind::Host => found.extend(answering.next()),
                Kind::Instance | Kind::Type => found.extend(answering),
            }
        }
        self.work += visited;
        found
    }

    /// Answers a query (see the [module documentation](self)): its distinct questions, at most
    /// [`MAX_QUESTIONS`] of them.
    pub(super) fn answer(&mut self, now: Instant, from: SocketAddr, query: &Message) {
        // A query whose reply would be unicast, from a source past its cap (or when the total
        // is spent), costs no work: a flood of them is dropped before any lookup.
        let asks_unicast = from.port() != PORT
            || (!query.queries.is_empty() && query.queries.iter().all(|q| q.mdns_unicast_response()));
        if asks_unicast && self.unicast_spent(now, from.ip()) {
            self.unicast_dropped += 1;
            return;
        }
        let mut answers: Vec<Record> = Vec::new();
        let mut additionals: Vec<Record> = Vec::new();
        let mut seen: HashSet<(String, RecordType, Vec<u8>)> = HashSet::new();
        let mut asked: HashSet<(String, RecordType)> = HashSet::new();
        let mut unicast = !query.queries.is_empty();
        for question in &query.queries {
            if !wire::is_in(question.query_class()) {
                continue;
            }
            unicast &= question.mdns_unicast_response();
            let (name, qtype) = (question.name(), question.query_type());
            let spelled = spelling(name);
            if !asked.insert((spelled.clone(), qtype)) {
                continue;
            }
            if asked.len() > MAX_QUESTIONS {
                break;
            }
            for instance in self.answering(&spelled) {
                for record in instance.records.answering(name, qtype) {
                    if seen.insert(key(record)) {
                        answers.push(record.clone());
                        additionals.extend(instance.records.additional_for(record).into_iter().cloned());
                    }
                }
            }
        }
        // Known answers (§7.1).
        let known = known_ttls(&query.answers);
        let is_known = |ours: &Record| known.get(&key(ours)).is_some_and(|&ttl| ttl >= ours.ttl / 2);
        answers.retain(|a| !is_known(a));
        additionals.retain(|a| !is_known(a) && !seen.contains(&key(a)));
        dedup(&mut additionals);
        if answers.is_empty() {
            return;
        }
        let legacy = from.port() != PORT;
        if legacy || unicast {
            if !self.may_unicast(now, from.ip()) {
                return;
            }
            let mut reply = wire::response();
            if legacy {
                // Legacy unicast (§6.7): a plain DNS reply.
                reply.metadata.id = query.id;
                reply.queries = query.queries.clone();
                reply.queries.truncate(MAX_QUESTIONS);
                for record in answers.iter_mut().chain(additionals.iter_mut()) {
                    record.ttl = record.ttl.min(LEGACY_TTL);
                    record.mdns_cache_flush = false;
                }
            }
            reply.answers = answers;
            reply.additionals = additionals;
            self.send_one(from, &mut reply, legacy);
            return;
        }
        // The 1 s rate limit (§6).
        answers.retain(|a| {
            self.multicast_at.get(&key(a)).is_none_or(|at| now.saturating_duration_since(*at) >= RATE_LIMIT)
        });
        if answers.is_empty() {
            return;
        }
        let delay = if query.truncation {
            Duration::from_millis(400) + self.jitter(Duration::from_millis(100))
        } else if answers.iter().all(is_unique) {
            Duration::ZERO
        } else {
            Duration::from_millis(20) + self.jitter(Duration::from_millis(100))
        };
        let pending = self.pending.get_or_insert_with(|| Pending {
            at: now + delay,
            answers: Vec::new(),
            additionals: Vec::new(),
        });
        pending.at = pending.at.min(now + delay);
        pending.answers.extend(answers);
        dedup(&mut pending.answers);
        pending.additionals.extend(additionals);
        dedup(&mut pending.additionals);
        let answered: HashSet<_> = pending.answers.iter().map(key).collect();
        pending.additionals.retain(|a| !answered.contains(&key(a)));
        if pending.at <= now {
            self.handle_timeout(now);
        }
    }
}
