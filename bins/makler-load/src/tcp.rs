//! TCP and HTTP load: N connections for a bounded time, each sending a request and waiting for
//! its answer before the next (keep-alive), or opening a new connection per request (close).
//!
//! Every thread multiplexes its share of the connections in one mio loop, so a few threads hold
//! thousands of connections.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::{Latencies, Measurement};

/// What is spoken on each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// A line out, a line back (`makler-server --service echo` or `upper`).
    Line,
    /// `GET path HTTP/1.1`, and a response with a `Content-Length`.
    Http {
        /// The path to ask for.
        path: String,
    },
}

/// Whether connections are kept for many requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One connection carries request after request.
    KeepAlive,
    /// Every request on a new connection (latency includes the connect).
    Close,
}

/// A load run's settings.
#[derive(Debug, Clone)]
pub struct TcpLoad {
    /// Where to connect.
    pub target: SocketAddr,
    /// Connections open at once.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Keep-alive or a connection per request.
    pub mode: Mode,
    /// What to speak.
    pub protocol: Protocol,
    /// Threads to spread the connections over.
    pub threads: usize,
    /// Stop after this many requests even if time is left.
    pub max_requests: u64,
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct TcpResult {
    /// Latencies, time and losses.
    pub measurement: Measurement,
    /// Connections that failed (refused, reset, closed before the answer).
    pub errors: u64,
    /// What the first failure was.
    pub first_error: Option<String>,
}

/// Live progress, readable while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests answered so far.
    pub completed: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
}

/// Runs the load, updating `progress` as it goes.
pub fn run(load: &TcpLoad, progress: &Arc<Progress>) -> io::Result<TcpResult> {
    let threads = load.threads.clamp(1, load.connections.max(1));
    let request: Arc<[u8]> = match &load.protocol {
        Protocol::Line => b"ping\n".to_vec().into(),
        Protocol::Http { path } => {
            let close = if load.mode == Mode::Close { "Connection: close\r\n" } else { "" };
            format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{close}\r\n", load.target).into_bytes().into()
        }
    };
    let deadline = Instant::now() + load.duration;
    let per_thread_requests = load.max_requests.div_ceil(threads as u64);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let connections = load.connections / threads + usize::from(t < load.connections % threads);
            let worker = Worker {
                target: load.target,
                mode: load.mode,
                http: matches!(load.protocol, Protocol::Http { .. }),
                request: Arc::clone(&request),
                deadline,
                max_requests: per_thread_requests,
                progress: Arc::clone(progress),
            };
            std::thread::Builder::new().name(format!("load-{t}")).spawn(move || worker.run(connections))
        })
        .collect::<io::Result<_>>()?;
    let mut result = TcpResult::default();
    let mut longest = Duration::ZERO;
    for handle in handles {
        let part = handle.join().map_err(|_| io::Error::other("a load thread panicked"))??;
        result.errors += part.errors;
        result.first_error = result.first_error.or(part.first_error);
        longest = longest.max(part.measurement.elapsed);
        result.measurement.add(part.measurement);
    }
    // The threads ran side by side: the run took as long as the longest, not the sum.
    result.measurement.elapsed = longest;
    Ok(result)
}

struct Worker {
    target: SocketAddr,
    mode: Mode,
    http: bool,
    request: Arc<[u8]>,
    deadline: Instant,
    max_requests: u64,
    progress: Arc<Progress>,
}

struct Conn {
    stream: TcpStream,
    /// When the current request started (in close mode: when its connect started).
    started: Instant,
    written: usize,
    input: Vec<u8>,
}

