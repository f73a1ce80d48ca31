//! makler: a service broker and TCP load balancer for a local network.
//!
//! Servers register the services they offer with a **broker** over UDP and keep the
//! registration alive with heartbeats; clients ask the broker where a service lives and talk to
//! a server themselves.
//!
//! ```text
//!   server ──register/heartbeat──▶ ┌────────────────────────────┐
//!                                  │ broker (one mio loop)      │
//!   client ──query──────────────▶  │   protocol  ─▶  handler    │
//!          ◀──ip:port ip:port────  │   (decode)      registry   │
//!                                  └────────────────────────────┘
//!   client ──────────────── TCP ───────────────────────▶ server
//! ```
//!
//! # Layout
//!
//! - [`protocol`]: the wire types and both codecs, text and binary. Depends on nothing else in
//!   the crate; no decoder panics on any input.
//! - [`registry`]: the table of live instances as a pure state machine: time is passed in, it
//!   owns no socket, and it queues change events.
//! - [`broker`]: the thin I/O shell: [`broker::Handler`] turns a datagram into a reply (sans-IO,
//!   reusable by anything that speaks the registration protocol), [`broker::Broker`] runs it in
//!   a mio event loop on one UDP socket.
//! - [`balancer`]: the TCP load balancer: its control port is a broker whose table feeds a pool
//!   of backends, and a fixed pool of mio forwarding threads relays connections to them.
//! - [`client`]: the library side of servers and clients: a blocking broker client with
//!   retransmission and failover, the [`client::Registrar`] that keeps a server's registrations
//!   alive, and the [`client::Resolver`] that finds a service and connects to it.
//! - [`multicast`]: the group where servers announce themselves and clients find brokers: its
//!   configuration and socket set-up (always on a named interface).
//! - [`server`]: the example servers (echo, upper, time, http) behind `makler-server`.
//! - [`load`]: the load generators and benchmarks behind `makler-load`.
//! - [`shutdown`]: a handle that stops an event loop from another thread or a signal.
//! - [`net`], [`slab`], [`cli`]: socket set-up, reusable token slots, and the flag parsing the
//!   executables share.
//!
//! The executables in `bins/` only parse flags and call the library.

pub mod balancer;
pub mod broker;
pub mod cli;
pub mod client;
pub mod load;
pub mod multicast;
pub mod net;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod shutdown;
pub mod slab;
