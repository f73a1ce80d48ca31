//! How the broker client sends and receives datagrams, and tells the time: a seam so that the
//! retry and failover logic runs against simulated brokers and a simulated clock in tests.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Datagrams and a clock, as the broker client needs them.
pub trait Transport {
    /// The current time.
    fn now(&self) -> Instant;
    /// Sends one datagram.
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) -> io::Result<()>;
    /// Waits until `deadline` for one datagram; `None` when none came in time.
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<(usize, SocketAddr)>>;
    /// Waits until `deadline`, doing nothing.
    fn sleep_until(&mut self, deadline: Instant);
}

/// The real transport: one UDP socket, which reaches IPv4 and IPv6 brokers alike when any
/// broker is IPv6 (a dual-stack socket), and the system clock.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    dual_stack: bool,
}

impl UdpTransport {
    /// A socket on an ephemeral port that can reach every address in `peers`.
    pub fn for_peers(peers: &[SocketAddr]) -> io::Result<UdpTransport> {
        let dual_stack = peers.iter().any(SocketAddr::is_ipv6);
        let local: SocketAddr = if dual_stack {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
        if dual_stack {
            socket.set_only_v6(false)?;
        }
        socket.bind(&local.into())?;
        Ok(UdpTransport { socket: socket.into(), dual_stack })
    }
}

impl Transport for UdpTransport {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn send(&mut self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        let to = match to {
            SocketAddr::V4(v4) if self.dual_stack => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
            other => other,
        };
        self.socket.send_to(datagram, to).map(drop)
    }

    fn sleep_until(&mut self, deadline: Instant) {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<(usize, SocketAddr)>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left.max(Duration::from_micros(100))))?;
            match self.socket.recv_from(buf) {
                Ok((len, from)) => return Ok(Some((len, SocketAddr::new(from.ip().to_canonical(), from.port())))),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP "port unreachable" from an earlier send: that broker is down, which
                // the timeout handles; keep waiting for the reply this call is after.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
    }
}
