//! The connect timeout on injected time: a backend connect that hangs is given up exactly when
//! `--connect-timeout` has passed since it started (not a sweep, not a load, later), counted
//! as one redispatch, and the connection goes on to the next backend. The integration test
//! `balancer_policy::a_black_holed_backend_costs_a_client_at_most_the_connect_timeout` shows
//! the same with real processes, with a bound a loaded machine meets.

use std::net::TcpStream as StdStream;

use super::*;

/// A listener never accepted from, whose queue is full: connects to it hang.
fn black_hole() -> (socket2::Socket, Vec<StdStream>, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    while let Ok(stream) = StdStream::connect_timeout(&addr, Duration::from_millis(200)) {
        held.push(stream);
        assert!(held.len() < 64, "the listen queue never filled");
    }
    (socket, held, addr)
}

#[test]
fn a_hanging_connect_is_given_up_when_the_connect_timeout_has_passed() {
    let (_hole, _held, hole) = black_hole();
    let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let live = live.local_addr().unwrap();
    let pool = Arc::new(Pool::new());
    assert!(pool.add(hole));
    let counters = Arc::new(Counters::with_threads(1));
    let connect = Duration::from_millis(300);
    let limits = Limits {
        timeouts: Arc::new(Timeouts::new(connect, Duration::from_secs(60), Duration::from_secs(1))),
        max_connections: 10,
        revival: Revival::HealthChecks,
        send_proxy: None,
        keep_queue: false,
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let at = listener.local_addr().unwrap();
    let mut forwarder = Forwarder::new(0, listener, Arc::clone(&pool), Arc::clone(&counters), limits).unwrap();
    // Connected: the connection waits in the listener's queue.
    let _client = StdStream::connect(at).unwrap();
    let started = Instant::now();
    forwarder.now = started;
    forwarder.accept(1);
    assert_eq!(forwarder.proxies.len(), 1, "accepted, its connect to the hole started");
    assert!(pool.add(live));

    forwarder.sweep(started + connect - Duration::from_millis(1));
    assert_eq!(counters.redispatches.load(Relaxed), 0, "not yet");
    assert!(pool.get(hole).unwrap().is_up());

    forwarder.now = started + connect;
    forwarder.sweep(started + connect);
    assert_eq!(counters.redispatches.load(Relaxed), 1, "given up at the timeout, once");
    assert!(!pool.get(hole).unwrap().is_up(), "and the hole taken out of rotation");
    let (_, proxy) = forwarder.proxies.iter().next().expect("the connection goes on");
    assert_eq!(proxy.tried, [hole, live]);
    assert_eq!(proxy.connecting, Some(started + connect), "to the live backend, from now");
    assert_eq!(counters.failed.load(Relaxed), 0);
}
