//! Queries: a service's instances in rotation, as an iterator or cut from its text or binary
//! block ([`block`](super::block)), each query starting one further on than the last.

use std::net::SocketAddr;
use std::time::Instant;

use super::block::BinaryBlock;
use super::{Registry, Service};

impl Registry {
    /// The live instances of `service`, starting one further on than the previous query did, or
    /// `None` when it has none. The caller may take only a prefix: every instance comes first
    /// in turn, so all of them are handed out over successive queries.
    pub fn query(&mut self, now: Instant, service: &str) -> Option<impl ExactSizeIterator<Item = SocketAddr> + '_> {
        let (entry, start) = self.turn(now, service)?;
        let (members, len) = (&entry.members, entry.members.len());
        Some((0..len).map(move |k| members[(start + k) % len].endpoint.get()))
    }

    /// The live instances of `service` in table order, without moving its rotation (for
    /// watchers, who are told the set, not handed an instance).
    pub fn members(&mut self, now: Instant, service: &str) -> impl Iterator<Item = SocketAddr> + '_ {
        self.handle_timeout(now);
        let members = self.by_name.get(&self.services, service).and_then(|index| self.services.get(index as usize));
        members.into_iter().flat_map(|entry| entry.members.iter().map(|member| member.endpoint.get()))
    }

    /// Like [`query`](Self::query), with each instance's text form (`ip:port`, IPv6 in
    /// brackets), kept ready so that text answers need no formatting.
    pub fn query_text(
        &mut self,
        now: Instant,
        service: &str,
    ) -> Option<impl ExactSizeIterator<Item = (SocketAddr, &str)> + '_> {
        let (entry, start) = self.turn(now, service)?;
        let (entry, len) = (&*entry, entry.members.len());
        Some((0..len).map(move |k| {
            let k = (start + k) % len;
            (entry.members[k].endpoint.get(), entry.text.text(k))
        }))
    }

    /// A text query's answer, cut from the service's text block and moving its rotation as
    /// [`query`](Self::query) does: the instances' text forms separated by spaces, as many as
    /// fit in `room` bytes (the greedy cut: up to the first that does not fit), as two slices
    /// to write one after the other. `None` when the service has no live instance.
    pub fn query_text_block(&mut self, now: Instant, service: &str, room: usize) -> Option<(&[u8], &[u8])> {
        let (entry, start) = self.turn(now, service)?;
        Some(entry.text.answer(start, room))
    }

    /// A binary query's answer, cut from the service's binary block (built at its first binary
    /// query) and moving its rotation as [`query`](Self::query) does: how many instances fit in
    /// `room` bytes (the greedy cut), and their postcard encodings, concatenated, as two slices
    /// to write one after the other (a binary reply's list, after its length). `None` when the
    /// service has no live instance.
    pub fn query_binary_block(&mut self, now: Instant, service: &str, room: usize) -> Option<(usize, &[u8], &[u8])> {
        let (entry, start) = self.turn(now, service)?;
        let members = &entry.members;
        let block =
            entry.binary.get_or_insert_with(|| Box::new(BinaryBlock::of(members.iter().map(|m| m.endpoint.get()))));
        Some(block.answer(start, room))
    }

    /// One turn of `service`'s rotation, for a query: the service and where this answer starts
    /// (the next one starts one further on). `None` when it has no live instance.
    fn turn(&mut self, now: Instant, service: &str) -> Option<(&mut Service, usize)> {
        self.handle_timeout(now);
        let service_index = self.by_name.get(&self.services, service)?;
        let entry = self.services.get_mut(service_index as usize)?;
        let len = entry.members.len();
        let start = entry.cursor % len;
        entry.cursor = (start + 1) % len;
        Some((entry, start))
    }
}