impl Worker {
    fn run(self, connections: usize) -> io::Result<TcpResult> {
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let mut conns: Vec<Option<Conn>> = Vec::with_capacity(connections);
        let mut latencies = Latencies::default();
        let (mut sent, mut errors) = (0u64, 0u64);
        let mut first_error = None;
        let start = Instant::now();
        for index in 0..connections {
            conns.push(self.open(&poll, index, &mut sent));
        }
        let mut buf = vec![0u8; 64 * 1024];
        while conns.iter().any(Option::is_some) {
            let now = Instant::now();
            if now >= self.deadline {
                break;
            }
            match poll.poll(&mut events, Some(self.deadline - now)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in &events {
                let index = event.token().0;
                let Some(mut conn) = conns.get_mut(index).and_then(Option::take) else { continue };
                // An answer may already be in when the next request has just been written, and
                // no further event would tell of it: go on while answers complete.
                let mut outcome = self.advance(&mut conn, &mut buf);
                let next = loop {
                    match outcome {
                        Ok(None) => break Some(conn),
                        Ok(Some(latency)) => {
                            latencies.record(latency);
                            self.progress.completed.fetch_add(1, Relaxed);
                            let more = Instant::now() < self.deadline && sent < self.max_requests;
                            if more && self.mode == Mode::KeepAlive {
                                conn.started = Instant::now();
                                conn.written = 0;
                                sent += 1;
                                outcome = self.advance(&mut conn, &mut buf);
                                continue;
                            }
                            close(&poll, Some(conn));
                            break if more { self.open(&poll, index, &mut sent) } else { None };
                        }
                        Err(e) => {
                            first_error.get_or_insert_with(|| e.to_string());
                            errors += 1;
                            self.progress.errors.fetch_add(1, Relaxed);
                            close(&poll, Some(conn));
                            let more = Instant::now() < self.deadline && sent < self.max_requests;
                            break if more { self.open(&poll, index, &mut sent) } else { None };
                        }
                    }
                };
                conns[index] = next;
            }
        }
        for conn in &mut conns {
            close(&poll, conn.take());
        }
        Ok(TcpResult {
            measurement: Measurement { latencies, elapsed: start.elapsed(), lost: 0, ..Measurement::default() },
            errors,
            first_error,
        })
    }

    /// Opens a connection and counts its first request as sent.
    fn open(&self, poll: &Poll, index: usize, sent: &mut u64) -> Option<Conn> {
        if *sent >= self.max_requests {
            return None;
        }
        let mut stream = TcpStream::connect(self.target).ok()?;
        poll.registry().register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE).ok()?;
        *sent += 1;
        Some(Conn { stream, started: Instant::now(), written: 0, input: Vec::new() })
    }

