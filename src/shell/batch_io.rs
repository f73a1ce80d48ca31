//! Many datagrams per system call: `recvmmsg(2)` and `sendmmsg(2)` on Linux, through the `nix`
//! crate (this crate has no unsafe code of its own), and one `recv_from` / `send_to` per
//! datagram elsewhere.
//!
//! Under load a broker's socket holds several datagrams at once; taking them in one call and
//! sending the answers in one call saves the cost of making the calls (about 7 % of the DNS
//! face's rate with 100 queries in flight), though not the work each datagram asks of the
//! kernel. With a short queue a single `recv_from` ([`recv_one`]) costs less than a batch read
//! that finds one datagram, and a reply is sent as soon as it is made (see the shell's
//! `SEND_BATCH`). The headers of batch reads and sends are made once per thread (`HEADERS`).

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

/// Datagrams taken or sent per system call, at most.
pub(super) const BATCH: usize = 32;

/// Buffers for [`recv`]: `BATCH` slots of `slot` bytes each, back to back, and what arrived in
/// each.
pub(super) struct RecvBuffers {
    bytes: Vec<u8>,
    slot: usize,
    /// Each received datagram's length and source, in slot order; `None` for a datagram whose
    /// source is not an IP address (none on a UDP socket; skipped).
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBuffers {
    /// Room for `BATCH` datagrams of up to `slot` bytes (longer ones are cut to it). Pages the
    /// datagrams never reach are never touched, so the memory resident stays small.
    pub(super) fn new(slot: usize) -> Self {
        RecvBuffers { bytes: vec![0; BATCH * slot], slot, got: Vec::with_capacity(BATCH) }
    }

    /// How many datagrams the last [`recv`] took.
    pub(super) fn len(&self) -> usize {
        self.got.len()
    }

    /// The `i`th datagram of the last [`recv`] and its source.
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let &(len, from) = self.got.get(i)?;
        let start = i * self.slot;
        Some((&self.bytes[start..start + len.min(self.slot)], from?))
    }
}

