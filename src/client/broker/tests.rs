use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::client::sim::SimNet;
use crate::protocol::Rejection;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A broker that loses the first `lose` requests and answers every other with `Ok`.
fn lossy(lose: u32) -> impl FnMut(&Request<'_>) -> Option<Response> + Send + 'static {
    let mut seen = 0;
    move |_| {
        seen += 1;
        (seen > lose).then_some(Response::Ok)
    }
}

fn client(net: SimNet, brokers: &[SocketAddr], first: usize) -> BrokerClient<SimNet> {
    BrokerClient::with_transport(net, brokers, RetryPolicy::default(), first)
}

#[test]
fn a_lost_request_is_retransmitted_with_backoff() {
    let net = SimNet::new().broker(addr(1), lossy(2));
    let mut c = client(net, &[addr(1)], 0);
    c.heartbeat(Uuid::nil()).unwrap();
    assert_eq!(c.transport().sent_at_ms(addr(1)), [0, 100, 300]);
}

#[test]
fn a_silent_broker_is_failed_over_and_the_answering_one_kept() {
    let net = SimNet::new().broker(addr(1), |_| None).broker(addr(2), lossy(0));
    let mut c = client(net, &[addr(1), addr(2)], 0);
    c.heartbeat(Uuid::nil()).unwrap();
    assert_eq!(c.transport().sent_at_ms(addr(1)), [0, 100, 300]);
    assert_eq!(c.transport().sent_at_ms(addr(2)), [700]);
    assert_eq!(c.current_broker(), Some(addr(2)));

    // The next call goes straight to the broker that answered.
    c.heartbeat(Uuid::nil()).unwrap();
    assert_eq!(c.transport().sent_at_ms(addr(2)), [700, 700]);
    assert_eq!(c.transport().sent_at_ms(addr(1)).len(), 3);
}

#[test]
fn when_no_broker_answers_the_call_fails_after_the_whole_plan() {
    let net = SimNet::new().broker(addr(1), |_| None);
    let mut c = client(net, &[addr(1), addr(2)], 1);
    let err = c.query("echo").unwrap_err();
    assert!(matches!(&err, ClientError::Unreachable(list) if list == &[addr(1), addr(2)]), "{err}");
    assert_eq!(err.to_string(), "no broker answered (127.0.0.1:1, 127.0.0.1:2)");
    let t = c.transport();
    assert_eq!(t.now.duration_since(t.start), RetryPolicy::default().worst_case(2));
    assert_eq!(t.sent_at_ms(addr(2)), [0, 100, 300]);
    assert_eq!(t.sent_at_ms(addr(1)), [700, 800, 1000]);
}

#[test]
fn stale_replies_and_strangers_are_ignored() {
    let net = SimNet::new().broker(addr(1), lossy(0));
    let mut c = client(net, &[addr(1)], 0);
    let stale = {
        let mut out = Vec::new();
        binary::encode_response(c.next_id, &Response::NotFound, &mut out);
        out
    };
    c.transport.inject(addr(1), stale.clone());
    c.transport.inject(addr(9), stale);
    c.transport.inject(addr(1), b"garbage".to_vec());
    c.heartbeat(Uuid::nil()).unwrap();
}

#[test]
fn replies_map_to_typed_results() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let id = Uuid::from_u128(7);
    let net = SimNet::new().broker(addr(1), move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        Some(match request {
            Request::Register { service: "full", .. } | Request::RegisterChecked { service: "full", .. } => {
                Response::Error(Rejection::Full { max: 1 })
            }
            Request::Register { .. } | Request::RegisterChecked { .. } | Request::RegisterMeta { .. } => {
                Response::Registered { id, ttl_ms: 1500 }
            }
            Request::Query { service: "echo" } => Response::Instances(vec![addr(4000)]),
            Request::Query { .. } => Response::NotFound,
            Request::QueryLocal { service: "echo" } => Response::Instances(vec![addr(4001)]),
            Request::QueryLocal { .. } => Response::CatchingUp,
            Request::Heartbeat { .. } => Response::NotFound,
            Request::Deregister { .. } => Response::Stats(Box::default()),
            Request::Stats
            | Request::Report { .. }
            | Request::Services { .. }
            | Request::Instances { .. }
            | Request::InstancesChecked { .. }
            | Request::InstancesMeta { .. }
            | Request::WatchMeta { .. }
            | Request::Watch { .. }
            | Request::WatchEcho { .. }
            | Request::Unwatch { .. }
            | Request::UnwatchEcho { .. } => Response::Stats(Box::default()),
        })
    });
    let mut c = client(net, &[addr(1)], 0);
    assert_eq!(c.register("echo", None, 4000).unwrap(), Registered { id, ttl: Duration::from_millis(1500) });
    assert!(matches!(c.register("full", None, 1), Err(ClientError::Rejected(Rejection::Full { max: 1 }))));
    assert_eq!(c.query("echo").unwrap(), [addr(4000)]);
    assert!(matches!(c.query("time"), Err(ClientError::NotFound)));
    assert_eq!(c.query_local("echo").unwrap(), [addr(4001)], "asked as QueryLocal, not Query");
    assert!(matches!(c.query_local("time"), Err(ClientError::NotFound)));
    assert!(matches!(c.heartbeat(id), Err(ClientError::NotFound)));
    assert!(matches!(c.deregister(id), Err(ClientError::Protocol(_))));
    assert_eq!(c.stats().unwrap(), BrokerStats::default());
    assert_eq!(calls.load(Ordering::SeqCst), 9, "every call was one request");
}

