//! Sockets handed over by a service manager (systemd socket activation): `LISTEN_FDS` open
//! descriptors from 3 on, meant for this process (`LISTEN_PID`), named by `LISTEN_FDNAMES`
//! (`FileDescriptorName=` in a `.socket` unit).
//!
//! A socket the manager holds outlives the process: connections that arrive while no process
//! accepts wait in its queue, and the next process takes them, so a restart or an upgrade refuses
//! nobody. Taking the descriptors is the `listenfd` crate's job (it checks the
//! socket's type and family, marks them close-on-exec, and gives std sockets through a safe API:
//! this crate forbids `unsafe`); the names, which it does not read, are read here, and
//! `LISTEN_PID` is checked here too (listenfd takes the descriptors when it is missing), as is
//! that a passed TCP socket listens.
//!
//! Which socket plays which part: a socket named after a part (`listen`, `control`, `metrics`)
//! plays it; one with another name (systemd names a socket after its unit by default) plays the
//! program's part for its type: TCP clients for a stream socket, the UDP face for a datagram one.

use std::io;
use std::net::{TcpListener, UdpSocket};

/// Whether descriptors passed with `LISTEN_PID` set to `listen_pid` are this process's (`pid`):
/// only when it is present and names it.
fn meant_for(listen_pid: Option<&str>, pid: u32) -> bool {
    listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(pid)
}

/// `listener` if it listens. A connected TCP socket (what an `Accept=yes` unit passes, one per
/// connection) is refused: `accept()` on it fails with `EINVAL` every time.
fn listening(listener: TcpListener, fd: usize, name: &str) -> io::Result<TcpListener> {
    if socket2::SockRef::from(&listener).is_listener()? {
        return Ok(listener);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "passed socket {fd} ({name:?}) is a TCP socket that is not listening (a connection: Accept=yes in the \
             .socket unit?); makler needs the listening socket (Accept=no)"
        ),
    ))
}

