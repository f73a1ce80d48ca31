//! The oracle of keyed requests (`--require-key`): a node with a key, fed requests unsealed,
//! sealed, replayed and forged.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::core::Core;
use crate::node::{Face, Node, NodeConfig, WallClock};
use crate::protocol::seal::{Key, ReplayGuard, Sealer};
use crate::protocol::{self, Rejection, Response, binary};
use crate::service::policy::RequireKey;

/// A node with a key and `--require-key` (none, `writes` or `all`, from the first byte), driven
/// by requests that `data` spells, each sent unsealed, sealed, sealed and then replayed, or
/// sealed and then changed in one byte. Checked after each: an unsealed request the setting
/// names is answered `key required` and changes nothing; every other unsealed one is answered
/// as without a key; a sealed request is answered sealed (opening with the key) and never
/// `key required`; a replay or a changed byte gets no answer and changes nothing, and is
/// counted in `sealed_dropped`.
pub fn keyed_session(data: &[u8]) {
    let Some((&setting, mut rest)) = data.split_first() else { return };
    let require = [RequireKey::No, RequireKey::Writes, RequireKey::All][usize::from(setting % 3)];
    let key = Key::from_secret(b"the keyed oracle's key, long enough").expect("a key");
    let wall = WallClock { at: Instant::now(), unix_ms: 1_800_000_000_000 };
    let config = NodeConfig { key: Some(key), require_key: require, wall, ..NodeConfig::default() };
    let mut ids = 0u128;
    let mut node = Node::new(config, move || {
        ids += 1;
        Uuid::from_u128(ids)
    });
    let now = wall.at;
    node.handle_start(now);
    let now_ms = wall.unix_ms(now);
    let mut sealer = Sealer::new(key, 7);
    let mut replies = ReplayGuard::new();
    let source = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let mut reply = Vec::new();
    let mut dropped = 0;
    while let [op, arg, tail @ ..] = rest {
        rest = tail;
        let request = match arg % 8 {
            0 => format!("register s{} {}", arg % 3, 1 + u16::from(arg % 5)),
            1 => format!("heartbeat {}", Uuid::from_u128(u128::from(arg % 4))),
            2 => format!("deregister {}", Uuid::from_u128(u128::from(arg % 4))),
            3 => format!("query s{}", arg % 3),
            4 => format!("watch s{}", arg % 3),
            5 => format!("report s{} 127.0.0.1:{}", arg % 3, 1 + arg % 5),
            6 => "stats".to_owned(),
            _ => format!("services {}", arg % 2),
        };
        let mut datagram = request.clone().into_bytes();
        if op & 0x10 != 0 {
            // The same request in binary.
            let Ok((_, decoded)) = protocol::decode_request(request.as_bytes()) else { continue };
            datagram.clear();
            binary::encode_request(u32::from(*op), &decoded, &mut datagram);
        }
        let (_, decoded) = protocol::decode_request(&datagram).expect("the session's requests decode");
        let before = node.registry().lease_count();
        reply.clear();
        match op % 4 {
            0 => {
                let answered = node.handle_datagram(now, Face::Client, source, &datagram, &mut reply).is_some();
                let refused = is_key_required(&reply);
                assert_eq!(refused, require.refuses(&decoded), "{require:?} {request}: {reply:?}");
                if refused {
                    assert!(answered);
                    assert_eq!(node.registry().lease_count(), before, "a refused request changed the table");
                }
            }
            op => {
                let mut sealed = Vec::new();
                sealer.seal(&datagram, now_ms, &mut sealed);
                if node.handle_datagram(now, Face::Client, source, &sealed, &mut reply).is_some() {
                    let inner = replies.open(&key, &reply, now_ms).expect("a sealed request's reply is sealed");
                    assert!(!is_key_required(inner), "{request}: a sealed request refused for the key");
                }
                let again = match op {
                    1 => continue,
                    2 => sealed,
                    _ => {
                        let at = usize::from(*arg) % sealed.len();
                        sealed[at.max(1)] ^= 1 << (op % 8);
                        sealed
                    }
                };
                let before = node.registry().lease_count();
                reply.clear();
                assert!(
                    node.handle_datagram(now, Face::Client, source, &again, &mut reply).is_none(),
                    "{request}: a replayed or changed sealed request answered"
                );
                assert_eq!(node.registry().lease_count(), before);
                dropped += 1;
                assert_eq!(node.stats(now)["sealed_dropped"], dropped);
            }
        }
        // What waits to be sent (watch notifications to a sealed watcher) is drained.
        let mut out = Vec::new();
        while node.poll_transmit(now + Duration::from_millis(1), &mut out).is_some() {}
    }
}

/// Whether `reply` is `key required`, in either form.
fn is_key_required(reply: &[u8]) -> bool {
    reply == b"ERROR key required\n"
        || matches!(binary::decode_response(reply), Ok((_, Response::Error(Rejection::KeyRequired))))
}