#[test]
fn no_brokers_is_an_error_not_a_panic() {
    assert!(matches!(BrokerClient::new(&[]), Err(ClientError::NoBrokers)));
    let mut c = client(SimNet::new(), &[], 3);
    assert!(matches!(c.stats(), Err(ClientError::NoBrokers)));
}

#[test]
fn a_broker_still_catching_up_sends_the_client_to_the_next_at_once() {
    let net = SimNet::new()
        .broker(addr(1), |_| Some(Response::CatchingUp))
        .broker(addr(2), |_| Some(Response::Instances(vec![addr(4000)])));
    let mut c = client(net, &[addr(1), addr(2)], 0);
    assert_eq!(c.query("echo").unwrap(), [addr(4000)]);
    assert_eq!(c.transport().sent_at_ms(addr(1)), [0], "no retransmission to a broker that answered");
    assert_eq!(c.transport().sent_at_ms(addr(2)), [0], "and no wait before the next");
    assert_eq!(c.current_broker(), Some(addr(2)));
}

#[test]
fn when_every_broker_is_catching_up_a_query_finds_nothing_and_a_heartbeat_waits() {
    let net =
        SimNet::new().broker(addr(1), |_| Some(Response::CatchingUp)).broker(addr(2), |_| Some(Response::CatchingUp));
    let mut c = client(net, &[addr(1), addr(2)], 0);
    assert!(matches!(c.query("echo"), Err(ClientError::NotFound)));
    assert!(matches!(c.heartbeat(Uuid::nil()), Err(ClientError::CatchingUp)), "not NotFound: no new registration");
    assert!(matches!(c.report("echo", addr(4000)), Err(ClientError::CatchingUp)));
}

#[test]
fn a_report_is_answered_ok_or_not_found() {
    let net = SimNet::new().broker(addr(1), |request| {
        Some(match request {
            Request::Report { endpoint, .. } if endpoint.port() == 4000 => Response::Ok,
            _ => Response::NotFound,
        })
    });
    let mut c = client(net, &[addr(1)], 0);
    c.report("echo", addr(4000)).unwrap();
    assert!(matches!(c.report("echo", addr(4001)), Err(ClientError::NotFound)));
}

#[test]
fn instances_come_with_their_checks_and_metadata_and_without_from_an_older_broker() {
    use crate::protocol::{Check, InstanceInfo, InstancePage, Source};
    fn info(port: u16) -> InstanceInfo {
        InstanceInfo {
            endpoint: addr(port),
            age_ms: 1,
            expires_ms: 2,
            leases: 1,
            source: Source::Unicast(addr(9)),
            check: Check::None,
            meta: Default::default(),
        }
    }
    let page = |port| InstancePage { total: 1, instances: vec![info(port)], next: None };
    let net = || {
        SimNet::new()
            .broker(addr(1), move |request| {
                Some(match request {
                    Request::InstancesMeta { .. } => Response::Error(Rejection::Malformed { why: "old".into() }),
                    Request::InstancesChecked { .. } => {
                        Response::InstanceListChecked { page: page(4000), checks: vec![Check::Http("/up".into())] }
                    }
                    _ => Response::NotFound,
                })
            })
            .broker(addr(2), move |request| {
                Some(match request {
                    Request::InstancesMeta { .. } | Request::InstancesChecked { .. } => {
                        Response::Error(Rejection::Malformed { why: "old".into() })
                    }
                    Request::Instances { .. } => Response::InstanceList(page(4001)),
                    _ => Response::NotFound,
                })
            })
            .broker(addr(3), move |request| {
                Some(match request {
                    Request::InstancesMeta { .. } => Response::InstanceListMeta {
                        page: page(4002),
                        checks: vec![Check::Tcp],
                        meta: vec![vec![("path".into(), Some(b"/".to_vec()))]],
                    },
                    _ => Response::NotFound,
                })
            })
    };
    let shown = client(net(), &[addr(1)], 0).instances("echo").unwrap();
    assert_eq!(shown, [InstanceInfo { check: Check::Http("/up".into()), ..info(4000) }]);
    let shown = client(net(), &[addr(2)], 0).instances("echo").unwrap();
    assert_eq!(shown, [info(4001)], "an older broker: no checks");
    let shown = client(net(), &[addr(3)], 0).instances("echo").unwrap();
    let meta = crate::meta::Metadata::parse_words(["path=/"]).unwrap();
    assert_eq!(shown, [InstanceInfo { check: Check::Tcp, meta, ..info(4002) }], "checks and metadata");
}

