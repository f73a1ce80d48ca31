//! Moving bytes one way through a proxied connection: from a source socket to a destination,
//! through the forwarding thread's scratch buffer, keeping what the destination cannot take yet,
//! passing the end of the stream on, and turning Nagle's algorithm off only when a write needs it.

use std::io::{self, Read, Write};
use std::net::Shutdown as Direction;

use mio::net::TcpStream;

/// One direction of a connection.
#[derive(Debug, Default)]
pub(super) struct Pipe {
    /// Bytes read from the source that the destination has not taken yet.
    pub pending: Vec<u8>,
    /// How much of `pending` has gone out already: the rest is not moved down after each partial
    /// write (with large responses that would copy up to a buffer's worth per write).
    pub sent: usize,
    /// The source has said it closed its sending side (EPOLLRDHUP), whether or not its end of
    /// stream has been read yet. A read shorter than the buffer then no longer means that a new
    /// edge will tell of what is left: that edge has come, perhaps while reading waited for the
    /// destination to drain, so reading goes on until the end of the stream is seen.
    pub source_closed: bool,
    /// The source has closed its sending side.
    pub eof: bool,
    /// The destination's sending side has been shut down after `eof`.
    pub shut: bool,
    /// Nagle's algorithm on the destination.
    pub nagle: Nagle,
}

/// Whether `TCP_NODELAY` is set on a socket the forwarder writes to, and whether that is needed yet.
///
/// Nagle's algorithm holds a small segment back only while data sent earlier is unacknowledged,
/// so the first write on a connection always leaves at once: the option is set just before a later
/// one, and a connection that writes its backend once (a request per connection) never needs the
/// system call. Client sockets have it from the listener.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Nagle {
    /// Something has been written to the socket.
    pub wrote: bool,
    /// `TCP_NODELAY` is set.
    pub off: bool,
}

impl Nagle {
    /// Turns Nagle's algorithm off before any write but the first.
    fn before_write(&mut self, dst: &TcpStream) {
        if self.wrote && !self.off {
            let _ = dst.set_nodelay(true);
            self.off = true;
        }
        self.wrote = true;
    }
}

/// Sends `buf` with `MSG_MORE`: held back until the shutdown that follows, which sends it with
/// the FIN in one segment.
fn send_more(dst: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    const FLAGS: libc::c_int = libc::MSG_MORE | libc::MSG_NOSIGNAL;
    #[cfg(not(target_os = "linux"))]
    const FLAGS: libc::c_int = 0;
    socket2::SockRef::from(dst).send_with_flags(buf, FLAGS)
}

/// Moves bytes from `src` to `dst` until either would block, passing `src`'s end of stream on
/// as a shutdown of `dst`'s sending side (unless `other_done`: the other direction has ended too,
/// so both sockets are about to be closed, which tells the peers as much without a system call
/// more). Returns how many bytes reached `dst`.
///
/// `src` is read when it signalled data (`readable`) or when bytes held back for `dst` have just
/// gone out (reading had stopped for them). A read shorter than the buffer is taken to have
/// emptied the socket when `short_read_drains`: on Linux a new arrival raises a new edge, so the
/// read that would only say "would block" is saved. When the peer has also closed, reading goes
/// on to see the end of the stream, for which no further event would come.
pub(super) fn transfer(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    pipe: &mut Pipe,
    scratch: &mut [u8],
    readable: bool,
    short_read_drains: bool,
    other_done: bool,
) -> io::Result<u64> {
    let mut moved = 0u64;
    let held_back = !pipe.pending.is_empty();
    // First what is waiting from before; until it is gone, the source is not read.
    while pipe.sent < pipe.pending.len() {
        pipe.nagle.before_write(dst);
        match dst.write(&pipe.pending[pipe.sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pipe.sent += n;
                moved += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Give the memory back: an idle connection holds no buffer.
    if held_back {
        pipe.pending = Vec::new();
        pipe.sent = 0;
    }
    let mut read_on = readable || held_back;
    while read_on && !pipe.eof {
        let mut n = match src.read(scratch) {
            Ok(0) => {
                pipe.eof = true;
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // The peer has closed and this read did not fill the buffer: the end of the stream is
        // probably next. Look for it before sending, so that the data and the FIN that passes
        // the end on can leave as one segment (sent with "more to come", then the shutdown
        // below tacks the FIN on) instead of two.
        if !short_read_drains && n < scratch.len() {
            match src.read(&mut scratch[n..]) {
                Ok(0) => pipe.eof = true,
                Ok(m) => n += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let merge_fin = pipe.eof && !other_done;
        let mut written = 0;
        while written < n {
            pipe.nagle.before_write(dst);
            let sent = if merge_fin { send_more(dst, &scratch[written..n]) } else { dst.write(&scratch[written..n]) };
            match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => written += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        moved += written as u64;
        if written < n {
            pipe.pending.extend_from_slice(&scratch[written..n]);
            return Ok(moved);
        }
        read_on = !(short_read_drains && n < scratch.len());
    }
    if pipe.eof && !pipe.shut && other_done {
        pipe.shut = true;
    }
    if pipe.eof && !pipe.shut {
        match dst.shutdown(Direction::Write) {
            Ok(()) => pipe.shut = true,
            // The other side is gone already: nothing left to tell it.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => pipe.shut = true,
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: the connecting side (as mio's) and the accepted side.
    fn pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connecting = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (TcpStream::from_std(connecting), accepted)
    }

    #[test]
    fn nagle_is_turned_off_before_the_second_write_and_not_for_the_first() {
        let (backend, _peer) = pair();
        assert!(!backend.nodelay().unwrap());
        let mut nagle = Nagle::default();
        nagle.before_write(&backend);
        assert!(!backend.nodelay().unwrap(), "the first write leaves at once without the option");
        nagle.before_write(&backend);
        assert!(backend.nodelay().unwrap(), "a later write could wait behind an unacknowledged one");
        assert!(nagle.off);
    }

    #[test]
    fn a_socket_that_has_the_option_already_is_left_alone() {
        let (client, _peer) = pair();
        let mut nagle = Nagle { wrote: false, off: true };
        nagle.before_write(&client);
        nagle.before_write(&client);
        assert!(!client.nodelay().unwrap(), "no system call when the listener gave the option");
    }
}
