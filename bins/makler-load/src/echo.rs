//! The reference the broker is measured against: a minimal UDP echo server in a process of its
//! own (`makler-load echo-server`), shaped like the broker's loop (one thread, one socket, one
//! mio poll, drain until the socket would block, `recv_from` then `send_to` the same bytes) but
//! doing no work on the bytes. What it answers per second is what one socket and one thread can
//! do on this machine; the broker's rate over it is the share its own work leaves.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::child::ChildProcess;
use makler::shutdown::Shutdown;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// Datagrams answered per turn of the loop before it looks at the clock again (the broker's
/// budget).
const BUDGET: usize = 1024;

/// A bound echo server, ready to [`run`](EchoServer::run).
#[derive(Debug)]
pub struct EchoServer {
    poll: Poll,
    socket: mio::net::UdpSocket,
    local_addr: SocketAddr,
}

impl EchoServer {
    /// Binds the socket, with the broker's receive buffer.
    pub fn bind(listen: SocketAddr) -> io::Result<EchoServer> {
        let poll = Poll::new()?;
        let mut socket = makler::net::bind_udp(listen)?;
        poll.registry().register(&mut socket, SOCKET, Interest::READABLE)?;
        let local_addr = socket.local_addr()?;
        Ok(EchoServer { poll, socket, local_addr })
    }

    /// The address really bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Echoes datagrams until `shutdown` is requested or `lifetime` has passed (a bound, so that
    /// a forgotten echo server stops by itself). Returns how many datagrams it echoed.
    pub fn run(mut self, shutdown: &Shutdown, lifetime: Duration) -> io::Result<u64> {
        shutdown.watch(Arc::new(Waker::new(self.poll.registry(), WAKER)?))?;
        let deadline = Instant::now() + lifetime;
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; 65536];
        let (mut echoed, mut backlog) = (0u64, false);
        while !shutdown.is_requested() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let timeout = if backlog { Duration::ZERO } else { deadline - now };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if backlog || events.iter().any(|event| event.token() == SOCKET) {
                // More may be waiting when the budget runs out before the socket is empty.
                backlog = true;
                for _ in 0..BUDGET {
                    match self.socket.recv_from(&mut buf) {
                        Ok((len, source)) => {
                            // A full send buffer drops the reply, as the broker's does.
                            let _ = self.socket.send_to(&buf[..len], source);
                            echoed += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            backlog = false;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(echoed)
    }
}

/// Requests `shutdown` when standard input reaches its end: the benchmark holds a pipe to the
/// echo server's stdin, so the server stops when the benchmark is gone, even killed. Runs a
/// thread that sleeps in `read`.
pub fn stop_on_stdin_eof(shutdown: &Shutdown) -> io::Result<()> {
    let shutdown = shutdown.clone();
    std::thread::Builder::new().name("stdin-watch".into()).spawn(move || {
        let mut stdin = io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        shutdown.request();
    })?;
    Ok(())
}

/// Starts `makler-load echo-server` (the executable at `load_bin`) on a free loopback port as a
/// child process, killed when the returned guard is dropped.
pub fn start_process(load_bin: &Path) -> io::Result<ChildProcess> {
    ChildProcess::start(load_bin, &["echo-server", "--listen", "127.0.0.1:0", "--stop-on-eof", "--lifetime", "3600"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_datagrams_and_stops_on_request() {
        let server = EchoServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr();
        let shutdown = Shutdown::new();
        let stopper = shutdown.clone();
        let thread = std::thread::spawn(move || server.run(&stopper, Duration::from_secs(60)));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client.connect(addr).unwrap();
        let mut buf = [0u8; 16];
        for word in [&b"one"[..], b"two", b"three"] {
            client.send(word).unwrap();
            let len = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..len], word);
        }
        shutdown.request();
        assert_eq!(thread.join().unwrap().unwrap(), 3);
    }

    #[test]
    fn stops_by_itself_after_its_lifetime() {
        let server = EchoServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(server.run(&Shutdown::new(), Duration::from_millis(1)).unwrap(), 0);
    }
}