/// A transport whose other end is a broker's core, in process: what the client sends is
/// handled at once, and the replies wait to be received (the first `lose` are lost; with
/// `forge`, two forgeries of each sealed reply go before it, as from the broker: its content
/// with the first byte after the header changed, unsealed and sealed with another key).
struct ToNode {
    node: crate::node::Node,
    now: std::time::Instant,
    replies: std::collections::VecDeque<(Vec<u8>, SocketAddr)>,
    lose: u32,
    forge: bool,
}

const NODE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7);

fn key() -> Key {
    Key::from_secret(b"the broker's and the client's key").unwrap()
}

impl ToNode {
    fn new(require_key: crate::service::policy::RequireKey) -> Self {
        use crate::core::Core;
        let config = crate::node::NodeConfig {
            key: Some(key()),
            require_key,
            wall: WallClock::now(),
            ..crate::node::NodeConfig::default()
        };
        let mut node = crate::node::Node::new(config, Uuid::new_v4);
        let now = std::time::Instant::now();
        node.handle_start(now);
        ToNode { node, now, replies: Default::default(), lose: 0, forge: false }
    }
}

impl Transport for ToNode {
    fn now(&self) -> std::time::Instant {
        self.now
    }

    fn send(&mut self, _to: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        use crate::core::Core;
        let mut reply = Vec::new();
        let from = addr(40000);
        if self.node.handle_datagram(self.now, crate::node::Face::Client, from, datagram, &mut reply).is_some() {
            if self.forge {
                let unix_ms = crate::node::WallClock::now().unix_ms(self.now);
                let mut forged = crate::protocol::seal::unseal(&key(), &reply, unix_ms).unwrap().inner.to_vec();
                forged[3] ^= 0xff;
                let mut other_key = Vec::new();
                let other = Key::from_secret(b"a forger's key, not the broker's").unwrap();
                crate::protocol::seal::Sealer::new(other, 99).seal(&forged, unix_ms, &mut other_key);
                self.replies.push_back((forged, NODE));
                self.replies.push_back((other_key, NODE));
            }
            match self.lose {
                0 => self.replies.push_back((reply, NODE)),
                _ => self.lose -= 1,
            }
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], deadline: std::time::Instant) -> std::io::Result<Option<(usize, SocketAddr)>> {
        match self.replies.pop_front() {
            Some((reply, from)) => {
                buf[..reply.len()].copy_from_slice(&reply);
                Ok(Some((reply.len(), from)))
            }
            None => {
                self.now = self.now.max(deadline);
                Ok(None)
            }
        }
    }

    fn sleep_until(&mut self, deadline: std::time::Instant) {
        self.now = self.now.max(deadline);
    }
}

#[test]
fn a_keyed_client_seals_its_requests_and_takes_only_sealed_replies() {
    use crate::service::policy::RequireKey;
    let mut plain = BrokerClient::with_transport(ToNode::new(RequireKey::Writes), &[NODE], RetryPolicy::default(), 0);
    let refused = plain.register("echo", None, 4000).unwrap_err();
    assert!(matches!(refused, ClientError::Rejected(Rejection::KeyRequired)), "{refused}");
    assert!(matches!(plain.query("echo"), Err(ClientError::NotFound)), "queries need no key with `writes`");

    let mut keyed = BrokerClient::with_transport(ToNode::new(RequireKey::All), &[NODE], RetryPolicy::default(), 0);
    keyed.set_key(key());
    // The first reply is lost: the retransmission is sealed afresh (the same bytes again would
    // be dropped as a replay), and forgeries before the real reply (another id, unsealed or
    // sealed with another key) are ignored.
    keyed.transport_mut().lose = 1;
    keyed.transport_mut().forge = true;
    let registered = keyed.register("echo", None, 4000).unwrap();
    let source = crate::protocol::Source::Unicast(addr(40000));
    let held = keyed.transport().node.registry().lease_id("echo", addr(4000), source);
    assert_eq!(Some(registered.id), held, "the broker's id, not a forged one");
    assert_eq!(keyed.query("echo").unwrap(), [addr(4000)]);
    keyed.heartbeat(registered.id).unwrap();
    assert_eq!(keyed.transport().node.stats(keyed.transport().now).get("sealed_dropped"), Some(0));
}
