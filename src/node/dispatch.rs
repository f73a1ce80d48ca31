//! The node's glue: how input is routed between its sub-machines, and where their output is
//! drained (see the [node's documentation](super)).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use super::bridge::BridgeEvent;
use super::group::GroupEvent;
use super::logging::{log_change, log_peer_event};
use super::replicate::ReplicaEvent;
use super::verify::VerifyEvent;
use super::{Face, Node};
use crate::core::{ConnId, Core, ProbeCmd, ProbeId, ProbeOutcome, StreamStep, Transmit};
use crate::limit::{ReplyKind, Verdict};
use crate::protocol::peer::Peer;
use crate::protocol::{RemoveReason, seal};
use crate::registry::ChangeKind;

impl Node {
    /// A datagram from the multicast group: returns whether `reply` holds an answer to send
    /// (from the unicast socket).
    fn handle_group(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], reply: &mut Vec<u8>) -> bool {
        // With a key, the group's datagrams come sealed, and only so.
        let opened = if self.group.is_on() { self.open(now, from, datagram) } else { Some(datagram) };
        let Some(datagram) = opened else {
            self.group.note_ignored();
            return false;
        };
        let policy = self.service.policy();
        let answer = self.group.handle_datagram(now, from, datagram, &mut self.registry, policy, reply);
        let answered = answer && {
            if let Some(sealer) = &mut self.sealer {
                sealer.seal_in_place(reply, self.wall.unix_ms(now));
            }
            // The answer is larger than the question: rate-limited like any such reply.
            self.limiter.check(now, from.ip(), datagram.len(), reply.len()) == Verdict::Send
        };
        self.drain(now);
        answered
    }

    /// A DNS query over UDP: whether `reply` holds an answer to send. Answers larger than their
    /// query are rate-limited like the registration protocol's (a DNS port is a reflector); a
    /// limited query gets nothing, or every second one an empty reply with TC set, when that is
    /// no larger than the query.
    fn handle_dns(&mut self, now: Instant, from: SocketAddr, query: &[u8], reply: &mut Vec<u8>) -> bool {
        if !self.dns.handle_datagram(now, &mut self.registry, query, reply) {
            return false;
        }
        match self.limiter.check(now, from.ip(), query.len(), reply.len()) {
            Verdict::Send => true,
            Verdict::Drop => false,
            Verdict::Slip => {
                if self.dns.slip(now, query, reply) {
                    return true;
                }
                self.limiter.slip_dropped();
                false
            }
        }
    }

    /// A bridge datagram from a broker of another network (see [`bridge`](super::bridge)).
    pub(super) fn handle_bridge(&mut self, now: Instant, from: SocketAddr, request_len: usize, body: Peer<'_>) {
        self.bridges.handle_peer(now, from, request_len, body, &mut self.registry);
        self.drain(now);
    }

    /// Takes what the sub-machines queued: acts on their events (removals the verifier
    /// asks for, brokers the group heard, answers the bridges need limited), then moves their
    /// datagrams to the outbox (sealed when they leave, see [`Core::poll_transmit`]) or, for
    /// answers to clients, through the rate limit to the reply queue. The one place where the
    /// sub-machines' output meets the node's shared state; called after each input that gives
    /// a sub-machine something to say, so datagrams leave in the order they were decided.
    /// (The replicator's events wait for the end of the turn: see
    /// [`after_input`](Self::after_input).)
    pub(super) fn drain(&mut self, now: Instant) {
        while let Some(event) = self.verifier.poll_event() {
            match event {
                VerifyEvent::Remove { endpoint, services, why } => {
                    for service in services {
                        let removed = self.registry.remove_instance(now, &service, endpoint, RemoveReason::Unreachable);
                        if removed > 0 {
                            self.counters.removed_unreachable += 1;
                            log::warn!("{service} {endpoint} is unreachable ({why}): removed everywhere");
                        }
                    }
                }
                VerifyEvent::Kept { endpoint } => log::info!("{endpoint} was reported dead but answers: kept"),
            }
        }
        while let Some(event) = self.group.poll_event() {
            match event {
                GroupEvent::Hello(addr) => self.replicator.handle_discovered(now, addr, &self.registry),
                GroupEvent::Foreign { addr, cluster } => {
                    log::info!("broker {addr} on the group is of cluster {cluster:?}, not ours: ignored");
                }
            }
        }
        while let Some(event) = self.bridges.poll_event() {
            match event {
                BridgeEvent::Answer { to, form, request_len, response } => {
                    let mut reply = Vec::new();
                    self.service.reply(form, &response, &mut reply);
                    if self.limiter.limit_reply(now, to.ip(), form, request_len, &mut reply, ReplyKind::Data) {
                        self.sealed_to.seal(to, &mut self.sealer, self.wall.unix_ms(now), &mut reply);
                        self.replies.push(Face::Client, to, |out| out.extend_from_slice(&reply));
                    }
                }
                BridgeEvent::Serve { to, request_len, bytes } => {
                    // Sealed, it grows by the envelope: the limit judges what leaves.
                    let sealed_len = bytes.len() + if self.sealer.is_some() { seal::OVERHEAD } else { 0 };
                    if self.limiter.check(now, to.ip(), request_len, sealed_len) == Verdict::Send {
                        self.outbox.push(Face::Client, to, |out| out.extend_from_slice(&bytes));
                    }
                }
                BridgeEvent::Rejected => self.replicator.note_rejected(),
            }
        }
        // Peer and group datagrams, sealed when they leave.
        while let Some(transmit) = self.replicator.poll_transmit(&mut self.scratch) {
            let bytes = &self.scratch;
            self.outbox.push(transmit.face, transmit.to, |out| out.extend_from_slice(bytes));
        }
        while let Some(transmit) = self.group.poll_transmit(&mut self.scratch) {
            let bytes = &self.scratch;
            self.outbox.push(transmit.face, transmit.to, |out| out.extend_from_slice(bytes));
        }
        while let Some(transmit) = self.bridges.poll_transmit(&mut self.scratch) {
            let bytes = &self.scratch;
            self.outbox.push(transmit.face, transmit.to, |out| out.extend_from_slice(bytes));
        }
        // mDNS datagrams: never sealed (they are for every mDNS peer of the link), limited by the
        // responder's own rules (RFC 6762 §6, §7, §8).
        while let Some(transmit) = self.mdns.poll_transmit(&mut self.scratch) {
            let bytes = &self.scratch;
            self.replies.push(transmit.face, transmit.to, |out| out.extend_from_slice(bytes));
        }
        // Notifications to watchers: unasked for, so judged by the rate limit as replies to an
        // empty request.
        while let Some(transmit) = self.watches.poll_transmit(&mut self.scratch) {
            self.sealed_to.seal(transmit.to, &mut self.sealer, self.wall.unix_ms(now), &mut self.scratch);
            let bytes = &self.scratch;
            let sent = self.limiter.check(now, transmit.to.ip(), 0, bytes.len()) == Verdict::Send
                && self.replies.push(transmit.face, transmit.to, |out| out.extend_from_slice(bytes));
            self.watches.note_sent(sent);
        }
    }

    /// The end of every input: hands every change since the last call to everything that
    /// follows the table, sends what must go at once, and acts on the replicator's events
    /// (forwarded reports, checks that move when the live brokers changed, peer events to log).
    ///
    /// Records whether it left every sub-machine with nothing to say (`settled`): not when it
    /// acted on a replicator's event, which may leave work for the next turn.
    fn after_input(&mut self, now: Instant) {
        self.settled = true;
        while let Some(change) = self.registry.poll_change() {
            if self.log_changes {
                log_change(&change);
            }
            self.replicator.handle_change(now, &change);
            let replicator = &self.replicator;
            self.verifier.handle_change(now, &change, |endpoint| replicator.owner(endpoint).is_none());
            self.mdns.handle_change(now, &change, &self.registry, |endpoint| replicator.mdns_owner(endpoint).is_none());
            if change.kind != ChangeKind::Refreshed || change.meta_changed {
                self.watches.handle_change(&change.service);
            }
            self.service_names.handle_change(&change.service, change.kind, &self.registry);
        }
        self.watches.flush(now, &mut self.registry);
        self.replicator.flush(now, &self.registry);
        self.drain(now);
        while let Some(event) = self.replicator.poll_event() {
            self.settled = false;
            match event {
                ReplicaEvent::Report { service, endpoint } => {
                    // Forwarded by a peer: verify it if it is registered here too.
                    if self.registry.contains(now, &service, endpoint) && self.verifier.is_checked(&service, endpoint) {
                        self.verifier.handle_report(now, endpoint);
                    }
                }
                ReplicaEvent::OwnersChanged => {
                    let replicator = &self.replicator;
                    self.verifier.handle_owners_changed(now, |endpoint| replicator.owner(endpoint).is_none());
                    let registry = &self.registry;
                    self.mdns
                        .handle_owners_changed(now, registry, |endpoint| replicator.mdns_owner(endpoint).is_none());
                    self.drain(now);
                }
                ReplicaEvent::Peer(event) => log_peer_event(&event),
            }
        }
    }
}

