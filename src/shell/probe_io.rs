//! Probes as the shell runs them: a non-blocking TCP connect and, for an HTTP check, a `GET`
//! of the declared path on that connection, all in the event loop.
//!
//! Nothing here blocks or keeps time: the core's deadline covers the whole exchange (connect,
//! request, response) and aborts it with [`ProbeCmd::Abort`](crate::core::ProbeCmd::Abort).
//! At most [`MAX_RESPONSE_HEAD`] bytes of a response are read; its head is parsed with
//! `httparse`, and only the status counts: 2xx and 3xx are healthy, any other status, a head that
//! does not parse or does not fit, or a connection closed before the head are failures.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::Interest;
use mio::net::TcpStream;

use crate::core::{ProbeId, ProbeOutcome};
use crate::protocol::Check;

/// The most of an HTTP check's response that is read: any health endpoint's status line and
/// headers fit; the body is never needed.
pub(super) const MAX_RESPONSE_HEAD: usize = 4096;

/// Headers a response head may have and still be read.
const MAX_HEADERS: usize = 64;

/// A running probe.
pub(super) struct ProbeIo {
    pub id: ProbeId,
    pub stream: TcpStream,
    connected: bool,
    http: Option<Exchange>,
}

/// An HTTP check's request and what came back so far.
struct Exchange {
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
}

impl ProbeIo {
    /// Starts connecting to `addr` for `check` (a check of none is run as a connect); an HTTP
    /// check writes `preamble` (a PROXY header, or nothing) before its request.
    pub fn connect(id: ProbeId, addr: SocketAddr, check: &Check<Box<str>>, preamble: &[u8]) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        let http = match check {
            Check::Http(path) => {
                let request = [preamble, &request(addr, path)].concat();
                Some(Exchange { request, written: 0, response: Vec::new() })
            }
            Check::None | Check::Tcp => None,
        };
        Ok(ProbeIo { id, stream, connected: false, http })
    }

    /// What to wait for: writable (the connect) and, for an HTTP check, readable (the answer).
    pub fn interest(&self) -> Interest {
        match self.http {
            Some(_) => Interest::WRITABLE | Interest::READABLE,
            None => Interest::WRITABLE,
        }
    }

    /// Goes as far as the socket lets it after a readiness event (`error`: the event said the
    /// socket is in error). Returns the outcome when the probe is over.
    pub fn on_ready(&mut self, error: bool) -> Option<ProbeOutcome> {
        if !self.connected {
            match self.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Some(ProbeOutcome::Failed(e.kind())),
                Ok(None) => {}
            }
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                // Not connected yet and no error: a spurious wake-up, unless the socket is in
                // error, which take_error has not shown (then it was reset).
                Err(_) if !error => return None,
                Err(e) => return Some(ProbeOutcome::Failed(e.kind())),
            }
        }
        let Some(http) = &mut self.http else { return Some(ProbeOutcome::Connected) };
        http.step(&mut self.stream).map(|r| r.unwrap_or_else(|e| ProbeOutcome::Failed(e.kind())))
    }
}

impl Exchange {
    /// Writes what is left of the request, then reads what the server sent.
    fn step(&mut self, stream: &mut TcpStream) -> Option<io::Result<ProbeOutcome>> {
        while self.written < self.request.len() {
            match stream.write(&self.request[self.written..]) {
                Ok(0) => return Some(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
        let mut buf = [0u8; 1024];
        loop {
            let room = MAX_RESPONSE_HEAD - self.response.len();
            if room == 0 {
                return Some(Ok(verdict(&self.response)));
            }
            match stream.read(&mut buf[..room.min(1024)]) {
                Ok(0) => return Some(Ok(verdict(&self.response))),
                Ok(n) => {
                    self.response.extend_from_slice(&buf[..n]);
                    if let Some(outcome) = answer(&self.response) {
                        return Some(Ok(outcome));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// An HTTP check's request: `GET <path>` with `Host` and `Connection: close`.
pub(super) fn request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: makler-check\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The outcome once the head has come in: healthy on 2xx and 3xx. `None` while it is partial.
pub(super) fn answer(head: &[u8]) -> Option<ProbeOutcome> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => Some(match response.code {
            Some(200..=399) => ProbeOutcome::Connected,
            _ => ProbeOutcome::Failed(io::ErrorKind::Other),
        }),
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(ProbeOutcome::Failed(io::ErrorKind::InvalidData)),
    }
}

/// The outcome when no more is coming (the server closed, or [`MAX_RESPONSE_HEAD`] was read):
/// a head still partial is a failure.
pub(super) fn verdict(head: &[u8]) -> ProbeOutcome {
    answer(head).unwrap_or(ProbeOutcome::Failed(io::ErrorKind::InvalidData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_path_and_the_host_and_closes() {
        let request = request("[::1]:8080".parse().unwrap(), "/health");
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "GET /health HTTP/1.1\r\nHost: [::1]:8080\r\nUser-Agent: makler-check\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn only_2xx_and_3xx_are_healthy() {
        let failed = ProbeOutcome::Failed(io::ErrorKind::Other);
        assert_eq!(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Some(ProbeOutcome::Connected));
        assert_eq!(answer(b"HTTP/1.0 302 Found\r\nLocation: /\r\n\r\nbody"), Some(ProbeOutcome::Connected));
        assert_eq!(answer(b"HTTP/1.1 500 Internal Server Error\r\n\r\n"), Some(failed));
        assert_eq!(answer(b"HTTP/1.1 404 Not Found\r\n\r\n"), Some(failed));
        assert_eq!(answer(b"HTTP/1.1 199 Early\r\n\r\n"), Some(failed));
        assert_eq!(answer(b"HTTP/1.1 200 OK\r\nX: y\r\n"), None, "the head is not over");
        assert_eq!(answer(b"SSH-2.0-OpenSSH\r\n\r\n"), Some(ProbeOutcome::Failed(io::ErrorKind::InvalidData)));
        assert_eq!(verdict(b"HTTP/1.1 200 OK\r\n"), ProbeOutcome::Failed(io::ErrorKind::InvalidData));
        assert_eq!(verdict(b""), ProbeOutcome::Failed(io::ErrorKind::InvalidData));
        let huge = format!("HTTP/1.1 200 OK\r\n{}", "X: y\r\n".repeat(MAX_HEADERS + 1));
        assert!(matches!(answer(huge.as_bytes()), Some(ProbeOutcome::Failed(_))), "too many headers fail");
    }
}
