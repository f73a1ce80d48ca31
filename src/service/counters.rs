//! What the registration protocol counts: datagrams, rejections by kind, requests by kind
//! (`stats` and `/metrics` read them).

use crate::protocol::Request;

/// Counters of the registration protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handled.
    pub received: u64,
    /// Datagrams answered with `ERROR`.
    pub rejected: u64,
    /// Registrations refused because the table was full.
    pub full: u64,
    /// Registrations refused by the per-source quota.
    pub quota: u64,
    /// Registrations refused by the registration policy.
    pub not_allowed: u64,
    /// Requests refused as too many from one source (reports).
    pub too_many: u64,
    /// Unsealed requests refused because the key is required (`--require-key`).
    pub key_required: u64,
    /// Requests that decoded, by kind.
    pub requests: RequestCounts,
}

/// Requests that decoded, by kind (a datagram that does not decode counts in none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// `register`.
    pub register: u64,
    /// `heartbeat`.
    pub heartbeat: u64,
    /// `query` (and `request`).
    pub query: u64,
    /// `deregister`.
    pub deregister: u64,
    /// `stats`.
    pub stats: u64,
    /// `report`.
    pub report: u64,
    /// `services` (and `list`).
    pub services: u64,
    /// `instances`.
    pub instances: u64,
    /// `watch` and `unwatch`.
    pub watch: u64,
}

impl RequestCounts {
    /// Counts one request.
    pub fn count(&mut self, request: &Request<'_>) {
        let counter = match request {
            Request::Register { .. } | Request::RegisterChecked { .. } | Request::RegisterMeta { .. } => {
                &mut self.register
            }
            Request::Heartbeat { .. } => &mut self.heartbeat,
            Request::Query { .. } | Request::QueryLocal { .. } => &mut self.query,
            Request::Deregister { .. } => &mut self.deregister,
            Request::Stats => &mut self.stats,
            Request::Report { .. } => &mut self.report,
            Request::Services { .. } => &mut self.services,
            Request::Instances { .. } | Request::InstancesChecked { .. } | Request::InstancesMeta { .. } => {
                &mut self.instances
            }
            Request::Watch { .. }
            | Request::WatchEcho { .. }
            | Request::WatchMeta { .. }
            | Request::Unwatch { .. }
            | Request::UnwatchEcho { .. } => &mut self.watch,
        };
        *counter += 1;
    }

    /// Each kind's name (as the text form spells its verb) and count.
    pub fn by_kind(&self) -> [(&'static str, u64); 9] {
        [
            ("register", self.register),
            ("heartbeat", self.heartbeat),
            ("query", self.query),
            ("deregister", self.deregister),
            ("stats", self.stats),
            ("report", self.report),
            ("services", self.services),
            ("instances", self.instances),
            ("watch", self.watch),
        ]
    }
}
