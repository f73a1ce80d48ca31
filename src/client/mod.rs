//! The library side of servers and clients, so neither deals with the broker's datagrams.
//!
//! - [`BrokerClient`]: one request, one reply, over the binary protocol, with request ids,
//!   retransmission with backoff ([`RetryPolicy`]) and failover between brokers.
//! - [`Registrar`]: the server side. Registers endpoints, heartbeats them from one background
//!   thread per process, registers again when a broker has forgotten them, and deregisters them
//!   when dropped or shut down. A missing or full broker is tried again with jittered backoff; a
//!   refusal for good ends the tries and is an error ([`RegistrationState`] for background ones).
//! - [`Resolver`]: the client side. Finds a service's instances, keeps the answer for a short
//!   time, rotates through them and connects, trying the next instance when one fails.
//! - [`Announcer`] and [`discover`]: the same with no broker address configured. A server
//!   announces itself on the multicast group (brokers listening there register it), and a client
//!   asks the group for brokers.
//!
//! A server registers, a client finds it and calls it; neither sees a datagram:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::time::Duration;
//! use makler::client::{Registrar, RegistrarConfig, Resolver};
//! # use makler::{broker, shutdown::Shutdown};
//! # let shutdown = Shutdown::new();
//! # let b = broker::Broker::bind(broker::Config { listen: "127.0.0.1:0".parse()?, ..Default::default() })?;
//! # let brokers = [b.local_addr()];
//! # let stop = shutdown.clone();
//! # std::thread::spawn(move || b.run(&stop));
//! # // The server: answers a line in capitals.
//! # let s = std::net::TcpListener::bind("127.0.0.1:0")?;
//! # let server_addr = s.local_addr()?;
//! # std::thread::spawn(move || {
//! #     for stream in s.incoming().flatten() {
//! #         let mut line = String::new();
//! #         let _ = BufReader::new(&stream).read_line(&mut line);
//! #         let _ = (&stream).write_all(line.to_uppercase().as_bytes());
//! #     }
//! # });
//!
//! // The server side: register, and stay registered until `registration` is dropped.
//! let registrar = Registrar::start(&brokers, RegistrarConfig::default())?;
//! let registration = registrar.register("upper", None, server_addr.port())?;
//!
//! // The client side: find an instance and connect to it.
//! let mut resolver = Resolver::new(&brokers)?;
//! let (mut stream, _) = resolver.connect("upper", Some(Duration::from_secs(5)))?;
//! stream.write_all(b"hello\n")?;
//! let mut answer = String::new();
//! BufReader::new(stream).read_line(&mut answer)?;
//! assert_eq!(answer, "HELLO\n");
//!
//! drop(registration); // deregisters at once
//! # shutdown.request();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod announcer;
mod broker;
mod discover;
mod registrar;
mod resolver;
mod retry;
#[cfg(test)]
mod sim;
mod transport;
mod watch;

use std::net::SocketAddr;

pub use announcer::{Announcer, AnnouncerConfig, announce_schedule};
pub use broker::{BrokerClient, Registered};
pub use discover::{discover, no_broker_message};
pub use registrar::{NO_BROKER_BACKOFF, NO_ROOM_BACKOFF, Registrar, RegistrarConfig, Registration, RegistrationState};
pub use resolver::{ConnectError, Resolver, ResolverConfig};
pub use retry::RetryPolicy;
pub use transport::{Transport, UdpTransport};
pub use watch::{InstanceMeta, Watch, WatchEvent};

use crate::protocol::Rejection;

/// Why a broker request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker has no live instance of that service, or no registration with that id
    /// (after a heartbeat: register again).
    #[error("not found")]
    NotFound,
    /// Every broker that answered is still catching up from its peers and does not know the
    /// thing asked for yet: ask again shortly (and do not register again because of it).
    #[error("every broker that answered is still catching up from its peers")]
    CatchingUp,
    /// No broker in the list answered within the retry policy. Check that a broker runs at
    /// one of these addresses, or give others.
    #[error("no broker answered ({})", list(.0))]
    Unreachable(Vec<SocketAddr>),
    /// The broker refused the request; the reason says what to change.
    #[error("the broker refused the request: {0}{hint}", hint = key_hint(.0))]
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

/// What to do about a refusal for want of the key, in the one line that reports it.
fn key_hint(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::KeyRequired => " (it takes only requests sealed with its key: give --key-file)",
        _ => "",
    }
}