/// Takes up to [`BATCH`] waiting datagrams without blocking. `Err(WouldBlock)` when none waits.
/// Fewer than `BATCH` means the socket was empty at the time: with edge-triggered readiness a
/// later arrival raises a new event, so the caller need not call again to see `WouldBlock`.
/// `v6`: the socket is an IPv6 one (every source it reports is a `sockaddr_in6`; see
/// `HEADERS`).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn recv(socket: &UdpSocket, v6: bool, buffers: &mut RecvBuffers) -> io::Result<()> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, recvmmsg};

    let RecvBuffers { bytes, slot, got } = buffers;
    got.clear();
    HEADERS.with_borrow_mut(|headers| {
        let headers = headers.recv[usize::from(v6)].get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
        let mut slots = bytes.chunks_mut(*slot);
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let received = recvmmsg(socket.as_raw_fd(), headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
        got.extend(received.map(|message| (message.bytes, message.address.as_ref().and_then(to_std))));
        Ok(())
    })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
thread_local! {
    /// nix's headers for [`recv`], made once per thread and address family, and for [`send`],
    /// rather than for each call (that cost about 3,500 instructions a call, more than a whole
    /// query). Kept
    /// apart by family because nix does not reset a header's address length, which the kernel
    /// shrinks to the last source's: headers shared by an IPv4 and an IPv6 socket would cut an
    /// IPv6 source after an IPv4 one, while one socket's sources are all of one length. Kept
    /// by the thread, not by the shell: they hold raw pointers, so a shell holding them could
    /// not move to its thread; a thread's shells read one socket at a time.
    static HEADERS: std::cell::RefCell<Headers> =
        const { std::cell::RefCell::new(Headers { recv: [None, None], send: None, to: Vec::new() }) };
}

/// The headers [`recv`] and [`send`] keep (see `HEADERS`).
#[cfg(any(target_os = "linux", target_os = "android"))]
struct Headers {
    /// For reads, by family (IPv4, IPv6).
    recv: [Option<nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>>; 2],
    /// For sends: `sendmmsg` sets each header's address length from its destination, so one
    /// set serves both families.
    send: Option<nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>>,
    /// The destinations of one `sendmmsg`, in nix's form.
    to: Vec<Option<nix::sys::socket::SockaddrStorage>>,
}

/// Takes one waiting datagram without blocking, with a plain `recv_from` (no batch headers):
/// the read for a socket with a short queue. `Err(WouldBlock)` when none waits.
pub(super) fn recv_one(socket: &UdpSocket, buffers: &mut RecvBuffers) -> io::Result<()> {
    buffers.got.clear();
    let slot = buffers.slot;
    let (len, from) = socket.recv_from(&mut buffers.bytes[..slot])?;
    buffers.got.push((len, Some(from)));
    Ok(())
}

/// One datagram per call where `recvmmsg` is missing, until the batch is full or the socket
/// would block (so that fewer than `BATCH` means the same as with `recvmmsg`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn recv(socket: &UdpSocket, _v6: bool, buffers: &mut RecvBuffers) -> io::Result<()> {
    buffers.got.clear();
    while buffers.got.len() < BATCH {
        let start = buffers.got.len() * buffers.slot;
        match socket.recv_from(&mut buffers.bytes[start..start + buffers.slot]) {
            Ok((len, from)) => buffers.got.push((len, Some(from))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if buffers.got.is_empty() => return Err(e),
            // What came is handed on; the error shows again on the next call.
            Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn to_std(address: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Sends every datagram of `messages` (bytes, destination) in order, as few calls as the
/// kernel allows; a datagram that cannot be sent is reported to `failed` with its index, and
/// the rest are still sent.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn send(socket: &UdpSocket, messages: &[(&[u8], SocketAddr)], mut failed: impl FnMut(usize, &io::Error)) {
    let mut start = 0;
    while start < messages.len() {
        let rest = &messages[start..messages.len().min(start + BATCH)];
        if rest.len() == 1 {
            // One datagram: the plain call.
            let (bytes, to) = rest[0];
            if let Err(e) = send_one(socket, bytes, to) {
                failed(start, &e);
            }
            start += 1;
            continue;
        }
        let result =
            if rest.len() <= SHORT { send_some::<SHORT>(socket, rest) } else { send_some::<BATCH>(socket, rest) };
        match result {
            // The kernel took the first `n`; an error on the next one shows on the next call.
            Ok(0) => {
                failed(start, &io::ErrorKind::WriteZero.into());
                start += 1;
            }
            Ok(n) => start += n,
            Err(errno) => {
                // The first datagram of the call failed: report it and go on after it.
                failed(start, &io::Error::from(errno));
                start += 1;
            }
        }
    }
}

/// A short send's most datagrams: its slices are made on the stack for each call, so a send of
/// a few costs no more than it needs.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SHORT: usize = 4;

/// One `sendmmsg` of `messages` (at most `N`, and `N` at most [`BATCH`]): how many the kernel took.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_some<const N: usize>(socket: &UdpSocket, messages: &[(&[u8], SocketAddr)]) -> nix::Result<usize> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

    let messages = &messages[..messages.len().min(N)];
    HEADERS.with_borrow_mut(|Headers { send, to, .. }| {
        let headers = send.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
        let mut bytes = messages.iter().map(|&(bytes, _)| bytes);
        let slices: [[IoSlice<'_>; 1]; N] = std::array::from_fn(|_| [IoSlice::new(bytes.next().unwrap_or_default())]);
        to.clear();
        to.extend(messages.iter().map(|&(_, to)| Some(SockaddrStorage::from(to))));
        let no_control: [ControlMessage<'_>; 0] = [];
        sendmmsg(socket.as_raw_fd(), headers, &slices[..messages.len()], &to[..], no_control, MsgFlags::empty())
            .map(|sent| sent.count())
    })
}

/// One datagram per call where `sendmmsg` is missing.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn send(socket: &UdpSocket, messages: &[(&[u8], SocketAddr)], mut failed: impl FnMut(usize, &io::Error)) {
    for (i, &(bytes, to)) in messages.iter().enumerate() {
        if let Err(e) = send_one(socket, bytes, to) {
            failed(i, &e);
        }
    }
}

fn send_one(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
    loop {
        match socket.send_to(bytes, to) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        pair_at("127.0.0.1:0")
    }

    /// Two sockets bound at `addr`. Loopback of both families is required: a test of both must
    /// not pass having tried one.
    fn pair_at(addr: &str) -> (UdpSocket, UdpSocket) {
        let bind = || UdpSocket::bind(addr.parse().unwrap()).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        (bind(), bind())
    }

    /// Receives until `n` datagrams have come, waiting on the socket with a deadline.
    fn recv_all(socket: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut buffers = RecvBuffers::new(2048);
        let mut all = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while all.len() < n {
            assert!(std::time::Instant::now() < deadline, "only {} of {n} datagrams came", all.len());
            match recv(socket, false, &mut buffers) {
                Ok(()) => all.extend((0..buffers.len()).filter_map(|i| buffers.get(i)).map(|(b, f)| (b.to_vec(), f))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        all
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_in_order_with_its_sources() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..BATCH * 2 + 3).map(|i| format!("datagram {i}").into_bytes()).collect();
        let messages: Vec<(&[u8], SocketAddr)> = payloads.iter().map(|p| (&p[..], to)).collect();
        let mut failures = Vec::new();
        send(&a, &messages, |i, e| failures.push((i, e.kind())));
        assert!(failures.is_empty(), "{failures:?}");
        let got = recv_all(&b, payloads.len());
        let from = a.local_addr().unwrap();
        assert!(got.iter().all(|(_, f)| *f == from));
        assert_eq!(got.into_iter().map(|(bytes, _)| bytes).collect::<Vec<_>>(), payloads);
    }

    #[test]
    fn an_empty_socket_would_block_and_a_long_datagram_is_cut_to_the_slot() {
        let (a, b) = pair();
        let mut buffers = RecvBuffers::new(16);
        assert_eq!(recv(&b, false, &mut buffers).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        send(&a, &[(&[7u8; 100][..], b.local_addr().unwrap())], |_, e| panic!("{e}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match recv(&b, false, &mut buffers) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(buffers.len(), 1);
        assert_eq!(buffers.get(0).unwrap().0, &[7u8; 16][..]);
    }

    /// The headers are kept per thread and family: an IPv6 source read after an IPv4 one (and
    /// the other way round) on this thread comes back whole.
    #[test]
    fn sources_of_both_families_come_back_whole_in_turn() {
        let (v6, c6) = pair_at("[::1]:0");
        let (v4, c4) = pair();
        let mut buffers = RecvBuffers::new(64);
        for round in 0..3 {
            for (server, client) in [(&v4, &c4), (&v6, &c6)] {
                send(client, &[(b"hello", server.local_addr().unwrap())], |_, e| panic!("{e}"));
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                loop {
                    match recv(server, server.local_addr().unwrap().is_ipv6(), &mut buffers) {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                            std::thread::yield_now()
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(buffers.get(0).map(|(_, from)| from), Some(client.local_addr().unwrap()), "round {round}");
            }
        }
    }

    /// Sends through the thread's one set of send headers alternate between families and
    /// between batch sizes (a short send and a full one): every datagram reaches its own
    /// destination whole, in order.
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn batches_of_both_families_and_sizes_reach_each_destination_in_turn() {
        let (s6, r6) = pair_at("[::1]:0");
        let (s4, r4) = pair();
        for n in [2, SHORT, SHORT + 1, BATCH, BATCH + 3] {
            for (sender, receiver, v6) in [(&s6, &r6, true), (&s4, &r4, false)] {
                let to = receiver.local_addr().unwrap();
                let payloads: Vec<Vec<u8>> = (0..n).map(|i| format!("{v6} {n} {i}").into_bytes()).collect();
                let messages: Vec<(&[u8], SocketAddr)> = payloads.iter().map(|p| (&p[..], to)).collect();
                send(sender, &messages, |i, e| panic!("datagram {i} of {n}: {e}"));
                let mut buffers = RecvBuffers::new(64);
                let mut got = Vec::new();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while got.len() < n {
                    assert!(std::time::Instant::now() < deadline, "only {} of {n} came", got.len());
                    match recv(receiver, v6, &mut buffers) {
                        Ok(()) => {
                            got.extend((0..buffers.len()).filter_map(|i| buffers.get(i)).map(|(b, f)| (b.to_vec(), f)))
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
                assert!(got.iter().all(|(_, from)| *from == sender.local_addr().unwrap()));
                assert_eq!(got.into_iter().map(|(b, _)| b).collect::<Vec<_>>(), payloads);
            }
        }
    }

    /// One batch to many destinations: each gets its own datagrams, in order.
    #[test]
    fn a_batch_to_many_destinations_reaches_each_of_them() {
        let sender = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let receivers: Vec<UdpSocket> =
            (0..5).map(|_| UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()).collect();
        let payloads: Vec<(Vec<u8>, usize)> =
            (0..BATCH + 7).map(|i| (format!("to {} #{i}", i % 5).into_bytes(), i % 5)).collect();
        let messages: Vec<(&[u8], SocketAddr)> =
            payloads.iter().map(|(p, r)| (&p[..], receivers[*r].local_addr().unwrap())).collect();
        send(&sender, &messages, |i, e| panic!("datagram {i}: {e}"));
        for (r, receiver) in receivers.iter().enumerate() {
            let mine: Vec<Vec<u8>> = payloads.iter().filter(|(_, to)| *to == r).map(|(p, _)| p.clone()).collect();
            let got: Vec<Vec<u8>> = recv_all(receiver, mine.len()).into_iter().map(|(b, _)| b).collect();
            assert_eq!(got, mine, "receiver {r}");
        }
    }

    /// A datagram the kernel refuses in the middle of a batch (too long for UDP here; a full
    /// send buffer takes the same path: `sendmmsg` takes the ones before it, and the next call
    /// fails on it) is reported by its index, and the ones after it still go.
    #[test]
    fn a_datagram_refused_mid_batch_is_reported_and_the_rest_still_go() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let huge = vec![0u8; 70_000];
        let messages: Vec<(&[u8], SocketAddr)> =
            vec![(b"one", to), (b"two", to), (&huge, to), (b"three", to), (b"four", to), (b"five", to)];
        let mut failures = Vec::new();
        send(&a, &messages, |i, e| failures.push((i, e.raw_os_error())));
        assert_eq!(failures, vec![(2, Some(libc::EMSGSIZE))]);
        let got: Vec<Vec<u8>> = recv_all(&b, 5).into_iter().map(|(bytes, _)| bytes).collect();
        assert_eq!(got, [&b"one"[..], b"two", b"three", b"four", b"five"]);
    }

    #[test]
    fn a_datagram_that_cannot_go_is_reported_and_the_others_still_go() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        // A v6 destination from a v4 socket fails; the ones around it do not.
        let bad: SocketAddr = "[::1]:9".parse().unwrap();
        let messages: Vec<(&[u8], SocketAddr)> = vec![(b"one", to), (b"two", bad), (b"three", to)];
        let mut failures = Vec::new();
        send(&a, &messages, |i, _| failures.push(i));
        assert_eq!(failures, vec![1]);
        let got: Vec<Vec<u8>> = recv_all(&b, 2).into_iter().map(|(bytes, _)| bytes).collect();
        assert_eq!(got, vec![b"one".to_vec(), b"three".to_vec()]);
    }
}
