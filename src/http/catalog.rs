//! The JSON catalog's shapes: what `GET /v1/…` answers, as serde structs (every name and
//! metadata value comes from the network, so the JSON is written by `serde_json` alone).
//!
//! OPERATIONS.md ("HTTP catalog") shows one body of each. Fields are only ever added: a client
//! ignores the ones it does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The broker itself, at the top of `/v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its unicast address (`--listen`), as clients and peers reach it.
    pub addr: String,
    /// Its cluster's name (`--cluster`).
    pub cluster: String,
    /// The program's version.
    pub version: String,
    /// The time a lease lives without a heartbeat, in seconds (`--ttl`).
    pub ttl_s: f64,
}

/// `GET /v1/services`: the node, and each service with its number of live instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Services {
    /// The broker answering.
    pub node: NodeInfo,
    /// The services, sorted by name, at most `?limit=N`.
    pub services: Vec<ServiceSummary>,
    /// Whether services were left out (beyond the limit).
    pub truncated: bool,
}

/// One service in `/v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    /// Its name.
    pub name: String,
    /// Its live instances.
    pub instances: usize,
}

/// `GET /v1/services/<name>`: one service's instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The service.
    pub name: String,
    /// Its live instances, sorted by address, at most `?limit=N`.
    pub instances: Vec<Instance>,
    /// Whether instances were left out (beyond the limit, or the answer's size bound).
    pub truncated: bool,
}

/// One instance of a service: an address, held by one lease or more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The id of its oldest lease (`null` when the lease went while the answer was built).
    pub id: Option<String>,
    /// Where it listens.
    pub addr: String,
    /// How long this broker has held it (its oldest lease's age), in seconds.
    pub age_s: f64,
    /// How long until it expires unless renewed, in seconds.
    pub ttl_left_s: f64,
    /// How many leases hold it (one per source that registered or announced it).
    pub leases: usize,
    /// The source of its oldest lease: the address a register came from, or an announcer.
    pub source: String,
    /// The health check it declared: `"tcp"`, `"http:/path"`, or `null` for none.
    pub check: Option<String>,
    /// What this broker knows of the check (see [`CheckState`]).
    pub check_state: CheckState,
    /// Its metadata pairs (a key alone has the value `""`; a value that is not UTF-8 is shown
    /// with U+FFFD in place of its bad bytes).
    pub meta: BTreeMap<String, String>,
    /// Where this broker learned of it (see [`Origin`]).
    pub origin: Origin,
}

/// What a broker knows of an instance's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckState {
    /// This broker probes it, and its last probe passed (or none has run yet).
    Passing,
    /// This broker probes it, and its last probes failed (it is removed after `--fall` of them).
    Failing,
    /// This broker does not probe it: it declares no check, checks are off
    /// (`--probe-interval 0`), or a peer broker owns its checks.
    Unchecked,
}

/// Where a broker learned of an instance (what its oldest lease's source says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A register request, to this broker or to a peer (a replicated lease keeps its source, so
    /// a broker does not tell the two apart).
    Registered,
    /// An announcement on the multicast group.
    Announced,
    /// An mDNS import (`--mdns-import`).
    Mdns,
}

/// `GET /v1/peers`: the peer brokers and the bridges, as this broker sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peers {
    /// The peer brokers (`--peers`, and those found on the group).
    pub peers: Vec<PeerInfo>,
    /// The brokers of other networks (`--bridge`).
    pub bridges: Vec<BridgeInfo>,
}

/// One peer broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its address.
    pub addr: String,
    /// `"up"` (heard from within the peer timeout) or `"down"`.
    pub state: String,
    /// Whether it holds the whole table.
    pub complete: bool,
    /// Its live instances, as it last said.
    pub instances: u64,
    /// Seconds since it was last heard from (`null`: never).
    pub last_heard_s: Option<f64>,
}

/// One bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeInfo {
    /// Its address.
    pub addr: String,
    /// `"up"` (it is asked) or `"down"` (it did not answer in time; asked again later).
    pub state: String,
    /// Queries sent to it.
    pub asked: u64,
    /// Its answers with instances.
    pub found: u64,
    /// Queries it did not answer in time.
    pub timeouts: u64,
}

/// The balancer's `GET /v1/backends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backends {
    /// The service the balancer offers (`--service`).
    pub service: String,
    /// How it picks a backend (`--policy`).
    pub policy: String,
    /// Client connections open now.
    pub connections: u64,
    /// The backends, sorted by address, at most `?limit=N`.
    pub backends: Vec<Backend>,
    /// Whether backends were left out (beyond the limit).
    pub truncated: bool,
}

/// One backend of a balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// Its address.
    pub addr: String,
    /// Its weight (`weight=N` in its metadata; 1 without).
    pub weight: u32,
    /// `"up"` (it gets new connections) or `"down"` (marked down by failed connects or checks).
    pub state: String,
    /// Connections open to it now.
    pub connections: u64,
    /// Connections forwarded to it.
    pub total: u64,
    /// Bytes sent to it.
    pub bytes_to: u64,
    /// Bytes received from it.
    pub bytes_from: u64,
    /// Failed connects and probes.
    pub failures: u64,
}

/// The body of every error answer: `{"error": "not found", "name": "…"}` and the like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    /// What went wrong, in a few words: `"not found"`, `"bad request"`, `"method not allowed"`.
    pub error: String,
    /// The service, or the path, that was not found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// More about a bad request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
