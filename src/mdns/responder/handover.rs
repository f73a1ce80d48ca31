//! Handing an instance over between two makler responders without a blink in browsers.
//!
//! When the owner of an instance moves from one broker to another (a broker joins or leaves the
//! link's advertisers), the old way, a goodbye from the old owner and probes from the new one,
//! left browsers without the instance for a second or more: a goodbye makes every cache drop
//! the records 1 s later (RFC 6762 §10.1), and the new owner's name is claimed only after its
//! probes. Both owners are makler brokers that build the same records from the same replicated
//! lease, so no name is in question:
//!
//! - the new owner [takes the instance over](Responder::take_over): it announces at once, with
//!   no probes (the name is the one the link has been hearing);
//! - the old owner [hands it over](Responder::hand_over): it goes on answering for the instance
//!   until it hears another responder announce the instance's SRV record (any data: the new
//!   owner's TXT may be a replication step ahead), then drops it **without a goodbye**, since the
//!   records live on in the new owner's announcements. If nobody announces it within
//!   [`HANDOVER_WAIT`], it says goodbye as before (the new owner, if it advertises after all,
//!   announces again when it hears a goodbye for its records).
//!
//! A datagram of our own looped back (the socket loops multicast so that a browser on the host
//! sees it) is not taken as the new owner's announcement: one from this host's address
//! ([`Responder::set_own_address`]) never counts; when that is not known, an SRV record this
//! responder multicast itself within 200 ms does not count.

use std::time::{Duration, Instant};

use hickory_proto::op::Message;

use super::{Advert, Responder, key};

/// How long an instance handed over is still answered for while its new owner's announcement
/// is not heard; then it goes with a goodbye. Longer than a hello interval, the most two brokers
/// disagree on who owns what.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(3);

/// Without our own address: an SRV record heard within this of our own multicast of it may be
/// our own, looped back.
const OWN_ECHO: Duration = Duration::from_millis(200);

impl Responder {
    /// Advertises `advert` as its new owner in a handover from another makler responder that
    /// advertised it under the same name: announced at once, without probing (see the [module
    /// documentation](self)). Like [`add`](Self::add) when it is advertised already.
    pub fn take_over(&mut self, now: Instant, advert: Advert) -> bool {
        self.add_as(now, advert, true)
    }

    /// Stops advertising an instance that another makler responder takes over: it is answered
    /// until that one's announcement is heard, and goes without a goodbye then, or with one
    /// after [`HANDOVER_WAIT`]. One that was still probing goes at once, silently.
    pub fn hand_over(&mut self, now: Instant, service: &str, endpoint: std::net::SocketAddr) {
        let key = (service.to_owned(), endpoint);
        let Some(instance) = self.instances.get_mut(&key) else { return };
        if !instance.answers() {
            if let Some(instance) = self.instances.remove(&key) {
                self.index.remove(&key, &instance.records);
            }
        } else if instance.leaving.is_none() {
            instance.leaving = Some(now + HANDOVER_WAIT);
        }
    }

    /// Stops advertising an instance at once and without a goodbye: another makler responder
    /// advertises it from now on (this broker stops, and a peer of the link takes over).
    pub fn withdraw(&mut self, service: &str, endpoint: std::net::SocketAddr) {
        let key = (service.to_owned(), endpoint);
        if let Some(instance) = self.instances.remove(&key) {
            self.index.remove(&key, &instance.records);
        }
    }

    /// Whether the instance is being handed over (tests).
    #[cfg(test)]
    pub(crate) fn is_leaving(&self, service: &str, endpoint: std::net::SocketAddr) -> bool {
        self.instances.get(&(service.to_owned(), endpoint)).is_some_and(|i| i.leaving.is_some())
    }

    /// A response on the link: an instance being handed over whose SRV record another responder
    /// announced is dropped, without a goodbye.
    pub(super) fn confirm_handovers(&mut self, now: Instant, from: std::net::SocketAddr, message: &Message) {
        if self.own == Some(from.ip().to_canonical()) || self.instances.values().all(|i| i.leaving.is_none()) {
            return;
        }
        let own_known = self.own.is_some();
        let heard =
            |srv: &hickory_proto::rr::Record| {
                message.answers.iter().chain(&message.additionals).any(|theirs| {
                    theirs.ttl > 0 && theirs.record_type() == srv.record_type() && theirs.name == srv.name
                })
            };
        let (multicast_at, index) = (&self.multicast_at, &mut self.index);
        self.instances.retain(|k, instance| {
            let srv = &instance.records.srv;
            let own = !own_known
                && multicast_at.get(&key(srv)).is_some_and(|at| now.saturating_duration_since(*at) < OWN_ECHO);
            let keep = instance.leaving.is_none() || own || !heard(srv);
            if !keep {
                index.remove(k, &instance.records);
            }
            keep
        });
    }

    /// Instances whose handover was not confirmed within [`HANDOVER_WAIT`]: goodbyes.
    pub(super) fn end_handovers(&mut self, now: Instant) {
        let due: Vec<_> = self
            .instances
            .iter()
            .filter(|(_, i)| i.leaving.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for (service, endpoint) in due {
            self.remove(now, &service, endpoint);
        }
    }
}