/// One inherited socket.
#[derive(Debug)]
enum Inherited {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// The sockets a service manager passed, each with its name.
#[derive(Debug, Default)]
pub struct Activated {
    sockets: Vec<(String, Inherited)>,
}

impl Activated {
    /// Takes the sockets the environment passes to this process (none without `LISTEN_FDS`, or
    /// when `LISTEN_PID` names another process). Call it first thing, before any thread is
    /// started: when they are ours it clears `LISTEN_FDS` and `LISTEN_PID` (so that children do not take them too).
    ///
    /// Errors: a passed descriptor that is neither a TCP listener nor a UDP socket, or a TCP
    /// socket that is not listening (an `Accept=yes` unit passes each connection instead).
    pub fn from_env() -> io::Result<Activated> {
        // listenfd takes the descriptors when `LISTEN_PID` is missing; systemd always sets it,
        // and descriptors without it may be meant for a parent that exec'd us without clearing
        // the variables, so they are left alone.
        if std::env::var_os("LISTEN_FDS").is_some()
            && !meant_for(std::env::var("LISTEN_PID").ok().as_deref(), std::process::id())
        {
            return Ok(Activated::default());
        }
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|names| names.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = Vec::new();
        for index in 0..fds.len() {
            let name = names.get(index).cloned().unwrap_or_default();
            let socket = match fds.take_tcp_listener(index) {
                Ok(Some(listener)) => Inherited::Tcp(listening(listener, index + 3, &name)?),
                Ok(None) => continue,
                Err(_) => match fds.take_udp_socket(index) {
                    Ok(Some(socket)) => Inherited::Udp(socket),
                    Ok(None) => continue,
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "passed socket {} ({name:?}) is neither a TCP listener nor a UDP socket: {e}",
                                index + 3
                            ),
                        ));
                    }
                },
            };
            sockets.push((name, socket));
        }
        Ok(Activated { sockets })
    }

    /// Whether the manager passed no socket.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Takes the TCP listeners for `part`: those named `part`, and, if `by_type` (the part
    /// TCP sockets play unless named otherwise), those whose name is none of `parts` (the
    /// program's names). Each is made non-blocking (and given `TCP_NODELAY`, which accepted
    /// sockets inherit on Linux), ready for a mio loop.
    pub fn take_tcp(&mut self, part: &str, parts: &[&str], by_type: bool) -> io::Result<Vec<TcpListener>> {
        let mut taken = Vec::new();
        let mut rest = Vec::new();
        for (name, socket) in std::mem::take(&mut self.sockets) {
            let ours = name == part || by_type && !parts.contains(&name.as_str());
            match socket {
                Inherited::Tcp(listener) if ours => {
                    listener.set_nonblocking(true)?;
                    let _ = socket2::SockRef::from(&listener).set_tcp_nodelay(true);
                    taken.push(listener);
                }
                other => rest.push((name, other)),
            }
        }
        self.sockets = rest;
        Ok(taken)
    }

    /// Takes the TCP listener named `part` (by name only: a part with one address, such as
    /// `--metrics` or `--http`), as [`take_tcp`](Activated::take_tcp) takes it. More than one
    /// so named is an error, rather than all but the first closed without a word.
    pub fn take_one_tcp(&mut self, part: &str, parts: &[&str]) -> io::Result<Option<TcpListener>> {
        let mut taken = self.take_tcp(part, parts, false)?;
        if taken.len() > 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("more than one passed TCP listener named {part}: it has one address"),
            ));
        }
        Ok(taken.pop())
    }

    /// Takes the UDP socket for `part`, chosen as [`take_tcp`](Activated::take_tcp) chooses,
    /// made non-blocking, with the receive buffer of a socket bound here. More than one such socket is an error: the part has one address.
    pub fn take_udp(&mut self, part: &str, parts: &[&str], by_type: bool) -> io::Result<Option<UdpSocket>> {
        let mut taken = None;
        let mut rest = Vec::new();
        for (name, socket) in std::mem::take(&mut self.sockets) {
            let ours = name == part || by_type && !parts.contains(&name.as_str());
            match socket {
                Inherited::Udp(socket) if ours => {
                    if taken.is_some() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("more than one passed UDP socket for {part}: name them (FileDescriptorName=)"),
                        ));
                    }
                    socket.set_nonblocking(true)?;
                    // Best effort, as for a socket bound here: a smaller one only drops more under a burst.
                    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(crate::net::RECV_BUFFER);
                    taken = Some(socket);
                }
                other => rest.push((name, other)),
            }
        }
        self.sockets = rest;
        Ok(taken)
    }

    /// The names of the sockets no part took (the caller warns of them: they are held open
    /// for nothing).
    pub fn unused(&self) -> Vec<String> {
        self.sockets.iter().map(|(name, _)| name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(sockets: &[(&str, bool)]) -> Activated {
        let sockets = sockets
            .iter()
            .map(|&(name, tcp)| {
                let socket = if tcp {
                    Inherited::Tcp(TcpListener::bind("127.0.0.1:0").unwrap())
                } else {
                    Inherited::Udp(UdpSocket::bind("127.0.0.1:0").unwrap())
                };
                (name.to_owned(), socket)
            })
            .collect();
        Activated { sockets }
    }

    const PARTS: [&str; 3] = ["listen", "control", "metrics"];

    #[test]
    fn named_sockets_play_their_part() {
        let mut activated = passed(&[("metrics", true), ("listen", true), ("control", false), ("listen", true)]);
        assert_eq!(activated.take_tcp("listen", &PARTS, true).unwrap().len(), 2);
        assert!(activated.take_udp("control", &PARTS, true).unwrap().is_some());
        assert_eq!(activated.take_tcp("metrics", &PARTS, false).unwrap().len(), 1);
        assert!(activated.unused().is_empty());
    }

    #[test]
    fn other_names_go_by_type() {
        // systemd names a socket after its unit unless FileDescriptorName= says otherwise.
        let mut activated = passed(&[("makler-balancer.socket", true), ("makler-balancer.socket", false)]);
        let listeners = activated.take_tcp("listen", &PARTS, true).unwrap();
        assert_eq!(listeners.len(), 1);
        assert!(listeners[0].set_nonblocking(true).is_ok());
        assert!(activated.take_udp("control", &PARTS, true).unwrap().is_some());
        assert!(activated.take_tcp("metrics", &PARTS, false).unwrap().is_empty(), "metrics only by name");
        assert!(activated.is_empty());
    }

    #[test]
    fn a_socket_no_part_takes_is_reported() {
        // Named after a part of another type: a UDP socket named `metrics`.
        let mut activated = passed(&[("listen", true), ("metrics", false), ("control", false)]);
        activated.take_tcp("listen", &PARTS, true).unwrap();
        activated.take_udp("control", &PARTS, true).unwrap();
        activated.take_tcp("metrics", &PARTS, false).unwrap();
        assert_eq!(activated.unused(), ["metrics"]);
    }

    #[test]
    fn with_the_part_named_other_names_still_go_by_type() {
        let mut activated = passed(&[("listen", true), ("makler-balancer.socket", true)]);
        assert_eq!(activated.take_tcp("listen", &PARTS, true).unwrap().len(), 2);
        assert!(activated.take_tcp("metrics", &PARTS, false).unwrap().is_empty());
    }

    #[test]
    fn only_descriptors_for_our_pid_are_taken() {
        assert!(meant_for(Some("4242"), 4242));
        assert!(!meant_for(Some("1"), 4242));
        assert!(!meant_for(None, 4242), "a missing LISTEN_PID is not ours");
        assert!(!meant_for(Some(""), 4242));
    }

    #[test]
    fn a_connected_tcp_socket_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        for connected in [stream, accepted] {
            // What an `Accept=yes` unit passes: a connected socket where a listener should be.
            let passed = TcpListener::from(std::os::fd::OwnedFd::from(connected));
            let error = listening(passed, 3, "listen").unwrap_err();
            assert!(error.to_string().contains("not listening"), "{error}");
        }
        assert!(listening(listener, 3, "listen").is_ok());
    }

    #[test]
    fn two_tcp_listeners_named_for_a_part_with_one_address_are_refused() {
        let mut activated = passed(&[("metrics", true), ("listen", true), ("metrics", true)]);
        let refused = activated.take_one_tcp("metrics", &PARTS).unwrap_err();
        assert_eq!(refused.to_string(), "more than one passed TCP listener named metrics: it has one address");
        let mut activated = passed(&[("metrics", true), ("makler-balancer.socket", true)]);
        assert!(activated.take_one_tcp("metrics", &PARTS).unwrap().is_some());
        assert!(activated.take_one_tcp("metrics", &PARTS).unwrap().is_none());
        assert_eq!(activated.unused(), ["makler-balancer.socket"], "by name only");
    }

    #[test]
    fn two_unnamed_udp_sockets_for_one_part_are_refused() {
        let mut activated = passed(&[("a", false), ("b", false)]);
        assert!(activated.take_udp("control", &PARTS, true).is_err());
    }
}
