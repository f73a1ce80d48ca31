//! The client side on the multicast group: find the brokers with no address configured.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::multicast::{self, MulticastConfig};
use crate::protocol::seal::{ReplayGuard, Sealer, unix_ms};
use crate::protocol::{Multicast, Response, binary};

/// How long discovery waits for more brokers after the first answer: brokers on one network
/// answer together, so there is no need to wait out the whole window.
const SETTLE: Duration = Duration::from_millis(50);

/// Asks the multicast group for brokers and returns the unicast address of every broker that
/// answers within `wait` (empty when none does). The question goes out up to three times in
/// case it is lost; after the first answer, discovery waits 50 ms longer for others.
///
/// ```
/// # use makler::{broker, multicast::MulticastConfig, shutdown::Shutdown};
/// # let group = MulticastConfig { group: "239.255.77.1:17077".parse()?, ..MulticastConfig::default() };
/// # let b = broker::Broker::bind(broker::Config {
/// #     listen: "127.0.0.1:0".parse()?, multicast: Some(group), ..Default::default() })?;
/// # let addr = b.local_addr();
/// # let shutdown = Shutdown::new();
/// # let stop = shutdown.clone();
/// # let thread = std::thread::spawn(move || b.run(&stop));
/// use std::time::Duration;
/// let brokers = makler::client::discover(&group, Duration::from_secs(2))?;
/// assert_eq!(brokers, [addr]);
/// # shutdown.request(); thread.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn discover(config: &MulticastConfig, wait: Duration) -> io::Result<Vec<SocketAddr>> {
    let socket = multicast::sender(config)?;
    let id = crate::random::u64() as u32;
    let mut question = Vec::new();
    binary::encode(id, &Multicast::Discover { origin: multicast::origin() }, &mut question);
    // With a key, the question is sealed and only sealed answers count.
    let mut guard = ReplayGuard::new();
    if let Some(key) = config.key {
        Sealer::new(key, crate::random::u64()).seal_in_place(&mut question, unix_ms(SystemTime::now()));
    }

    let start = Instant::now();
    let deadline = start + wait;
    let (mut sent, mut next_send) = (0, start);
    let mut settle_at: Option<Instant> = None;
    let mut found = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let now = Instant::now();
        let end = settle_at.map_or(deadline, |s| s.min(deadline));
        if now >= end {
            return Ok(found);
        }
        if sent < 3 && now >= next_send {
            socket.send_to(&question, config.group)?;
            sent += 1;
            next_send = now + wait / 4;
        }
        let until = if sent < 3 { end.min(next_send) } else { end };
        socket.set_read_timeout(Some(until.saturating_duration_since(now).max(Duration::from_millis(1))))?;
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                let answer = match &config.key {
                    Some(key) => match guard.open(key, &buf[..len], unix_ms(SystemTime::now())) {
                        Ok(inner) => inner,
                        Err(_) => continue,
                    },
                    None => &buf[..len],
                };
                if let Ok((reply_id, Response::BrokerHere { addr })) = binary::decode_response(answer) {
                    let addr = if addr.ip().is_unspecified() { SocketAddr::new(from.ip(), addr.port()) } else { addr };
                    if reply_id == id && !found.contains(&addr) {
                        found.push(addr);
                        settle_at.get_or_insert(Instant::now() + SETTLE);
                    }
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused) => {}
            Err(e) => return Err(e),
        }
    }
}

/// What to tell a user when [`discover`] found no broker: where it looked, and, when it had no
/// key, that brokers given a `--key-file` ignore questions that are not sealed with it (they
/// cannot tell them from a stranger's), which is otherwise indistinguishable from no broker at
/// all.
///
/// ```
/// let config = makler::multicast::MulticastConfig::default();
/// assert!(makler::client::no_broker_message(&config).contains("may require a key"));
/// ```
pub fn no_broker_message(config: &MulticastConfig) -> String {
    let mut message = format!(
        "no broker answered on multicast group {} on interface {}; give --broker ADDR",
        config.group, config.interface
    );
    if config.key.is_none() {
        message.push_str(
            " (brokers may require a key: those started with --key-file answer only programs given the same \
             --key-file)",
        );
    }
    message
}
