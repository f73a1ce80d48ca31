//! The library side of servers and clients, so neither deals with the broker's datagrams.
//!
//! - [`BrokerClient`]: one request, one reply, over the binary protocol, with request ids,
//!   retransmission with backoff ([`RetryPolicy`]) and failover between brokers.
//! - [`Registrar`]: the server side. Registers endpoints, heartbeats them from one background
//!   thread per process, registers again when a broker has forgotten them, and deregisters them
//!   when dropped or shut down.
//! - [`Resolver`]: the client side. Finds a service's instances, keeps the answer for a short
//!   time, rotates through them and connects, trying the next instance when one fails.

mod broker;
mod registrar;
mod resolver;
mod retry;
#[cfg(test)]
mod sim;
mod transport;

use std::net::SocketAddr;

pub use broker::{BrokerClient, Registered};
pub use registrar::{Registrar, RegistrarConfig, Registration};
pub use resolver::{ConnectError, Resolver, ResolverConfig};
pub use retry::RetryPolicy;
pub use transport::{Transport, UdpTransport};

use crate::protocol::Rejection;

/// Why a broker request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker has no live instance of that service, or no registration with that id
    /// (after a heartbeat: register again).
    #[error("not found")]
    NotFound,
    /// No broker in the list answered within the retry policy. Check that a broker runs at
    /// one of these addresses, or give others.
    #[error("no broker answered ({})", list(.0))]
    Unreachable(Vec<SocketAddr>),
    /// The broker refused the request; the reason says what to change.
    #[error("the broker refused the request: {0}")]
    Rejected(Rejection),
    /// The broker answered with something this client did not ask for: a bug on one side.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The client was given no broker address.
    #[error("no broker address given")]
    NoBrokers,
    /// The local socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
