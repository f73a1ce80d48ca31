//! Socket set-up shared by the event loops.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// The receive buffer a broker asks for: room for a few thousand datagrams, so a burst waits
/// in the kernel instead of being dropped. The kernel may grant less (`net.core.rmem_max`).
pub const RECV_BUFFER: usize = 4 << 20;

/// Binds a non-blocking UDP socket for a mio loop, with a large receive buffer.
pub fn bind_udp(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Also take IPv4 on [::]; replies go back to the mapped address the datagram came from.
        socket.set_only_v6(false)?;
    }
    // Best effort: a smaller buffer only means more drops under a burst.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// Binds a non-blocking TCP listener for a mio loop with `TCP_NODELAY` set on it: on Linux,
/// accepted sockets inherit it, which saves a system call per connection.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    bind_tcp_with(addr, false)
}

/// Binds `count` listeners on one address with `SO_REUSEPORT`, so that each thread of a pool
/// accepts on its own and the kernel spreads new connections over them. The first resolves port
/// 0; the others take the port it got.
pub fn bind_tcp_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<mio::net::TcpListener>> {
    let first = bind_tcp_with(addr, true)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count.max(1) {
        listeners.push(bind_tcp_with(addr, true)?);
    }
    Ok(listeners)
}

fn bind_tcp_with(addr: SocketAddr, reuse_port: bool) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Accepts every connection waiting on `listener` (readiness is edge-triggered), handing each
/// to `take`. Returns how soon to try again when the process ran out of file descriptors: the
/// connections then wait in the listen backlog, and no new readiness event would tell of them.
/// Other errors (a connection reset before it was accepted) lose that connection only; they are
/// logged (at warn, naming the listener `who`) and the loop goes on at the next event.
pub fn accept_all(
    listener: &mio::net::TcpListener,
    who: &str,
    mut take: impl FnMut(mio::net::TcpStream),
) -> Option<std::time::Duration> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => take(stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_out_of_descriptors(&e) => return Some(std::time::Duration::from_millis(20)),
            Err(e) => {
                log::warn!("{who} listener: accept failed: {e}");
                return None;
            }
        }
    }
}

/// Whether an error means this process has run out of file descriptors (EMFILE, ENFILE): a
/// local shortage, which says nothing about the peer.
pub fn is_out_of_descriptors(error: &io::Error) -> bool {
    // EMFILE is 24 and ENFILE 23 on Linux and the BSDs.
    matches!(error.raw_os_error(), Some(23 | 24))
}

/// This process's limit on open file descriptors, from `/proc/self/limits` (None where that
/// cannot be read).
pub fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(accepted.nodelay().unwrap(), "the balancer and servers rely on this");
        drop(client);
    }

    #[test]
    fn the_descriptor_limit_is_read() {
        assert!(descriptor_limit().is_some_and(|n| n >= 64));
        assert!(is_out_of_descriptors(&io::Error::from_raw_os_error(24)));
        assert!(!is_out_of_descriptors(&io::Error::from(io::ErrorKind::ConnectionRefused)));
    }
}