impl Core for Node {
    type Face = Face;
    type Command = super::Command;

    fn handle_command(&mut self, now: Instant, command: super::Command) {
        self.command(now, command);
        self.after_input(now);
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        face: Face,
        from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> Option<Face> {
        let out = match face {
            Face::Client => self.handle_client(now, from, datagram, reply).then_some(Face::Client),
            Face::Group => self.handle_group(now, from, datagram, reply).then_some(Face::Client),
            Face::Dns => self.handle_dns(now, from, datagram, reply).then_some(Face::Dns),
            Face::Mdns => {
                self.mdns.handle_datagram(now, from, datagram, &mut self.registry, self.service.policy());
                self.drain(now);
                None
            }
            // Nothing is sent to it but stray replies: ignored.
            Face::GroupOut | Face::DnsTcp | Face::Metrics | Face::Http => None,
        };
        // A query (the request a broker gets most) changes nothing the sub-machines follow,
        // unless the table logged a change (a lease found expired on the way).
        let quiet = std::mem::take(&mut self.quiet_input) && self.settled && !self.registry.has_changes();
        if !quiet {
            self.after_input(now);
        }
        out
    }

    fn handle_stream(
        &mut self,
        now: Instant,
        face: Face,
        _conn: ConnId,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> StreamStep {
        let step = match face {
            Face::DnsTcp => self.dns.handle_stream(now, &mut self.registry, input, output),
            Face::Metrics => crate::metrics::serve_http(input, output, || crate::metrics::broker(&self.metrics(now))),
            Face::Http => crate::http::serve(input, output, &mut super::catalog::NodeCatalog { node: self, now }),
            _ => StreamStep { consumed: input.len(), close: true },
        };
        self.after_input(now);
        step
    }

    fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Transmit<Face>> {
        if let Some(reply) = self.replies.pop(out) {
            return Some(reply);
        }
        let transmit = self.outbox.pop(out)?;
        // Everything queued goes to peers or the group: sealed, with a key.
        if let Some(sealer) = &mut self.sealer {
            sealer.seal_in_place(out, self.wall.unix_ms(now));
        }
        if transmit.face == Face::Client {
            // To peers and bridges (the group's hellos leave on their own face).
            self.counters.peer_bytes_out += out.len() as u64;
        }
        Some(transmit)
    }

    fn poll_probe(&mut self) -> Option<ProbeCmd> {
        self.verifier.poll_probe()
    }

    fn handle_probe(&mut self, now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        self.verifier.handle_probe(now, id, outcome);
        self.drain(now);
        self.after_input(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.registry.poll_timeout(),
            self.replicator.poll_timeout(),
            self.verifier.poll_timeout(),
            self.group.poll_timeout(),
            self.bridges.poll_timeout(),
            self.watches.poll_timeout(),
            self.mdns.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.registry.handle_timeout(now);
        self.replicator.handle_timeout(now, &mut self.registry);
        self.verifier.handle_timeout(now);
        self.drain(now);
        self.group.handle_timeout(now);
        self.drain(now);
        self.bridges.handle_timeout(now);
        self.drain(now);
        self.mdns.handle_timeout(now, &mut self.registry, self.service.policy());
        self.drain(now);
        self.after_input(now);
        // After the changes due by now were told: a watch live when they happened hears of them.
        self.watches.handle_timeout(now);
        self.settled = false;
    }

    fn handle_send_error(&mut self, _face: Face, _to: SocketAddr, _error: &io::Error) {
        // A full send buffer or an unroutable source: the client retransmits.
        self.counters.send_failures += 1;
    }

    fn handle_start(&mut self, now: Instant) {
        self.started = Some(now);
        self.replicator.handle_start(now);
        self.group.handle_timeout(now);
        self.mdns.handle_start(now);
        self.drain(now);
        self.after_input(now);
    }

    fn handle_close(&mut self, now: Instant) {
        self.replicator.handle_close();
        let replicator = &self.replicator;
        self.mdns.handle_close(now, |endpoint| replicator.mdns_successor(endpoint).is_some());
        self.drain(now);
    }
}