    /// Writes what is left of the request and reads what has come of the answer; returns the
    /// latency once the answer is complete.
    fn advance(&self, conn: &mut Conn, buf: &mut [u8]) -> io::Result<Option<Duration>> {
        while conn.written < self.request.len() {
            match conn.stream.write(&self.request[conn.written..]) {
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                // Not connected yet: the writable event comes when it is.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut eof = false;
        loop {
            match conn.stream.read(buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let complete = if self.http {
            http_response_len(&conn.input)?
        } else {
            conn.input.iter().position(|&b| b == b'\n').map(|p| p + 1)
        };
        match complete {
            Some(len) => {
                conn.input.drain(..len);
                Ok(Some(conn.started.elapsed()))
            }
            None if eof => Err(io::ErrorKind::UnexpectedEof.into()),
            None => Ok(None),
        }
    }
}

/// Opens `connections` idle connections to `target` in steps, writing `pid`'s resident memory
/// to `out` at each step, then holds them for `hold`, writing it once a second, and closes them.
/// Bounded: it opens no more than asked and holds no longer than `hold`.
pub fn hold_idle(
    target: SocketAddr,
    connections: usize,
    hold: Duration,
    pid: Option<u32>,
    out: &mut impl Write,
) -> io::Result<()> {
    let rss = |pid: Option<u32>| -> String {
        pid.and_then(|p| crate::udp::rss_bytes(p).ok())
            .map_or_else(|| "-".to_owned(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
    };
    writeln!(out, "{:>12} {:>14}", "connections", "RSS")?;
    writeln!(out, "{:>12} {:>14}", 0, rss(pid))?;
    let mut held = Vec::with_capacity(connections);
    let step = (connections / 4).max(1);
    while held.len() < connections {
        let stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5)).map_err(|e| {
            io::Error::new(e.kind(), format!("connection {} failed: {e} (is `ulimit -n` high enough?)", held.len() + 1))
        })?;
        held.push(stream);
        if held.len() % step == 0 || held.len() == connections {
            // Let the target take the connections in before measuring.
            std::thread::sleep(Duration::from_millis(200));
            writeln!(out, "{:>12} {:>14}", held.len(), rss(pid))?;
        }
    }
    let started = Instant::now();
    let mut second = 1;
    while started.elapsed() < hold {
        std::thread::sleep(Duration::from_secs(1).min(hold));
        writeln!(out, "{:>12} {:>14}   held {second} s", held.len(), rss(pid))?;
        second += 1;
    }
    Ok(())
}

/// Closes a connection without lingering in TIME_WAIT (a reset once the answer is in), so a
/// connection-per-request run does not run out of local ports.
fn close(poll: &Poll, conn: Option<Conn>) {
    if let Some(mut conn) = conn {
        let _ = poll.registry().deregister(&mut conn.stream);
        let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
    }
}

/// The length of the complete HTTP response at the start of `input`, if it is all there: a
/// `200` with a `Content-Length` and that many bytes of body.
fn http_response_len(input: &[u8]) -> io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::other(format!("malformed response head: {e}"))),
    };
    if response.code != Some(200) {
        let line = input.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
        return Err(io::Error::other(format!("answered {}", String::from_utf8_lossy(line))));
    }
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .ok_or_else(|| io::Error::other("response without Content-Length"))?;
    let total = head_len + length;
    Ok((input.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the test server answers.
    #[derive(Debug, Clone, Copy)]
    enum Service {
        Echo,
        Http,
    }

    /// A small server for the loads to measure, a thread per connection (the example servers
    /// are a program of their own): echoes each line, or answers each HTTP request head with a
    /// short body. Its threads end with the test process.
    fn serve(service: Service) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || answer(service, &stream));
            }
        });
        addr
    }

    fn answer(service: Service, stream: &std::net::TcpStream) {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            if !matches!(reader.read_line(&mut line), Ok(1..)) {
                return;
            }
            let reply: &[u8] = match service {
                Service::Echo => line.as_bytes(),
                Service::Http if line == "\r\n" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
                Service::Http => continue,
            };
            if (&*stream).write_all(reply).is_err() {
                return;
            }
        }
    }

    #[test]
    fn http_responses_are_measured_in_both_modes() {
        let addr = serve(Service::Http);
        for mode in [Mode::KeepAlive, Mode::Close] {
            let load = TcpLoad {
                target: addr,
                connections: 4,
                duration: Duration::from_secs(10),
                mode,
                protocol: Protocol::Http { path: "/".into() },
                threads: 2,
                max_requests: 400,
            };
            let progress = Arc::new(Progress::default());
            let result = run(&load, &progress).unwrap();
            assert_eq!(result.errors, 0, "{mode:?}");
            assert_eq!(result.measurement.latencies.count(), 400, "{mode:?}");
            assert_eq!(progress.completed.load(Relaxed), 400);
        }
    }

    #[test]
    fn line_answers_are_measured() {
        let addr = serve(Service::Echo);
        let load = TcpLoad {
            target: addr,
            connections: 3,
            duration: Duration::from_secs(10),
            mode: Mode::KeepAlive,
            protocol: Protocol::Line,
            threads: 1,
            max_requests: 300,
        };
        let result = run(&load, &Arc::new(Progress::default())).unwrap();
        assert_eq!((result.errors, result.measurement.latencies.count()), (0, 300));
    }

    #[test]
    fn a_target_that_refuses_counts_errors_and_stops_in_time() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let load = TcpLoad {
            target: closed,
            connections: 2,
            duration: Duration::from_millis(200),
            mode: Mode::Close,
            protocol: Protocol::Line,
            threads: 1,
            max_requests: u64::MAX,
        };
        let started = Instant::now();
        let result = run(&load, &Arc::new(Progress::default())).unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(result.errors > 0);
        assert_eq!(result.measurement.latencies.count(), 0);
    }

    #[test]
    fn idle_connections_are_held_and_reported() {
        let addr = serve(Service::Echo);
        let mut out = Vec::new();
        hold_idle(addr, 8, Duration::from_millis(10), Some(std::process::id()), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["connections", "RSS"]);
        assert!(lines.iter().any(|l| l.trim_start().starts_with("8 ") && l.contains("MiB")), "{out}");
        assert!(lines.last().unwrap().contains("held 1 s"), "{out}");
    }

    #[test]
    fn http_lengths() {
        assert_eq!(http_response_len(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap(), Some(40));
        assert_eq!(http_response_len(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok").unwrap(), None);
        assert_eq!(http_response_len(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        let busy = http_response_len(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n").unwrap_err();
        assert_eq!(busy.to_string(), "answered HTTP/1.1 503 Busy");
        // Split anywhere, a response is complete only once it is all there.
        let whole = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 3\r\n\r\nok\n";
        for end in 0..whole.len() {
            assert_eq!(http_response_len(&whole[..end]).unwrap(), None, "{end} bytes");
        }
        assert_eq!(http_response_len(whole).unwrap(), Some(whole.len()));
        // Malformed heads are errors, not waited on.
        assert!(http_response_len(b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n").is_err());
        assert!(http_response_len(b"HTTP/1.1 200 OK\r\n\r\n").is_err(), "no Content-Length");
        assert!(http_response_len(b"SMTP 220 hi\r\n\r\n").is_err());
    }
}
