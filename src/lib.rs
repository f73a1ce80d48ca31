//! makler: a service broker and TCP load balancer for a local network.
//!
//! Servers register the services they offer with a **broker** over UDP and keep the
//! registration alive with heartbeats; clients ask the broker where a service lives and talk to
//! a server themselves.
//!
//! ```text
//!   server ──register/heartbeat──▶ ┌───────────────────────── broker ─────────────────────────┐
//!                                  │ shell (one mio loop: UDP faces, TCP listeners and their │
//!   client ──query──────────────▶  │   connections, probe connects; one `now` per turn)      │
//!          ◀──ip:port ip:port────  │   ▼ datagrams, bytes, probe outcomes, time    ▲ polled  │
//!                                  │ ┈┈┈┈┈ core: Core, Transmit, ProbeCmd, StreamStep ┈┈┈┈┈┈ │
//!                                  │ node (sans-IO): service router ─▶ registry ─▶ changes   │
//!                                  │   sub-machines, handle_* in, poll_* out: replicator,    │
//!                                  │   verifier (prober), bridges, watches, group, DNS face  │
//!                                  └─────────────────────────────────────────────────────────┘
//!   client ──────────────── TCP ───────────────────────▶ server
//! ```
//!
//! Everything that decides is a pure state machine with time passed in (the registry, the
//! registration protocol, the node, the prober, the balancer's control core); everything that
//! touches a socket or starts a thread is a thin shell around one. The two speak the words of
//! [`core`] (the dotted line), which depends on neither; no core imports a shell.
//! So the logic is tested to the nanosecond, and several brokers on a lossy network are
//! simulated without a socket.
//!
//! # Layout
//!
//! - [`protocol`]: the wire types and the codecs: text, binary, the peer protocol, sealed
//!   envelopes for the shared key, and the fitter that cuts a reply's list to one datagram
//!   ([`protocol::fit`]). Depends on nothing else in the crate but [`meta`] (the rules of
//!   service metadata, which depends on nothing); no decoder panics on any input.
//! - [`registry`]: the table of leases as a pure state machine: time is passed in, ids come
//!   from a generator handed in, and every change goes to an always-on, numbered change log;
//!   tombstones, remote leases and pages make it replicable.
//! - [`service`]: the registration protocol over a registry, with no I/O: one router decodes a
//!   request once and hands it to its kind's handler, a file each (register, heartbeat,
//!   deregister, query, the listings); what only the caller answers (stats, report, watch,
//!   bridged queries) goes to the caller's [`service::Context`]. Shared by the broker's node
//!   and the balancer's control port.
//! - [`node`]: the broker's sans-IO core: owns the registry, the service and the rate limit,
//!   and routes input between its sub-machines (replication with peer brokers, with its deltas
//!   and catch-up; the verifier of reports and health checks, which owns the prober; the
//!   bridges to brokers of other networks; the watches; the multicast group; the DNS face),
//!   each with private state and one convention (`handle_*` in; `poll_transmit`,
//!   `poll_timeout`, `poll_event` out, drained by the node in one place); drains the change log
//!   to them after every input; answers DNS from the table ([`node::dns`], a pure function
//!   over hickory-proto's messages).
//! - [`core`]: the sans-IO vocabulary the cores and the shell share: the
//!   [`Core`](crate::core::Core) trait (`handle_*` in, `poll_*` out),
//!   [`Transmit`](crate::core::Transmit) and the [`Outbox`](crate::core::Outbox) that queues
//!   them, probe commands and outcomes, and stream steps and limits. Depends on nothing else in
//!   the crate but [`protocol`] (a probe command carries the check an instance declared); a
//!   unit test keeps the imports of every core module free of the shell and of the
//!   other modules that own sockets or threads.
//! - [`limit`]: token buckets and response-rate limiting (no reflector).
//! - [`probe`]: non-blocking probes (a TCP connect, or an HTTP check) as a state machine
//!   (deadlines, one probe per address, bounded concurrency) and a periodic schedule with
//!   hysteresis; it asks for them in [`ProbeCmd`](crate::core::ProbeCmd)s.
//! - [`shell`]: the one generic mio driver every core runs on: a slab of UDP sockets, TCP
//!   listeners, their connections and probes (a connect, then for an HTTP check a `GET`), one
//!   dispatch, budgets, a waker. It
//!   consumes [`core`]'s vocabulary and defines none of its own.
//! - [`broker`]: binds the broker's sockets and runs a node on a shell.
//! - [`balancer`]: the TCP load balancer: its control port is a sans-IO core on the same shell
//!   whose table feeds a pool of backends (a snapshot the forwarding threads load without a
//!   lock), and which says by an event when the first backend is up or the last one gone; the
//!   balancer's shell then registers and announces the balancer, or stops, with the client
//!   library's threads. A fixed pool of mio forwarding threads relays connections.
//! - [`client`]: the library side of servers and clients: a blocking broker client with
//!   retransmission and failover, the [`client::Registrar`] that keeps a server's registrations
//!   alive, and the [`client::Resolver`] that finds a service and connects to it.
//! - [`multicast`]: the group where servers announce themselves and clients find brokers: its
//!   configuration and socket set-up (always on a named interface).
//! - [`mdns`]: DNS-SD and multicast DNS, sans-IO: the instance names the DNS face and the link
//!   share, the responder that advertises services on a link and the browser that imports
//!   them (the wire format is hickory-proto's).
//! - [`meta`]: service metadata, the `key=value` pairs a registration may carry, kept in one
//!   block per instance in the form of a DNS-SD TXT record, with DNS-SD's limits.
//! - [`metrics`]: the Prometheus text format of the broker's and the balancer's counters, and
//!   the one HTTP request (`GET /metrics`) their `--metrics` face answers; pure functions.
//! - [`http`]: the `--http` face: `GET /metrics`, the JSON catalog under `/v1/` (its shapes in
//!   [`http::catalog`], filled by the node and the balancer's control core) and the status
//!   page's files ([`http::ui`]); a pure router over a buffered request.
//! - [`proxy_protocol`]: HAProxy's PROXY protocol header (v1 and v2), written by the balancer
//!   toward backends and read by `makler-server --accept-proxy`; pure functions over bytes.
//! - [`shutdown`]: a handle that stops an event loop from another thread or a signal.
//! - `oracles` (only with the `fuzzing` feature, which `fuzz/` and this package's own tests
//!   turn on; not part of the API): the invariants on arbitrary input that the fuzz targets and
//!   the property tests check.
//! - [`activation`]: the sockets a service manager passes (systemd socket activation), taken
//!   by name or by type, for the balancer and the broker.
//! - [`timers`], [`net`], [`cli`]: the deadline set every state machine uses, socket set-up,
//!   and the flag parsing (with [`cli::config`]'s `--config` files) and logging the executables
//!   share; `random`, the one source of random
//!   ids (the operating system's, through `getrandom`), which only shells and clients draw
//!   from. Values kept at small reused keys (the shell's sockets and mio tokens, the registry's
//!   leases and services) are in the `slab` crate's slabs.
//!
//! In tests only, `sim` runs several nodes on a seeded virtual network (delay, loss,
//! duplication, reordering, partitions, crashes) on a virtual clock.
//!
//! The library logs through the [`log`] facade; the executables choose where it goes.
//!
//! The executables in `bins/` only parse flags and call the library; the example servers
//! (echo, upper, time, http) are the `makler-server` program's own modules
//! (`bins/makler-server/`), and the load generator and benchmarks are a package of their own in
//! the workspace (`bins/makler-load/`, which `cargo install --path .` leaves out): neither is
//! part of the library.

pub mod activation;
pub mod balancer;
pub mod broker;
pub mod cli;
pub mod client;
pub mod core;
pub mod http;
pub mod limit;
pub mod mdns;
pub mod meta;
pub mod metrics;
pub mod multicast;
pub mod net;
pub mod node;
#[cfg(feature = "fuzzing")]
pub mod oracles;
pub mod probe;
pub mod protocol;
pub mod proxy_protocol;
pub(crate) mod random;
pub mod registry;
pub mod service;
pub mod shell;
pub mod shutdown;
#[cfg(test)]
pub(crate) mod sim;
pub mod timers;
