//! A simulated network and clock for the client tests: brokers are closures, time moves only
//! when a call waits, and every datagram sent is recorded with the time it was sent.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Transport;
use crate::protocol::{Request, Response, binary};

type Answer = Box<dyn FnMut(&Request<'_>) -> Option<Response> + Send>;

pub(crate) struct SimNet {
    pub start: Instant,
    pub now: Instant,
    brokers: HashMap<SocketAddr, Answer>,
    inbox: VecDeque<(SocketAddr, Vec<u8>)>,
    /// (to, at) of every datagram sent.
    pub sent: Vec<(SocketAddr, Instant)>,
    /// Every datagram sent, with where to.
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
}

impl SimNet {
    pub fn new() -> SimNet {
        let start = Instant::now();
        SimNet {
            start,
            now: start,
            brokers: HashMap::new(),
            inbox: VecDeque::new(),
            sent: Vec::new(),
            datagrams: Vec::new(),
        }
    }

    /// A broker at `addr` answering with `answer` (`None`: the datagram is lost).
    pub fn broker(
        mut self,
        addr: SocketAddr,
        answer: impl FnMut(&Request<'_>) -> Option<Response> + Send + 'static,
    ) -> Self {
        self.brokers.insert(addr, Box::new(answer));
        self
    }

    /// Queues a datagram as if `from` had sent it.
    pub fn inject(&mut self, from: SocketAddr, datagram: Vec<u8>) {
        self.inbox.push_back((from, datagram));
    }

    /// Milliseconds since the start at which each datagram was sent to `to`.
    pub fn sent_at_ms(&self, to: SocketAddr) -> Vec<u128> {
        self.sent.iter().filter(|(t, _)| *t == to).map(|(_, at)| at.duration_since(self.start).as_millis()).collect()
    }

    /// Every request sent, decoded (with the service name owned), with where to.
    pub fn sent_requests(&self) -> Vec<(SocketAddr, OwnedRequest)> {
        self.datagrams
            .iter()
            .filter_map(|(to, d)| binary::decode_request(d).ok().map(|(_, r)| (*to, OwnedRequest::from(&r))))
            .collect()
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }
}

impl Transport for SimNet {
    fn now(&self) -> Instant {
        self.now
    }

    fn send(&mut self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.sent.push((to, self.now));
        self.datagrams.push((to, datagram.to_vec()));
        let Some(answer) = self.brokers.get_mut(&to) else { return Ok(()) };
        let Ok((id, request)) = binary::decode_request(datagram) else { return Ok(()) };
        if let Some(response) = answer(&request) {
            let mut reply = Vec::new();
            binary::encode_response(id, &response, &mut reply);
            self.inbox.push_back((to, reply));
        }
        Ok(())
    }

    fn sleep_until(&mut self, deadline: Instant) {
        self.now = self.now.max(deadline);
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<(usize, SocketAddr)>> {
        match self.inbox.pop_front() {
            Some((from, datagram)) => {
                buf[..datagram.len()].copy_from_slice(&datagram);
                Ok(Some((datagram.len(), from)))
            }
            None => {
                self.now = self.now.max(deadline);
                Ok(None)
            }
        }
    }
}

/// A request as tests compare them (names owned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedRequest {
    Report { service: String, endpoint: SocketAddr },
    Other(String),
}

impl From<&Request<'_>> for OwnedRequest {
    fn from(request: &Request<'_>) -> Self {
        match request {
            Request::Report { service, endpoint } => {
                OwnedRequest::Report { service: (*service).to_owned(), endpoint: *endpoint }
            }
            other => OwnedRequest::Other(format!("{other:?}")),
        }
    }
}
